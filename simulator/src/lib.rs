//! `spillway-sim`: a discrete-event capacity planner that replays real traffic
//! through Spillway's decision core.

pub mod perf;
pub mod traffic;
