//! The replica scaler's rules around the HPA algorithm: which PromQL reads
//! each metric, how a query's answer becomes the [`hpa`] observation, and
//! which pods a scale-down should lose.
//!
//! ```text
//!  GpuAutoscaler spec ──► ScalerSpec ──► queries (one per per-pod series for all autoscalers,
//!                                         one per PromQL or latency metric)
//!  query answers (Samples) ──observe()──► hpa::MetricInput ──► hpa::recommend_replicas ──► desired
//!  pods with unit cost and requests in flight ──scale_down_order()──► which pods go first
//! ```
//!
//! The cluster driver and the simulator both hold a [`ScalerSpec`]; the
//! driver asks Prometheus, the simulator computes the same series from its
//! world. Both call [`hpa::recommend_replicas`] and [`scale_down_order`].

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use super::hpa::{self, HpaSpec, MetricInput, Observation, Target};
use super::time::format_duration;

/// vLLM's queue depth series (`num_requests_waiting` for NIM).
pub const VLLM_QUEUE_DEPTH: &str = "vllm:num_requests_waiting";
/// vLLM's KV-cache use, 0..1 (`vllm:gpu_cache_usage_perc` before v0.10).
pub const VLLM_KV_CACHE: &str = "vllm:kv_cache_usage_perc";
/// vLLM's requests in the running batch: the streams a pod would cut.
pub const VLLM_RUNNING: &str = "vllm:num_requests_running";
/// vLLM's time-to-first-token histogram.
pub const VLLM_TTFT: &str = "vllm:time_to_first_token_seconds";

/// Where a metric's value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricSource {
    /// A per-pod series by name (a DCGM GPU series, `vllm:num_requests_waiting`,
    /// any exporter's), averaged per pod over its series (its GPUs). The
    /// pod is named by `pod`/`namespace`, or by `exported_pod`/
    /// `exported_namespace` where Prometheus renamed the exporter's labels.
    PerPod {
        /// The series name.
        series: String,
    },
    /// A PromQL expression that returns one number for the whole target.
    Query {
        /// The expression.
        promql: String,
    },
    /// A quantile of a latency histogram over the target's pods.
    Latency {
        /// The histogram's name (without `_bucket`).
        histogram: String,
        /// The quantile, in (0, 1).
        quantile: f64,
        /// The `rate()` window.
        window: Duration,
    },
}

/// One metric of a scaler.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalerMetric {
    /// Name in status, reasons and Events.
    pub name: String,
    /// What is read.
    pub source: MetricSource,
    /// What it is compared with ([`Target::AverageValue`] for per-pod
    /// series; any for a query; [`Target::Latency`] for latency).
    pub target: Target,
}

/// A scaler in the core's terms: the HPA bounds and behavior and its metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalerSpec {
    /// Bounds, behavior, tolerance.
    pub hpa: HpaSpec,
    /// The metrics; the largest proposal wins.
    pub metrics: Vec<ScalerMetric>,
}

/// A PromQL string literal for `s`.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A regex matching exactly one of `names` (RE2, anchored by PromQL).
fn alternatives(names: &[&str]) -> String {
    let mut out = String::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        for c in n.chars() {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                out.push(c);
            } else {
                out.push('\\');
                out.push(c);
            }
        }
    }
    out
}

/// The query for a per-pod series, for every pod of every autoscaler at
/// once: one row per (namespace, pod), averaged over the pod's series.
#[must_use]
pub fn per_pod_query(series: &str) -> String {
    let name = quoted(series);
    format!(
        "avg by (namespace, pod) (label_replace(label_replace({{__name__={name}}}, \"pod\", \"$1\", \"exported_pod\", \"(.+)\"), \"namespace\", \"$1\", \"exported_namespace\", \"(.+)\"))"
    )
}

/// The query for a latency quantile over the pods `pods` of `namespace`
/// (named by `pod` or `exported_pod`) and, in the same answer, their
/// request rate (the histogram's `_count`): two rows told apart by the label
/// `stat` (`latency`, `rate`), so the latency rule's memory costs no extra
/// query.
#[must_use]
pub fn latency_query(
    histogram: &str,
    quantile: f64,
    window: Duration,
    namespace: &str,
    pods: &[&str],
) -> String {
    let bucket = quoted(&format!("{histogram}_bucket"));
    let count = quoted(&format!("{histogram}_count"));
    let ns = quoted(namespace);
    let re = quoted(&alternatives(pods));
    let w = format_duration(window);
    format!(
        "label_replace(histogram_quantile({quantile}, sum by (le) (rate({{__name__={bucket}, namespace={ns}, pod=~{re}}}[{w}]) or rate({{__name__={bucket}, exported_namespace={ns}, exported_pod=~{re}}}[{w}]))), \"stat\", \"latency\", \"\", \"\")          or label_replace(sum(rate({{__name__={count}, namespace={ns}, pod=~{re}}}[{w}]) or rate({{__name__={count}, exported_namespace={ns}, exported_pod=~{re}}}[{w}])), \"stat\", \"rate\", \"\", \"\")"
    )
}

