//! Scale-up headroom (Spillway extension, off unless `spec.headroom` is
//! set): one cloud node asked for ahead of demand.
//!
//! A GPU node takes minutes to join. When the data-center units of a policy
//! (every unit before its first `elastic` unit) are at least `fillPercent`
//! full, the next replica will need a cloud node; asking for it now hides
//! the wait. The ask is a placeholder pod of the policy's pod shape in the
//! first elastic unit with room under its caps. The placeholder is never
//! governed, runs at a negative priority without preempting anything, and
//! is preempted by any real pod. While it runs it holds a node;
//! when a replica takes that node, it goes back to pending and
//! cluster-autoscaler grows the next node.
//!
//! ```text
//!  data-center units ≥ fillPercent full ─► ask: placeholder (shape of the newest replica,
//!                                            nodeSelector of the first elastic unit with room)
//!  otherwise                             ─► no ask: the placeholder is removed
//! ```
//!
//! How full a unit is: the larger of its share of the GPUs (CPU where its
//! nodes have no GPUs) allocated on its nodes, and its pods against `max`.

use std::collections::BTreeMap;

use super::admission::cap_reached;
use super::governance::governs;
use super::ledger::Ledger;
use super::policy::{Policy, PolicyKey, ResourceKind};
use super::quantity::{GPU, Resources};
use super::snapshot::{Labels, Pod, Snapshot};
use super::time::Time;
use super::usage::{counts_toward_caps, unit_usage};

/// Label of a placeholder pod: the name of the policy it holds room for.
/// Pods carrying it are never governed by a policy.
pub const HEADROOM_LABEL: &str = "scheduling.spillway.io/headroom-for";

/// Annotation of a placeholder pod: the unit it holds room in.
pub const HEADROOM_UNIT_ANNOTATION: &str = "scheduling.spillway.io/headroom-unit";

/// What the controller does about placeholder pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaceholderAction {
    /// Create a placeholder for `policy` as `ask` describes.
    Create {
        /// The policy asking.
        policy: PolicyKey,
        /// Unit name, shape and node selector.
        unit_name: String,
        /// The ask.
        ask: HeadroomAsk,
    },
    /// Delete a placeholder (no ask any more, or a different one).
    Delete {
        /// Namespace.
        namespace: String,
        /// Pod name.
        name: String,
        /// Pod UID (a precondition of the delete).
        uid: String,
        /// Why.
        reason: String,
    },
}

/// The placeholder pods to create and delete so that every policy asking
/// for headroom has exactly one, of the asked shape in the asked unit, and
/// nothing else has any. Placeholders are found by [`HEADROOM_LABEL`]; one
/// of another shape or unit is replaced.
#[must_use]
pub fn placeholder_actions(
    snapshot: &Snapshot,
    ledger: &Ledger,
    now: Time,
) -> Vec<PlaceholderAction> {
    let mut existing: BTreeMap<(String, String), Vec<&Pod>> = BTreeMap::new();
    for pod in snapshot.pods() {
        if let Some(policy) = pod.labels.get(HEADROOM_LABEL)
            && !pod.is_terminal()
            && !pod.is_terminating()
        {
            existing
                .entry((pod.namespace.clone(), policy.clone()))
                .or_default()
                .push(pod);
        }
    }
    let delete = |p: &Pod, reason: &str| PlaceholderAction::Delete {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        uid: p.uid.clone(),
        reason: reason.to_owned(),
    };
    let mut out = Vec::new();
    for policy in snapshot.policies() {
        let mine = existing
            .remove(&(policy.key.namespace.clone(), policy.key.name.clone()))
            .unwrap_or_default();
        let Some(ask) = headroom_ask(snapshot, ledger, policy, now) else {
            out.extend(
                mine.iter()
                    .map(|p| delete(p, "no headroom is asked for now")),
            );
            continue;
        };
        let unit_name = policy.units[ask.unit].name.clone();
        let fits = |p: &&Pod| {
            p.requests == ask.requests
                && p.annotations.get(HEADROOM_UNIT_ANNOTATION) == Some(&unit_name)
        };
        let keep = mine.iter().copied().find(fits);
        for p in &mine {
            if keep.is_none_or(|k| k.uid != p.uid) {
                out.push(delete(p, "another placeholder holds the room asked for"));
            }
        }
        if keep.is_none() {
            out.push(PlaceholderAction::Create {
                policy: policy.key.clone(),
                unit_name,
                ask,
            });
        }
    }
    for pods in existing.values() {
        out.extend(
            pods.iter()
                .map(|p| delete(p, "its policy is gone or asks for no headroom")),
        );
    }
    out
}

