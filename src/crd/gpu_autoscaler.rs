//! The GpuAutoscaler API (`scheduling.spillway.io/v1alpha1`): an HPA that
//! reads Prometheus directly, and its conversion into the core's
//! [`ScalerSpec`].
//!
//! ```text
//!  GpuAutoscaler manifest ─serde─► GpuAutoscalerSpec ─to_scaler()─► decision::scaler::ScalerSpec
//!  autoscaling/v2 HPA manifest ─serde─► HorizontalPodAutoscalerSpec ─from_hpa()─► GpuAutoscalerSpec (+ what did not carry over)
//! ```
//!
//! The bounds and `behavior` are the HPA's, field for field. Metrics name
//! what to read instead of a metrics-adapter rule: a per-pod series (a DCGM
//! GPU metric or any exporter's), vLLM/NIM queue depth or KV-cache use, a
//! PromQL expression, or a latency quantile against an objective. As with
//! ResourcePolicy, CEL rules reject what a schema can check and
//! [`GpuAutoscalerSpec::to_scaler`] checks everything again with field paths
//! (for files given to the simulator, and for the status of objects that
//! got past an older API server).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{PolicyCondition, QuantityValue};
use crate::decision::hpa::{
    Behavior, DEFAULT_SCALE_DOWN_BELOW, DEFAULT_TOLERANCE, HpaSpec, PolicyKind, ScalingPolicy,
    ScalingRules, SelectPolicy, Target,
};
use crate::decision::policy::FieldError;
use crate::decision::quantity::parse_quantity;
use crate::decision::scaler::{
    MetricSource, ScalerMetric, ScalerSpec, VLLM_KV_CACHE, VLLM_QUEUE_DEPTH, VLLM_TTFT,
};
use crate::decision::time::parse_duration;

/// The kind.
pub const KIND: &str = "GpuAutoscaler";
/// The default Prometheus query timeout.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The default latency `rate()` window.
pub const DEFAULT_LATENCY_WINDOW: Duration = Duration::from_secs(120);

/// `spec` of a GpuAutoscaler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(kube::CustomResource, kube::KubeSchema))]
#[cfg_attr(
    feature = "runtime",
    kube(
        group = "scheduling.spillway.io",
        version = "v1alpha1",
        kind = "GpuAutoscaler",
        plural = "gpuautoscalers",
        doc = "Scales a /scale target on GPU and serving metrics read from Prometheus, with the HorizontalPodAutoscaler's algorithm and behavior.",
        namespaced,
        status = "GpuAutoscalerStatus",
        shortname = "gpuas",
        category = "spillway",
        printcolumn = r#"{"name": "Reference", "type": "string", "jsonPath": ".spec.scaleTargetRef.name"}"#,
        printcolumn = r#"{"name": "Targets", "type": "string", "jsonPath": ".status.targets"}"#,
        printcolumn = r#"{"name": "MinPods", "type": "integer", "jsonPath": ".spec.minReplicas"}"#,
        printcolumn = r#"{"name": "MaxPods", "type": "integer", "jsonPath": ".spec.maxReplicas"}"#,
        printcolumn = r#"{"name": "Replicas", "type": "integer", "jsonPath": ".status.currentReplicas"}"#,
        printcolumn = r#"{"name": "Active", "type": "string", "priority": 1, "jsonPath": ".status.conditions[?(@.type==\"ScalingActive\")].status"}"#,
        printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
    )
)]
#[cfg_attr(
    feature = "runtime",
    x_kube(
        validation = Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas")
            .message("maxReplicas must be at least minReplicas").field_path(".maxReplicas"),
        validation = Rule::new("size(self.metrics) > 0").message("at least one metric is required").field_path(".metrics")
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuAutoscalerSpec {
    /// The object to scale: anything with a `/scale` subresource
    /// (Deployment, StatefulSet, a KServe predictor, a custom resource).
    pub scale_target_ref: ScaleTargetRef,
    /// Lower bound (default 1; 0 scales to zero and back, as
    /// HPAScaleToZero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "runtime", schemars(range(min = 0)))]
    pub min_replicas: Option<i32>,
    /// Upper bound.
    #[cfg_attr(feature = "runtime", schemars(range(min = 1)))]
    pub max_replicas: i32,
    /// What to scale on; the metric asking for the most replicas wins.
    #[cfg_attr(feature = "runtime", schemars(length(max = 10)))]
    pub metrics: Vec<MetricSpec>,
    /// Stabilization windows and rate limits (the HPA's fields and defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<BehaviorSpec>,
    /// How far a metric may stray from its target without scaling (default
    /// 0.1, the kube-controller-manager's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<QuantityValue>,
    /// Where the metrics are read.
    pub prometheus: PrometheusSpec,
}

/// `spec.scaleTargetRef` (the HPA's `CrossVersionObjectReference`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleTargetRef {
    /// API version of the target, e.g. `apps/v1`.
    #[serde(default)]
    pub api_version: String,
    /// Kind of the target, e.g. `Deployment`.
    #[cfg_attr(feature = "runtime", schemars(length(min = 1)))]
    pub kind: String,
    /// Name of the target, in the autoscaler's namespace.
    #[cfg_attr(feature = "runtime", schemars(length(min = 1)))]
    pub name: String,
}

