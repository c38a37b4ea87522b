//! The policy controller's rule (DESIGN semantics 4 and 5): from the
//! snapshot, the reservations and what the extender observed, the writes
//! that make scale-in exact and the per-unit counts visible, as data.
//!
//! ```text
//!  snapshot, ledger, waits, spills, now ──► reconcile ──► PatchPod  (deletion cost, unit podLabels/podAnnotations)
//!                                                     ├─► Event     (a hand-set deletion cost kept or overwritten)
//!                                                     ├─► PolicyView (status.units[], conflicts)
//!                                                     └─► Eviction  (spill-back, see [`super::spillback`])
//! ```
//!
//! - **Deletion cost.** Every bound, governed pod carries
//!   `controller.kubernetes.io/pod-deletion-cost` from
//!   [`deletion_costs`]: later units cheaper than earlier ones, pods over a
//!   unit's cap cheaper than those within it, the oldest pods within. Spillway
//!   records the value it wrote in [`WRITTEN_COST_ANNOTATION`]; a cost that
//!   differs from that record was set by someone else and is kept (an Event
//!   says so) unless the policy's `manualDeletionCost: Overwrite` says to
//!   replace it (an Event says that too). Pods no policy governs are never
//!   touched.
//! - **Unit labels.** A pod bound in a unit carries the unit's `podLabels`
//!   and `podAnnotations` (pods created before the policy too, unless
//!   `ignorePreviousPod`).
//! - **A patch only where something differs**: at steady state a second
//!   reconcile returns no patch.

use std::collections::BTreeMap;

use super::deletion::{
    CostClass, DELETION_COST_ANNOTATION, DRAIN_FIRST_ANNOTATION, costs_of, deletion_cost,
};
use super::ledger::Ledger;
use super::policy::{ManualCost, Policy, PolicyKey};
use super::quantity::Resources;
use super::snapshot::{Labels, Pod, Snapshot};
use super::spillback::{Eviction, SpillBackState, spill_back};
use super::time::Time;
use super::usage::{Placement, Survey, counts_toward_caps, survey};

/// The annotation in which Spillway records the deletion cost it wrote, so
/// that a cost set by someone else can be told from its own.
pub const WRITTEN_COST_ANNOTATION: &str = "scheduling.spillway.io/deletion-cost";

/// A pod, by name and UID.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (the patch's precondition).
    pub uid: String,
}

impl PodKey {
    fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        }
    }
}

/// Labels and annotations to merge onto a pod (values set, nothing removed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPatch {
    /// The pod.
    pub pod: PodKey,
    /// Labels to set.
    pub labels: Labels,
    /// Annotations to set.
    pub annotations: Labels,
}

/// An Event about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    /// The pod.
    pub pod: PodKey,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What happened.
    pub message: String,
}

/// What one unit holds now, for `status.units[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitView {
    /// Unit name.
    pub name: String,
    /// Unit resource kind (`idc`, `elastic`, ...).
    pub resource: &'static str,
    /// Pods counted in the unit, every group (bound or reserved).
    pub pods: u32,
    /// The unit's `max`.
    pub max: Option<u32>,
    /// Summed requests of the counted pods, for the resources `maxResources` caps.
    pub resources_used: Resources,
    /// The unit's `maxResources`.
    pub max_resources: Resources,
    /// Of `pods`, those assumed at Filter or Bind and not yet bound in the watch.
    pub reserved: u32,
    /// Pending pods that wait for room in this unit.
    pub waiting: u32,
    /// When a pod last spilled past this unit, and why.
    pub last_spill: Option<(Time, String)>,
}

/// What a policy's status shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyView {
    /// The policy.
    pub key: PolicyKey,
    /// One entry per unit, in order.
    pub units: Vec<UnitView>,
    /// Pods this policy selects that an older policy governs, by that policy.
    pub conflicts: BTreeMap<PolicyKey, u32>,
}

/// The controller's actions, as data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Pods to patch, one entry per pod.
    pub patches: Vec<PodPatch>,
    /// Pods to evict for spill-back (at most one per policy).
    pub evictions: Vec<Eviction>,
    /// Events to record.
    pub events: Vec<PodEvent>,
    /// Every policy's status view, in key order.
    pub policies: Vec<PolicyView>,
}

