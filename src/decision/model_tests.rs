//! Property tests: random sequences of pod arrivals, Filters, Binds, watch
//! deliveries, deletions and time steps, checked against a naive reference
//! model of the ResourcePolicy rules.
//!
//! The world: two "local" nodes, three "cloud" nodes, one node outside every
//! unit, 8 GPUs each; one policy with random caps, strategy, next-unit
//! policy, `matchLabelKeys` and `ignoreTerminatingPod`. A Bind is delivered
//! to the snapshot (the watch) later, by an explicit step, so Filters run
//! while Bindings are invisible — the burst the ledger exists for. The
//! model assumes the watch delivers a Binding before `BIND_TTL` lapses.

use std::collections::BTreeMap;

use proptest::prelude::{
    Just, ProptestConfig, any, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy as Gen;

use super::*;
use crate::decision::deletion::CostClass;
use crate::decision::ledger::FILTER_TTL;
use crate::decision::policy::Strategy;
use crate::decision::testutil::{labels, mk_node, mk_pod, t, unit};

const NODES: [(&str, &str); 6] = [
    ("local-1", "local"),
    ("local-2", "local"),
    ("cloud-1", "cloud"),
    ("cloud-2", "cloud"),
    ("cloud-3", "cloud"),
    ("other-1", "other"),
];

#[derive(Clone, Debug)]
enum Op {
    Arrive { gpus: i64, revision: u8 },
    Filter { pod: usize },
    Bind { pod: usize, pick: usize },
    Watch { pod: usize },
    Terminate { pod: usize },
    Delete { pod: usize },
    Tick { secs: i64 },
}

fn op() -> impl Gen<Value = Op> {
    prop_oneof![
        3 => (1..=4i64, 0..2u8).prop_map(|(gpus, revision)| Op::Arrive { gpus, revision }),
        5 => (0..40usize).prop_map(|pod| Op::Filter { pod }),
        4 => (0..40usize, 0..8usize).prop_map(|(pod, pick)| Op::Bind { pod, pick }),
        3 => (0..40usize).prop_map(|pod| Op::Watch { pod }),
        1 => (0..40usize).prop_map(|pod| Op::Terminate { pod }),
        1 => (0..40usize).prop_map(|pod| Op::Delete { pod }),
        2 => (1..=40i64).prop_map(|secs| Op::Tick { secs }),
    ]
}

#[derive(Clone, Debug)]
struct Config {
    local_max: Option<u32>,
    cloud_max: Option<u32>,
    required: bool,
    next: NextUnitPolicy,
    per_revision: bool,
    ignore_terminating: bool,
}

fn config() -> impl Gen<Value = Config> {
    (
        proptest::option::of(0..5u32),
        proptest::option::of(0..6u32),
        any::<bool>(),
        prop_oneof![
            Just(NextUnitPolicy::LackResourceOrExceedMax),
            Just(NextUnitPolicy::ExceedMax),
            Just(NextUnitPolicy::TimeoutOrExceedMax),
            Just(NextUnitPolicy::LackResourceAndNoTerminating),
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(local_max, cloud_max, required, next, per_revision, ignore_terminating)| Config {
                local_max,
                cloud_max,
                required,
                next,
                per_revision,
                ignore_terminating,
            },
        )
}

fn build_policy(c: &Config) -> Policy {
    let mut p = Policy::new(
        "ns",
        "llm",
        vec![
            unit("local", &[("pool", "local")], c.local_max),
            unit("cloud", &[("pool", "cloud")], c.cloud_max),
        ],
    );
    p.selector = labels(&[("app", "llm")]);
    p.strategy = if c.required {
        Strategy::Required
    } else {
        Strategy::Prefer
    };
    p.when_try_next_units = c.next;
    p.timeout = std::time::Duration::from_secs(60);
    if c.per_revision {
        p.match_label_keys = vec!["rev".into()];
    }
    p.ignore_terminating_pod = c.ignore_terminating;
    p
}

/// The truth the reference model keeps, independently of the core's indexes.
#[derive(Default)]
struct Truth {
    /// pod → (gpus, revision, node it is bound to in the API server, terminating)
    pods: BTreeMap<String, (i64, u8, Option<String>, bool)>,
    /// pods whose Binding the snapshot has not seen yet
    unwatched: BTreeMap<String, String>,
}

fn pool_of(node: &str) -> &'static str {
    NODES
        .iter()
        .find(|(n, _)| *n == node)
        .map_or("?", |(_, p)| p)
}

impl Truth {
    /// Pods bound (in the API server) to a pool, counted as the policy says.
    fn count(&self, pool: &str, rev: Option<u8>, ignore_terminating: bool) -> u32 {
        let n = self
            .pods
            .values()
            .filter(|(_, r, node, term)| {
                node.as_deref().is_some_and(|n| pool_of(n) == pool)
                    && rev.is_none_or(|x| x == *r)
                    && !(ignore_terminating && *term)
            })
            .count();
        u32::try_from(n).unwrap()
    }
}

fn mk_llm(uid: &str, gpus: i64, rev: u8) -> Pod {
    mk_pod(uid, &[("app", "llm"), ("rev", &format!("r{rev}"))], gpus)
}

/// The reference decision for a pod: what the ResourcePolicy rules say,
/// computed by brute force from the truth plus live reservations.
/// One Filter as the reference model sees it.
struct Query<'a> {
    pod_uid: &'a str,
    rev: u8,
    feasible: &'a [String],
    waited: Option<Time>,
    now: Time,
}

