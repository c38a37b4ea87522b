//! Scenario files: the cluster, services, traffic and policies to simulate.
//!
//! A scenario is YAML. Policies are the same ResourcePolicy manifests users
//! apply to the cluster (either API group); a service's `autoscaler` is the
//! `spec` of an `autoscaling/v2` HorizontalPodAutoscaler (the replica
//! scaler's algorithm is the HPA v2 one). Everything is checked before a run:
//! YAML errors carry the line and column, semantic errors name the field.
//!
//! ```text
//!  scenario.yaml ─parse─► Scenario (serde) ─compile─► Compiled (core Policy, HpaSpec, PerfModel …) ─► world
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spillway::crd::ResourcePolicyManifest;
use spillway::decision::hpa;
use spillway::decision::policy::Policy;
use spillway::decision::snapshot::Node;
use spillway::decision::time::parse_duration;

use crate::perf::{PerfModel, PerfSpec};
use crate::traffic::TrafficSpec;

/// The built-in scenario `spillway-sim run` uses without an argument.
pub const DEFAULT_SCENARIO: &str = include_str!("../scenarios/hybrid-edge.yaml");

/// A duration written as Go does (`15m`, `1h30m`) or as a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// Microseconds, the simulator's time unit.
    #[must_use]
    pub fn us(self) -> i64 {
        i64::try_from(self.0.as_micros()).unwrap_or(i64::MAX)
    }

    /// Whole seconds.
    #[must_use]
    pub fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&spillway::decision::time::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"15m\", \"90s\" or a number of seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|v| Dur(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration must not be negative"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
                Duration::try_from_secs_f64(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A scenario file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports.
    pub name: String,
    /// What the scenario models.
    #[serde(default)]
    pub description: String,
    /// Seed of every random draw (echoed in the output).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated time.
    pub duration: Dur,
    /// Time-series resolution (default 1m).
    #[serde(default = "default_sample")]
    pub sample_interval: Dur,
    /// Node pools.
    pub pools: Vec<PoolSpec>,
    /// Inference services.
    pub services: Vec<ServiceSpec>,
    /// ResourcePolicy manifests, as applied to the cluster.
    #[serde(default)]
    pub policies: Vec<ResourcePolicyManifest>,
    /// cluster-autoscaler settings.
    #[serde(default)]
    pub cluster_autoscaler: AutoscalerSpec,
    /// Metric pipeline settings.
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// The currency of every `costPerGpuHour` (a three-letter code such as
    /// `USD` or `EUR`), shown with costs in the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

fn default_seed() -> u64 {
    1
}

fn default_sample() -> Dur {
    Dur::secs(60)
}

/// Data-center pools have a fixed size; cloud pools are grown by the autoscaler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// Fixed size, amortised cost, always on.
    Datacenter,
    /// Elastic: nodes are provisioned on demand and billed while they exist.
    Cloud,
}

/// Provisioning delay of a cloud node, drawn uniformly between `min` and `max`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelaySpec {
    /// Shortest delay to Ready.
    pub min: Dur,
    /// Longest delay to Ready.
    pub max: Dur,
}

impl Default for DelaySpec {
    fn default() -> Self {
        Self {
            min: Dur::secs(300),
            max: Dur::secs(600),
        }
    }
}

/// A node pool.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    /// Pool name (also the node-group id).
    pub name: String,
    /// `datacenter` or `cloud`.
    pub kind: PoolKind,
    /// Labels of every node of the pool (policies' units select these).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// GPUs per node.
    pub gpus_per_node: u32,
    /// GPU model, informational (e.g. `h100-80gb`).
    #[serde(default)]
    pub gpu_type: String,
    /// Nodes of a data-center pool, or the initial nodes of a cloud pool.
    #[serde(default)]
    pub nodes: u32,
    /// Smallest size of a cloud pool.
    #[serde(default)]
    pub min_nodes: u32,
    /// Largest size of a cloud pool.
    #[serde(default)]
    pub max_nodes: u32,
    /// Cloud node provisioning delay (default 5–10 min).
    #[serde(default)]
    pub provisioning: DelaySpec,
    /// Price per GPU-hour (cloud) or amortised cost per GPU-hour (data center).
    #[serde(default)]
    pub cost_per_gpu_hour: f64,
}

