//! The simulated world and its discrete-event engine.
//!
//! ```text
//!   traffic streams ──arrivals──► router ──► replica queues ─► prefill ─► decode batch ─► latency stats
//!                                              ▲ ready replicas
//!   scrape (15 s) ─► emulated DCGM / serving metrics ─► core HPA (15 s) ─► scale out / in
//!        scale out: new pod ─► core filter + scores (ResourcePolicy) ─► bind ─► startup ─► ready
//!        scale in : core deletion costs order the victims (ReplicaSet rules)
//!   cluster-autoscaler (10 s): pending pods ─► core expander ─► provision cloud nodes (5–10 min)
//!                              empty cloud nodes for 10 min ─► remove
//! ```
//!
//! Placement, scaling and node-group choice are the decision core's
//! functions, called exactly as the cluster components call them; the world
//! only applies their answers. Time is integer microseconds. The event queue
//! is ordered by (time, sequence), so ties resolve in insertion order and a
//! run is a pure function of the scenario and seed.
//!
//! Serving model (per replica, continuous batching): requests wait in the
//! replica's queue for a batch slot; a request's prefill runs alone and
//! pauses the decode batch for its duration (its end is the first token),
//! or, with a profile's chunked prefill, runs in chunks beside the batch,
//! which keeps decoding at the mixed iterations' pace; decode then advances
//! all running requests one token per step, a step of a batch of `b` taking
//! `decode_step_us(b)` (with a profile's `contextTokens`, at the batch's
//! mean context, evaluated when the batch changes). A virtual step counter
//! per replica makes each batch change O(log b).
//!
//! Parts, by role: this module is the engine (the world's state, the event
//! queue and its loop); `serving` the requests and replicas' batching;
//! `cluster` nodes, pod placement and the cluster-autoscaler; `scaler`
//! metrics and the replica scaler; `stats` the time series and summary.
//! Traffic comes from [`crate::traffic`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use spillway::decision::deletion_costs;
use spillway::decision::expand::{ExpansionOption, NodeGroup, best_options, node_price_micros};
use spillway::decision::filter::{FilterOutcome, FilterRequest, admit_bind, filter_counted};
use spillway::decision::fit::fitting_nodes;
use spillway::decision::governance::governing_policy_in;
use spillway::decision::headroom::headroom_ask;
use spillway::decision::hpa;
use spillway::decision::ledger::{FILTER_TTL, Ledger};
use spillway::decision::policy::{GroupKey, PolicyKey};
use spillway::decision::quantity::{GPU, Resources};
use spillway::decision::scaler::{DrainCandidate, scale_down_order};
use spillway::decision::score::scores;
use spillway::decision::snapshot::{Node, Pod, PodPhase, Snapshot};
use spillway::decision::spillback::{SpillBackState, spill_back};
use spillway::decision::time::Time;
use spillway::decision::usage::{UnitUsage, unit_usage};

use crate::hist::Histogram;
use crate::outcome::{
    HeadroomOutcome, NodeScaleUp, Outcome, Percentiles, PoolOutcome, RequestCounts, ScaleEvent,
    Series, ServiceOutcome, SloOutcome, SpillBackOutcome, Summary,
};
use crate::prefetch::Feed;
use crate::router::{Router, Slot};
use crate::scenario::{Compiled, MetricKind, PoolKind, Routing};
use crate::timers::Timers;
use crate::traffic::{Request, TrafficStream};

mod cluster;
mod scaler;
mod serving;
mod stats;

/// Simulated t = 0 as a wall-clock instant for the core (2026-01-05T00:00:00Z,
/// a Monday midnight, matching the ServeGen curve's t = 0).
const EPOCH_MS: i64 = 1_767_571_200_000;
const US_PER_S: f64 = 1e6;
const HOUR_US: f64 = 3.6e9;

