//! Table tests of the controller's rule, and a property test against a
//! naive model of the scale-in order.

use proptest::prelude::*;

use super::*;
use crate::decision::testutil::*;

/// Two local nodes (unit "local", `max` given), one cloud node, one node
/// outside every unit; pods with `app: llm` are governed.
fn world(max: Option<u32>) -> Snapshot {
    let mut s = Snapshot::new();
    for (n, pool) in [
        ("local-1", "local"),
        ("local-2", "local"),
        ("cloud-1", "cloud"),
        ("other-1", "other"),
    ] {
        s.upsert_node(mk_node(n, &[("pool", pool)], 64));
    }
    let mut local = unit("local", &[("pool", "local")], max);
    local.pod_labels = labels(&[("spillway.io/unit", "local")]);
    let mut cloud = unit("cloud", &[("pool", "cloud")], None);
    cloud.pod_labels = labels(&[("spillway.io/unit", "cloud")]);
    cloud.pod_annotations = labels(&[("example.com/billing", "cloud")]);
    let mut p = Policy::new("ns", "llm", vec![local, cloud]);
    p.selector = labels(&[("app", "llm")]);
    s.upsert_policy(p);
    s
}

fn pod_on(s: &mut Snapshot, name: &str, node: &str, created: i64) {
    let mut p = bound(mk_pod(name, &[("app", "llm")], 1), node);
    p.created = t(created);
    s.upsert_pod(p);
}

fn cost_of(a: &Actions, name: &str) -> Option<i32> {
    a.patches
        .iter()
        .find(|p| p.pod.name == name)
        .and_then(|p| p.annotations.get(DELETION_COST_ANNOTATION))
        .map(|v| v.parse().unwrap())
}

fn run(s: &Snapshot) -> Actions {
    reconcile(
        s,
        &Ledger::new(),
        &Observed::default(),
        &mut SpillBackState::default(),
        t(5000),
    )
}

#[test]
fn costs_follow_reverse_unit_order_with_over_max_pods_first() {
    let mut s = world(Some(2));
    // Three local pods against max 2: the youngest is over the cap.
    pod_on(&mut s, "l-old", "local-1", 10);
    pod_on(&mut s, "l-mid", "local-2", 20);
    pod_on(&mut s, "l-new", "local-1", 30);
    pod_on(&mut s, "c-1", "cloud-1", 15);
    pod_on(&mut s, "o-1", "other-1", 15);
    let mut stray = bound(mk_pod("batch", &[("app", "batch")], 1), "local-1");
    stray.created = t(1);
    s.upsert_pod(stray);
    let a = run(&s);
    let rows = [
        ("l-old", 200),
        ("l-mid", 200),
        ("c-1", 100),
        ("l-new", -100),
        ("o-1", -300),
    ];
    for (name, cost) in rows {
        assert_eq!(cost_of(&a, name), Some(cost), "{name}");
    }
    assert!(
        a.patches.iter().all(|p| p.pod.name != "batch"),
        "pods no policy governs are never touched"
    );
    // Unit labels and annotations come with the cost, in the same patch.
    let c1 = a.patches.iter().find(|p| p.pod.name == "c-1").unwrap();
    assert_eq!(c1.labels["spillway.io/unit"], "cloud");
    assert_eq!(c1.annotations["example.com/billing"], "cloud");
    assert_eq!(c1.annotations[WRITTEN_COST_ANNOTATION], "100");
    assert!(a.events.is_empty());
}

#[test]
fn a_second_reconcile_patches_nothing() {
    let mut s = world(Some(2));
    for (i, n) in ["local-1", "local-2", "local-1", "cloud-1"]
        .iter()
        .enumerate()
    {
        pod_on(&mut s, &format!("p{i}"), n, i64::try_from(i).unwrap());
    }
    let first = run(&s);
    assert_eq!(first.patches.len(), 4);
    for p in &first.patches {
        apply_patch(&mut s, p);
    }
    let second = run(&s);
    assert!(second.patches.is_empty(), "{:?}", second.patches);
    assert!(second.events.is_empty());
}