/// One row of a query's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// Its value (may be NaN or ±Inf, as Prometheus writes them).
    pub value: f64,
}

/// Per-pod values keyed by (namespace, pod), from a [`per_pod_query`]
/// answer. Rows without a pod name are ignored.
#[must_use]
pub fn per_pod_values(samples: &[Sample]) -> BTreeMap<(String, String), f64> {
    samples
        .iter()
        .filter_map(|s| {
            let pod = s.labels.get("pod").filter(|p| !p.is_empty())?;
            let ns = s.labels.get("namespace").cloned().unwrap_or_default();
            Some(((ns, pod.clone()), s.value))
        })
        .collect()
}

/// What the driver fetched for one metric.
#[derive(Clone, Debug, PartialEq)]
pub enum Fetched<'a> {
    /// The per-pod values of every pod (shared by all autoscalers that read
    /// this series).
    PerPod(&'a BTreeMap<(String, String), f64>),
    /// The rows a query or latency query returned.
    Rows(&'a [Sample]),
    /// The query failed.
    Failed(&'a str),
}

/// The HPA observation of `metric` for a target in `namespace` whose pods are
/// `pods`. A query must return exactly one number; a latency query may
/// return NaN (no requests in its window), which the latency rule reads as
/// idle.
#[must_use]
pub fn observe(
    metric: &ScalerMetric,
    namespace: &str,
    pods: &[hpa::PodSample],
    fetched: &Fetched<'_>,
) -> MetricInput {
    let fail = |e: &str| MetricInput::unavailable(&metric.name, metric.target, e);
    match fetched {
        Fetched::Failed(e) => fail(e),
        Fetched::PerPod(all) => {
            let mut values = BTreeMap::new();
            for pod in pods {
                if let Some(v) = all.get(&(namespace.to_owned(), pod.name.clone()))
                    && !v.is_nan()
                {
                    values.insert(pod.name.clone(), *v);
                }
            }
            if values.is_empty() {
                return fail(&format!(
                    "no series of this metric names any pod of the target (by pod or exported_pod in namespace {namespace})"
                ));
            }
            MetricInput {
                name: metric.name.clone(),
                target: metric.target,
                observation: Ok(Observation::PerPod(values)),
            }
        }
        Fetched::Rows(rows) if matches!(metric.target, Target::Latency { .. }) => {
            let stat = |name: &str| {
                rows.iter()
                    .find(|r| r.labels.get("stat").map(String::as_str) == Some(name))
                    .map(|r| r.value)
            };
            match (stat("latency"), stat("rate")) {
                (Some(latency), Some(rate)) => MetricInput {
                    name: metric.name.clone(),
                    target: metric.target,
                    observation: Ok(Observation::LatencyAtRate { latency, rate }),
                },
                (Some(latency), None) => MetricInput::total(&metric.name, metric.target, latency),
                _ => match rows {
                    [one] => MetricInput::total(&metric.name, metric.target, one.value),
                    _ => fail(
                        "the latency query returned no quantile (is the histogram exported for these pods?)",
                    ),
                },
            }
        }
        Fetched::Rows(rows) => match rows {
            [] => fail("the query returned no data"),
            [one] if one.value.is_nan() && !matches!(metric.target, Target::Latency { .. }) => {
                fail("the query returned NaN")
            }
            [one] => MetricInput::total(&metric.name, metric.target, one.value),
            many => fail(&format!(
                "the query returned {} series; it must return one (wrap it in sum())",
                many.len()
            )),
        },
    }
}

/// The per-pod series whose sum is a pod's requests in flight, for
/// [`scale_down_order`]: vLLM's running requests and the queue depth the
/// scaler reads, when it reads a vLLM/NIM queue depth; none otherwise (the
/// pods' in-flight count is then unknown).
#[must_use]
pub fn in_flight_series(spec: &ScalerSpec) -> Vec<&str> {
    let queues: Vec<&str> = spec
        .metrics
        .iter()
        .filter_map(|m| match &m.source {
            MetricSource::PerPod { series } if series.ends_with("num_requests_waiting") => {
                Some(series.as_str())
            }
            _ => None,
        })
        .collect();
    if queues.is_empty() {
        return queues;
    }
    std::iter::once(VLLM_RUNNING).chain(queues).collect()
}

/// One pod a scale-down could remove.
#[derive(Clone, Debug, PartialEq)]
pub struct DrainCandidate {
    /// The pod's name.
    pub name: String,
    /// Bound to a node.
    pub scheduled: bool,
    /// Its Ready condition is true.
    pub ready: bool,
    /// Its deletion cost (the policy controller's unit order; 0 when
    /// ungoverned): lower goes first.
    pub cost: i32,
    /// Requests it is serving now (running plus waiting), if known.
    pub in_flight: Option<f64>,
    /// Creation time in milliseconds; newer goes first among equals.
    pub created_ms: i64,
}

/// The pods to lose, first first, as the ReplicaSet controller would
/// remove them once told: unscheduled, then not ready, then the lowest
/// deletion cost (cloud units before the data center), and within one cost
/// the fewest requests in flight (unknown counts as none), then the newest.
/// Returns indices into `pods`.
#[must_use]
pub fn scale_down_order(pods: &[DrainCandidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&pods[a], &pods[b]);
        x.scheduled
            .cmp(&y.scheduled)
            .then(x.ready.cmp(&y.ready))
            .then(x.cost.cmp(&y.cost))
            .then(
                x.in_flight
                    .unwrap_or(0.0)
                    .partial_cmp(&y.in_flight.unwrap_or(0.0))
                    .unwrap_or(Ordering::Equal),
            )
            .then(y.created_ms.cmp(&x.created_ms))
            .then(x.name.cmp(&y.name))
    });
    order
}

