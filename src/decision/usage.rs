//! Unit accounting (DESIGN semantic 5): which pods count in which unit.
//!
//! A pod counts in unit *u* of policy *P* for group *g* when:
//! - *P* governs it ([`super::governance`]) and its `matchLabelKeys` values are *g*;
//! - it has not finished (Succeeded/Failed pods hold nothing);
//! - it is not terminating, if `ignoreTerminatingPod`;
//! - it was not created before *P*, if `ignorePreviousPod`;
//! - it is bound to a node of *u*, or — not yet visibly bound — holds a live
//!   reservation in *u* ([`super::ledger`]).
//!
//! Terminating pods are tallied separately, across all groups, for
//! `LackResourceAndNoTerminating` (a rolling update terminates the old
//! revision's pods, which are another group).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::governance::{governing_policy_in, governs};
use super::ledger::Ledger;
use super::policy::{GroupKey, Policy, PolicyKey};
use super::quantity::Resources;
use super::snapshot::{Pod, Snapshot, UnitLookup};
use super::time::Time;

/// What one unit holds for one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitUsage {
    /// Counted pods (bound or reserved).
    pub pods: u32,
    /// Summed requests of the counted pods.
    pub resources: Resources,
    /// Pods of the policy (any group) terminating on the unit's nodes.
    pub terminating: u32,
}

/// Where a pod sits with respect to a policy's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Bound to a node of this unit.
    Bound(usize),
    /// Not visibly bound; holds a live reservation in this unit.
    Reserved(usize),
    /// Bound to a node outside every unit.
    Outside,
    /// Not bound and not reserved (pending), or bound to a node the
    /// snapshot does not know yet.
    Unplaced,
}

impl Placement {
    /// The unit, for bound or reserved pods.
    #[must_use]
    pub fn unit(self) -> Option<usize> {
        match self {
            Self::Bound(u) | Self::Reserved(u) => Some(u),
            Self::Outside | Self::Unplaced => None,
        }
    }
}

/// Where `pod` sits among `policy`'s units. A pod bound to a node the
/// snapshot has not seen yet falls back to its reservation, if any.
#[must_use]
pub fn placement(
    snapshot: &Snapshot,
    ledger: &Ledger,
    policy: &Policy,
    pod: &Pod,
    now: Time,
) -> Placement {
    placement_in(&snapshot.units_of(policy), ledger, policy, pod, now)
}

/// [`placement`] with the node lookup made once for many pods.
fn placement_in(
    units: &UnitLookup<'_>,
    ledger: &Ledger,
    policy: &Policy,
    pod: &Pod,
    now: Time,
) -> Placement {
    let reserved = || {
        ledger
            .live(&pod.uid, now)
            // A reservation made before the policy lost units does not place the pod.
            .filter(|r| r.policy == policy.key && r.unit < policy.units.len())
            .map_or(Placement::Unplaced, |r| Placement::Reserved(r.unit))
    };
    match pod.node.as_deref().map(|name| units.get(name)) {
        Some(Some(unit)) => unit.map_or(Placement::Outside, Placement::Bound),
        // Not bound, or bound to a node not seen yet.
        Some(None) | None => reserved(),
    }
}

/// A pod a policy governs, with its placement.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Governed<'s> {
    /// The pod.
    pub pod: &'s Pod,
    /// Where it sits among the policy's units.
    pub placement: Placement,
}

/// What one pass over a policy's namespace finds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Survey<'s> {
    /// The pods the policy governs, in UID order.
    pub governed: Vec<Governed<'s>>,
    /// Pods the policy selects that an older policy governs, by that policy.
    pub conflicts: BTreeMap<PolicyKey, u32>,
}

