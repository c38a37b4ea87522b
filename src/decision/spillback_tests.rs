//! Table tests of spill-back, and a property test that a move never breaks
//! a cap and always lands earlier.

use proptest::prelude::*;

use super::*;
use crate::decision::policy::SpillBack;
use crate::decision::testutil::*;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

/// Local unit (two 4-GPU nodes, `max` given), cloud unit (one 64-GPU
/// node); spill-back with a 60 s settle, one eviction per 10 minutes.
fn world(max: Option<u32>, spill_back: bool) -> Snapshot {
    let mut s = Snapshot::new();
    s.upsert_node(mk_node("local-1", &[("pool", "local")], 4));
    s.upsert_node(mk_node("local-2", &[("pool", "local")], 4));
    s.upsert_node(mk_node("cloud-1", &[("pool", "cloud")], 64));
    let mut p = Policy::new(
        "ns",
        "llm",
        vec![
            unit("local", &[("pool", "local")], max),
            unit("cloud", &[("pool", "cloud")], None),
        ],
    );
    p.selector = labels(&[("app", "llm")]);
    p.spill_back = spill_back.then_some(SpillBack {
        settle: SETTLE,
        max_evictions: 1,
        interval: Duration::from_secs(600),
    });
    s.upsert_policy(p);
    s
}

fn pod_on(s: &mut Snapshot, name: &str, node: &str, created: i64, controlled: bool) {
    let mut p = bound(mk_pod(name, &[("app", "llm")], 1), node);
    p.created = t(created);
    p.controlled = controlled;
    s.upsert_pod(p);
}

/// Two local pods (max 4: room for two more), three cloud pods.
fn spilled(max: Option<u32>, spill_back: bool) -> Snapshot {
    let mut s = world(max, spill_back);
    pod_on(&mut s, "l0", "local-1", 10, true);
    pod_on(&mut s, "l1", "local-2", 11, true);
    pod_on(&mut s, "c0", "cloud-1", 20, true);
    pod_on(&mut s, "c1", "cloud-1", 21, true);
    pod_on(&mut s, "c2", "cloud-1", 22, true);
    s
}

fn names(e: &[Eviction]) -> Vec<&str> {
    e.iter().map(|e| e.name.as_str()).collect()
}

#[test]
fn off_unless_the_policy_asks() {
    let s = spilled(Some(4), false);
    let mut st = SpillBackState::default();
    for at in [0, 100, 10_000] {
        assert!(spill_back(&s, &Ledger::new(), &mut st, t(5000 + at)).is_empty());
    }
}

#[test]
fn the_newest_cloud_pod_moves_once_the_room_has_lasted_the_settle_time() {
    let mut s = spilled(Some(4), true);
    let mut st = SpillBackState::default();
    let l = Ledger::new();
    assert!(
        spill_back(&s, &l, &mut st, t(5000)).is_empty(),
        "room just seen"
    );
    assert!(
        spill_back(&s, &l, &mut st, t(5059)).is_empty(),
        "not settled"
    );
    let e = spill_back(&s, &l, &mut st, t(5060));
    assert_eq!(names(&e), ["c2"]);
    assert_eq!((e[0].from, e[0].to), (Some(1), 0));
    assert!(e[0].message.contains("unit \"local\""), "{}", e[0].message);
    assert!(e[0].message.contains("unit \"cloud\""), "{}", e[0].message);
    // The eviction went through; the replacement landed in the local unit.
    s.remove_pod("c2");
    pod_on(&mut s, "r2", "local-1", 5061, true);
    // One per interval, and the settle clock starts over.
    assert!(spill_back(&s, &l, &mut st, t(5061)).is_empty());
    assert!(spill_back(&s, &l, &mut st, t(5200)).is_empty(), "interval");
    assert_eq!(names(&spill_back(&s, &l, &mut st, t(5660))), ["c1"]);
}

#[test]
fn a_break_in_the_room_restarts_the_settle_clock() {
    let mut s = spilled(Some(4), true);
    let mut st = SpillBackState::default();
    let l = Ledger::new();
    assert!(spill_back(&s, &l, &mut st, t(5000)).is_empty());
    // A pending pod of the policy: the room is its, not a moved pod's.
    s.upsert_pod(mk_pod("new", &[("app", "llm")], 1));
    assert!(spill_back(&s, &l, &mut st, t(5030)).is_empty());
    s.remove_pod("new");
    assert!(
        spill_back(&s, &l, &mut st, t(5070)).is_empty(),
        "restarted at 5070"
    );
    assert!(spill_back(&s, &l, &mut st, t(5129)).is_empty());
    assert_eq!(names(&spill_back(&s, &l, &mut st, t(5130))), ["c2"]);
}