/// What the extender saw that the snapshot does not hold.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Pending pods waiting for a unit (by pod UID): the policy and unit.
    pub waiting: BTreeMap<String, (PolicyKey, usize)>,
    /// The last spill past each unit: when, and the reason.
    pub spills: BTreeMap<(PolicyKey, usize), (Time, String)>,
}

/// The deletion cost `pod` carries, parsed.
fn cost_on(pod: &Pod, key: &str) -> Option<i32> {
    pod.annotations.get(key).and_then(|v| v.trim().parse().ok())
}

/// The deletion cost part of `pod`'s patch, and an Event for a hand-set
/// cost.
fn cost_patch(policy: &Policy, pod: &Pod, desired: i32, patch: &mut PodPatch) -> Option<PodEvent> {
    let current = pod.annotations.get(DELETION_COST_ANNOTATION);
    if current.is_some_and(|v| v.trim().parse() == Ok(desired)) {
        return None;
    }
    let ours = cost_on(pod, WRITTEN_COST_ANNOTATION);
    let hand_set = current.is_some_and(|v| ours.is_none_or(|o| v.trim().parse() != Ok(o)));
    let value = desired.to_string();
    if hand_set && policy.manual_deletion_cost == ManualCost::Keep {
        return Some(PodEvent {
            pod: PodKey::of(pod),
            reason: "ManualDeletionCostKept",
            message: format!(
                "pod-deletion-cost {} was not set by Spillway and is kept (ResourcePolicy {} wants {value}; set manualDeletionCost: Overwrite to replace it)",
                current.map_or("", String::as_str),
                policy.key
            ),
        });
    }
    patch
        .annotations
        .insert(DELETION_COST_ANNOTATION.to_owned(), value.clone());
    patch
        .annotations
        .insert(WRITTEN_COST_ANNOTATION.to_owned(), value.clone());
    hand_set.then(|| PodEvent {
        pod: PodKey::of(pod),
        reason: "ManualDeletionCostOverwritten",
        message: format!(
            "pod-deletion-cost {} was not set by Spillway; replaced by {value} (ResourcePolicy {}, manualDeletionCost: Overwrite)",
            current.map_or("", String::as_str),
            policy.key
        ),
    })
}

/// The unit part of `pod`'s patch: `podLabels` and `podAnnotations` it
/// lacks.
fn unit_patch(policy: &Policy, unit: usize, pod: &Pod, patch: &mut PodPatch) {
    if policy.ignore_previous_pod && pod.created < policy.created {
        return;
    }
    let u = &policy.units[unit];
    for (k, v) in &u.pod_labels {
        if pod.labels.get(k) != Some(v) {
            patch.labels.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in &u.pod_annotations {
        if pod.annotations.get(k) != Some(v) {
            patch.annotations.insert(k.clone(), v.clone());
        }
    }
}

/// Largest total size (keys and values) of a unit's `podAnnotations` that
/// a Binding carries; larger sets go by the controller's patch.
pub const BIND_ANNOTATIONS_MAX_BYTES: usize = 16 * 1024;

/// True for an annotation key a Binding may carry for a unit. The API
/// server copies a Binding's annotations onto the pod without the pod's
/// update validation or admission, so only keys that validation would take
/// go this way: a qualified name (an optional DNS-subdomain prefix of at
/// most 253 bytes and `/`, then 1–63 alphanumerics, `-`, `_` or `.`,
/// starting and ending alphanumeric), outside the `kubernetes.io` and
/// `k8s.io` namespaces (where pod updates guard some keys). Any other key is
/// left to the controller's patch, which the API server validates.
#[must_use]
pub fn bindable_annotation_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        (1..=253).contains(&p.len())
            && p.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
            && !["kubernetes.io", "k8s.io"]
                .iter()
                .any(|r| p == *r || p.ends_with(&format!(".{r}")))
    });
    name_ok && prefix_ok
}