/// Replica startup.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartupSpec {
    /// Image pull.
    #[serde(default = "default_pull")]
    pub image_pull: Dur,
    /// Model load from remote storage.
    #[serde(default = "default_load")]
    pub model_load: Dur,
    /// A node-local model cache (as Fluid provides) shortens the load to `cachedModelLoad`.
    #[serde(default)]
    pub model_cache: bool,
    /// Model load with the cache.
    #[serde(default = "default_cached_load")]
    pub cached_model_load: Dur,
}

fn default_pull() -> Dur {
    Dur::secs(60)
}
fn default_load() -> Dur {
    Dur::secs(180)
}
fn default_cached_load() -> Dur {
    Dur::secs(30)
}

impl Default for StartupSpec {
    fn default() -> Self {
        Self {
            image_pull: default_pull(),
            model_load: default_load(),
            model_cache: false,
            cached_model_load: default_cached_load(),
        }
    }
}

/// How requests reach replicas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// Each request goes at once to the ready replica with the fewest outstanding requests.
    #[default]
    LeastOutstanding,
    /// The gateway holds requests in one queue and dispatches when a replica has a free batch slot.
    CentralQueue,
}

/// Latency objective.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SloSpec {
    /// Time to first token a request must meet.
    pub ttft: Dur,
    /// End-to-end latency a request must meet, if any.
    #[serde(default)]
    pub e2e: Option<Dur>,
    /// Share of requests that must meet it (default 0.95).
    #[serde(default = "default_attainment")]
    pub target: f64,
}

fn default_attainment() -> f64 {
    0.95
}

/// An inference service (a Deployment of model-server replicas).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Service name (pods are `<name>-<n>`).
    pub name: String,
    /// Namespace of its pods (policies select within it).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Pod labels (policies select on these).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// GPUs per replica.
    pub gpus_per_replica: u32,
    /// Replicas at the start (also the fixed count without an autoscaler).
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Startup times.
    #[serde(default)]
    pub startup: StartupSpec,
    /// Service-time model.
    pub perf: PerfSpec,
    /// Continuous-batching limit per replica (vLLM's `max_num_seqs`); when
    /// absent, a profile's `maxBatch`, else 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
    /// Request routing.
    #[serde(default)]
    pub routing: Routing,
    /// What DCGM utilisation reads while the GPU is busy: ~1.0 for an optimised
    /// engine, ~0.2 for a launch-bound Python server on an H100.
    #[serde(default = "default_util_factor")]
    pub utilization_factor: f64,
    /// Grace period for draining replicas (default 30s).
    #[serde(default = "default_grace")]
    pub termination_grace_period: Dur,
    /// Latency objective.
    pub slo: SloSpec,
    /// Traffic.
    pub traffic: TrafficSpec,
    /// Replica scaler: the `spec` of an autoscaling/v2 HorizontalPodAutoscaler
    /// (`scaleTargetRef` may be given and is ignored).
    #[serde(default)]
    pub autoscaler: Option<HpaManifestSpec>,
    /// Replica scaler as a GpuAutoscaler manifest file (relative to the
    /// scenario), the one applied to the cluster; instead of `autoscaler`.
    /// Its per-pod series must be ones the simulator emulates (DCGM GPU
    /// utilisation and activity, vLLM/NIM queue depth and running requests).
    #[serde(default)]
    pub gpu_autoscaler: Option<String>,
}

fn default_namespace() -> String {
    "default".into()
}
fn default_replicas() -> u32 {
    1
}
fn default_util_factor() -> f64 {
    1.0
}
fn default_grace() -> Dur {
    Dur::secs(30)
}

/// `spec` of an autoscaling/v2 HorizontalPodAutoscaler.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaManifestSpec {
    /// Ignored: the target is the service.
    #[serde(default)]
    pub scale_target_ref: Option<serde_json::Value>,
    /// Lower bound (default 1).
    #[serde(default = "default_replicas")]
    pub min_replicas: u32,
    /// Upper bound.
    pub max_replicas: u32,
    /// Metrics (type `Pods` with an `AverageValue` target, or `Object`/`External` with a `Value` target).
    pub metrics: Vec<MetricSpec>,
    /// Scaling behaviour (upstream defaults when absent).
    #[serde(default)]
    pub behavior: Option<BehaviorSpec>,
}