/// One entry of `spec.metrics`: `type` names the one section that is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(kube::KubeSchema))]
#[cfg_attr(
    feature = "runtime",
    x_kube(
        validation = Rule::new("self.type != 'GPU' || has(self.gpu)").message("type GPU needs a gpu section"),
        validation = Rule::new("self.type != 'Pods' || has(self.pods)").message("type Pods needs a pods section"),
        validation = Rule::new("self.type != 'QueueDepth' || has(self.queueDepth)").message("type QueueDepth needs a queueDepth section"),
        validation = Rule::new("self.type != 'KVCache' || has(self.kvCache)").message("type KVCache needs a kvCache section"),
        validation = Rule::new("self.type != 'Query' || has(self.query)").message("type Query needs a query section"),
        validation = Rule::new("self.type != 'Latency' || has(self.latency)").message("type Latency needs a latency section"),
        validation = Rule::new(
            "[has(self.gpu), has(self.pods), has(self.queueDepth), has(self.kvCache), has(self.query), has(self.latency)].filter(x, x).size() == 1"
        ).message("exactly one of gpu, pods, queueDepth, kvCache, query or latency must be set, matching type")
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSpec {
    /// `GPU`, `Pods`, `QueueDepth`, `KVCache`, `Query` or `Latency`.
    #[serde(rename = "type")]
    pub type_: MetricType,
    /// A per-GPU series (any name: `DCGM_FI_DEV_GPU_UTIL`, the ACK
    /// exporter's `DCGM_CUSTOM_PROCESS_SM_UTIL`, …), averaged over each
    /// pod's GPUs, then over the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<SeriesMetric>,
    /// Any per-pod series, averaged over the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<SeriesMetric>,
    /// Requests waiting per pod (`vllm:num_requests_waiting`; NIM:
    /// `num_requests_waiting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<ServingMetric>,
    /// KV-cache use per pod, 0..1 (`vllm:kv_cache_usage_perc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache: Option<ServingMetric>,
    /// A PromQL expression returning one number for the whole target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<QueryMetric>,
    /// A latency quantile over the target's pods against an objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyMetric>,
}

/// `metrics[].type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
pub enum MetricType {
    /// A per-GPU series.
    #[serde(rename = "GPU")]
    #[default]
    Gpu,
    /// A per-pod series.
    Pods,
    /// vLLM/NIM queue depth.
    QueueDepth,
    /// vLLM KV-cache use.
    #[serde(rename = "KVCache")]
    KvCache,
    /// A PromQL expression.
    Query,
    /// A latency objective.
    Latency,
}

impl MetricType {
    /// The name as manifests write it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gpu => "GPU",
            Self::Pods => "Pods",
            Self::QueueDepth => "QueueDepth",
            Self::KvCache => "KVCache",
            Self::Query => "Query",
            Self::Latency => "Latency",
        }
    }
}

