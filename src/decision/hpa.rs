//! The Kubernetes HorizontalPodAutoscaler (autoscaling/v2) replica
//! recommendation, as one pure function per sync.
//!
//! This module owns what kube-controller-manager's HPA controller decides
//! between reading metrics and writing `spec.replicas`: the per-metric replica
//! proposals (tolerance, missing and not-yet-ready pods), how several metrics
//! combine, the stabilization windows, the `behavior` rate limits and the
//! `minReplicas`/`maxReplicas` bounds. Reading metrics and pods is the
//! caller's job; time arrives as `now`, and the controller's memory between
//! syncs is the plain [`HpaState`] the caller keeps.
//!
//! ```text
//!  per metric   pods ──► group ──────────────────► usage ratio ──► proposal
//!                        ignore terminating/failed;  within tolerance → current;
//!                        set aside unready, missing  else recompute with missing
//!                                                    at target (down) / 0 (up)
//!                                                    and unready at 0 (up)
//!
//!  per sync     proposals ──► largest ──► stabilize ──► rate limit, min/max ──► desired
//!                             (some invalid  │  ▲            ▲                     │
//!                             and largest <  ▼  │            │                     ▼
//!                             current:      raw recommendations     scale events (desired ≠ current)
//!                             keep current)  └──────────────── HpaState ──────────────┘
//! ```
//!
//! Before any of that, a target at 0 replicas (with `minReplicas` > 0) is not
//! scaled at all, and a target outside `[minReplicas, maxReplicas]` is brought
//! to the nearest bound without looking at metrics.
//!
//! Choices where this differs from upstream (each also noted where it applies):
//! - Not-yet-ready pods are set aside for every per-pod metric, not only for
//!   CPU: a loading model server's GPU or queue metrics mislead as much as its
//!   CPU does. A not-ready pod is set aside even when it reports a value.
//! - Per-pod values for pods not in `pods` are ignored.
//! - A [`Target::Value`] metric with no ready pods is invalid instead of
//!   proposing 0 replicas; ready pods count only when not terminating.
//! - Rate limits use exact integer arithmetic instead of `float64`.
//! - Scaling rules with no policies do not move in their direction.
//! - State keeps only entries young enough to matter, so a window or period
//!   lengthened later starts from a shorter history than upstream would keep.

use std::collections::BTreeMap;
use std::time::Duration;

use super::time::{Time, format_duration};

/// The default tolerance (`--horizontal-pod-autoscaler-tolerance`): no
/// scaling while the usage ratio is within 10 % of 1.0.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// How often the controller syncs each HPA
/// (`--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);

/// How a scaling policy measures change (`HPAScalingPolicyType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// At most `value` replicas added or removed per period.
    Pods,
    /// At most `value` percent of the replicas at the start of the period
    /// added or removed per period.
    Percent,
}

/// One rate limit (`HPAScalingPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScalingPolicy {
    /// Pods or Percent.
    pub kind: PolicyKind,
    /// Replicas (Pods) or percent (Percent) allowed per period.
    pub value: u32,
    /// The sliding window the change is measured over (`periodSeconds`).
    pub period: Duration,
}

/// Which policy wins when a direction has several (`selectPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SelectPolicy {
    /// The policy allowing the largest change (the default).
    #[default]
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// The rules for one scaling direction (`HPAScalingRules`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalingRules {
    /// How far back raw recommendations are considered
    /// (`stabilizationWindowSeconds`).
    pub stabilization_window: Duration,
    /// The rate limits. Kubernetes requires at least one; with none, this
    /// direction does not move.
    pub policies: Vec<ScalingPolicy>,
    /// How the policies combine.
    pub select: SelectPolicy,
}

impl ScalingRules {
    /// Upstream's scale-up default: no stabilization, at most double or add
    /// 4 pods (whichever is more) every 15 s.
    #[must_use]
    pub fn default_scale_up() -> Self {
        Self {
            stabilization_window: Duration::ZERO,
            policies: vec![
                ScalingPolicy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period: SYNC_PERIOD,
                },
                ScalingPolicy {
                    kind: PolicyKind::Pods,
                    value: 4,
                    period: SYNC_PERIOD,
                },
            ],
            select: SelectPolicy::Max,
        }
    }

    /// Upstream's scale-down default: the highest recommendation of the last
    /// 300 s, then down to any count (100 % per 15 s).
    #[must_use]
    pub fn default_scale_down() -> Self {
        Self {
            stabilization_window: Duration::from_secs(300),
            policies: vec![ScalingPolicy {
                kind: PolicyKind::Percent,
                value: 100,
                period: SYNC_PERIOD,
            }],
            select: SelectPolicy::Max,
        }
    }

    /// The longest policy period: how long scale events matter.
    fn longest_period(&self) -> Duration {
        self.policies
            .iter()
            .map(|p| p.period)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

/// Scaling behavior in both directions (`HorizontalPodAutoscalerBehavior`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behavior {
    /// Rules for adding replicas.
    pub scale_up: ScalingRules,
    /// Rules for removing replicas.
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    /// Upstream's defaults, as the API server fills them in.
    fn default() -> Self {
        Self {
            scale_up: ScalingRules::default_scale_up(),
            scale_down: ScalingRules::default_scale_down(),
        }
    }
}

/// The parts of an HPA spec the recommendation depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct HpaSpec {
    /// Lower bound for the desired replicas (`minReplicas`; 0 allows
    /// scaling to and from zero, upstream's `HPAScaleToZero`).
    pub min_replicas: u32,
    /// Upper bound for the desired replicas (`maxReplicas`; read as at least
    /// `min_replicas`).
    pub max_replicas: u32,
    /// Stabilization windows and rate limits.
    pub behavior: Behavior,
    /// How far the usage ratio may stray from 1.0 without scaling
    /// (negative or NaN is read as 0).
    pub tolerance: f64,
}

impl HpaSpec {
    /// A spec with the given bounds, default behavior and default tolerance.
    #[must_use]
    pub fn new(min_replicas: u32, max_replicas: u32) -> Self {
        Self {
            min_replicas,
            max_replicas,
            behavior: Behavior::default(),
            tolerance: DEFAULT_TOLERANCE,
        }
    }
}

/// What a metric targets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Average of a per-pod value (type Pods / AverageValue; also resource
    /// Utilization expressed as a per-pod average). Over a
    /// [`Observation::Total`] it is the Object/External AverageValue target:
    /// desired = ceil(total / average).
    AverageValue(f64),
    /// A single total value for the whole target (type Object/External with
    /// Value target): desired = ceil(ready pods × value / target).
    Value(f64),
    /// A latency objective over a [`Observation::Total`] (a histogram
    /// quantile, in the objective's unit). Latency is not proportional to
    /// replicas, so this is a band with hysteresis instead of a ratio:
    /// - above `objective × (1 + tolerance)`: `ceil(current × min(ratio, 2))`,
    ///   at least one more (at most doubling per sync; behavior limits further);
    /// - below `objective × scale_down_below`: the replicas that would put
    ///   latency at that lower edge if it were proportional to load per
    ///   replica, `ceil(current × ratio / scale_down_below)`, at least one and
    ///   at most half fewer; with no requests in the window (NaN), half;
    /// - in between: keep `current`, which with "largest proposal wins" also
    ///   holds off a scale-down other metrics propose.
    ///
    /// The gap between the two edges (by default from half the objective to
    /// 110 % of it) and the scale-down stabilization window keep it from
    /// flapping where latency is smooth in load. Near a queueing cliff (one
    /// replica far too slow, two far below half the objective) a band alone
    /// would step down into the cliff and back; with the request rate
    /// ([`Observation::LatencyAtRate`]) the rule remembers the load per
    /// replica at which the objective was missed and never scales down to
    /// where the load per replica would come within the tolerance of it.
    Latency {
        /// The objective (e.g. 1.0 for a 1 s TTFT p90).
        objective: f64,
        /// Scale down only below this fraction of the objective (0 < f < 1).
        scale_down_below: f64,
    },
}

/// The default lower edge of a [`Target::Latency`] band.
pub const DEFAULT_SCALE_DOWN_BELOW: f64 = 0.5;

/// One pod of the scale target, as the recommendation sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodSample {
    /// Pod name; per-pod metric values are keyed by it. Unique per sync.
    pub name: String,
    /// The pod's Ready condition is true.
    pub ready: bool,
    /// The pod has a deletion timestamp.
    pub terminating: bool,
    /// The pod's phase is Failed.
    pub failed: bool,
}

impl PodSample {
    /// A ready pod that is neither terminating nor failed.
    #[must_use]
    pub fn running(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ready: true,
            terminating: false,
            failed: false,
        }
    }

    /// A pod that is not ready yet (still starting or loading its model).
    #[must_use]
    pub fn not_ready(name: &str) -> Self {
        Self {
            ready: false,
            ..Self::running(name)
        }
    }
}

/// One metric's observation: per-pod values (for AverageValue) or a total
/// (for Value).
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// Values by pod name. A pod of the target without an entry is missing
    /// its metric.
    PerPod(BTreeMap<String, f64>),
    /// One value per entry of the recommendation's `pods`, in the same
    /// order (`None`: the pod is missing its metric). The same observation as
    /// [`Self::PerPod`] for callers that already hold values by pod (the
    /// simulator), without a map keyed by name.
    InPodOrder(Vec<Option<f64>>),
    /// One value for the whole target.
    Total(f64),
    /// A latency (for a [`Target::Latency`]) with the target's request rate
    /// over the same window, in requests per second. With the rate, the
    /// latency rule remembers the load per replica at which the objective
    /// was missed and never scales down to where that load would come back.
    LatencyAtRate {
        /// The latency, in the objective's unit (NaN: no requests).
        latency: f64,
        /// Requests per second over the latency's window.
        rate: f64,
    },
}

