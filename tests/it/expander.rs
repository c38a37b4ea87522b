//! cluster-autoscaler's gRPC expander: requests built the way
//! cluster-autoscaler builds them (template nodes and pending pods as
//! protobuf `v1.Node`/`v1.Pod`, in the current bytes fields and the
//! deprecated embedded ones), decoded and ranked on the extender's index;
//! bad input answered with every option unranked; and a round trip through
//! the real tonic stack over TLS on loopback.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use serde_json::json;
use spillway::crd::ResourcePolicySpec;
use spillway::decision::snapshot::{Node, Pod};
use spillway::decision::time::Time;
use spillway::decision::{GPU, Resources};
use spillway::expander::proto::grpcplugin::expander_client::ExpanderClient;
use spillway::expander::proto::grpcplugin::{
    BestOptionsRequest, BestOptionsResponse, Option as PbOption,
};
use spillway::expander::proto::k8s::io::api::core::v1 as pb;
use spillway::expander::proto::k8s::io::apimachinery::pkg::api::resource::Quantity;
use spillway::expander::proto::k8s::io::apimachinery::pkg::apis::meta::v1 as meta;
use spillway::expander::{Config, Expander, PriceRule};
use spillway::extender::backend::{Extender, Index};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::tls::{NoBinder, files, pki};

const NOW: i64 = 1_800_000_000;

fn node(name: &str, pool: &str, gpus: i64) -> Node {
    Node {
        name: name.into(),
        labels: [("pool".to_owned(), pool.to_owned())].into(),
        allocatable: Resources::new().with(GPU, gpus),
        unschedulable: false,
    }
}

fn pod(uid: &str, node: Option<&str>) -> Pod {
    Pod {
        uid: uid.into(),
        namespace: "ns".into(),
        name: uid.into(),
        labels: [("app".to_owned(), "llm".to_owned())].into(),
        requests: Resources::new().with(GPU, 1),
        node: node.map(str::to_owned),
        created: Time::from_secs(NOW - 60),
        ..Pod::default()
    }
}

/// Policy `ns/llm`: units local (`max: local_max`; two 1-GPU nodes, both
/// running a pod), cloud-a (`max: 2`), cloud-b. Pending: p0, p1.
fn extender(local_max: u32) -> Arc<Extender<NoBinder>> {
    let mut index = Index::default();
    index.snapshot.upsert_node(node("local-1", "local", 1));
    index.snapshot.upsert_node(node("local-2", "local", 1));
    let spec: ResourcePolicySpec = serde_json::from_value(json!({
        "selector": {"app": "llm"},
        "units": [
            {"name": "local", "resource": "idc", "nodeSelector": {"pool": "local"}, "max": local_max},
            {"name": "cloud-a", "resource": "elastic", "nodeSelector": {"pool": "cloud-a"}, "max": 2},
            {"name": "cloud-b", "resource": "elastic", "nodeSelector": {"pool": "cloud-b"}}
        ]
    }))
    .unwrap();
    index
        .snapshot
        .upsert_policy(spec.to_policy("ns", "llm", Time::default()).unwrap());
    index.snapshot.upsert_pod(pod("run0", Some("local-1")));
    index.snapshot.upsert_pod(pod("run1", Some("local-2")));
    index.snapshot.upsert_pod(pod("p0", None));
    index.snapshot.upsert_pod(pod("p1", None));
    let ext = Arc::new(Extender::new(
        index,
        NoBinder,
        Box::new(|| Time::from_secs(NOW)),
    ));
    ext.set_ready(true);
    ext
}

fn q(s: &str) -> Quantity {
    Quantity {
        string: Some(s.into()),
    }
}

fn template(group: &str, pool: &str, gpus: &str) -> pb::Node {
    let res: HashMap<String, Quantity> = [
        ("nvidia.com/gpu".to_owned(), q(gpus)),
        ("cpu".to_owned(), q("96")),
        ("memory".to_owned(), q("1000Gi")),
    ]
    .into();
    pb::Node {
        metadata: Some(meta::ObjectMeta {
            name: Some(format!("template-node-for-{group}-123")),
            labels: [
                ("pool".to_owned(), pool.to_owned()),
                (
                    "kubernetes.io/hostname".to_owned(),
                    format!("template-node-for-{group}-123"),
                ),
            ]
            .into(),
            ..meta::ObjectMeta::default()
        }),
        spec: Some(pb::NodeSpec::default()),
        status: Some(pb::NodeStatus {
            capacity: res.clone(),
            allocatable: res,
        }),
    }
}