/// `gpu` / `pods`: a series by name and its per-pod average target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeriesMetric {
    /// The series name.
    #[cfg_attr(feature = "runtime", schemars(length(min = 1, max = 256)))]
    pub metric: String,
    /// The average per pod to hold (e.g. 50 for 50 % utilisation).
    pub average_value: QuantityValue,
}

/// `queueDepth` / `kvCache`: the series defaults to vLLM's name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServingMetric {
    /// The series name (default vLLM's; NIM and others drop the `vllm:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "runtime", schemars(length(min = 1, max = 256)))]
    pub metric: Option<String>,
    /// The average per pod to hold.
    pub average_value: QuantityValue,
}

/// `query`: a PromQL expression and its target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(kube::KubeSchema))]
#[cfg_attr(
    feature = "runtime",
    x_kube(
        validation = Rule::new("has(self.value) != has(self.averageValue)")
            .message("set exactly one of value (the total to hold) or averageValue (per replica)")
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryMetric {
    /// The expression; it must return one number (wrap it in `sum()`).
    #[cfg_attr(feature = "runtime", schemars(length(min = 1, max = 4096)))]
    pub promql: String,
    /// Hold the value at this, scaling replicas in proportion (the HPA's
    /// `Value` target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<QuantityValue>,
    /// Hold value ÷ replicas at this (the HPA's `AverageValue` target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<QuantityValue>,
}

/// `latency`: a histogram quantile against an objective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LatencyMetric {
    /// The histogram, in seconds (default `vllm:time_to_first_token_seconds`;
    /// also `vllm:inter_token_latency_seconds`, `vllm:e2e_request_latency_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "runtime", schemars(length(min = 1, max = 256)))]
    pub histogram: Option<String>,
    /// The quantile (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<QuantityValue>,
    /// The objective, e.g. `500ms` or `2s`.
    #[cfg_attr(feature = "runtime", schemars(length(min = 1, max = 32)))]
    pub objective: String,
    /// The `rate()` window (default `2m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "runtime", schemars(length(max = 32)))]
    pub window: Option<String>,
    /// Scale down only while latency is below this fraction of the
    /// objective (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_below: Option<QuantityValue>,
}

/// `spec.behavior` (the HPA's `HorizontalPodAutoscalerBehavior`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BehaviorSpec {
    /// Rules for adding replicas (default: no window, +100 % or +4 pods per 15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<RulesSpec>,
    /// Rules for removing replicas (default: 300 s window, −100 % per 15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<RulesSpec>,
}

/// `scaleUp` / `scaleDown` (`HPAScalingRules`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RulesSpec {
    /// Seconds of past recommendations considered (0..=3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "runtime", schemars(range(min = 0, max = 3600)))]
    pub stabilization_window_seconds: Option<i32>,
    /// `Max` (default), `Min` or `Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<SelectPolicySpec>,
    /// Rate limits (the direction's defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "runtime", schemars(length(min = 1, max = 10)))]
    pub policies: Option<Vec<PolicySpec>>,
}

/// `selectPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
pub enum SelectPolicySpec {
    /// The policy allowing the most change.
    Max,
    /// The policy allowing the least change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One rate limit (`HPAScalingPolicy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub type_: PolicyTypeSpec,
    /// Pods or percent per period (> 0).
    #[cfg_attr(feature = "runtime", schemars(range(min = 1)))]
    pub value: i32,
    /// The period, 1..=1800 seconds.
    #[cfg_attr(feature = "runtime", schemars(range(min = 1, max = 1800)))]
    pub period_seconds: i32,
}

/// `policies[].type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
pub enum PolicyTypeSpec {
    /// Replicas per period.
    Pods,
    /// Percent of the replicas at the period's start.
    Percent,
}

