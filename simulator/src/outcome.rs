//! What a run produces: the summary, the time series and the scale events.
//! Plain data, serialised as `summary.json` / `timeseries.csv` and drawn in
//! `index.html` by [`crate::report`]. Everything here is a function of the
//! scenario and seed only (no wall-clock numbers), so two runs compare byte
//! for byte.

use serde::Serialize;

/// Latency percentiles in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Request counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    /// Arrived during the run.
    pub arrived: u64,
    /// Completed.
    pub completed: u64,
    /// Still queued or running at the end.
    pub unfinished: u64,
    /// Dropped when a draining replica's grace period ran out.
    pub dropped: u64,
}

/// SLO outcome of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SloOutcome {
    /// TTFT objective, seconds.
    pub ttft_s: f64,
    /// End-to-end objective, seconds, if any.
    pub e2e_s: Option<f64>,
    /// Required share of requests.
    pub target: f64,
    /// Share of completed requests meeting the objective(s).
    pub attainment: f64,
    /// `attainment >= target`.
    pub met: bool,
}

/// Per-service results.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServiceOutcome {
    /// Service name.
    pub name: String,
    /// Requests.
    pub requests: RequestCounts,
    /// Time to first token.
    pub ttft: Percentiles,
    /// End-to-end latency.
    pub e2e: Percentiles,
    /// Time waiting for a batch slot.
    pub queue: Percentiles,
    /// SLO.
    pub slo: SloOutcome,
    /// Most replicas at once (including starting ones).
    pub peak_replicas: u32,
    /// The replica scaler's `maxReplicas`; absent without a scaler.
    pub max_replicas: Option<u32>,
    /// Simulated seconds the service sat at `maxReplicas` (sampled every
    /// `sampleInterval`): the scaler could add no replica then, whatever the load.
    pub at_max_replicas_s: f64,
    /// Replica scale events (changes of desired replicas).
    pub scale_events: u32,
    /// Replica-hours by pool name.
    pub replica_hours_by_pool: Vec<(String, f64)>,
    /// Replica-hours by policy unit name (`-` outside every unit).
    pub replica_hours_by_unit: Vec<(String, f64)>,
}

/// Per-pool results.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PoolOutcome {
    /// Pool name.
    pub name: String,
    /// `datacenter` or `cloud`.
    pub kind: String,
    /// Node-hours (billed time of cloud nodes; whole run for data-center nodes).
    pub node_hours: f64,
    /// GPU-hours.
    pub gpu_hours: f64,
    /// GPU-hours held by replicas.
    pub gpu_hours_used: f64,
    /// Cost (GPU-hours × cost per GPU-hour).
    pub cost: f64,
    /// Nodes provisioned during the run.
    pub nodes_provisioned: u32,
    /// Nodes removed during the run.
    pub nodes_removed: u32,
    /// Most nodes at once.
    pub peak_nodes: u32,
}

/// The run's summary (`summary.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Simulated seconds.
    pub duration_s: f64,
    /// The currency of the costs, when the scenario names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Total cost over all pools.
    pub cost_total: f64,
    /// Total GPU-hours over all pools.
    pub gpu_hours_total: f64,
    /// Share of replica-hours spent on cloud pools.
    pub spill_fraction: f64,
    /// Pods created by scale-out.
    pub pods_created: u32,
    /// Time from pod creation to binding.
    pub pending_time: Percentiles,
    /// Pools.
    pub pools: Vec<PoolOutcome>,
    /// Services.
    pub services: Vec<ServiceOutcome>,
    /// Discrete events processed (a deterministic count).
    pub events: u64,
    /// With `spec.spillBack` on a policy: the pods it moved, and what it
    /// saved against the same run without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spill_back: Option<SpillBackOutcome>,
    /// Scale-up headroom against a run without it; absent unless a policy sets `headroom`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headroom: Option<HeadroomOutcome>,
}

/// Spill-back's effect: this run against the same scenario and seed with
/// `spillBack` removed from every policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SpillBackOutcome {
    /// Pods evicted to move to an earlier unit.
    pub evictions: u32,
    /// GPU-hours held by replicas on cloud pools, with spill-back.
    pub cloud_gpu_hours_used: f64,
    /// The same without spill-back.
    pub baseline_cloud_gpu_hours_used: f64,
    /// GPU-hours billed on cloud pools, with and without spill-back.
    pub cloud_gpu_hours: f64,
    /// The same without spill-back.
    pub baseline_cloud_gpu_hours: f64,
    /// Total cost without spill-back (this run's is `cost_total`).
    pub baseline_cost_total: f64,
    /// `baseline_cost_total − cost_total` (negative: spill-back cost more).
    pub cost_saved: f64,
    /// SLO attainment per service without spill-back, in service order.
    pub baseline_slo_attainment: Vec<f64>,
}

/// One change of a service's desired replicas.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScaleEvent {
    /// Simulated seconds.
    pub t_s: f64,
    /// Service.
    pub service: String,
    /// Replicas before.
    pub from: u32,
    /// Replicas after.
    pub to: u32,
    /// The scaler's reason.
    pub reason: String,
}

/// The time series (`timeseries.csv`): one row per sample interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    /// Column names; the first is `t_s`.
    pub columns: Vec<String>,
    /// Rows, one value per column.
    pub rows: Vec<Vec<f64>>,
}

impl Series {
    /// Index of a column.
    #[must_use]
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Values of a column.
    #[must_use]
    pub fn values(&self, name: &str) -> Vec<f64> {
        self.column(name)
            .map(|i| self.rows.iter().map(|r| r[i]).collect())
            .unwrap_or_default()
    }
}

/// Everything a run produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// The summary.
    pub summary: Summary,
    /// The time series.
    pub series: Series,
    /// Scale events in time order.
    pub scale_events: Vec<ScaleEvent>,
    /// cluster-autoscaler scale-ups in time order: the node group the
    /// expander chose and the nodes added.
    pub node_scale_ups: Vec<NodeScaleUp>,
}

/// What `spec.headroom` did, against the same scenario and seed run
/// without it (filled in by [`crate::simulate_with_baseline`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeadroomOutcome {
    /// Nodes started ahead of demand.
    pub nodes_started: u32,
    /// Total cost with headroom.
    pub cost_total: f64,
    /// Total cost without it.
    pub baseline_cost_total: f64,
    /// What the early nodes cost: `cost_total − baseline_cost_total`.
    pub cost_paid: f64,
    /// Pod pending time (creation to running), with headroom.
    pub pending_time: Percentiles,
    /// Pod pending time without it.
    pub baseline_pending_time: Percentiles,
    /// Per service, in order: TTFT p95 (s) with headroom.
    pub ttft_p95_s: Vec<f64>,
    /// Per service: TTFT p95 (s) without it.
    pub baseline_ttft_p95_s: Vec<f64>,
    /// Per service: SLO attainment with headroom.
    pub slo_attainment: Vec<f64>,
    /// Per service: SLO attainment without it.
    pub baseline_slo_attainment: Vec<f64>,
}

/// One cluster-autoscaler scale-up.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeScaleUp {
    /// Simulated seconds.
    pub t_s: f64,
    /// The pool (node group) grown.
    pub pool: String,
    /// Nodes added (cluster-autoscaler's own estimate).
    pub nodes: u32,
    /// The expander's reason for the choice.
    pub reason: String,
}