fn pending(uid: &str) -> pb::Pod {
    pb::Pod {
        metadata: Some(meta::ObjectMeta {
            name: Some(uid.into()),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            labels: [("app".to_owned(), "llm".to_owned())].into(),
            creation_timestamp: Some(meta::Time {
                seconds: Some(NOW - 60),
                nanos: Some(0),
            }),
            ..meta::ObjectMeta::default()
        }),
        spec: Some(pb::PodSpec {
            containers: vec![pb::Container {
                name: Some("vllm".into()),
                resources: Some(pb::ResourceRequirements {
                    limits: [("nvidia.com/gpu".to_owned(), q("1"))].into(),
                    requests: [("cpu".to_owned(), q("4")), ("memory".to_owned(), q("32Gi"))].into(),
                }),
                restart_policy: None,
            }],
            ..pb::PodSpec::default()
        }),
        status: Some(pb::PodStatus {
            phase: Some("Pending".into()),
        }),
    }
}

/// `msg`'s encoding followed by fields this subset does not declare, of
/// every wire type (the full upstream objects carry hundreds).
fn with_unknown_fields(msg: &impl Message) -> Vec<u8> {
    let mut b = msg.encode_to_vec();
    encode_key(40, WireType::Varint, &mut b);
    encode_varint(30, &mut b);
    encode_key(41, WireType::LengthDelimited, &mut b);
    encode_varint(6, &mut b);
    b.extend_from_slice(b"Always");
    encode_key(42, WireType::SixtyFourBit, &mut b);
    b.extend_from_slice(&1.5f64.to_le_bytes());
    encode_key(43, WireType::ThirtyTwoBit, &mut b);
    b.extend_from_slice(&7u32.to_le_bytes());
    b
}

/// A pod with unknown fields inside its spec and metadata too.
fn pod_bytes(uid: &str) -> Vec<u8> {
    let p = pending(uid);
    let mut b = Vec::new();
    let meta = with_unknown_fields(p.metadata.as_ref().unwrap());
    encode_key(1, WireType::LengthDelimited, &mut b);
    encode_varint(meta.len() as u64, &mut b);
    b.extend_from_slice(&meta);
    let spec = with_unknown_fields(p.spec.as_ref().unwrap());
    encode_key(2, WireType::LengthDelimited, &mut b);
    encode_varint(spec.len() as u64, &mut b);
    b.extend_from_slice(&spec);
    b
}

const GROUPS: [(&str, &str, &str); 3] = [
    ("dc-extra", "local", "1"),
    ("cloud-a", "cloud-a", "1"),
    ("cloud-b", "cloud-b", "4"),
];

/// The current request shape: `nodeBytesMap` and `podBytes`.
fn request(pods: &[&str]) -> BestOptionsRequest {
    BestOptionsRequest {
        options: GROUPS
            .iter()
            .map(|(g, _, _)| PbOption {
                node_group_id: (*g).into(),
                node_count: 2,
                debug: String::new(),
                pod_bytes: pods.iter().map(|p| pod_bytes(p)).collect(),
                ..PbOption::default()
            })
            .collect(),
        node_bytes_map: GROUPS
            .iter()
            .map(|(g, pool, gpus)| {
                (
                    (*g).to_owned(),
                    with_unknown_fields(&template(g, pool, gpus)),
                )
            })
            .collect(),
        ..BestOptionsRequest::default()
    }
}

/// The deprecated shape: `nodeMap` and `pod`, embedded.
#[allow(deprecated)]
fn deprecated_request(pods: &[&str]) -> BestOptionsRequest {
    BestOptionsRequest {
        options: GROUPS
            .iter()
            .map(|(g, _, _)| PbOption {
                node_group_id: (*g).into(),
                node_count: 2,
                pod: pods.iter().map(|p| pending(p)).collect(),
                ..PbOption::default()
            })
            .collect(),
        node_map: GROUPS
            .iter()
            .map(|(g, pool, gpus)| ((*g).to_owned(), template(g, pool, gpus)))
            .collect(),
        ..BestOptionsRequest::default()
    }
}

/// Through the wire format: encode, then decode as the server would.
fn wire(req: &BestOptionsRequest) -> BestOptionsRequest {
    BestOptionsRequest::decode(req.encode_to_vec().as_slice()).unwrap()
}

fn groups(resp: &BestOptionsResponse) -> Vec<&str> {
    resp.options
        .iter()
        .map(|o| o.node_group_id.as_str())
        .collect()
}

fn expander(ext: Arc<Extender<NoBinder>>) -> Expander<NoBinder> {
    Expander::new(
        ext,
        Config {
            prices: vec![
                "cloud-a=4.0".parse().unwrap(),
                "cloud-*=2.5".parse::<PriceRule>().unwrap(),
            ],
            ..Config::default()
        },
    )
}