/// One metric of the HPA with what was observed this sync.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricInput {
    /// Name for proposals and reasons.
    pub name: String,
    /// The target value.
    pub target: Target,
    /// The observation, or why the metric could not be read.
    pub observation: Result<Observation, String>,
}

impl MetricInput {
    /// A metric observed per pod.
    #[must_use]
    pub fn per_pod(name: &str, target: Target, values: BTreeMap<String, f64>) -> Self {
        Self {
            name: name.to_owned(),
            target,
            observation: Ok(Observation::PerPod(values)),
        }
    }

    /// A metric observed as one total.
    #[must_use]
    pub fn total(name: &str, target: Target, value: f64) -> Self {
        Self {
            name: name.to_owned(),
            target,
            observation: Ok(Observation::Total(value)),
        }
    }

    /// A metric that could not be read.
    #[must_use]
    pub fn unavailable(name: &str, target: Target, error: &str) -> Self {
        Self {
            name: name.to_owned(),
            target,
            observation: Err(error.to_owned()),
        }
    }
}

/// A replica count at an instant: a raw recommendation, or the size of a
/// scale event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamped {
    at: Time,
    replicas: u32,
}

/// Scaler memory between syncs (plain data; the driver keeps it, the
/// simulator too). One per HPA.
///
/// Invariant: after each [`recommend_replicas`] call it holds only entries
/// younger than the longest stabilization window (recommendations) or the
/// longest policy period (scale events), so at one call per [`SYNC_PERIOD`]
/// it stays bounded by window / period ÷ 15 s.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HpaState {
    /// The first sync has recorded its initial recommendation.
    initialized: bool,
    /// Raw (unstabilized) recommendations, oldest first.
    recommendations: Vec<Stamped>,
    /// Replicas added by each scale-up.
    scale_ups: Vec<Stamped>,
    /// Replicas removed by each scale-down.
    scale_downs: Vec<Stamped>,
    /// Per latency metric: the lowest request rate per replica at which its
    /// objective was missed (kept for the autoscaler's life, as the model
    /// server's capacity does not drift with time).
    latency_capacity: BTreeMap<String, f64>,
}

impl HpaState {
    /// Empty memory, as for a newly created HPA or a restarted controller.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries held (recommendations plus scale events).
    #[must_use]
    pub fn history_len(&self) -> usize {
        self.recommendations.len() + self.scale_ups.len() + self.scale_downs.len()
    }

    /// Drops entries no window or period can reach any more.
    fn prune(&mut self, behavior: &Behavior, now: Time) {
        let window = behavior
            .scale_up
            .stabilization_window
            .max(behavior.scale_down.stabilization_window);
        self.recommendations.retain(|r| now.since(r.at) < window);
        let period = behavior
            .scale_up
            .longest_period()
            .max(behavior.scale_down.longest_period());
        self.scale_ups.retain(|e| now.since(e.at) < period);
        self.scale_downs.retain(|e| now.since(e.at) < period);
    }

    /// Records the change from `from` to `to` replicas as a scale event.
    fn record_scale(&mut self, from: u32, to: u32, now: Time) {
        if to > from {
            self.scale_ups.push(Stamped {
                at: now,
                replicas: to - from,
            });
        } else if to < from {
            self.scale_downs.push(Stamped {
                at: now,
                replicas: from - to,
            });
        }
    }

    /// Replicas added by scale-ups younger than `period`.
    fn added_within(&self, period: Duration, now: Time) -> i128 {
        sum_within(&self.scale_ups, period, now)
    }

    /// Replicas removed by scale-downs younger than `period`.
    fn removed_within(&self, period: Duration, now: Time) -> i128 {
        sum_within(&self.scale_downs, period, now)
    }
}

fn sum_within(events: &[Stamped], period: Duration, now: Time) -> i128 {
    events
        .iter()
        .filter(|e| now.since(e.at) < period)
        .map(|e| i128::from(e.replicas))
        .sum()
}

/// What one metric proposed.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricProposal {
    /// The metric's name.
    pub name: String,
    /// Proposed replicas; `None` when the metric is invalid this sync.
    pub replicas: Option<u32>,
    /// The usage ratio (current / target) before adjusting for missing or
    /// unready pods, as upstream reports it; `None` when invalid or undefined.
    pub ratio: Option<f64>,
    /// How the proposal came about, or why the metric is invalid.
    pub reason: String,
}

/// The outcome of one sync.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    /// The replica count to set (equal to `current` when not scaling).
    pub desired: u32,
    /// One proposal per metric, in input order (empty when metrics were not
    /// consulted).
    pub proposals: Vec<MetricProposal>,
    /// Why `desired` is what it is.
    pub reason: String,
    /// Which path decided (for conditions such as the HPA's).
    pub outcome: Outcome,
    /// The bound or rate limit that held `desired` back, if any.
    pub limit: Option<Limit>,
    /// A stabilization window held `desired` away from the proposal.
    pub stabilized: bool,
}

/// Which path of [`recommend_replicas`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The target has 0 replicas and `minReplicas` > 0: not scaled.
    Disabled,
    /// The target was outside `[minReplicas, maxReplicas]`: brought to the bound.
    OutOfBounds,
    /// No metric could decide (none valid, or some invalid and the rest
    /// propose a scale-down): kept.
    NoValidMetrics,
    /// The metrics decided.
    Computed,
}

/// What held a recommendation back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `maxReplicas`.
    MaxReplicas,
    /// `minReplicas`.
    MinReplicas,
    /// The scale-up policies.
    ScaleUpPolicies,
    /// The scale-down policies.
    ScaleDownPolicies,
}

/// One sync: returns the new desired replicas and records what it needs in `state`
/// (call it every SYNC_PERIOD; record the scale event only when desired != current).
///
/// `current` is the target's `spec.replicas`; `pods` are the pods its
/// selector matches; `now` must not go backwards between calls. The scale
/// event is recorded here whenever `desired != current`, on the assumption
/// that the caller applies `desired`; a failed apply only makes the next
/// rate limit stricter.
pub fn recommend_replicas(
    spec: &HpaSpec,
    state: &mut HpaState,
    current: u32,
    pods: &[PodSample],
    metrics: &[MetricInput],
    now: Time,
) -> Recommendation {
    state.prune(&spec.behavior, now);
    if !state.initialized {
        // Upstream seeds the history with the current size, so a restarted
        // controller does not scale down before a full window of evidence.
        state.initialized = true;
        state.recommendations.push(Stamped {
            at: now,
            replicas: current,
        });
    }
    let min = spec.min_replicas;
    let max = spec.max_replicas.max(min);

    if current == 0 && min != 0 {
        return Recommendation {
            desired: 0,
            proposals: Vec::new(),
            reason: "scaling is disabled: the target has 0 replicas".to_owned(),
            outcome: Outcome::Disabled,
            limit: None,
            stabilized: false,
        };
    }
    if current > max || current < min {
        let (desired, reason) = if current > max {
            (
                max,
                format!("current replicas {current} above maxReplicas {max}"),
            )
        } else {
            (
                min,
                format!("current replicas {current} below minReplicas {min}"),
            )
        };
        state.record_scale(current, desired, now);
        return Recommendation {
            desired,
            proposals: Vec::new(),
            reason,
            outcome: Outcome::OutOfBounds,
            limit: Some(if current > max {
                Limit::MaxReplicas
            } else {
                Limit::MinReplicas
            }),
            stabilized: false,
        };
    }

    let tolerance = spec.tolerance.max(0.0);
    let mut proposals: Vec<MetricProposal> = metrics
        .iter()
        .map(|m| propose(m, current, pods, tolerance))
        .collect();
    for (m, p) in metrics.iter().zip(&mut proposals) {
        hold_at_known_capacity(state, m, p, current, tolerance);
    }
    let (raw, metric) = match combine(&proposals, current) {
        Ok((raw, metric)) => (raw, metric.to_owned()),
        Err(reason) => {
            return Recommendation {
                desired: current,
                proposals,
                reason,
                outcome: Outcome::NoValidMetrics,
                limit: None,
                stabilized: false,
            };
        }
    };

    let mut reason = format!("{metric} proposes {raw}");
    let stabilized = stabilize(state, &spec.behavior, current, raw, now);
    if stabilized > raw {
        let window = format_duration(spec.behavior.scale_down.stabilization_window);
        reason = format!(
            "{reason}; held at {stabilized}: highest recommendation in the {window} scale-down window"
        );
    } else if stabilized < raw {
        let window = format_duration(spec.behavior.scale_up.stabilization_window);
        reason = format!(
            "{reason}; held at {stabilized}: lowest recommendation in the {window} scale-up window"
        );
    }
    let (desired, limit) = limit_rate(spec, state, min, max, current, stabilized, now);
    if let Some((_, text)) = &limit {
        reason.push_str("; ");
        reason.push_str(text);
    }
    state.record_scale(current, desired, now);
    Recommendation {
        desired,
        proposals,
        reason,
        outcome: Outcome::Computed,
        limit: limit.map(|(l, _)| l),
        stabilized: stabilized != raw,
    }
}

/// The largest valid proposal and its metric, or why there is none:
/// no metrics, all invalid, or some invalid while the rest propose a
/// scale-down (an unreadable metric might have wanted more).
fn combine(proposals: &[MetricProposal], current: u32) -> Result<(u32, &str), String> {
    if proposals.is_empty() {
        return Err("not scaling: the HPA has no metrics".to_owned());
    }
    let invalid = proposals.iter().filter(|p| p.replicas.is_none()).count();
    // The first metric wins ties, as upstream's strict comparison does.
    let best = proposals
        .iter()
        .filter_map(|p| p.replicas.map(|r| (r, p.name.as_str())))
        .fold(None, |best: Option<(u32, &str)>, (r, name)| match best {
            Some((b, _)) if b >= r => best,
            _ => Some((r, name)),
        });
    match best {
        None => Err(format!(
            "not scaling: all {} metrics are invalid",
            proposals.len()
        )),
        Some((r, _)) if invalid > 0 && r < current => Err(format!(
            "not scaling: {invalid} of {} metrics are invalid and the others propose scaling down to {r}",
            proposals.len()
        )),
        Some(best) => Ok(best),
    }
}

