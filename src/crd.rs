//! The ResourcePolicy API (`scheduling.spillway.io/v1alpha1`) and its
//! conversion into the core's [`Policy`].
//!
//! ```text
//!  manifest (spillway or alibabacloud group) ─serde─► ResourcePolicySpec ─to_policy()─► decision::Policy
//! ```
//!
//! The spec is field-for-field the one Alibaba ACK documents, so a user's
//! manifest works by changing `apiVersion` only, and unchanged under the
//! `scheduling.alibabacloud.com/v1alpha1` compat CRD (same schema). These
//! types are plain serde data in every build; with the `runtime` feature
//! they also derive the CRD (schema, CEL rules, printer columns) that
//! `spillway crd` prints.
//!
//! Validation happens twice, on purpose: CEL rules in the CRD reject what a
//! schema can check before it is stored, and [`ResourcePolicySpec::to_policy`]
//! re-checks everything with field paths for objects that bypassed the API
//! server (files given to `spillway explain` or the simulator) and reports it
//! in `status.conditions`.

pub mod gpu_autoscaler;
pub mod hpa_convert;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::decision::headroom::Headroom;
use crate::decision::policy::{
    DEFAULT_SPILL_BACK_INTERVAL, DEFAULT_SPILL_BACK_SETTLE, DEFAULT_TIMEOUT, FieldError,
    ManualCost, NextUnitPolicy, Policy, PolicyKey, PreemptPolicy, ResourceKind, SpillBack,
    Strategy, Unit,
};
use crate::decision::quantity::{Resources, parse_quantity};
use crate::decision::time::{Time, parse_duration, parse_rfc3339};

/// The API group Spillway owns.
pub const GROUP: &str = "scheduling.spillway.io";
/// The ACK API group Spillway can also serve, so seed manifests apply unchanged.
pub const COMPAT_GROUP: &str = "scheduling.alibabacloud.com";
/// The API version of both groups.
pub const VERSION: &str = "v1alpha1";
/// The kind.
pub const KIND: &str = "ResourcePolicy";

/// `spec` of a ResourcePolicy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(kube::CustomResource, kube::KubeSchema))]
#[cfg_attr(
    feature = "runtime",
    kube(
        group = "scheduling.spillway.io",
        version = "v1alpha1",
        kind = "ResourcePolicy",
        plural = "resourcepolicies",
        doc = "Ordered units of nodes that the selected pods fill first to last (scale-out) and empty last to first (scale-in).",
        namespaced,
        status = "ResourcePolicyStatus",
        shortname = "rpol",
        category = "spillway",
        printcolumn = r#"{"name": "Strategy", "type": "string", "jsonPath": ".spec.strategy"}"#,
        printcolumn = r#"{"name": "Units", "type": "string", "jsonPath": ".spec.units[*].resource"}"#,
        printcolumn = r#"{"name": "Pods", "type": "string", "jsonPath": ".status.summary"}"#,
        printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
        printcolumn = r#"{"name": "Conflict", "type": "string", "priority": 1, "jsonPath": ".status.conditions[?(@.type==\"Conflict\")].status"}"#,
        printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
    )
)]
#[cfg_attr(
    feature = "runtime",
    x_kube(
        validation = Rule::new("size(self.units) > 0").message("at least one unit is required").field_path(".units"),
        validation = Rule::new(
            "!has(self.matchLabelKeys) || size(self.matchLabelKeys) == 0 || self.units.exists(u, has(u.max) || has(u.maxResources))"
        ).message("matchLabelKeys is only meaningful when some unit sets max or maxResources").field_path(".matchLabelKeys"),
        validation = Rule::new(
            "!has(self.ignorePreviousPod) || !self.ignorePreviousPod || self.units.exists(u, has(u.max) || has(u.maxResources))"
        ).message("ignorePreviousPod is only meaningful when some unit sets max or maxResources").field_path(".ignorePreviousPod"),
        validation = Rule::new(
            "!has(self.ignoreTerminatingPod) || self.ignoreTerminatingPod || self.units.exists(u, has(u.max) || has(u.maxResources))"
        ).message("ignoreTerminatingPod: false is only meaningful when some unit sets max or maxResources").field_path(".ignoreTerminatingPod"),
        validation = Rule::new(
            "self.units.all(a, !has(a.name) || self.units.exists_one(b, has(b.name) && b.name == a.name))"
        ).message("unit names must be unique").field_path(".units")
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcePolicySpec {
    /// Pods of the policy's namespace with these labels are governed; empty
    /// selects every pod of the namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "runtime", schemars(extend("maxProperties" = 64)))]
    pub selector: BTreeMap<String, String>,
    /// `prefer` (default): nodes outside every unit are used after all units;
    /// `required`: never.
    #[serde(default)]
    pub strategy: StrategySpec,
    /// Units in scale-out order; scale-in removes pods in reverse order.
    #[cfg_attr(feature = "runtime", schemars(length(max = 10)))]
    pub units: Vec<UnitSpec>,
    /// `AfterAllUnits` (default) or `BeforeNextUnit`.
    #[serde(default)]
    pub preempt_policy: PreemptPolicySpec,
    /// Do not count pods created before the policy toward caps.
    #[serde(default)]
    pub ignore_previous_pod: bool,
    /// Do not count terminating pods toward caps (default true).
    #[serde(default = "default_true")]
    pub ignore_terminating_pod: bool,
    /// Caps apply per group of these pod label values (e.g.
    /// `pod-template-hash`: per ReplicaSet revision). A pod lacking one is
    /// rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "runtime",
        schemars(length(max = 8), inner(length(min = 1, max = 317)))
    )]
    pub match_label_keys: Vec<String>,
    /// When a pod moves on to the next unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_try_next_units: Option<WhenTryNextUnits>,
    /// Spillway extension: what the controller does with a
    /// `controller.kubernetes.io/pod-deletion-cost` it did not write on a
    /// governed pod: `Keep` (default) or `Overwrite`; an Event says which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_deletion_cost: Option<ManualCostSpec>,
    /// Spillway extension, off unless present: move pods back to an
    /// earlier unit once it has had room for a while, one eviction at a
    /// time (the pods' controller creates the replacements, which Filter
    /// places in the earlier unit; PodDisruptionBudgets hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_back: Option<SpillBackSpec>,
    /// Spillway extension, off unless present: once every unit before the
    /// first `elastic` unit is `fillPercent` full, keep a placeholder pod
    /// of the newest replica's shape pending in the first elastic unit with
    /// room, so cluster-autoscaler starts a cloud node ahead of demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<HeadroomSpec>,
}