fn reference(c: &Config, truth: &Truth, ledger: &Ledger, q: &Query<'_>) -> String {
    let Query {
        pod_uid,
        rev,
        feasible,
        waited,
        now,
    } = *q;
    let group_rev = c.per_revision.then_some(rev);
    for (pool, max) in [("local", c.local_max), ("cloud", c.cloud_max)] {
        let unit = usize::from(pool == "cloud");
        let mut count = truth.count(pool, group_rev, c.ignore_terminating);
        // Plus live reservations of other pods not yet bound in the API server.
        for (uid, r) in ledger.iter() {
            let same_group = !c.per_revision || r.group.0 == vec![format!("r{rev}")];
            let bound = truth.pods.get(uid).is_some_and(|p| p.2.is_some());
            if uid != pod_uid && r.is_live(now) && r.unit == unit && same_group && !bound {
                count += 1;
            }
        }
        if max.is_some_and(|m| count >= m) {
            continue;
        }
        let feasible_here = feasible.iter().any(|n| pool_of(n) == pool);
        if feasible_here {
            return format!("unit{unit}");
        }
        let terminating = truth
            .pods
            .values()
            .filter(|(_, _, node, term)| {
                *term && node.as_deref().is_some_and(|n| pool_of(n) == pool)
            })
            .count();
        let in_time = now
            < waited
                .unwrap_or(now)
                .after(std::time::Duration::from_secs(60));
        let waits = match c.next {
            NextUnitPolicy::LackResourceOrExceedMax => false,
            NextUnitPolicy::ExceedMax => max.is_some(),
            NextUnitPolicy::TimeoutOrExceedMax => max.is_some() && in_time,
            NextUnitPolicy::LackResourceAndNoTerminating => terminating > 0,
        };
        if waits {
            return format!("wait{unit}");
        }
    }
    if c.required {
        "exhausted".into()
    } else {
        "outside".into()
    }
}