/// Clamps `current` into [lowest raw recommendation in the scale-up window,
/// highest in the scale-down window], both windows including `raw`, then
/// records `raw`.
fn stabilize(state: &mut HpaState, behavior: &Behavior, current: u32, raw: u32, now: Time) -> u32 {
    let up_window = behavior.scale_up.stabilization_window;
    let down_window = behavior.scale_down.stabilization_window;
    let mut lowest = raw;
    let mut highest = raw;
    for rec in &state.recommendations {
        let age = now.since(rec.at);
        if age < up_window {
            lowest = lowest.min(rec.replicas);
        }
        if age < down_window {
            highest = highest.max(rec.replicas);
        }
    }
    state.recommendations.push(Stamped {
        at: now,
        replicas: raw,
    });
    // lowest <= raw <= highest, so the result lies between current and raw.
    current.max(lowest).min(highest)
}

/// Applies the direction's policies and the replica bounds to `wanted`;
/// returns the allowed count and, when it differs, what limited it.
fn limit_rate(
    spec: &HpaSpec,
    state: &HpaState,
    min: u32,
    max: u32,
    current: u32,
    wanted: u32,
    now: Time,
) -> (u32, Option<(Limit, String)>) {
    if wanted > current {
        let policy =
            scale_up_limit(&spec.behavior.scale_up, current, state, now).max(i128::from(current));
        let (allowed, limit, by) = if i128::from(max) > policy {
            (
                to_u32(policy),
                Limit::ScaleUpPolicies,
                "scale-up policies".to_owned(),
            )
        } else {
            (max, Limit::MaxReplicas, format!("maxReplicas {max}"))
        };
        if wanted > allowed {
            return (
                allowed,
                Some((limit, format!("limited to {allowed} by {by}"))),
            );
        }
    } else if wanted < current {
        let policy = scale_down_limit(&spec.behavior.scale_down, current, state, now)
            .min(i128::from(current));
        let (allowed, limit, by) = if i128::from(min) < policy {
            (
                to_u32(policy),
                Limit::ScaleDownPolicies,
                "scale-down policies".to_owned(),
            )
        } else {
            (min, Limit::MinReplicas, format!("minReplicas {min}"))
        };
        if wanted < allowed {
            return (
                allowed,
                Some((limit, format!("limited to {allowed} by {by}"))),
            );
        }
    }
    (wanted, None)
}

/// The most replicas the scale-up policies allow now. Each policy starts
/// from the replicas at the start of its period (current, minus what was
/// added, plus what was removed within the period).
fn scale_up_limit(rules: &ScalingRules, current: u32, state: &HpaState, now: Time) -> i128 {
    let current = i128::from(current);
    if rules.select == SelectPolicy::Disabled || rules.policies.is_empty() {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start =
            current - state.added_within(p.period, now) + state.removed_within(p.period, now);
        let value = i128::from(p.value);
        match p.kind {
            PolicyKind::Pods => start + value,
            // Rounded up so a small target can always grow by one.
            PolicyKind::Percent => ceil_div(start * (100 + value), 100),
        }
    });
    let limit = match rules.select {
        SelectPolicy::Min => proposals.min(),
        SelectPolicy::Max | SelectPolicy::Disabled => proposals.max(),
    };
    limit.unwrap_or(current)
}

/// The fewest replicas the scale-down policies allow now (see
/// [`scale_up_limit`] for the period start). `Min` picks the policy that
/// removes least, i.e. the highest floor.
fn scale_down_limit(rules: &ScalingRules, current: u32, state: &HpaState, now: Time) -> i128 {
    let current = i128::from(current);
    if rules.select == SelectPolicy::Disabled || rules.policies.is_empty() {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start =
            current - state.added_within(p.period, now) + state.removed_within(p.period, now);
        let value = i128::from(p.value);
        match p.kind {
            PolicyKind::Pods => start - value,
            // Truncated toward zero, as upstream's float-to-int conversion.
            PolicyKind::Percent => start * (100 - value) / 100,
        }
    });
    let limit = match rules.select {
        SelectPolicy::Min => proposals.max(),
        SelectPolicy::Max | SelectPolicy::Disabled => proposals.min(),
    };
    limit.unwrap_or(current)
}

/// `ceil(a / b)` for `b > 0`.
fn ceil_div(a: i128, b: i128) -> i128 {
    a.div_euclid(b) + i128::from(a.rem_euclid(b) != 0)
}

fn to_u32(x: i128) -> u32 {
    u32::try_from(x).unwrap_or(if x < 0 { 0 } else { u32::MAX })
}

/// `ceil(x)` as a replica count: NaN and non-positive give 0, huge values
/// saturate.
fn ceil_replicas(x: f64) -> u32 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    let c = x.ceil();
    if c >= f64::from(u32::MAX) {
        return u32::MAX;
    }
    // c is integral and in (0, u32::MAX): the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let replicas = c as u32;
    replicas
}

/// `(1 - tolerance) <= ratio <= (1 + tolerance)`.
fn within(ratio: f64, tolerance: f64) -> bool {
    (1.0 - tolerance) <= ratio && ratio <= (1.0 + tolerance)
}

/// A proposal before it is labelled with its metric.
struct Proposal {
    replicas: u32,
    ratio: Option<f64>,
    reason: String,
}

fn propose(
    metric: &MetricInput,
    current: u32,
    pods: &[PodSample],
    tolerance: f64,
) -> MetricProposal {
    let outcome = match &metric.observation {
        Err(e) => Err(format!("metric unavailable: {e}")),
        Ok(observation) => propose_from(metric.target, observation, current, pods, tolerance),
    };
    match outcome {
        Ok(p) => MetricProposal {
            name: metric.name.clone(),
            replicas: Some(p.replicas),
            ratio: p.ratio,
            reason: p.reason,
        },
        Err(reason) => MetricProposal {
            name: metric.name.clone(),
            replicas: None,
            ratio: None,
            reason,
        },
    }
}

fn propose_from(
    target: Target,
    observation: &Observation,
    current: u32,
    pods: &[PodSample],
    tolerance: f64,
) -> Result<Proposal, String> {
    let (Target::AverageValue(t) | Target::Value(t) | Target::Latency { objective: t, .. }) =
        target;
    if !(t.is_finite() && t > 0.0) {
        return Err(format!("target {t} is not a positive number"));
    }
    match (target, observation) {
        (Target::AverageValue(t), Observation::PerPod(values)) => per_pod(
            |_, pod| values.get(&pod.name).copied(),
            t,
            current,
            pods,
            tolerance,
        ),
        (Target::AverageValue(t), Observation::InPodOrder(values)) => {
            if values.len() != pods.len() {
                return Err(format!(
                    "{} values in pod order for {} pods",
                    values.len(),
                    pods.len()
                ));
            }
            per_pod(
                |i, _| values.get(i).copied().flatten(),
                t,
                current,
                pods,
                tolerance,
            )
        }
        (Target::AverageValue(t), Observation::Total(total)) => {
            check_value(*total)?;
            Ok(average_of_total(*total, t, current, tolerance))
        }
        (Target::Value(t), Observation::Total(total)) => {
            check_value(*total)?;
            value_of_total(*total, t, current, pods, tolerance)
        }
        (Target::Latency { .. }, Observation::LatencyAtRate { latency, .. }) => propose_from(
            target,
            &Observation::Total(*latency),
            current,
            pods,
            tolerance,
        ),
        (Target::AverageValue(_) | Target::Value(_), Observation::LatencyAtRate { .. }) => {
            Err("a latency observation needs a latency target".to_owned())
        }
        (Target::Latency { .. }, Observation::Total(v)) if v.is_nan() => {
            let replicas = current.div_ceil(2).min(current.saturating_sub(1));
            Ok(Proposal {
                replicas,
                ratio: None,
                reason: format!("no requests in the latency window: half, {replicas}"),
            })
        }
        (
            Target::Latency {
                objective,
                scale_down_below,
            },
            Observation::Total(v),
        ) => {
            check_value(*v)?;
            Ok(latency_band(
                *v,
                objective,
                scale_down_below,
                current,
                tolerance,
            ))
        }
        (
            Target::Value(_) | Target::Latency { .. },
            Observation::PerPod(_) | Observation::InPodOrder(_),
        ) => Err(
            "a Value or latency target needs a total observation, not per-pod values".to_owned(),
        ),
    }
}

/// The latency rule's memory: when a latency metric misses its objective,
/// remember the request rate per replica it missed it at (the lowest such);
/// a scale-down it proposes stops at the replicas that keep the load per
/// replica below that by the tolerance. This is what keeps a latency
/// objective near a queueing cliff (one replica too slow, two far below half
/// the objective) from stepping down into the cliff and back up again.
fn hold_at_known_capacity(
    state: &mut HpaState,
    metric: &MetricInput,
    proposal: &mut MetricProposal,
    current: u32,
    tolerance: f64,
) {
    let (Target::Latency { objective, .. }, Ok(Observation::LatencyAtRate { latency, rate })) =
        (metric.target, &metric.observation)
    else {
        return;
    };
    if !(rate.is_finite() && *rate >= 0.0) || current == 0 {
        return;
    }
    if latency.is_finite() && *latency > objective * (1.0 + tolerance) {
        let per_replica = rate / f64::from(current);
        let known = state
            .latency_capacity
            .entry(metric.name.clone())
            .or_insert(per_replica);
        *known = known.min(per_replica);
    }
    let Some(capacity) = state.latency_capacity.get(&metric.name).copied() else {
        return;
    };
    let Some(proposed) = proposal.replicas.filter(|r| *r < current) else {
        return;
    };
    let safe = capacity * (1.0 - tolerance);
    let floor = if safe > 0.0 {
        ceil_replicas(rate / safe).min(current)
    } else {
        current
    };
    if floor > proposed {
        proposal.replicas = Some(floor);
        proposal.reason = format!(
            "{}; held at {floor}: {rate:.2} req/s over {floor} replicas stays under the {capacity:.2} req/s per replica at which the objective was missed",
            proposal.reason
        );
    }
}

