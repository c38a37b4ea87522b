//! The validated ResourcePolicy the core decides with.
//!
//! Manifests (either API group) are decoded by [`crate::crd`] and converted
//! into [`Policy`] once; every rule below reads this type only. Field names
//! follow the manifest so messages can name them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::quantity::Resources;
use super::snapshot::{Labels, Node, Pod};
use super::time::Time;

/// Pod label that makes a unit wait for node-pool scale-out under
/// `TimeoutOrExceedMax` even without a `max` (as ACK documents it).
pub const WAIT_FOR_SCALING_LABEL: &str = "k8s.aliyun.com/resource-policy-wait-for-ecs-scaling";

/// Node label that marks virtual-kubelet nodes (ECI/ACS). A unit of resource
/// `eci` or `acs` with an empty `nodeSelector` selects these nodes.
pub const VIRTUAL_KUBELET_LABEL: (&str, &str) = ("type", "virtual-kubelet");

/// The default `whenTryNextUnits.timeout` (15 minutes, as ACK documents).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The largest number of units a policy may list; it keeps unit scores
/// strictly ordered within the scheduler's 0–10 range (see [`super::score`]).
pub const MAX_UNITS: usize = 10;

/// How nodes outside every unit are treated (`spec.strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Nodes outside every unit are used only after all units (ACK's only mode).
    #[default]
    Prefer,
    /// Nodes outside every unit are never used.
    Required,
}

/// What a unit is made of (`spec.units[].resource`). Informational except
/// that `eci`/`acs` units without a `nodeSelector` select virtual-kubelet nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// Regular (cloud or on-premises) nodes of a node pool.
    Ecs,
    /// Data-center nodes attached to a hybrid cluster.
    Idc,
    /// Elastic container instances (virtual nodes).
    Eci,
    /// Serverless container compute (virtual nodes).
    Acs,
    /// An elastic node pool grown by the cluster autoscaler.
    Elastic,
}

impl ResourceKind {
    /// The manifest spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ecs => "ecs",
            Self::Idc => "idc",
            Self::Eci => "eci",
            Self::Acs => "acs",
            Self::Elastic => "elastic",
        }
    }

    /// True for kinds backed by virtual-kubelet nodes.
    #[must_use]
    pub fn is_virtual(self) -> bool {
        matches!(self, Self::Eci | Self::Acs)
    }
}

/// Where preemption may happen (`spec.preemptPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PreemptPolicy {
    /// Preempt only once every unit has failed (the default).
    #[default]
    AfterAllUnits,
    /// Try preemption in each unit before moving on to the next.
    BeforeNextUnit,
}

/// What the controller does with a `pod-deletion-cost` it did not write
/// (`spec.manualDeletionCost`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ManualCost {
    /// Keep it, and say so in an Event (the default).
    #[default]
    Keep,
    /// Replace it with the policy's cost, and say so in an Event.
    Overwrite,
}

/// Spill-back (`spec.spillBack`, a Spillway extension): once an earlier
/// unit has had room for one more pod for `settle`, one pod of a later unit
/// is evicted so that its replacement lands there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpillBack {
    /// How long the room must last before a pod is moved.
    pub settle: Duration,
    /// At most this many evictions per `interval`, per policy.
    pub max_evictions: u32,
    /// The window `max_evictions` counts in.
    pub interval: Duration,
}

/// `spec.spillBack.settleTime` when unset.
pub const DEFAULT_SPILL_BACK_SETTLE: Duration = Duration::from_secs(5 * 60);
/// `spec.spillBack.interval` when unset.
pub const DEFAULT_SPILL_BACK_INTERVAL: Duration = Duration::from_secs(5 * 60);

impl Default for SpillBack {
    fn default() -> Self {
        Self {
            settle: DEFAULT_SPILL_BACK_SETTLE,
            max_evictions: 1,
            interval: DEFAULT_SPILL_BACK_INTERVAL,
        }
    }
}

/// When a pod moves on to the next unit (`spec.whenTryNextUnits.policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NextUnitPolicy {
    /// Next unit when this one is at its cap or has no room (the default).
    #[default]
    LackResourceOrExceedMax,
    /// Next unit only when this one has no cap or is at it; otherwise wait.
    ExceedMax,
    /// Wait up to `timeout` for room in a capped unit, then move on.
    TimeoutOrExceedMax,
    /// Like the default, but wait while a pod of the unit is terminating.
    LackResourceAndNoTerminating,
}

