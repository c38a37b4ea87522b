//! Every request captured from a real kube-scheduler v1.30 decodes, and the
//! answers built from core decisions have the shapes that scheduler accepted
//! (`tests/fixtures/kube-scheduler-v1.30/`, copied from the capture).

use std::path::{Path, PathBuf};

use spillway::crd::ResourcePolicySpec;
use spillway::decision::filter::{FilterRequest, filter, preempt};
use spillway::decision::ledger::Ledger;
use spillway::decision::score::scores;
use spillway::decision::snapshot::Snapshot;
use spillway::decision::time::Time;
use spillway::extender::wire::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult,
    ExtenderPreemptionArgs, ExtenderPreemptionResult, HostPriority, filter_answer,
    preemption_result, priority_answer,
};
use spillway::index::convert;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube-scheduler-v1.30")
}

fn requests(mode: &str, verb: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(fixtures().join(mode))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&format!("-{verb}-")) && n.ends_with(".req.json"))
        .map(|n| {
            let body = std::fs::read_to_string(fixtures().join(mode).join(&n)).unwrap();
            (n, body)
        })
        .collect();
    out.sort();
    out
}

/// The three fixture nodes and a policy over the test pods (`app: kube-e2e`):
/// unit "local" (np-local) first, then "cloud" (np-cloud).
fn world() -> Snapshot {
    let raw = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nodes-np-local-np-cloud.json"),
    )
    .unwrap();
    let list: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let mut s = Snapshot::new();
    for item in list["items"].as_array().unwrap() {
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(item.clone()).unwrap();
        s.upsert_node(convert::node(&node).unwrap());
    }
    let spec: ResourcePolicySpec = serde_json::from_value(serde_json::json!({
        "selector": {"app": "kube-e2e"},
        "units": [
            {"name": "local", "resource": "idc", "nodeSelector": {"alibabacloud.com/nodepool-id": "np-local"}},
            {"name": "cloud", "resource": "elastic", "nodeSelector": {"alibabacloud.com/nodepool-id": "np-cloud"}}
        ]
    }))
    .unwrap();
    for ns in ["e2e-cache", "e2e-nocache"] {
        s.upsert_policy(spec.to_policy(ns, "e2e", Time::default()).unwrap());
    }
    s
}

#[test]
fn every_captured_request_decodes() {
    let mut n = 0;
    for mode in ["cache", "nocache"] {
        for (name, body) in requests(mode, "filter")
            .into_iter()
            .chain(requests(mode, "prioritize"))
        {
            let args: ExtenderArgs =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!args.candidate_names().is_empty(), "{name}: no candidates");
            assert_eq!(
                args.node_names.is_some(),
                mode == "cache",
                "{name}: node form follows nodeCacheCapable"
            );
            n += 1;
        }
        for (name, body) in requests(mode, "bind") {
            let b: ExtenderBindingArgs =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!b.pod_uid.is_empty() && !b.node.is_empty(), "{name}");
            n += 1;
        }
        for (name, body) in requests(mode, "preempt") {
            let p: ExtenderPreemptionArgs =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.candidate_names().len(), 3, "{name}");
            n += 1;
        }
    }
    assert!(n >= 30, "decoded {n} requests");
}

#[test]
fn captured_answers_decode_as_our_result_types() {
    for mode in ["cache", "nocache"] {
        let dir = fixtures().join(mode);
        for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".resp.json") {
                continue;
            }
            let body = std::fs::read_to_string(entry.path()).unwrap();
            let ok = if name.contains("-filter-") {
                serde_json::from_str::<ExtenderFilterResult>(&body).is_ok()
            } else if name.contains("-prioritize-") {
                serde_json::from_str::<Vec<HostPriority>>(&body).is_ok()
            } else if name.contains("-bind-") {
                serde_json::from_str::<ExtenderBindingResult>(&body).is_ok()
            } else {
                serde_json::from_str::<ExtenderPreemptionResult>(&body).is_ok()
            };
            assert!(ok, "{mode}/{name} does not decode");
        }
    }
}

