//! Table tests for Filter, Preempt and Bind admission.

use super::*;
use crate::decision::ledger::FILTER_TTL;
use crate::decision::policy::NextUnitPolicy;
use crate::decision::snapshot::Snapshot;
use crate::decision::testutil::*;

/// Two local nodes, two cloud nodes, one node outside every unit; policy
/// `ns/llm` with unit "local" (max 4) then unit "cloud".
fn cluster(configure: impl FnOnce(&mut Policy)) -> Snapshot {
    let mut s = Snapshot::new();
    for (n, pool) in [
        ("local-1", "local"),
        ("local-2", "local"),
        ("cloud-1", "cloud"),
        ("cloud-2", "cloud"),
        ("other-1", "other"),
    ] {
        s.upsert_node(mk_node(n, &[("pool", pool)], 8));
    }
    let mut p = Policy::new(
        "ns",
        "llm",
        vec![
            unit("local", &[("pool", "local")], Some(4)),
            unit("cloud", &[("pool", "cloud")], None),
        ],
    );
    p.selector = labels(&[("app", "llm")]);
    configure(&mut p);
    s.upsert_policy(p);
    s
}

fn all_nodes() -> Vec<&'static str> {
    vec!["local-1", "local-2", "cloud-1", "cloud-2", "other-1"]
}

fn llm(name: &str) -> Pod {
    mk_pod(name, &[("app", "llm"), ("pod-template-hash", "v1")], 1)
}

fn run<'n>(s: &Snapshot, l: &Ledger, pod: &Pod, nodes: &[&'n str]) -> FilterOutcome<'n> {
    filter(
        s,
        l,
        FilterRequest {
            pod,
            nodes,
            wait_since: None,
            now: t(2000),
        },
    )
}

fn fill_local(s: &mut Snapshot, n: usize) {
    for i in 0..n {
        s.upsert_pod(bound(
            llm(&format!("old-{i}")),
            if i % 2 == 0 { "local-1" } else { "local-2" },
        ));
    }
}

/// Every input node appears in exactly one of the three answers.
fn assert_partition(out: &FilterOutcome, input: &[&str]) {
    let mut seen: Vec<&str> = out
        .eligible
        .iter()
        .copied()
        .chain(out.failed.keys())
        .chain(out.unresolvable.keys())
        .collect();
    seen.sort_unstable();
    let mut want: Vec<&str> = input.to_vec();
    want.sort_unstable();
    assert_eq!(seen, want, "every node answered exactly once");
}

#[test]
fn pods_no_policy_selects_pass_unchanged() {
    let s = cluster(|_| {});
    let pod = mk_pod("web", &[("app", "web")], 1);
    let out = run(&s, &Ledger::new(), &pod, &all_nodes());
    assert_eq!(out.decision, Decision::Ungoverned);
    assert_eq!(out.eligible, all_nodes());
    assert!(out.reservation(&pod, t(10)).is_none());
}

#[test]
fn first_unit_with_room_takes_the_pod_alone() {
    let mut s = cluster(|_| {});
    fill_local(&mut s, 2);
    let out = run(&s, &Ledger::new(), &llm("new"), &all_nodes());
    assert_partition(&out, &all_nodes());
    assert_eq!(out.eligible, ["local-1", "local-2"]);
    assert_eq!(out.chosen_unit(), Some(0));
    assert_eq!(
        out.failed["cloud-1"],
        "unit \"local\" has room and comes first"
    );
    assert!(out.failed["other-1"].contains("used only after all units"));
    assert!(out.unresolvable.is_empty());
}

#[test]
fn full_unit_is_unresolvable_and_the_pod_spills() {
    let mut s = cluster(|_| {});
    fill_local(&mut s, 4);
    let out = run(&s, &Ledger::new(), &llm("new"), &all_nodes());
    assert_partition(&out, &all_nodes());
    assert_eq!(out.eligible, ["cloud-1", "cloud-2"]);
    assert_eq!(out.unresolvable["local-1"], "unit \"local\" is full (4/4)");
    assert_eq!(out.chosen_unit(), Some(1));
}