impl NextUnitPolicy {
    /// The canonical manifest spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LackResourceOrExceedMax => "LackResourceOrExceedMax",
            Self::ExceedMax => "ExceedMax",
            Self::TimeoutOrExceedMax => "TimeoutOrExceedMax",
            Self::LackResourceAndNoTerminating => "LackResourceAndNoTerminating",
        }
    }
}

/// One unit of a policy, tried in list order on scale-out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Unit name: `spec.units[].name`, or `<resource>-<index>` when absent.
    pub name: String,
    /// What the unit is made of.
    pub resource: ResourceKind,
    /// Labels a node must carry to belong to the unit.
    pub node_selector: Labels,
    /// Cap on counted pods in the unit (per `matchLabelKeys` group).
    pub max: Option<u32>,
    /// Cap on the summed requests of counted pods (per group).
    pub max_resources: Resources,
    /// Labels put on pods placed in the unit (by the policy controller).
    pub pod_labels: Labels,
    /// Annotations put on pods placed in the unit (on the Binding, or by the
    /// policy controller).
    pub pod_annotations: Labels,
}

impl Unit {
    /// True when the unit caps pods by count or by resources.
    #[must_use]
    pub fn has_cap(&self) -> bool {
        self.max.is_some() || !self.max_resources.is_empty()
    }

    /// True when a node with these labels belongs to the unit. An empty
    /// selector on an `eci`/`acs` unit selects virtual-kubelet nodes; on any
    /// other unit it selects every node (validation warns against that).
    #[must_use]
    pub fn selects_node(&self, labels: &Labels) -> bool {
        if self.node_selector.is_empty() && self.resource.is_virtual() {
            let (k, v) = VIRTUAL_KUBELET_LABEL;
            return labels.get(k).is_some_and(|x| x == v);
        }
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|x| x == v))
    }

    /// True when pods in this unit wait for scale-out under
    /// `TimeoutOrExceedMax` even without a cap.
    #[must_use]
    pub fn waits_for_scaling(&self) -> bool {
        self.pod_labels
            .get(WAIT_FOR_SCALING_LABEL)
            .is_some_and(|v| v == "true")
    }
}

/// Identifies a policy: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// Namespace of the policy (it governs pods of this namespace only).
    pub namespace: String,
    /// Name of the policy.
    pub name: String,
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A validated ResourcePolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Namespace and name.
    pub key: PolicyKey,
    /// When the policy was created (orders conflicting policies and drives
    /// `ignorePreviousPod`).
    pub created: Time,
    /// Label selector over pods in the namespace; empty selects all.
    pub selector: Labels,
    /// Treatment of nodes outside every unit.
    pub strategy: Strategy,
    /// Units in scale-out order (at least one, at most [`MAX_UNITS`]).
    pub units: Vec<Unit>,
    /// Where preemption may happen.
    pub preempt_policy: PreemptPolicy,
    /// Do not count pods created before the policy.
    pub ignore_previous_pod: bool,
    /// Do not count terminating pods.
    pub ignore_terminating_pod: bool,
    /// Caps apply per group of these pod label values.
    pub match_label_keys: Vec<String>,
    /// When a pod moves on to the next unit.
    pub when_try_next_units: NextUnitPolicy,
    /// How long a pod may wait under `TimeoutOrExceedMax` (and, with
    /// `BeforeNextUnit`, for preemption in a unit).
    pub timeout: Duration,
    /// A `pod-deletion-cost` someone else set on a governed pod: kept or replaced.
    pub manual_deletion_cost: ManualCost,
    /// Spill-back, when enabled.
    pub spill_back: Option<SpillBack>,
    /// Spillway extension: a cloud node asked for ahead of demand.
    pub headroom: Option<super::headroom::Headroom>,
}