/// `spec.prometheus`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(kube::KubeSchema))]
#[cfg_attr(
    feature = "runtime",
    x_kube(
        validation = Rule::new("self.url.startsWith('http://') || self.url.startsWith('https://')")
            .message("url must start with http:// or https://").field_path(".url")
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusSpec {
    /// Base URL of the Prometheus HTTP API, e.g.
    /// `http://prometheus-operated.monitoring:9090` (a path prefix is kept).
    #[cfg_attr(feature = "runtime", schemars(length(min = 8, max = 2048)))]
    pub url: String,
    /// PEM CA bundle to verify an `https` URL with (default: the system's
    /// trust store in Spillway's image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// A Secret key in the autoscaler's namespace holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret: Option<SecretKeyRef>,
    /// Time limit of one query (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "runtime", schemars(length(max = 32)))]
    pub timeout: Option<String>,
}

/// A key of a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[cfg_attr(feature = "runtime", schemars(length(min = 1)))]
    pub name: String,
    /// The key (default `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `status` of a GpuAutoscaler, written by the scaler.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct GpuAutoscalerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The target's replicas when last read.
    #[serde(default)]
    pub current_replicas: i32,
    /// The replicas last decided.
    #[serde(default)]
    pub desired_replicas: i32,
    /// When the scaler last changed the target's replicas (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Each metric's current value against its target, e.g.
    /// `7/10 (queueDepth), 41/50 (gpu)` (the `Targets` column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<String>,
    /// Per metric: value, target, proposal.
    #[serde(default)]
    pub current_metrics: Vec<MetricStatus>,
    /// `AbleToScale`, `ScalingActive`, `ScalingLimited`, as the HPA's.
    #[serde(default)]
    pub conditions: Vec<PolicyCondition>,
}

/// One metric's reading in the status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "runtime", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// The metric's name.
    pub name: String,
    /// Its current value (per-pod average, total, or latency in seconds);
    /// absent when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Its target.
    pub target: String,
    /// Replicas it proposed; absent when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_replicas: Option<i32>,
    /// How the proposal came about, or why the metric is invalid.
    #[serde(default)]
    pub reason: String,
}

fn number(q: &QuantityValue, field: &str, errors: &mut Vec<FieldError>) -> Option<f64> {
    match parse_quantity(&q.0) {
        Ok(milli) => {
            // Metric targets are far below 2^52 milli-units.
            #[allow(clippy::cast_precision_loss)]
            let v = milli as f64 / 1000.0;
            Some(v)
        }
        Err(e) => {
            errors.push(FieldError {
                field: field.to_owned(),
                message: e.to_string(),
            });
            None
        }
    }
}

fn positive(q: &QuantityValue, field: &str, errors: &mut Vec<FieldError>) -> Option<f64> {
    let v = number(q, field, errors)?;
    if v > 0.0 {
        Some(v)
    } else {
        errors.push(FieldError {
            field: field.to_owned(),
            message: format!("must be positive, not {q}"),
        });
        None
    }
}

fn duration_field(
    text: Option<&String>,
    field: &str,
    default: Duration,
    errors: &mut Vec<FieldError>,
) -> Duration {
    match text {
        None => default,
        Some(t) => match parse_duration(t) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                errors.push(FieldError {
                    field: field.to_owned(),
                    message: "must be longer than 0".to_owned(),
                });
                default
            }
            Err(e) => {
                errors.push(FieldError {
                    field: field.to_owned(),
                    message: e.to_string(),
                });
                default
            }
        },
    }
}

