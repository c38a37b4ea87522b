//! The simulated cluster-autoscaler grows the node group the cluster's
//! expander would choose: every scale-up's inputs, sent through the gRPC
//! expander's wire format (protobuf `v1.Node`/`v1.Pod` bytes) and decoded and
//! ranked as `spillway serve` does, give the group the simulator grew.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use spillway::decision::expand::NodeGroup;
use spillway::decision::quantity::format_milli;
use spillway::decision::snapshot::Pod;
use spillway::expander::decode::decode;
use spillway::expander::proto::grpcplugin::{BestOptionsRequest, Option as PbOption};
use spillway::expander::proto::k8s::io::api::core::v1 as pb;
use spillway::expander::proto::k8s::io::apimachinery::pkg::api::resource::Quantity;
use spillway::expander::proto::k8s::io::apimachinery::pkg::apis::meta::v1 as meta;
use spillway::expander::{rank_decoded, ranked};
use spillway_sim::scenario;
use spillway_sim::world::World;

fn quantities(r: &spillway::decision::quantity::Resources) -> HashMap<String, Quantity> {
    r.iter()
        .map(|(k, v)| {
            (
                k.to_owned(),
                Quantity {
                    string: Some(format_milli(v)),
                },
            )
        })
        .collect()
}

/// The template node cluster-autoscaler sends for a node group.
fn node_bytes(g: &NodeGroup) -> Vec<u8> {
    pb::Node {
        metadata: Some(meta::ObjectMeta {
            name: Some(format!("template-node-for-{}", g.id)),
            labels: g
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..meta::ObjectMeta::default()
        }),
        spec: Some(pb::NodeSpec::default()),
        status: Some(pb::NodeStatus {
            capacity: quantities(&g.allocatable),
            allocatable: quantities(&g.allocatable),
        }),
    }
    .encode_to_vec()
}

/// A pending pod as cluster-autoscaler sends it.
fn pod_bytes(p: &Pod) -> Vec<u8> {
    let ms = p.created.as_millis();
    pb::Pod {
        metadata: Some(meta::ObjectMeta {
            name: Some(p.name.clone()),
            namespace: Some(p.namespace.clone()),
            uid: Some(p.uid.clone()),
            labels: p
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            annotations: p
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            creation_timestamp: Some(meta::Time {
                seconds: Some(ms.div_euclid(1000)),
                nanos: Some(i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap()),
            }),
            ..meta::ObjectMeta::default()
        }),
        spec: Some(pb::PodSpec {
            containers: vec![pb::Container {
                name: Some("server".into()),
                resources: Some(pb::ResourceRequirements {
                    requests: quantities(&p.requests),
                    ..pb::ResourceRequirements::default()
                }),
                ..pb::Container::default()
            }],
            priority: Some(p.priority),
            ..pb::PodSpec::default()
        }),
        status: Some(pb::PodStatus {
            phase: Some("Pending".into()),
        }),
    }
    .encode_to_vec()
}

/// seed-burst with two cloud pools as units in order: `cloud-a` (the
/// earlier unit, dearer, `max: 1`) and `cloud-b` (cheaper). The burst needs
/// three cloud replicas: one may go to cloud-a, the rest must go to cloud-b.
fn two_cloud_pools() -> scenario::Compiled {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed-burst.yaml"),
    )
    .unwrap();
    let pools_at = text.find("- name: cloud\n").unwrap();
    let services_at = text.find("services:\n").unwrap();
    let policies_at = text.find("    - {name: cloud,").unwrap();
    let text = format!(
        "{}{}{}{}",
        &text[..pools_at],
        "- name: cloud-a\n  kind: cloud\n  maxNodes: 4\n  gpusPerNode: 1\n  labels: {pool: cloud-a}\n  costPerGpuHour: 4.0\n\
         - name: cloud-b\n  kind: cloud\n  maxNodes: 4\n  gpusPerNode: 1\n  labels: {pool: cloud-b}\n  costPerGpuHour: 2.5\n",
        &text[services_at..policies_at],
        "    - {name: cloud-a, resource: elastic, nodeSelector: {pool: cloud-a}, max: 1}\n    - {name: cloud-b, resource: elastic, nodeSelector: {pool: cloud-b}}\n",
    )
    .replace("maxReplicas: 3", "maxReplicas: 4");
    scenario::parse(
        &text,
        "two-cloud-pools.yaml",
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
    .expect("scenario parses")
}