/// (cost on the pod, Spillway's record, policy setting, patched?, event)
#[test]
fn a_hand_set_cost_is_kept_or_overwritten_as_the_policy_says_with_an_event() {
    type Row = (
        Option<&'static str>,
        Option<&'static str>,
        ManualCost,
        bool,
        Option<&'static str>,
    );
    let rows: &[Row] = &[
        (None, None, ManualCost::Keep, true, None),
        (Some("100"), Some("100"), ManualCost::Keep, false, None), // already right
        (Some("200"), Some("200"), ManualCost::Keep, true, None),  // ours, outdated
        (
            Some("7"),
            None,
            ManualCost::Keep,
            false,
            Some("ManualDeletionCostKept"),
        ),
        (
            Some("7"),
            Some("200"),
            ManualCost::Keep,
            false,
            Some("ManualDeletionCostKept"),
        ),
        (
            Some("7"),
            None,
            ManualCost::Overwrite,
            true,
            Some("ManualDeletionCostOverwritten"),
        ),
        (
            Some("junk"),
            None,
            ManualCost::Keep,
            false,
            Some("ManualDeletionCostKept"),
        ),
    ];
    for &(current, record, manual, patched, event) in rows {
        let mut s = world(None);
        let mut p = s.policies().next().unwrap().clone();
        p.manual_deletion_cost = manual;
        s.upsert_policy(p);
        let mut pod = bound(
            mk_pod("c", &[("app", "llm"), ("spillway.io/unit", "cloud")], 1),
            "cloud-1",
        );
        pod.annotations = labels(&[("example.com/billing", "cloud")]);
        if let Some(v) = current {
            pod.annotations
                .insert(DELETION_COST_ANNOTATION.into(), v.into());
        }
        if let Some(v) = record {
            pod.annotations
                .insert(WRITTEN_COST_ANNOTATION.into(), v.into());
        }
        s.upsert_pod(pod);
        let a = run(&s);
        let what = format!("{current:?} {record:?} {manual:?}");
        assert_eq!(cost_of(&a, "c").is_some(), patched, "{what}");
        if patched {
            assert_eq!(cost_of(&a, "c"), Some(100), "{what}");
        }
        assert_eq!(a.events.first().map(|e| e.reason), event, "{what}");
    }
}

#[test]
fn unit_labels_skip_previous_pods_only_under_ignore_previous_pod() {
    for ignore in [false, true] {
        let mut s = world(Some(4));
        let mut p = s.policies().next().unwrap().clone();
        p.created = t(100);
        p.ignore_previous_pod = ignore;
        s.upsert_policy(p);
        pod_on(&mut s, "before", "local-1", 50);
        pod_on(&mut s, "after", "local-1", 150);
        let a = run(&s);
        let labelled = |name: &str| {
            a.patches
                .iter()
                .any(|p| p.pod.name == name && p.labels.contains_key("spillway.io/unit"))
        };
        assert!(labelled("after"));
        assert_eq!(labelled("before"), !ignore, "ignorePreviousPod {ignore}");
    }
}

#[test]
fn the_view_counts_units_reservations_waits_spills_and_conflicts() {
    let mut s = world(Some(3));
    let mut p = s.policies().next().unwrap().clone();
    p.units[0].max_resources = Resources::new().with(crate::decision::GPU, 8);
    s.upsert_policy(p);
    pod_on(&mut s, "a", "local-1", 1);
    pod_on(&mut s, "b", "local-2", 2);
    pod_on(&mut s, "c", "cloud-1", 3);
    s.upsert_pod(mk_pod("pending", &[("app", "llm")], 1));
    s.upsert_pod(mk_pod("assumed", &[("app", "llm")], 1));
    // A younger policy selecting the same pods loses them to the older one.
    let mut young = Policy::new("ns", "young", vec![unit("any", &[("pool", "cloud")], None)]);
    young.created = t(10);
    young.selector = labels(&[("app", "llm")]);
    s.upsert_policy(young);
    let mut ledger = Ledger::new();
    ledger.reserve("assumed", assumed("assumed", 0, t(6000)));
    let key = s
        .policies()
        .find(|p| p.key.name == "llm")
        .unwrap()
        .key
        .clone();
    let mut observed = Observed::default();
    observed.waiting.insert("pending".into(), (key.clone(), 0));
    observed
        .spills
        .insert((key.clone(), 0), (t(4000), "unit \"local\" is full".into()));
    let a = reconcile(
        &s,
        &ledger,
        &observed,
        &mut SpillBackState::default(),
        t(5000),
    );
    let v = a.policies.iter().find(|v| v.key == key).unwrap();
    assert_eq!(v.units[0].pods, 3, "two bound and one assumed");
    assert_eq!(v.units[0].reserved, 1);
    assert_eq!(v.units[0].max, Some(3));
    assert_eq!(
        v.units[0].resources_used,
        Resources::new().with(crate::decision::GPU, 3)
    );
    assert_eq!(v.units[0].waiting, 1);
    assert_eq!(
        v.units[0].last_spill,
        Some((t(4000), "unit \"local\" is full".into()))
    );
    assert_eq!((v.units[1].pods, v.units[1].resource), (1, "ecs"));
    let young = a.policies.iter().find(|v| v.key.name == "young").unwrap();
    assert_eq!(
        young.conflicts.get(&key),
        Some(&5),
        "every llm pod is the older policy's"
    );
    assert_eq!(young.units[0].pods, 0);
}