/// The [`Target::Latency`] rule.
fn latency_band(
    observed: f64,
    objective: f64,
    scale_down_below: f64,
    current: u32,
    tolerance: f64,
) -> Proposal {
    let ratio = observed / objective;
    let lower = if scale_down_below.is_finite() && scale_down_below > 0.0 {
        scale_down_below.min(1.0 - tolerance)
    } else {
        DEFAULT_SCALE_DOWN_BELOW
    };
    if ratio > 1.0 + tolerance {
        let replicas =
            ceil_replicas(f64::from(current) * ratio.min(2.0)).max(current.saturating_add(1));
        Proposal {
            replicas,
            ratio: Some(ratio),
            reason: format!(
                "latency {observed:.3} is {ratio:.3} × the objective {objective}: {replicas}"
            ),
        }
    } else if ratio < lower {
        let replicas = ceil_replicas(f64::from(current) * ratio / lower)
            .max(current.div_ceil(2))
            .min(current.saturating_sub(1));
        Proposal {
            replicas,
            ratio: Some(ratio),
            reason: format!(
                "latency {observed:.3} is below {lower} × the objective {objective}: {replicas}"
            ),
        }
    } else {
        keep(current, ratio, "latency within its band")
    }
}

fn check_value(v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!("observed value {v} is not a non-negative number"))
    }
}

/// Keeps `current`, reporting `ratio`.
fn keep(current: u32, ratio: f64, why: &str) -> Proposal {
    Proposal {
        replicas: current,
        ratio: Some(ratio),
        reason: format!("ratio {ratio:.3}: {why}, keep {current}"),
    }
}

/// Pods (and resource AverageValue/Utilization) metrics, upstream's
/// `calcPlainMetricReplicas`.
///
/// Terminating and failed pods are ignored. Not-ready pods are set aside
/// (for every metric, where upstream does this for CPU only), pods without a
/// value are missing. The ratio comes from the remaining pods; then, if pods
/// are missing or a scale-up has unready pods, it is recomputed with missing
/// pods at the target (scale-down) or 0 (scale-up) and unready pods at 0
/// (scale-up). If that lands within tolerance or reverses the direction, the
/// proposal is `current`.
fn per_pod(
    value_of: impl Fn(usize, &PodSample) -> Option<f64>,
    target: f64,
    current: u32,
    pods: &[PodSample],
    tolerance: f64,
) -> Result<Proposal, String> {
    if pods.is_empty() {
        return Err("no pods to read per-pod values from".to_owned());
    }
    let mut sum = 0.0;
    let mut counted: u32 = 0;
    let mut missing: u32 = 0;
    let mut unready: u32 = 0;
    for (i, pod) in pods.iter().enumerate() {
        if pod.terminating || pod.failed {
            continue;
        }
        if !pod.ready {
            unready = unready.saturating_add(1);
            continue;
        }
        match value_of(i, pod) {
            None => missing = missing.saturating_add(1),
            Some(v) => {
                check_value(v).map_err(|e| format!("pod {}: {e}", pod.name))?;
                sum += v;
                counted = counted.saturating_add(1);
            }
        }
    }
    if counted == 0 {
        return Err("no values from ready pods (all unready or missing)".to_owned());
    }
    let ratio = sum / f64::from(counted) / target;
    let scale_up_with_unready = unready > 0 && ratio > 1.0;

    if !scale_up_with_unready && missing == 0 {
        if within(ratio, tolerance) {
            return Ok(keep(current, ratio, "within tolerance"));
        }
        // ratio × counted pods, computed as one division.
        let replicas = ceil_replicas(sum / target);
        return Ok(Proposal {
            replicas,
            ratio: Some(ratio),
            reason: format!("ratio {ratio:.3} over {counted} pods: {replicas}"),
        });
    }

    let mut adjusted_sum = sum;
    let mut adjusted_count = counted;
    if missing > 0 && ratio < 1.0 {
        adjusted_sum += target * f64::from(missing);
        adjusted_count = adjusted_count.saturating_add(missing);
    } else if missing > 0 && ratio > 1.0 {
        adjusted_count = adjusted_count.saturating_add(missing);
    }
    if scale_up_with_unready {
        adjusted_count = adjusted_count.saturating_add(unready);
    }
    let adjusted = adjusted_sum / f64::from(adjusted_count) / target;
    let setting_aside = format!(
        "with {missing} missing at {} and {} unready at 0, ratio {adjusted:.3}",
        if ratio < 1.0 { "target" } else { "0" },
        if scale_up_with_unready { unready } else { 0 },
    );
    if within(adjusted, tolerance) {
        return Ok(keep(
            current,
            ratio,
            &format!("{setting_aside} is within tolerance"),
        ));
    }
    if (ratio < 1.0 && adjusted > 1.0) || (ratio > 1.0 && adjusted < 1.0) {
        return Ok(keep(
            current,
            ratio,
            &format!("{setting_aside} reverses the direction"),
        ));
    }
    let replicas = ceil_replicas(adjusted_sum / target);
    if (adjusted < 1.0 && replicas > current) || (adjusted > 1.0 && replicas < current) {
        return Ok(keep(
            current,
            ratio,
            &format!("{setting_aside} gives {replicas}, the other direction"),
        ));
    }
    Ok(Proposal {
        replicas,
        ratio: Some(ratio),
        reason: format!("ratio {ratio:.3}; {setting_aside} over {adjusted_count} pods: {replicas}"),
    })
}

/// Object/External metrics with an AverageValue target: the total divided by
/// the per-pod target, unless total / (target × current) is within tolerance.
/// Upstream divides by the status replica count; this uses `current`.
fn average_of_total(total: f64, target: f64, current: u32, tolerance: f64) -> Proposal {
    let wanted = ceil_replicas(total / target);
    if current == 0 {
        return Proposal {
            replicas: wanted,
            ratio: None,
            reason: format!("total {total} / average target {target}: {wanted}"),
        };
    }
    let ratio = total / (target * f64::from(current));
    if within(ratio, tolerance) {
        return keep(current, ratio, "within tolerance");
    }
    Proposal {
        replicas: wanted,
        ratio: Some(ratio),
        reason: format!("ratio {ratio:.3}: total {total} / average target {target}: {wanted}"),
    }
}