/// `spec.headroom`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(kube::KubeSchema))]
#[cfg_attr(
    feature = "runtime",
    x_kube(
        validation = Rule::new("self.fillPercent >= 1 && self.fillPercent <= 100")
            .message("fillPercent must be between 1 and 100").field_path(".fillPercent")
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeadroomSpec {
    /// How full (percent of GPUs allocated, or of pods against `max`) every
    /// data-center unit must be before a cloud node is asked for.
    pub fill_percent: i32,
}

/// `spec.spillBack`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(kube::KubeSchema))]
#[cfg_attr(
    feature = "runtime",
    x_kube(
        validation = Rule::new(
            "!has(self.settleTime) || self.settleTime.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')"
        ).message("settleTime must be a duration such as 5m, 90s or 1h30m").field_path(".settleTime"),
        validation = Rule::new(
            "!has(self.interval) || self.interval.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')"
        ).message("interval must be a duration such as 5m, 90s or 1h30m").field_path(".interval"),
        validation = Rule::new("!has(self.maxEvictions) || self.maxEvictions >= 1")
            .message("maxEvictions must be 1 or more").field_path(".maxEvictions")
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpillBackSpec {
    /// How long an earlier unit must have had room for one more pod, without
    /// a break, before a pod moves (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "runtime", schemars(length(max = 32)))]
    pub settle_time: Option<String>,
    /// Evictions per `interval` at most (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_evictions: Option<i32>,
    /// The window `maxEvictions` counts in (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "runtime", schemars(length(max = 32)))]
    pub interval: Option<String>,
}

impl SpillBackSpec {
    fn to_spill_back(&self, errors: &mut Vec<FieldError>) -> SpillBack {
        let mut duration = |text: &Option<String>, field: &str, default| match text {
            None => default,
            Some(t) => parse_duration(t).unwrap_or_else(|e| {
                errors.push(FieldError {
                    field: format!("spec.spillBack.{field}"),
                    message: e.to_string(),
                });
                default
            }),
        };
        let settle = duration(&self.settle_time, "settleTime", DEFAULT_SPILL_BACK_SETTLE);
        let interval = duration(&self.interval, "interval", DEFAULT_SPILL_BACK_INTERVAL);
        let max_evictions = match self.max_evictions {
            None => 1,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n >= 1)
                .unwrap_or_else(|| {
                    errors.push(FieldError {
                        field: "spec.spillBack.maxEvictions".into(),
                        message: format!("must be 1 or more, not {n}"),
                    });
                    1
                }),
        };
        SpillBack {
            settle,
            max_evictions,
            interval,
        }
    }
}

/// `spec.manualDeletionCost`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
pub enum ManualCostSpec {
    /// Keep a cost someone else set.
    #[default]
    Keep,
    /// Replace it with the policy's cost.
    Overwrite,
}

fn default_true() -> bool {
    true
}

/// `spec.strategy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum StrategySpec {
    /// Nodes outside every unit are used only after all units.
    #[default]
    Prefer,
    /// Nodes outside every unit are never used.
    Required,
}

