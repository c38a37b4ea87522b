//! Spill-back (`spec.spillBack`, a Spillway extension, off by default):
//! when the peak is over and an earlier unit has room again, move pods
//! back from later (cloud) units, one at a time, through evictions that the
//! pods' controllers answer with replacements.
//!
//! ```text
//!  per policy with spillBack:
//!    pending governed pods or live reservations?  ──► no move (the room is theirs); settle clock reset
//!    victim  = the governed, bound, controller-owned pod that scale-in would remove first
//!              (lowest deletion cost), in a later unit than its replacement's
//!    room    = Filter of a replacement (same labels and requests, no node) over the nodes it
//!              fits, counting bound pods and reservations, admits it to an earlier unit
//!    room seen continuously for settleTime, fewer than maxEvictions in the last interval
//!      ──► Evict(victim), settle clock restarts
//! ```
//!
//! The driver keeps [`SpillBackState`] between calls (the settle clocks and
//! recent evictions); the rule itself does no I/O and reads no clock.

use std::collections::BTreeMap;

use super::deletion::costs_of;
use super::filter::{FilterRequest, filter};
use super::fit::fitting_nodes;
use super::governance::governs;
use super::ledger::Ledger;
use super::policy::{Policy, PolicyKey};
use super::snapshot::{Pod, Snapshot};
use super::time::Time;
use super::usage::{Placement, survey};

/// The UID the probing replacement pod carries (never a real pod's).
const PROBE_UID: &str = "spillway.io/spill-back-probe";

/// One pod to move back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// The policy.
    pub policy: PolicyKey,
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// UID of the pod (the eviction's precondition).
    pub uid: String,
    /// The unit it leaves (`None`: a node outside every unit).
    pub from: Option<usize>,
    /// The earlier unit its replacement will be admitted to.
    pub to: usize,
    /// Why, for the Event.
    pub message: String,
}

/// What spill-back remembers between calls, per policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpillBackState {
    /// Since when a replacement has been admissible to an earlier unit
    /// without a break (and which unit).
    room_since: BTreeMap<PolicyKey, (usize, Time)>,
    /// Evictions made, newest last.
    evicted: BTreeMap<PolicyKey, Vec<Time>>,
}

impl SpillBackState {
    /// Evictions recorded for `policy` after `since`.
    #[must_use]
    pub fn evictions_since(&self, policy: &PolicyKey, since: Time) -> usize {
        self.evicted
            .get(policy)
            .map_or(0, |v| v.iter().filter(|t| **t > since).count())
    }
}

/// The pod scale-in would remove first among those that may move: governed,
/// bound, not terminating, owned by a controller. With its unit.
fn victim<'s>(
    snapshot: &'s Snapshot,
    ledger: &Ledger,
    policy: &Policy,
    now: Time,
) -> Option<(&'s Pod, Option<usize>)> {
    let governed = survey(snapshot, ledger, policy, now).governed;
    governed
        .iter()
        .zip(costs_of(policy, &governed))
        .filter(|(g, _)| g.pod.controlled && !g.pod.is_terminating())
        .filter_map(|(g, cost)| match g.placement {
            Placement::Bound(u) => Some((g.pod, Some(u), cost?)),
            Placement::Outside => Some((g.pod, None, cost?)),
            Placement::Reserved(_) | Placement::Unplaced => None,
        })
        // Lowest cost; among equals the newest, as the ReplicaSet would.
        .min_by(|(a, _, ca), (b, _, cb)| {
            (ca, std::cmp::Reverse(a.created), &a.name).cmp(&(
                cb,
                std::cmp::Reverse(b.created),
                &b.name,
            ))
        })
        .map(|(pod, unit, _)| (pod, unit))
}

/// True when pods of `policy` are waiting to be placed or being placed:
/// any room is theirs first.
fn placement_in_flight(snapshot: &Snapshot, ledger: &Ledger, policy: &Policy) -> bool {
    ledger.iter().any(|(_, r)| r.policy == policy.key)
        || snapshot.pods_in(&policy.key.namespace).any(|p| {
            p.node.is_none()
                && !p.is_terminal()
                && !p.is_terminating()
                && governs(snapshot, policy, p)
        })
}

/// The earlier unit a replacement of `victim` would be admitted to now.
fn room_for(
    snapshot: &Snapshot,
    ledger: &Ledger,
    victim: &Pod,
    from: Option<usize>,
    now: Time,
) -> Option<usize> {
    let replacement = Pod {
        uid: PROBE_UID.to_owned(),
        node: None,
        phase: super::snapshot::PodPhase::Pending,
        created: now,
        deleting: None,
        ..victim.clone()
    };
    let nodes = fitting_nodes(snapshot, &replacement);
    let out = filter(
        snapshot,
        ledger,
        FilterRequest {
            pod: &replacement,
            nodes: &nodes,
            wait_since: None,
            now,
        },
    );
    let to = out.chosen_unit()?;
    from.is_none_or(|f| to < f).then_some(to)
}

/// The evictions to make now (at most one per policy), updating `state`.
#[must_use]
pub fn spill_back(
    snapshot: &Snapshot,
    ledger: &Ledger,
    state: &mut SpillBackState,
    now: Time,
) -> Vec<Eviction> {
    let mut out = Vec::new();
    let live: Vec<&PolicyKey> = snapshot.policies().map(|p| &p.key).collect();
    state.room_since.retain(|k, _| live.contains(&k));
    state.evicted.retain(|k, _| live.contains(&k));
    for policy in snapshot.policies() {
        let Some(sb) = policy.spill_back else {
            state.room_since.remove(&policy.key);
            continue;
        };
        if let Some(times) = state.evicted.get_mut(&policy.key) {
            let since = now.before(sb.interval);
            times.retain(|t| *t > since);
        }
        let room = if placement_in_flight(snapshot, ledger, policy) {
            None
        } else {
            victim(snapshot, ledger, policy, now).and_then(|(pod, from)| {
                room_for(snapshot, ledger, pod, from, now).map(|to| (pod, from, to))
            })
        };
        let Some((pod, from, to)) = room else {
            state.room_since.remove(&policy.key);
            continue;
        };
        let since = match state.room_since.get(&policy.key) {
            Some(&(unit, since)) if unit == to => since,
            _ => {
                state.room_since.insert(policy.key.clone(), (to, now));
                now
            }
        };
        let recent = state.evictions_since(&policy.key, now.before(sb.interval));
        if now < since.after(sb.settle) || recent >= sb.max_evictions as usize {
            continue;
        }
        let from_name = from.map_or_else(
            || "a node outside every unit".to_owned(),
            |f| format!("unit {:?}", policy.units[f].name),
        );
        out.push(Eviction {
            policy: policy.key.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            from,
            to,
            message: format!(
                "moving back from {from_name}: unit {:?} has had room for one more pod since {} (settleTime {}); ResourcePolicy {}",
                policy.units[to].name,
                super::time::format_rfc3339(since),
                super::time::format_duration(sb.settle),
                policy.key
            ),
        });
        state
            .evicted
            .entry(policy.key.clone())
            .or_default()
            .push(now);
        state.room_since.remove(&policy.key);
    }
    out
}

#[cfg(test)]
#[path = "spillback_tests.rs"]
mod tests;