#[test]
fn max_holds_when_binds_lag_behind_filters() {
    let mut s = cluster(|_| {});
    fill_local(&mut s, 2);
    let mut l = Ledger::new();
    let mut chosen = Vec::new();
    // Four pods filtered back to back; no Binding visible yet.
    for i in 0..4 {
        let pod = llm(&format!("burst-{i}"));
        let out = run(&s, &l, &pod, &all_nodes());
        chosen.push(out.chosen_unit());
        let r = out.reservation(&pod, t(2000).after(FILTER_TTL)).unwrap();
        l.reserve(&pod.uid, r);
    }
    assert_eq!(chosen, [Some(0), Some(0), Some(1), Some(1)]);
}

#[test]
fn refiltering_a_pod_replaces_its_own_reservation() {
    let mut s = cluster(|_| {});
    fill_local(&mut s, 3);
    let mut l = Ledger::new();
    let pod = llm("again");
    for _ in 0..3 {
        let out = run(&s, &l, &pod, &all_nodes());
        assert_eq!(
            out.chosen_unit(),
            Some(0),
            "its own slot must not push it out"
        );
        l.reserve(&pod.uid, out.reservation(&pod, t(3000)).unwrap());
    }
}

#[test]
fn required_strategy_never_uses_nodes_outside_units() {
    let mut s = cluster(|p| p.strategy = Strategy::Required);
    fill_local(&mut s, 4);
    let out = run(&s, &Ledger::new(), &llm("new"), &["local-1", "other-1"]);
    assert!(out.eligible.is_empty());
    assert_eq!(
        out.unresolvable["other-1"],
        "node is in no unit of ResourcePolicy ns/llm (strategy: required)"
    );
    assert!(matches!(
        out.decision,
        Decision::Admitted(Admission::Exhausted { .. })
    ));
}

#[test]
fn prefer_strategy_uses_outside_nodes_after_all_units() {
    let mut s = cluster(|p| p.units[1].max = Some(0));
    fill_local(&mut s, 4);
    let out = run(&s, &Ledger::new(), &llm("new"), &all_nodes());
    assert_eq!(out.eligible, ["other-1"]);
    assert_eq!(out.unresolvable["cloud-1"], "unit \"cloud\" is full (0/0)");
}

#[test]
fn pod_missing_a_match_label_key_is_rejected_everywhere() {
    let s = cluster(|p| p.match_label_keys = vec!["pod-template-hash".into()]);
    let pod = mk_pod("bare", &[("app", "llm")], 1);
    let out = run(&s, &Ledger::new(), &pod, &all_nodes());
    assert!(out.eligible.is_empty() && out.failed.is_empty());
    assert_eq!(out.unresolvable.len(), 5);
    assert_eq!(
        out.unresolvable["local-1"],
        "pod lacks label \"pod-template-hash\" required by matchLabelKeys of ResourcePolicy ns/llm"
    );
}

#[test]
fn match_label_keys_cap_each_revision_separately() {
    let mut s = cluster(|p| p.match_label_keys = vec!["pod-template-hash".into()]);
    fill_local(&mut s, 4); // all v1
    let mut v2 = llm("v2-pod");
    v2.labels.insert("pod-template-hash".into(), "v2".into());
    let out = run(&s, &Ledger::new(), &v2, &all_nodes());
    assert_eq!(out.chosen_unit(), Some(0), "v2 has its own max");
    let out = run(&s, &Ledger::new(), &llm("v1-pod"), &all_nodes());
    assert_eq!(
        out.unresolvable["local-1"],
        "unit \"local\" is full (4/4 pods with pod-template-hash=v1)"
    );
}

#[test]
fn nodes_missing_from_the_cache_are_retried_not_misplaced() {
    let s = cluster(|_| {});
    let nodes = vec!["brand-new", "cloud-1"];
    let out = run(&s, &Ledger::new(), &llm("p"), &nodes);
    assert_partition(&out, &nodes);
    assert!(out.failed["brand-new"].contains("not in Spillway's cache"));
    assert_eq!(
        out.eligible,
        ["cloud-1"],
        "local has room but no feasible node"
    );
}

