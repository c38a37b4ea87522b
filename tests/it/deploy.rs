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

/// The `value`s of a kustomization's JSON6902 patch ops whose path ends in `suffix`.
fn patch_values(kustomization: &str, suffix: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(kustomization)).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in doc["patches"].as_array().unwrap() {
        let ops: Value = serde_saphyr::from_str(p["patch"].as_str().unwrap()).unwrap();
        for op in ops.as_array().unwrap() {
            if op["path"].as_str().unwrap().ends_with(suffix) {
                out.push(op["value"].clone());
            }
        }
    }
    out
}

/// `spillway serve` parsed from the base Deployment's args plus `extra`.
fn serve_args(extra: &[String]) -> spillway::serve::ServeArgs {
    let text = std::fs::read_to_string(root().join("deploy/base/deployment.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let args: Vec<String> = doc["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .chain(extra.iter().cloned())
        .map(|a| a.replace("$(POD_IP)", "10.1.2.3"))
        .collect();
    let cli = Cli::try_parse_from(std::iter::once("spillway".to_owned()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("deployment args {args:?}: {e}"));
    let Command::Serve(serve) = cli.command else {
        panic!("not `spillway serve`: {args:?}")
    };
    *serve
}

#[test]
fn the_cluster_autoscaler_overlay_and_example_agree_with_spillway() {
    let overlay = "deploy/overlays/cluster-autoscaler/kustomization.yaml";
    let extra: Vec<String> = patch_values(overlay, "/args/-")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let serve = serve_args(&extra);
    let listen = serve.expander_listen.expect("--expander-listen");
    assert_eq!(listen.to_string(), "10.1.2.3:8444");
    assert!(!serve.expander_prices.is_empty());
    let port = &patch_values(overlay, "/ports/-")[0];
    assert_eq!(port["containerPort"], 8444);
    // The Service targets that port by name; cluster-autoscaler dials the Service.
    let svc: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            root().join("deploy/overlays/cluster-autoscaler/expander-service.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port["name"]);
    let url = format!(
        "--grpc-expander-url={}.{}.svc:{}",
        svc["metadata"]["name"].as_str().unwrap(),
        svc["metadata"]["namespace"].as_str().unwrap(),
        svc["spec"]["ports"][0]["port"]
    );
    let example = "deploy/examples/cluster-autoscaler/kustomization.yaml";
    let flags: Vec<String> = patch_values(example, "/command/-")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(flags.contains(&url), "{url} not in {flags:?}");
    assert!(flags.contains(&"--expander=grpc,least-waste".to_owned()));
    let mount = &patch_values(example, "/volumeMounts/-")[0];
    let cert = format!(
        "--grpc-expander-cert={}/ca.crt",
        mount["mountPath"].as_str().unwrap()
    );
    assert!(flags.contains(&cert), "{cert} not in {flags:?}");
    let volume = &patch_values(example, "/volumes/-")[0];
    assert_eq!(volume["configMap"]["name"], "spillway-expander-ca");
}

#[test]
fn the_headroom_priority_class_is_deployed_below_every_workload() {
    let text = std::fs::read_to_string(root().join("deploy/base/priorityclass.yaml")).unwrap();
    let pc: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(
        pc["metadata"]["name"],
        spillway::serve::controller::HEADROOM_PRIORITY_CLASS
    );
    assert!(pc["value"].as_i64().unwrap() < 0);
    assert_eq!(pc["preemptionPolicy"], "Never");
    let kustomization =
        std::fs::read_to_string(root().join("deploy/base/kustomization.yaml")).unwrap();
    assert!(kustomization.contains("- priorityclass.yaml"));
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

#[test]
fn the_dockerfile_builds_the_image_the_deployment_runs_as_its_user() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    // Multi-stage: a build stage with the toolchain, a distroless run stage.
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].contains("rust:") && froms[0].ends_with(" AS build"));
    assert!(froms[1].starts_with("gcr.io/distroless/"), "{}", froms[1]);
    assert!(dockerfile.contains("cargo build --release --locked -p spillway --bin spillway"));
    // The run stage's user is the Deployment's.
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .unwrap();
    let text = std::fs::read_to_string(root().join("deploy/base/deployment.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let pod = &doc["spec"]["template"]["spec"];
    let ctx = &pod["securityContext"];
    assert_eq!(
        user,
        format!("{}:{}", ctx["runAsUser"], ctx["runAsGroup"]),
        "Dockerfile USER vs the Deployment's securityContext"
    );
    assert_eq!(ctx["runAsNonRoot"], true);
    // The tag the Deployment pulls is the one the README and `.ci/image` build:
    // the crate's version.
    let image = pod["containers"][0]["image"].as_str().unwrap();
    assert_eq!(
        image,
        format!(
            "ghcr.io/spillway-sched/spillway:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(dockerfile.contains(&format!("docker build -t {image} .")));
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(ci.contains("bash .ci/image"));
}