/// Where the naive model puts a governed pod in the scale-in order: a
/// lower rank is deleted first.
fn naive_rank(units: usize, unit: Option<usize>, over: bool) -> usize {
    match (unit, over) {
        (None, _) => 0,
        (Some(u), true) => units - u,
        (Some(u), false) => 2 * units + 1 - u,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For any snapshot, sorting the governed pods by the cost Spillway
    /// writes gives: pods outside every unit, then over-cap pods of the last
    /// unit first, then pods within caps from the last unit to the first;
    /// ungoverned pods get nothing, and a second reconcile patches nothing.
    #[test]
    fn written_costs_order_governed_pods_in_reverse_unit_order_with_over_cap_first(
        maxes in proptest::collection::vec(proptest::option::of(0u32..4), 1..4),
        pods in proptest::collection::vec((0usize..5, 0i64..50, any::<bool>()), 0..24),
    ) {
        let units = maxes.len();
        let mut s = Snapshot::new();
        for u in 0..units {
            s.upsert_node(mk_node(&format!("n{u}"), &[("pool", &format!("p{u}"))], 64));
        }
        s.upsert_node(mk_node("outside", &[("pool", "none")], 64));
        let mut p = Policy::new(
            "ns",
            "pol",
            maxes
                .iter()
                .enumerate()
                .map(|(u, m)| unit(&format!("u{u}"), &[("pool", &format!("p{u}"))], *m))
                .collect(),
        );
        p.selector = labels(&[("app", "llm")]);
        s.upsert_policy(p);
        for (i, &(node, created, governed)) in pods.iter().enumerate() {
            let node_name = if node < units { format!("n{node}") } else { "outside".to_owned() };
            let app = if governed { "llm" } else { "batch" };
            let mut pod = bound(mk_pod(&format!("p{i:02}"), &[("app", app)], 1), &node_name);
            pod.created = t(created);
            s.upsert_pod(pod);
        }
        let a = run(&s);
        // The naive model: per unit, the oldest `max` pods are within.
        let mut ranks = BTreeMap::new();
        for (u, unit_max) in maxes.iter().enumerate().take(units) {
            let mut in_unit: Vec<(i64, String)> = pods
                .iter()
                .enumerate()
                .filter(|(_, (n, _, g))| *g && *n == u)
                .map(|(i, &(_, c, _))| (c, format!("p{i:02}")))
                .collect();
            in_unit.sort();
            for (k, (_, name)) in in_unit.into_iter().enumerate() {
                let over = unit_max.is_some_and(|m| k >= m as usize);
                ranks.insert(name, naive_rank(units, Some(u), over));
            }
        }
        for (i, &(n, _, g)) in pods.iter().enumerate() {
            if g && n >= units {
                ranks.insert(format!("p{i:02}"), naive_rank(units, None, false));
            }
        }
        for (i, &(_, _, g)) in pods.iter().enumerate() {
            let name = format!("p{i:02}");
            prop_assert_eq!(cost_of(&a, &name).is_some(), g, "{} governed {}", name, g);
        }
        for (x, rx) in &ranks {
            for (y, ry) in &ranks {
                let (cx, cy) = (cost_of(&a, x).unwrap(), cost_of(&a, y).unwrap());
                prop_assert_eq!(cx < cy, rx < ry, "{} ({}, rank {}) vs {} ({}, rank {})", x, cx, rx, y, cy, ry);
            }
        }
        for patch in &a.patches {
            apply_patch(&mut s, patch);
        }
        prop_assert!(run(&s).patches.is_empty());
    }
}

/// Binds `name` to `node` as the API server does with the Binding's
/// annotations, and returns what the Binding carried.
fn bind_with_annotations(
    s: &mut Snapshot,
    name: &str,
    node: &str,
    hand_cost: Option<&str>,
) -> Labels {
    let mut pod = mk_pod(name, &[("app", "llm")], 1);
    pod.created = t(100);
    if let Some(c) = hand_cost {
        pod.annotations
            .insert(DELETION_COST_ANNOTATION.into(), c.into());
    }
    let policy = s.policies().next().unwrap().clone();
    let unit = policy.unit_of_node(s.node(node).unwrap()).unwrap();
    let carried = bind_annotations(&policy, unit, &[&pod]);
    let mut bound_pod = bound(pod, node);
    bound_pod.annotations.extend(carried.clone());
    s.upsert_pod(bound_pod);
    carried
}

#[test]
fn the_binding_carries_what_the_controller_would_patch_on_but_labels() {
    let mut s = world(Some(2));
    let local = bind_with_annotations(&mut s, "l", "local-1", None);
    assert_eq!(local[DELETION_COST_ANNOTATION], "200");
    assert_eq!(local[WRITTEN_COST_ANNOTATION], "200");
    let cloud = bind_with_annotations(&mut s, "c", "cloud-1", None);
    assert_eq!(cloud[DELETION_COST_ANNOTATION], "100");
    assert_eq!(cloud["example.com/billing"], "cloud");
    // The controller then writes only the unit labels, and no annotation.
    let a = run(&s);
    assert_eq!(a.patches.len(), 2, "{:?}", a.patches);
    for p in &a.patches {
        assert!(p.annotations.is_empty(), "{p:?}");
        assert_eq!(p.labels.len(), 1, "{p:?}");
    }
    assert!(a.events.is_empty());
}

#[test]
fn a_unit_without_pod_labels_needs_no_write_after_the_binding() {
    let mut s = world(Some(2));
    let mut p = s.policies().next().unwrap().clone();
    for u in &mut p.units {
        u.pod_labels.clear();
    }
    s.upsert_policy(p);
    bind_with_annotations(&mut s, "l", "local-1", None);
    bind_with_annotations(&mut s, "c", "cloud-1", None);
    let a = run(&s);
    assert!(a.patches.is_empty(), "{:?}", a.patches);
}

#[test]
fn a_hand_set_cost_is_left_to_the_controller_and_an_unknown_pod_gets_none() {
    let mut s = world(Some(2));
    let carried = bind_with_annotations(&mut s, "l", "local-1", Some("7"));
    assert!(
        !carried.contains_key(DELETION_COST_ANNOTATION),
        "{carried:?}"
    );
    assert!(
        !carried.contains_key(WRITTEN_COST_ANNOTATION),
        "{carried:?}"
    );
    // The controller keeps it, with its Event (manualDeletionCost: Keep).
    let a = run(&s);
    assert_eq!(cost_of(&a, "l"), None);
    assert_eq!(a.events.len(), 1, "{:?}", a.events);
    assert_eq!(a.events[0].reason, "ManualDeletionCostKept");
    let policy = s.policies().next().unwrap().clone();
    let unknown = bind_annotations(&policy, 1, &[]);
    assert_eq!(unknown, labels(&[("example.com/billing", "cloud")]));
}

#[test]
fn a_cost_or_drain_mark_on_either_copy_keeps_the_cost_off_the_binding() {
    let s = world(Some(2));
    let policy = s.policies().next().unwrap().clone();
    let filtered = mk_pod("p", &[("app", "llm")], 1);
    let mut watched = filtered.clone();
    watched
        .annotations
        .insert(DELETION_COST_ANNOTATION.into(), "-5".into());
    let carried = bind_annotations(&policy, 0, &[&filtered, &watched]);
    assert!(
        !carried.contains_key(DELETION_COST_ANNOTATION),
        "{carried:?}"
    );
    let mut marked = filtered.clone();
    marked.annotations.insert(
        crate::decision::deletion::DRAIN_FIRST_ANNOTATION.into(),
        "true".into(),
    );
    let carried = bind_annotations(&policy, 0, &[&marked]);
    assert!(
        !carried.contains_key(DELETION_COST_ANNOTATION),
        "{carried:?}"
    );
    let carried = bind_annotations(&policy, 0, &[&filtered, &filtered]);
    assert_eq!(carried[DELETION_COST_ANNOTATION], "200");
}

#[test]
fn only_keys_pod_validation_would_take_ride_on_the_binding() {
    for ok in [
        "billing",
        "example.com/billing",
        "a.b-c.example/x_y.z-1",
        "scheduling.spillway.io/unit",
    ] {
        assert!(bindable_annotation_key(ok), "{ok}");
    }
    for bad in [
        "",
        "bad key",
        "-lead",
        "trail-",
        "example.com/",
        "/name",
        "Upper.Example/x",
        "kubernetes.io/config.mirror",
        "container.apparmor.security.beta.kubernetes.io/c",
        "k8s.io/x",
        "x.k8s.io/y",
        &format!("example.com/{}", "n".repeat(64)),
    ] {
        assert!(!bindable_annotation_key(bad), "{bad}");
    }
    // A unit with one key the Binding may not carry leaves all its
    // annotations to the controller's patch (validated by the API server).
    let mut s = world(Some(2));
    let mut p = s.policies().next().unwrap().clone();
    p.units[1]
        .pod_annotations
        .insert("kubernetes.io/config.mirror".into(), "x".into());
    s.upsert_policy(p.clone());
    let pod = mk_pod("p", &[("app", "llm")], 1);
    let carried = bind_annotations(&p, 1, &[&pod]);
    assert!(!carried.contains_key("example.com/billing"), "{carried:?}");
    assert_eq!(carried[DELETION_COST_ANNOTATION], "100");
    let mut big = s.policies().next().unwrap().clone();
    big.units[1].pod_annotations =
        labels(&[("example.com/big", &"v".repeat(BIND_ANNOTATIONS_MAX_BYTES))]);
    assert!(!bind_annotations(&big, 1, &[&pod]).contains_key("example.com/big"));
}