impl RulesSpec {
    fn to_rules(
        &self,
        default: ScalingRules,
        field: &str,
        errors: &mut Vec<FieldError>,
    ) -> ScalingRules {
        let mut out = default;
        if let Some(w) = self.stabilization_window_seconds {
            match u64::try_from(w) {
                Ok(w) if w <= 3600 => out.stabilization_window = Duration::from_secs(w),
                _ => errors.push(FieldError {
                    field: format!("{field}.stabilizationWindowSeconds"),
                    message: format!("must be 0..=3600, not {w}"),
                }),
            }
        }
        if let Some(sel) = self.select_policy {
            out.select = match sel {
                SelectPolicySpec::Max => SelectPolicy::Max,
                SelectPolicySpec::Min => SelectPolicy::Min,
                SelectPolicySpec::Disabled => SelectPolicy::Disabled,
            };
        }
        if let Some(ps) = &self.policies {
            if ps.is_empty() {
                errors.push(FieldError {
                    field: format!("{field}.policies"),
                    message: "at least one policy is required when policies is set".to_owned(),
                });
            }
            out.policies = ps
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    let value = u32::try_from(p.value).ok().filter(|v| *v > 0);
                    let period = u64::try_from(p.period_seconds)
                        .ok()
                        .filter(|s| (1..=1800).contains(s));
                    if value.is_none() {
                        errors.push(FieldError {
                            field: format!("{field}.policies[{i}].value"),
                            message: format!("must be positive, not {}", p.value),
                        });
                    }
                    if period.is_none() {
                        errors.push(FieldError {
                            field: format!("{field}.policies[{i}].periodSeconds"),
                            message: format!("must be 1..=1800, not {}", p.period_seconds),
                        });
                    }
                    Some(ScalingPolicy {
                        kind: match p.type_ {
                            PolicyTypeSpec::Pods => PolicyKind::Pods,
                            PolicyTypeSpec::Percent => PolicyKind::Percent,
                        },
                        value: value?,
                        period: Duration::from_secs(period?),
                    })
                })
                .collect();
        }
        out
    }
}

impl MetricSpec {
    /// The metric's short name in status and Events.
    #[must_use]
    pub fn display_name(&self) -> String {
        match self.type_ {
            MetricType::Gpu => format!("gpu {}", self.gpu.as_ref().map_or("", |m| &m.metric)),
            MetricType::Pods => format!("pods {}", self.pods.as_ref().map_or("", |m| &m.metric)),
            MetricType::QueueDepth => "queueDepth".to_owned(),
            MetricType::KvCache => "kvCache".to_owned(),
            MetricType::Query => "query".to_owned(),
            MetricType::Latency => "latency".to_owned(),
        }
    }