/// `spec.preemptPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
pub enum PreemptPolicySpec {
    /// Preempt only once every unit has failed.
    #[default]
    AfterAllUnits,
    /// Try preemption in each unit before moving on.
    BeforeNextUnit,
}

/// `spec.units[].resource`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ResourceKindSpec {
    /// Regular nodes of a node pool.
    Ecs,
    /// Data-center nodes of a hybrid cluster.
    Idc,
    /// Elastic container instances (virtual nodes).
    Eci,
    /// Serverless container compute (virtual nodes).
    Acs,
    /// An elastic node pool grown by the cluster autoscaler.
    Elastic,
}

/// One unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(kube::KubeSchema))]
#[cfg_attr(
    feature = "runtime",
    x_kube(
        validation = Rule::new("!has(self.max) || self.max >= 0").message("max must be 0 or more").field_path(".max"),
        validation = Rule::new(
            "self.resource in ['eci', 'acs'] || (has(self.nodeSelector) && size(self.nodeSelector) > 0)"
        ).message("a unit needs a nodeSelector (only eci/acs units default to virtual-kubelet nodes)").field_path(".nodeSelector")
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnitSpec {
    /// Optional unit name for status and messages (default `<resource>-<index>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "runtime", schemars(length(min = 1, max = 63)))]
    pub name: Option<String>,
    /// `ecs`, `idc`, `eci`, `acs` or `elastic`.
    pub resource: ResourceKindSpec,
    /// Labels a node must carry to belong to this unit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "runtime", schemars(extend("maxProperties" = 32)))]
    pub node_selector: BTreeMap<String, String>,
    /// Cap on pods counted in this unit (per `matchLabelKeys` group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
    /// Cap on the summed requests of pods counted in this unit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "runtime", schemars(extend("maxProperties" = 16)))]
    pub max_resources: BTreeMap<String, QuantityValue>,
    /// Labels put on pods placed in this unit (patched on by the policy
    /// controller shortly after the bind).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "runtime", schemars(extend("maxProperties" = 32)))]
    pub pod_labels: BTreeMap<String, String>,
    /// Annotations put on pods placed in this unit (on the pod's Binding
    /// when Spillway binds it and the keys allow, else patched on by the
    /// policy controller).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "runtime", schemars(extend("maxProperties" = 32)))]
    pub pod_annotations: BTreeMap<String, String>,
}

/// `spec.whenTryNextUnits`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(kube::KubeSchema))]
#[cfg_attr(
    feature = "runtime",
    x_kube(
        validation = Rule::new(
            "!has(self.timeout) || self.policy in ['TimeoutOrExceedMax', 'Timeout']"
        ).message("timeout is only used with policy TimeoutOrExceedMax").field_path(".timeout"),
        validation = Rule::new(
            "!has(self.timeout) || self.timeout.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')"
        ).message("timeout must be a duration such as 15m, 90s or 1h30m").field_path(".timeout")
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WhenTryNextUnits {
    /// When a pod moves on (default `LackResourceOrExceedMax`).
    #[serde(default)]
    pub policy: NextUnitPolicySpec,
    /// How long to wait under `TimeoutOrExceedMax` (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "runtime", schemars(length(max = 32)))]
    pub timeout: Option<String>,
}

/// `spec.whenTryNextUnits.policy`, accepting the spellings seen in the wild.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextUnitPolicySpec {
    /// Next unit at the cap or without room (the default).
    #[default]
    LackResourceOrExceedMax,
    /// Next unit only at the cap (or when the unit has none).
    ExceedMax,
    /// Wait up to `timeout` for room, then move on. `Timeout` is accepted.
    #[serde(alias = "Timeout")]
    TimeoutOrExceedMax,
    /// Like the default, but not while pods of the unit are terminating.
    /// `LackResourceAndNoterminating` (Alibaba's published types) is accepted.
    #[serde(alias = "LackResourceAndNoterminating")]
    LackResourceAndNoTerminating,
}

impl NextUnitPolicySpec {
    /// Every spelling the API accepts, canonical ones first.
    pub const SPELLINGS: [&'static str; 6] = [
        "LackResourceOrExceedMax",
        "ExceedMax",
        "TimeoutOrExceedMax",
        "LackResourceAndNoTerminating",
        "Timeout",
        "LackResourceAndNoterminating",
    ];
}

#[cfg(feature = "runtime")]
impl schemars::JsonSchema for NextUnitPolicySpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NextUnitPolicy".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": Self::SPELLINGS,
            "default": "LackResourceOrExceedMax",
            "description": "When a pod moves on to the next unit."
        })
    }
}