/// `spec.headroom`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headroom {
    /// Ask for a node once every data-center unit is at least this full (1–100).
    pub fill_percent: u32,
}

/// One node's worth of room to ask for, ahead of demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadroomAsk {
    /// The elastic unit the room is asked in.
    pub unit: usize,
    /// Requests of the placeholder: the newest replica's.
    pub requests: Resources,
    /// Node labels that place it in the unit.
    pub node_selector: Labels,
    /// Fill of the least full data-center unit, percent.
    pub fill_percent: u32,
    /// Why, for logs and Events.
    pub reason: String,
}

/// Percent of `unit` in use: allocated GPUs (or CPU) on its nodes, or pods
/// against `max`, whichever is fuller. A unit without nodes and without a
/// `max` counts as full (it cannot take a pod).
fn fill_percent(snapshot: &Snapshot, policy: &Policy, unit: usize, pods_in_unit: u32) -> u32 {
    // (allocatable, allocated) of GPUs, then of CPU.
    let (mut gpus, mut cpu) = ((0i64, 0i64), (0i64, 0i64));
    for (node, used) in snapshot.nodes_allocated() {
        if node.unschedulable || policy.unit_of_node(node) != Some(unit) {
            continue;
        }
        gpus.0 += node.allocatable.get(GPU);
        cpu.0 += node.allocatable.get("cpu");
        if let Some(u) = used {
            gpus.1 += u.get(GPU);
            cpu.1 += u.get("cpu");
        }
    }
    let share = |used: i64, total: i64| -> u32 {
        let pct = used.clamp(0, total).saturating_mul(100) / total.max(1);
        u32::try_from(pct).unwrap_or(100)
    };
    let by_capacity = if gpus.0 > 0 {
        Some(share(gpus.1, gpus.0))
    } else if cpu.0 > 0 {
        Some(share(cpu.1, cpu.0))
    } else {
        None
    };
    let by_max = policy.units[unit]
        .max
        .map(|m| share(i64::from(pods_in_unit), i64::from(m.max(1))));
    match (by_capacity, by_max) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => 100,
    }
}

