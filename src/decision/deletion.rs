//! Scale-in order through `controller.kubernetes.io/pod-deletion-cost`
//! (DESIGN semantic 4, PROTOCOLS §3).
//!
//! The ReplicaSet controller deletes lower-cost pods first. Costs give a
//! strict order by class, then unit:
//!
//! ```text
//!  within cap, unit k :  100 × (units − k)     unit 0 highest: removed last
//!  over cap,   unit k : −100 × (k + 1)         any over-cap pod goes before any within
//!  outside every unit : −100 × (units + 1)     removed first
//! ```
//!
//! Within a unit and group, the oldest pods (creation time, then name) are
//! the ones within the cap; later pods beyond `max`/`maxResources` are over
//! it. Pods that do not count toward caps (previous or terminating pods, as
//! configured) are within. Pending pods get no cost: the ReplicaSet controller
//! already removes unscheduled pods first.

use std::collections::BTreeMap;

use super::ledger::Ledger;
use super::policy::{GroupKey, Policy};
use super::quantity::Resources;
use super::snapshot::{Pod, Snapshot};
use super::time::Time;
use super::usage::{Governed, Placement, counts_toward_caps, survey};

/// The annotation the ReplicaSet controller reads.
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The replica scaler marks the pods a scale-down should lose with this
/// annotation (see [`crate::decision::scaler::scale_down_order`]); their cost
/// is [`crate::decision::scaler::drain_first_cost`] of their class's, so they
/// go before the rest of their unit and after every pod of the units that go
/// before it.
pub const DRAIN_FIRST_ANNOTATION: &str = "scheduling.spillway.io/drain-first";

/// `cost`, lowered for a pod the scaler marked to go first.
fn marked(pod: &Pod, cost: i32) -> i32 {
    if pod.annotations.contains_key(DRAIN_FIRST_ANNOTATION) {
        super::scaler::drain_first_cost(cost)
    } else {
        cost
    }
}

/// Where a pod stands for scale-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CostClass {
    /// In unit `.0`, within its caps.
    Within(usize),
    /// In unit `.0`, beyond its caps.
    OverCap(usize),
    /// On a node outside every unit.
    Outside,
}

/// The deletion cost for a pod of class `class` in a policy with `units` units.
#[must_use]
pub fn deletion_cost(units: usize, class: CostClass) -> i32 {
    let n = i32::try_from(units).unwrap_or(i32::MAX / 200);
    match class {
        CostClass::Within(k) => 100 * (n - i32::try_from(k).unwrap_or(n)),
        CostClass::OverCap(k) => -100 * (i32::try_from(k).unwrap_or(n) + 1),
        CostClass::Outside => -100 * (n + 1),
    }
}

/// The deletion cost of every bound, non-terminal pod `policy` governs,
/// keyed by pod UID.
#[must_use]
pub fn deletion_costs(
    snapshot: &Snapshot,
    ledger: &Ledger,
    policy: &Policy,
    now: Time,
) -> BTreeMap<String, i32> {
    let governed = survey(snapshot, ledger, policy, now).governed;
    governed
        .iter()
        .zip(costs_of(policy, &governed))
        .filter_map(|(g, cost)| Some((g.pod.uid.clone(), cost?)))
        .collect()
}

/// [`deletion_costs`] over a [`survey`]'s governed pods, in their order:
/// `None` for a pod that gets no cost (pending, finished, or not placed).
#[must_use]
pub(crate) fn costs_of(policy: &Policy, governed: &[Governed<'_>]) -> Vec<Option<i32>> {
    let n = policy.units.len();
    let mut out = vec![None; governed.len()];
    // (unit, group) → pods counted toward caps, by index, ordered oldest first.
    let mut counted: BTreeMap<(usize, GroupKey), Vec<usize>> = BTreeMap::new();
    for (i, g) in governed.iter().enumerate() {
        let pod = g.pod;
        if pod.is_terminal() || pod.node.is_none() {
            continue;
        }
        match g.placement {
            Placement::Bound(u) | Placement::Reserved(u) => {
                let group = policy.group_of(pod).ok();
                match group {
                    Some(g) if counts_toward_caps(policy, pod) => {
                        counted.entry((u, g)).or_default().push(i);
                    }
                    _ => out[i] = Some(marked(pod, deletion_cost(n, CostClass::Within(u)))),
                }
            }
            Placement::Outside => out[i] = Some(marked(pod, deletion_cost(n, CostClass::Outside))),
            Placement::Unplaced => {}
        }
    }
    for ((u, _), mut pods) in counted {
        let unit = &policy.units[u];
        if unit.has_cap() {
            // Without a cap every pod is within, in any order.
            let key = |i: &usize| {
                let p = governed[*i].pod;
                (p.created, &p.name, &p.uid)
            };
            pods.sort_by(|a, b| key(a).cmp(&key(b)));
        }
        let mut used = Resources::new();
        for (k, i) in pods.into_iter().enumerate() {
            let pod = governed[i].pod;
            used.add(&pod.requests);
            let over_max = unit.max.is_some_and(|m| k >= m as usize);
            let over_res = unit.max_resources.iter().any(|(r, cap)| used.get(r) > cap);
            let class = if over_max || over_res {
                CostClass::OverCap(u)
            } else {
                CostClass::Within(u)
            };
            out[i] = Some(marked(pod, deletion_cost(n, class)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::testutil::*;

    #[test]
    fn costs_order_classes_then_units() {
        for n in 1..=10 {
            let mut order = Vec::new();
            for k in 0..n {
                order.push(deletion_cost(n, CostClass::Within(k)));
            }
            for k in 0..n {
                order.push(deletion_cost(n, CostClass::OverCap(k)));
            }
            order.push(deletion_cost(n, CostClass::Outside));
            assert!(order.windows(2).all(|w| w[0] > w[1]), "n={n}: {order:?}");
        }
    }

    #[test]
    fn youngest_pods_beyond_max_are_removed_first() {
        let mut s = Snapshot::new();
        s.upsert_node(mk_node("l", &[("pool", "l")], 8));
        s.upsert_node(mk_node("c", &[("pool", "c")], 8));
        s.upsert_node(mk_node("x", &[("pool", "x")], 8));
        let p = Policy::new(
            "ns",
            "p",
            vec![
                unit("l", &[("pool", "l")], Some(2)),
                unit("c", &[("pool", "c")], None),
            ],
        );
        s.upsert_policy(p.clone());
        for (name, node, created) in [
            ("a", "l", 1),
            ("b", "l", 2),
            ("c", "l", 3),
            ("d", "c", 4),
            ("e", "x", 5),
        ] {
            let mut pod = bound(mk_pod(name, &[], 1), node);
            pod.created = t(created);
            s.upsert_pod(pod);
        }
        let mut pending = mk_pod("f", &[], 1);
        pending.created = t(6);
        s.upsert_pod(pending);
        let costs = deletion_costs(&s, &Ledger::new(), &p, t(10));
        let got: Vec<(&str, i32)> = costs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            got,
            [("a", 200), ("b", 200), ("c", -100), ("d", 100), ("e", -300)]
        );
    }
}
