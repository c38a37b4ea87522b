//! Applies watch events to the extender's [`Index`]: every object is
//! converted once into the core's types, then dropped.
//!
//! ```text
//!  watcher::Event<K> ──► Init: remember the keys the index holds for K
//!                        InitApply / Apply: convert + upsert (forget the key)
//!                        InitDone: remove the keys the re-list did not show
//!                        Delete: remove
//! ```
//!
//! The pod feed is also where the watch confirms a reservation: a pod seen
//! bound is counted from the snapshot, so its reservation is released; a
//! deleted pod releases it too. Terminal pods hold nothing and are dropped,
//! and a pod keeps only Spillway's own annotations (no decision reads any
//! other), which keeps the index slim: ~2.7 kB per pod (`spillway-load index`).
//!
//! ResourcePolicies arrive from two API groups. The same namespace/name in
//! both is one policy to the core: the `scheduling.spillway.io` object wins
//! and the compat one returns if it is deleted. An invalid policy keeps the
//! last valid version of the same object (if any) and is reported in the
//! object's `status.conditions` ([`policy_event_reporting`], written by
//! `serve::status`), in a metric and in the log.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as k8s;
use kube::runtime::watcher::Event;

use crate::crd::{
    COMPAT_GROUP, InvalidPolicy, PolicyCondition, ResourcePolicyManifest, ResourcePolicyStatus,
};
use crate::decision::deletion::DELETION_COST_ANNOTATION;
use crate::decision::policy::{Policy, PolicyKey};
use crate::decision::time::Time;
use crate::extender::backend::Index;

use super::convert::{self, ConvertError};

/// Which API group a ResourcePolicy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// `scheduling.spillway.io`.
    Spillway,
    /// `scheduling.alibabacloud.com`.
    Compat,
}

impl Group {
    /// The group of an `apiVersion`.
    #[must_use]
    pub fn of_api_version(api_version: &str) -> Self {
        if api_version.starts_with(COMPAT_GROUP) {
            Self::Compat
        } else {
            Self::Spillway
        }
    }
}

/// The policies of both groups, before the one per key is chosen.
#[derive(Debug, Default)]
pub struct PolicySources {
    by_key: BTreeMap<PolicyKey, BTreeMap<Group, Policy>>,
    /// The `Ready` condition each object should carry, as last computed
    /// (node changes re-check the warnings of valid ones).
    ready: BTreeMap<(Group, PolicyKey), StatusWrite>,
    /// The `status` each object carried when the watch last showed it.
    seen_status: BTreeMap<(Group, PolicyKey), ResourcePolicyStatus>,
}

impl PolicySources {
    /// Every policy object: its group and key, the `Ready` condition it
    /// should carry (with its generation), and the status it carries now.
    pub fn objects(
        &self,
    ) -> impl Iterator<
        Item = (
            Group,
            &PolicyKey,
            &StatusWrite,
            Option<&ResourcePolicyStatus>,
        ),
    > {
        self.ready
            .iter()
            .map(|((g, k), w)| (*g, k, w, self.seen_status.get(&(*g, k.clone()))))
    }
}

impl PolicySources {
    /// The policy the core should use for `key`: the spillway group's if
    /// present, else the compat group's.
    fn effective(&self, key: &PolicyKey) -> Option<&Policy> {
        self.by_key.get(key).and_then(|m| m.values().next())
    }