impl Policy {
    /// A policy with defaults and the given units; a convenience for tests,
    /// the simulator and examples.
    #[must_use]
    pub fn new(namespace: &str, name: &str, units: Vec<Unit>) -> Self {
        Self {
            key: PolicyKey {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            created: Time::default(),
            selector: Labels::new(),
            strategy: Strategy::Prefer,
            units,
            preempt_policy: PreemptPolicy::AfterAllUnits,
            ignore_previous_pod: false,
            ignore_terminating_pod: true,
            match_label_keys: Vec::new(),
            when_try_next_units: NextUnitPolicy::LackResourceOrExceedMax,
            timeout: DEFAULT_TIMEOUT,
            manual_deletion_cost: ManualCost::Keep,
            spill_back: None,
            headroom: None,
        }
    }

    /// True when the policy selects the pod: same namespace and every
    /// selector label present with the same value. A headroom placeholder
    /// ([`super::headroom::HEADROOM_LABEL`]) is never selected.
    #[must_use]
    pub fn selects_pod(&self, pod: &Pod) -> bool {
        pod.namespace == self.key.namespace
            && !pod.labels.contains_key(super::headroom::HEADROOM_LABEL)
            && self
                .selector
                .iter()
                .all(|(k, v)| pod.labels.get(k).is_some_and(|x| x == v))
    }

    /// The unit a node belongs to: the first unit whose selector matches.
    /// A node matching several units belongs to the earliest, so its pods are
    /// counted once.
    #[must_use]
    pub fn unit_of_node(&self, node: &Node) -> Option<usize> {
        self.units.iter().position(|u| u.selects_node(&node.labels))
    }

    /// Indexes of the units no node belongs to, in unit order: units whose
    /// `nodeSelector` matches none of `nodes`, or only nodes an earlier unit
    /// owns (see [`Self::unit_of_node`]). The policy never places a pod in
    /// such a unit, and pods it would have held go to the next unit or
    /// outside every unit; that is worth a warning, not a validation error,
    /// since the nodes may join later (a node pool scaled from zero).
    ///
    /// Nodes are read one at a time, so any source can feed it: a snapshot's
    /// nodes, or one probe node per node pool carrying the pool's labels.
    #[must_use]
    pub fn units_without_nodes<'a>(&self, nodes: impl IntoIterator<Item = &'a Node>) -> Vec<usize> {
        let mut owned = vec![false; self.units.len()];
        let mut left = self.units.len();
        for node in nodes {
            if left == 0 {
                break;
            }
            if let Some(u) = self.unit_of_node(node)
                && !owned[u]
            {
                owned[u] = true;
                left -= 1;
            }
        }
        (0..owned.len()).filter(|&u| !owned[u]).collect()
    }

    /// The `matchLabelKeys` group of a pod: the values of those labels in
    /// key order. Caps apply per group.
    ///
    /// # Errors
    /// The first key the pod lacks; such a pod is rejected by the filter.
    pub fn group_of(&self, pod: &Pod) -> Result<GroupKey, MissingLabel> {
        self.match_label_keys
            .iter()
            .map(|k| {
                pod.labels
                    .get(k)
                    .cloned()
                    .ok_or_else(|| MissingLabel { key: k.clone() })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(GroupKey)
    }

    /// Semantic checks a schema cannot express, with the field each names.
    /// An empty result means the policy is usable. The API server's CEL rules
    /// cover the same ground for the spillway group; this covers objects that
    /// bypassed them (the compat group, files given to the simulator).
    #[must_use]
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut push = |field: String, message: String| errors.push(FieldError { field, message });
        if self.units.is_empty() {
            push("spec.units".into(), "at least one unit is required".into());
        }
        if self.units.len() > MAX_UNITS {
            push(
                "spec.units".into(),
                format!(
                    "at most {MAX_UNITS} units are supported, got {}",
                    self.units.len()
                ),
            );
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, unit) in self.units.iter().enumerate() {
            if let Some(first) = seen.insert(&unit.name, i) {
                push(
                    format!("spec.units[{i}].name"),
                    format!("duplicate unit name {:?} (also units[{first}])", unit.name),
                );
            }
            if unit.node_selector.is_empty() && !unit.resource.is_virtual() {
                push(
                    format!("spec.units[{i}].nodeSelector"),
                    format!(
                        "a unit of resource {} needs a nodeSelector (an empty one would select every node)",
                        unit.resource.as_str()
                    ),
                );
            }
            for (res, cap) in unit.max_resources.iter() {
                if cap < 0 {
                    push(
                        format!("spec.units[{i}].maxResources[{res}]"),
                        "must not be negative".into(),
                    );
                }
            }
        }
        let any_cap = self.units.iter().any(Unit::has_cap);
        if !any_cap {
            if !self.match_label_keys.is_empty() {
                push(
                    "spec.matchLabelKeys".into(),
                    "only meaningful when some unit sets max or maxResources".into(),
                );
            }
            if self.ignore_previous_pod {
                push(
                    "spec.ignorePreviousPod".into(),
                    "only meaningful when some unit sets max or maxResources".into(),
                );
            }
            if !self.ignore_terminating_pod {
                push(
                    "spec.ignoreTerminatingPod".into(),
                    "only meaningful when some unit sets max or maxResources".into(),
                );
            }
        }
        errors
    }
}

/// The values of a policy's `matchLabelKeys` on one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey(pub Vec<String>);

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// A pod lacks one of the policy's `matchLabelKeys`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("pod lacks label {key:?} named in the policy's matchLabelKeys")]
pub struct MissingLabel {
    /// The missing label key.
    pub key: String,
}

/// A validation error naming the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.units[1].max`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::testutil::{labels, mk_node, mk_pod, unit};

