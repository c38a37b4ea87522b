//! Fuzz harness over the request decoders and handlers (property-based, so
//! it runs on stable Rust): captured kube-scheduler requests, mutated at a
//! random place of their JSON tree, cut short, or replaced by random bytes,
//! are sent through the router. No input may panic it or get a 5xx; a 200
//! answer must be one the scheduler accepts (filter: a subset of its input;
//! prioritize: scores 0–10 on input nodes).
//!
//! CI runs a few hundred cases. For a long run:
//! `PROPTEST_CASES=200000 cargo test --release --test it fuzz`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use spillway::crd::ResourcePolicySpec;
use spillway::decision::snapshot::Node;
use spillway::decision::time::Time;
use spillway::decision::{GPU, Resources};
use spillway::extender::backend::{BindError, BindRequest, Binder, Extender, Index};
use spillway::extender::server::{RouterConfig, router};
use tower::ServiceExt;

struct OkBinder;

impl Binder for OkBinder {
    async fn bind(&self, _: BindRequest) -> Result<(), BindError> {
        Ok(())
    }
}

/// Every captured request, with its verb.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube-scheduler-v1.30");
    let mut out = Vec::new();
    for mode in ["cache", "nocache"] {
        for entry in std::fs::read_dir(dir.join(mode)).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".req.json") {
                continue;
            }
            let verb = ["filter", "prioritize", "preempt", "bind"]
                .into_iter()
                .find(|v| name.contains(&format!("-{v}-")))
                .unwrap();
            out.push((verb.to_owned(), std::fs::read(entry.path()).unwrap()));
        }
    }
    out.sort();
    out
}

/// An extender whose policy governs the captured pods' namespace, over the
/// captured cluster's nodes.
fn app() -> axum::Router {
    let mut index = Index::default();
    let nodes: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/nodes-np-local-np-cloud.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for n in nodes["items"].as_array().unwrap() {
        let k: k8s_openapi::api::core::v1::Node = serde_json::from_value(n.clone()).unwrap();
        index
            .snapshot
            .upsert_node(spillway::index::convert::node(&k).unwrap());
    }
    index.snapshot.upsert_node(Node {
        name: "extra".into(),
        labels: std::collections::BTreeMap::default(),
        allocatable: Resources::new().with(GPU, 8),
        unschedulable: false,
    });
    let spec: ResourcePolicySpec = serde_json::from_value(json!({
        "units": [
            {"resource": "idc", "nodeSelector": {"alibabacloud.com/nodepool-id": "np-local"}, "max": 2},
            {"resource": "elastic", "nodeSelector": {"alibabacloud.com/nodepool-id": "np-cloud"}}
        ]
    }))
    .unwrap();
    for ns in ["default", "e2e-cache", "e2e-nocache"] {
        index
            .snapshot
            .upsert_policy(spec.to_policy(ns, "fuzz", Time::default()).unwrap());
    }
    let ext = Arc::new(Extender::new(
        index,
        OkBinder,
        Box::new(|| Time::from_secs(1_800_000_000)),
    ));
    ext.set_ready(true);
    router(
        ext,
        &RouterConfig {
            body_limit: 1 << 20,
            ..RouterConfig::default()
        },
    )
}

/// Replaces the value at a path chosen by `picks` with `payload`.
fn mutate(v: &mut Value, picks: &[usize], payload: Value) {
    let Some((&p, rest)) = picks.split_first() else {
        *v = payload;
        return;
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            let key = m.keys().nth(p % m.len()).unwrap().clone();
            mutate(m.get_mut(&key).unwrap(), rest, payload);
        }
        Value::Array(a) if !a.is_empty() => {
            let i = p % a.len();
            mutate(&mut a[i], rest, payload);
        }
        _ => *v = payload,
    }
}