#[test]
fn filter_answers_keep_the_scheduler_form_and_a_subset_of_its_nodes() {
    let snapshot = world();
    for mode in ["cache", "nocache"] {
        for (name, body) in requests(mode, "filter") {
            let args: ExtenderArgs = serde_json::from_str(&body).unwrap();
            let pod = convert::pod(&args.pod, None, Time::default()).unwrap();
            let names = args.candidate_names();
            let outcome = filter(
                &snapshot,
                &Ledger::new(),
                FilterRequest {
                    pod: &pod,
                    nodes: &names,
                    wait_since: None,
                    now: Time::from_secs(1_800_000_000),
                },
            );
            let bytes = filter_answer(&args, &outcome);
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let answer: ExtenderFilterResult = serde_json::from_slice(&bytes).unwrap();
            let returned: Vec<String> = if mode == "cache" {
                assert!(
                    json.get("NodeNames").is_some() && json.get("Nodes").is_none(),
                    "{name}: {json}"
                );
                answer.node_names.clone().unwrap()
            } else {
                assert!(
                    json.get("Nodes").is_some() && json.get("NodeNames").is_none(),
                    "{name}: {json}"
                );
                // Passing Node objects are echoed exactly as the scheduler sent them.
                let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
                for item in json["Nodes"]["items"].as_array().unwrap() {
                    let original = sent["Nodes"]["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|n| n["metadata"]["name"] == item["metadata"]["name"])
                        .unwrap();
                    assert_eq!(item, original, "{name}: node changed on the way back");
                }
                answer
                    .nodes
                    .as_ref()
                    .unwrap()
                    .items
                    .iter()
                    .map(|n| n.metadata.name.clone().unwrap())
                    .collect()
            };
            assert!(
                returned.iter().all(|n| names.contains(&n.as_str())),
                "{name}: answer is not a subset"
            );
            // The policy puts every test pod on the local unit while it has room.
            let expected: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| n.starts_with("gpu-local"))
                .collect();
            if !expected.is_empty() {
                assert_eq!(returned, expected, "{name}");
            }
            // Every captured request has a passing node under this policy:
            // the scheduler would drop the retryable rejections unread, so
            // none are sent. (An answer with no passing node carries them
            // all: the `filter_answers` property below.)
            assert!(!returned.is_empty(), "{name}: {json}");
            assert!(json.get("FailedNodes").is_none(), "{name}: {json}");
            for key in json.as_object().unwrap().keys() {
                assert!(
                    key.chars().next().unwrap().is_ascii_uppercase(),
                    "{name}: key {key} is not PascalCase"
                );
            }
        }
    }
}