/// One entry of `spec.metrics`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSpec {
    /// `Pods`, `Object` or `External`.
    #[serde(rename = "type")]
    pub type_: String,
    /// For `type: Pods`.
    #[serde(default)]
    pub pods: Option<MetricSource>,
    /// For `type: Object`.
    #[serde(default)]
    pub object: Option<MetricSource>,
    /// For `type: External`.
    #[serde(default)]
    pub external: Option<MetricSource>,
}

/// `pods` / `object` / `external` of a metric.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSource {
    /// `{name: ...}`.
    pub metric: MetricName,
    /// The target.
    pub target: MetricTarget,
    /// Ignored for `Object` (the service is the object).
    #[serde(default)]
    pub described_object: Option<serde_json::Value>,
}

/// `metric` of a metric source.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricName {
    /// Metric name, e.g. `DCGM_FI_DEV_GPU_UTIL` or `vllm:num_requests_waiting`.
    pub name: String,
    /// Ignored (the simulator emulates one series per pod).
    #[serde(default)]
    pub selector: Option<serde_json::Value>,
}

/// `target` of a metric source.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricTarget {
    /// `AverageValue` or `Value`.
    #[serde(rename = "type")]
    pub type_: String,
    /// For `AverageValue`.
    #[serde(default)]
    pub average_value: Option<serde_json::Value>,
    /// For `Value`.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
}

/// `spec.behavior`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BehaviorSpec {
    /// Scale-up rules.
    #[serde(default)]
    pub scale_up: Option<RulesSpec>,
    /// Scale-down rules.
    #[serde(default)]
    pub scale_down: Option<RulesSpec>,
}

/// `scaleUp` / `scaleDown`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RulesSpec {
    /// Stabilization window.
    #[serde(default)]
    pub stabilization_window_seconds: Option<u32>,
    /// `Max`, `Min` or `Disabled`.
    #[serde(default)]
    pub select_policy: Option<String>,
    /// Rate policies.
    #[serde(default)]
    pub policies: Option<Vec<RatePolicySpec>>,
}

/// One rate policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RatePolicySpec {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Amount.
    pub value: u32,
    /// Period.
    pub period_seconds: u32,
}

/// cluster-autoscaler settings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoscalerSpec {
    /// Scan interval (default 10s).
    #[serde(default = "default_scan")]
    pub scan_interval: Dur,
    /// How long a node must be empty before removal (default 10m).
    #[serde(default = "default_unneeded")]
    pub scale_down_unneeded_time: Dur,
}

fn default_scan() -> Dur {
    Dur::secs(10)
}
fn default_unneeded() -> Dur {
    Dur::secs(600)
}

impl Default for AutoscalerSpec {
    fn default() -> Self {
        Self {
            scan_interval: default_scan(),
            scale_down_unneeded_time: default_unneeded(),
        }
    }
}

/// Metric pipeline settings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsSpec {
    /// Prometheus scrape interval (default 15s); a scrape reports the busy
    /// share over the interval before it.
    #[serde(default = "default_scrape")]
    pub scrape_interval: Dur,
    /// How old the newest sample a query sees is, beyond the scrape itself
    /// (rule evaluation, adapter caches); default 0s.
    #[serde(default)]
    pub query_lag: Dur,
}

fn default_scrape() -> Dur {
    Dur::secs(15)
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            scrape_interval: default_scrape(),
            query_lag: Dur::default(),
        }
    }
}

/// What a metric name is emulated from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// DCGM GPU utilisation in percent (busy share × utilisation factor × 100).
    GpuUtilPercent,
    /// DCGM profiling ratios in 0..1 (busy share × utilisation factor).
    GpuActiveRatio,
    /// Requests waiting for a batch slot (`num_requests_waiting`).
    RequestsWaiting,
    /// Requests in the batch (`num_requests_running`).
    RequestsRunning,
    /// A quantile of the service's time to first token over a trailing
    /// window (a GpuAutoscaler `Latency` metric on
    /// `vllm:time_to_first_token_seconds`): the exact quantile of the first
    /// tokens in the window, where Prometheus interpolates within buckets;
    /// NaN when none came out in it.
    TtftQuantile {
        /// The quantile in thousandths (900: p90).
        permille: u16,
        /// The window in microseconds.
        window_us: i64,
    },
}

