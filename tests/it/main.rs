//! Integration tests of the `spillway` crate, one binary with a module per area.

mod apiserver;
mod cli;
mod cluster_bench;
mod controller;
mod crds;
mod deploy;
mod expander;
mod explain;
mod fuzz;
mod kube_api;
mod leader;
mod prom;
mod scaler;
mod server;
mod sync;
mod tls;
mod wire;