#[test]
fn no_move_without_room_in_an_earlier_unit() {
    type Setup = fn(&mut Snapshot, &mut Ledger);
    let rows: [(&str, Option<u32>, Setup); 5] = [
        ("at max", Some(2), |_, _| {}),
        ("max 0", Some(0), |_, _| {}),
        ("no free GPU on the local nodes", None, |s, _| {
            let mut big = bound(mk_pod("batch", &[("app", "batch")], 3), "local-1");
            big.controlled = true;
            s.upsert_pod(big);
            let mut big2 = bound(mk_pod("batch2", &[("app", "batch")], 3), "local-2");
            big2.controlled = true;
            s.upsert_pod(big2);
        }),
        ("a reservation of the policy is live", Some(4), |_, l| {
            l.reserve("assumed", assumed("assumed", 0, t(99_999)));
        }),
        ("a governed pod is pending", Some(4), |s, _| {
            s.upsert_pod(mk_pod("pending", &[("app", "llm")], 1));
        }),
    ];
    for (what, max, setup) in rows {
        let mut s = spilled(max, true);
        let mut l = Ledger::new();
        setup(&mut s, &mut l);
        let mut st = SpillBackState::default();
        for at in [0, 60, 120, 10_000] {
            assert!(
                spill_back(&s, &l, &mut st, t(5000 + at)).is_empty(),
                "{what} at +{at}"
            );
        }
    }
}

#[test]
fn only_pods_a_controller_replaces_are_moved() {
    let mut s = spilled(Some(4), true);
    // The newest cloud pod has no controller: a bare pod evicted is lost.
    pod_on(&mut s, "bare", "cloud-1", 30, false);
    let mut st = SpillBackState::default();
    let l = Ledger::new();
    let _ = spill_back(&s, &l, &mut st, t(5000));
    assert_eq!(names(&spill_back(&s, &l, &mut st, t(5060))), ["c2"]);
}

#[test]
fn pods_outside_every_unit_move_first() {
    let mut s = spilled(Some(4), true);
    s.upsert_node(mk_node("other-1", &[("pool", "other")], 8));
    pod_on(&mut s, "o0", "other-1", 5, true);
    let mut st = SpillBackState::default();
    let l = Ledger::new();
    let _ = spill_back(&s, &l, &mut st, t(5000));
    let e = spill_back(&s, &l, &mut st, t(5060));
    assert_eq!(names(&e), ["o0"]);
    assert_eq!((e[0].from, e[0].to), (None, 0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Played out move by move (evict, then the replacement goes where
    /// Filter admits it), spill-back only ever moves a pod to an earlier
    /// unit, never puts a unit past its `max`, and stops with no pod in a
    /// later unit while an earlier one could take it.
    #[test]
    fn moves_land_earlier_and_never_break_max(
        max in proptest::option::of(0u32..6),
        local in 0usize..6,
        cloud in 0usize..6,
    ) {
        let mut s = world(max, true);
        for i in 0..local {
            let node = if i % 2 == 0 { "local-1" } else { "local-2" };
            // Up to 4 per node: the rest go to the cloud as a scheduler would.
            pod_on(&mut s, &format!("l{i}"), node, i64::try_from(i).unwrap(), true);
        }
        for i in 0..cloud {
            pod_on(&mut s, &format!("c{i}"), "cloud-1", 100 + i64::try_from(i).unwrap(), true);
        }
        let l = Ledger::new();
        let mut st = SpillBackState::default();
        let count = |s: &Snapshot, prefix: &str| {
            s.pods().filter(|p| p.node.as_deref().is_some_and(|n| n.starts_with(prefix))).count()
        };
        let start_local = count(&s, "local");
        let mut now = t(10_000);
        for step in 0..20 {
            let moves = spill_back(&s, &l, &mut st, now);
            prop_assert!(moves.len() <= 1);
            for m in &moves {
                prop_assert_eq!(m.from, Some(1));
                prop_assert_eq!(m.to, 0);
                let old = s.pod(&m.uid).cloned().unwrap();
                s.remove_pod(&m.uid);
                let mut new = Pod {
                    uid: format!("r{step}"),
                    name: format!("r{step}"),
                    node: None,
                    created: now,
                    ..old
                };
                let nodes = fitting_nodes(&s, &new);
                let out = filter(&s, &l, FilterRequest { pod: &new, nodes: &nodes, wait_since: None, now });
                prop_assert_eq!(out.chosen_unit(), Some(0));
                new.node = Some(out.eligible[0].to_owned());
                s.upsert_pod(new);
            }
            let local_now = count(&s, "local");
            if let Some(m) = max {
                prop_assert!(local_now <= (m as usize).max(start_local));
            }
            now = now.after(Duration::from_secs(700));
        }
        // Settled: room and cloud pods never coexist.
        let local_end = count(&s, "local");
        let cap = max.map_or(8, |m| (m as usize).min(8));
        prop_assert!(count(&s, "cloud") == 0 || local_end >= cap, "local {} cloud {}", local_end, count(&s, "cloud"));
    }
}