    // One arm per type reads as the table in the module docs.
    #[allow(clippy::single_match_else)]
    fn to_metric(&self, field: &str, errors: &mut Vec<FieldError>) -> Option<ScalerMetric> {
        let set = [
            self.gpu.is_some(),
            self.pods.is_some(),
            self.queue_depth.is_some(),
            self.kv_cache.is_some(),
            self.query.is_some(),
            self.latency.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if set != 1 {
            errors.push(FieldError {
                field: field.to_owned(),
                message: format!(
                    "exactly one of gpu, pods, queueDepth, kvCache, query or latency must be set, matching type ({set} are)"
                ),
            });
            return None;
        }
        let missing = |section: &str, errors: &mut Vec<FieldError>| {
            errors.push(FieldError {
                field: format!("{field}.{section}"),
                message: format!("type {} needs a {section} section", self.type_.as_str()),
            });
        };
        let name = self.display_name();
        let series = |m: &SeriesMetric, section: &str, errors: &mut Vec<FieldError>| {
            if m.metric.trim().is_empty() {
                errors.push(FieldError {
                    field: format!("{field}.{section}.metric"),
                    message: "must name a series".to_owned(),
                });
            }
            let t = positive(
                &m.average_value,
                &format!("{field}.{section}.averageValue"),
                errors,
            )?;
            Some((
                MetricSource::PerPod {
                    series: m.metric.clone(),
                },
                Target::AverageValue(t),
            ))
        };
        let serving =
            |m: &ServingMetric, default: &str, section: &str, errors: &mut Vec<FieldError>| {
                let t = positive(
                    &m.average_value,
                    &format!("{field}.{section}.averageValue"),
                    errors,
                )?;
                Some((
                    MetricSource::PerPod {
                        series: m.metric.clone().unwrap_or_else(|| default.to_owned()),
                    },
                    Target::AverageValue(t),
                ))
            };
        let (source, target) = match self.type_ {
            MetricType::Gpu => match &self.gpu {
                Some(m) => series(m, "gpu", errors)?,
                None => {
                    missing("gpu", errors);
                    return None;
                }
            },
            MetricType::Pods => match &self.pods {
                Some(m) => series(m, "pods", errors)?,
                None => {
                    missing("pods", errors);
                    return None;
                }
            },
            MetricType::QueueDepth => match &self.queue_depth {
                Some(m) => serving(m, VLLM_QUEUE_DEPTH, "queueDepth", errors)?,
                None => {
                    missing("queueDepth", errors);
                    return None;
                }
            },
            MetricType::KvCache => match &self.kv_cache {
                Some(m) => serving(m, VLLM_KV_CACHE, "kvCache", errors)?,
                None => {
                    missing("kvCache", errors);
                    return None;
                }
            },
            MetricType::Query => match &self.query {
                Some(q) => {
                    if q.promql.trim().is_empty() {
                        errors.push(FieldError {
                            field: format!("{field}.query.promql"),
                            message: "must be a PromQL expression".to_owned(),
                        });
                    }
                    let target = match (&q.value, &q.average_value) {
                        (Some(v), None) => {
                            Target::Value(positive(v, &format!("{field}.query.value"), errors)?)
                        }
                        (None, Some(v)) => Target::AverageValue(positive(
                            v,
                            &format!("{field}.query.averageValue"),
                            errors,
                        )?),
                        _ => {
                            errors.push(FieldError {
                                field: format!("{field}.query"),
                                message: "set exactly one of value or averageValue".to_owned(),
                            });
                            return None;
                        }
                    };
                    (
                        MetricSource::Query {
                            promql: q.promql.clone(),
                        },
                        target,
                    )
                }
                None => {
                    missing("query", errors);
                    return None;
                }
            },
            MetricType::Latency => match &self.latency {
                Some(l) => {
                    let f = format!("{field}.latency");
                    let objective = duration_field(
                        Some(&l.objective),
                        &format!("{f}.objective"),
                        Duration::ZERO,
                        errors,
                    );
                    let quantile = match &l.quantile {
                        None => 0.9,
                        Some(q) => {
                            let v = number(q, &format!("{f}.quantile"), errors)?;
                            if !(v > 0.0 && v < 1.0) {
                                errors.push(FieldError {
                                    field: format!("{f}.quantile"),
                                    message: format!("must be between 0 and 1, not {q}"),
                                });
                                return None;
                            }
                            v
                        }
                    };
                    let below = match &l.scale_down_below {
                        None => DEFAULT_SCALE_DOWN_BELOW,
                        Some(q) => {
                            let v = number(q, &format!("{f}.scaleDownBelow"), errors)?;
                            if !(v > 0.0 && v < 1.0) {
                                errors.push(FieldError {
                                    field: format!("{f}.scaleDownBelow"),
                                    message: format!("must be between 0 and 1, not {q}"),
                                });
                                return None;
                            }
                            v
                        }
                    };
                    let window = duration_field(
                        l.window.as_ref(),
                        &format!("{f}.window"),
                        DEFAULT_LATENCY_WINDOW,
                        errors,
                    );
                    if objective.is_zero() {
                        return None;
                    }
                    (
                        MetricSource::Latency {
                            histogram: l.histogram.clone().unwrap_or_else(|| VLLM_TTFT.to_owned()),
                            quantile,
                            window,
                        },
                        Target::Latency {
                            objective: objective.as_secs_f64(),
                            scale_down_below: below,
                        },
                    )
                }
                None => {
                    missing("latency", errors);
                    return None;
                }
            },
        };
        Some(ScalerMetric {
            name,
            source,
            target,
        })
    }
}

impl GpuAutoscalerSpec {
    /// Converts and validates the spec into the core's [`ScalerSpec`].
    ///
    /// # Errors
    /// Every problem, each naming its field (`spec.metrics[1].query.value`).
    pub fn to_scaler(&self) -> Result<ScalerSpec, Vec<FieldError>> {
        let mut errors = Vec::new();
        let min = self.min_replicas.unwrap_or(1);
        let min = u32::try_from(min).unwrap_or_else(|_| {
            errors.push(FieldError {
                field: "spec.minReplicas".to_owned(),
                message: format!("must be 0 or more, not {min}"),
            });
            1
        });
        let max = u32::try_from(self.max_replicas)
            .ok()
            .filter(|m| *m >= 1 && *m >= min)
            .unwrap_or_else(|| {
                errors.push(FieldError {
                    field: "spec.maxReplicas".to_owned(),
                    message: format!(
                        "must be at least 1 and at least minReplicas ({min}), not {}",
                        self.max_replicas
                    ),
                });
                min.max(1)
            });
        if self.scale_target_ref.kind.is_empty() || self.scale_target_ref.name.is_empty() {
            errors.push(FieldError {
                field: "spec.scaleTargetRef".to_owned(),
                message: "kind and name are required".to_owned(),
            });
        }
        if self.metrics.is_empty() {
            errors.push(FieldError {
                field: "spec.metrics".to_owned(),
                message: "at least one metric is required".to_owned(),
            });
        }
        let metrics: Vec<ScalerMetric> = self
            .metrics
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.to_metric(&format!("spec.metrics[{i}]"), &mut errors))
            .collect();
        let behavior = self.behavior.clone().unwrap_or_default();
        let scale_up =
            behavior
                .scale_up
                .as_ref()
                .map_or_else(ScalingRules::default_scale_up, |r| {
                    r.to_rules(
                        ScalingRules::default_scale_up(),
                        "spec.behavior.scaleUp",
                        &mut errors,
                    )
                });
        let scale_down =
            behavior
                .scale_down
                .as_ref()
                .map_or_else(ScalingRules::default_scale_down, |r| {
                    r.to_rules(
                        ScalingRules::default_scale_down(),
                        "spec.behavior.scaleDown",
                        &mut errors,
                    )
                });
        let tolerance = match &self.tolerance {
            None => DEFAULT_TOLERANCE,
            Some(q) => match number(q, "spec.tolerance", &mut errors) {
                Some(t) if (0.0..1.0).contains(&t) => t,
                Some(_) => {
                    errors.push(FieldError {
                        field: "spec.tolerance".to_owned(),
                        message: format!("must be at least 0 and below 1, not {q}"),
                    });
                    DEFAULT_TOLERANCE
                }
                None => DEFAULT_TOLERANCE,
            },
        };
        if !(self.prometheus.url.starts_with("http://")
            || self.prometheus.url.starts_with("https://"))
        {
            errors.push(FieldError {
                field: "spec.prometheus.url".to_owned(),
                message: format!(
                    "must start with http:// or https://, not {:?}",
                    self.prometheus.url
                ),
            });
        }
        let _ = self.query_timeout(&mut errors);
        if errors.is_empty() {
            Ok(ScalerSpec {
                hpa: HpaSpec {
                    min_replicas: min,
                    max_replicas: max,
                    behavior: Behavior {
                        scale_up,
                        scale_down,
                    },
                    tolerance,
                },
                metrics,
            })
        } else {
            Err(errors)
        }
    }

    /// `spec.prometheus.timeout`, or the default.
    pub fn query_timeout(&self, errors: &mut Vec<FieldError>) -> Duration {
        duration_field(
            self.prometheus.timeout.as_ref(),
            "spec.prometheus.timeout",
            DEFAULT_QUERY_TIMEOUT,
            errors,
        )
    }
}

/// The target value of `t` as the status shows it.
#[must_use]
pub fn target_text(t: &Target) -> String {
    match t {
        Target::AverageValue(v) => format!("{v} (average)"),
        Target::Value(v) => format!("{v}"),
        Target::Latency { objective, .. } => format!("{objective}s"),
    }
}