impl MetricKind {
    /// The emulation for a metric name, if the simulator knows it.
    #[must_use]
    pub fn of(name: &str) -> Option<Self> {
        let bare = name.rsplit(':').next().unwrap_or(name);
        match bare {
            "DCGM_FI_DEV_GPU_UTIL" | "DCGM_CUSTOM_PROCESS_SM_UTIL" => Some(Self::GpuUtilPercent),
            "DCGM_FI_PROF_SM_ACTIVE"
            | "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
            | "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE" => Some(Self::GpuActiveRatio),
            "num_requests_waiting" => Some(Self::RequestsWaiting),
            "num_requests_running" => Some(Self::RequestsRunning),
            _ => None,
        }
    }
}

/// A metric the replica scaler reads, compiled.
#[derive(Clone, Debug)]
pub struct CompiledMetric {
    /// Name as written.
    pub name: String,
    /// How it is emulated.
    pub kind: MetricKind,
    /// Per-pod average target, or a total (Object/External `Value`).
    pub target: hpa::Target,
    /// `type: Pods` (one value per pod) rather than one value for the service.
    pub per_pod: bool,
}

/// A service ready to simulate.
#[derive(Clone, Debug)]
pub struct CompiledService {
    /// The spec.
    pub spec: ServiceSpec,
    /// Service-time model.
    pub perf: PerfModel,
    /// Replica scaler, if any.
    pub hpa: Option<(hpa::HpaSpec, Vec<CompiledMetric>)>,
}

/// A validated scenario.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The scenario as written.
    pub scenario: Scenario,
    /// Policies converted into the core type.
    pub policies: Vec<Policy>,
    /// Services.
    pub services: Vec<CompiledService>,
    /// Folder relative paths resolve against.
    pub base_dir: PathBuf,
}

impl Compiled {
    /// Likely mistakes that do not stop a run, one message each: a unit of
    /// a policy that no node of any pool belongs to (the core's
    /// [`Policy::units_without_nodes`] over one node per pool, which carries
    /// the pool's labels). Such a unit never takes a pod.
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        let probes: Vec<Node> = self
            .scenario
            .pools
            .iter()
            .map(|pool| Node {
                name: pool.name.clone(),
                labels: pool.labels.clone(),
                ..Node::default()
            })
            .collect();
        let mut out = Vec::new();
        for p in &self.policies {
            for u in p.units_without_nodes(&probes) {
                out.push(format!(
                    "ResourcePolicy {} unit {:?} (#{u}) selects no node of any pool",
                    p.key, p.units[u].name
                ));
            }
        }
        out
    }
}

/// A problem with a scenario, naming the file and, where known, line and field.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax or schema error (the message carries line and column).
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// Parser message with location.
        message: String,
    },
    /// Semantic errors, each naming its field.
    #[error("{file}: {}", .errors.join("\n  "))]
    Invalid {
        /// The file.
        file: String,
        /// `field: message` lines.
        errors: Vec<String>,
    },
}

/// Reads and validates a scenario file.
///
/// # Errors
/// [`ScenarioError`] naming the file, line or field.
pub fn load(path: &Path) -> Result<Compiled, ScenarioError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
        file: file.clone(),
        source,
    })?;
    let base = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    parse(&text, &file, &base)
}

/// The built-in scenario, validated.
///
/// # Errors
/// Only if the embedded file were broken (a test pins that it is not).
pub fn builtin() -> Result<Compiled, ScenarioError> {
    parse(
        DEFAULT_SCENARIO,
        "<built-in hybrid-edge scenario>",
        Path::new("."),
    )
}

/// Parses and validates scenario text; `file` names it in errors.
///
/// # Errors
/// [`ScenarioError`] naming the file, line or field.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Compiled, ScenarioError> {
    let scenario: Scenario = serde_saphyr::from_str(text).map_err(|e| ScenarioError::Parse {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    compile(scenario, file, base_dir)
}

fn number(v: Option<&serde_json::Value>) -> Option<f64> {
    match v? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => {
            spillway::decision::quantity::parse_quantity(s)
                .ok()
                .map(|m| {
                    #[allow(clippy::cast_precision_loss)]
                    // metric targets are far below 2^52 milli-units
                    let v = m as f64;
                    v / 1000.0
                })
        }
        _ => None,
    }
}