#[tokio::test]
async fn current_and_deprecated_requests_are_decoded_and_ranked_alike() {
    // local max 2, full: both pods go to cloud-a (the earlier cloud unit,
    // though dearer), which has room for exactly two.
    let x = expander(extender(2));
    for req in [
        wire(&request(&["p0", "p1"])),
        wire(&deprecated_request(&["p0", "p1"])),
    ] {
        let resp = x.best_options(req).await;
        assert_eq!(groups(&resp), ["cloud-a"], "{resp:?}");
        assert!(
            resp.options[0].debug.contains("unit \"cloud-a\""),
            "{resp:?}"
        );
    }
    // local max 3 with two bound: one more has room in local; dc-extra wins.
    let x = expander(extender(3));
    let resp = x.best_options(wire(&request(&["p0", "p1"]))).await;
    assert_eq!(groups(&resp), ["dc-extra"], "{resp:?}");
    let text = x.metrics().requests.with_label_values(&["ranked"]).get();
    assert_eq!(text, 1);
    assert_eq!(
        x.metrics().options.with_label_values(&["rejected"]).get(),
        2
    );
}

#[tokio::test]
async fn a_pod_the_watch_has_not_delivered_is_taken_from_the_request() {
    // p9 is not in the index yet. With p0 and p1 that is three pods for
    // cloud-a (max 2, one GPU per node): the option is capped to two nodes.
    let x = expander(extender(2));
    let mut req = request(&["p0", "p1", "p9"]);
    for o in &mut req.options {
        o.node_count = 3;
    }
    let resp = x.best_options(wire(&req)).await;
    assert_eq!(groups(&resp), ["cloud-a"], "{resp:?}");
    assert_eq!(resp.options[0].node_count, 2, "{resp:?}");
    assert!(
        resp.options[0]
            .debug
            .contains("2 node(s) reach the unit's max"),
        "{resp:?}"
    );
    assert!(resp.options[0].debug.contains("3 pod(s)"), "{resp:?}");
}

#[tokio::test]
async fn pods_waiting_for_nodes_being_created_count_against_max() {
    // p0 and p1 wait for cloud-a nodes being created (no option names them);
    // p9 would make three in cloud-a (max 2), so it belongs in cloud-b.
    let x = expander(extender(2));
    let resp = x.best_options(wire(&request(&["p9"]))).await;
    assert_eq!(groups(&resp), ["cloud-b"], "{resp:?}");
}

#[tokio::test]
async fn when_no_option_may_grow_the_answer_is_empty() {
    // Local is at its max of 2: the only option, more local nodes, may not grow.
    let x = expander(extender(2));
    let mut req = request(&["p0", "p1"]);
    req.options.retain(|o| o.node_group_id == "dc-extra");
    let resp = x.best_options(wire(&req)).await;
    assert!(resp.options.is_empty(), "{resp:?}");
}

#[tokio::test]
async fn malformed_bytes_and_unknown_groups_get_every_option_unranked() {
    let x = expander(extender(2));
    let mut bad_node = request(&["p0"]);
    bad_node
        .node_bytes_map
        .insert("cloud-b".into(), vec![0x0a, 0xff, 0xff, 0xff]);
    let mut bad_pod = request(&["p0"]);
    bad_pod.options[1].pod_bytes.push(b"\x12\x05ab".to_vec());
    let mut unknown_group = request(&["p0"]);
    unknown_group.options.push(PbOption {
        node_group_id: "nowhere".into(),
        node_count: 1,
        ..PbOption::default()
    });
    let mut bad_quantity = request(&["p0"]);
    let mut t = template("cloud-b", "cloud-b", "4");
    t.status
        .as_mut()
        .unwrap()
        .allocatable
        .insert("nvidia.com/gpu".into(), q("four"));
    bad_quantity
        .node_bytes_map
        .insert("cloud-b".into(), t.encode_to_vec());
    let mut negative = request(&["p0"]);
    negative.options[0].node_count = -1;
    for (req, says) in [
        (bad_node, "nodeBytesMap[\"cloud-b\"]"),
        (bad_pod, "podBytes[1]"),
        (unknown_group, "\"nowhere\""),
        (bad_quantity, "nodeBytesMap[\"cloud-b\"]"),
        (negative, "nodeCount is -1"),
    ] {
        let asked = groups(&BestOptionsResponse {
            options: req.options.clone(),
        })
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        let resp = x.best_options(wire(&req)).await;
        assert_eq!(groups(&resp), asked, "every option, in CA's order");
        assert!(
            resp.options
                .iter()
                .all(|o| o.debug.contains("not ranked") && o.debug.contains(says)),
            "{says}: {resp:?}"
        );
    }
    assert_eq!(
        x.metrics().fallbacks.with_label_values(&["decode"]).get(),
        5
    );
}

