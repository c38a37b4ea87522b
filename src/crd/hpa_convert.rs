//! `autoscaling/v2` HorizontalPodAutoscaler manifests into GpuAutoscalers
//! (`spillway scaler convert`, and the simulator's `autoscaler:` field).
//!
//! What maps, metric by metric:
//!
//! | HPA metric | GpuAutoscaler metric |
//! |---|---|
//! | `Pods`, a `DCGM_*` name | `GPU` on the same series and average |
//! | `Pods`, `[vllm:]num_requests_waiting` | `QueueDepth` with that series |
//! | `Pods`, `[vllm:]kv_cache_usage_perc` / `gpu_cache_usage_perc` | `KVCache` |
//! | `Pods`, any other name | `Pods` on the same series |
//! | `Object` / `External` | `Query` `sum(NAME{matchLabels})` with the same `Value`/`AverageValue` |
//! | `Resource` / `ContainerResource` (CPU, memory) | not carried over: said in the notes |
//!
//! The HPA read these through a metrics adapter whose rules may rename or
//! aggregate; every conversion that depends on such a rule says so in the
//! notes, so the user checks the query against what the adapter served.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::QuantityValue;
use super::gpu_autoscaler::{
    BehaviorSpec, GpuAutoscalerSpec, MetricSpec, MetricType, PrometheusSpec, QueryMetric,
    ScaleTargetRef, SeriesMetric, ServingMetric,
};
use crate::decision::scaler::{VLLM_KV_CACHE, VLLM_QUEUE_DEPTH};

/// `spec` of an autoscaling/v2 HorizontalPodAutoscaler (the fields that
/// matter for conversion; unknown fields are refused so nothing is dropped
/// unseen).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HorizontalPodAutoscalerSpec {
    /// The target.
    pub scale_target_ref: ScaleTargetRef,
    /// Lower bound (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// Upper bound.
    pub max_replicas: i32,
    /// Metrics (default: 80 % CPU, which does not carry over).
    #[serde(default)]
    pub metrics: Vec<HpaMetric>,
    /// Behavior, copied as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<BehaviorSpec>,
}

/// One `spec.metrics` entry of an HPA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaMetric {
    /// `Pods`, `Object`, `External`, `Resource` or `ContainerResource`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `type: Pods`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<HpaMetricSource>,
    /// `type: Object`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<HpaMetricSource>,
    /// `type: External`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<HpaMetricSource>,
    /// `type: Resource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<serde_json::Value>,
    /// `type: ContainerResource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_resource: Option<serde_json::Value>,
}

/// `pods` / `object` / `external` of an HPA metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaMetricSource {
    /// `{name, selector}`.
    pub metric: HpaMetricId,
    /// The target.
    pub target: HpaTarget,
    /// `Object` only: the object the metric describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub described_object: Option<serde_json::Value>,
}

/// `metric` of an HPA metric source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaMetricId {
    /// The metric's name as the adapter serves it.
    pub name: String,
    /// A label selector (`matchLabels` carry over into the query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<HpaSelector>,
}

/// A label selector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaSelector {
    /// Equality terms.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Set terms (not carried over).
    #[serde(default)]
    pub match_expressions: Vec<serde_json::Value>,
}

/// `target` of an HPA metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaTarget {
    /// `Value`, `AverageValue` or `Utilization`.
    #[serde(rename = "type")]
    pub type_: String,
    /// For `Value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<QuantityValue>,
    /// For `AverageValue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<QuantityValue>,
    /// For `Utilization` (Resource metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<i32>,
}

/// A conversion and what could not be carried over.
#[derive(Clone, Debug, PartialEq)]
pub struct Converted {
    /// The GpuAutoscaler spec.
    pub spec: GpuAutoscalerSpec,
    /// One line per thing the user should check or do by hand.
    pub notes: Vec<String>,
}