#[test]
fn the_simulated_cluster_autoscaler_grows_what_the_expander_answers() {
    let compiled = two_cloud_pools();
    let (outcome, log) = World::new(&compiled)
        .unwrap()
        .log_expansions()
        .run_logging_expansions(&mut |_| {});
    assert!(!log.is_empty(), "the burst needs cloud nodes");
    let grown: Vec<&str> = outcome
        .node_scale_ups
        .iter()
        .map(|u| u.pool.as_str())
        .collect();
    assert!(
        grown.contains(&"cloud-a") && grown.contains(&"cloud-b"),
        "{grown:?}"
    );
    // cloud-a is the earlier unit: it is grown first, though dearer.
    assert_eq!(grown[0], "cloud-a", "{grown:?}");

    let mut chosen_in_log = Vec::new();
    for rec in &log {
        // Prices per GPU-hour from the node groups (one GPU per node here).
        let per_gpu: HashMap<String, f64> = rec
            .groups
            .values()
            .map(|g| {
                #[allow(clippy::cast_precision_loss)]
                let p = g.price_per_node_hour_micros as f64 / 1e6;
                (g.id.clone(), p)
            })
            .collect();
        let req = BestOptionsRequest {
            options: rec
                .options
                .iter()
                .map(|o| PbOption {
                    node_group_id: o.group.clone(),
                    node_count: i32::try_from(o.node_count).unwrap(),
                    pod_bytes: o
                        .pods
                        .iter()
                        .map(|uid| pod_bytes(rec.snapshot.pod(uid).expect("named pod")))
                        .collect(),
                    ..PbOption::default()
                })
                .collect(),
            node_bytes_map: rec
                .groups
                .values()
                .map(|g| (g.id.clone(), node_bytes(g)))
                .collect(),
            ..BestOptionsRequest::default()
        };
        let wire = BestOptionsRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        let decoded = decode(&wire, |id| per_gpu.get(id).copied().unwrap_or(0.0), rec.now)
            .expect("the request decodes");
        let answer = ranked(&rank_decoded(&rec.snapshot, &rec.ledger, decoded, rec.now));
        let first = answer.options.first().map(|o| o.node_group_id.clone());
        assert_eq!(first, rec.chosen, "at {} s: {answer:?}", rec.t_s);
        if let Some(c) = &rec.chosen {
            chosen_in_log.push(c.clone());
        }
    }
    // The report lists exactly the groups the log shows were grown.
    assert_eq!(
        chosen_in_log,
        grown.iter().map(|g| (*g).to_owned()).collect::<Vec<_>>()
    );
}

/// seed-burst with `spec.headroom`: the data-center GPU is full from the
/// start (one replica), so a cloud node is kept ready ahead of demand.
fn seed_burst_with_headroom() -> scenario::Compiled {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed-burst.yaml"),
    )
    .unwrap();
    let text = text.replace(
        "    selector: {app: llm}\n",
        "    selector: {app: llm}\n    headroom: {fillPercent: 100}\n",
    );
    assert!(text.contains("headroom:"));
    scenario::parse(
        &text,
        "seed-burst-headroom.yaml",
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
    .expect("scenario parses")
}

#[test]
fn headroom_starts_a_cloud_node_ahead_and_reports_the_gain_and_the_cost() {
    let compiled = seed_burst_with_headroom();
    let outcome = spillway_sim::simulate_with_baseline(&compiled, &mut |_| {}).unwrap();
    let h = outcome
        .summary
        .headroom
        .clone()
        .expect("a headroom summary");
    assert!(h.nodes_started >= 1, "{h:?}");
    let ahead: Vec<_> = outcome
        .node_scale_ups
        .iter()
        .filter(|u| u.reason.starts_with("headroom"))
        .collect();
    assert_eq!(u32::try_from(ahead.len()).unwrap(), h.nodes_started);
    // The first is started before the burst (at 3,600 s) needs it.
    assert!(ahead[0].t_s < 3600.0, "{ahead:?}");
    // Replicas wait less for a node; the early node costs money.
    assert!(
        h.pending_time.p95 < h.baseline_pending_time.p95,
        "pending p95 {} with, {} without",
        h.pending_time.p95,
        h.baseline_pending_time.p95
    );
    assert!(h.cost_paid > 0.0, "{h:?}");
    assert!((h.cost_total - h.baseline_cost_total - h.cost_paid).abs() < 1e-9);
    assert_eq!(h.ttft_p95_s.len(), 1);
    // The same run without the extension has no headroom summary.
    let plain = spillway_sim::simulate(
        &scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed-burst.yaml"))
            .unwrap(),
        &mut |_| {},
    )
    .unwrap();
    assert!(plain.summary.headroom.is_none());
}