/// Object/External metrics with a Value target: ratio × ready pods, or
/// ceil(ratio) from zero replicas (scale from zero).
///
/// Upstream counts Running+Ready pods, terminating ones included, and
/// proposes 0 when none is ready; here terminating pods do not count and no
/// ready pod makes the metric invalid, so a target whose pods are all still
/// loading is not scaled to `minReplicas`.
fn value_of_total(
    total: f64,
    target: f64,
    current: u32,
    pods: &[PodSample],
    tolerance: f64,
) -> Result<Proposal, String> {
    let ratio = total / target;
    if current == 0 {
        let replicas = ceil_replicas(ratio);
        return Ok(Proposal {
            replicas,
            ratio: Some(ratio),
            reason: format!("ratio {ratio:.3} from zero replicas: {replicas}"),
        });
    }
    if within(ratio, tolerance) {
        return Ok(keep(current, ratio, "within tolerance"));
    }
    if pods.is_empty() {
        return Err("no pods to count ready replicas from".to_owned());
    }
    let ready = pods
        .iter()
        .filter(|p| p.ready && !p.terminating && !p.failed)
        .count();
    let ready = u32::try_from(ready).unwrap_or(u32::MAX);
    if ready == 0 {
        return Err("no ready pods to scale a Value target from".to_owned());
    }
    let replicas = ceil_replicas(ratio * f64::from(ready));
    Ok(Proposal {
        replicas,
        ratio: Some(ratio),
        reason: format!("ratio {ratio:.3} × {ready} ready pods: {replicas}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: f64 = 100.0;

    fn t(secs: i64) -> Time {
        Time::from_secs(secs)
    }

    fn pods(n: usize) -> Vec<PodSample> {
        (0..n)
            .map(|i| PodSample::running(&format!("p{i}")))
            .collect()
    }

    proptest::proptest! {
        /// Values in pod order recommend exactly what the same values keyed
        /// by pod name do, for any mix of ready, unready, terminating and
        /// missing pods.
        #[test]
        fn values_in_pod_order_match_values_by_name(
            pods in proptest::collection::vec((0u8..4, proptest::option::of(0.0f64..400.0)), 1..40),
            current in 1u32..50,
        ) {
            let samples: Vec<PodSample> = pods
                .iter()
                .enumerate()
                .map(|(i, (kind, _))| PodSample {
                    name: format!("p{i}"),
                    ready: *kind != 1,
                    terminating: *kind == 2,
                    failed: *kind == 3,
                })
                .collect();
            let by_name = pods
                .iter()
                .enumerate()
                .filter_map(|(i, (_, v))| v.map(|v| (format!("p{i}"), v)))
                .collect();
            let keyed = MetricInput::per_pod("load", Target::AverageValue(TARGET), by_name);
            let ordered = MetricInput {
                observation: Ok(Observation::InPodOrder(pods.iter().map(|(_, v)| *v).collect())),
                ..keyed.clone()
            };
            let spec = HpaSpec::new(1, 100);
            proptest::prop_assert_eq!(
                once(&spec, current, &samples, &[keyed]),
                once(&spec, current, &samples, &[ordered])
            );
        }
    }

    #[test]
    fn values_in_pod_order_must_cover_every_pod() {
        let metric = MetricInput {
            name: "load".into(),
            target: Target::AverageValue(TARGET),
            observation: Ok(Observation::InPodOrder(vec![Some(1.0)])),
        };
        let rec = once(&HpaSpec::new(1, 10), 2, &pods(2), &[metric]);
        assert_eq!(rec.desired, 2, "{rec:?}");
        assert_eq!(rec.proposals[0].replicas, None, "{rec:?}");
        assert_eq!(rec.proposals[0].reason, "1 values in pod order for 2 pods");
    }

    fn values(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
    }

    /// Every pod in `pods` reports `value`.
    fn uniform(pods: &[PodSample], value: f64) -> MetricInput {
        let values = pods.iter().map(|p| (p.name.clone(), value)).collect();
        MetricInput::per_pod("load", Target::AverageValue(TARGET), values)
    }

    /// An External AverageValue metric: raw desired = ceil(total / 100).
    /// One recommendation with no history, at time 0.
    fn once(
        spec: &HpaSpec,
        current: u32,
        pods: &[PodSample],
        metrics: &[MetricInput],
    ) -> Recommendation {
        recommend_replicas(spec, &mut HpaState::new(), current, pods, metrics, t(0))
    }

    fn external(total: f64) -> MetricInput {
        MetricInput::total("queue", Target::AverageValue(TARGET), total)
    }

    /// No stabilization in either direction, default policies.
    fn unstabilized(min: u32, max: u32) -> HpaSpec {
        let mut spec = HpaSpec::new(min, max);
        spec.behavior.scale_down.stabilization_window = Duration::ZERO;
        spec
    }

    fn rules(
        window: u64,
        select: SelectPolicy,
        policies: &[(PolicyKind, u32, u64)],
    ) -> ScalingRules {
        ScalingRules {
            stabilization_window: Duration::from_secs(window),
            policies: policies
                .iter()
                .map(|&(kind, value, period)| ScalingPolicy {
                    kind,
                    value,
                    period: Duration::from_secs(period),
                })
                .collect(),
            select,
        }
    }

    /// The first metric's proposal for one sync from a fresh state.
    fn proposal(current: u32, pods: &[PodSample], metric: MetricInput) -> MetricProposal {
        let mut state = HpaState::new();
        let rec = recommend_replicas(
            &HpaSpec::new(0, 1000),
            &mut state,
            current,
            pods,
            &[metric],
            t(0),
        );
        rec.proposals[0].clone()
    }

    /// Syncs every 15 s from `from` to `until` (inclusive) with `load(now)`
    /// as the External total, applying each desired count. Returns
    /// (second, replicas) after every sync.
    fn drive(
        spec: &HpaSpec,
        state: &mut HpaState,
        mut replicas: u32,
        from: i64,
        until: i64,
        load: impl Fn(i64) -> f64,
    ) -> Vec<(i64, u32)> {
        let mut trace = Vec::new();
        let mut now = from;
        while now <= until {
            let metric = external(load(now));
            replicas = recommend_replicas(spec, state, replicas, &[], &[metric], t(now)).desired;
            trace.push((now, replicas));
            now += 15;
        }
        trace
    }

    /// The (second, replicas) entries where the count changed.
    fn changes(trace: &[(i64, u32)], start: u32) -> Vec<(i64, u32)> {
        let mut last = start;
        let mut out = Vec::new();
        for &(s, r) in trace {
            if r != last {
                out.push((s, r));
                last = r;
            }
        }
        out
    }

    #[test]
    fn ratio_within_tolerance_keeps_current_replicas() {
        // (current, per-pod value, tolerance, proposed)
        let cases = [
            (10, 105.0, DEFAULT_TOLERANCE, 10), // ratio 1.05: within 10 %
            (10, 95.0, DEFAULT_TOLERANCE, 10),  // ratio 0.95
            (10, 110.0, DEFAULT_TOLERANCE, 10), // ratio 1.1: the bound is inclusive
            (10, 120.0, DEFAULT_TOLERANCE, 12), // ratio 1.2: scale
            (10, 80.0, DEFAULT_TOLERANCE, 8),   // ratio 0.8: scale
            (10, 105.0, 0.01, 11),              // a tighter tolerance scales on 1.05
            // Docs, "Algorithm details": 200m current / 100m desired doubles,
            // 50m halves.
            (4, 200.0, DEFAULT_TOLERANCE, 8),
            (4, 50.0, DEFAULT_TOLERANCE, 2),
        ];
        for (current, value, tolerance, expected) in cases {
            let n = usize::try_from(current).unwrap();
            let mut spec = HpaSpec::new(0, 1000);
            spec.tolerance = tolerance;
            let ps = pods(n);
            let rec = once(&spec, current, &ps, &[uniform(&ps, value)]);
            assert_eq!(
                rec.proposals[0].replicas,
                Some(expected),
                "current {current}, value {value}, tolerance {tolerance}: {}",
                rec.proposals[0].reason
            );
        }
    }

    #[test]
    fn desired_replicas_round_up() {
        // (current, per-pod value, proposed)
        let cases = [
            (3, 150.0, 5), // 4.5 → 5
            (3, 130.0, 4), // 3.9 → 4
            (5, 42.0, 3),  // 2.1 → 3
            (1, 1.0, 1),   // 0.01 → 1
        ];
        for (current, value, expected) in cases {
            let ps = pods(usize::try_from(current).unwrap());
            let p = proposal(current, &ps, uniform(&ps, value));
            assert_eq!(p.replicas, Some(expected), "{current} × {value}");
        }
        // The v1.33 configurable-tolerance blog post: 50 replicas at 90 %
        // CPU against a 75 % target → 50 × 90 / 75 = 60.
        let ps = pods(50);
        let metric = MetricInput::per_pod(
            "cpu",
            Target::AverageValue(75.0),
            ps.iter().map(|p| (p.name.clone(), 90.0)).collect(),
        );
        assert_eq!(proposal(50, &ps, metric).replicas, Some(60));
    }

    #[test]
    fn missing_metrics_count_as_target_on_scale_down() {
        // 4 pods, 2 report 20 (ratio 0.2). The missing two count as 100:
        // (20 + 20 + 100 + 100) / 4 = 60 → ceil(0.6 × 4) = 3, not ceil(0.2 × 2) = 1.
        let ps = pods(4);
        let metric = MetricInput::per_pod(
            "load",
            Target::AverageValue(TARGET),
            values(&[("p0", 20.0), ("p1", 20.0)]),
        );
        let p = proposal(4, &ps, metric);
        assert_eq!(p.replicas, Some(3), "{}", p.reason);
        assert!(
            (p.ratio.unwrap() - 0.2).abs() < 1e-9,
            "reports the raw ratio"
        );
    }

    #[test]
    fn missing_metrics_that_land_within_tolerance_cancel_the_scale_down() {
        // 3 pods at 88 (ratio 0.88 would give 3); with the missing pod at
        // 100 the ratio is 0.91, within tolerance → keep 4.
        let ps = pods(4);
        let metric = MetricInput::per_pod(
            "load",
            Target::AverageValue(TARGET),
            values(&[("p0", 88.0), ("p1", 88.0), ("p2", 88.0)]),
        );
        let p = proposal(4, &ps, metric);
        assert_eq!(p.replicas, Some(4), "{}", p.reason);
        assert!(p.reason.contains("within tolerance"), "{}", p.reason);
    }

    #[test]
    fn missing_metrics_count_as_zero_on_scale_up() {
        // (reported values, pods, proposed): missing pods at 0 keep the
        // total, so they only matter through tolerance and direction.
        type Case = (&'static [(&'static str, f64)], usize, u32);
        let cases: [Case; 3] = [
            // 3 × 200 + 1 missing: ratio 2 → 1.5 over 4 pods → 6.
            (&[("p0", 200.0), ("p1", 200.0), ("p2", 200.0)], 4, 6),
            // 1 × 150 + 1 missing: 1.5 → 0.75 reverses the direction → keep 2.
            (&[("p0", 150.0)], 2, 2),
            // 2 × 105 + 1 missing would not matter: ratio 1.05 is within
            // tolerance already, and 0.7 reverses anyway → keep 3.
            (&[("p0", 105.0), ("p1", 105.0)], 3, 3),
        ];
        for (reported, n, expected) in cases {
            let ps = pods(n);
            let current = u32::try_from(n).unwrap();
            let metric =
                MetricInput::per_pod("load", Target::AverageValue(TARGET), values(reported));
            let p = proposal(current, &ps, metric);
            assert_eq!(p.replicas, Some(expected), "{reported:?}: {}", p.reason);
        }
        let ps = pods(2);
        let metric = MetricInput::per_pod(
            "load",
            Target::AverageValue(TARGET),
            values(&[("p0", 150.0)]),
        );
        assert!(
            proposal(2, &ps, metric)
                .reason
                .contains("reverses the direction")
        );
    }

    #[test]
    fn unready_pods_count_as_zero_on_scale_up() {
        // 3 ready pods at 200 and one loading: ratio 2.0, and with the
        // unready pod at 0 the ratio is 1.5 over 4 pods → 6, not 2 × 4 = 8.
        let mut ps = pods(3);
        ps.push(PodSample::not_ready("loading"));
        let metric = MetricInput::per_pod(
            "load",
            Target::AverageValue(TARGET),
            values(&[
                ("p0", 200.0),
                ("p1", 200.0),
                ("p2", 200.0),
                ("loading", 500.0),
            ]),
        );
        let p = proposal(4, &ps, metric);
        assert_eq!(p.replicas, Some(6), "{}", p.reason);

        // 2 ready at 150 and 2 loading: 1.5 becomes 0.75, reversing the
        // direction → keep 4 (ignoring them would have proposed 3).
        let mut ps = pods(2);
        ps.push(PodSample::not_ready("l0"));
        ps.push(PodSample::not_ready("l1"));
        let metric = MetricInput::per_pod(
            "load",
            Target::AverageValue(TARGET),
            values(&[("p0", 150.0), ("p1", 150.0)]),
        );
        assert_eq!(proposal(4, &ps, metric).replicas, Some(4));

        // Zeros keep the total, so unready pods act through tolerance: 5
        // ready at 210 and 5 loading give 1.05, within tolerance → keep 10
        // (5 pods alone would say ratio 2.1 → 11).
        let mut ps = pods(5);
        ps.extend((0..5).map(|i| PodSample::not_ready(&format!("l{i}"))));
        let p = proposal(10, &ps, uniform(&pods(5), 210.0));
        assert_eq!(p.replicas, Some(10), "{}", p.reason);
        assert!(p.reason.contains("within tolerance"), "{}", p.reason);
    }

    #[test]
    fn unready_pods_values_are_set_aside_for_every_metric() {
        // A loading model server reports a spike; upstream would count it for
        // a non-CPU metric ((2 × 100 + 2 × 300) / 4 = 200 → 8). Here only the
        // ready pods count: ratio 1.0 → keep 4.
        let mut ps = pods(2);
        ps.push(PodSample::not_ready("l0"));
        ps.push(PodSample::not_ready("l1"));
        let metric = MetricInput::per_pod(
            "gpu_util",
            Target::AverageValue(TARGET),
            values(&[("p0", 100.0), ("p1", 100.0), ("l0", 300.0), ("l1", 300.0)]),
        );
        assert_eq!(proposal(4, &ps, metric).replicas, Some(4));

        // On a scale-down unready pods are simply left out: 3 ready at 50 →
        // ceil(0.5 × 3) = 2.
        let mut ps = pods(3);
        ps.push(PodSample::not_ready("l0"));
        let metric = uniform(&pods(3), 50.0);
        assert_eq!(proposal(4, &ps, metric).replicas, Some(2));
    }

    #[test]
    fn terminating_and_failed_pods_are_ignored() {
        let mut ps = pods(2);
        ps.push(PodSample {
            terminating: true,
            ..PodSample::running("leaving")
        });
        ps.push(PodSample {
            failed: true,
            ..PodSample::running("crashed")
        });
        // The terminating pod's value does not count (it would make 9), and
        // the failed pod without a value is not "missing": 2 × 200 → 4.
        let metric = MetricInput::per_pod(
            "load",
            Target::AverageValue(TARGET),
            values(&[("p0", 200.0), ("p1", 200.0), ("leaving", 500.0)]),
        );
        let p = proposal(2, &ps, metric);
        assert_eq!(p.replicas, Some(4), "{}", p.reason);
    }

    #[test]
    fn values_for_pods_outside_the_target_are_ignored() {
        let ps = pods(2);
        let metric = MetricInput::per_pod(
            "load",
            Target::AverageValue(TARGET),
            values(&[("p0", 100.0), ("p1", 100.0), ("stranger", 900.0)]),
        );
        assert_eq!(proposal(2, &ps, metric).replicas, Some(2));
    }

    #[test]
    fn several_metrics_take_the_largest_proposal() {
        let ps = pods(4);
        let metrics = [
            uniform(&ps, 50.0),                                               // → 2
            MetricInput::total("queue", Target::AverageValue(TARGET), 600.0), // → 6
            MetricInput::total("rps", Target::Value(1000.0), 1250.0),         // 1.25 × 4 → 5
        ];
        let rec = once(&unstabilized(1, 100), 4, &ps, &metrics);
        let proposed: Vec<_> = rec.proposals.iter().map(|p| p.replicas).collect();
        assert_eq!(proposed, [Some(2), Some(6), Some(5)]);
        assert_eq!(rec.desired, 6);
        assert!(rec.reason.starts_with("queue proposes 6"), "{}", rec.reason);
    }

    #[test]
    fn invalid_metric_blocks_a_scale_down_by_the_others() {
        let ps = pods(4);
        let metrics = [
            uniform(&ps, 25.0), // → 1
            MetricInput::unavailable("queue", Target::AverageValue(TARGET), "adapter timeout"),
        ];
        let mut state = HpaState::new();
        let rec = recommend_replicas(&unstabilized(1, 100), &mut state, 4, &ps, &metrics, t(0));
        assert_eq!(rec.desired, 4, "{}", rec.reason);
        assert_eq!(rec.proposals[1].replicas, None);
        assert!(rec.proposals[1].reason.contains("adapter timeout"));
        assert!(
            rec.reason.contains("1 of 2 metrics are invalid"),
            "{}",
            rec.reason
        );
        assert!(state.scale_downs.is_empty());
        // Only the seeded recommendation: a failed sync records nothing.
        assert_eq!(state.recommendations.len(), 1);
    }

    #[test]
    fn invalid_metric_does_not_block_a_scale_up_by_the_others() {
        let ps = pods(4);
        let metrics = [
            uniform(&ps, 200.0), // → 8
            MetricInput::unavailable("queue", Target::AverageValue(TARGET), "adapter timeout"),
        ];
        let rec = once(&unstabilized(1, 100), 4, &ps, &metrics);
        assert_eq!(rec.desired, 8);
    }

    #[test]
    fn no_valid_metric_keeps_current_replicas() {
        let ps = pods(3);
        let cases: [(&str, Vec<MetricInput>); 6] = [
            ("no metrics", vec![]),
            (
                "all unavailable",
                vec![MetricInput::unavailable("a", Target::Value(1.0), "down")],
            ),
            (
                "non-positive target",
                vec![MetricInput::total("a", Target::Value(0.0), 5.0)],
            ),
            (
                "NaN value",
                vec![MetricInput::total("a", Target::AverageValue(1.0), f64::NAN)],
            ),
            (
                "Value target over per-pod values",
                vec![MetricInput::per_pod(
                    "a",
                    Target::Value(1.0),
                    values(&[("p0", 9.0)]),
                )],
            ),
            ("no values from ready pods", vec![uniform(&pods(0), 1.0)]),
        ];
        for (what, metrics) in cases {
            let rec = once(&unstabilized(1, 100), 3, &ps, &metrics);
            assert_eq!(rec.desired, 3, "{what}: {}", rec.reason);
            assert!(rec.proposals.iter().all(|p| p.replicas.is_none()), "{what}");
        }
    }

    #[test]
    fn value_targets_scale_with_ready_pods() {
        // (pods ready, pods loading, total, proposal) against a Value target of 100.
        let cases = [
            (2, 0, 300.0, Some(6)), // ratio 3 × 2 ready
            (1, 1, 300.0, Some(3)), // ratio 3 × 1 ready
            (2, 0, 105.0, Some(2)), // within tolerance: keep current
            (2, 0, 40.0, Some(1)),  // ratio 0.4 × 2 = 0.8 → 1
            (0, 2, 300.0, None),    // nobody ready: invalid, not "scale to 0"
        ];
        for (ready, loading, total, expected) in cases {
            let mut ps = pods(ready);
            ps.extend((0..loading).map(|i| PodSample::not_ready(&format!("l{i}"))));
            let metric = MetricInput::total("queue", Target::Value(TARGET), total);
            let p = proposal(2, &ps, metric);
            assert_eq!(
                p.replicas, expected,
                "{ready}+{loading} pods, {total}: {}",
                p.reason
            );
        }
    }

    #[test]
    fn average_value_over_a_total_divides_by_the_per_pod_target() {
        // External AverageValue: 450 / 100 → 5; 310 over 3 pods is within tolerance.
        assert_eq!(proposal(3, &[], external(450.0)).replicas, Some(5));
        assert_eq!(proposal(3, &[], external(310.0)).replicas, Some(3));
        assert_eq!(proposal(3, &[], external(0.0)).replicas, Some(0));
    }

    #[test]
    fn zero_current_replicas_disable_scaling_unless_min_is_zero() {
        let mut state = HpaState::new();
        let metric = MetricInput::total("queue", Target::Value(TARGET), 350.0);
        let rec = recommend_replicas(
            &HpaSpec::new(1, 10),
            &mut state,
            0,
            &[],
            std::slice::from_ref(&metric),
            t(0),
        );
        assert_eq!(rec.desired, 0);
        assert!(rec.reason.contains("disabled"), "{}", rec.reason);
        assert!(rec.proposals.is_empty());

        // minReplicas 0 (scale to zero): from 0 replicas a Value metric
        // proposes ceil(ratio) = 4, and the Pods policy allows +4.
        let mut state = HpaState::new();
        let rec = recommend_replicas(&HpaSpec::new(0, 10), &mut state, 0, &[], &[metric], t(0));
        assert_eq!(rec.desired, 4, "{}", rec.reason);
    }

    #[test]
    fn current_outside_min_max_is_brought_to_the_bound_first() {
        // (min, max, current, desired) with a metric that wants 100.
        let cases = [(2, 10, 12, 10), (2, 10, 1, 2), (3, 3, 5, 3)];
        for (min, max, current, expected) in cases {
            let mut state = HpaState::new();
            let rec = recommend_replicas(
                &HpaSpec::new(min, max),
                &mut state,
                current,
                &[],
                &[external(10_000.0)],
                t(0),
            );
            assert_eq!(rec.desired, expected, "{min}..{max} from {current}");
            assert!(rec.proposals.is_empty(), "metrics are not consulted");
            assert_eq!(
                state.history_len(),
                2,
                "seed recommendation and the scale event"
            );
        }
    }

    #[test]
    fn desired_is_bounded_by_min_and_max() {
        // (min, max, current, total, desired)
        let cases = [
            (1, 15, 10, 5000.0, 15), // wants 50, doubling allows 20, max 15
            (2, 20, 10, 0.0, 2),     // wants 0
            (0, 20, 10, 0.0, 0),     // min 0 lets it reach 0
        ];
        for (min, max, current, total, expected) in cases {
            let rec = once(&unstabilized(min, max), current, &[], &[external(total)]);
            assert_eq!(rec.desired, expected, "{}", rec.reason);
        }
    }

    #[test]
    fn default_scale_up_allows_the_larger_of_double_and_plus_four_per_15s() {
        // (current, desired) for a metric that wants 1000: Percent 100 / 15 s
        // and Pods 4 / 15 s with selectPolicy Max.
        let cases = [(1, 5), (2, 6), (4, 8), (5, 10), (10, 20), (300, 600)];
        for (current, expected) in cases {
            let rec = once(&HpaSpec::new(1, 1000), current, &[], &[external(100_000.0)]);
            assert_eq!(rec.desired, expected, "from {current}: {}", rec.reason);
            assert!(rec.reason.contains("scale-up policies"), "{}", rec.reason);
        }
        // Syncing every 15 s, each period starts fresh: 1 → 5 → 10 → 20 → 40.
        let trace = drive(
            &HpaSpec::new(1, 1000),
            &mut HpaState::new(),
            1,
            0,
            45,
            |_| 100_000.0,
        );
        assert_eq!(trace, [(0, 5), (15, 10), (30, 20), (45, 40)]);
    }

    #[test]
    fn scale_events_within_the_period_count_against_the_limit() {
        // Pods 4 / 60 s: after 1 → 5 the period is used up until the event
        // is 60 s old.
        let mut spec = HpaSpec::new(1, 100);
        spec.behavior.scale_up = rules(0, SelectPolicy::Max, &[(PolicyKind::Pods, 4, 60)]);
        let trace = drive(&spec, &mut HpaState::new(), 1, 0, 120, |_| 10_000.0);
        assert_eq!(changes(&trace, 1), [(0, 5), (60, 9), (120, 13)]);
    }

    #[test]
    fn scale_down_events_count_toward_the_scale_up_period_start() {
        // Scale-up Pods 2 / 60 s. After 10 → 5 at t=0, a spike at t=15 starts
        // its period at 10 (5 removed within it): 10 + 2 = 12, not 5 + 2.
        let mut spec = unstabilized(1, 100);
        spec.behavior.scale_up = rules(0, SelectPolicy::Max, &[(PolicyKind::Pods, 2, 60)]);
        let mut state = HpaState::new();
        let down = recommend_replicas(&spec, &mut state, 10, &[], &[external(500.0)], t(0));
        assert_eq!(down.desired, 5);
        let up = recommend_replicas(&spec, &mut state, 5, &[], &[external(5000.0)], t(15));
        assert_eq!(up.desired, 12, "{}", up.reason);
    }

    #[test]
    fn select_policy_chooses_between_pods_and_percent_policies() {
        let both = [(PolicyKind::Pods, 4, 15), (PolicyKind::Percent, 100, 15)];
        // (select, current, desired) scaling up towards 1000.
        let up_cases = [
            (SelectPolicy::Max, 10, 20),
            (SelectPolicy::Min, 10, 14),
            (SelectPolicy::Max, 2, 6),
            (SelectPolicy::Min, 2, 4),
            (SelectPolicy::Disabled, 10, 10),
        ];
        for (select, current, expected) in up_cases {
            let mut spec = HpaSpec::new(1, 1000);
            spec.behavior.scale_up = rules(0, select, &both);
            let rec = once(&spec, current, &[], &[external(100_000.0)]);
            assert_eq!(rec.desired, expected, "{select:?} up from {current}");
        }
        // (select, current, desired) scaling down towards 1, with
        // Pods 4 / 15 s and Percent 50 / 15 s.
        let halves = [(PolicyKind::Pods, 4, 15), (PolicyKind::Percent, 50, 15)];
        let down_cases = [
            (SelectPolicy::Max, 20, 10), // removes the most: 50 % of 20
            (SelectPolicy::Min, 20, 16), // removes the least: 4
            (SelectPolicy::Max, 6, 2),   // 6 - 4 beats 50 % (3)
            (SelectPolicy::Min, 6, 3),
            (SelectPolicy::Disabled, 20, 20),
        ];
        for (select, current, expected) in down_cases {
            let mut spec = HpaSpec::new(1, 1000);
            spec.behavior.scale_down = rules(0, select, &halves);
            let rec = once(&spec, current, &[], &[external(100.0)]);
            assert_eq!(rec.desired, expected, "{select:?} down from {current}");
        }
    }

    #[test]
    fn disabled_direction_still_lets_the_other_one_move() {
        let mut spec = unstabilized(1, 100);
        spec.behavior.scale_down.select = SelectPolicy::Disabled;
        let down = once(&spec, 10, &[], &[external(100.0)]);
        assert_eq!(down.desired, 10);
        let up = once(&spec, 10, &[], &[external(1500.0)]);
        assert_eq!(up.desired, 15);
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        // Default behavior: 300 s window. Load for 10 replicas at t=0, then
        // for 2. The last recommendation of 10 (t=0) leaves the window at
        // t=300, and 100 % per 15 s lets it drop at once.
        let spec = HpaSpec::new(1, 100);
        let trace = drive(&spec, &mut HpaState::new(), 10, 0, 600, |s| {
            if s == 0 { 1000.0 } else { 200.0 }
        });
        assert_eq!(changes(&trace, 10), [(300, 2)]);
    }

    #[test]
    fn dip_shorter_than_the_window_does_not_scale_down() {
        // Load for 10, a 240 s dip to 2, load for 10 again: never below 10.
        let spec = HpaSpec::new(1, 100);
        let trace = drive(&spec, &mut HpaState::new(), 10, 0, 900, |s| {
            if (300..540).contains(&s) {
                200.0
            } else {
                1000.0
            }
        });
        assert!(changes(&trace, 10).is_empty(), "{trace:?}");
    }

    #[test]
    fn first_sync_does_not_scale_down_within_the_window() {
        // A fresh state is seeded with the current size: a restarted
        // controller waits a full window before scaling down.
        let spec = HpaSpec::new(1, 100);
        let trace = drive(&spec, &mut HpaState::new(), 10, 0, 600, |_| 200.0);
        assert_eq!(changes(&trace, 10), [(300, 2)]);
    }

    #[test]
    fn scale_up_stabilization_window_uses_the_lowest_recent_recommendation() {
        // Scale-up window 60 s: a spike must last until every lower
        // recommendation is 60 s old; a 45 s spike never scales up.
        let mut spec = HpaSpec::new(1, 100);
        spec.behavior.scale_up.stabilization_window = Duration::from_secs(60);
        let sustained = drive(&spec, &mut HpaState::new(), 5, 0, 300, |s| {
            if s < 30 { 500.0 } else { 1000.0 }
        });
        // The last 5 was recommended at t=15; from t=75 all are 10.
        assert_eq!(changes(&sustained, 5), [(75, 10)]);

        let brief = drive(&spec, &mut HpaState::new(), 5, 0, 300, |s| {
            if (30..75).contains(&s) { 1000.0 } else { 500.0 }
        });
        assert!(changes(&brief, 5).is_empty(), "{brief:?}");

        let mut state = HpaState::new();
        drive(&spec, &mut state, 5, 0, 15, |_| 500.0);
        let held = recommend_replicas(&spec, &mut state, 5, &[], &[external(1000.0)], t(30));
        assert_eq!(held.desired, 5);
        assert!(
            held.reason
                .contains("lowest recommendation in the 1m scale-up window"),
            "{}",
            held.reason
        );
    }

    #[test]
    fn scale_down_percent_policy_limits_each_period() {
        // (percent per 15 s, trace from 10 towards 1)
        let cases: [(u32, &[(i64, u32)]); 2] = [
            (100, &[(0, 1)]),                  // straight to the target
            (50, &[(0, 5), (15, 2), (30, 1)]), // 10 → 5 → 2 (2.5 truncated) → 1
        ];
        for (percent, expected) in cases {
            let mut spec = unstabilized(1, 100);
            spec.behavior.scale_down =
                rules(0, SelectPolicy::Max, &[(PolicyKind::Percent, percent, 15)]);
            let trace = drive(&spec, &mut HpaState::new(), 10, 0, 60, |_| 100.0);
            assert_eq!(changes(&trace, 10), expected, "{percent} %");
        }
    }

    #[test]
    fn docs_scale_down_example_removes_the_larger_of_4_pods_and_10_percent_per_minute() {
        // Docs, "Scaling policies": Pods 4 / 60 s and Percent 10 / 60 s from
        // 80 replicas towards 10. First 8 go; at 72, 10 % is 7.2 "rounded up
        // to 8"; below 40 the Pods policy removes 4 at a time. (The example
        // sets no window; this one uses none to show only the policies.)
        let mut spec = unstabilized(1, 100);
        spec.behavior.scale_down = rules(
            0,
            SelectPolicy::Max,
            &[(PolicyKind::Pods, 4, 60), (PolicyKind::Percent, 10, 60)],
        );
        let trace = drive(&spec, &mut HpaState::new(), 80, 0, 1200, |_| 1000.0);
        let steps: Vec<u32> = changes(&trace, 80).iter().map(|&(_, r)| r).collect();
        assert_eq!(
            steps,
            [72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10]
        );
        // One step per 60 s period.
        let times: Vec<i64> = changes(&trace, 80).iter().map(|&(s, _)| s).collect();
        assert!(
            times
                .iter()
                .enumerate()
                .all(|(i, &s)| s == 60 * i64::try_from(i).unwrap()),
            "{times:?}"
        );
    }

    #[test]
    fn reasons_name_the_metric_the_window_and_the_limit() {
        let spec = HpaSpec::new(1, 100);
        let mut state = HpaState::new();
        let rec = recommend_replicas(&spec, &mut state, 10, &[], &[external(200.0)], t(0));
        assert_eq!(rec.desired, 10);
        assert_eq!(
            rec.reason,
            "queue proposes 2; held at 10: highest recommendation in the 5m scale-down window"
        );
        let rec = recommend_replicas(&spec, &mut state, 10, &[], &[external(10_000.0)], t(15));
        assert_eq!(
            rec.reason,
            "queue proposes 100; limited to 20 by scale-up policies"
        );
        let rec = recommend_replicas(&spec, &mut state, 20, &[], &[external(10_000.0)], t(30));
        assert_eq!(
            rec.reason,
            "queue proposes 100; limited to 40 by scale-up policies"
        );
        let small = HpaSpec::new(1, 30);
        let rec = recommend_replicas(&small, &mut state, 20, &[], &[external(10_000.0)], t(45));
        assert_eq!(
            rec.reason,
            "queue proposes 100; limited to 30 by maxReplicas 30"
        );
    }

    #[test]
    fn scale_events_are_recorded_only_when_desired_changes() {
        let spec = unstabilized(1, 100);
        let mut state = HpaState::new();
        recommend_replicas(&spec, &mut state, 4, &[], &[external(400.0)], t(0));
        assert!(state.scale_ups.is_empty() && state.scale_downs.is_empty());
        recommend_replicas(&spec, &mut state, 4, &[], &[external(700.0)], t(15));
        assert_eq!(
            state.scale_ups,
            [Stamped {
                at: t(15),
                replicas: 3
            }]
        );
        recommend_replicas(&spec, &mut state, 7, &[], &[external(200.0)], t(30));
        assert_eq!(
            state.scale_downs,
            [Stamped {
                at: t(30),
                replicas: 5
            }]
        );
    }

    #[test]
    fn state_stays_bounded_over_many_syncs() {
        // A day of 15 s syncs with load swinging between 2 and 40 replicas.
        let spec = HpaSpec::new(1, 100);
        let mut state = HpaState::new();
        let mut replicas = 10;
        let mut most = 0;
        for i in 0..5760_i64 {
            let load = if (i / 7) % 2 == 0 { 4000.0 } else { 200.0 };
            replicas = recommend_replicas(
                &spec,
                &mut state,
                replicas,
                &[],
                &[external(load)],
                t(i * 15),
            )
            .desired;
            most = most.max(state.history_len());
        }
        // 300 s / 15 s = 20 recommendations, and at most one scale event
        // younger than the 15 s policy periods.
        assert!(
            state.recommendations.len() <= 20,
            "{}",
            state.recommendations.len()
        );
        assert!(most <= 21, "{most}");
    }

    #[test]
    fn rate_limit_arithmetic_is_exact_and_saturates() {
        assert_eq!(ceil_div(7, 2), 4);
        assert_eq!(ceil_div(-7, 2), -3);
        assert_eq!(ceil_div(8, 2), 4);
        assert_eq!(to_u32(-5), 0);
        assert_eq!(to_u32(i128::from(u32::MAX) + 1), u32::MAX);
        assert_eq!(ceil_replicas(f64::NAN), 0);
        assert_eq!(ceil_replicas(-1.0), 0);
        assert_eq!(ceil_replicas(1e20), u32::MAX);
        assert_eq!(ceil_replicas(2.000_001), 3);
        // A huge Percent value neither overflows nor panics.
        let mut spec = HpaSpec::new(1, u32::MAX);
        spec.behavior.scale_up =
            rules(0, SelectPolicy::Max, &[(PolicyKind::Percent, u32::MAX, 15)]);
        let rec = recommend_replicas(&spec, &mut HpaState::new(), 3, &[], &[external(1e30)], t(0));
        assert_eq!(rec.proposals[0].replicas, Some(u32::MAX));
        // ceil(3 × (100 + u32::MAX) / 100)
        assert_eq!(rec.desired, 128_849_022);
    }

    fn latency(observed: f64) -> MetricInput {
        MetricInput::total(
            "ttft_p90",
            Target::Latency {
                objective: 1.0,
                scale_down_below: DEFAULT_SCALE_DOWN_BELOW,
            },
            observed,
        )
    }

    #[test]
    fn latency_band_scales_up_above_holds_within_and_steps_down_below() {
        let spec = HpaSpec::new(1, 100);
        for (observed, current, want) in [
            (1.5, 4, 6),      // 1.5 × 4
            (9.0, 4, 8),      // at most doubling per sync
            (1.11, 4, 5),     // just above 1 + tolerance: at least one more
            (1.1, 4, 4),      // at the edge: hold
            (0.5, 4, 4),      // at the lower edge: hold
            (0.49, 4, 3),     // below it: at least one fewer
            (0.3, 10, 6),     // ceil(10 × 0.3 / 0.5)
            (0.01, 10, 5),    // at most half
            (f64::NAN, 9, 5), // no requests in the window: half
        ] {
            let mut state = HpaState::new();
            // The first sync seeds the scale-down window with `current`;
            // skip it by using an empty window.
            let mut spec = spec.clone();
            spec.behavior.scale_down.stabilization_window = Duration::ZERO;
            let rec =
                recommend_replicas(&spec, &mut state, current, &[], &[latency(observed)], t(0));
            assert_eq!(rec.desired, want, "{observed} at {current}: {}", rec.reason);
        }
    }

    #[test]
    fn a_latency_within_its_band_holds_off_a_scale_down_another_metric_proposes() {
        let mut spec = HpaSpec::new(1, 100);
        spec.behavior.scale_down.stabilization_window = Duration::ZERO;
        let rec = recommend_replicas(
            &spec,
            &mut HpaState::new(),
            6,
            &[],
            &[external(100.0), latency(0.8)],
            t(0),
        );
        assert_eq!(rec.desired, 6, "{}", rec.reason);
    }

    #[test]
    fn a_negative_latency_is_invalid_and_blocks_nothing_else() {
        let rec = recommend_replicas(
            &HpaSpec::new(1, 100),
            &mut HpaState::new(),
            4,
            &[],
            &[latency(-1.0)],
            t(0),
        );
        assert_eq!(rec.desired, 4);
        assert_eq!(rec.proposals[0].replicas, None);
    }

    /// p90 latency of a service at `load` requests/s over `replicas`
    /// replicas of 10 requests/s each: an M/M/1-like curve per replica,
    /// 0.2 s when idle, unbounded at saturation.
    fn plant(load: f64, replicas: u32) -> f64 {
        let rho = load / (10.0 * f64::from(replicas.max(1)));
        if rho >= 0.999 {
            50.0
        } else {
            0.2 / (1.0 - rho)
        }
    }

    #[test]
    fn a_latency_objective_settles_after_a_step_in_load_without_flapping() {
        // Objective 1 s: holds for rho in [0.6, 0.82]. Load steps 20 → 200
        // → 40 requests/s; every sync sees the latency of the replicas in
        // place (pods start at once, which is the harshest case for flapping).
        let mut spec = HpaSpec::new(1, 100);
        spec.behavior = Behavior::default();
        let mut state = HpaState::new();
        let mut replicas = 4;
        let mut trace = Vec::new();
        for i in 0..240_i64 {
            let load = match i {
                0..40 => 20.0,
                40..140 => 200.0,
                _ => 40.0,
            };
            let rec = recommend_replicas(
                &spec,
                &mut state,
                replicas,
                &[],
                &[latency(plant(load, replicas))],
                t(i * 15),
            );
            replicas = rec.desired;
            trace.push(replicas);
        }
        // Within each load phase the replica count moves in one direction
        // only (no up-down-up), and ends where the latency sits in the band.
        for (phase, from, to) in [("low", 0, 40), ("high", 40, 140), ("after", 140, 240)] {
            let steps: Vec<i64> = trace[from..to]
                .windows(2)
                .map(|w| i64::from(w[1]) - i64::from(w[0]))
                .filter(|d| *d != 0)
                .collect();
            assert!(
                steps.iter().all(|d| *d > 0) || steps.iter().all(|d| *d < 0),
                "{phase} phase flaps: {:?}",
                &trace[from..to]
            );
        }
        let high = trace[139];
        assert!(
            plant(200.0, high) <= 1.1 && plant(200.0, high - 1) > 0.5,
            "high settled at {high}"
        );
        assert!(high >= 21, "{high}");
        let after = trace[239];
        let settled = plant(40.0, after);
        assert!(
            settled <= 1.1 && after < high / 2,
            "after settled at {after}: {settled}"
        );
        // It got there from above and stays: the last 20 syncs do not move.
        assert!(
            trace[220..].iter().all(|r| *r == after),
            "{:?}",
            &trace[140..]
        );
    }

    #[test]
    fn a_latency_objective_remembers_where_it_was_missed_and_does_not_step_back_into_the_cliff() {
        // One replica at 10 req/s misses 1 s; two replicas are far below half
        // of it. Without the memory the band would step 2 → 1 and back.
        let mut spec = HpaSpec::new(1, 10);
        spec.behavior.scale_down.stabilization_window = Duration::ZERO;
        let mut state = HpaState::new();
        let at_rate = |latency: f64, rate: f64| {
            vec![MetricInput {
                name: "ttft".to_owned(),
                target: Target::Latency {
                    objective: 1.0,
                    scale_down_below: DEFAULT_SCALE_DOWN_BELOW,
                },
                observation: Ok(Observation::LatencyAtRate { latency, rate }),
            }]
        };
        let up = recommend_replicas(&spec, &mut state, 1, &[], &at_rate(3.0, 10.0), t(0));
        assert_eq!(up.desired, 2);
        // At 2 replicas latency is 0.2 s (< 0.5): the band alone says 1, but
        // 10 req/s on one replica is where the objective was missed.
        let held = recommend_replicas(&spec, &mut state, 2, &[], &at_rate(0.2, 10.0), t(15));
        assert_eq!(held.desired, 2, "{}", held.reason);
        assert!(
            held.proposals[0].reason.contains("held at 2"),
            "{}",
            held.reason
        );
        // When the load halves, one replica carries 5 req/s < 0.9 × 10: down.
        let down = recommend_replicas(&spec, &mut state, 2, &[], &at_rate(0.2, 5.0), t(30));
        assert_eq!(down.desired, 1, "{}", down.reason);
    }
}