/// The deletion cost that makes a pod chosen by [`scale_down_order`] go
/// before the other pods of its unit and after every pod of the units that
/// go before it (unit costs are 100 apart).
#[must_use]
pub fn drain_first_cost(cost: i32) -> i32 {
    cost.saturating_sub(50)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        }
    }

    fn metric(target: Target) -> ScalerMetric {
        ScalerMetric {
            name: "m".to_owned(),
            source: MetricSource::Query {
                promql: "sum(x)".to_owned(),
            },
            target,
        }
    }

    #[test]
    fn per_pod_query_names_the_series_literally_and_renames_exported_labels() {
        assert_eq!(
            per_pod_query("vllm:num_requests_waiting"),
            "avg by (namespace, pod) (label_replace(label_replace({__name__=\"vllm:num_requests_waiting\"}, \"pod\", \"$1\", \"exported_pod\", \"(.+)\"), \"namespace\", \"$1\", \"exported_namespace\", \"(.+)\"))"
        );
        assert!(per_pod_query("a\"b").contains(r#"{__name__="a\"b"}"#));
    }

    #[test]
    fn latency_query_matches_the_target_pods_by_either_label_and_escapes_regex() {
        let q = latency_query(
            VLLM_TTFT,
            0.9,
            Duration::from_secs(120),
            "llm",
            &["qwen-0", "qwen.1"],
        );
        assert!(q.starts_with("label_replace(histogram_quantile(0.9, sum by (le) (rate({__name__=\"vllm:time_to_first_token_seconds_bucket\", namespace=\"llm\", pod=~\"qwen-0|qwen\\\\.1\"}[2m])"), "{q}");
        assert!(
            q.contains(
                "label_replace(sum(rate({__name__=\"vllm:time_to_first_token_seconds_count\""
            ),
            "{q}"
        );
        assert!(
            q.contains("exported_namespace=\"llm\", exported_pod=~\"qwen-0|qwen\\\\.1\"}[2m]"),
            "{q}"
        );
    }

    #[test]
    fn per_pod_values_key_rows_by_namespace_and_pod_and_skip_unnamed() {
        let rows = [
            sample(&[("namespace", "a"), ("pod", "p0")], 1.0),
            sample(&[("namespace", "b"), ("pod", "p0")], 2.0),
            sample(&[("namespace", "a")], 9.0),
            sample(&[("namespace", "a"), ("pod", "")], 9.0),
        ];
        let v = per_pod_values(&rows);
        assert_eq!(v.len(), 2);
        assert_eq!(v[&("a".to_owned(), "p0".to_owned())], 1.0);
        assert_eq!(v[&("b".to_owned(), "p0".to_owned())], 2.0);
    }

    #[test]
    fn observe_keeps_only_the_target_pods_of_its_namespace() {
        let all = per_pod_values(&[
            sample(&[("namespace", "a"), ("pod", "p0")], 1.0),
            sample(&[("namespace", "a"), ("pod", "p1")], f64::NAN),
            sample(&[("namespace", "b"), ("pod", "p2")], 3.0),
        ]);
        let m = ScalerMetric {
            name: "gpu".to_owned(),
            source: MetricSource::PerPod {
                series: "DCGM_FI_DEV_GPU_UTIL".to_owned(),
            },
            target: Target::AverageValue(50.0),
        };
        let pods = [
            hpa::PodSample::running("p0"),
            hpa::PodSample::running("p1"),
            hpa::PodSample::running("p2"),
        ];
        let got = observe(&m, "a", &pods, &Fetched::PerPod(&all));
        let want: BTreeMap<String, f64> = [("p0".to_owned(), 1.0)].into();
        assert_eq!(got.observation, Ok(Observation::PerPod(want)));
        let none = observe(&m, "c", &pods, &Fetched::PerPod(&all));
        assert!(none.observation.unwrap_err().contains("namespace c"));
    }

    #[test]
    fn a_query_must_return_exactly_one_number() {
        let m = metric(Target::Value(10.0));
        let one = [sample(&[], 4.0)];
        assert_eq!(
            observe(&m, "a", &[], &Fetched::Rows(&one)).observation,
            Ok(Observation::Total(4.0))
        );
        let two = [sample(&[("pod", "x")], 1.0), sample(&[("pod", "y")], 2.0)];
        for (rows, says) in [
            (&[][..], "no data"),
            (&two[..], "2 series"),
            (&[sample(&[], f64::NAN)][..], "NaN"),
        ] {
            let e = observe(&m, "a", &[], &Fetched::Rows(rows))
                .observation
                .unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        assert_eq!(
            observe(&m, "a", &[], &Fetched::Failed("connection refused"))
                .observation
                .unwrap_err(),
            "connection refused"
        );
    }

    #[test]
    fn a_latency_query_may_answer_nan_for_an_idle_window() {
        let m = metric(Target::Latency {
            objective: 1.0,
            scale_down_below: 0.5,
        });
        let got = observe(&m, "a", &[], &Fetched::Rows(&[sample(&[], f64::NAN)]));
        assert!(matches!(got.observation, Ok(Observation::Total(v)) if v.is_nan()));
    }

    #[test]
    fn a_latency_answer_carries_its_request_rate() {
        let m = metric(Target::Latency {
            objective: 1.0,
            scale_down_below: 0.5,
        });
        let rows = [
            sample(&[("stat", "latency")], 0.4),
            sample(&[("stat", "rate")], 12.0),
        ];
        let got = observe(&m, "a", &[], &Fetched::Rows(&rows));
        assert_eq!(
            got.observation,
            Ok(Observation::LatencyAtRate {
                latency: 0.4,
                rate: 12.0
            })
        );
    }

    fn cand(name: &str, cost: i32, in_flight: Option<f64>, created_ms: i64) -> DrainCandidate {
        DrainCandidate {
            name: name.to_owned(),
            scheduled: true,
            ready: true,
            cost,
            in_flight,
            created_ms,
        }
    }

    #[test]
    fn scale_down_loses_cloud_pods_first_and_within_a_unit_the_idlest() {
        let pods = [
            cand("dc-busy", 200, Some(9.0), 1),
            cand("dc-idle", 200, Some(0.0), 2),
            cand("cloud-busy", 100, Some(30.0), 3),
            cand("cloud-idle", 100, Some(1.0), 4),
            cand("cloud-unknown", 100, None, 5),
            DrainCandidate {
                ready: false,
                ..cand("dc-loading", 200, None, 6)
            },
            DrainCandidate {
                scheduled: false,
                ..cand("pending", 0, None, 7)
            },
        ];
        let names: Vec<&str> = scale_down_order(&pods)
            .into_iter()
            .map(|i| pods[i].name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "pending",
                "dc-loading",
                "cloud-unknown",
                "cloud-idle",
                "cloud-busy",
                "dc-idle",
                "dc-busy"
            ]
        );
    }

    #[test]
    fn requests_in_flight_are_read_only_beside_a_queue_depth() {
        let spec = |series: &str| ScalerSpec {
            hpa: HpaSpec::new(1, 3),
            metrics: vec![ScalerMetric {
                name: "m".to_owned(),
                source: MetricSource::PerPod {
                    series: series.to_owned(),
                },
                target: Target::AverageValue(1.0),
            }],
        };
        assert_eq!(
            in_flight_series(&spec("num_requests_waiting")),
            [VLLM_RUNNING, "num_requests_waiting"]
        );
        assert!(in_flight_series(&spec("DCGM_FI_DEV_GPU_UTIL")).is_empty());
    }

    #[test]
    fn equal_pods_go_newest_first() {
        let pods = [
            cand("old", 100, Some(1.0), 1),
            cand("new", 100, Some(1.0), 2),
        ];
        assert_eq!(scale_down_order(&pods), [1, 0]);
    }

    #[test]
    fn the_drain_first_cost_stays_between_units() {
        use super::super::deletion::{CostClass, deletion_cost};
        for units in 1..5 {
            for k in 0..units {
                let here = deletion_cost(units, CostClass::Within(k));
                let marked = drain_first_cost(here);
                assert!(marked < here);
                if k + 1 < units {
                    assert!(marked > deletion_cost(units, CostClass::Within(k + 1)));
                }
            }
        }
    }
}