#[test]
fn exceed_max_keeps_the_pod_waiting_below_the_cap() {
    let s = cluster(|p| p.when_try_next_units = NextUnitPolicy::ExceedMax);
    let nodes = vec!["cloud-1", "other-1"];
    let out = run(&s, &Ledger::new(), &llm("p"), &nodes);
    assert!(out.eligible.is_empty());
    assert_eq!(
        out.failed["cloud-1"],
        "pod waits for room in unit \"local\" (0/4 pods; whenTryNextUnits: ExceedMax)"
    );
    assert_eq!(out.wait_since(), Some(t(2000)));
    assert!(
        out.reservation(&llm("p"), t(9)).is_none(),
        "a waiting pod holds no slot"
    );
}

#[test]
fn conflicting_policies_are_reported_and_the_oldest_governs() {
    let mut s = cluster(|p| p.created = t(10));
    let mut newer = Policy::new(
        "ns",
        "also-llm",
        vec![unit("any", &[("pool", "other")], None)],
    );
    newer.created = t(20);
    s.upsert_policy(newer);
    let out = run(&s, &Ledger::new(), &llm("p"), &all_nodes());
    assert_eq!(out.policy.unwrap().name, "llm");
    assert_eq!(out.conflicts.len(), 1);
    assert_eq!(out.conflicts[0].name, "also-llm");
}

#[test]
fn preemption_waits_for_all_units_under_after_all_units() {
    let mut s = cluster(|p| {
        p.units[1].max = Some(1);
        p.when_try_next_units = NextUnitPolicy::LackResourceOrExceedMax;
        p.strategy = Strategy::Required;
    });
    fill_local(&mut s, 2);
    s.upsert_pod(bound(llm("c"), "cloud-1"));
    // local has room (2/4) but no feasible node; cloud is full (1/1).
    let out = preempt(&s, &Ledger::new(), &llm("p"), &all_nodes(), None, t(2000));
    assert_eq!(out.allowed, ["local-1", "local-2"]);
    assert_eq!(out.refused["cloud-1"], "unit \"cloud\" is full (1/1)");
    assert!(out.refused["other-1"].contains("strategy: required"));
}

#[test]
fn before_next_unit_preempts_only_in_the_waiting_unit() {
    let mut s = cluster(|p| p.preempt_policy = PreemptPolicy::BeforeNextUnit);
    // Low-priority pods fill both local nodes.
    for (i, n) in ["local-1", "local-2"].iter().enumerate() {
        let mut victim = bound(mk_pod(&format!("batch-{i}"), &[("app", "batch")], 8), n);
        victim.priority = -10;
        s.upsert_pod(victim);
    }
    let nodes = vec!["cloud-1"];
    let out = run(&s, &Ledger::new(), &llm("p"), &nodes);
    assert!(
        out.eligible.is_empty(),
        "cloud must wait while preemption may free local"
    );
    assert!(out.failed["cloud-1"].contains("tries preemption in unit \"local\""));
    let pre = preempt(&s, &Ledger::new(), &llm("p"), &all_nodes(), None, t(2000));
    assert_eq!(pre.allowed, ["local-1", "local-2"]);
    // Past the timeout the pod gives up on preemption and spills.
    let later = filter(
        &s,
        &Ledger::new(),
        FilterRequest {
            pod: &llm("p"),
            nodes: &nodes,
            wait_since: Some(t(2000)),
            now: t(2000 + 15 * 60),
        },
    );
    assert_eq!(later.eligible, ["cloud-1"]);
}

#[test]
fn bind_rechecks_caps_when_the_reservation_lapsed() {
    let mut s = cluster(|_| {});
    fill_local(&mut s, 3);
    let mut l = Ledger::new();
    let a = llm("a");
    let out = run(&s, &l, &a, &all_nodes());
    l.reserve(&a.uid, out.reservation(&a, t(2030)).unwrap());
    assert_eq!(admit_bind(&s, &l, &a, "local-1", t(2001)), Ok(()));
    // b binds straight to local without a reservation: 3 + a's slot = 4.
    let b = llm("b");
    assert_eq!(
        admit_bind(&s, &l, &b, "local-2", t(2001)),
        Err("unit \"local\" is full (4/4)".into())
    );
    // After a's reservation lapses, b may take the last slot.
    assert_eq!(admit_bind(&s, &l, &b, "local-2", t(2030)), Ok(()));
    assert_eq!(admit_bind(&s, &l, &b, "cloud-1", t(2001)), Ok(()));
}