/// A resource quantity as manifests write it: an integer (`4`) or a string
/// (`"4"`, `"64Gi"`). Kept as written; parsed by [`ResourcePolicySpec::to_policy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantityValue(pub String);

impl fmt::Display for QuantityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for QuantityValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for QuantityValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = QuantityValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as 4, \"4\" or \"64Gi\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<QuantityValue, E> {
                Ok(QuantityValue(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<QuantityValue, E> {
                Ok(QuantityValue(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<QuantityValue, E> {
                Ok(QuantityValue(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<QuantityValue, E> {
                Ok(QuantityValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(feature = "runtime")]
impl schemars::JsonSchema for QuantityValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$"
        })
    }
}

/// `status` of a ResourcePolicy, written by the policy controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResourcePolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Per-unit counts.
    #[serde(default)]
    pub units: Vec<UnitStatus>,
    /// The units' pods against their `max` at a glance, e.g.
    /// `local 4/4, cloud 6` (the `Pods` column of `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// `Ready` (the spec is valid and in force) and `Conflict` (another
    /// policy selects the same pods), in the usual Kubernetes shape.
    #[serde(default)]
    pub conditions: Vec<PolicyCondition>,
}

/// Counts for one unit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct UnitStatus {
    /// Unit name.
    pub name: String,
    /// Unit resource kind.
    pub resource: String,
    /// Pods counted in the unit (all groups).
    pub pods: i32,
    /// The unit's `max`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
    /// Summed requests of the counted pods, for the resources
    /// `maxResources` caps (quantities).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources_used: BTreeMap<String, String>,
    /// The unit's `maxResources`, if any (quantities).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_resources: BTreeMap<String, String>,
    /// Of `pods`, those assumed at Filter or Bind and not yet bound in the watch.
    #[serde(default)]
    pub reserved: i32,
    /// Governed pods waiting for room in this unit.
    #[serde(default)]
    pub pending: i32,
    /// When a pod last spilled past this unit (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_spill: Option<String>,
    /// Why it last spilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A status condition (`metav1.Condition` shape).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// Condition type (`Ready`, `Conflict`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason in CamelCase.
    pub reason: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl PolicyCondition {
    /// A condition as observed at `now`, keeping the transition time of the
    /// same condition in `previous` when its status did not change.
    #[must_use]
    pub fn observed(
        type_: &str,
        status: &str,
        reason: &str,
        message: String,
        previous: &[PolicyCondition],
        generation: Option<i64>,
        now: Time,
    ) -> Self {
        let since = previous
            .iter()
            .find(|c| c.type_ == type_)
            .filter(|c| c.status == status)
            .map_or_else(
                || crate::decision::time::format_rfc3339(now),
                |c| c.last_transition_time.clone(),
            );
        Self {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: since,
            observed_generation: generation,
        }
    }
}

/// Every field error found while converting a spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid ResourcePolicy {policy}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidPolicy {
    /// Which policy.
    pub policy: PolicyKey,
    /// Each problem, naming its field.
    pub errors: Vec<FieldError>,
}

impl ResourcePolicySpec {
    /// Converts and validates the spec of policy `namespace/name` created at
    /// `created` into the core's [`Policy`].
    ///
    /// # Errors
    /// [`InvalidPolicy`] listing every problem with its field path.
    pub fn to_policy(
        &self,
        namespace: &str,
        name: &str,
        created: Time,
    ) -> Result<Policy, InvalidPolicy> {
        let mut errors = Vec::new();
        let units: Vec<Unit> = self
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| u.to_unit(i, &mut errors))
            .collect();
        let when = self.when_try_next_units.clone().unwrap_or_default();
        let when_try_next_units = match when.policy {
            NextUnitPolicySpec::LackResourceOrExceedMax => NextUnitPolicy::LackResourceOrExceedMax,
            NextUnitPolicySpec::ExceedMax => NextUnitPolicy::ExceedMax,
            NextUnitPolicySpec::TimeoutOrExceedMax => NextUnitPolicy::TimeoutOrExceedMax,
            NextUnitPolicySpec::LackResourceAndNoTerminating => {
                NextUnitPolicy::LackResourceAndNoTerminating
            }
        };
        let timeout = match &when.timeout {
            None => DEFAULT_TIMEOUT,
            Some(text) => {
                if when_try_next_units != NextUnitPolicy::TimeoutOrExceedMax {
                    errors.push(FieldError {
                        field: "spec.whenTryNextUnits.timeout".into(),
                        message: "only used with policy TimeoutOrExceedMax".into(),
                    });
                }
                parse_duration(text).unwrap_or_else(|e| {
                    errors.push(FieldError {
                        field: "spec.whenTryNextUnits.timeout".into(),
                        message: e.to_string(),
                    });
                    DEFAULT_TIMEOUT
                })
            }
        };
        let has_elastic = units.iter().any(|u| u.resource == ResourceKind::Elastic);
        let policy = Policy {
            key: PolicyKey {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            created,
            selector: self.selector.clone(),
            strategy: match self.strategy {
                StrategySpec::Prefer => Strategy::Prefer,
                StrategySpec::Required => Strategy::Required,
            },
            units,
            preempt_policy: match self.preempt_policy {
                PreemptPolicySpec::AfterAllUnits => PreemptPolicy::AfterAllUnits,
                PreemptPolicySpec::BeforeNextUnit => PreemptPolicy::BeforeNextUnit,
            },
            ignore_previous_pod: self.ignore_previous_pod,
            ignore_terminating_pod: self.ignore_terminating_pod,
            match_label_keys: self.match_label_keys.clone(),
            manual_deletion_cost: match self.manual_deletion_cost.unwrap_or_default() {
                ManualCostSpec::Keep => ManualCost::Keep,
                ManualCostSpec::Overwrite => ManualCost::Overwrite,
            },
            when_try_next_units,
            timeout,
            spill_back: self
                .spill_back
                .as_ref()
                .map(|sb| sb.to_spill_back(&mut errors)),
            headroom: self.headroom.as_ref().map(|h| {
                if !has_elastic {
                    errors.push(FieldError {
                        field: "spec.headroom".into(),
                        message: "needs a unit with resource: elastic to ask for nodes in".into(),
                    });
                }
                let fill_percent = u32::try_from(h.fill_percent)
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .unwrap_or_else(|| {
                        errors.push(FieldError {
                            field: "spec.headroom.fillPercent".into(),
                            message: format!("must be between 1 and 100, not {}", h.fill_percent),
                        });
                        100
                    });
                Headroom { fill_percent }
            }),
        };
        errors.extend(policy.validate());
        if errors.is_empty() {
            Ok(policy)
        } else {
            Err(InvalidPolicy {
                policy: policy.key,
                errors,
            })
        }
    }
}

impl UnitSpec {
    fn to_unit(&self, index: usize, errors: &mut Vec<FieldError>) -> Unit {
        let resource = match self.resource {
            ResourceKindSpec::Ecs => ResourceKind::Ecs,
            ResourceKindSpec::Idc => ResourceKind::Idc,
            ResourceKindSpec::Eci => ResourceKind::Eci,
            ResourceKindSpec::Acs => ResourceKind::Acs,
            ResourceKindSpec::Elastic => ResourceKind::Elastic,
        };
        let max = self.max.and_then(|m| {
            u32::try_from(m)
                .map_err(|_| {
                    errors.push(FieldError {
                        field: format!("spec.units[{index}].max"),
                        message: format!("must be 0 or more, got {m}"),
                    });
                })
                .ok()
        });
        let mut max_resources = Resources::new();
        for (res, q) in &self.max_resources {
            match parse_quantity(&q.0) {
                Ok(v) => max_resources.set(res, v),
                Err(e) => errors.push(FieldError {
                    field: format!("spec.units[{index}].maxResources[{res}]"),
                    message: e.to_string(),
                }),
            }
        }
        if let Some(name) = &self.name
            && name.is_empty()
        {
            errors.push(FieldError {
                field: format!("spec.units[{index}].name"),
                message: "must not be empty".into(),
            });
        }
        Unit {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-{index}", resource.as_str())),
            resource,
            node_selector: self.node_selector.clone(),
            max,
            max_resources,
            pod_labels: self.pod_labels.clone(),
            pod_annotations: self.pod_annotations.clone(),
        }
    }
}

/// The parts of `metadata` Spillway reads from a manifest file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestMeta {
    /// `metadata.name`.
    #[serde(default)]
    pub name: String,
    /// `metadata.namespace` (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.creationTimestamp` (RFC 3339), absent in hand-written files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// A ResourcePolicy as a file holds it, in either API group. Used where no
/// API server is involved (`spillway explain`, the simulator).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePolicyManifest {
    /// `scheduling.spillway.io/v1alpha1` or `scheduling.alibabacloud.com/v1alpha1`.
    pub api_version: String,
    /// Must be `ResourcePolicy`.
    pub kind: String,
    /// Name, namespace, creation time.
    #[serde(default)]
    pub metadata: ManifestMeta,
    /// The spec.
    pub spec: ResourcePolicySpec,
}

impl ResourcePolicyManifest {
    /// Checks `apiVersion`/`kind` and converts into the core's [`Policy`].
    /// A missing creation time (a hand-written file) is taken as the epoch,
    /// i.e. older than every pod.
    ///
    /// # Errors
    /// [`InvalidPolicy`] naming each bad field.
    pub fn to_policy(&self) -> Result<Policy, InvalidPolicy> {
        let namespace = self.metadata.namespace.as_deref().unwrap_or("default");
        let key = || PolicyKey {
            namespace: namespace.to_owned(),
            name: self.metadata.name.clone(),
        };
        let mut errors = Vec::new();
        let accepted = [
            format!("{GROUP}/{VERSION}"),
            format!("{COMPAT_GROUP}/{VERSION}"),
        ];
        if !accepted.contains(&self.api_version) {
            errors.push(FieldError {
                field: "apiVersion".into(),
                message: format!(
                    "expected {} or {}, got {:?}",
                    accepted[0], accepted[1], self.api_version
                ),
            });
        }
        if self.kind != KIND {
            errors.push(FieldError {
                field: "kind".into(),
                message: format!("expected {KIND}, got {:?}", self.kind),
            });
        }
        if self.metadata.name.is_empty() {
            errors.push(FieldError {
                field: "metadata.name".into(),
                message: "required".into(),
            });
        }
        let created = match &self.metadata.creation_timestamp {
            None => Time::default(),
            Some(ts) => parse_rfc3339(ts).unwrap_or_else(|e| {
                errors.push(FieldError {
                    field: "metadata.creationTimestamp".into(),
                    message: e.to_string(),
                });
                Time::default()
            }),
        };
        match self.spec.to_policy(namespace, &self.metadata.name, created) {
            Ok(p) if errors.is_empty() => Ok(p),
            Ok(_) => Err(InvalidPolicy {
                policy: key(),
                errors,
            }),
            Err(mut e) => {
                errors.append(&mut e.errors);
                Err(InvalidPolicy {
                    policy: key(),
                    errors,
                })
            }
        }
    }
}

/// The oldest Kubernetes release Spillway supports: CEL validation rules on
/// CRDs are on by default from 1.25.
pub const MIN_KUBE_VERSION: (u32, u32) = (1, 25);
/// The release whose API server first accepts `fieldPath` on a CEL rule;
/// older ones reject the whole CRD (strict decoding).
pub const FIELD_PATH_SINCE: (u32, u32) = (1, 28);

/// Parses a Kubernetes version such as `1.28`, `v1.30.2` or `1.31.0-eks`.
///
/// # Errors
/// Not a version, or older than [`MIN_KUBE_VERSION`].
pub fn parse_kube_version(text: &str) -> Result<(u32, u32), String> {
    let t = text.trim().trim_start_matches('v');
    let mut parts = t.split(['.', '-', '+']);
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    let (Some(major), Some(minor)) = (major, minor) else {
        return Err(format!(
            "{text:?} is not a Kubernetes version (expected e.g. 1.28)"
        ));
    };
    if (major, minor) < MIN_KUBE_VERSION {
        return Err(format!(
            "Kubernetes {major}.{minor} is not supported: Spillway's CRDs need CEL validation rules, on by default from {}.{}",
            MIN_KUBE_VERSION.0, MIN_KUBE_VERSION.1
        ));
    }
    Ok((major, minor))
}

/// Removes `fieldPath` from every CEL rule of `schema` (a JSON schema, walked
/// whole): the rule's message still names the field.
#[cfg(feature = "runtime")]
fn strip_field_paths(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(rules)) = map.get_mut("x-kubernetes-validations") {
                for rule in rules {
                    if let Some(r) = rule.as_object_mut() {
                        r.remove("fieldPath");
                    }
                }
            }
            for v in map.values_mut() {
                strip_field_paths(v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_field_paths),
        _ => {}
    }
}

/// The CRDs Spillway ships, for the oldest supported release
/// ([`MIN_KUBE_VERSION`]): the ResourcePolicy of its own group, the same
/// schema under the ACK compat group, and the GpuAutoscaler.
#[cfg(feature = "runtime")]
#[must_use]
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    crds_for(MIN_KUBE_VERSION)
}

