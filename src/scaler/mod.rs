//! The replica scaler: every sync period it reads each GpuAutoscaler's
//! target through `/scale`, its pods, and its metrics from Prometheus, asks
//! the core's [`recommend_replicas`] (the function the simulator calls) for
//! the replica count, and writes `/scale`, the status and Events.
//!
//! ```text
//!  LIST gpuautoscalers ─► per autoscaler: spec → ScalerSpec (invalid: ScalingActive=False InvalidSpec)
//!                         discovery (kind → resource with /scale; none: AbleToScale=False FailedGetScale)
//!                         GET …/scale (replicas, selector) ─► LIST pods (selector)
//!  per Prometheus:        one query per per-pod series for all autoscalers + one per PromQL/latency metric
//!                         (unreachable: backoff 15 s … 5 min, metrics invalid → never a scale-down)
//!  per autoscaler:        observe() ─► recommend_replicas() ─► scale-down: mark the pods to lose
//!                         (scale_down_order) ─► PATCH …/scale ─► Event ─► PATCH status (only when changed)
//! ```
//!
//! Only the leader syncs (the gate the policy controller also waits on).
//! The driver holds no scaling logic: the HPA algorithm, the queries and the
//! scale-down order are the core's.

pub mod convert;
pub mod prom;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde_json::json;

use crate::crd::PolicyCondition;
use crate::crd::gpu_autoscaler::{GpuAutoscaler, GpuAutoscalerStatus, MetricStatus, target_text};
use crate::decision::deletion::{DELETION_COST_ANNOTATION, DRAIN_FIRST_ANNOTATION};
use crate::decision::hpa::{
    self, HpaState, Limit, MetricProposal, Outcome, Recommendation, recommend_replicas,
};
use crate::decision::reconcile::WRITTEN_COST_ANNOTATION;
use crate::decision::scaler::{
    DrainCandidate, Fetched, MetricSource, Sample, ScalerSpec, drain_first_cost, in_flight_series,
    latency_query, observe, per_pod_query, per_pod_values, scale_down_order,
};
use crate::decision::time::{Time, format_rfc3339, parse_rfc3339};
use crate::extender::metrics::{counter, register};
use prom::{Endpoint, PromClient, PromError};

/// Per-pod values of one series keyed by (namespace, pod).
type PodValues = BTreeMap<(String, String), f64>;

/// The first retry delay after Prometheus could not be reached.
pub const BACKOFF_START: Duration = Duration::from_secs(15);
/// The longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The scaler's metrics.
#[derive(Clone, Debug)]
pub struct ScalerMetrics {
    /// `spillway_scaler_syncs_total`.
    pub syncs: prometheus::IntCounter,
    /// `spillway_scaler_sync_duration_seconds`.
    pub sync_seconds: Histogram,
    /// `spillway_scaler_prometheus_queries_total{result}`.
    pub queries: IntCounterVec,
    /// `spillway_scaler_rescales_total{direction,result}`.
    pub rescales: IntCounterVec,
    /// `spillway_scaler_desired_replicas{namespace,name}`.
    pub desired: IntGaugeVec,
    /// `spillway_scaler_errors_total{reason}` (condition reasons).
    pub errors: IntCounterVec,
}

impl ScalerMetrics {
    /// Registers the scaler's metrics in `registry`.
    ///
    /// # Panics
    /// If they are registered twice in one registry.
    #[must_use]
    pub fn new(registry: &Registry) -> Self {
        let counter =
            |name: &str, help: &str, labels: &[&str]| counter(registry, name, help, labels);
        Self {
            syncs: register(
                registry,
                prometheus::IntCounter::new(
                    "spillway_scaler_syncs_total",
                    "Scaler syncs (each covers every GpuAutoscaler).",
                ),
            ),
            sync_seconds: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "spillway_scaler_sync_duration_seconds",
                        "Wall time of one scaler sync over every GpuAutoscaler.",
                    )
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                ),
            ),
            queries: counter(
                "spillway_scaler_prometheus_queries_total",
                "Prometheus queries by result (ok, unreachable, rejected, http, decode, config, skipped while backing off).",
                &["result"],
            ),
            rescales: counter(
                "spillway_scaler_rescales_total",
                "Writes of /scale by direction and result.",
                &["direction", "result"],
            ),
            desired: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "spillway_scaler_desired_replicas",
                        "The replicas a GpuAutoscaler last decided.",
                    ),
                    &["namespace", "name"],
                ),
            ),
            errors: counter(
                "spillway_scaler_errors_total",
                "Syncs of one GpuAutoscaler that could not scale, by condition reason.",
                &["reason"],
            ),
        }
    }
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// GpuAutoscalers seen.
    pub autoscalers: usize,
    /// Prometheus queries sent.
    pub queries: usize,
    /// `/scale` writes.
    pub rescales: usize,
    /// Status writes.
    pub status_writes: usize,
}