#[test]
fn unit_order_with_max_resources_names_the_resource() {
    let mut s = cluster(|p| {
        p.units[0].max = None;
        p.units[0].max_resources =
            crate::decision::quantity::Resources::new().with(crate::decision::GPU, 3);
    });
    fill_local(&mut s, 2);
    let mut big = llm("big");
    big.requests = crate::decision::quantity::Resources::new().with(crate::decision::GPU, 2);
    let out = run(&s, &Ledger::new(), &big, &all_nodes());
    assert_eq!(
        out.unresolvable["local-1"],
        "unit \"local\" would exceed maxResources nvidia.com/gpu (2 used + 2 requested > 3)"
    );
    assert_eq!(out.chosen_unit(), Some(1));
}

/// Low-priority 8-GPU pods fill every node of `nodes`.
fn fill_with_victims(s: &mut Snapshot, nodes: &[&str]) {
    for n in nodes {
        let mut victim = bound(mk_pod(&format!("batch-{n}"), &[("app", "batch")], 8), n);
        victim.priority = -10;
        s.upsert_pod(victim);
    }
}

/// (local full by max, candidates, allowed): once every unit failed under
/// `AfterAllUnits`, victims come from the earliest open unit with
/// candidates, and nodes outside every unit only when no unit has one.
#[test]
fn after_all_units_preempts_in_the_earliest_open_unit_with_candidates() {
    type Row = (bool, &'static [&'static str], &'static [&'static str]);
    let rows: &[Row] = &[
        (false, &["local-1", "cloud-1", "other-1"], &["local-1"]),
        (false, &["cloud-2", "local-2", "cloud-1"], &["local-2"]),
        (false, &["cloud-1", "other-1"], &["cloud-1"]),
        (false, &["other-1"], &["other-1"]),
        (true, &["local-1", "cloud-1", "other-1"], &["cloud-1"]),
        (true, &["local-1", "other-1"], &["other-1"]),
    ];
    for &(local_full, candidates, allowed) in rows {
        let mut s = cluster(|_| {});
        fill_with_victims(&mut s, &all_nodes());
        if local_full {
            fill_local(&mut s, 4);
        }
        let out = preempt(&s, &Ledger::new(), &llm("p"), candidates, None, t(2000));
        assert_eq!(
            out.allowed, allowed,
            "local full {local_full}, {candidates:?}"
        );
        for c in candidates.iter().filter(|c| !allowed.contains(c)) {
            let why = &out.refused[*c];
            assert!(
                why.contains("first")
                    || why.contains("before nodes outside")
                    || why.contains("full"),
                "{c}: {why}"
            );
        }
    }
}

/// (victims on local-1: priority, terminating; the pod never preempts;
/// preemption may help in "local"?)
#[test]
fn preemption_may_help_only_where_lower_priority_victims_free_room() {
    type Row = (i32, bool, bool, bool);
    let rows: &[Row] = &[
        (-10, false, false, true),
        (0, false, false, false),  // same priority: no victim
        (10, false, false, false), // higher priority: no victim
        (-10, true, false, false), // already terminating: not a victim
        (-10, false, true, false), // preemptionPolicy: Never
    ];
    for &(priority, terminating, never, helps) in rows {
        let mut s = cluster(|p| p.preempt_policy = PreemptPolicy::BeforeNextUnit);
        for n in ["local-1", "local-2"] {
            let mut v = bound(mk_pod(&format!("v-{n}"), &[("app", "batch")], 8), n);
            v.priority = priority;
            if terminating {
                v.deleting = Some(t(1000));
            }
            s.upsert_pod(v);
        }
        let mut pod = llm("p");
        pod.never_preempts = never;
        let policy = s.policies().next().unwrap().clone();
        assert_eq!(
            preemption_may_help(&s, &policy, 0, &pod),
            helps,
            "priority {priority} terminating {terminating} never {never}"
        );
        // Filter waits in "local" exactly when preemption may help there.
        let out = run(&s, &Ledger::new(), &pod, &["cloud-1"]);
        assert_eq!(
            out.eligible.is_empty(),
            helps,
            "{priority} {terminating} {never}"
        );
    }
}