fn rules(
    spec: Option<&RulesSpec>,
    default: hpa::ScalingRules,
    field: &str,
    errors: &mut Vec<String>,
) -> hpa::ScalingRules {
    let Some(spec) = spec else { return default };
    let mut out = default;
    if let Some(w) = spec.stabilization_window_seconds {
        out.stabilization_window = Duration::from_secs(u64::from(w));
    }
    if let Some(sel) = &spec.select_policy {
        out.select = match sel.as_str() {
            "Max" => hpa::SelectPolicy::Max,
            "Min" => hpa::SelectPolicy::Min,
            "Disabled" => hpa::SelectPolicy::Disabled,
            other => {
                errors.push(format!(
                    "{field}.selectPolicy: expected Max, Min or Disabled, got {other:?}"
                ));
                out.select
            }
        };
    }
    if let Some(ps) = &spec.policies {
        out.policies = ps
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let kind = match p.type_.as_str() {
                    "Pods" => hpa::PolicyKind::Pods,
                    "Percent" => hpa::PolicyKind::Percent,
                    other => {
                        errors.push(format!(
                            "{field}.policies[{i}].type: expected Pods or Percent, got {other:?}"
                        ));
                        return None;
                    }
                };
                if p.period_seconds == 0 || p.period_seconds > 1800 {
                    errors.push(format!(
                        "{field}.policies[{i}].periodSeconds: must be 1..=1800"
                    ));
                }
                Some(hpa::ScalingPolicy {
                    kind,
                    value: p.value,
                    period: Duration::from_secs(u64::from(p.period_seconds)),
                })
            })
            .collect();
    }
    out
}

fn compile_hpa(
    h: &HpaManifestSpec,
    field: &str,
    errors: &mut Vec<String>,
) -> (hpa::HpaSpec, Vec<CompiledMetric>) {
    if h.max_replicas < h.min_replicas.max(1) {
        errors.push(format!(
            "{field}.maxReplicas: must be at least minReplicas ({})",
            h.min_replicas.max(1)
        ));
    }
    if h.metrics.is_empty() {
        errors.push(format!("{field}.metrics: at least one metric is required"));
    }
    let mut metrics = Vec::new();
    for (i, m) in h.metrics.iter().enumerate() {
        let f = format!("{field}.metrics[{i}]");
        let (source, per_pod) = match m.type_.as_str() {
            "Pods" => (m.pods.as_ref(), true),
            "Object" => (m.object.as_ref(), false),
            "External" => (m.external.as_ref(), false),
            other => {
                errors.push(format!(
                    "{f}.type: expected Pods, Object or External, got {other:?}"
                ));
                continue;
            }
        };
        let Some(source) = source else {
            errors.push(format!(
                "{f}: type {} needs a {} section",
                m.type_,
                m.type_.to_lowercase()
            ));
            continue;
        };
        let Some(kind) = MetricKind::of(&source.metric.name) else {
            errors.push(format!(
                "{f}.metric.name: the simulator cannot emulate {:?} (known: DCGM_FI_DEV_GPU_UTIL, DCGM_CUSTOM_PROCESS_SM_UTIL, DCGM_FI_PROF_SM_ACTIVE, DCGM_FI_PROF_GR_ENGINE_ACTIVE, DCGM_FI_PROF_PIPE_TENSOR_ACTIVE, [vllm:]num_requests_waiting, [vllm:]num_requests_running)",
                source.metric.name
            ));
            continue;
        };
        let target = match (per_pod, source.target.type_.as_str()) {
            (_, "AverageValue") => {
                number(source.target.average_value.as_ref()).map(hpa::Target::AverageValue)
            }
            (false, "Value") => number(source.target.value.as_ref()).map(hpa::Target::Value),
            (_, other) => {
                errors.push(format!(
                    "{f}.target.type: expected AverageValue{}, got {other:?}",
                    if per_pod {
                        " (type Pods takes no Value target)"
                    } else {
                        " or Value"
                    }
                ));
                continue;
            }
        };
        match target {
            Some(t) if matches!(t, hpa::Target::AverageValue(v) | hpa::Target::Value(v) if v > 0.0) =>
            {
                metrics.push(CompiledMetric {
                    name: source.metric.name.clone(),
                    kind,
                    target: t,
                    per_pod,
                });
            }
            _ => errors.push(format!(
                "{f}.target: needs a positive averageValue or value"
            )),
        }
    }
    let behavior = h.behavior.clone().unwrap_or_default();
    let spec = hpa::HpaSpec {
        min_replicas: h.min_replicas.max(1),
        max_replicas: h.max_replicas,
        behavior: hpa::Behavior {
            scale_up: rules(
                behavior.scale_up.as_ref(),
                hpa::ScalingRules::default_scale_up(),
                &format!("{field}.behavior.scaleUp"),
                errors,
            ),
            scale_down: rules(
                behavior.scale_down.as_ref(),
                hpa::ScalingRules::default_scale_down(),
                &format!("{field}.behavior.scaleDown"),
                errors,
            ),
        },
        tolerance: hpa::DEFAULT_TOLERANCE,
    };
    (spec, metrics)
}