    /// Groups that define `key` now.
    #[must_use]
    pub fn groups(&self, key: &PolicyKey) -> Vec<Group> {
        self.by_key
            .get(key)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// Per-kind re-list bookkeeping (keys the index held when a re-list began).
#[derive(Debug, Default)]
pub struct Relist {
    stale: Option<BTreeSet<String>>,
}

/// Why an object was skipped.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// A Node or Pod that cannot be converted.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// A ResourcePolicy that is not valid; the previous version, if any, stays in force.
    #[error(transparent)]
    Policy(#[from] InvalidPolicy),
    /// A ResourcePolicy whose JSON does not decode.
    #[error("ResourcePolicy {name}: {source}")]
    PolicyDecode {
        /// namespace/name.
        name: String,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
}

impl FeedError {
    /// A stable label for metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Convert(_) => "object",
            Self::Policy(_) | Self::PolicyDecode { .. } => "resourcepolicy",
        }
    }
}

/// Starts, continues or finishes a re-list; returns the keys to remove at
/// `InitDone`.
fn relist_step(relist: &mut Relist, current: impl FnOnce() -> BTreeSet<String>) {
    relist.stale = Some(current());
}

/// Applies one Node event.
///
/// # Errors
/// A node that cannot be converted (it is skipped; the rest applies).
pub fn node_event(
    ix: &mut Index,
    relist: &mut Relist,
    ev: Event<k8s::Node>,
) -> Result<(), FeedError> {
    node_event_reporting(ix, relist, ev, &mut |_| {})
}

/// [`node_event`], also re-checking which units of the valid policies
/// select no node when the set of nodes or their labels changed (and once
/// the node list is applied), passing each `Ready` condition whose message
/// changes to `report`.
///
/// # Errors
/// As [`node_event`].
pub fn node_event_reporting(
    ix: &mut Index,
    relist: &mut Relist,
    ev: Event<k8s::Node>,
    report: &mut dyn FnMut(StatusWrite),
) -> Result<(), FeedError> {
    let changed = match ev {
        Event::Init => {
            relist_step(relist, || {
                ix.snapshot.nodes().map(|n| n.name.clone()).collect()
            });
            false
        }
        Event::InitApply(n) | Event::Apply(n) => {
            let node = convert::node(&n)?;
            if let Some(stale) = &mut relist.stale {
                stale.remove(&node.name);
            }
            let changed = ix
                .snapshot
                .node(&node.name)
                .is_none_or(|old| old.labels != node.labels);
            ix.snapshot.upsert_node(node);
            changed
        }
        Event::Delete(n) => n
            .metadata
            .name
            .as_deref()
            .and_then(|name| ix.snapshot.remove_node(name))
            .is_some(),
        Event::InitDone => {
            for name in relist.stale.take().unwrap_or_default() {
                ix.snapshot.remove_node(&name);
            }
            ix.nodes_listed = true;
            true
        }
    };
    if changed && ix.nodes_listed {
        recheck_unit_warnings(ix, report);
    }
    Ok(())
}

/// What a valid policy's `Ready` message says: in force, and which units
/// select no node of the cluster (their pods would be counted outside every
/// unit). No warning before the node list is applied.
fn valid_message(ix: &Index, policy: &Policy) -> (&'static str, String) {
    let empty: Vec<String> = if ix.nodes_listed {
        policy
            .units_without_nodes(ix.snapshot.nodes())
            .into_iter()
            .map(|u| {
                format!(
                    "unit {:?} (#{u}) selects no node of the cluster",
                    policy.units[u].name
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    if empty.is_empty() {
        ("Valid", "the spec is valid and in force".to_owned())
    } else {
        (
            "UnitsWithoutNodes",
            format!(
                "the spec is valid and in force; warning: {}",
                empty.join("; ")
            ),
        )
    }
}

/// Recomputes the `Ready` message of every valid policy object and reports
/// those that changed.
fn recheck_unit_warnings(ix: &mut Index, report: &mut dyn FnMut(StatusWrite)) {
    let mut writes = Vec::new();
    for ((group, key), w) in &ix.policies.ready {
        if w.condition.status != "True" {
            continue;
        }
        let Some(policy) = ix.policies.by_key.get(key).and_then(|m| m.get(group)) else {
            continue;
        };
        let (reason, message) = valid_message(ix, policy);
        if w.condition.reason != reason || w.condition.message != message {
            let mut w = w.clone();
            reason.clone_into(&mut w.condition.reason);
            w.condition.message = message;
            writes.push(w);
        }
    }
    for w in writes {
        ix.policies.ready.insert(
            (
                w.group,
                PolicyKey {
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                },
            ),
            w.clone(),
        );
        report(w);
    }
}

/// Applies one Pod event at time `now` (the fallback creation time of a pod
/// without one).
///
/// # Errors
/// A pod that cannot be converted (it is skipped; the rest applies).
pub fn pod_event(
    ix: &mut Index,
    relist: &mut Relist,
    ev: Event<k8s::Pod>,
    now: Time,
) -> Result<(), FeedError> {
    match ev {
        Event::Init => relist_step(relist, || {
            ix.snapshot.pods().map(|p| p.uid.clone()).collect()
        }),
        Event::InitApply(p) | Event::Apply(p) => {
            let pod = convert::pod(&p, None, now)?;
            if let Some(stale) = &mut relist.stale {
                stale.remove(&pod.uid);
            }
            apply_pod(ix, pod);
        }
        Event::Delete(p) => {
            if let Some(uid) = p.metadata.uid.as_deref() {
                forget_pod(ix, uid);
            }
        }
        Event::InitDone => {
            for uid in relist.stale.take().unwrap_or_default() {
                forget_pod(ix, &uid);
            }
        }
    }
    Ok(())
}

/// Annotations the index keeps: Spillway's own (the wait clock).
const KEPT_ANNOTATIONS: &str = "scheduling.spillway.io/";

fn apply_pod(ix: &mut Index, mut pod: crate::decision::snapshot::Pod) {
    // Spillway's own, the deletion cost, and those a unit of the
    // namespace's policies puts on pods (so the controller sees them).
    let policies: Vec<&Policy> = ix.snapshot.policies_in(&pod.namespace).collect();
    pod.annotations.retain(|k, _| {
        k.starts_with(KEPT_ANNOTATIONS)
            || k == DELETION_COST_ANNOTATION
            || policies
                .iter()
                .any(|p| p.units.iter().any(|u| u.pod_annotations.contains_key(k)))
    });
    if pod.is_terminal() {
        forget_pod(ix, &pod.uid);
        return;
    }
    if pod.node.is_some() {
        // The watch shows the placement: the snapshot counts it from now on.
        ix.ledger.release(&pod.uid);
        ix.seen.remove(&pod.uid);
        ix.observed.waiting.remove(&pod.uid);
    }
    ix.snapshot.upsert_pod(pod);
}

fn forget_pod(ix: &mut Index, uid: &str) {
    ix.snapshot.remove_pod(uid);
    ix.ledger.release(uid);
    ix.seen.remove(uid);
    ix.observed.waiting.remove(uid);
}

/// The key of a policy object: `namespace/name`.
fn policy_key(obj: &kube::core::DynamicObject) -> Option<PolicyKey> {
    Some(PolicyKey {
        namespace: obj
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        name: obj.metadata.name.clone()?,
    })
}

fn relist_key(group: Group, key: &PolicyKey) -> String {
    format!("{group:?}/{key}")
}

/// Applies one ResourcePolicy event of either group.
///
/// # Errors
/// A policy that does not decode or is invalid: the previous valid version
/// of the same object stays in force.
pub fn policy_event(
    ix: &mut Index,
    relist: &mut Relist,
    group: Group,
    ev: Event<kube::core::DynamicObject>,
) -> Result<(), FeedError> {
    policy_event_reporting(ix, relist, group, ev, Time::default(), &mut |_| {})
}

/// [`policy_event`], also passing each applied object's `Ready` condition
/// to `report` when the object does not already carry it (see
/// [`StatusWrite`]); `now` stamps a condition whose status changes. The
/// spec is converted once for both.
///
/// # Errors
/// As [`policy_event`].
pub fn policy_event_reporting(
    ix: &mut Index,
    relist: &mut Relist,
    group: Group,
    ev: Event<kube::core::DynamicObject>,
    now: Time,
    report: &mut dyn FnMut(StatusWrite),
) -> Result<(), FeedError> {
    match ev {
        Event::Init => relist_step(relist, || {
            ix.policies
                .by_key
                .iter()
                .filter(|(_, m)| m.contains_key(&group))
                .map(|(k, _)| relist_key(group, k))
                .collect()
        }),
        Event::InitApply(obj) | Event::Apply(obj) => {
            let Some(key) = policy_key(&obj) else {
                return Ok(());
            };
            if let Some(stale) = &mut relist.stale {
                stale.remove(&relist_key(group, &key));
            }
            let decoded = decode_policy(&obj, group, &key);
            let valid = decoded.as_ref().map(|p| valid_message(ix, p));
            let (w, changed) = ready_status(&obj, group, &key, valid, now);
            ix.policies.ready.insert((group, key.clone()), w.clone());
            let seen = obj
                .data
                .get("status")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            ix.policies.seen_status.insert((group, key.clone()), seen);
            if changed {
                report(w);
            }
            set_policy(ix, group, key, Some(decoded?));
        }
        Event::Delete(obj) => {
            if let Some(key) = policy_key(&obj) {
                ix.policies.ready.remove(&(group, key.clone()));
                ix.policies.seen_status.remove(&(group, key.clone()));
                set_policy(ix, group, key, None);
            }
        }
        Event::InitDone => {
            let stale = relist.stale.take().unwrap_or_default();
            let gone: Vec<PolicyKey> = ix
                .policies
                .by_key
                .keys()
                .filter(|k| stale.contains(&relist_key(group, k)))
                .cloned()
                .collect();
            for key in gone {
                ix.policies.ready.remove(&(group, key.clone()));
                ix.policies.seen_status.remove(&(group, key.clone()));
                set_policy(ix, group, key, None);
            }
        }
    }
    Ok(())
}

fn decode_policy(
    obj: &kube::core::DynamicObject,
    group: Group,
    key: &PolicyKey,
) -> Result<Policy, FeedError> {
    let mut value = serde_json::to_value(obj).map_err(|source| FeedError::PolicyDecode {
        name: key.to_string(),
        source,
    })?;
    // List items may come without apiVersion/kind; the watch knows them.
    if let Some(map) = value.as_object_mut() {
        let api_version = match group {
            Group::Spillway => format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            Group::Compat => format!("{COMPAT_GROUP}/{}", crate::crd::VERSION),
        };
        map.entry("apiVersion")
            .or_insert_with(|| serde_json::Value::String(api_version));
        map.entry("kind")
            .or_insert_with(|| serde_json::Value::String(crate::crd::KIND.to_owned()));
    }
    let manifest: ResourcePolicyManifest =
        serde_json::from_value(value).map_err(|source| FeedError::PolicyDecode {
            name: key.to_string(),
            source,
        })?;
    Ok(manifest.to_policy()?)
}

/// A `Ready` condition to write to a ResourcePolicy's `status`.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    /// The object's API group.
    pub group: Group,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.generation` the condition describes.
    pub generation: Option<i64>,
    /// The condition.
    pub condition: PolicyCondition,
}

/// The longest condition message the API accepts (`metav1.Condition`).
const MAX_CONDITION_MESSAGE: usize = 32_768;

/// The `Ready` condition policy object `obj` (key `key`) should carry —
/// `True` with `valid`'s reason and message when its spec converts (see
/// [`valid_message`]), `False`/`InvalidSpec` naming every bad field when
/// not — and whether it differs from the one the object carries (writing
/// the status comes back as a watch event, and must not write again). The
/// transition time moves only when the condition's status changes.
fn ready_status(
    obj: &kube::core::DynamicObject,
    group: Group,
    key: &PolicyKey,
    valid: Result<(&'static str, String), &FeedError>,
    now: Time,
) -> (StatusWrite, bool) {
    let generation = obj.metadata.generation;
    let (status, reason, mut message) = match valid {
        Ok((reason, message)) => ("True", reason, message),
        Err(e) => ("False", "InvalidSpec", e.to_string()),
    };
    if message.len() > MAX_CONDITION_MESSAGE {
        let mut cut = MAX_CONDITION_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let current: Option<PolicyCondition> = obj
        .data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(serde_json::Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))
        })
        .and_then(|c| serde_json::from_value(c.clone()).ok());
    let unchanged = current.as_ref().is_some_and(|c| {
        c.status == status
            && c.reason == reason
            && c.message == message
            && c.observed_generation == generation
    });
    let since = match &current {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => crate::decision::time::format_rfc3339(now),
    };
    let write = StatusWrite {
        group,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        generation,
        condition: PolicyCondition {
            type_: "Ready".to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: since,
            observed_generation: generation,
        },
    };
    (write, !unchanged)
}

fn set_policy(ix: &mut Index, group: Group, key: PolicyKey, policy: Option<Policy>) {
    let entry = ix.policies.by_key.entry(key.clone()).or_default();
    match policy {
        Some(p) => {
            entry.insert(group, p);
        }
        None => {
            entry.remove(&group);
        }
    }
    if entry.is_empty() {
        ix.policies.by_key.remove(&key);
    }
    match ix.policies.effective(&key) {
        Some(p) => ix.snapshot.upsert_policy(p.clone()),
        None => {
            ix.snapshot.remove_policy(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::ledger::Reservation;
    use serde_json::json;

    fn node(name: &str) -> k8s::Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"pool": "dc"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}}
        }))
        .unwrap()
    }

    fn pod(uid: &str, node: Option<&str>, phase: &str) -> k8s::Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("p-{uid}"), "namespace": "ml", "uid": uid,
                         "labels": {"app": "llm"}},
            "spec": {"nodeName": node, "containers": [{"name": "c",
                     "resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    fn policy_obj(api_version: &str, name: &str, max: i64) -> kube::core::DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": api_version, "kind": "ResourcePolicy",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {"selector": {"app": "llm"},
                     "units": [{"resource": "idc", "nodeSelector": {"pool": "dc"}, "max": max}]}
        }))
        .unwrap()
    }

    /// Applies a pod event at t = 1 s that must succeed.
    fn pod_ok(ix: &mut Index, r: &mut Relist, ev: Event<k8s::Pod>) {
        pod_event(ix, r, ev, Time::from_secs(1)).unwrap();
    }

    fn key(name: &str) -> PolicyKey {
        PolicyKey {
            namespace: "ml".into(),
            name: name.into(),
        }
    }

    fn reservation() -> Reservation {
        Reservation {
            namespace: "ml".into(),
            pod_name: "p-a".into(),
            policy: key("rp"),
            unit: 0,
            group: crate::decision::policy::GroupKey::default(),
            requests: crate::decision::Resources::new(),
            node: Some("n1".into()),
            expires: Time::from_secs(100),
        }
    }

    #[test]
    fn relist_removes_what_the_new_list_lacks() {
        let mut ix = Index::default();
        let mut r = Relist::default();
        for n in ["n1", "n2", "n3"] {
            node_event(&mut ix, &mut r, Event::Apply(node(n))).unwrap();
        }
        node_event(&mut ix, &mut r, Event::Init).unwrap();
        node_event(&mut ix, &mut r, Event::InitApply(node("n1"))).unwrap();
        node_event(&mut ix, &mut r, Event::InitApply(node("n4"))).unwrap();
        // Until the list is complete nothing is removed.
        assert_eq!(ix.snapshot.node_count(), 4);
        node_event(&mut ix, &mut r, Event::InitDone).unwrap();
        let mut names: Vec<_> = ix.snapshot.nodes().map(|n| n.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["n1", "n4"]);
        node_event(&mut ix, &mut r, Event::Delete(node("n1"))).unwrap();
        assert!(ix.snapshot.node("n1").is_none());
    }

    #[test]
    fn a_bound_pod_in_the_watch_releases_its_reservation_and_deletion_forgets_it() {
        let mut ix = Index::default();
        let mut r = Relist::default();
        ix.ledger.reserve("a", reservation());
        pod_ok(&mut ix, &mut r, Event::Apply(pod("a", None, "Pending")));
        assert!(ix.ledger.get("a").is_some(), "pending: still reserved");
        pod_ok(
            &mut ix,
            &mut r,
            Event::Apply(pod("a", Some("n1"), "Running")),
        );
        assert!(ix.ledger.get("a").is_none(), "bound: the watch confirms");
        assert_eq!(ix.snapshot.pod("a").unwrap().node.as_deref(), Some("n1"));
        ix.ledger.reserve("b", reservation());
        pod_ok(&mut ix, &mut r, Event::Apply(pod("b", None, "Pending")));
        pod_ok(&mut ix, &mut r, Event::Delete(pod("b", None, "Pending")));
        assert!(ix.snapshot.pod("b").is_none());
        assert!(ix.ledger.get("b").is_none(), "deleted: released");
    }

    #[test]
    fn terminal_pods_are_dropped_and_bad_pods_skipped() {
        let mut ix = Index::default();
        let mut r = Relist::default();
        let now = Time::from_secs(1);
        pod_ok(
            &mut ix,
            &mut r,
            Event::Apply(pod("a", Some("n1"), "Running")),
        );
        pod_ok(
            &mut ix,
            &mut r,
            Event::Apply(pod("a", Some("n1"), "Succeeded")),
        );
        assert_eq!(ix.snapshot.pod_count(), 0);
        let mut bad = pod("c", None, "Pending");
        bad.spec.as_mut().unwrap().containers[0].resources =
            Some(serde_json::from_value(json!({"requests": {"nvidia.com/gpu": "one"}})).unwrap());
        let err = pod_event(&mut ix, &mut r, Event::Apply(bad), now).unwrap_err();
        assert!(err.to_string().contains("one"), "{err}");
        assert_eq!(ix.snapshot.pod_count(), 0);
    }

    /// The `max` of unit 0 of policy `ml/rp`, if the index has it.
    fn rp_max(ix: &Index) -> Option<u32> {
        ix.snapshot.policy(&key("rp")).and_then(|p| p.units[0].max)
    }

    #[test]
    fn spillway_group_wins_over_compat_and_compat_returns_on_delete() {
        let mut ix = Index::default();
        let (mut own, mut compat) = (Relist::default(), Relist::default());
        let ack = || policy_obj("scheduling.alibabacloud.com/v1alpha1", "rp", 2);
        let ours = || policy_obj("scheduling.spillway.io/v1alpha1", "rp", 5);
        policy_event(&mut ix, &mut compat, Group::Compat, Event::Apply(ack())).unwrap();
        assert_eq!(rp_max(&ix), Some(2));
        policy_event(&mut ix, &mut own, Group::Spillway, Event::Apply(ours())).unwrap();
        assert_eq!(rp_max(&ix), Some(5));
        assert_eq!(
            ix.policies.groups(&key("rp")),
            [Group::Spillway, Group::Compat]
        );
        policy_event(&mut ix, &mut own, Group::Spillway, Event::Delete(ours())).unwrap();
        assert_eq!(rp_max(&ix), Some(2));
        // A compat re-list that no longer shows it removes it.
        policy_event(&mut ix, &mut compat, Group::Compat, Event::Init).unwrap();
        policy_event(&mut ix, &mut compat, Group::Compat, Event::InitDone).unwrap();
        assert_eq!(rp_max(&ix), None);
        assert!(ix.snapshot.policy(&key("rp")).is_none());
    }

    #[test]
    fn an_invalid_policy_keeps_the_last_valid_version_and_names_the_field() {
        let mut ix = Index::default();
        let mut r = Relist::default();
        let ours = "scheduling.spillway.io/v1alpha1";
        policy_event(
            &mut ix,
            &mut r,
            Group::Spillway,
            Event::Apply(policy_obj(ours, "rp", 3)),
        )
        .unwrap();
        let err = policy_event(
            &mut ix,
            &mut r,
            Group::Spillway,
            Event::Apply(policy_obj(ours, "rp", -1)),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max"), "{err}");
        assert_eq!(rp_max(&ix), Some(3));
        // List items without apiVersion/kind still decode.
        let mut bare = policy_obj(ours, "other", 1);
        bare.types = None;
        policy_event(&mut ix, &mut r, Group::Spillway, Event::Apply(bare)).unwrap();
        assert!(ix.snapshot.policy(&key("other")).is_some());
    }

    /// `obj` carrying `cond` as its status, at `generation`.
    fn with_status(
        mut obj: kube::core::DynamicObject,
        generation: i64,
        cond: &PolicyCondition,
    ) -> kube::core::DynamicObject {
        obj.metadata.generation = Some(generation);
        obj.data["status"] = json!({"conditions": [cond]});
        obj
    }

    /// The status write applying `obj` at `now` reports, if any.
    fn policy_status(
        obj: &kube::core::DynamicObject,
        group: Group,
        now: Time,
    ) -> Option<StatusWrite> {
        let mut out = None;
        let ev = Event::Apply(obj.clone());
        let _ = policy_event_reporting(
            &mut Index::default(),
            &mut Relist::default(),
            group,
            ev,
            now,
            &mut |w| out = Some(w),
        );
        out
    }

    #[test]
    fn policy_status_reports_validity_once_and_moves_the_transition_time_on_change() {
        let ours = "scheduling.spillway.io/v1alpha1";
        let t1 = Time::from_secs(1_800_000_000);
        let t2 = Time::from_secs(1_800_000_600);
        // Invalid: Ready=False naming the field, at the object's generation.
        let mut bad = policy_obj(ours, "rp", -1);
        bad.metadata.generation = Some(4);
        let w = policy_status(&bad, Group::Spillway, t1).expect("a write");
        assert_eq!(
            (w.namespace.as_str(), w.name.as_str(), w.generation),
            ("ml", "rp", Some(4))
        );
        let c = &w.condition;
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "False", "InvalidSpec")
        );
        assert!(c.message.contains("spec.units[0].max"), "{}", c.message);
        assert_eq!(c.observed_generation, Some(4));
        assert_eq!(
            c.last_transition_time,
            crate::decision::time::format_rfc3339(t1)
        );
        // Our own write comes back through the watch: nothing more to write.
        assert_eq!(
            policy_status(&with_status(bad.clone(), 4, c), Group::Spillway, t2),
            None
        );
        // Fixed in generation 5: Ready=True, the transition time moves.
        let good = with_status(policy_obj(ours, "rp", 3), 5, c);
        let w = policy_status(&good, Group::Spillway, t2).expect("a write");
        assert_eq!(
            (w.condition.status.as_str(), w.condition.reason.as_str()),
            ("True", "Valid")
        );
        assert_eq!(w.condition.observed_generation, Some(5));
        assert_eq!(
            w.condition.last_transition_time,
            crate::decision::time::format_rfc3339(t2)
        );
        // Still valid at generation 6: same status, the transition time stays.
        let again = with_status(policy_obj(ours, "rp", 4), 6, &w.condition);
        let w6 = policy_status(&again, Group::Spillway, Time::from_secs(1_800_001_200))
            .expect("a write");
        assert_eq!(w6.condition.observed_generation, Some(6));
        assert_eq!(
            w6.condition.last_transition_time,
            w.condition.last_transition_time
        );
    }

    /// A unit whose `nodeSelector` matches no node is valid but reported:
    /// not before the node list is applied, then on every change of the
    /// node set that adds or removes the warning, and only then.
    #[test]
    fn a_unit_that_selects_no_node_is_warned_about_in_ready_once_nodes_are_listed() {
        let ours = "scheduling.spillway.io/v1alpha1";
        let mut ix = Index::default();
        let (mut pr, mut nr) = (Relist::default(), Relist::default());
        let mut writes = Vec::new();
        let mut obj = policy_obj(ours, "rp", 4);
        obj.data["spec"]["units"].as_array_mut().unwrap().push(
            json!({"name": "cloud", "resource": "elastic", "nodeSelector": {"pool": "cloud"}}),
        );
        let t1 = Time::from_secs(1_800_000_000);
        policy_event_reporting(
            &mut ix,
            &mut pr,
            Group::Spillway,
            Event::Apply(obj),
            t1,
            &mut |w| {
                writes.push(w);
            },
        )
        .unwrap();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].condition.reason, "Valid", "no nodes listed yet");
        let mut nodes = |ix: &mut Index, ev: Event<k8s::Node>| {
            let mut out = Vec::new();
            node_event_reporting(ix, &mut nr, ev, &mut |w| out.push(w)).unwrap();
            out
        };
        assert!(nodes(&mut ix, Event::Init).is_empty());
        assert!(nodes(&mut ix, Event::InitApply(node("dc-1"))).is_empty());
        let listed = nodes(&mut ix, Event::InitDone);
        assert_eq!(listed.len(), 1);
        let c = &listed[0].condition;
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "UnitsWithoutNodes")
        );
        assert!(
            c.message
                .contains("unit \"cloud\" (#1) selects no node of the cluster"),
            "{}",
            c.message
        );
        assert_eq!(
            c.last_transition_time,
            writes[0].condition.last_transition_time
        );
        // Another dc node changes nothing; a cloud node clears the warning.
        assert!(nodes(&mut ix, Event::Apply(node("dc-2"))).is_empty());
        let mut cloud = node("cloud-1");
        cloud.metadata.labels = Some([("pool".to_owned(), "cloud".to_owned())].into());
        let cleared = nodes(&mut ix, Event::Apply(cloud.clone()));
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].condition.reason, "Valid");
        assert!(
            nodes(&mut ix, Event::Apply(cloud.clone())).is_empty(),
            "same labels: no write"
        );
        assert_eq!(
            nodes(&mut ix, Event::Delete(cloud)).len(),
            1,
            "gone again: warned"
        );
    }
}