fn label(d: &Decision) -> String {
    match d {
        Decision::Admitted(Admission::Unit { unit, .. }) => format!("unit{unit}"),
        Decision::Admitted(Admission::Wait { unit, .. }) => format!("wait{unit}"),
        Decision::Admitted(Admission::OutsideUnits { .. }) => "outside".into(),
        Decision::Admitted(Admission::Exhausted { .. }) => "exhausted".into(),
        other => format!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn core_agrees_with_reference_and_never_breaks_max(c in config(), ops in proptest::collection::vec(op(), 1..120)) {
        let policy = build_policy(&c);
        let mut snap = Snapshot::new();
        for (n, pool) in NODES {
            snap.upsert_node(mk_node(n, &[("pool", pool)], 8));
        }
        snap.upsert_policy(policy.clone());
        let mut ledger = Ledger::new();
        let mut truth = Truth::default();
        let mut order: Vec<String> = Vec::new();
        let mut last_eligible: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut wait_since: BTreeMap<String, Time> = BTreeMap::new();
        let mut now = t(10_000);

        for op in ops {
            match op {
                Op::Arrive { gpus, revision } => {
                    let uid = format!("p{}", order.len());
                    snap.upsert_pod(mk_llm(&uid, gpus, revision));
                    truth.pods.insert(uid.clone(), (gpus, revision, None, false));
                    order.push(uid);
                }
                Op::Filter { pod } => {
                    let Some(uid) = order.get(pod % order.len().max(1)).cloned() else { continue };
                    let (gpus, rev, node, term) = truth.pods.get(&uid).cloned().unwrap_or((0, 0, Some(String::new()), true));
                    if node.is_some() || term { continue; }
                    let p = mk_llm(&uid, gpus, rev);
                    let sched = scheduler_view(&snap, &truth);
                    let (feasible, _) = feasible_nodes(&sched, &p);
                    let waited = wait_since.get(&uid).copied();
                    let names: Vec<&str> = feasible.iter().map(String::as_str).collect();
                    let out = filter(&snap, &ledger, FilterRequest { pod: &p, nodes: &names, wait_since: waited, now });

                    // A pod never gets nodes from two units.
                    let units: std::collections::BTreeSet<Option<usize>> = out
                        .eligible
                        .iter()
                        .map(|n| snap.node(n).and_then(|n| policy.unit_of_node(n)))
                        .collect();
                    prop_assert!(units.len() <= 1, "eligible nodes span units: {:?}", out.eligible);
                    // Every eligible node was feasible.
                    prop_assert!(out.eligible.iter().all(|n| names.contains(n)));

                    let want = reference(&c, &truth, &ledger, &Query { pod_uid: &uid, rev, feasible: &feasible, waited, now });
                    prop_assert_eq!(label(&out.decision), want, "pod {} feasible {:?}", uid, feasible);

                    if let Some(since) = out.wait_since() {
                        wait_since.entry(uid.clone()).or_insert(since);
                    }
                    if let Some(r) = out.reservation(&p, now.after(FILTER_TTL)) {
                        ledger.reserve(&uid, r);
                    } else {
                        ledger.release(&uid);
                    }
                    last_eligible.insert(uid, out.eligible.iter().map(|&n| n.to_owned()).collect());
                }
                Op::Bind { pod, pick } => {
                    let Some(uid) = order.get(pod % order.len().max(1)).cloned() else { continue };
                    let Some(eligible) = last_eligible.remove(&uid) else { continue };
                    if eligible.is_empty() || truth.pods[&uid].2.is_some() || truth.pods[&uid].3 { continue; }
                    let node = eligible[pick % eligible.len()].clone();
                    let (gpus, rev, _, _) = truth.pods[&uid];
                    let p = mk_llm(&uid, gpus, rev);
                    // Resources may have gone since the Filter (other binds).
                    let sched = scheduler_view(&snap, &truth);
                    if fit(&sched, &node, &p).is_err() { continue; }
                    if admit_bind(&snap, &ledger, &p, &node, now).is_err() {
                        ledger.release(&uid);
                        continue;
                    }
                    if !ledger.confirm(&uid, &node, now, BIND_TTL) {
                        // Binding without a live reservation (it lapsed): record one
                        // so the in-flight bind is counted until the watch sees it.
                        let unit = snap.node(&node).and_then(|n| policy.unit_of_node(n));
                        if let Some(unit) = unit {
                            ledger.reserve(&uid, Reservation {
                                namespace: "ns".into(), pod_name: uid.clone(), policy: policy.key.clone(), unit,
                                group: policy.group_of(&p).unwrap_or_default(), requests: p.requests.clone(),
                                node: Some(node.clone()), expires: now.after(BIND_TTL),
                            });
                        }
                    }
                    truth.pods.get_mut(&uid).unwrap().2 = Some(node.clone());
                    truth.unwatched.insert(uid, node);
                }
                Op::Watch { pod } => {
                    let Some(uid) = order.get(pod % order.len().max(1)).cloned() else { continue };
                    deliver(&mut snap, &mut ledger, &mut truth, &uid);
                }
                Op::Terminate { pod } => {
                    let Some(uid) = order.get(pod % order.len().max(1)).cloned() else { continue };
                    let Some(entry) = truth.pods.get_mut(&uid) else { continue };
                    if entry.2.is_none() { continue; }
                    deliver(&mut snap, &mut ledger, &mut truth, &uid);
                    truth.pods.get_mut(&uid).unwrap().3 = true;
                    let mut p = snap.pod(&uid).unwrap().clone();
                    p.deleting = Some(now);
                    snap.upsert_pod(p);
                }
                Op::Delete { pod } => {
                    let Some(uid) = order.get(pod % order.len().max(1)).cloned() else { continue };
                    truth.pods.remove(&uid);
                    truth.unwatched.remove(&uid);
                    snap.remove_pod(&uid);
                    ledger.release(&uid);
                    last_eligible.remove(&uid);
                }
                Op::Tick { secs } => {
                    now = now.after(std::time::Duration::from_secs(u64::try_from(secs).unwrap()));
                    // The watch delivers every Binding before BIND_TTL lapses.
                    let late: Vec<String> = truth.unwatched.keys().cloned().collect();
                    for uid in late {
                        if ledger.get(&uid).is_none_or(|r| !r.is_live(now)) {
                            deliver(&mut snap, &mut ledger, &mut truth, &uid);
                        }
                    }
                    ledger.expire(now);
                }
            }

            // Invariant: no unit ever holds more than max pods (bound in the API
            // server, per group), whatever the watch has shown so far.
            for (pool, max) in [("local", c.local_max), ("cloud", c.cloud_max)] {
                let Some(max) = max else { continue };
                let revs: Vec<Option<u8>> = if c.per_revision { vec![Some(0), Some(1)] } else { vec![None] };
                for rev in revs {
                    let n = truth.count(pool, rev, c.ignore_terminating);
                    prop_assert!(n <= max, "unit {} holds {} > max {} (rev {:?})", pool, n, max, rev);
                }
            }
        }

        // Deletion costs order units in reverse: every within-cap pod of an
        // earlier unit costs more than every pod of a later unit.
        let costs = deletion_costs(&snap, &ledger, &policy, now);
        let by_class = |uid: &str| {
            let node = snap.pod(uid).and_then(|p| p.node.clone());
            node.map(|n| pool_of(&n))
        };
        for (a, ca) in &costs {
            for (b, cb) in &costs {
                if by_class(a) == Some("local") && by_class(b) == Some("cloud") && *ca > 0 {
                    prop_assert!(ca > cb, "local pod {} ({}) must outlast cloud pod {} ({})", a, ca, b, cb);
                }
                if by_class(b) == Some("other") {
                    prop_assert!(*cb == deletion_cost(2, CostClass::Outside));
                }
            }
        }
    }
}

/// kube-scheduler's own view: what the watch showed plus binds in flight
/// (the scheduler assumes its own binds before they are visible).
fn scheduler_view(snap: &Snapshot, truth: &Truth) -> Snapshot {
    let mut sched = snap.clone();
    for (u, n) in &truth.unwatched {
        let (g, r, _, _) = truth.pods[u];
        let mut b = mk_llm(u, g, r);
        b.node = Some(n.clone());
        sched.upsert_pod(b);
    }
    sched
}

/// The watch shows pod `uid` bound: the snapshot learns it, the ledger lets go.
fn deliver(snap: &mut Snapshot, ledger: &mut Ledger, truth: &mut Truth, uid: &str) {
    if let Some(node) = truth.unwatched.remove(uid) {
        let (gpus, rev, _, _) = truth.pods[uid];
        let mut p = mk_llm(uid, gpus, rev);
        p.node = Some(node);
        p.phase = PodPhase::Running;
        snap.upsert_pod(p);
        ledger.release(uid);
    }
}