/// The CRDs for API servers of release `kube` and later: CEL rules carry
/// `fieldPath` (errors point at the field) from [`FIELD_PATH_SINCE`] on.
#[cfg(feature = "runtime")]
#[must_use]
pub fn crds_for(
    kube: (u32, u32),
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    let mut own = ResourcePolicy::crd();
    let mut scaler = gpu_autoscaler::GpuAutoscaler::crd();
    if kube < FIELD_PATH_SINCE {
        for crd in [&mut own, &mut scaler] {
            for v in &mut crd.spec.versions {
                if let Some(s) = v
                    .schema
                    .as_mut()
                    .and_then(|s| s.open_api_v3_schema.as_mut())
                {
                    let mut json = serde_json::to_value(&*s).unwrap_or_default();
                    strip_field_paths(&mut json);
                    if let Ok(stripped) = serde_json::from_value(json) {
                        *s = stripped;
                    }
                }
            }
        }
    }
    let mut compat = own.clone();
    COMPAT_GROUP.clone_into(&mut compat.spec.group);
    compat.metadata.name = Some(format!("{}.{COMPAT_GROUP}", compat.spec.names.plural));
    // Short names must not clash with the spillway group's when both are installed.
    compat.spec.names.short_names = None;
    vec![own, compat, scaler]
}