fn payload() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("1e400"),
            Just("-1"),
            Just("0.0001m"),
            Just("9999999999999Ei"),
            Just(""),
            Just("nvidia.com/gpu"),
            Just("2026-13-45T99:99:99Z"),
            Just("é\u{0}\u{ffff}"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[A-Za-z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Input {
    Mutated {
        case: usize,
        picks: Vec<usize>,
        payload: Value,
    },
    Truncated {
        case: usize,
        keep: usize,
    },
    Bytes {
        verb: usize,
        bytes: Vec<u8>,
    },
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        6 => (any::<usize>(), prop::collection::vec(any::<usize>(), 0..10), payload())
            .prop_map(|(case, picks, payload)| Input::Mutated { case, picks, payload }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(case, keep)| Input::Truncated { case, keep }),
        1 => (0..4usize, prop::collection::vec(any::<u8>(), 0..256))
            .prop_map(|(verb, bytes)| Input::Bytes { verb, bytes }),
    ]
}

fn names_in(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(a) = v.get("NodeNames").and_then(Value::as_array) {
        out.extend(a.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    if let Some(a) = v
        .get("Nodes")
        .and_then(|n| n.get("items"))
        .and_then(Value::as_array)
    {
        out.extend(
            a.iter()
                .filter_map(|n| n["metadata"]["name"].as_str())
                .map(str::to_owned),
        );
    }
    out
}

/// Checks one answer against the request it answers.
fn check(verb: &str, request: &[u8], status: StatusCode, body: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    if !(status == StatusCode::OK
        || status == StatusCode::BAD_REQUEST
        || status == StatusCode::PAYLOAD_TOO_LARGE
        || status == StatusCode::UNSUPPORTED_MEDIA_TYPE)
    {
        return Err(format!("{verb}: status {status}: {text}"));
    }
    if status != StatusCode::OK {
        return if text.is_empty() {
            Err(format!("{verb}: {status} without a reason"))
        } else {
            Ok(())
        };
    }
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| format!("{verb}: 200 with non-JSON body: {e}"))?;
    let Ok(req) = serde_json::from_slice::<Value>(request) else {
        return Err(format!("{verb}: 200 for a body that is not JSON"));
    };
    let input = names_in(&req);
    match verb {
        "filter" => {
            let out = names_in(&answer);
            if !out.is_subset(&input) {
                return Err(format!(
                    "filter answered nodes it was not given: {out:?} ⊄ {input:?}"
                ));
            }
        }
        "prioritize" => {
            for hp in answer.as_array().ok_or("prioritize: not an array")? {
                let score = hp["Score"].as_i64().ok_or("prioritize: no Score")?;
                let host = hp["Host"].as_str().ok_or("prioritize: no Host")?;
                if !(0..=10).contains(&score) || !input.contains(host) {
                    return Err(format!("prioritize: {host} scored {score}"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn no_request_panics_the_router_or_gets_a_wrong_shaped_answer(input in input()) {
        thread_local! {
            static CORPUS: Vec<(String, Vec<u8>)> = corpus();
            static APP: axum::Router = app();
            static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        }
        let (verb, body) = CORPUS.with(|c| match &input {
            Input::Mutated { case, picks, payload } => {
                let (verb, bytes) = &c[case % c.len()];
                let mut v: Value = serde_json::from_slice(bytes).unwrap();
                mutate(&mut v, picks, payload.clone());
                (verb.clone(), serde_json::to_vec(&v).unwrap())
            }
            Input::Truncated { case, keep } => {
                let (verb, bytes) = &c[case % c.len()];
                (verb.clone(), bytes[..keep % bytes.len()].to_vec())
            }
            Input::Bytes { verb, bytes } => (
                ["filter", "prioritize", "preempt", "bind"][*verb].to_owned(),
                bytes.clone(),
            ),
        });
        let app = APP.with(Clone::clone);
        let (status, out) = RT.with(|rt| rt.block_on(async {
            let req = Request::post(format!("/scheduler/{verb}"))
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            (status, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
        }));
        if let Err(e) = check(&verb, &body, status, &out) {
            prop_assert!(false, "{}", e);
        }
    }
}

#[test]
fn the_corpus_holds_every_verb() {
    let verbs: BTreeSet<String> = corpus().into_iter().map(|(v, _)| v).collect();
    assert_eq!(
        verbs,
        ["bind", "filter", "preempt", "prioritize"]
            .map(str::to_owned)
            .into()
    );
}
