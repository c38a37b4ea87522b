//! Property test: the snapshot's incremental unit counts answer exactly what
//! the brute-force scan answers, after any sequence of node, pod, policy and
//! reservation changes.

use proptest::prelude::{ProptestConfig, any, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as Gen;

use super::ledger::{Ledger, Reservation};
use super::policy::{GroupKey, Policy, PolicyKey};
use super::quantity::{GPU, Resources};
use super::snapshot::{Node, Pod, PodPhase, Snapshot};
use super::testutil::{labels, t, unit};
use super::time::Time;
use super::usage::{unit_usage, unit_usage_scan};

#[derive(Clone, Debug)]
enum Op {
    Node {
        n: u8,
        pool: u8,
    },
    DropNode {
        n: u8,
    },
    Pod {
        p: u8,
        ns: u8,
        app: u8,
        rev: u8,
        node: Option<u8>,
        phase: u8,
        terminating: bool,
        created: u8,
        gpus: u8,
    },
    DropPod {
        p: u8,
    },
    /// The controller's patch applied in place: labels that may change the
    /// pod's policy or group, and an annotation.
    Relabel {
        p: u8,
        app: u8,
        rev: u8,
    },
    Policy {
        id: u8,
        created: u8,
        max: Option<u8>,
        per_rev: bool,
        ignore_term: bool,
        ignore_prev: bool,
        app: u8,
    },
    DropPolicy {
        id: u8,
    },
    Reserve {
        p: u8,
        id: u8,
        unit: u8,
        rev: u8,
        expires: u8,
    },
}

fn op() -> impl Gen<Value = Op> {
    prop_oneof![
        (0u8..6, 0u8..3).prop_map(|(n, pool)| Op::Node { n, pool }),
        (0u8..6).prop_map(|n| Op::DropNode { n }),
        (
            0u8..20,
            0u8..2,
            0u8..2,
            0u8..2,
            proptest::option::of(0u8..7),
            0u8..4,
            any::<bool>(),
            0u8..20,
            0u8..3
        )
            .prop_map(
                |(p, ns, app, rev, node, phase, terminating, created, gpus)| Op::Pod {
                    p,
                    ns,
                    app,
                    rev,
                    node,
                    phase,
                    terminating,
                    created,
                    gpus
                }
            ),
        (0u8..20).prop_map(|p| Op::DropPod { p }),
        (0u8..20, 0u8..2, 0u8..3).prop_map(|(p, app, rev)| Op::Relabel { p, app, rev }),
        (
            0u8..3,
            0u8..20,
            proptest::option::of(0u8..4),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0u8..2
        )
            .prop_map(
                |(id, created, max, per_rev, ignore_term, ignore_prev, app)| Op::Policy {
                    id,
                    created,
                    max,
                    per_rev,
                    ignore_term,
                    ignore_prev,
                    app
                }
            ),
        (0u8..3).prop_map(|id| Op::DropPolicy { id }),
        (0u8..24, 0u8..3, 0u8..3, 0u8..2, 0u8..20).prop_map(|(p, id, unit, rev, expires)| {
            Op::Reserve {
                p,
                id,
                unit,
                rev,
                expires,
            }
        }),
    ]
}

fn key(id: u8) -> PolicyKey {
    PolicyKey {
        namespace: "ns0".into(),
        name: format!("pol{id}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn incremental_counts_equal_the_scan(ops in proptest::collection::vec(op(), 1..80)) {
        let mut s = Snapshot::new();
        let mut l = Ledger::new();
        let now = t(10);
        for op in ops {
            match op {
                Op::Node { n, pool } => s.upsert_node(Node {
                    name: format!("n{n}"),
                    labels: labels(&[("pool", ["a", "b", "c"][usize::from(pool)])]),
                    allocatable: Resources::new().with(GPU, 8),
                    unschedulable: false,
                }),
                Op::DropNode { n } => { s.remove_node(&format!("n{n}")); }
                Op::Pod { p, ns, app, rev, node, phase, terminating, created, gpus } => {
                    let rev_s = format!("r{rev}");
                    let mut l2 = vec![("app", if app == 0 { "llm" } else { "web" })];
                    if rev < 2 { l2.push(("rev", rev_s.as_str())); }
                    s.upsert_pod(Pod {
                        uid: format!("p{p}"),
                        namespace: format!("ns{ns}"),
                        name: format!("p{p}"),
                        labels: labels(&l2),
                        requests: Resources::new().with(GPU, i64::from(gpus)),
                        node: node.map(|n| format!("n{n}")),
                        phase: [PodPhase::Pending, PodPhase::Running, PodPhase::Succeeded, PodPhase::Failed][usize::from(phase)],
                        created: t(i64::from(created)),
                        deleting: terminating.then(|| t(5)),
                        ..Pod::default()
                    });
                }
                Op::DropPod { p } => { s.remove_pod(&format!("p{p}")); }
                Op::Relabel { p, app, rev } => {
                    let rev_s = format!("r{rev}");
                    let mut l2 = vec![("app", if app == 0 { "llm" } else { "web" })];
                    if rev < 2 { l2.push(("rev", rev_s.as_str())); }
                    // One of the pods there are, or an unknown one.
                    let uids: Vec<String> = s.pods().map(|q| q.uid.clone()).collect();
                    let uid = uids.get(usize::from(p) % (uids.len() + 1)).cloned().unwrap_or_else(|| "gone".into());
                    let known = s.pod(&uid).is_some();
                    prop_assert_eq!(
                        s.merge_pod_metadata(&uid, &labels(&l2), &labels(&[("note", "x")])),
                        known
                    );
                    if let Some(pod) = s.pod(&uid) {
                        prop_assert_eq!(pod.labels.get("app").map(String::as_str), Some(l2[0].1));
                        prop_assert_eq!(pod.annotations.get("note").map(String::as_str), Some("x"));
                    }
                }
                Op::Policy { id, created, max, per_rev, ignore_term, ignore_prev, app } => {
                    // Policies differ in their units, so the per-policy unit of a
                    // node (the snapshot's cache) differs too.
                    let (first, second) = if id % 2 == 0 { ("a", "b") } else { ("c", "a") };
                    let mut pol = Policy::new("ns0", &format!("pol{id}"), vec![
                        unit(first, &[("pool", first)], max.map(u32::from)),
                        unit(second, &[("pool", second)], None),
                    ]);
                    pol.created = t(i64::from(created));
                    pol.selector = if app == 0 { labels(&[("app", "llm")]) } else { labels(&[]) };
                    if per_rev { pol.match_label_keys = vec!["rev".into()]; }
                    pol.ignore_terminating_pod = ignore_term;
                    pol.ignore_previous_pod = ignore_prev;
                    s.upsert_policy(pol);
                }
                Op::DropPolicy { id } => { s.remove_policy(&key(id)); }
                Op::Reserve { p, id, unit, rev, expires } => {
                    l.reserve(&format!("p{p}"), Reservation {
                        namespace: "ns0".into(),
                        pod_name: format!("p{p}"),
                        policy: key(id),
                        unit: usize::from(unit),
                        group: GroupKey(vec![format!("r{rev}")]),
                        requests: Resources::new().with(GPU, 1),
                        node: None,
                        expires: Time::from_secs(i64::from(expires)),
                    });
                }
            }
            // The cached unit of every node equals the label match, one by
            // one and in a batch (unknown names included).
            let names: Vec<String> = (0..8).map(|n| format!("n{n}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            for pol in s.policies() {
                for &name in &names {
                    prop_assert_eq!(
                        s.unit_of(pol, name),
                        s.node(name).map(|node| pol.unit_of_node(node)),
                        "node {} policy {}", name, pol.key
                    );
                }
                let batch: Vec<_> = s.units_of(pol).get_many(&names).into_iter().map(super::snapshot::NodeUnit::get).collect();
                let single: Vec<_> = names.iter().map(|n| s.unit_of(pol, n)).collect();
                prop_assert_eq!(batch, single, "policy {}", pol.key);
            }
            let policies: Vec<Policy> = s.policies().cloned().collect();
            for pol in &policies {
                let groups = if pol.match_label_keys.is_empty() {
                    vec![GroupKey::default()]
                } else {
                    vec![GroupKey(vec!["r0".into()]), GroupKey(vec!["r1".into()])]
                };
                for g in &groups {
                    for exclude in ["", "p1", "p3"] {
                        prop_assert_eq!(
                            unit_usage(&s, &l, pol, g, exclude, now),
                            unit_usage_scan(&s, &l, pol, g, exclude, now),
                            "policy {} group {:?} excluding {:?}", pol.key, g, exclude
                        );
                    }
                }
            }
        }
    }
}