/// The room `policy` asks for ahead of demand, if any: `None` when it has
/// no `spec.headroom`, no elastic unit under its caps, no replica to take
/// the shape from, or a data-center unit below the fill. Pods are counted
/// per unit as Filter counts them ([`unit_usage`], for the newest
/// replica's `matchLabelKeys` group), and an elastic unit has room when
/// [`cap_reached`] says so for that replica.
#[must_use]
pub fn headroom_ask(
    snapshot: &Snapshot,
    ledger: &Ledger,
    policy: &Policy,
    now: Time,
) -> Option<HeadroomAsk> {
    let spec = policy.headroom?;
    let first_elastic = policy
        .units
        .iter()
        .position(|u| u.resource == ResourceKind::Elastic)?;
    let shape = snapshot
        .pods_in(&policy.key.namespace)
        .filter(|p| {
            governs(snapshot, policy, p) && counts_toward_caps(policy, p) && !p.is_terminating()
        })
        .max_by(|a, b| (a.created, &a.uid).cmp(&(b.created, &b.uid)))?;
    let group = policy.group_of(shape).ok()?;
    let usage = unit_usage(snapshot, ledger, policy, &group, "", now);
    let mut least = 100;
    for (u, used) in usage.iter().enumerate().take(first_elastic) {
        let fill = fill_percent(snapshot, policy, u, used.pods);
        if fill < spec.fill_percent {
            return None;
        }
        least = least.min(fill);
    }
    let unit = (first_elastic..policy.units.len()).find(|&u| {
        let unit = &policy.units[u];
        unit.resource == ResourceKind::Elastic
            && cap_reached(unit, &usage[u], &shape.requests).is_none()
    })?;
    Some(HeadroomAsk {
        unit,
        requests: shape.requests.clone(),
        node_selector: policy.units[unit].node_selector.clone(),
        fill_percent: least,
        reason: format!(
            "the data-center units are {least}% full (headroom at {}%): one node of unit {:?} is asked for ahead of demand",
            spec.fill_percent, policy.units[unit].name
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::policy::Unit;
    use crate::decision::testutil::*;

    fn elastic(name: &str, pool: &str, max: Option<u32>) -> Unit {
        let mut u = unit(name, &[("pool", pool)], max);
        u.resource = ResourceKind::Elastic;
        u
    }

    /// Two 4-GPU data-center nodes with `running` one-GPU replicas; units
    /// dc (max `dc_max`), cloud-a (max 2), cloud-b; headroom at 75 %.
    fn world(running: usize, dc_max: Option<u32>, cloud_a: usize) -> (Snapshot, Policy) {
        let mut s = Snapshot::new();
        s.upsert_node(mk_node("dc1", &[("pool", "dc")], 4));
        s.upsert_node(mk_node("dc2", &[("pool", "dc")], 4));
        s.upsert_node(mk_node("ca1", &[("pool", "cloud-a")], 4));
        let mut p = Policy::new(
            "ns",
            "p",
            vec![
                unit("dc", &[("pool", "dc")], dc_max),
                elastic("cloud-a", "cloud-a", Some(2)),
                elastic("cloud-b", "cloud-b", None),
            ],
        );
        p.selector = labels(&[("app", "llm")]);
        p.headroom = Some(Headroom { fill_percent: 75 });
        s.upsert_policy(p.clone());
        for i in 0..running {
            let node = if i % 2 == 0 { "dc1" } else { "dc2" };
            s.upsert_pod(bound(mk_pod(&format!("r{i}"), &[("app", "llm")], 1), node));
        }
        for i in 0..cloud_a {
            s.upsert_pod(bound(mk_pod(&format!("c{i}"), &[("app", "llm")], 1), "ca1"));
        }
        (s, p)
    }

    #[test]
    fn asks_once_the_data_center_is_full_enough() {
        // 5 of 8 GPUs: 62 %, below 75 %.
        let (s, p) = world(5, None, 0);
        assert_eq!(headroom_ask(&s, &Ledger::new(), &p, t(0)), None);
        // 6 of 8: 75 %.
        let (s, p) = world(6, None, 0);
        let ask = headroom_ask(&s, &Ledger::new(), &p, t(0)).expect("an ask at 75 %");
        assert_eq!(ask.unit, 1);
        assert_eq!(ask.node_selector, labels(&[("pool", "cloud-a")]));
        assert_eq!(ask.requests, Resources::new().with(GPU, 1));
        assert_eq!(ask.fill_percent, 75);
        assert!(ask.reason.contains("75% full"), "{}", ask.reason);
    }

    #[test]
    fn max_counts_as_fill_and_a_full_elastic_unit_passes_to_the_next() {
        // 3 pods under max 4: 75 % by max though the GPUs are 37 % used.
        let (s, p) = world(3, Some(4), 0);
        assert_eq!(
            headroom_ask(&s, &Ledger::new(), &p, t(0)).map(|a| a.unit),
            Some(1)
        );
        // cloud-a at its max of 2: the ask goes to cloud-b.
        let (s, p) = world(6, None, 2);
        assert_eq!(
            headroom_ask(&s, &Ledger::new(), &p, t(0)).map(|a| a.unit),
            Some(2)
        );
    }

    #[test]
    fn off_without_the_spec_or_without_replicas_or_elastic_units() {
        let (s, mut p) = world(8, None, 0);
        p.headroom = None;
        assert_eq!(headroom_ask(&s, &Ledger::new(), &p, t(0)), None);
        let (s, p) = world(0, Some(0), 0);
        assert_eq!(
            headroom_ask(&s, &Ledger::new(), &p, t(0)),
            None,
            "no replica to take the shape from"
        );
        let (s, mut p) = world(8, None, 0);
        for u in &mut p.units {
            u.resource = ResourceKind::Idc;
        }
        assert_eq!(headroom_ask(&s, &Ledger::new(), &p, t(0)), None);
    }

    fn placeholder(uid: &str, unit: &str, gpus: i64, node: Option<&str>) -> Pod {
        let mut p = mk_pod(uid, &[(HEADROOM_LABEL, "p")], gpus);
        p.annotations
            .insert(HEADROOM_UNIT_ANNOTATION.into(), unit.into());
        p.created = t(99_999);
        match node {
            Some(n) => bound(p, n),
            None => p,
        }
    }

    fn kinds(actions: &[PlaceholderAction]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                PlaceholderAction::Create { unit_name, .. } => format!("create {unit_name}"),
                PlaceholderAction::Delete { name, .. } => format!("delete {name}"),
            })
            .collect()
    }

    #[test]
    fn one_placeholder_per_asking_policy_and_none_otherwise() {
        let (mut s, _) = world(6, None, 0);
        assert_eq!(
            kinds(&placeholder_actions(&s, &Ledger::new(), t(0))),
            ["create cloud-a"]
        );
        // One of the right shape: nothing to do; a second one goes.
        s.upsert_pod(placeholder("ph1", "cloud-a", 1, Some("ca1")));
        assert!(placeholder_actions(&s, &Ledger::new(), t(0)).is_empty());
        s.upsert_pod(placeholder("ph2", "cloud-a", 1, None));
        assert_eq!(
            kinds(&placeholder_actions(&s, &Ledger::new(), t(0))),
            ["delete ph2"]
        );
        // The wrong unit or shape is replaced.
        let (mut s, _) = world(6, None, 0);
        s.upsert_pod(placeholder("ph3", "cloud-b", 1, None));
        assert_eq!(
            kinds(&placeholder_actions(&s, &Ledger::new(), t(0))),
            ["delete ph3", "create cloud-a"]
        );
        // No ask (the data center has room): the placeholder goes.
        let (mut s, _) = world(2, None, 0);
        s.upsert_pod(placeholder("ph1", "cloud-a", 1, Some("ca1")));
        assert_eq!(
            kinds(&placeholder_actions(&s, &Ledger::new(), t(0))),
            ["delete ph1"]
        );
        // A placeholder of a policy that no longer exists goes too.
        let mut s = Snapshot::new();
        s.upsert_pod(placeholder("ph9", "cloud-a", 1, None));
        assert_eq!(
            kinds(&placeholder_actions(&s, &Ledger::new(), t(0))),
            ["delete ph9"]
        );
    }

    #[test]
    fn placeholders_are_never_governed() {
        let (mut s, p) = world(6, None, 0);
        let mut ph = mk_pod("ph", &[("app", "llm"), (HEADROOM_LABEL, "p")], 1);
        ph.created = t(99_999);
        assert!(!p.selects_pod(&ph));
        s.upsert_pod(bound(ph, "ca1"));
        // The placeholder neither counts in cloud-a nor gives the shape.
        let ask = headroom_ask(&s, &Ledger::new(), &p, t(0)).unwrap();
        assert_eq!(ask.unit, 1);
    }
}