    #[test]
    fn first_matching_unit_owns_a_node() {
        let p = Policy::new(
            "ns",
            "p",
            vec![
                unit("a", &[("pool", "x")], None),
                unit("b", &[("pool", "x")], None),
            ],
        );
        assert_eq!(p.unit_of_node(&mk_node("n", &[("pool", "x")], 8)), Some(0));
        assert_eq!(p.unit_of_node(&mk_node("n", &[("pool", "y")], 8)), None);
    }

    #[test]
    fn units_without_nodes_lists_the_units_no_node_belongs_to() {
        let p = Policy::new(
            "ns",
            "p",
            vec![
                unit("dc", &[("pool", "dc")], Some(4)),
                unit("cloud", &[("pool", "cloud")], None),
                unit("shadowed", &[("pool", "dc")], None),
            ],
        );
        let nodes = [
            mk_node("dc-1", &[("pool", "dc")], 8),
            mk_node("cpu-1", &[("pool", "cpu")], 0),
        ];
        // "dc" has a node; "cloud" matches none; "shadowed" matches only
        // nodes the earlier "dc" owns.
        assert_eq!(p.units_without_nodes(&nodes), [1, 2]);
        let nodes = [
            mk_node("dc-1", &[("pool", "dc")], 8),
            mk_node("cloud-1", &[("pool", "cloud")], 8),
        ];
        assert_eq!(p.units_without_nodes(nodes.iter()), [2]);
        // No node of any unit: every unit is listed, as with no nodes at all.
        let nodes = [mk_node("cpu-1", &[("pool", "cpu")], 0)];
        assert_eq!(p.units_without_nodes(&nodes), [0, 1, 2]);
        assert_eq!(p.units_without_nodes(&[]), [0, 1, 2]);
    }

    #[test]
    fn empty_selector_on_virtual_unit_selects_virtual_kubelet_nodes() {
        let mut u = unit("eci", &[], None);
        u.resource = ResourceKind::Eci;
        assert!(u.selects_node(&labels(&[("type", "virtual-kubelet")])));
        assert!(!u.selects_node(&labels(&[("pool", "x")])));
    }

    #[test]
    fn selector_matches_same_namespace_only() {
        let mut p = Policy::new("ns", "p", vec![unit("a", &[("pool", "x")], None)]);
        p.selector = labels(&[("app", "llm")]);
        let mut pod = mk_pod("p1", &[("app", "llm")], 1);
        assert!(p.selects_pod(&pod));
        pod.namespace = "other".into();
        assert!(!p.selects_pod(&pod));
        let pod = mk_pod("p2", &[("app", "web")], 1);
        assert!(!p.selects_pod(&pod));
    }

    #[test]
    fn group_of_reports_the_missing_key() {
        let mut p = Policy::new("ns", "p", vec![unit("a", &[("pool", "x")], Some(2))]);
        p.match_label_keys = vec!["pod-template-hash".into(), "app".into()];
        let pod = mk_pod("p1", &[("app", "llm"), ("pod-template-hash", "abc")], 1);
        assert_eq!(
            p.group_of(&pod).unwrap(),
            GroupKey(vec!["abc".into(), "llm".into()])
        );
        let pod = mk_pod("p2", &[("app", "llm")], 1);
        assert_eq!(p.group_of(&pod).unwrap_err().key, "pod-template-hash");
    }

    #[test]
    fn validation_names_each_field() {
        let mut p = Policy::new(
            "ns",
            "p",
            vec![unit("a", &[("pool", "x")], None), unit("a", &[], None)],
        );
        p.match_label_keys = vec!["pod-template-hash".into()];
        p.ignore_previous_pod = true;
        let fields: Vec<String> = p.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.units[1].name",
                "spec.units[1].nodeSelector",
                "spec.matchLabelKeys",
                "spec.ignorePreviousPod"
            ]
        );
    }
}