/// Where `spillway crd --output-dir DIR` writes each CRD, relative to `DIR`,
/// with its YAML.
#[cfg(feature = "runtime")]
#[must_use]
pub fn crd_files() -> Vec<(&'static str, String)> {
    crd_files_for(MIN_KUBE_VERSION)
}

/// [`crd_files`] for API servers of release `kube` and later.
#[cfg(feature = "runtime")]
#[must_use]
pub fn crd_files_for(kube: (u32, u32)) -> Vec<(&'static str, String)> {
    let mut docs = crds_for(kube).into_iter().map(|crd| {
        let body = serde_saphyr::to_string(&crd)
            .unwrap_or_else(|e| format!("# serialization failed: {e}\n"));
        format!("# Generated from the Rust types by `spillway crd`; do not edit.\n{body}")
    });
    let own = docs.next().unwrap_or_default();
    let compat = docs.next().unwrap_or_default();
    let scaler = docs.next().unwrap_or_default();
    vec![
        ("resourcepolicy.yaml", own),
        ("compat/resourcepolicy.yaml", compat),
        ("gpuautoscaler.yaml", scaler),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::quantity::GPU;

    #[test]
    fn kube_versions_parse_and_the_oldest_supported_is_enforced() {
        for (text, want) in [
            ("1.25", Ok((1, 25))),
            ("v1.30.2", Ok((1, 30))),
            ("1.31.0-eks-1234", Ok((1, 31))),
            ("1.28+", Ok((1, 28))),
        ] {
            assert_eq!(parse_kube_version(text), want, "{text}");
        }
        assert!(
            parse_kube_version("1.24")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            parse_kube_version("latest")
                .unwrap_err()
                .contains("not a Kubernetes version")
        );
    }

    #[cfg(feature = "runtime")]
    #[test]
    fn field_paths_only_for_api_servers_that_accept_them_and_messages_name_the_field() {
        let yaml = |v| {
            crd_files_for(v)
                .into_iter()
                .map(|(_, y)| y)
                .collect::<String>()
        };
        let old = yaml(MIN_KUBE_VERSION);
        assert!(!old.contains("fieldPath"), "1.25 rejects fieldPath");
        assert!(old.contains("settleTime must be a duration"));
        assert!(old.contains("max must be 0 or more"));
        let new = yaml(FIELD_PATH_SINCE);
        assert_eq!(
            new.matches("fieldPath: .settleTime").count(),
            2,
            "both groups"
        );
        // Only fieldPath differs.
        let without: String = new
            .lines()
            .filter(|l| {
                !l.trim_start().starts_with("fieldPath:")
                    && !l.trim_start().starts_with("- fieldPath:")
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            without.matches("message:").count(),
            old.matches("message:").count()
        );
        assert_eq!(crd_files(), crd_files_for(MIN_KUBE_VERSION));
    }

    #[cfg(feature = "runtime")]
    const SEED: &str = include_str!("../tests/fixtures/resourcepolicy-qwen-chat.yaml");

    fn spec_json(v: serde_json::Value) -> Result<ResourcePolicySpec, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[cfg(feature = "runtime")]
    #[test]
    fn seed_manifest_decodes_with_ack_defaults() {
        let m: ResourcePolicyManifest = serde_saphyr::from_str(SEED).unwrap();
        let p = m.to_policy().unwrap();
        assert_eq!(p.key.to_string(), "default/qwen-chat");
        assert_eq!(p.units.len(), 2);
        assert_eq!(p.units[0].name, "ecs-0");
        assert_eq!(p.units[1].resource, ResourceKind::Elastic);
        assert_eq!(p.strategy, Strategy::Prefer);
        assert_eq!(p.preempt_policy, PreemptPolicy::AfterAllUnits);
        assert!(p.ignore_terminating_pod && !p.ignore_previous_pod);
        assert_eq!(
            p.when_try_next_units,
            NextUnitPolicy::LackResourceOrExceedMax
        );
        assert_eq!(p.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn alternate_spellings_decode_to_the_same_policy() {
        for (spelling, want) in [
            (
                "LackResourceAndNoterminating",
                NextUnitPolicy::LackResourceAndNoTerminating,
            ),
            (
                "LackResourceAndNoTerminating",
                NextUnitPolicy::LackResourceAndNoTerminating,
            ),
            ("Timeout", NextUnitPolicy::TimeoutOrExceedMax),
            ("TimeoutOrExceedMax", NextUnitPolicy::TimeoutOrExceedMax),
            ("ExceedMax", NextUnitPolicy::ExceedMax),
        ] {
            let s = spec_json(serde_json::json!({
                "units": [{"resource": "idc", "nodeSelector": {"pool": "dc"}, "max": 2}],
                "whenTryNextUnits": {"policy": spelling}
            }))
            .unwrap();
            assert_eq!(
                s.to_policy("ns", "p", Time::default())
                    .unwrap()
                    .when_try_next_units,
                want
            );
        }
    }

    #[test]
    fn quantities_accept_numbers_and_strings() {
        let s = spec_json(serde_json::json!({
            "units": [{"resource": "ecs", "nodeSelector": {"pool": "dc"}, "maxResources": {"nvidia.com/gpu": 4, "memory": "64Gi"}}]
        }))
        .unwrap();
        let p = s.to_policy("ns", "p", Time::default()).unwrap();
        assert_eq!(p.units[0].max_resources.get(GPU), 4000);
        assert_eq!(
            p.units[0].max_resources.get("memory"),
            64 * (1 << 30) * 1000
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let s = spec_json(serde_json::json!({
            "units": [
                {"resource": "ecs", "nodeSelector": {"pool": "dc"}, "max": -1, "maxResources": {"nvidia.com/gpu": "four"}},
                {"resource": "elastic", "name": ""}
            ],
            "whenTryNextUnits": {"policy": "ExceedMax", "timeout": "soon"}
        }))
        .unwrap();
        let err = s.to_policy("ns", "p", Time::default()).unwrap_err();
        let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.units[0].max",
                "spec.units[0].maxResources[nvidia.com/gpu]",
                "spec.units[1].name",
                "spec.whenTryNextUnits.timeout",
                "spec.whenTryNextUnits.timeout",
                "spec.units[1].nodeSelector",
            ]
        );
        assert!(
            err.to_string()
                .starts_with("invalid ResourcePolicy ns/p: spec.units[0].max: must be 0 or more")
        );
    }

    #[test]
    fn unknown_fields_and_values_are_rejected_with_their_name() {
        let e = spec_json(serde_json::json!({"units": [], "stratgy": "prefer"})).unwrap_err();
        assert!(e.to_string().contains("stratgy"), "{e}");
        let e = spec_json(serde_json::json!({"units": [{"resource": "gpu"}]})).unwrap_err();
        assert!(e.to_string().contains("gpu"), "{e}");
    }

    #[test]
    fn manifest_checks_group_kind_and_name() {
        let m: ResourcePolicyManifest = serde_json::from_value(serde_json::json!({
            "apiVersion": "scheduling.example.com/v1", "kind": "Policy", "metadata": {},
            "spec": {"units": [{"resource": "ecs", "nodeSelector": {"a": "b"}}]}
        }))
        .unwrap();
        let fields: Vec<String> = m
            .to_policy()
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["apiVersion", "kind", "metadata.name"]);
    }
}