/// The pods of `policy`'s namespace it governs, each with its placement,
/// and the ones an older policy takes from it, in one pass: the older
/// policies of the namespace and the node lookup are found once, not per
/// pod. Same answers as [`governs`], [`governing_policy_in`] and
/// [`placement`] pod by pod (a property test pins the controller built on
/// it to one that asks them).
#[must_use]
pub(crate) fn survey<'s>(
    snapshot: &'s Snapshot,
    ledger: &Ledger,
    policy: &Policy,
    now: Time,
) -> Survey<'s> {
    let rank = (policy.created, &policy.key);
    let mut older: Vec<&Policy> = snapshot
        .policies_in(&policy.key.namespace)
        .filter(|p| (p.created, &p.key) < rank)
        .collect();
    older.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
    let units = snapshot.units_of(policy);
    let mut out = Survey {
        governed: Vec::with_capacity(snapshot.pod_count_in(&policy.key.namespace)),
        ..Survey::default()
    };
    for pod in snapshot.pods_in(&policy.key.namespace) {
        if !policy.selects_pod(pod) {
            continue;
        }
        // The oldest policy that selects the pod governs it.
        if let Some(winner) = older.iter().find(|p| p.selects_pod(pod)) {
            *out.conflicts.entry(winner.key.clone()).or_insert(0) += 1;
            continue;
        }
        out.governed.push(Governed {
            pod,
            placement: placement_in(&units, ledger, policy, pod, now),
        });
    }
    out
}

/// True when `pod` counts toward `policy`'s caps (ignoring placement and group).
#[must_use]
pub fn counts_toward_caps(policy: &Policy, pod: &Pod) -> bool {
    let finished = pod.is_terminal();
    let ignored_terminating = policy.ignore_terminating_pod && pod.is_terminating();
    let ignored_previous = policy.ignore_previous_pod && pod.created < policy.created;
    !(finished || ignored_terminating || ignored_previous)
}

/// [`unit_usage`] by brute force: every pod of the namespace and every
/// reservation. The reference the incremental counts are tested against.
#[must_use]
pub fn unit_usage_scan(
    snapshot: &Snapshot,
    ledger: &Ledger,
    policy: &Policy,
    group: &GroupKey,
    exclude_uid: &str,
    now: Time,
) -> Vec<UnitUsage> {
    let mut usage = vec![UnitUsage::default(); policy.units.len()];
    for pod in snapshot.pods_in(&policy.key.namespace) {
        if pod.uid == exclude_uid || pod.is_terminal() || !governs(snapshot, policy, pod) {
            continue;
        }
        let Some(unit) = placement(snapshot, ledger, policy, pod, now).unit() else {
            continue;
        };
        if pod.is_terminating() {
            usage[unit].terminating += 1;
        }
        if !counts_toward_caps(policy, pod) || policy.group_of(pod).ok().as_ref() != Some(group) {
            continue;
        }
        usage[unit].pods += 1;
        usage[unit].resources.add(&pod.requests);
    }
    // Reservations of pods the snapshot has not seen at all yet (the Filter
    // request carries the pod before the watch does).
    for (uid, r) in ledger.iter() {
        if uid == exclude_uid
            || !r.is_live(now)
            || r.policy != policy.key
            || &r.group != group
            || r.unit >= usage.len()
            || snapshot.pod(uid).is_some()
        {
            continue;
        }
        usage[r.unit].pods += 1;
        usage[r.unit].resources.add(&r.requests);
    }
    usage
}

/// Per-unit usage of `policy` for `group`, excluding pod `exclude_uid` (the
/// pod being placed: a re-Filter replaces its own reservation).
///
/// Reads the snapshot's incremental [`Counts`] of bound pods and adds the
/// live reservations of pods not visibly bound, so a call costs
/// O(reservations of the policy), not O(pods). Same answer as
/// [`unit_usage_scan`] (a property test pins that).
#[must_use]
pub fn unit_usage(
    snapshot: &Snapshot,
    ledger: &Ledger,
    policy: &Policy,
    group: &GroupKey,
    exclude_uid: &str,
    now: Time,
) -> Vec<UnitUsage> {
    let n = policy.units.len();
    let mut usage = vec![UnitUsage::default(); n];
    let counts = snapshot.counts();
    if let Some(v) = counts.usage.get(&(policy.key.clone(), group.clone())) {
        for (u, c) in usage.iter_mut().zip(v) {
            u.pods = c.pods;
            u.resources.clone_from(&c.resources);
        }
    }
    if let Some(t) = counts.terminating.get(&policy.key) {
        for (u, c) in usage.iter_mut().zip(t) {
            u.terminating = *c;
        }
    }
    if let Some(c) = counts.by_pod.get(exclude_uid)
        && c.policy == policy.key
        && c.unit < n
    {
        let u = &mut usage[c.unit];
        if c.group.as_ref() == Some(group) {
            u.pods = u.pods.saturating_sub(1);
            u.resources.sub(&c.requests);
        }
        if c.terminating {
            u.terminating = u.terminating.saturating_sub(1);
        }
    }
    for (uid, r) in ledger.iter() {
        if uid == exclude_uid || !r.is_live(now) || r.policy != policy.key || r.unit >= n {
            continue;
        }
        match snapshot.pod(uid) {
            None => {
                if &r.group == group {
                    usage[r.unit].pods += 1;
                    usage[r.unit].resources.add(&r.requests);
                }
            }
            Some(pod) => {
                // Pods on a known node are in the counts already; the rest
                // are placed by their reservation.
                let on_known_node = pod
                    .node
                    .as_deref()
                    .is_some_and(|n| snapshot.node(n).is_some());
                if on_known_node || pod.is_terminal() || !governs(snapshot, policy, pod) {
                    continue;
                }
                if pod.is_terminating() {
                    usage[r.unit].terminating += 1;
                }
                if counts_toward_caps(policy, pod)
                    && policy.group_of(pod).ok().as_ref() == Some(group)
                {
                    usage[r.unit].pods += 1;
                    usage[r.unit].resources.add(&pod.requests);
                }
            }
        }
    }
    usage
}