/// An index as the u32 the event queue stores (the world never holds 2^32 items).
fn id(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

fn core_time(us: i64) -> Time {
    Time::from_millis(EPOCH_MS + us / 1000)
}

#[allow(clippy::cast_precision_loss)]
fn secs(us: i64) -> f64 {
    us as f64 / US_PER_S
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A traffic source failed to open.
    #[error("service {service}: traffic: {message}")]
    Traffic {
        /// The service.
        service: String,
        /// What went wrong.
        message: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    ReplicaReady { r: u32 },
    NodeReady { n: u32 },
    DrainDeadline { r: u32 },
    HpaTick,
    CaTick,
    Scrape,
    Sample,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RState {
    Pending,
    Starting,
    Ready,
    Draining,
    Gone,
}

#[derive(Clone, Copy, Debug)]
struct Req {
    arrival: i64,
    first: i64,
    prompt: u32,
    output: u32,
    svc: u32,
}

/// A replica. `repr(C)` keeps the fields in this order: what every request
/// event touches comes first, in the struct's first cache lines; what the
/// scaler, the scheduler and reports read comes after.
#[repr(C)]
struct Replica {
    // Hot: routing, prefill, decode batch, busy time.
    v: f64,
    v_at: i64,
    /// µs per decode step since `v_at`: the batch's iteration time, or
    /// while a chunked prefill runs beside the batch, that prefill's time
    /// per iteration.
    step: f64,
    prefill: Option<(u32, i64)>,
    busy_from: Option<i64>,
    busy_acc: i64,
    svc: usize,
    /// Position in the service's router while Ready.
    slot: Option<Slot>,
    queue: VecDeque<u32>,
    /// (finish step as f64 bits, request); non-negative f64 bits order like the values.
    decoding: BinaryHeap<Reverse<(u64, u32)>>,
    state: RState,
    // Cold: chunked prefill and context (profiles that use them), identity,
    // placement, lifecycle, scrapes.
    /// Per-iteration time of the batch while a chunked prefill runs beside
    /// it (the batch keeps decoding), µs; 0 when the prefill pauses it.
    prefill_step: f64,
    /// Σ (prompt + 1 − join step) over the decoding requests, so that their
    /// total context at step `v` is `ctx_base + len · v` (kept only for
    /// profiles whose decode time depends on context).
    ctx_base: f64,
    uid: String,
    node: Option<usize>,
    created: i64,
    bound_at: i64,
    gone_at: Option<i64>,
    wait_since: Option<Time>,
    /// Scrapes, newest last: what Prometheus holds for this pod.
    scrapes: VecDeque<Scrape>,
}

impl Replica {
    fn outstanding(&self) -> u32 {
        let n = self.queue.len() + self.decoding.len() + usize::from(self.prefill.is_some());
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// One scrape of a replica's series.
#[derive(Clone, Copy, Debug)]
struct Scrape {
    at: i64,
    /// Busy share of the interval before the scrape.
    busy: f64,
    waiting: f64,
    running: f64,
}

struct NodeRt {
    pool: usize,
    name: String,
    ready: bool,
    created: i64,
    removed: Option<i64>,
    pods: u32,
    empty_since: i64,
}

struct PoolRt {
    live: Vec<usize>,
    counter: u32,
    provisioned: u32,
    removed: u32,
    peak: u32,
}

struct SvcRt {
    stream: Feed<TrafficStream>,
    next: Option<Request>,
    router: Router,
    held: VecDeque<u32>,
    desired: u32,
    counter: u32,
    hpa_state: hpa::HpaState,
    /// The HPA's view of the live replicas (`live` order), rebuilt when the
    /// live set changes and otherwise only refreshed, so a sync over a
    /// thousand pods copies no name.
    hpa_pods: (Vec<usize>, Vec<hpa::PodSample>),
    ttft: Histogram,
    e2e: Histogram,
    queue_wait: Histogram,
    /// First tokens (time, TTFT in µs) within the longest latency window
    /// of the service's scaler; kept only when it has a latency metric.
    recent_ttft: Option<VecDeque<(i64, i64)>>,
    ttft_win: Histogram,
    e2e_win: Histogram,
    slo_met: u64,
    /// `slo_met` and judged requests at the previous sample (per-window attainment).
    slo_met_sampled: u64,
    judged_sampled: u64,
    /// Simulated seconds the service sat at its scaler's `maxReplicas`.
    at_max_s: f64,
    counts: RequestCounts,
    arrivals_win: u64,
    peak: u32,
    scale_events: u32,
}

/// What the expander was asked at one cluster-autoscaler scale-up, and the
/// node group the simulated cluster-autoscaler grew (`None`: none).
#[derive(Clone, Debug)]
pub struct ExpansionRecord {
    /// Simulated seconds.
    pub t_s: f64,
    /// The decision core's clock then.
    pub now: spillway::decision::time::Time,
    /// The cluster, with pods placed on nodes being created laid over it.
    pub snapshot: Snapshot,
    /// Reservations.
    pub ledger: Ledger,
    /// The node groups, by id.
    pub groups: BTreeMap<String, NodeGroup>,
    /// cluster-autoscaler's options.
    pub options: Vec<ExpansionOption>,
    /// The group grown.
    pub chosen: Option<String>,
}

/// Expected requests from which a service's traffic is drawn by a producer
/// thread: below it, starting the thread costs more than it saves.
const PREFETCH_FROM: f64 = 1e6;

/// The world: cluster, services, decision-core state and statistics.
pub struct World<'a> {
    sc: &'a Compiled,
    now: i64,
    end: i64,
    seq: u64,
    heap: BinaryHeap<Reverse<(i64, u64, Ev)>>,
    /// Each busy replica's next internal event.
    timers: Timers,
    rng: Pcg64Mcg,
    snapshot: Snapshot,
    ledger: Ledger,
    nodes: Vec<NodeRt>,
    pools: Vec<PoolRt>,
    replicas: Vec<Replica>,
    svcs: Vec<SvcRt>,
    reqs: Vec<Req>,
    free_reqs: Vec<u32>,
    /// Unit names per service, from the governing policy (index = unit, last = outside).
    unit_names: Vec<Vec<String>>,
    /// Unit index of each pool's nodes per service (`unit_names.len() - 1` = outside).
    pool_unit: Vec<Vec<usize>>,
    pending_time: Histogram,
    /// Replicas waiting for a node, in creation order.
    pending: BTreeSet<usize>,
    /// Replicas not yet gone, per service.
    live: Vec<BTreeSet<usize>>,
    /// Live nodes by name.
    node_ids: BTreeMap<String, usize>,
    /// A scheduling pass is due after the current event (resources were freed).
    need_schedule: bool,
    /// Bumped by every change a placement depends on (nodes, pods).
    version: u64,
    /// `version` at the last pass that left pods pending, for the
    /// cluster-autoscaler's periodic retries: an unchanged cluster gives the
    /// same answer, unless a pending pod's wait clock may expire.
    settled_at: Option<u64>,
    pods_created: u32,
    events: u64,
    series: Series,
    scale_log: Vec<ScaleEvent>,
    node_scale_ups: Vec<NodeScaleUp>,
    /// Nodes started ahead of demand by `spec.headroom`.
    headroom_nodes: u32,
    /// The expander's inputs at each scale-up, when asked for.
    expansion_log: Option<Vec<ExpansionRecord>>,
    last_sample: i64,
    /// Spill-back's clocks (the policy controller's memory), and the
    /// evictions it made.
    spill: SpillBackState,
    spill_back_evictions: u32,
}

impl<'a> World<'a> {
    /// Builds the world at t = 0: data-center and initial cloud nodes Ready,
    /// each service's initial replicas placed by the core and Ready.
    ///
    /// # Errors
    /// [`SimError`] when a traffic source cannot be opened.
    pub fn new(sc: &'a Compiled) -> Result<Self, SimError> {
        Self::with_drawing(sc, None)
    }

    /// [`World::new`], with requests drawn ahead on a producer thread
    /// (`Some(true)`), inline (`Some(false)`), or as `new` chooses (`None`:
    /// ahead for long runs on a machine with a spare core).
    ///
    /// # Errors
    /// [`SimError`] when a traffic source cannot be opened.
    pub fn with_drawing(sc: &'a Compiled, ahead: Option<bool>) -> Result<Self, SimError> {
        let s = &sc.scenario;
        let end = s.duration.us();
        let mut svcs = Vec::new();
        for (i, cs) in sc.services.iter().enumerate() {
            let seed = s.seed ^ (0x9E37_79B9_7F4A_7C15_u64.wrapping_mul(i as u64 + 1));
            let stream = crate::traffic::stream(&cs.spec.traffic, seed, end, &sc.base_dir)
                .map_err(|e| SimError::Traffic {
                    service: cs.spec.name.clone(),
                    message: e.to_string(),
                })?;
            // Long runs draw requests on a spare core (same sequence).
            #[allow(clippy::cast_precision_loss)]
            let expected = stream.mean_rate_hint() * end as f64 / 1e6;
            let spare_core = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
            let ahead = ahead.unwrap_or(spare_core && expected >= PREFETCH_FROM);
            let mut stream = Feed::new(stream, ahead);
            let next = stream.next();
            svcs.push(SvcRt {
                stream,
                next,
                router: Router::default(),
                held: VecDeque::new(),
                desired: cs.spec.replicas,
                counter: 0,
                hpa_state: hpa::HpaState::default(),
                hpa_pods: (Vec::new(), Vec::new()),
                ttft: Histogram::default(),
                e2e: Histogram::default(),
                queue_wait: Histogram::default(),
                recent_ttft: cs
                    .hpa
                    .as_ref()
                    .is_some_and(|(_, ms)| {
                        ms.iter()
                            .any(|m| matches!(m.kind, MetricKind::TtftQuantile { .. }))
                    })
                    .then(VecDeque::new),
                ttft_win: Histogram::default(),
                e2e_win: Histogram::default(),
                slo_met: 0,
                slo_met_sampled: 0,
                judged_sampled: 0,
                at_max_s: 0.0,
                counts: RequestCounts::default(),
                arrivals_win: 0,
                peak: 0,
                scale_events: 0,
            });
        }
        let mut w = World {
            sc,
            now: 0,
            end,
            seq: 0,
            heap: BinaryHeap::new(),
            timers: Timers::default(),
            rng: Pcg64Mcg::seed_from_u64(s.seed),
            snapshot: Snapshot::new(),
            ledger: Ledger::new(),
            spill: SpillBackState::default(),
            spill_back_evictions: 0,
            nodes: Vec::new(),
            pools: s
                .pools
                .iter()
                .map(|_| PoolRt {
                    live: Vec::new(),
                    counter: 0,
                    provisioned: 0,
                    removed: 0,
                    peak: 0,
                })
                .collect(),
            replicas: Vec::new(),
            svcs,
            reqs: Vec::new(),
            free_reqs: Vec::new(),
            unit_names: Vec::new(),
            pool_unit: Vec::new(),
            pending_time: Histogram::default(),
            pending: BTreeSet::new(),
            live: vec![BTreeSet::new(); sc.services.len()],
            node_ids: BTreeMap::new(),
            need_schedule: false,
            version: 0,
            settled_at: None,
            pods_created: 0,
            events: 0,
            series: Series::default(),
            scale_log: Vec::new(),
            node_scale_ups: Vec::new(),
            headroom_nodes: 0,
            expansion_log: None,
            last_sample: 0,
        };
        for p in &sc.policies {
            w.snapshot.upsert_policy(p.clone());
        }
        for (pi, p) in s.pools.iter().enumerate() {
            let initial = match p.kind {
                PoolKind::Datacenter => p.nodes,
                PoolKind::Cloud => p.nodes.max(p.min_nodes),
            };
            for _ in 0..initial {
                let n = w.add_node(pi);
                w.node_ready(n);
            }
        }
        for si in 0..sc.services.len() {
            let (names, per_pool) = w.units_of_service(si);
            w.unit_names.push(names);
            w.pool_unit.push(per_pool);
        }
        w.series.columns = w.columns();
        for si in 0..sc.services.len() {
            for _ in 0..sc.services[si].spec.replicas {
                w.create_replica(si);
            }
        }
        w.schedule_pending();
        // The service was already running: initial replicas start Ready.
        for r in 0..w.replicas.len() {
            if w.replicas[r].state == RState::Starting {
                w.replica_ready(r);
            }
        }
        w.push(0, Ev::Scrape);
        w.push(
            hpa::SYNC_PERIOD
                .as_micros()
                .try_into()
                .unwrap_or(15_000_000),
            Ev::HpaTick,
        );
        w.push(s.cluster_autoscaler.scan_interval.us(), Ev::CaTick);
        w.push(0, Ev::Sample);
        Ok(w)
    }

    /// The unit names of the policy governing a service's pods (plus `-` for
    /// outside every unit) and the unit of each pool's nodes.
    fn units_of_service(&self, si: usize) -> (Vec<String>, Vec<usize>) {
        let policy = self.service_policy(si);
        let mut names: Vec<String> = policy
            .map(|p| p.units.iter().map(|u| u.name.clone()).collect())
            .unwrap_or_default();
        let outside = names.len();
        names.push("-".into());
        let per_pool = self
            .sc
            .scenario
            .pools
            .iter()
            .map(|pool| {
                let probe = Node {
                    labels: pool.labels.clone(),
                    ..Node::default()
                };
                policy
                    .and_then(|p| p.unit_of_node(&probe))
                    .unwrap_or(outside)
            })
            .collect();
        (names, per_pool)
    }

    /// Keeps the expander's inputs at every scale-up (the snapshot, ledger,
    /// node groups and options), for checking the answers against the
    /// cluster expander's.
    #[must_use]
    pub fn log_expansions(mut self) -> Self {
        self.expansion_log = Some(Vec::new());
        self
    }

    fn push(&mut self, t: i64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq, ev)));
    }

    /// Runs to the end, calling `progress` with the simulated fraction done
    /// now and then.
    pub fn run(self, progress: &mut dyn FnMut(f64)) -> Outcome {
        self.run_logging_expansions(progress).0
    }

    /// [`World::run`], also returning what the expander was asked at each
    /// cluster-autoscaler scale-up (empty unless [`World::log_expansions`]).
    pub fn run_logging_expansions(
        mut self,
        progress: &mut dyn FnMut(f64),
    ) -> (Outcome, Vec<ExpansionRecord>) {
        let mut next_report = 0u64;
        while self.next_event(self.end) {
            if self.events >= next_report {
                next_report = self.events + 1_000_000;
                #[allow(clippy::cast_precision_loss)]
                progress(self.now as f64 / self.end.max(1) as f64);
            }
        }
        self.now = self.end;
        self.sample();
        progress(1.0);
        let log = self.expansion_log.take().unwrap_or_default();
        (self.finish(), log)
    }

    /// Processes the next event (an arrival, a replica's step, or a cluster
    /// event, in (time, sequence) order) if it comes before `until`; false
    /// when none does.
    #[inline]
    fn next_event(&mut self, until: i64) -> bool {
        let (si, t_arr) = self
            .svcs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.next.map(|r| (i, r.arrival_us)))
            .min_by_key(|&(i, t)| (t, i))
            .unwrap_or((usize::MAX, i64::MAX));
        // Timers and events share the (time, sequence) order.
        let k_ev = self
            .heap
            .peek()
            .map_or((i64::MAX, u64::MAX), |Reverse((t, q, _))| (*t, *q));
        let k_timer = self.timers.peek().map_or((i64::MAX, u64::MAX), |(k, _)| k);
        let t_ev = k_ev.0.min(k_timer.0);
        let t = t_ev.min(t_arr);
        if t >= until {
            return false;
        }
        self.now = t;
        self.events += 1;
        if t_ev <= t_arr {
            if k_timer < k_ev {
                // The step re-arms or cancels this replica's timer in
                // place (one sift instead of a pop and a push).
                if let Some((_, r)) = self.timers.peek() {
                    self.replica_step(r as usize);
                }
            } else if let Some(Reverse((_, _, ev))) = self.heap.pop() {
                self.handle(ev);
            }
            if self.need_schedule {
                self.schedule_pending();
            }
        } else {
            let svc = &mut self.svcs[si];
            if let Some(req) = svc.next.take() {
                svc.next = svc.stream.next();
                self.arrive(si, req);
            }
        }
        true
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::ReplicaReady { r } => {
                let r = r as usize;
                if self.replicas[r].state == RState::Starting {
                    self.replica_ready(r);
                }
            }
            Ev::NodeReady { n } => {
                self.node_ready(n as usize);
                self.schedule_pending();
            }
            Ev::DrainDeadline { r } => {
                let r = r as usize;
                if self.replicas[r].state == RState::Draining {
                    self.drop_outstanding(r);
                    self.replica_gone(r);
                }
            }
            Ev::HpaTick => {
                self.hpa_tick();
                self.spill_back_tick();
                let period = i64::try_from(hpa::SYNC_PERIOD.as_micros()).unwrap_or(15_000_000);
                self.push(self.now + period, Ev::HpaTick);
            }
            Ev::CaTick => {
                self.ca_tick();
                let scan = self.sc.scenario.cluster_autoscaler.scan_interval.us();
                self.push(self.now + scan, Ev::CaTick);
            }
            Ev::Scrape => {
                self.scrape();
                let every = self.sc.scenario.metrics.scrape_interval.us();
                self.push(self.now + every, Ev::Scrape);
            }
            Ev::Sample => {
                if self.now > 0 {
                    self.sample();
                }
                let every = self.sc.scenario.sample_interval.us();
                self.push(self.now + every, Ev::Sample);
            }
        }
    }
}