#[test]
fn prioritize_and_preempt_answers_have_the_accepted_shapes() {
    let snapshot = world();
    let (name, body) = requests("cache", "prioritize").remove(0);
    let args: ExtenderArgs = serde_json::from_str(&body).unwrap();
    let pod = convert::pod(&args.pod, None, Time::default()).unwrap();
    let bytes = priority_answer(&scores(&snapshot, &pod, &args.candidate_names()));
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let list: Vec<HostPriority> = serde_json::from_slice(&bytes).unwrap();
    assert!(json.is_array(), "{name}: HostPriorityList is a bare array");
    assert!(list.iter().all(|h| (0..=10).contains(&h.score)));
    let local = list
        .iter()
        .filter(|h| h.host.starts_with("gpu-local"))
        .map(|h| h.score)
        .min()
        .unwrap();
    let cloud = list
        .iter()
        .filter(|h| h.host.starts_with("gpu-cloud"))
        .map(|h| h.score)
        .max()
        .unwrap();
    assert!(local > cloud, "{name}: {list:?}");

    for mode in ["cache", "nocache"] {
        let (name, body) = requests(mode, "preempt").remove(0);
        let args: ExtenderPreemptionArgs = serde_json::from_str(&body).unwrap();
        let pod = convert::pod(&args.pod, None, Time::default()).unwrap();
        let out = preempt(
            &snapshot,
            &Ledger::new(),
            &pod,
            &args.candidate_names(),
            None,
            Time::from_secs(1_800_000_000),
        );
        let answer = preemption_result(&args, &out.allowed);
        let json = serde_json::to_value(&answer).unwrap();
        let map = json["NodeNameToMetaVictims"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: {json}"));
        assert!(!map.is_empty(), "{name}: nothing allowed: {out:?}");
        for v in map.values() {
            assert!(
                v["Pods"][0]["UID"].is_string(),
                "{name}: victims in Meta (UID) form: {json}"
            );
        }
    }
}

mod answers_match_a_naive_encoding {
    //! The hand-written answer encoders against serde_json building the same
    //! answer from plain values, over arbitrary names (quotes, backslashes,
    //! control characters, non-ASCII), reasons and splits of the request.
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use serde_json::{Value, json};
    use spillway::decision::filter::FilterOutcome;
    use spillway::decision::score::NodeScore;
    use spillway::extender::wire::{ExtenderArgs, filter_answer, priority_answer};

    /// Where a node of the request ends up: eligible, failed or
    /// unresolvable (with one of a few reasons).
    #[derive(Clone, Copy, Debug)]
    enum Fate {
        Eligible,
        Failed(usize),
        Unresolvable(usize),
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            Just(Fate::Eligible),
            (0..3usize).prop_map(Fate::Failed),
            (0..3usize).prop_map(Fate::Unresolvable),
        ]
    }

    fn request(names: &[String], full: bool) -> Vec<u8> {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}});
        let body = if full {
            let items: Vec<Value> = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    json!({"metadata": {"name": n, "labels": {"i": i.to_string()}},
                                     "status": {"future": {"field": [i, "x\"y"]}}})
                })
                .collect();
            json!({"Pod": pod, "Nodes": {"metadata": {"resourceVersion": "7"}, "items": items}})
        } else {
            json!({"Pod": pod, "NodeNames": names})
        };
        serde_json::to_vec(&body).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn filter_answers(
            // Names and reasons on both sides of the 64 bytes the writer
            // copies at once.
            names in proptest::collection::btree_set(prop_oneof![".{0,12}", "[a-z.-]{55,70}"], 0..24),
            fates in proptest::collection::vec(fate(), 24),
            reasons in proptest::collection::vec(".{0,40}", 3),
            full in any::<bool>(),
        ) {
            let names: Vec<String> = names.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
            let body = request(&names, full);
            let args = ExtenderArgs::from_slice(&body).unwrap();
            let candidates = args.candidate_names();
            prop_assert_eq!(&*candidates, &names);
            let mut out = FilterOutcome::default();
            let (mut eligible, mut failed, mut unresolvable) = (Vec::new(), serde_json::Map::new(), serde_json::Map::new());
            for (&n, f) in candidates.iter().zip(&fates) {
                match *f {
                    Fate::Eligible => {
                        out.eligible.push(n);
                        eligible.push(n.to_owned());
                    }
                    Fate::Failed(r) => {
                        out.failed.insert(n, &reasons[r]);
                        failed.insert(n.to_owned(), Value::from(reasons[r].clone()));
                    }
                    Fate::Unresolvable(r) => {
                        out.unresolvable.insert(n, &reasons[r]);
                        unresolvable.insert(n.to_owned(), Value::from(reasons[r].clone()));
                    }
                }
            }
            let mut want = serde_json::Map::new();
            if full {
                let sent: Value = serde_json::from_slice(&body).unwrap();
                let items: Vec<Value> = sent["Nodes"]["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|n| eligible.iter().any(|e| n["metadata"]["name"] == e.as_str()))
                    .cloned()
                    .collect();
                want.insert("Nodes".into(), json!({"metadata": sent["Nodes"]["metadata"], "items": items}));
            } else {
                want.insert("NodeNames".into(), json!(eligible));
            }
            // Retryable rejections only when no node passes.
            if !failed.is_empty() && eligible.is_empty() {
                want.insert("FailedNodes".into(), Value::Object(failed));
            }
            if !unresolvable.is_empty() {
                want.insert("FailedAndUnresolvableNodes".into(), Value::Object(unresolvable));
            }
            let got: Value = serde_json::from_slice(&filter_answer(&args, &out))
                .map_err(|e| TestCaseError::fail(format!("answer is not JSON: {e}")))?;
            prop_assert_eq!(got, Value::Object(want));
        }

        #[test]
        fn priority_answers(
            nodes in proptest::collection::vec((".{0,12}", 0u8..=10), 0..24),
        ) {
            let scores: Vec<NodeScore> = nodes.iter().map(|(n, s)| NodeScore { node: n, score: *s }).collect();
            let want = json!(nodes.iter().map(|(n, s)| json!({"Host": n, "Score": s})).collect::<Vec<_>>());
            let got: Value = serde_json::from_slice(&priority_answer(&scores))
                .map_err(|e| TestCaseError::fail(format!("answer is not JSON: {e}")))?;
            prop_assert_eq!(got, want);
        }
    }

    fn names_of(body: &str) -> Result<Vec<String>, String> {
        let ours = ExtenderArgs::from_slice(body.as_bytes())
            .map(|a| {
                a.candidate_names()
                    .iter()
                    .map(|&n| n.to_owned())
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string());
        let theirs = serde_json::from_str::<ExtenderArgs>(body).map(|a| {
            a.candidate_names()
                .iter()
                .map(|&n| n.to_owned())
                .collect::<Vec<_>>()
        });
        assert_eq!(ours.is_ok(), theirs.is_ok(), "{body}");
        ours
    }

    #[test]
    fn node_names_in_any_valid_spelling_decode_and_invalid_ones_are_named() {
        let ok = [
            (r#"{"Pod":{},"NodeNames":[]}"#, vec![]),
            (r#"{"Pod":{},"NodeNames": [ ] }"#, vec![]),
            (
                r#"{"Pod":{},"NodeNames":[ "a" ,"b"
                ]}"#,
                vec!["a", "b"],
            ),
            (
                r#"{"Pod":{},"NodeNames":["a\"b","c\u00e9","d\\"]}"#,
                vec!["a\"b", "cé", "d\\"],
            ),
            (r#"{"Pod":{},"NodeNames":["é","x"]}"#, vec!["é", "x"]),
        ];
        for (body, want) in ok {
            assert_eq!(names_of(body).unwrap(), want, "{body}");
        }
        for (body, says) in [
            (r#"{"Pod":{},"NodeNames":["a",1]}"#, "node name"),
            (r#"{"Pod":{},"NodeNames":{"a":1}}"#, "sequence"),
            (r#"{"Pod":{},"NodeNames":["a",]}"#, ""),
            (r#"{"Pod":{},"NodeNames":["a"}"#, ""),
        ] {
            let err = names_of(body).unwrap_err();
            assert!(err.contains(says), "{body}: {err}");
        }
    }

    #[test]
    fn a_node_without_a_name_is_a_decode_error() {
        let body =
            br#"{"Pod": {}, "Nodes": {"items": [{"metadata": {"name": "a"}}, {"metadata": {}}]}}"#;
        let err = serde_json::from_slice::<ExtenderArgs>(body).unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
    }
}

mod requests_decode_like_serde {
    //! The request decoder the handlers use against serde's derived one.
    use proptest::prelude::*;
    use serde_json::Value;
    use spillway::extender::wire::ExtenderArgs;

    /// What a decoded request carries, for comparing two decoders.
    fn seen(args: &ExtenderArgs<'_>) -> (Value, Vec<String>, bool, Option<String>) {
        (
            serde_json::to_value(&args.pod).unwrap(),
            args.candidate_names()
                .iter()
                .map(|&n| n.to_owned())
                .collect(),
            args.node_names.is_some(),
            args.nodes
                .as_ref()
                .map(|l| l.metadata.map_or("", |m| m.get()).to_owned()),
        )
    }

    /// One top-level field of a request body: how its key is spelled and
    /// its value's text.
    fn field() -> impl Strategy<Value = (String, String)> {
        let name = "[a-z.-]{1,8}";
        let names = prop_oneof![
            proptest::collection::vec(name, 0..6).prop_map(|v| serde_json::to_string(&v).unwrap()),
            proptest::collection::vec(".{0,6}", 0..4)
                .prop_map(|v| serde_json::to_string(&v).unwrap()),
            proptest::collection::vec(name, 1..4)
                .prop_map(|v| serde_json::to_string_pretty(&v).unwrap()),
            Just(r#"["a","b\u0063"]"#.to_owned()),
            Just(r#"[ "a" , "b" ]"#.to_owned()),
            Just(r#"["a",1]"#.to_owned()),
            Just(r#"["a",]"#.to_owned()),
            Just(r#"["a""#.to_owned()),
            Just("[\"a\tb\"]".to_owned()),
            Just("null".to_owned()),
            Just("{}".to_owned()),
        ];
        let pod = prop_oneof![
            Just(r#"{"metadata":{"name":"p","namespace":"ns"}}"#.to_owned()),
            Just(r#"{"metadata":{"name":"q"},"spec":{"containers":[]}}"#.to_owned()),
            Just("{}".to_owned()),
            Just("null".to_owned()),
            Just(r#"{"metadata":7}"#.to_owned()),
        ];
        let nodes = prop_oneof![
            Just("null".to_owned()),
            Just(
                r#"{"metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"n1"}}]}"#
                    .to_owned()
            ),
            Just(r#"{"items":[{"metadata":{}}]}"#.to_owned()),
        ];
        let other = prop_oneof![
            Just(r#"[1, {"x": "y\"z"}, null, true, -2.5e3]"#.to_owned()),
            Just("17".to_owned()),
            Just(r#""text""#.to_owned()),
        ];
        prop_oneof![
            3 => (prop_oneof![Just("\"Pod\""), Just("\"\\u0050od\"")], pod).prop_map(|(k, v)| (k.to_owned(), v)),
            3 => names.prop_map(|v| ("\"NodeNames\"".to_owned(), v)),
            2 => nodes.prop_map(|v| ("\"Nodes\"".to_owned(), v)),
            1 => other.prop_map(|v| ("\"Extra\"".to_owned(), v)),
            1 => Just(("\"pod\"".to_owned(), "[]".to_owned())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// The production decoder (`ExtenderArgs::from_slice`) and serde's
        /// derived one agree on every object body: the same fields when
        /// both accept it, an error from both otherwise (missing, duplicate
        /// or malformed fields, escaped keys, whitespace, trailing bytes).
        #[test]
        fn the_request_decoder_agrees_with_serde(
            fields in proptest::collection::vec(field(), 0..5),
            spaced in any::<bool>(),
            trailing in prop_oneof![4 => Just(""), 1 => Just(" \n"), 1 => Just("x"), 1 => Just("{}")],
        ) {
            let ws = if spaced { " \n\t" } else { "" };
            let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{ws}{k}{ws}:{ws}{v}{ws}")).collect();
            let body = format!("{ws}{{{}}}{trailing}", inner.join(","));
            let ours = ExtenderArgs::from_slice(body.as_bytes());
            let theirs = serde_json::from_str::<ExtenderArgs>(&body);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(seen(a), seen(b), "{}", body),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "{body}: ours {:?}, serde {:?}", ours.as_ref().map(seen), theirs.as_ref().map(seen)),
            }
        }
    }

    #[test]
    fn request_decoding_errors_name_the_field() {
        for (body, says) in [
            (r#"{"NodeNames":["a"]}"#, "Pod"),
            (r#"{"Pod":{},"Pod":{}}"#, "duplicate field `Pod`"),
            (r#"{"Pod":{"metadata":7}}"#, "Pod:"),
            (r#"{"Pod":{},"NodeNames":["a",1]}"#, "NodeNames:"),
            (
                r#"{"Pod":{},"Nodes":{"items":[{"metadata":{}}]}}"#,
                "metadata.name",
            ),
            (r#"["Pod"]"#, "a JSON object"),
            (r#"{"Pod":{}} x"#, "trailing"),
        ] {
            let err = ExtenderArgs::from_slice(body.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{body}: {err}");
        }
        let err = ExtenderArgs::from_slice(b"{\"Pod\":{},\"NodeNames\":[\"\xff\"]}").unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
}