/// Per-endpoint health, for the backoff.
#[derive(Debug)]
struct EndpointState {
    client: PromClient,
    failures: u32,
    retry_at: Option<Time>,
    last_error: String,
}

/// The scaler's memory between syncs.
pub struct Scaler {
    client: kube::Client,
    recorder: Recorder,
    metrics: ScalerMetrics,
    /// HPA memory per autoscaler (namespace, name, uid).
    states: HashMap<(String, String, String), HpaState>,
    endpoints: HashMap<Endpoint, EndpointState>,
    /// Discovery answers per (apiVersion, kind), refreshed when they fail.
    discovered: HashMap<(String, String), ApiResource>,
    /// Write drain-first marks before a scale-down.
    drain_aware: bool,
}

impl std::fmt::Debug for Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scaler")
            .field("autoscalers", &self.states.len())
            .finish_non_exhaustive()
    }
}

/// An autoscaler ready to decide.
struct Prepared {
    obj: GpuAutoscaler,
    key: (String, String, String),
    spec: ScalerSpec,
    endpoint: Endpoint,
    scale_api: Api<DynamicObject>,
    current: u32,
    pods: Vec<hpa::PodSample>,
    drain: Vec<DrainCandidate>,
    /// Drain-first marks on pods now.
    marked: Vec<String>,
    /// Cost annotations per pod: (current, Spillway's record).
    costs: BTreeMap<String, (i32, Option<i32>)>,
}

/// Why an autoscaler could not get to a decision.
struct Blocked {
    condition: &'static str,
    reason: &'static str,
    message: String,
}

fn blocked(condition: &'static str, reason: &'static str, message: String) -> Blocked {
    Blocked {
        condition,
        reason,
        message,
    }
}

fn pod_sample(p: &Pod) -> hpa::PodSample {
    let status = p.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    hpa::PodSample {
        name: p.name_any(),
        ready,
        terminating: p.metadata.deletion_timestamp.is_some(),
        failed: status.and_then(|s| s.phase.as_deref()) == Some("Failed"),
    }
}

fn annotation_cost(p: &Pod, key: &str) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.trim().parse().ok())
}

/// One condition, keeping its transition time when the status is unchanged.
fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    seen: Option<&GpuAutoscalerStatus>,
    generation: Option<i64>,
    now: Time,
) -> PolicyCondition {
    let previous = seen.map_or(&[][..], |s| s.conditions.as_slice());
    let status = if status { "True" } else { "False" };
    PolicyCondition::observed(type_, status, reason, message, previous, generation, now)
}

fn replicas_i32(r: u32) -> i32 {
    i32::try_from(r).unwrap_or(i32::MAX)
}

