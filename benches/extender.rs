//! Filter and prioritize cost at 100 / 1,000 / 5,000 nodes (10 pods per node
//! indexed), for both scheduler modes, through the same functions the HTTP
//! handlers call (decode, core decision with reservation, encode):
//! - `names`: `nodeCacheCapable`, the request carries node names;
//! - `full`: the request carries every Node object (the scheduler's
//!   non-cache mode), so decoding dominates.
//!
//! `cargo bench --bench extender` prints the time per request; the loopback
//! HTTP numbers come from `spillway-load`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;
use spillway::crd::ResourcePolicySpec;
use spillway::decision::snapshot::{Node, Pod, PodPhase, Snapshot};
use spillway::decision::time::Time;
use spillway::decision::{GPU, Resources};
use spillway::extender::backend::{BindError, BindRequest, Binder, Extender, Index};
use spillway::extender::server::{answer_filter, answer_prioritize};

fn world(nodes: usize) -> Snapshot {
    let mut s = Snapshot::new();
    for i in 0..nodes {
        let pool = if i.is_multiple_of(2) {
            "local"
        } else {
            "cloud"
        };
        s.upsert_node(Node {
            name: format!("node-{i}"),
            labels: [
                ("pool".to_owned(), pool.to_owned()),
                ("zone".to_owned(), format!("z{}", i % 3)),
            ]
            .into(),
            allocatable: Resources::new().with(GPU, 8).with("cpu", 64),
            unschedulable: false,
        });
        for j in 0..10 {
            s.upsert_pod(Pod {
                uid: format!("pod-{i}-{j}"),
                namespace: if j % 2 == 0 {
                    "llm".into()
                } else {
                    format!("team-{}", j % 5)
                },
                name: format!("pod-{i}-{j}"),
                labels: [(
                    "app".to_owned(),
                    if j % 2 == 0 {
                        "llm".to_owned()
                    } else {
                        "other".to_owned()
                    },
                )]
                .into(),
                requests: Resources::new().with(GPU, 0).with("cpu", 1),
                node: Some(format!("node-{i}")),
                phase: PodPhase::Running,
                ..Pod::default()
            });
        }
    }
    let spec: ResourcePolicySpec = serde_json::from_value(json!({
        "selector": {"app": "llm"},
        "units": [
            {"name": "local", "resource": "idc", "nodeSelector": {"pool": "local"}, "max": 1_000_000},
            {"name": "cloud", "resource": "elastic", "nodeSelector": {"pool": "cloud"}}
        ]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    s.upsert_policy(
        spec.to_policy("llm", "p", Time::default())
            .unwrap_or_else(|e| panic!("{e}")),
    );
    s
}

fn pod_json() -> serde_json::Value {
    json!({
        "metadata": {"name": "new", "namespace": "llm", "uid": "uid-new", "labels": {"app": "llm"}},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    })
}

fn node_json(i: usize) -> serde_json::Value {
    json!({
        "metadata": {"name": format!("node-{i}"), "labels": {"pool": if i.is_multiple_of(2) { "local" } else { "cloud" }, "kubernetes.io/hostname": format!("node-{i}")}},
        "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8", "pods": "110"},
                   "capacity": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

struct NoBinder;

impl Binder for NoBinder {
    async fn bind(&self, _: BindRequest) -> Result<(), BindError> {
        Ok(())
    }
}

fn extender(c: &mut Criterion) {
    for verb in ["filter", "prioritize"] {
        let mut group = c.benchmark_group(verb);
        group.sample_size(20);
        for n in [100, 1_000, 5_000] {
            let index = Index {
                snapshot: world(n),
                ..Index::default()
            };
            let ext = Extender::new(index, NoBinder, Box::new(|| Time::from_secs(1_800_000_000)));
            let answer = |body: &[u8]| match verb {
                "filter" => answer_filter(&ext, body),
                _ => answer_prioritize(&ext, body),
            };
            let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let by_name =
                serde_json::to_vec(&json!({"Pod": pod_json(), "Nodes": null, "NodeNames": names}))
                    .unwrap_or_default();
            assert!(answer(&by_name).is_ok());
            group.bench_with_input(BenchmarkId::new("names", n), &by_name, |b, body| {
                b.iter(|| answer(body).map(|v| v.len()));
            });
            let items: Vec<serde_json::Value> = (0..n).map(node_json).collect();
            let full = serde_json::to_vec(&json!({"Pod": pod_json(), "Nodes": {"metadata": {}, "items": items}, "NodeNames": null})).unwrap_or_default();
            group.bench_with_input(BenchmarkId::new("full", n), &full, |b, body| {
                b.iter(|| answer(body).map(|v| v.len()));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, extender);
criterion_main!(benches);