#[tokio::test]
async fn unsynced_caches_get_every_option_unranked() {
    let ext = extender(2);
    ext.cache_listing("Pod");
    let x = expander(ext);
    let resp = x.best_options(wire(&request(&["p0"]))).await;
    assert_eq!(groups(&resp), ["dc-extra", "cloud-a", "cloud-b"]);
    assert_eq!(
        x.metrics()
            .fallbacks
            .with_label_values(&["not_synced"])
            .get(),
        1
    );
}

#[tokio::test]
async fn grpc_round_trip_over_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = pki();
    let config = spillway::serve::tls::server_config(&files(pki.dir.path(), false)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(spillway::expander::server::serve(
        listener,
        config,
        Arc::new(expander(extender(2))),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ExpanderClient::new(channel);
    let resp = client
        .best_options(request(&["p0", "p1"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(groups(&resp), ["cloud-a"], "{resp:?}");

    // Plaintext gets no answer (cluster-autoscaler never sends it).
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(ch) => ExpanderClient::new(ch)
            .best_options(request(&["p0"]))
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext call must fail");

    // A client that does not trust the server's CA gets no answer either.
    let other = pki_other_ca();
    let untrusting = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(other))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await;
    assert!(untrusting.is_err());

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

fn pki_other_ca() -> String {
    pki().ca
}

// ---- fuzz ---------------------------------------------------------------------
//
// The decoder and the ranking over bytes cluster-autoscaler could never
// send: valid requests cut short or with bytes flipped, and random bytes in
// each bytes field. No input may panic; an answer names only asked groups.
// For a long run: `PROPTEST_CASES=200000 cargo test --release --test it expander`.

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn check(req: &BestOptionsRequest) -> Result<(), TestCaseError> {
        let ext = extender(2);
        let asked: Vec<&str> = req
            .options
            .iter()
            .map(|o| o.node_group_id.as_str())
            .collect();
        match spillway::expander::rank(&ext, &[], req, Time::from_secs(NOW)) {
            Ok(e) => {
                for o in e
                    .best
                    .iter()
                    .map(|o| &o.option.group)
                    .chain(e.rejected.iter().map(|r| &r.group))
                {
                    prop_assert!(asked.contains(&o.as_str()), "answered {o}, asked {asked:?}");
                }
            }
            // The error names the field it is about.
            Err(err) => {
                let text = err.to_string();
                prop_assert!(
                    [
                        "nodeBytesMap[",
                        "nodeMap[",
                        "podBytes[",
                        "pod[",
                        "nodeCount",
                        "options["
                    ]
                    .iter()
                    .any(|f| text.contains(f)),
                    "{}",
                    text
                );
            }
        }
        Ok(())
    }

    /// A valid encoding with one edit: cut at `at`, or byte `at` xor `flip`.
    fn mutate(mut b: Vec<u8>, at: usize, flip: u8, cut: bool) -> Vec<u8> {
        if b.is_empty() {
            return b;
        }
        let at = at % b.len();
        if cut {
            b.truncate(at);
        } else {
            b[at] ^= flip.max(1);
        }
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn whole_requests_mutated_or_random(at in any::<usize>(), flip in any::<u8>(), cut in any::<bool>(),
                                            random in proptest::collection::vec(any::<u8>(), 0..512)) {
            let valid = request(&["p0", "p1"]).encode_to_vec();
            for bytes in [mutate(valid, at, flip, cut), random] {
                if let Ok(req) = BestOptionsRequest::decode(bytes.as_slice()) {
                    check(&req)?;
                }
            }
        }

        #[test]
        fn node_and_pod_bytes_mutated_or_random(at in any::<usize>(), flip in any::<u8>(), cut in any::<bool>(),
                                                random in proptest::collection::vec(any::<u8>(), 0..256),
                                                which in 0..3usize) {
            let mut req = request(&["p0", "p1"]);
            let node = req.node_bytes_map.get("cloud-a").cloned().unwrap_or_default();
            req.node_bytes_map.insert("cloud-a".into(), mutate(node, at, flip, cut));
            check(&req)?;
            let mut req = request(&["p0", "p1"]);
            let pod = req.options[which].pod_bytes[0].clone();
            req.options[which].pod_bytes[0] = mutate(pod, at, flip, cut);
            check(&req)?;
            let mut req = request(&["p0"]);
            req.options[which].pod_bytes[0] = random.clone();
            req.node_bytes_map.insert("cloud-b".into(), random);
            check(&req)?;
        }
    }
}