/// The status after a decision. `scaled`: the `/scale` write's result, when
/// one was made.
#[must_use]
pub fn decided_status(
    obj: &GpuAutoscaler,
    spec: &ScalerSpec,
    current: u32,
    rec: &Recommendation,
    values: &[Option<f64>],
    scaled: Option<&Result<(), String>>,
    now: Time,
) -> GpuAutoscalerStatus {
    let seen = obj.status.as_ref();
    let generation = obj.metadata.generation;
    let mut status = seen.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.current_replicas = replicas_i32(current);
    status.desired_replicas = replicas_i32(rec.desired);
    if matches!(scaled, Some(Ok(()))) {
        status.last_scale_time = Some(format_rfc3339(now));
    }
    status.current_metrics = spec
        .metrics
        .iter()
        .zip(&rec.proposals)
        .zip(values)
        .map(|((m, p), v): ((_, &MetricProposal), _)| MetricStatus {
            name: m.name.clone(),
            current: v.map(|v| format!("{v:.3}")),
            target: target_text(&m.target),
            proposed_replicas: p.replicas.map(replicas_i32),
            reason: p.reason.clone(),
        })
        .collect();
    if status.current_metrics.is_empty() {
        // Bounds or a disabled target decided; keep the last readings' names.
        status.current_metrics = spec
            .metrics
            .iter()
            .map(|m| MetricStatus {
                name: m.name.clone(),
                current: None,
                target: target_text(&m.target),
                proposed_replicas: None,
                reason: rec.reason.clone(),
            })
            .collect();
    }
    let targets: Vec<String> = spec
        .metrics
        .iter()
        .zip(values.iter().chain(std::iter::repeat(&None)))
        .map(|(m, v)| {
            let t = match m.target {
                hpa::Target::AverageValue(t) | hpa::Target::Value(t) => format!("{t}"),
                hpa::Target::Latency { objective, .. } => format!("{objective}s"),
            };
            let c = v.map_or_else(|| "<unknown>".to_owned(), |v| format!("{v:.3}"));
            format!(
                "{}/{t} ({})",
                c.trim_end_matches('0').trim_end_matches('.'),
                m.name
            )
        })
        .collect();
    status.targets = Some(targets.join(", "));

    let able = match scaled {
        Some(Err(e)) => condition(
            "AbleToScale",
            false,
            "FailedUpdateScale",
            format!("the scaler could not update the target's /scale: {e}"),
            seen,
            generation,
            now,
        ),
        Some(Ok(())) => condition(
            "AbleToScale",
            true,
            "SucceededRescale",
            format!("the scaler set the target's replicas to {}", rec.desired),
            seen,
            generation,
            now,
        ),
        None if rec.stabilized => condition(
            "AbleToScale",
            true,
            if rec.desired >= current {
                "ScaleDownStabilized"
            } else {
                "ScaleUpStabilized"
            },
            format!("recent recommendations hold the target at {}", rec.desired),
            seen,
            generation,
            now,
        ),
        None => condition(
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "the last scale time was sufficiently old as to warrant a new scale".to_owned(),
            seen,
            generation,
            now,
        ),
    };
    let invalid: Vec<String> = rec
        .proposals
        .iter()
        .filter(|p| p.replicas.is_none())
        .map(|p| format!("{}: {}", p.name, p.reason))
        .collect();
    let active = match rec.outcome {
        Outcome::Disabled => condition(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".to_owned(),
            seen,
            generation,
            now,
        ),
        Outcome::NoValidMetrics => condition(
            "ScalingActive",
            false,
            "FailedGetPrometheusMetrics",
            format!("{}; {}", rec.reason, invalid.join("; ")),
            seen,
            generation,
            now,
        ),
        Outcome::OutOfBounds | Outcome::Computed => condition(
            "ScalingActive",
            true,
            "ValidMetricFound",
            if invalid.is_empty() {
                rec.reason.clone()
            } else {
                format!("{}; invalid: {}", rec.reason, invalid.join("; "))
            },
            seen,
            generation,
            now,
        ),
    };
    let limited = match rec.limit {
        Some(Limit::MaxReplicas) => condition(
            "ScalingLimited",
            true,
            "TooManyReplicas",
            format!(
                "the desired replica count is more than the maximum replica count ({})",
                spec.hpa.max_replicas
            ),
            seen,
            generation,
            now,
        ),
        Some(Limit::MinReplicas) => condition(
            "ScalingLimited",
            true,
            "TooFewReplicas",
            format!(
                "the desired replica count is less than the minimum replica count ({})",
                spec.hpa.min_replicas
            ),
            seen,
            generation,
            now,
        ),
        Some(Limit::ScaleUpPolicies) => condition(
            "ScalingLimited",
            true,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate".to_owned(),
            seen,
            generation,
            now,
        ),
        Some(Limit::ScaleDownPolicies) => condition(
            "ScalingLimited",
            true,
            "ScaleDownLimit",
            "the desired replica count is decreasing faster than the maximum scale rate".to_owned(),
            seen,
            generation,
            now,
        ),
        None => condition(
            "ScalingLimited",
            false,
            "DesiredWithinRange",
            "the desired count is within the acceptable range".to_owned(),
            seen,
            generation,
            now,
        ),
    };
    status.conditions = vec![able, active, limited];
    status
}