/// A GpuAutoscaler manifest file into the core's scaler spec (the type the
/// cluster's scaler converts to) and the simulator's emulation of each metric.
fn compile_gpu_autoscaler(
    path: &Path,
    field: &str,
    errors: &mut Vec<String>,
) -> Option<(hpa::HpaSpec, Vec<CompiledMetric>)> {
    use spillway::crd::gpu_autoscaler::GpuAutoscalerSpec;
    use spillway::decision::scaler::MetricSource;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!("{field}: {}: {e}", path.display()));
            return None;
        }
    };
    let doc: serde_json::Value = match serde_saphyr::from_str(&text) {
        Ok(d) => d,
        Err(e) => {
            errors.push(format!("{field}: {}: {e}", path.display()));
            return None;
        }
    };
    if doc["kind"] != "GpuAutoscaler" {
        errors.push(format!(
            "{field}: {}: expected kind GpuAutoscaler, found {}",
            path.display(),
            doc["kind"]
        ));
        return None;
    }
    let spec: GpuAutoscalerSpec = match serde_json::from_value(doc["spec"].clone()) {
        Ok(s) => s,
        Err(e) => {
            errors.push(format!("{field}: {}: spec: {e}", path.display()));
            return None;
        }
    };
    let scaler = match spec.to_scaler() {
        Ok(s) => s,
        Err(es) => {
            for e in es {
                errors.push(format!(
                    "{field}: {}: {}: {}",
                    path.display(),
                    e.field,
                    e.message
                ));
            }
            return None;
        }
    };
    let mut metrics = Vec::new();
    for (i, m) in scaler.metrics.iter().enumerate() {
        let at = format!("{field}: {}: spec.metrics[{i}]", path.display());
        match &m.source {
            MetricSource::PerPod { series } => match MetricKind::of(series) {
                Some(kind) => metrics.push(CompiledMetric {
                    name: m.name.clone(),
                    kind,
                    target: m.target,
                    per_pod: true,
                }),
                None => errors.push(format!(
                    "{at}: the simulator cannot emulate the series {series:?} (known: DCGM_FI_DEV_GPU_UTIL, DCGM_CUSTOM_PROCESS_SM_UTIL, DCGM_FI_PROF_SM_ACTIVE, DCGM_FI_PROF_GR_ENGINE_ACTIVE, DCGM_FI_PROF_PIPE_TENSOR_ACTIVE, [vllm:]num_requests_waiting, [vllm:]num_requests_running)"
                )),
            },
            MetricSource::Query { .. } => errors.push(format!(
                "{at}: a PromQL query cannot be emulated; plan with a GPU, Pods or QueueDepth metric"
            )),
            MetricSource::Latency {
                histogram,
                quantile,
                window,
            } if histogram.rsplit(':').next() == Some("time_to_first_token_seconds") => {
                // quantile is in (0, 1): the permille fits a u16.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let permille = (quantile * 1000.0).round() as u16;
                metrics.push(CompiledMetric {
                    name: m.name.clone(),
                    kind: MetricKind::TtftQuantile {
                        permille,
                        window_us: i64::try_from(window.as_micros()).unwrap_or(i64::MAX),
                    },
                    target: m.target,
                    per_pod: false,
                });
            }
            MetricSource::Latency { histogram, .. } => errors.push(format!(
                "{at}: the simulator emulates latency objectives on vllm:time_to_first_token_seconds only, not {histogram:?}"
            )),
        }
    }
    Some((scaler.hpa, metrics))
}

