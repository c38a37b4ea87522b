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

/// The controller's rule asked pod by pod, three passes per policy, as it
/// was written before [`reconcile`] learned each pod's governance and
/// placement in one [`survey`]: a pod's unit from the node's labels, not
/// the snapshot's unit cache; governance from [`governs`] and
/// [`governing_policy_in`].
mod naive {
    use std::collections::BTreeMap;

    use crate::decision::deletion::{CostClass, deletion_cost};
    use crate::decision::governance::{governing_policy_in, governs};
    use crate::decision::ledger::Ledger;
    use crate::decision::policy::{GroupKey, Policy};
    use crate::decision::quantity::Resources;
    use crate::decision::reconcile::{Actions, Observed, PodKey, PodPatch, PolicyView, UnitView};
    use crate::decision::snapshot::{Pod, Snapshot};
    use crate::decision::time::Time;
    use crate::decision::usage::{Placement, counts_toward_caps};

    /// The policy's namespace by a filter over every pod, not
    /// [`Snapshot::pods_in`].
    fn in_namespace<'s>(snapshot: &'s Snapshot, policy: &Policy) -> impl Iterator<Item = &'s Pod> {
        let namespace = policy.key.namespace.clone();
        snapshot.pods().filter(move |p| p.namespace == namespace)
    }

    fn placement(
        snapshot: &Snapshot,
        ledger: &Ledger,
        policy: &Policy,
        pod: &Pod,
        now: Time,
    ) -> Placement {
        let reserved = ledger
            .live(&pod.uid, now)
            .filter(|r| r.policy == policy.key && r.unit < policy.units.len())
            .map_or(Placement::Unplaced, |r| Placement::Reserved(r.unit));
        match pod.node.as_deref().and_then(|n| snapshot.node(n)) {
            Some(node) => policy
                .unit_of_node(node)
                .map_or(Placement::Outside, Placement::Bound),
            None => reserved,
        }
    }

    pub fn costs(
        snapshot: &Snapshot,
        ledger: &Ledger,
        policy: &Policy,
        now: Time,
    ) -> BTreeMap<String, i32> {
        let n = policy.units.len();
        let mark = |pod: &Pod, cost: i32| {
            if pod
                .annotations
                .contains_key(crate::decision::deletion::DRAIN_FIRST_ANNOTATION)
            {
                crate::decision::scaler::drain_first_cost(cost)
            } else {
                cost
            }
        };
        let mut out = BTreeMap::new();
        let mut counted: BTreeMap<(usize, GroupKey), Vec<&Pod>> = BTreeMap::new();
        for pod in in_namespace(snapshot, policy) {
            if pod.is_terminal() || pod.node.is_none() || !governs(snapshot, policy, pod) {
                continue;
            }
            match placement(snapshot, ledger, policy, pod, now) {
                Placement::Bound(u) | Placement::Reserved(u) => match policy.group_of(pod).ok() {
                    Some(g) if counts_toward_caps(policy, pod) => {
                        counted.entry((u, g)).or_default().push(pod);
                    }
                    _ => {
                        out.insert(
                            pod.uid.clone(),
                            mark(pod, deletion_cost(n, CostClass::Within(u))),
                        );
                    }
                },
                Placement::Outside => {
                    out.insert(
                        pod.uid.clone(),
                        mark(pod, deletion_cost(n, CostClass::Outside)),
                    );
                }
                Placement::Unplaced => {}
            }
        }
        for ((u, _), mut pods) in counted {
            pods.sort_by(|a, b| (a.created, &a.name, &a.uid).cmp(&(b.created, &b.name, &b.uid)));
            let unit = &policy.units[u];
            let mut used = Resources::new();
            for (i, pod) in pods.into_iter().enumerate() {
                used.add(&pod.requests);
                let over = unit.max.is_some_and(|m| i >= m as usize)
                    || unit.max_resources.iter().any(|(r, cap)| used.get(r) > cap);
                let class = if over {
                    CostClass::OverCap(u)
                } else {
                    CostClass::Within(u)
                };
                out.insert(pod.uid.clone(), mark(pod, deletion_cost(n, class)));
            }
        }
        out
    }

    fn view(
        snapshot: &Snapshot,
        ledger: &Ledger,
        observed: &Observed,
        policy: &Policy,
        now: Time,
    ) -> PolicyView {
        let mut units: Vec<UnitView> = policy
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| UnitView {
                name: u.name.clone(),
                resource: u.resource.as_str(),
                max: u.max,
                max_resources: u.max_resources.clone(),
                last_spill: observed.spills.get(&(policy.key.clone(), i)).cloned(),
                ..UnitView::default()
            })
            .collect();
        let mut conflicts = BTreeMap::new();
        for pod in in_namespace(snapshot, policy) {
            if !policy.selects_pod(pod) {
                continue;
            }
            if !governs(snapshot, policy, pod) {
                if let Some(winner) = governing_policy_in(snapshot, pod).policy {
                    *conflicts.entry(winner.key.clone()).or_insert(0) += 1;
                }
                continue;
            }
            if !counts_toward_caps(policy, pod) {
                continue;
            }
            let (unit, reserved) = match placement(snapshot, ledger, policy, pod, now) {
                Placement::Bound(u) => (u, false),
                Placement::Reserved(u) => (u, true),
                Placement::Outside | Placement::Unplaced => continue,
            };
            let v = &mut units[unit];
            v.pods += 1;
            v.reserved += u32::from(reserved);
            v.resources_used
                .add(&pod.requests.only(&policy.units[unit].max_resources));
        }
        for (uid, (key, unit)) in &observed.waiting {
            if *key == policy.key
                && let Some(v) = units.get_mut(*unit)
                && snapshot.pod(uid).is_some_and(|p| p.node.is_none())
            {
                v.waiting += 1;
            }
        }
        PolicyView {
            key: policy.key.clone(),
            units,
            conflicts,
        }
    }

    /// [`super::reconcile`] without spill-back's evictions.
    pub fn reconcile(
        snapshot: &Snapshot,
        ledger: &Ledger,
        observed: &Observed,
        now: Time,
    ) -> Actions {
        let mut out = Actions::default();
        for policy in snapshot.policies() {
            let costs = costs(snapshot, ledger, policy, now);
            for pod in in_namespace(snapshot, policy) {
                let Some(&desired) = costs.get(&pod.uid) else {
                    continue;
                };
                let mut patch = PodPatch {
                    pod: PodKey::of(pod),
                    ..PodPatch::default()
                };
                if let Some(e) = super::cost_patch(policy, pod, desired, &mut patch) {
                    out.events.push(e);
                }
                if let Placement::Bound(u) = placement(snapshot, ledger, policy, pod, now) {
                    super::unit_patch(policy, u, pod, &mut patch);
                }
                if !patch.labels.is_empty() || !patch.annotations.is_empty() {
                    out.patches.push(patch);
                }
            }
            out.policies
                .push(view(snapshot, ledger, observed, policy, now));
        }
        out
    }
}

