//! The shipped manifests and the binary agree: the arguments the Deployment
//! passes to `spillway` parse, and the extender stanza of the scheduler
//! configuration template points at the port and prefix Spillway serves.

use std::path::Path;

use clap::Parser;
use serde_json::Value;
use spillway::cli::{Cli, Command};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_deployment_args_parse_as_spillway_serve() {
    let text = std::fs::read_to_string(root().join("deploy/base/deployment.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let containers = doc["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let spillway = containers
        .iter()
        .find(|c| c["name"] == "spillway")
        .expect("a spillway container");
    // The kubelet expands `$(VAR)` from the container's env: give the
    // downward-API variables sample values.
    let sample = |field: &str| match field {
        "status.podIP" => "10.1.2.3",
        "metadata.namespace" => "spillway-system",
        _ => "spillway-5d8f-abcde",
    };
    let env: Vec<(String, &str)> = spillway["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                format!("$({})", e["name"].as_str().unwrap()),
                sample(
                    e["valueFrom"]["fieldRef"]["fieldPath"]
                        .as_str()
                        .unwrap_or(""),
                ),
            )
        })
        .collect();
    let args: Vec<String> = spillway["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            env.iter()
                .fold(a.as_str().unwrap().to_owned(), |a, (var, v)| {
                    a.replace(var, v)
                })
        })
        .collect();
    let cli = Cli::try_parse_from(std::iter::once("spillway".to_owned()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("deployment args {args:?}: {e}"));
    let Command::Serve(serve) = cli.command else {
        panic!("the deployment does not run `spillway serve`: {args:?}")
    };
    assert!(serve.tls_cert.is_some() && serve.client_ca.is_some());
    assert_eq!(
        serve.metrics_listen.to_string(),
        "10.1.2.3:9090",
        "metrics on the pod IP only"
    );
    assert!(serve.leader_elect);
    // The scheduler configuration template calls this port and prefix.
    let config = std::fs::read_to_string(root().join("deploy/scheduler-config.yaml.in")).unwrap();
    let url = format!("https://127.0.0.1:{}{}", serve.listen.port(), serve.prefix);
    assert!(config.contains(&url), "{url} not in the scheduler config");
}