fn compile(scenario: Scenario, file: &str, base_dir: &Path) -> Result<Compiled, ScenarioError> {
    let mut errors = Vec::new();
    if scenario.duration.0.is_zero() {
        errors.push("duration: must be positive".to_owned());
    }
    if scenario.sample_interval.0 < Duration::from_secs(1) {
        errors.push("sampleInterval: must be at least 1s".to_owned());
    }
    if scenario.pools.is_empty() {
        errors.push("pools: at least one pool is required".to_owned());
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in scenario.pools.iter().enumerate() {
        let f = format!("pools[{i}]");
        if !names.insert(p.name.clone()) {
            errors.push(format!("{f}.name: duplicate pool {:?}", p.name));
        }
        if p.gpus_per_node == 0 {
            errors.push(format!("{f}.gpusPerNode: must be at least 1"));
        }
        if p.cost_per_gpu_hour < 0.0 || !p.cost_per_gpu_hour.is_finite() {
            errors.push(format!("{f}.costPerGpuHour: must be 0 or more"));
        }
        match p.kind {
            PoolKind::Datacenter if p.nodes == 0 => {
                errors.push(format!("{f}.nodes: a datacenter pool needs nodes"));
            }
            PoolKind::Cloud
                if p.max_nodes == 0 || p.max_nodes < p.min_nodes || p.nodes > p.max_nodes =>
            {
                errors.push(format!("{f}.maxNodes: a cloud pool needs minNodes <= nodes <= maxNodes and maxNodes >= 1"));
            }
            _ => {}
        }
        if p.provisioning.min.0 > p.provisioning.max.0 {
            errors.push(format!("{f}.provisioning: min is larger than max"));
        }
    }
    let mut policies = Vec::new();
    for (i, m) in scenario.policies.iter().enumerate() {
        match m.to_policy() {
            Ok(p) => policies.push(p),
            Err(e) => {
                for fe in e.errors {
                    errors.push(format!("policies[{i}].{}: {}", fe.field, fe.message));
                }
            }
        }
    }
    if let Some(c) = &scenario.currency
        && !(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        errors.push(format!(
            "currency: `{c}` is not a three-letter currency code such as USD or EUR"
        ));
    }
    if scenario.services.is_empty() {
        errors.push("services: at least one service is required".to_owned());
    }
    let mut services = Vec::new();
    for (i, s) in scenario.services.iter().enumerate() {
        let f = format!("services[{i}]");
        if s.gpus_per_replica == 0 {
            errors.push(format!("{f}.gpusPerReplica: must be at least 1"));
        }
        if s.max_batch == Some(0) {
            errors.push(format!("{f}.maxBatch: must be at least 1"));
        }
        if !(s.utilization_factor > 0.0 && s.utilization_factor <= 1.0) {
            errors.push(format!("{f}.utilizationFactor: must be in (0, 1]"));
        }
        if !(s.slo.target > 0.0 && s.slo.target <= 1.0) {
            errors.push(format!("{f}.slo.target: must be in (0, 1]"));
        }
        let fits_somewhere = scenario
            .pools
            .iter()
            .any(|p| p.gpus_per_node >= s.gpus_per_replica);
        if !fits_somewhere {
            errors.push(format!(
                "{f}.gpusPerReplica: no pool has nodes with {} GPUs",
                s.gpus_per_replica
            ));
        }
        let perf = match PerfModel::from_spec_in(&s.perf, s.max_batch.map(|b| b.max(1)), base_dir) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(format!("{f}.perf: {e}"));
                None
            }
        };
        let hpa = match (&s.autoscaler, &s.gpu_autoscaler) {
            (Some(_), Some(_)) => {
                errors.push(format!("{f}: set autoscaler or gpuAutoscaler, not both"));
                None
            }
            (Some(h), None) => Some(compile_hpa(h, &format!("{f}.autoscaler"), &mut errors)),
            (None, Some(path)) => compile_gpu_autoscaler(
                &base_dir.join(path),
                &format!("{f}.gpuAutoscaler"),
                &mut errors,
            ),
            (None, None) => None,
        };
        if let Err(e) = crate::traffic::stream(&s.traffic, scenario.seed, 1, base_dir) {
            errors.push(format!("{f}.traffic: {e}"));
        }
        if let Some(perf) = perf {
            services.push(CompiledService {
                spec: s.clone(),
                perf,
                hpa,
            });
        }
    }
    if !errors.is_empty() {
        return Err(ScenarioError::Invalid {
            file: file.to_owned(),
            errors,
        });
    }
    Ok(Compiled {
        scenario,
        policies,
        services,
        base_dir: base_dir.to_path_buf(),
    })
}