/// Worlds for the parts' unit tests: built from scenario text, driven event
/// by event up to a time.
#[cfg(test)]
pub(super) mod testing {
    use super::World;

    /// One data-center node with `gpus` GPUs and a cloud pool of up to two
    /// such nodes (5 minutes to provision); one service with `replicas`
    /// one-GPU replicas, `perf` as given, no traffic of its own.
    pub fn scenario(gpus: u32, replicas: u32, perf: &str) -> String {
        format!(
            "name: unit\nduration: 2h\nsampleInterval: 1m\npools:\n\
             - {{name: dc, kind: datacenter, nodes: 1, gpusPerNode: {gpus}}}\n\
             - {{name: cloud, kind: cloud, minNodes: 0, maxNodes: 2, gpusPerNode: {gpus}, provisioning: {{min: 5m, max: 5m}}, costPerGpuHour: 2}}\n\
             services:\n- name: svc\n  gpusPerReplica: 1\n  replicas: {replicas}\n  maxBatch: 4\n  perf: {perf}\n\
             \x20 slo: {{ttft: 1s}}\n\
             \x20 traffic: {{kind: poisson, ratePerSecond: 0, promptTokens: 1, outputTokens: 1}}\n"
        )
    }

    /// The world of `yaml` at t = 0 (the compiled scenario lives for the test).
    pub fn world(yaml: &str) -> World<'static> {
        let compiled = crate::scenario::parse(yaml, "unit.yaml", std::path::Path::new("."))
            .expect("a valid scenario");
        World::new(Box::leak(Box::new(compiled))).expect("the world starts")
    }

    impl World<'_> {
        /// Processes every event before `t` and stops the clock at `t`.
        pub fn run_to(&mut self, t: i64) {
            while self.next_event(t) {}
            self.now = t;
        }
    }
}