/// What one pod bound to a known node of a unit adds to the counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Contribution {
    policy: PolicyKey,
    unit: usize,
    /// The pod's group when it counts toward caps.
    group: Option<GroupKey>,
    requests: Resources,
    terminating: bool,
}

/// The contribution of `pod` to the counts of the policy governing it.
pub(crate) fn contribution(snapshot: &Snapshot, pod: &Pod) -> Option<Contribution> {
    let node = snapshot.node(pod.holding_node()?)?;
    let policy = governing_policy_in(snapshot, pod).policy?;
    let unit = policy.unit_of_node(node)?;
    let group = if counts_toward_caps(policy, pod) {
        policy.group_of(pod).ok()
    } else {
        None
    };
    Some(Contribution {
        policy: policy.key.clone(),
        unit,
        group,
        requests: pod.requests.clone(),
        terminating: pod.is_terminating(),
    })
}

/// Unit counts of bound pods per policy and group, kept up to date by the
/// [`Snapshot`] on every change (pod, node or policy), so Filter reads them
/// instead of scanning every pod.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    usage: BTreeMap<(PolicyKey, GroupKey), Vec<UnitUsage>>,
    terminating: BTreeMap<PolicyKey, Vec<u32>>,
    by_pod: BTreeMap<Arc<str>, Contribution>,
}

impl Counts {
    /// Replaces pod `uid`'s contribution.
    pub(crate) fn set(&mut self, uid: &Arc<str>, new: Option<Contribution>) {
        self.clear(uid);
        if let Some(c) = new {
            self.apply(&c, true);
            self.by_pod.insert(Arc::clone(uid), c);
        }
    }

    /// Removes pod `uid`'s contribution.
    pub(crate) fn clear(&mut self, uid: &str) {
        if let Some(old) = self.by_pod.remove(uid) {
            self.apply(&old, false);
        }
    }

