//! Prometheus metrics of the extender (`GET /metrics`).
//!
//! Per verb: request count, latency histogram, errors by reason. Per policy
//! unit: Filter decisions and spills. Reservations: live (gauge) and expired
//! (counter). Index sizes and watch activity for the cluster feed.
//! Label values are bounded: verbs and reasons are fixed sets, policies and
//! units come from the (few) ResourcePolicies of the cluster.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: 50 µs to 5 s (the scheduler's timeout).
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Every metric the extender exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `spillway_extender_requests_total{verb}`.
    pub requests: IntCounterVec,
    /// `spillway_extender_request_duration_seconds{verb}`.
    pub latency: HistogramVec,
    /// `spillway_extender_errors_total{verb,reason}`.
    pub errors: IntCounterVec,
    /// `spillway_filter_decisions_total{policy,unit,decision}`.
    pub decisions: IntCounterVec,
    /// `spillway_spills_total{policy,unit}`: Filter admitted a pod to a unit
    /// after the first.
    pub spills: IntCounterVec,
    /// `spillway_reservations_live`.
    pub reservations_live: IntGauge,
    /// `spillway_reservations_expired_total`.
    pub reservations_expired: IntCounter,
    /// `spillway_reservations_unbound_total`: assumed slots released because
    /// no Bind followed within the grace while the watch showed the pod
    /// pending.
    pub reservations_unbound: IntCounter,
    /// `spillway_binds_total{result}` (`ok`, `conflict`, `node_gone`, `api`, `rejected`).
    pub binds: IntCounterVec,
    /// `spillway_index_objects{kind}`.
    pub index_objects: IntGaugeVec,
    /// `spillway_watch_events_total{kind}`.
    pub watch_events: IntCounterVec,
    /// `spillway_watch_errors_total{kind}`.
    pub watch_errors: IntCounterVec,
    /// `spillway_invalid_objects_total{kind}`: objects the index skipped.
    pub invalid_objects: IntCounterVec,
    /// `spillway_api_writes_total{kind,result}`: annotations, Events.
    pub api_writes: IntCounterVec,
    /// `spillway_cache_synced{kind}`: 1 once the kind's watch finished its
    /// (re-)list, 0 while it lists.
    pub cache_synced: IntGaugeVec,
    /// `spillway_not_ready_refusals_total{verb}`: requests refused because
    /// a cache was not synced.
    pub not_ready_refusals: IntCounterVec,
    /// `spillway_leader`: 1 while this replica leads (always 1 without
    /// leader election), 0 while it follows.
    pub leader: IntGauge,
    /// `spillway_leader_acquired_total`: terms this replica began.
    pub leader_acquired: IntCounter,
    /// `spillway_unit_pods{policy,unit}`: pods counted in the unit (bound or reserved).
    pub unit_pods: IntGaugeVec,
    /// `spillway_unit_max{policy,unit}`: the unit's `max` (absent when uncapped).
    pub unit_max: IntGaugeVec,
    /// `spillway_unit_reserved{policy,unit}`: of those, assumed and not yet bound.
    pub unit_reserved: IntGaugeVec,
    /// `spillway_unit_waiting{policy,unit}`: pending pods waiting for room in the unit.
    pub unit_waiting: IntGaugeVec,
    /// `spillway_deletion_cost_patches_total`: pods whose
    /// `pod-deletion-cost` the controller wrote.
    pub deletion_cost_patches: IntCounter,
    /// `spillway_spill_back_evictions_total{result}` (`ok`, `blocked` by a
    /// PodDisruptionBudget, `error`).
    pub spill_back_evictions: IntCounterVec,
    /// `spillway_controller_reconcile_duration_seconds`: how long each
    /// policy controller reconcile held the index (Filters and Binds wait
    /// meanwhile).
    pub reconcile_duration: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` (built by `build`) in `registry` and returns it.
/// Names and labels are constants of this module, so neither step can fail
/// at run time.
pub(crate) fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    build: prometheus::Result<M>,
) -> M {
    let metric = build.unwrap_or_else(|e| unreachable!("metric definition: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| unreachable!("metric registration: {e}"));
    metric
}

/// A labelled counter, registered in `registry`.
pub(crate) fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    #[must_use]
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "spillway_extender_request_duration_seconds",
                    "Time to answer an extender request, by verb.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["verb"],
            ),
        );
        let reservations_live = register(
            &registry,
            IntGauge::new(
                "spillway_reservations_live",
                "Slots reserved at Filter or Bind and not yet visible in the watch.",
            ),
        );
        let reservations_expired = register(
            &registry,
            IntCounter::new(
                "spillway_reservations_expired_total",
                "Reservations that lapsed without a Bind or a watch confirmation.",
            ),
        );
        let reservations_unbound = register(
            &registry,
            IntCounter::new(
                "spillway_reservations_unbound_total",
                "Filter reservations released because no Bind followed within the grace while the watch showed the pod pending.",
            ),
        );
        let index_objects = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("spillway_index_objects", "Objects in the index, by kind."),
                &["kind"],
            ),
        );
        let cache_synced = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "spillway_cache_synced",
                    "1 when the kind's watch has finished its (re-)list, 0 while it lists.",
                ),
                &["kind"],
            ),
        );
        let unit_gauge = |name: &str, help: &str| {
            register(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), &["policy", "unit"]),
            )
        };
        let unit_pods = unit_gauge(
            "spillway_unit_pods",
            "Pods counted in a policy's unit (bound or reserved).",
        );
        let unit_max = unit_gauge(
            "spillway_unit_max",
            "A unit's max (absent when the unit has none).",
        );
        let unit_reserved = unit_gauge(
            "spillway_unit_reserved",
            "Pods counted in a unit that are assumed at Filter or Bind and not yet bound in the watch.",
        );
        let unit_waiting = unit_gauge(
            "spillway_unit_waiting",
            "Pending pods waiting for room in a unit.",
        );
        let leader = register(
            &registry,
            IntGauge::new(
                "spillway_leader",
                "1 while this replica holds the leader lease (always 1 without leader election).",
            ),
        );
        // Without leader election every replica decides.
        leader.set(1);
        let leader_acquired = register(
            &registry,
            IntCounter::new(
                "spillway_leader_acquired_total",
                "Leader terms this replica began.",
            ),
        );
        let reconcile_duration = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "spillway_controller_reconcile_duration_seconds",
                    "Time each policy controller reconcile held the index; Filter and Bind requests wait meanwhile.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            ),
        );
        let deletion_cost_patches = register(
            &registry,
            IntCounter::new(
                "spillway_deletion_cost_patches_total",
                "Pods whose controller.kubernetes.io/pod-deletion-cost the policy controller wrote.",
            ),
        );
        Self {
            requests: counter(
                &registry,
                "spillway_extender_requests_total",
                "Extender requests, by verb.",
                &["verb"],
            ),
            errors: counter(
                &registry,
                "spillway_extender_errors_total",
                "Extender requests answered with an error, by verb and reason.",
                &["verb", "reason"],
            ),
            decisions: counter(
                &registry,
                "spillway_filter_decisions_total",
                "Filter decisions for governed pods, by policy, unit and decision.",
                &["policy", "unit", "decision"],
            ),
            spills: counter(
                &registry,
                "spillway_spills_total",
                "Pods admitted to a unit after the policy's first, by policy and unit.",
                &["policy", "unit"],
            ),
            binds: counter(
                &registry,
                "spillway_binds_total",
                "Bind calls, by result.",
                &["result"],
            ),
            watch_events: counter(
                &registry,
                "spillway_watch_events_total",
                "Watch events applied to the index, by kind.",
                &["kind"],
            ),
            watch_errors: counter(
                &registry,
                "spillway_watch_errors_total",
                "Watch stream errors (the watch retries with backoff), by kind.",
                &["kind"],
            ),
            invalid_objects: counter(
                &registry,
                "spillway_invalid_objects_total",
                "Objects the index could not convert and skipped, by kind.",
                &["kind"],
            ),
            api_writes: counter(
                &registry,
                "spillway_api_writes_total",
                "Writes off the request path (wait-clock annotations, Events, policy status), by kind and result.",
                &["kind", "result"],
            ),
            not_ready_refusals: counter(
                &registry,
                "spillway_not_ready_refusals_total",
                "Requests refused because the caches were not synced (Filter answered an Error, Bind refused, Preempt allowed nothing), by verb.",
                &["verb"],
            ),
            spill_back_evictions: counter(
                &registry,
                "spillway_spill_back_evictions_total",
                "Spill-back evictions, by result (ok, blocked by a PodDisruptionBudget, error).",
                &["result"],
            ),
            cache_synced,
            leader,
            leader_acquired,
            unit_pods,
            unit_max,
            unit_reserved,
            unit_waiting,
            deletion_cost_patches,
            reconcile_duration,
            registry,
            latency,
            reservations_live,
            reservations_expired,
            reservations_unbound,
            index_objects,
        }
    }

    /// Counts one write off the request path of `kind`: `ok` or `error`.
    pub fn count_write(&self, kind: &str, ok: bool) {
        self.api_writes
            .with_label_values(&[kind, if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The registry, for drivers that register their own metrics beside
    /// the extender's (one /metrics for the process).
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