/// One generated policy: selector choice, age, the local unit's `max` and
/// GPU cap, which units set labels/annotations, and the flags.
type PolicyGen = (
    u8,
    i64,
    Option<u32>,
    Option<i64>,
    (bool, bool),
    (bool, bool, bool, bool),
);
/// One generated pod: namespace, labels, node, phase, terminating, age,
/// GPUs, annotations, reservation.
type PodGen = (
    bool,
    u8,
    u8,
    bool,
    bool,
    i64,
    i64,
    u8,
    Option<(u8, usize, bool)>,
);

/// `late` changes the nodes after the policies and pods: bit 0 adds
/// `d-1` (pool a), bit 1 moves `a-2` to pool b, bit 2 removes `b-1` (its
/// pods are then on an unknown node).
fn gen_world(policies: &[PolicyGen], pods: &[PodGen], late: u8) -> (Snapshot, Ledger, Observed) {
    use crate::decision::policy::ManualCost;
    use crate::decision::quantity::{GPU, Resources};
    let mut s = Snapshot::new();
    for (n, pool) in [("a-1", "a"), ("a-2", "a"), ("b-1", "b"), ("c-1", "c")] {
        s.upsert_node(mk_node(n, &[("pool", pool)], 8));
    }
    let selectors: [&[(&str, &str)]; 4] = [
        &[],
        &[("app", "llm")],
        &[("tier", "gpu")],
        &[("app", "llm"), ("tier", "gpu")],
    ];
    for (
        i,
        &(
            sel,
            created,
            max,
            gpu_cap,
            (labels_a, notes_b),
            (overwrite, previous, terminating, by_rev),
        ),
    ) in policies.iter().enumerate()
    {
        let mut a = unit("a", &[("pool", "a")], max);
        if let Some(cap) = gpu_cap {
            a.max_resources = Resources::new().with(GPU, cap);
        }
        if labels_a {
            a.pod_labels = labels(&[("example.com/unit", "a")]);
        }
        let mut b = unit("b", &[("pool", "b")], None);
        if notes_b {
            b.pod_annotations = labels(&[("example.com/billing", "b")]);
        }
        // The last policy lives in another namespace.
        let ns = if i == 3 { "other" } else { "ns" };
        let mut p = Policy::new(ns, &format!("p{i}"), vec![a, b]);
        p.selector = labels(selectors[usize::from(sel) % selectors.len()]);
        p.created = t(created);
        p.manual_deletion_cost = if overwrite {
            ManualCost::Overwrite
        } else {
            ManualCost::Keep
        };
        p.ignore_previous_pod = previous;
        p.ignore_terminating_pod = terminating;
        if by_rev {
            p.match_label_keys = vec!["rev".into()];
        }
        s.upsert_policy(p);
    }
    let mut ledger = Ledger::new();
    let mut observed = Observed::default();
    let keys: Vec<_> = s.policies().map(|p| p.key.clone()).collect();
    for (i, &(other_ns, label_bits, node, finished, deleting, created, gpus, notes, reserved)) in
        pods.iter().enumerate()
    {
        let mut l = Vec::new();
        if label_bits & 1 != 0 {
            l.push(("app", "llm"));
        }
        if label_bits & 2 != 0 {
            l.push(("tier", "gpu"));
        }
        match label_bits >> 2 & 3 {
            1 => l.push(("rev", "1")),
            2 => l.push(("rev", "2")),
            _ => {}
        }
        let mut pod = mk_pod(&format!("pod-{i:02}"), &l, gpus);
        if other_ns {
            pod.namespace = "other".into();
        }
        let nodes = [
            None,
            Some("a-1"),
            Some("a-2"),
            Some("b-1"),
            Some("c-1"),
            Some("d-1"),
            Some("ghost"),
        ];
        if let Some(n) = nodes[usize::from(node) % nodes.len()] {
            pod = bound(pod, n);
        }
        if finished {
            pod.phase = crate::decision::snapshot::PodPhase::Succeeded;
        }
        pod.deleting = deleting.then(|| t(2000));
        pod.created = t(created);
        pod.controlled = true;
        let written = super::WRITTEN_COST_ANNOTATION;
        let on_pod: &[(&str, &str)] = match notes % 5 {
            1 => &[(DELETION_COST_ANNOTATION, "300")],
            2 => &[(DELETION_COST_ANNOTATION, "7"), (written, "7")],
            3 => &[(DRAIN_FIRST_ANNOTATION, "true")],
            4 => &[("example.com/billing", "b"), ("example.com/unit", "a")],
            _ => &[],
        };
        pod.annotations = labels(on_pod);
        if let Some((policy, unit, live)) = reserved
            && !keys.is_empty()
        {
            let key = keys[usize::from(policy) % keys.len()].clone();
            let mut r = assumed(&pod.name, unit, t(if live { 6000 } else { 10 }));
            r.policy = key.clone();
            ledger.reserve(&pod.uid, r);
            observed.waiting.insert(pod.uid.clone(), (key, unit));
        }
        s.upsert_pod(pod);
    }
    if late & 1 != 0 {
        s.upsert_node(mk_node("d-1", &[("pool", "a")], 8));
    }
    if late & 2 != 0 {
        s.upsert_node(mk_node("a-2", &[("pool", "b")], 8));
    }
    if late & 4 != 0 {
        s.remove_node("b-1");
    }
    (s, ledger, observed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The one-pass controller writes, reports and counts exactly what the
    /// controller that asks pod by pod does: over several policies of one
    /// namespace (conflicts, ties in age), a policy elsewhere, pods pending,
    /// bound, on an unknown node, finished, terminating, reserved (live or
    /// lapsed), with hand-set costs, Spillway's own, drain marks, groups
    /// and resource caps.
    #[test]
    fn one_pass_reconcile_equals_the_pod_by_pod_rule(
        policies in proptest::collection::vec(
            (0u8..4, 0i64..3, proptest::option::of(0u32..4), proptest::option::of(1i64..6),
             (any::<bool>(), any::<bool>()),
             (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())),
            0..5),
        pods in proptest::collection::vec(
            (proptest::bool::weighted(0.15), 0u8..16, 0u8..7, proptest::bool::weighted(0.1),
             proptest::bool::weighted(0.15), 0i64..4, 1i64..3, 0u8..5,
             proptest::option::of((0u8..5, 0usize..3, any::<bool>()))),
            0..30),
        late in 0u8..8,
    ) {
        let (s, ledger, observed) = gen_world(&policies, &pods, late);
        let now = t(5000);
        let fast = reconcile(&s, &ledger, &observed, &mut SpillBackState::default(), now);
        let slow = naive::reconcile(&s, &ledger, &observed, now);
        prop_assert_eq!(&fast.patches, &slow.patches);
        prop_assert_eq!(&fast.events, &slow.events);
        prop_assert_eq!(&fast.policies, &slow.policies);
        // The costs spill-back and the simulator read, too, also for a
        // policy the snapshot does not hold (units by label match).
        for policy in s.policies() {
            let want = naive::costs(&s, &ledger, policy, now);
            prop_assert_eq!(
                &crate::decision::deletion::deletion_costs(&s, &ledger, policy, now),
                &want
            );
            prop_assert_eq!(
                &crate::decision::deletion::deletion_costs(&s, &ledger, &policy.clone(), now),
                &want
            );
        }
    }
}