    fn apply(&mut self, c: &Contribution, add: bool) {
        if let Some(group) = &c.group {
            let v = self
                .usage
                .entry((c.policy.clone(), group.clone()))
                .or_default();
            if v.len() <= c.unit {
                v.resize(c.unit + 1, UnitUsage::default());
            }
            let u = &mut v[c.unit];
            if add {
                u.pods += 1;
                u.resources.add(&c.requests);
            } else {
                u.pods = u.pods.saturating_sub(1);
                u.resources.sub(&c.requests);
            }
        }
        if c.terminating {
            let t = self.terminating.entry(c.policy.clone()).or_default();
            if t.len() <= c.unit {
                t.resize(c.unit + 1, 0);
            }
            if add {
                t[c.unit] += 1;
            } else {
                t[c.unit] = t[c.unit].saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::ledger::Reservation;
    use crate::decision::quantity::GPU;
    use crate::decision::testutil::*;

    fn world() -> (Snapshot, Policy) {
        let mut s = Snapshot::new();
        s.upsert_node(mk_node("l1", &[("pool", "local")], 8));
        s.upsert_node(mk_node("c1", &[("pool", "cloud")], 8));
        s.upsert_node(mk_node("x1", &[("pool", "other")], 8));
        let mut p = Policy::new(
            "ns",
            "p",
            vec![
                unit("local", &[("pool", "local")], Some(2)),
                unit("cloud", &[("pool", "cloud")], None),
            ],
        );
        p.selector = labels(&[("app", "llm")]);
        p.created = t(100);
        s.upsert_policy(p.clone());
        (s, p)
    }

    fn llm(name: &str) -> Pod {
        mk_pod(name, &[("app", "llm"), ("pod-template-hash", "v1")], 1)
    }

    #[test]
    fn counts_bound_pods_per_unit_and_skips_other_apps() {
        let (mut s, p) = world();
        s.upsert_pod(bound(llm("a"), "l1"));
        s.upsert_pod(bound(llm("b"), "c1"));
        s.upsert_pod(bound(llm("c"), "x1"));
        s.upsert_pod(bound(mk_pod("web", &[("app", "web")], 1), "l1"));
        let u = unit_usage(&s, &Ledger::new(), &p, &GroupKey::default(), "", t(200));
        assert_eq!((u[0].pods, u[1].pods), (1, 1));
        assert_eq!(u[0].resources.get(GPU), 1000);
    }

    #[test]
    fn terminating_pods_do_not_count_unless_configured() {
        let (mut s, mut p) = world();
        let mut a = bound(llm("a"), "l1");
        a.deleting = Some(t(150));
        s.upsert_pod(a);
        let u = unit_usage(&s, &Ledger::new(), &p, &GroupKey::default(), "", t(200));
        assert_eq!((u[0].pods, u[0].terminating), (0, 1));
        p.ignore_terminating_pod = false;
        s.upsert_policy(p.clone());
        let u = unit_usage(&s, &Ledger::new(), &p, &GroupKey::default(), "", t(200));
        assert_eq!((u[0].pods, u[0].terminating), (1, 1));
    }

    #[test]
    fn previous_pods_count_unless_ignored() {
        let (mut s, mut p) = world();
        let mut old = bound(llm("old"), "l1");
        old.created = t(50);
        s.upsert_pod(old);
        assert_eq!(
            unit_usage(&s, &Ledger::new(), &p, &GroupKey::default(), "", t(200))[0].pods,
            1
        );
        p.ignore_previous_pod = true;
        s.upsert_policy(p.clone());
        assert_eq!(
            unit_usage(&s, &Ledger::new(), &p, &GroupKey::default(), "", t(200))[0].pods,
            0
        );
    }

    #[test]
    fn groups_are_counted_separately() {
        let (mut s, mut p) = world();
        p.match_label_keys = vec!["pod-template-hash".into()];
        s.upsert_policy(p.clone());
        s.upsert_pod(bound(llm("a"), "l1"));
        let mut b = bound(llm("b"), "l1");
        b.labels.insert("pod-template-hash".into(), "v2".into());
        s.upsert_pod(b);
        let v1 = GroupKey(vec!["v1".into()]);
        let v2 = GroupKey(vec!["v2".into()]);
        assert_eq!(
            unit_usage(&s, &Ledger::new(), &p, &v1, "", t(200))[0].pods,
            1
        );
        assert_eq!(
            unit_usage(&s, &Ledger::new(), &p, &v2, "", t(200))[0].pods,
            1
        );
    }

    #[test]
    fn reservations_count_once_and_lapse() {
        let (mut s, p) = world();
        let mut l = Ledger::new();
        let r = Reservation {
            namespace: "ns".into(),
            pod_name: "a".into(),
            policy: p.key.clone(),
            unit: 0,
            group: GroupKey::default(),
            requests: mk_pod("a", &[], 1).requests,
            node: None,
            expires: t(230),
        };
        l.reserve("a", r.clone());
        l.reserve("ghost", r);
        // "a" is in the snapshot, pending: counted through its reservation.
        s.upsert_pod(llm("a"));
        let u = unit_usage(&s, &l, &p, &GroupKey::default(), "", t(200));
        assert_eq!(u[0].pods, 2, "pending pod with a reservation + unseen pod");
        // Once bound, the snapshot counts it; the reservation is not added again.
        s.upsert_pod(bound(llm("a"), "l1"));
        assert_eq!(
            unit_usage(&s, &l, &p, &GroupKey::default(), "", t(200))[0].pods,
            2
        );
        // Excluding the pod being re-filtered.
        assert_eq!(
            unit_usage(&s, &l, &p, &GroupKey::default(), "ghost", t(200))[0].pods,
            1
        );
        // Lapsed reservations count for nothing.
        assert_eq!(
            unit_usage(&s, &l, &p, &GroupKey::default(), "", t(230))[0].pods,
            1
        );
    }
}