/// The status when an autoscaler could not get to a decision: the blocking
/// condition False with its reason, nothing scaled.
#[must_use]
fn blocked_status(obj: &GpuAutoscaler, b: &Blocked, now: Time) -> GpuAutoscalerStatus {
    let seen = obj.status.as_ref();
    let generation = obj.metadata.generation;
    let mut status = seen.cloned().unwrap_or_default();
    status.observed_generation = generation;
    let mut conditions: Vec<PolicyCondition> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != b.condition)
        .cloned()
        .collect();
    conditions.push(condition(
        b.condition,
        false,
        b.reason,
        b.message.clone(),
        seen,
        generation,
        now,
    ));
    conditions.sort_by_key(|c| match c.type_.as_str() {
        "AbleToScale" => 0,
        "ScalingActive" => 1,
        _ => 2,
    });
    status.conditions = conditions;
    status
}

fn direction(from: u32, to: u32) -> &'static str {
    if to > from { "up" } else { "down" }
}

impl Scaler {
    /// A scaler writing through `client`, its metrics in `registry`.
    #[must_use]
    pub fn new(client: kube::Client, reporter: Reporter, registry: &Registry) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: ScalerMetrics::new(registry),
            states: HashMap::new(),
            endpoints: HashMap::new(),
            discovered: HashMap::new(),
            drain_aware: true,
        }
    }

    /// Turns the drain-first marks before a scale-down on or off.
    #[must_use]
    pub fn with_drain_aware(mut self, on: bool) -> Self {
        self.drain_aware = on;
        self
    }

    /// The scaler's metrics.
    #[must_use]
    pub fn metrics(&self) -> &ScalerMetrics {
        &self.metrics
    }

    async fn event(&self, obj: &GpuAutoscaler, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: "Scaling".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(autoscaler = %obj.name_any(), error = %e, "event write failed");
        }
    }

    async fn resolve(&mut self, api_version: &str, kind: &str) -> Result<ApiResource, String> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(ar) = self.discovered.get(&key) {
            return Ok(ar.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::oneshot::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| format!("kind {kind} of {api_version} is not served: {e}"))?;
        if !caps
            .subresources
            .iter()
            .any(|(sub, _)| sub.plural == "scale")
        {
            return Err(format!(
                "kind {kind} of {api_version} has no /scale subresource"
            ));
        }
        self.discovered.insert(key, ar.clone());
        Ok(ar)
    }

    async fn token(&self, ns: &str, obj: &GpuAutoscaler) -> Result<Option<String>, Blocked> {
        let Some(sec) = &obj.spec.prometheus.bearer_token_secret else {
            return Ok(None);
        };
        let key = sec.key.clone().unwrap_or_else(|| "token".to_owned());
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let fail = |m: String| {
            blocked(
                "ScalingActive",
                "FailedGetBearerToken",
                format!(
                    "spec.prometheus.bearerTokenSecret: Secret {ns}/{}: {m}",
                    sec.name
                ),
            )
        };
        let secret = secrets.get(&sec.name).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => fail("not found".to_owned()),
            e => fail(e.to_string()),
        })?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&key))
            .ok_or_else(|| fail(format!("has no key {key:?}")))?;
        String::from_utf8(bytes.0.clone())
            .map(Some)
            .map_err(|_| fail(format!("key {key:?} is not UTF-8")))
    }

    async fn prepare(&mut self, obj: GpuAutoscaler) -> Result<Prepared, (GpuAutoscaler, Blocked)> {
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let key = (ns.clone(), name.clone(), obj.uid().unwrap_or_default());
        let spec = match obj.spec.to_scaler() {
            Ok(s) => s,
            Err(errors) => {
                let message = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err((obj, blocked("ScalingActive", "InvalidSpec", message)));
            }
        };
        let token = match self.token(&ns, &obj).await {
            Ok(t) => t,
            Err(b) => return Err((obj, b)),
        };
        let endpoint = Endpoint {
            url: obj.spec.prometheus.url.clone(),
            ca_bundle: obj.spec.prometheus.ca_bundle.clone(),
            token,
            timeout_ms: u64::try_from(obj.spec.query_timeout(&mut Vec::new()).as_millis())
                .unwrap_or(u64::MAX),
        };
        let target = obj.spec.scale_target_ref.clone();
        let ar = match self.resolve(&target.api_version, &target.kind).await {
            Ok(ar) => ar,
            Err(m) => {
                return Err((
                    obj,
                    blocked(
                        "AbleToScale",
                        "FailedGetScale",
                        format!("spec.scaleTargetRef: {m}"),
                    ),
                ));
            }
        };
        let scale_api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
        let scale = match scale_api.get_scale(&target.name).await {
            Ok(s) => s,
            Err(e) => {
                return Err((
                    obj,
                    blocked(
                        "AbleToScale",
                        "FailedGetScale",
                        format!(
                            "spec.scaleTargetRef: {} {}/{}: {e}",
                            target.kind, ns, target.name
                        ),
                    ),
                ));
            }
        };
        let current = scale
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0);
        let selector = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        if selector.is_empty() && current > 0 {
            return Err((
                obj,
                blocked(
                    "ScalingActive",
                    "InvalidSelector",
                    format!(
                        "the /scale of {} {}/{} reports no status.selector, so its pods cannot be found",
                        target.kind, ns, target.name
                    ),
                ),
            ));
        }
        let pods: Vec<Pod> = if selector.is_empty() {
            Vec::new()
        } else {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            match api.list(&ListParams::default().labels(&selector)).await {
                Ok(l) => l.items,
                Err(e) => {
                    return Err((
                        obj,
                        blocked(
                            "ScalingActive",
                            "FailedGetPods",
                            format!("listing pods with {selector}: {e}"),
                        ),
                    ));
                }
            }
        };
        let samples: Vec<hpa::PodSample> = pods.iter().map(pod_sample).collect();
        let drain = pods
            .iter()
            .zip(&samples)
            .filter(|(_, s)| !s.terminating)
            .map(|(p, s)| DrainCandidate {
                name: s.name.clone(),
                scheduled: p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some(),
                ready: s.ready,
                cost: annotation_cost(p, DELETION_COST_ANNOTATION).unwrap_or(0),
                in_flight: None,
                created_ms: p
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .and_then(|t| parse_rfc3339(&t.0.to_string()).ok())
                    .map_or(0, Time::as_millis),
            })
            .collect();
        let marked = pods
            .iter()
            .filter(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(DRAIN_FIRST_ANNOTATION))
            })
            .map(ResourceExt::name_any)
            .collect();
        let costs = pods
            .iter()
            .filter_map(|p| {
                let c = annotation_cost(p, DELETION_COST_ANNOTATION)?;
                Some((
                    p.name_any(),
                    (c, annotation_cost(p, WRITTEN_COST_ANNOTATION)),
                ))
            })
            .collect();
        Ok(Prepared {
            obj,
            key,
            spec,
            endpoint,
            scale_api,
            current,
            pods: samples,
            drain,
            marked,
            costs,
        })
    }

    /// Runs `promql` on `endpoint`, unless it is backing off.
    async fn query(
        &mut self,
        endpoint: &Endpoint,
        promql: &str,
        now: Time,
        report: &mut SyncReport,
    ) -> Result<Vec<Sample>, String> {
        if !self.endpoints.contains_key(endpoint) {
            let client = PromClient::new(endpoint.clone()).map_err(|e| e.to_string())?;
            self.endpoints.insert(
                endpoint.clone(),
                EndpointState {
                    client,
                    failures: 0,
                    retry_at: None,
                    last_error: String::new(),
                },
            );
        }
        let state = self
            .endpoints
            .get_mut(endpoint)
            .unwrap_or_else(|| unreachable!("inserted above"));
        if let Some(at) = state.retry_at
            && now < at
        {
            self.metrics.queries.with_label_values(&["skipped"]).inc();
            return Err(format!(
                "{} (backing off after {} failed attempts; next try at {})",
                state.last_error,
                state.failures,
                format_rfc3339(at)
            ));
        }
        report.queries += 1;
        let client = state.client.clone();
        let result = client.query(promql).await;
        let state = self
            .endpoints
            .get_mut(endpoint)
            .unwrap_or_else(|| unreachable!("inserted above"));
        match result {
            Ok(rows) => {
                self.metrics.queries.with_label_values(&["ok"]).inc();
                state.failures = 0;
                state.retry_at = None;
                Ok(rows)
            }
            Err(e) => {
                self.metrics
                    .queries
                    .with_label_values(&[e.metric_label()])
                    .inc();
                if e.is_unreachable() {
                    state.failures = state.failures.saturating_add(1);
                    let exp = state.failures.saturating_sub(1).min(8);
                    let delay = (BACKOFF_START * 2u32.pow(exp)).min(BACKOFF_MAX);
                    state.retry_at = Some(now.after(delay));
                    state.last_error = e.to_string();
                    tracing::warn!(url = %endpoint.url, error = %e, ?delay, "Prometheus unreachable");
                }
                Err(match e {
                    PromError::Rejected { .. } => format!("{e} (query: {promql})"),
                    e => e.to_string(),
                })
            }
        }
    }

    /// One sync over every GpuAutoscaler at time `now`.
    pub async fn sync(&mut self, now: Time) -> SyncReport {
        let started = Instant::now();
        let mut report = SyncReport::default();
        let api: Api<GpuAutoscaler> = Api::all(self.client.clone());
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "listing GpuAutoscalers failed");
                return report;
            }
        };
        report.autoscalers = list.len();
        let live: BTreeSet<(String, String, String)> = list
            .iter()
            .map(|o| {
                (
                    o.namespace().unwrap_or_default(),
                    o.name_any(),
                    o.uid().unwrap_or_default(),
                )
            })
            .collect();
        self.states.retain(|k, _| live.contains(k));

        let mut ready = Vec::new();
        for obj in list {
            match self.prepare(obj).await {
                Ok(p) => ready.push(p),
                Err((obj, b)) => {
                    self.metrics.errors.with_label_values(&[b.reason]).inc();
                    let status = blocked_status(&obj, &b, now);
                    self.transition_event(&obj, &status).await;
                    self.write_status(&obj, status, &mut report).await;
                }
            }
        }

        // Per-pod series: one query per (endpoint, series) for everyone.
        let mut series: BTreeMap<Endpoint, BTreeSet<String>> = BTreeMap::new();
        for p in &ready {
            let set = series.entry(p.endpoint.clone()).or_default();
            for m in &p.spec.metrics {
                if let MetricSource::PerPod { series } = &m.source {
                    set.insert(series.clone());
                }
            }
            if self.drain_aware {
                set.extend(in_flight_series(&p.spec).into_iter().map(str::to_owned));
            }
        }
        let mut per_pod: BTreeMap<(Endpoint, String), Result<PodValues, String>> = BTreeMap::new();
        for (endpoint, names) in series {
            for name in names {
                let r = self
                    .query(&endpoint, &per_pod_query(&name), now, &mut report)
                    .await
                    .map(|rows| per_pod_values(&rows));
                per_pod.insert((endpoint.clone(), name), r);
            }
        }

        for mut p in ready {
            let ns = p.key.0.clone();
            let mut inputs = Vec::new();
            let mut values = Vec::new();
            for m in &p.spec.metrics {
                let (input, value) = match &m.source {
                    MetricSource::PerPod { series } => {
                        match per_pod.get(&(p.endpoint.clone(), series.clone())) {
                            Some(Ok(all)) => {
                                let i = observe(m, &ns, &p.pods, &Fetched::PerPod(all));
                                let v = match &i.observation {
                                    Ok(hpa::Observation::PerPod(v)) if !v.is_empty() => {
                                        #[allow(clippy::cast_precision_loss)]
                                        let n = v.len() as f64;
                                        Some(v.values().sum::<f64>() / n)
                                    }
                                    _ => None,
                                };
                                (i, v)
                            }
                            Some(Err(e)) => (observe(m, &ns, &p.pods, &Fetched::Failed(e)), None),
                            None => (
                                observe(m, &ns, &p.pods, &Fetched::Failed("not queried")),
                                None,
                            ),
                        }
                    }
                    MetricSource::Query { promql } => {
                        let r = self.query(&p.endpoint, promql, now, &mut report).await;
                        total_input(m, &ns, &p.pods, r)
                    }
                    MetricSource::Latency {
                        histogram,
                        quantile,
                        window,
                    } => {
                        let names: Vec<&str> = p.pods.iter().map(|s| s.name.as_str()).collect();
                        if names.is_empty() {
                            (
                                observe(
                                    m,
                                    &ns,
                                    &p.pods,
                                    &Fetched::Failed("the target has no pods"),
                                ),
                                None,
                            )
                        } else {
                            let q = latency_query(histogram, *quantile, *window, &ns, &names);
                            let r = self.query(&p.endpoint, &q, now, &mut report).await;
                            total_input(m, &ns, &p.pods, r)
                        }
                    }
                };
                inputs.push(input);
                values.push(value);
            }
            // Requests in flight per pod, for the scale-down order.
            let in_flight = |name: &str| -> Option<f64> {
                let mut sum = None;
                for s in in_flight_series(&p.spec) {
                    if let Some(Ok(all)) = per_pod.get(&(p.endpoint.clone(), s.to_owned()))
                        && let Some(v) = all.get(&(ns.clone(), name.to_owned()))
                    {
                        sum = Some(sum.unwrap_or(0.0) + v);
                    }
                }
                sum
            };
            for c in &mut p.drain {
                c.in_flight = in_flight(&c.name);
            }
            let state = self.states.entry(p.key.clone()).or_default();
            let rec = recommend_replicas(&p.spec.hpa, state, p.current, &p.pods, &inputs, now);
            self.metrics
                .desired
                .with_label_values(&[&p.key.0, &p.key.1])
                .set(i64::from(rec.desired));
            if rec.outcome == Outcome::NoValidMetrics {
                self.metrics
                    .errors
                    .with_label_values(&["FailedGetPrometheusMetrics"])
                    .inc();
            }
            let scaled = if rec.desired == p.current {
                None
            } else {
                if rec.desired < p.current && self.drain_aware {
                    self.mark_drain_first(&p, rec.desired).await;
                }
                let body = json!({"spec": {"replicas": rec.desired}});
                let target = &p.obj.spec.scale_target_ref;
                let r = p
                    .scale_api
                    .patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let dir = direction(p.current, rec.desired);
                report.rescales += 1;
                match &r {
                    Ok(()) => {
                        self.metrics.rescales.with_label_values(&[dir, "ok"]).inc();
                        tracing::info!(autoscaler = %format!("{}/{}", p.key.0, p.key.1), from = p.current, to = rec.desired, reason = %rec.reason, "rescaled");
                        self.event(
                            &p.obj,
                            false,
                            "SuccessfulRescale",
                            format!("New size: {}; reason: {}", rec.desired, rec.reason),
                        )
                        .await;
                    }
                    Err(e) => {
                        self.metrics
                            .rescales
                            .with_label_values(&[dir, "error"])
                            .inc();
                        self.event(
                            &p.obj,
                            true,
                            "FailedRescale",
                            format!(
                                "New size: {}; reason: {}; error: {e}",
                                rec.desired, rec.reason
                            ),
                        )
                        .await;
                    }
                }
                Some(r)
            };
            let status = decided_status(
                &p.obj,
                &p.spec,
                p.current,
                &rec,
                &values,
                scaled.as_ref(),
                now,
            );
            self.transition_event(&p.obj, &status).await;
            self.write_status(&p.obj, status, &mut report).await;
        }
        self.metrics.syncs.inc();
        self.metrics
            .sync_seconds
            .observe(started.elapsed().as_secs_f64());
        report
    }

    /// Marks the pods a scale-down to `desired` should lose with a lower
    /// deletion cost (and the policy controller's record of it, which the
    /// core's deletion costs also lower for marked pods), and clears stale
    /// marks, before `/scale` is written.
    async fn mark_drain_first(&self, p: &Prepared, desired: u32) {
        let order = scale_down_order(&p.drain);
        let lose = usize::try_from(p.current - desired).unwrap_or(usize::MAX);
        let victims: BTreeSet<&str> = order
            .iter()
            .take(lose)
            .map(|&i| p.drain[i].name.as_str())
            .collect();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &p.key.0);
        for name in &victims {
            if p.marked.iter().any(|m| m == name) {
                continue;
            }
            let (cost, record) = p
                .costs
                .get(*name)
                .copied()
                .map_or((0, None), |(c, r)| (c, r));
            let lowered = drain_first_cost(cost);
            let mut ann = serde_json::Map::new();
            ann.insert(DRAIN_FIRST_ANNOTATION.to_owned(), json!("true"));
            ann.insert(
                DELETION_COST_ANNOTATION.to_owned(),
                json!(lowered.to_string()),
            );
            if record == Some(cost) {
                ann.insert(
                    WRITTEN_COST_ANNOTATION.to_owned(),
                    json!(lowered.to_string()),
                );
            }
            let patch = json!({"metadata": {"annotations": ann}});
            if let Err(e) = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(pod = %name, error = %e, "drain-first mark failed");
            }
        }
        for name in &p.marked {
            if victims.contains(name.as_str()) {
                continue;
            }
            let patch = json!({"metadata": {"annotations": {DRAIN_FIRST_ANNOTATION: null}}});
            let _ = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }

    /// A Warning Event when a condition turns False with a new reason.
    async fn transition_event(&self, obj: &GpuAutoscaler, status: &GpuAutoscalerStatus) {
        let before = obj.status.as_ref();
        for c in &status.conditions {
            if c.status != "False" || c.type_ == "ScalingLimited" {
                continue;
            }
            let same = before
                .and_then(|s| s.conditions.iter().find(|o| o.type_ == c.type_))
                .is_some_and(|o| o.status == c.status && o.reason == c.reason);
            if !same {
                self.event(obj, true, &c.reason, c.message.clone()).await;
            }
        }
    }

    async fn write_status(
        &self,
        obj: &GpuAutoscaler,
        status: GpuAutoscalerStatus,
        report: &mut SyncReport,
    ) {
        if obj.status.as_ref() == Some(&status) {
            return;
        }
        let ns = obj.namespace().unwrap_or_default();
        let api: Api<GpuAutoscaler> = Api::namespaced(self.client.clone(), &ns);
        let body = json!({ "status": status });
        report.status_writes += 1;
        if let Err(e) = api
            .patch_status(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(body),
            )
            .await
        {
            tracing::warn!(autoscaler = %format!("{ns}/{}", obj.name_any()), error = %e, "status write failed");
        }
    }
}

/// A query's answer as the metric's input and its value for the status.
fn total_input(
    m: &crate::decision::scaler::ScalerMetric,
    ns: &str,
    pods: &[hpa::PodSample],
    r: Result<Vec<Sample>, String>,
) -> (hpa::MetricInput, Option<f64>) {
    match r {
        Ok(rows) => {
            let i = observe(m, ns, pods, &Fetched::Rows(&rows));
            let v = match &i.observation {
                Ok(
                    hpa::Observation::Total(v) | hpa::Observation::LatencyAtRate { latency: v, .. },
                ) if v.is_finite() => Some(*v),
                _ => None,
            };
            (i, v)
        }
        Err(e) => (observe(m, ns, pods, &Fetched::Failed(&e)), None),
    }
}

/// Runs a sync every `period` while `gate()` (leader and caches synced)
/// holds, until the process stops.
pub async fn run(
    mut scaler: Scaler,
    period: Duration,
    gate: Arc<dyn Fn() -> bool + Send + Sync>,
    clock: Arc<dyn Fn() -> Time + Send + Sync>,
) {
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if gate() {
            scaler.sync(clock()).await;
        }
    }
}