/// The annotations the Binding of a pod to a node of `unit` carries (the
/// API server merges a Binding's annotations onto the pod in the same
/// update that sets its node): what this controller would otherwise patch
/// on right after the bind, so that a pod whose unit sets no `podLabels`
/// needs no write but its Binding. `copies` are what Spillway knows of the
/// pod: the Filter request's copy and the watch's, either or both.
///
/// - the unit's `podAnnotations`, as [`reconcile`] writes them, when every
///   key is [`bindable_annotation_key`] and together they stay within
///   [`BIND_ANNOTATIONS_MAX_BYTES`] (else all are left to [`reconcile`]);
/// - the deletion cost of a pod within its unit's caps, with Spillway's
///   record of it. A pod is bound as its Filter admitted it, within its
///   unit's caps; if the caps changed since, [`reconcile`] corrects the
///   cost. No cost is set when a copy already carries one or the scaler's
///   drain-first mark (a hand-set cost is left to [`reconcile`], which
///   keeps or replaces it as `manualDeletionCost` says, with its Event), or
///   when the pod was never seen (`copies` empty: its annotations are
///   unknown).
#[must_use]
pub fn bind_annotations(policy: &Policy, unit: usize, copies: &[&Pod]) -> Labels {
    let unseen = Pod::default();
    let mut patch = PodPatch::default();
    unit_patch(
        policy,
        unit,
        copies.first().copied().unwrap_or(&unseen),
        &mut patch,
    );
    let mut out = bindable(patch.annotations);
    let cost_unknown_or_set = copies.is_empty()
        || copies.iter().any(|p| {
            p.annotations.contains_key(DELETION_COST_ANNOTATION)
                || p.annotations.contains_key(DRAIN_FIRST_ANNOTATION)
        });
    if !cost_unknown_or_set {
        let cost = deletion_cost(policy.units.len(), CostClass::Within(unit)).to_string();
        out.insert(DELETION_COST_ANNOTATION.to_owned(), cost.clone());
        out.insert(WRITTEN_COST_ANNOTATION.to_owned(), cost);
    }
    out
}

/// `annotations` if a Binding may carry all of them, else none.
fn bindable(annotations: Labels) -> Labels {
    let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size <= BIND_ANNOTATIONS_MAX_BYTES && annotations.keys().all(|k| bindable_annotation_key(k))
    {
        annotations
    } else {
        Labels::new()
    }
}

/// The per-unit view of `policy`, from its [`survey`].
fn view(
    snapshot: &Snapshot,
    observed: &Observed,
    policy: &Policy,
    survey: &Survey<'_>,
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
    for g in &survey.governed {
        if !counts_toward_caps(policy, g.pod) {
            continue;
        }
        let (unit, reserved) = match g.placement {
            Placement::Bound(u) => (u, false),
            Placement::Reserved(u) => (u, true),
            Placement::Outside | Placement::Unplaced => continue,
        };
        let v = &mut units[unit];
        v.pods += 1;
        v.reserved += u32::from(reserved);
        v.resources_used
            .add(&g.pod.requests.only(&policy.units[unit].max_resources));
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
        conflicts: survey.conflicts.clone(),
    }
}

/// The controller's actions for the whole snapshot at `now`; `spill`
/// carries spill-back's clocks from one call to the next.
///
/// One pass over each policy's namespace ([`survey`]) serves the deletion
/// costs, the unit labels and the view.
#[must_use]
pub fn reconcile(
    snapshot: &Snapshot,
    ledger: &Ledger,
    observed: &Observed,
    spill: &mut SpillBackState,
    now: Time,
) -> Actions {
    let mut out = Actions {
        evictions: spill_back(snapshot, ledger, spill, now),
        ..Actions::default()
    };
    for policy in snapshot.policies() {
        let survey = survey(snapshot, ledger, policy, now);
        let costs = costs_of(policy, &survey.governed);
        for (g, cost) in survey.governed.iter().zip(costs) {
            let Some(desired) = cost else {
                continue;
            };
            let mut patch = PodPatch {
                pod: PodKey::of(g.pod),
                ..PodPatch::default()
            };
            if let Some(e) = cost_patch(policy, g.pod, desired, &mut patch) {
                out.events.push(e);
            }
            if let Placement::Bound(u) = g.placement {
                unit_patch(policy, u, g.pod, &mut patch);
            }
            if !patch.labels.is_empty() || !patch.annotations.is_empty() {
                out.patches.push(patch);
            }
        }
        out.policies.push(view(snapshot, observed, policy, &survey));
    }
    out
}

/// Applies `patch` to the snapshot's copy of the pod, as the watch will
/// show it once the API server took the patch (drivers call it after a
/// successful write, so the next reconcile does not patch again).
pub fn apply_patch(snapshot: &mut Snapshot, patch: &PodPatch) {
    snapshot.merge_pod_metadata(&patch.pod.uid, &patch.labels, &patch.annotations);
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