fn bare(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn label_matchers(selector: Option<&HpaSelector>, field: &str, notes: &mut Vec<String>) -> String {
    let Some(sel) = selector else {
        return String::new();
    };
    if !sel.match_expressions.is_empty() {
        notes.push(format!(
            "{field}.metric.selector.matchExpressions: not carried over; add the matchers to the query by hand"
        ));
    }
    if sel.match_labels.is_empty() {
        return String::new();
    }
    let terms: Vec<String> = sel
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect();
    format!("{{{}}}", terms.join(", "))
}

/// Converts an HPA spec. `prometheus` is where the GpuAutoscaler will read
/// (an HPA names none).
#[must_use]
pub fn from_hpa(hpa: &HorizontalPodAutoscalerSpec, prometheus: &PrometheusSpec) -> Converted {
    let mut notes = Vec::new();
    let mut metrics = Vec::new();
    if hpa.metrics.is_empty() {
        notes.push(
            "spec.metrics: empty, which the HPA reads as 80 % CPU utilisation; CPU is not carried over, add a GPU or serving metric".to_owned(),
        );
    }
    for (i, m) in hpa.metrics.iter().enumerate() {
        let field = format!("spec.metrics[{i}]");
        match m.type_.as_str() {
            "Pods" => {
                let Some(src) = &m.pods else {
                    notes.push(format!("{field}: type Pods without a pods section; skipped"));
                    continue;
                };
                let Some(avg) = src.target.average_value.clone() else {
                    notes.push(format!(
                        "{field}.pods.target: a Pods metric needs an averageValue; skipped"
                    ));
                    continue;
                };
                if src.metric.selector.is_some() {
                    notes.push(format!(
                        "{field}.pods.metric.selector: not carried over; the series is matched by the target's pods"
                    ));
                }
                let name = src.metric.name.clone();
                let mut spec = MetricSpec::default();
                match bare(&name) {
                    n if n.starts_with("DCGM_") => {
                        spec.type_ = MetricType::Gpu;
                        spec.gpu = Some(SeriesMetric {
                            metric: name,
                            average_value: avg,
                        });
                    }
                    "num_requests_waiting" => {
                        spec.type_ = MetricType::QueueDepth;
                        spec.queue_depth = Some(ServingMetric {
                            metric: (name != VLLM_QUEUE_DEPTH).then_some(name),
                            average_value: avg,
                        });
                    }
                    "kv_cache_usage_perc" | "gpu_cache_usage_perc" => {
                        spec.type_ = MetricType::KvCache;
                        spec.kv_cache = Some(ServingMetric {
                            metric: (name != VLLM_KV_CACHE).then_some(name),
                            average_value: avg,
                        });
                    }
                    _ => {
                        spec.type_ = MetricType::Pods;
                        spec.pods = Some(SeriesMetric {
                            metric: name,
                            average_value: avg,
                        });
                    }
                }
                notes.push(format!(
                    "{field}: reads the series {:?} from Prometheus by pod (or exported_pod); check that the metrics adapter served it under the same name",
                    src.metric.name
                ));
                metrics.push(spec);
            }
            kind @ ("Object" | "External") => {
                let src = if kind == "Object" {
                    m.object.as_ref()
                } else {
                    m.external.as_ref()
                };
                let Some(src) = src else {
                    notes.push(format!(
                        "{field}: type {kind} without its section; skipped"
                    ));
                    continue;
                };
                let sub = kind.to_lowercase();
                let matchers = label_matchers(
                    src.metric.selector.as_ref(),
                    &format!("{field}.{sub}"),
                    &mut notes,
                );
                let promql = format!("sum({}{matchers})", src.metric.name);
                let (value, average_value) = match src.target.type_.as_str() {
                    "Value" => (src.target.value.clone(), None),
                    "AverageValue" => (None, src.target.average_value.clone()),
                    other => {
                        notes.push(format!(
                            "{field}.{sub}.target.type: {other} has no GpuAutoscaler equivalent; skipped"
                        ));
                        continue;
                    }
                };
                if value.is_none() && average_value.is_none() {
                    notes.push(format!("{field}.{sub}.target: no value; skipped"));
                    continue;
                }
                notes.push(format!(
                    "{field}: {kind} metric {:?} becomes the query {promql:?}; check it against the adapter's rule{}",
                    src.metric.name,
                    if kind == "Object" {
                        " (the described object is not part of the query)"
                    } else {
                        ""
                    }
                ));
                metrics.push(MetricSpec {
                    type_: MetricType::Query,
                    query: Some(QueryMetric {
                        promql,
                        value,
                        average_value,
                    }),
                    ..MetricSpec::default()
                });
            }
            other => notes.push(format!(
                "{field}: a {other} metric (CPU or memory) is not carried over; GpuAutoscaler scales on GPU and serving metrics"
            )),
        }
    }
    Converted {
        spec: GpuAutoscalerSpec {
            scale_target_ref: hpa.scale_target_ref.clone(),
            min_replicas: hpa.min_replicas,
            max_replicas: hpa.max_replicas,
            metrics,
            behavior: hpa.behavior.clone(),
            tolerance: None,
            prometheus: prometheus.clone(),
        },
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prom() -> PrometheusSpec {
        PrometheusSpec {
            url: "http://prometheus:9090".to_owned(),
            ..PrometheusSpec::default()
        }
    }

    fn hpa(metrics: &str) -> HorizontalPodAutoscalerSpec {
        let text = format!(
            r#"{{"scaleTargetRef": {{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}},
                "maxReplicas": 3, "metrics": {metrics}}}"#
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn pods_metrics_become_gpu_queue_depth_kv_cache_or_series() {
        let h = hpa(r#"[
            {"type": "Pods", "pods": {"metric": {"name": "DCGM_CUSTOM_PROCESS_SM_UTIL"}, "target": {"type": "AverageValue", "averageValue": 50}}},
            {"type": "Pods", "pods": {"metric": {"name": "num_requests_waiting"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            {"type": "Pods", "pods": {"metric": {"name": "vllm:kv_cache_usage_perc"}, "target": {"type": "AverageValue", "averageValue": "800m"}}},
            {"type": "Pods", "pods": {"metric": {"name": "tokens_per_second"}, "target": {"type": "AverageValue", "averageValue": 900}}}
        ]"#);
        let c = from_hpa(&h, &prom());
        let types: Vec<MetricType> = c.spec.metrics.iter().map(|m| m.type_).collect();
        assert_eq!(
            types,
            [
                MetricType::Gpu,
                MetricType::QueueDepth,
                MetricType::KvCache,
                MetricType::Pods
            ]
        );
        // NIM's name is not vLLM's default, so it is kept; vLLM's is implied.
        assert_eq!(
            c.spec.metrics[1]
                .queue_depth
                .as_ref()
                .unwrap()
                .metric
                .as_deref(),
            Some("num_requests_waiting")
        );
        assert_eq!(c.spec.metrics[2].kv_cache.as_ref().unwrap().metric, None);
        let core = c.spec.to_scaler().unwrap();
        assert_eq!(core.metrics.len(), 4);
        assert_eq!(core.hpa.min_replicas, 1);
        assert_eq!(core.hpa.max_replicas, 3);
    }

    #[test]
    fn external_metrics_become_summed_queries_and_cpu_is_reported_not_dropped_silently() {
        let h = hpa(r#"[
            {"type": "External", "external": {"metric": {"name": "queue_ratio", "selector": {"matchLabels": {"model": "llama"}}}, "target": {"type": "Value", "value": 1}}},
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}
        ]"#);
        let c = from_hpa(&h, &prom());
        assert_eq!(c.spec.metrics.len(), 1);
        let q = c.spec.metrics[0].query.as_ref().unwrap();
        assert_eq!(q.promql, r#"sum(queue_ratio{model="llama"})"#);
        assert_eq!(q.value, Some(QuantityValue("1".to_owned())));
        assert!(
            c.notes
                .iter()
                .any(|n| n.starts_with("spec.metrics[1]") && n.contains("not carried over")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn behavior_and_bounds_carry_over_unchanged() {
        let text = r#"{"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
            "minReplicas": 2, "maxReplicas": 9,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": "x"}, "target": {"type": "AverageValue", "averageValue": 1}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Min",
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]}}}"#;
        let h: HorizontalPodAutoscalerSpec = serde_json::from_str(text).unwrap();
        let c = from_hpa(&h, &prom());
        assert_eq!(c.spec.behavior, h.behavior);
        let core = c.spec.to_scaler().unwrap();
        assert_eq!(core.hpa.min_replicas, 2);
        assert_eq!(
            core.hpa.behavior.scale_down.stabilization_window,
            std::time::Duration::from_secs(60)
        );
        assert_eq!(
            core.hpa.behavior.scale_down.select,
            crate::decision::hpa::SelectPolicy::Min
        );
        assert_eq!(
            core.hpa.behavior.scale_up,
            crate::decision::hpa::ScalingRules::default_scale_up()
        );
    }
}
