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
//! pauses the decode batch for its duration (its end is the first token);
//! decode then advances all running requests one token per step, a step of a
//! batch of `b` taking `decode_step_us(b)`. A virtual step counter per replica
//! makes each batch change O(log b).

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
    /// Per-iteration time of the batch while a chunked prefill runs beside
    /// it (the batch keeps decoding); `None` when the prefill pauses it.
    prefill_step: Option<f64>,
    /// Σ (prompt + 1 − join step) over the decoding requests, so that their
    /// total context at step `v` is `ctx_base + len · v` (kept only for
    /// profiles whose decode time depends on context).
    ctx_base: f64,
    busy_from: Option<i64>,
    busy_acc: i64,
    svc: usize,
    /// Position in the service's router while Ready.
    slot: Option<Slot>,
    queue: VecDeque<u32>,
    /// (finish step as f64 bits, request); non-negative f64 bits order like the values.
    decoding: BinaryHeap<Reverse<(u64, u32)>>,
    state: RState,
    // Cold: identity, placement, lifecycle, scrapes.
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
        loop {
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
            if t >= self.end {
                break;
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

    // ---- nodes --------------------------------------------------------------

    fn add_node(&mut self, pool: usize) -> usize {
        self.version += 1;
        let p = &mut self.pools[pool];
        p.counter += 1;
        let name = format!("{}-{}", self.sc.scenario.pools[pool].name, p.counter);
        let id = self.nodes.len();
        self.nodes.push(NodeRt {
            pool,
            name,
            ready: false,
            created: self.now,
            removed: None,
            pods: 0,
            empty_since: self.now,
        });
        p.live.push(id);
        p.peak = p.peak.max(u32::try_from(p.live.len()).unwrap_or(u32::MAX));
        id
    }

    fn node_ready(&mut self, n: usize) {
        let spec = &self.sc.scenario.pools[self.nodes[n].pool];
        let node = &mut self.nodes[n];
        node.ready = true;
        node.empty_since = self.now;
        self.node_ids.insert(node.name.clone(), n);
        self.version += 1;
        self.snapshot.upsert_node(Node {
            name: node.name.clone(),
            labels: spec.labels.clone(),
            allocatable: Resources::new().with(GPU, i64::from(spec.gpus_per_node)),
            unschedulable: false,
        });
    }

    fn remove_node(&mut self, n: usize) {
        let pool = self.nodes[n].pool;
        self.nodes[n].removed = Some(self.now);
        self.snapshot.remove_node(&self.nodes[n].name);
        self.node_ids.remove(&self.nodes[n].name);
        self.version += 1;
        let p = &mut self.pools[pool];
        p.live.retain(|&x| x != n);
        p.removed += 1;
    }

    // ---- replicas -----------------------------------------------------------

    fn create_replica(&mut self, si: usize) -> usize {
        let spec = &self.sc.services[si].spec;
        let svc = &mut self.svcs[si];
        let uid = format!("{}-{}", spec.name, svc.counter);
        svc.counter += 1;
        let r = self.replicas.len();
        self.snapshot.upsert_pod(Pod {
            uid: uid.clone(),
            namespace: spec.namespace.clone(),
            name: uid.clone(),
            labels: spec.labels.clone(),
            annotations: BTreeMap::new(),
            requests: Resources::new().with(GPU, i64::from(spec.gpus_per_replica)),
            node: None,
            phase: PodPhase::Pending,
            priority: 0,
            created: core_time(self.now),
            deleting: None,
            never_preempts: false,
            // The service's Deployment replaces a replica that goes.
            controlled: true,
        });
        self.replicas.push(Replica {
            svc: si,
            uid,
            state: RState::Pending,
            node: None,
            created: self.now,
            bound_at: 0,
            gone_at: None,
            wait_since: None,
            queue: VecDeque::new(),
            prefill: None,
            prefill_step: None,
            ctx_base: 0.0,
            step: 1.0,
            decoding: BinaryHeap::new(),
            v: 0.0,
            v_at: self.now,
            busy_from: None,
            busy_acc: 0,
            scrapes: VecDeque::new(),
            slot: None,
        });
        self.pods_created += 1;
        self.pending.insert(r);
        self.live[si].insert(r);
        self.version += 1;
        let live = self.live_replicas(si);
        let svc = &mut self.svcs[si];
        svc.peak = svc.peak.max(live);
        r
    }

    fn live_replicas(&self, si: usize) -> u32 {
        let n = self.live[si]
            .iter()
            .filter(|&&r| self.replicas[r].state != RState::Draining)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Places pending pods through the core: feasible nodes by resource fit,
    /// Filter for the policy's unit order, the best score, a Bind check.
    ///
    /// Pods of one service are interchangeable: once one finds no node for a
    /// reason that does not depend on its own wait clock, the service's other
    /// pending pods are not tried again in this pass (same answer).
    fn schedule_pending(&mut self) {
        self.need_schedule = false;
        if self.pending.is_empty() {
            return;
        }
        let now_core = core_time(self.now);
        let pending: Vec<usize> = self.pending.iter().copied().collect();
        let mut stuck = BTreeSet::new();
        let mut cache = UsageCache::new();
        for r in pending {
            if stuck.contains(&self.replicas[r].svc) {
                continue;
            }
            let Some(pod) = self.snapshot.pod(&self.replicas[r].uid).cloned() else {
                continue;
            };
            let out = place_filter(
                &self.snapshot,
                &self.ledger,
                &mut cache,
                &pod,
                self.replicas[r].wait_since,
                now_core,
            );
            if let Some(since) = out.wait_since() {
                self.replicas[r].wait_since.get_or_insert(since);
            }
            if out.eligible.is_empty() {
                if out.wait_since().is_none() {
                    stuck.insert(self.replicas[r].svc);
                }
                continue;
            }
            let ranked = scores(&self.snapshot, &pod, &out.eligible);
            let Some(best) = ranked
                .iter()
                .max_by(|a, b| a.score.cmp(&b.score).then_with(|| b.node.cmp(a.node)))
            else {
                continue;
            };
            // As the extender does: Filter reserves the slot, Bind checks it,
            // the (here immediate) watch of the binding releases it.
            if let Some(res) = out.reservation(&pod, now_core.after(FILTER_TTL)) {
                self.ledger.reserve(&pod.uid, res);
            }
            let admitted = admit_bind(&self.snapshot, &self.ledger, &pod, best.node, now_core);
            let node = self.node_ids.get(best.node).copied();
            match (admitted, node) {
                (Ok(()), Some(n)) => {
                    note_placed(&mut cache, &out, &pod);
                    self.bind(r, n, pod);
                }
                _ => {
                    self.ledger.release(&pod.uid);
                }
            }
        }
    }

    fn bind(&mut self, r: usize, n: usize, mut pod: Pod) {
        pod.node = Some(self.nodes[n].name.clone());
        pod.phase = PodPhase::Running;
        self.ledger.release(&pod.uid);
        self.snapshot.upsert_pod(pod);
        self.nodes[n].pods += 1;
        let spec = &self.sc.services[self.replicas[r].svc].spec;
        let startup = spec.startup.image_pull.us()
            + if spec.startup.model_cache {
                spec.startup.cached_model_load.us()
            } else {
                spec.startup.model_load.us()
            };
        let rep = &mut self.replicas[r];
        rep.node = Some(n);
        rep.state = RState::Starting;
        self.pending.remove(&r);
        self.version += 1;
        rep.bound_at = self.now;
        rep.busy_from = None;
        rep.busy_acc = 0;
        self.pending_time.record(self.now - rep.created);
        self.push(self.now + startup, Ev::ReplicaReady { r: id(r) });
    }

    fn replica_ready(&mut self, r: usize) {
        let si = self.replicas[r].svc;
        self.replicas[r].state = RState::Ready;
        let load = self.replicas[r].outstanding() as usize;
        self.replicas[r].slot = Some(self.svcs[si].router.insert(id(r), load));
        // Requests held at the gateway while no replica was ready.
        while let Some(q) = self.svcs[si].held.pop_front() {
            if !self.dispatch(si, q) {
                self.svcs[si].held.push_front(q);
                break;
            }
        }
    }

    fn remove_from_ready(&mut self, r: usize) {
        let si = self.replicas[r].svc;
        if let Some(slot) = self.replicas[r].slot.take()
            && let Some(moved) = self.svcs[si].router.remove(slot)
        {
            self.replicas[moved as usize].slot = Some(slot);
        }
    }

    /// Moves a ready replica to the router bucket of its current load.
    fn reslot(&mut self, r: usize) {
        let si = self.replicas[r].svc;
        let Some(slot) = self.replicas[r].slot else {
            return;
        };
        let load = self.replicas[r].outstanding() as usize;
        if load == slot.load {
            return;
        }
        let router = &mut self.svcs[si].router;
        if let Some(moved) = router.remove(slot) {
            self.replicas[moved as usize].slot = Some(slot);
        }
        self.replicas[r].slot = Some(self.svcs[si].router.insert(id(r), load));
    }

    fn delete_replica(&mut self, r: usize) {
        match self.replicas[r].state {
            RState::Pending | RState::Starting => self.replica_gone(r),
            RState::Ready => {
                self.remove_from_ready(r);
                self.replicas[r].state = RState::Draining;
                if let Some(mut pod) = self.snapshot.pod(&self.replicas[r].uid).cloned() {
                    pod.deleting = Some(core_time(self.now));
                    self.snapshot.upsert_pod(pod);
                    self.version += 1;
                }
                if self.replicas[r].outstanding() == 0 {
                    self.replica_gone(r);
                } else {
                    let grace = self.sc.services[self.replicas[r].svc]
                        .spec
                        .termination_grace_period
                        .us();
                    self.push(self.now + grace, Ev::DrainDeadline { r: id(r) });
                }
            }
            RState::Draining | RState::Gone => {}
        }
    }

    fn drop_outstanding(&mut self, r: usize) {
        let si = self.replicas[r].svc;
        let rep = &mut self.replicas[r];
        let mut dropped: Vec<u32> = rep.queue.drain(..).collect();
        dropped.extend(rep.prefill.take().map(|(q, _)| q));
        rep.prefill_step = None;
        dropped.extend(rep.decoding.drain().map(|Reverse((_, q))| q));
        rep.ctx_base = 0.0;
        self.svcs[si].counts.dropped += dropped.len() as u64;
        self.free_reqs.extend(dropped);
    }

    fn replica_gone(&mut self, r: usize) {
        self.remove_from_ready(r);
        let rep = &mut self.replicas[r];
        if let (Some(from), RState::Ready | RState::Draining) = (rep.busy_from.take(), rep.state) {
            rep.busy_acc += self.now - from;
        }
        rep.state = RState::Gone;
        rep.gone_at = Some(self.now);
        let rep_svc = rep.svc;
        let uid = rep.uid.clone();
        let node = rep.node;
        self.timers.cancel(id(r));
        if let Some(n) = node {
            let node = &mut self.nodes[n];
            node.pods = node.pods.saturating_sub(1);
            if node.pods == 0 {
                node.empty_since = self.now;
            }
        }
        self.snapshot.remove_pod(&uid);
        self.pending.remove(&r);
        self.live[rep_svc].remove(&r);
        self.need_schedule = true;
        self.version += 1;
    }

    // ---- requests -----------------------------------------------------------

    fn alloc_req(&mut self, req: Req) -> u32 {
        if let Some(i) = self.free_reqs.pop() {
            self.reqs[i as usize] = req;
            i
        } else {
            self.reqs.push(req);
            u32::try_from(self.reqs.len() - 1).unwrap_or(u32::MAX)
        }
    }

    fn arrive(&mut self, si: usize, r: Request) {
        let q = self.alloc_req(Req {
            arrival: r.arrival_us,
            first: r.arrival_us,
            prompt: r.prompt_tokens,
            output: r.output_tokens.max(1),
            svc: u32::try_from(si).unwrap_or(0),
        });
        let svc = &mut self.svcs[si];
        svc.counts.arrived += 1;
        svc.arrivals_win += 1;
        if !svc.held.is_empty() || !self.dispatch(si, q) {
            self.svcs[si].held.push_back(q);
        }
    }

    /// Sends request `q` to a ready replica; false when the gateway must hold it.
    fn dispatch(&mut self, si: usize, q: u32) -> bool {
        let Some((r, load)) = self.svcs[si].router.least() else {
            return false;
        };
        let cs = &self.sc.services[si];
        if cs.spec.routing == Routing::CentralQueue && load >= cs.perf.max_batch() as usize {
            return false;
        }
        let r = r as usize;
        self.replicas[r].queue.push_back(q);
        self.reslot(r);
        if self.kick(r) {
            self.schedule_next(r);
        }
        true
    }

    /// The decode batch's iteration time now, µs: by batch size, and by the
    /// running requests' mean context where the profile measures it.
    fn decode_step(&self, r: usize) -> i64 {
        let rep = &self.replicas[r];
        let perf = &self.sc.services[rep.svc].perf;
        let b = u32::try_from(rep.decoding.len()).unwrap_or(u32::MAX);
        if perf.uses_context() && b > 0 {
            #[allow(clippy::cast_precision_loss)]
            let n = rep.decoding.len() as f64;
            perf.decode_step_at_us(b, (rep.ctx_base + n * rep.v) / n)
        } else {
            perf.decode_step_us(b)
        }
    }

    /// Sets the step time the batch advances at until its next change.
    fn restep(&mut self, r: usize) {
        #[allow(clippy::cast_precision_loss)]
        let step = match self.replicas[r].prefill_step {
            Some(step) if self.replicas[r].prefill.is_some() => step,
            _ => self.decode_step(r) as f64,
        };
        self.replicas[r].step = step.max(1.0);
    }

    fn advance(&mut self, r: usize) {
        let now = self.now;
        let rep = &mut self.replicas[r];
        let moving = rep.prefill.is_none() || rep.prefill_step.is_some();
        if moving && !rep.decoding.is_empty() {
            #[allow(clippy::cast_precision_loss)]
            let dt = (now - rep.v_at) as f64;
            rep.v += dt / rep.step;
        }
        rep.v_at = now;
    }

    fn set_busy(&mut self, r: usize) {
        let now = self.now;
        let rep = &mut self.replicas[r];
        let busy = rep.prefill.is_some() || !rep.decoding.is_empty();
        match (busy, rep.busy_from) {
            (true, None) => rep.busy_from = Some(now),
            (false, Some(from)) => {
                rep.busy_acc += now - from;
                rep.busy_from = None;
            }
            _ => {}
        }
    }

    /// Starts the next prefill if the replica is free to; true if it did.
    fn kick(&mut self, r: usize) -> bool {
        let si = self.replicas[r].svc;
        let max_batch = self.sc.services[si].perf.max_batch() as usize;
        {
            let rep = &self.replicas[r];
            if rep.prefill.is_some() || rep.queue.is_empty() || rep.decoding.len() + 1 > max_batch {
                return false;
            }
        }
        self.advance(r);
        let Some(q) = self.replicas[r].queue.pop_front() else {
            return false;
        };
        let req = self.reqs[q as usize];
        let perf = &self.sc.services[si].perf;
        let batch = u32::try_from(self.replicas[r].decoding.len()).unwrap_or(u32::MAX);
        let (dur, prefill_step) = match perf.chunked_prefill(req.prompt, batch, self.decode_step(r))
        {
            // The batch keeps decoding, one token per iteration of the prefill.
            #[allow(clippy::cast_precision_loss)]
            Some((dur, iterations)) if batch > 0 => {
                (dur, Some(dur as f64 / f64::from(iterations.max(1))))
            }
            Some((dur, _)) => (dur, None),
            None => (perf.prefill_us(req.prompt).max(1), None),
        };
        self.svcs[si].queue_wait.record(self.now - req.arrival);
        self.replicas[r].prefill = Some((q, self.now + dur));
        self.replicas[r].prefill_step = prefill_step;
        self.set_busy(r);
        true
    }

    fn schedule_next(&mut self, r: usize) {
        self.restep(r);
        let rep = &self.replicas[r];
        let next_done = rep.decoding.peek().map(|Reverse((bits, _))| {
            let remaining = (f64::from_bits(*bits) - rep.v).max(0.0);
            let dt = crate::traffic::ceil_i64(remaining * rep.step);
            rep.v_at + dt.max(0)
        });
        let t = match (rep.prefill, next_done) {
            // A chunked prefill: the batch keeps finishing requests meanwhile.
            (Some((_, end)), Some(done)) if rep.prefill_step.is_some() => end.min(done),
            (Some((_, end)), _) => end,
            (None, Some(done)) => done,
            (None, None) => {
                self.timers.cancel(id(r));
                return;
            }
        };
        self.seq += 1;
        self.timers.set(id(r), (t.max(self.now), self.seq));
    }

    fn replica_step(&mut self, r: usize) {
        self.advance(r);
        let si = self.replicas[r].svc;
        // Prefill finished: first token out, join the decode batch.
        if let Some((q, end)) = self.replicas[r].prefill
            && end <= self.now
        {
            self.replicas[r].prefill = None;
            self.replicas[r].prefill_step = None;
            self.reqs[q as usize].first = self.now;
            let req = self.reqs[q as usize];
            let ttft = self.now - req.arrival;
            self.svcs[si].ttft_win.record(ttft);
            if let Some(recent) = &mut self.svcs[si].recent_ttft {
                recent.push_back((self.now, ttft));
            }
            if req.output <= 1 {
                self.complete(r, q);
            } else {
                let rep = &mut self.replicas[r];
                let finish = rep.v + f64::from(req.output - 1);
                rep.decoding.push(Reverse((finish.to_bits(), q)));
                if self.sc.services[si].perf.uses_context() {
                    rep.ctx_base += f64::from(req.prompt) + 1.0 - rep.v;
                }
            }
        }
        // Completions: every request whose last step is done.
        loop {
            let rep = &mut self.replicas[r];
            let Some(&Reverse((bits, q))) = rep.decoding.peek() else {
                break;
            };
            if f64::from_bits(bits) > rep.v + 1e-6 {
                break;
            }
            rep.decoding.pop();
            if self.sc.services[si].perf.uses_context() {
                let req = &self.reqs[q as usize];
                let joined = f64::from_bits(bits) - f64::from(req.output - 1);
                rep.ctx_base -= f64::from(req.prompt) + 1.0 - joined;
                if rep.decoding.is_empty() {
                    rep.ctx_base = 0.0;
                }
            }
            self.complete(r, q);
        }
        if self.replicas[r].state == RState::Draining && self.replicas[r].outstanding() == 0 {
            self.set_busy(r);
            self.replica_gone(r);
            return;
        }
        self.refill(r);
        self.kick(r);
        self.set_busy(r);
        self.schedule_next(r);
    }

    /// Central-queue routing: pull held requests into free batch slots.
    fn refill(&mut self, r: usize) {
        let si = self.replicas[r].svc;
        if self.sc.services[si].spec.routing != Routing::CentralQueue
            || self.replicas[r].state != RState::Ready
        {
            return;
        }
        while self.replicas[r].outstanding() < self.sc.services[si].perf.max_batch() {
            let Some(q) = self.svcs[si].held.pop_front() else {
                break;
            };
            self.replicas[r].queue.push_back(q);
            self.reslot(r);
        }
    }

    fn complete(&mut self, r: usize, q: u32) {
        let req = self.reqs[q as usize];
        let si = req.svc as usize;
        let e2e = self.now - req.arrival;
        let slo = &self.sc.services[si].spec.slo;
        let svc = &mut self.svcs[si];
        svc.e2e_win.record(e2e);
        svc.counts.completed += 1;
        if req.first - req.arrival <= slo.ttft.us() && slo.e2e.is_none_or(|e| e2e <= e.us()) {
            svc.slo_met += 1;
        }
        self.free_reqs.push(q);
        self.reslot(r);
    }

    // ---- scaler, metrics, autoscaler ------------------------------------------

    fn scrape(&mut self) {
        let every = self.sc.scenario.metrics.scrape_interval.us().max(1);
        // Keep what a query `queryLag` in the past can still see.
        let keep = self.sc.scenario.metrics.query_lag.us() + every;
        let now = self.now;
        for &r in self.live.iter().flatten() {
            let rep = &mut self.replicas[r];
            if !matches!(
                rep.state,
                RState::Ready | RState::Starting | RState::Draining
            ) {
                continue;
            }
            if let Some(from) = rep.busy_from {
                rep.busy_acc += now - from;
                rep.busy_from = Some(now);
            }
            #[allow(clippy::cast_precision_loss)]
            let scrape = Scrape {
                at: now,
                busy: (rep.busy_acc as f64 / every as f64).clamp(0.0, 1.0),
                waiting: rep.queue.len() as f64,
                running: (rep.decoding.len() + usize::from(rep.prefill.is_some())) as f64,
            };
            rep.busy_acc = 0;
            rep.scrapes.push_back(scrape);
            while rep.scrapes.len() > 1 && rep.scrapes.front().is_some_and(|s| now - s.at > keep) {
                rep.scrapes.pop_front();
            }
        }
    }

    /// The value a metrics query sees for replica `r` now: its newest scrape
    /// at least `queryLag` old, or none (a missing metric) before its first one.
    fn metric_value(&self, r: usize, kind: MetricKind) -> Option<f64> {
        let rep = &self.replicas[r];
        let factor = self.sc.services[rep.svc].spec.utilization_factor;
        let visible = self.now - self.sc.scenario.metrics.query_lag.us();
        let s = rep.scrapes.iter().rev().find(|s| s.at <= visible)?;
        Some(match kind {
            MetricKind::GpuUtilPercent => s.busy * factor * 100.0,
            MetricKind::GpuActiveRatio => s.busy * factor,
            MetricKind::RequestsWaiting => s.waiting,
            MetricKind::RequestsRunning => s.running,
            MetricKind::TtftQuantile { .. } => return None,
        })
    }

    fn hpa_tick(&mut self) {
        for si in 0..self.sc.services.len() {
            let Some((spec, metrics)) = &self.sc.services[si].hpa else {
                continue;
            };
            let current = self.svcs[si].desired;
            let (mut ids, mut pods) = std::mem::take(&mut self.svcs[si].hpa_pods);
            if !ids.iter().eq(self.live[si].iter()) {
                ids = self.live[si].iter().copied().collect();
                pods = ids
                    .iter()
                    .map(|&r| hpa::PodSample::running(&self.replicas[r].uid))
                    .collect();
            }
            for (pod, &r) in pods.iter_mut().zip(&ids) {
                let state = self.replicas[r].state;
                pod.ready = state == RState::Ready;
                pod.terminating = state == RState::Draining;
            }
            // The latency metrics' trailing windows.
            let longest = metrics
                .iter()
                .filter_map(|m| match m.kind {
                    MetricKind::TtftQuantile { window_us, .. } => Some(window_us),
                    _ => None,
                })
                .max();
            let now = self.now;
            if let (Some(longest), Some(recent)) = (longest, &mut self.svcs[si].recent_ttft) {
                while recent.front().is_some_and(|(t, _)| now - t > longest) {
                    recent.pop_front();
                }
            }
            // Pods report once Starting or Ready; the rest are missing.
            let reported = |r: usize, kind| {
                matches!(self.replicas[r].state, RState::Ready | RState::Starting)
                    .then(|| self.metric_value(r, kind))
                    .flatten()
            };
            let recent = &self.svcs[si].recent_ttft;
            let inputs: Vec<hpa::MetricInput> = metrics
                .iter()
                .map(|m| {
                    let observation = if let MetricKind::TtftQuantile {
                        permille,
                        window_us,
                    } = m.kind
                    {
                        let (latency, count) =
                            ttft_quantile(recent.as_ref(), now, window_us, permille);
                        #[allow(clippy::cast_precision_loss)]
                        let rate = count as f64 / (window_us.max(1) as f64 / 1e6);
                        hpa::Observation::LatencyAtRate { latency, rate }
                    } else if m.per_pod {
                        hpa::Observation::InPodOrder(
                            ids.iter().map(|&r| reported(r, m.kind)).collect(),
                        )
                    } else {
                        hpa::Observation::Total(
                            ids.iter().filter_map(|&r| reported(r, m.kind)).sum(),
                        )
                    };
                    hpa::MetricInput {
                        name: m.name.clone(),
                        target: m.target,
                        observation: Ok(observation),
                    }
                })
                .collect();
            let rec = hpa::recommend_replicas(
                spec,
                &mut self.svcs[si].hpa_state,
                current,
                &pods,
                &inputs,
                core_time(self.now),
            );
            self.svcs[si].hpa_pods = (ids, pods);
            if rec.desired != current {
                self.scale_log.push(ScaleEvent {
                    t_s: secs(self.now),
                    service: self.sc.services[si].spec.name.clone(),
                    from: current,
                    to: rec.desired,
                    reason: rec.reason.clone(),
                });
                self.svcs[si].scale_events += 1;
                self.svcs[si].desired = rec.desired;
                self.scale_to(si, rec.desired);
            }
        }
    }

    /// The policy controller's spill-back, on the scaler's period: the core
    /// picks the pod to move; it drains like a scaled-in replica and the
    /// service's Deployment creates its replacement, which the core's Filter
    /// places in the earlier unit.
    fn spill_back_tick(&mut self) {
        if !self.sc.policies.iter().any(|p| p.spill_back.is_some()) {
            return;
        }
        let moves = spill_back(
            &self.snapshot,
            &self.ledger,
            &mut self.spill,
            core_time(self.now),
        );
        for m in moves {
            let found = self.live.iter().enumerate().find_map(|(si, live)| {
                live.iter()
                    .copied()
                    .find(|&r| self.replicas[r].uid == m.uid)
                    .map(|r| (si, r))
            });
            let Some((si, r)) = found else { continue };
            self.spill_back_evictions += 1;
            self.delete_replica(r);
            self.create_replica(si);
        }
        self.schedule_pending();
    }

    /// Creates or deletes replicas; victims follow the ReplicaSet controller's
    /// order with the core's deletion costs.
    fn scale_to(&mut self, si: usize, desired: u32) {
        let live: Vec<usize> = self.live[si]
            .iter()
            .copied()
            .filter(|&r| self.replicas[r].state != RState::Draining)
            .collect();
        let n = u32::try_from(live.len()).unwrap_or(u32::MAX);
        if desired > n {
            for _ in n..desired {
                self.create_replica(si);
            }
            self.schedule_pending();
            return;
        }
        // The cluster scaler's order (core `scale_down_order`): unscheduled,
        // then not ready, then the lowest deletion cost, then the fewest
        // requests in flight, then the newest.
        let costs = self.deletion_costs_of(si);
        let candidates: Vec<DrainCandidate> = live
            .iter()
            .map(|&r| {
                let rep = &self.replicas[r];
                let waiting = self.metric_value(r, MetricKind::RequestsWaiting);
                let running = self.metric_value(r, MetricKind::RequestsRunning);
                DrainCandidate {
                    name: rep.uid.clone(),
                    scheduled: rep.state != RState::Pending,
                    ready: rep.state == RState::Ready,
                    cost: costs.get(&rep.uid).copied().unwrap_or(0),
                    in_flight: waiting.zip(running).map(|(w, r)| w + r),
                    created_ms: rep.created / 1000,
                }
            })
            .collect();
        for i in scale_down_order(&candidates)
            .into_iter()
            .take((n - desired) as usize)
        {
            self.delete_replica(live[i]);
        }
    }

    fn deletion_costs_of(&self, si: usize) -> BTreeMap<String, i32> {
        match self.service_policy(si) {
            Some(p) => deletion_costs(&self.snapshot, &self.ledger, p, core_time(self.now)),
            None => BTreeMap::new(),
        }
    }

    /// The policy governing a service's pods (all replicas share namespace
    /// and labels, so one probe pod answers for all of them).
    fn service_policy(&self, si: usize) -> Option<&spillway::decision::policy::Policy> {
        let spec = &self.sc.services[si].spec;
        let probe = Pod {
            namespace: spec.namespace.clone(),
            labels: spec.labels.clone(),
            ..Pod::default()
        };
        governing_policy_in(&self.snapshot, &probe).policy
    }

    fn ca_tick(&mut self) {
        let timed_waits = self
            .pending
            .iter()
            .any(|&r| self.replicas[r].wait_since.is_some());
        if timed_waits || self.settled_at != Some(self.version) {
            self.schedule_pending();
            self.ca_scale_up();
            self.settled_at = (!self.pending.is_empty()).then_some(self.version);
        }
        let asks = self.headroom_asks();
        self.ca_headroom(&asks);
        self.ca_scale_down(&asks);
    }

    /// cluster-autoscaler scale-up: simulate the pending pods on ready and
    /// upcoming nodes; for those left over, propose node groups and let the
    /// core expander choose.
    fn ca_scale_up(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pools = &self.sc.scenario.pools;
        let upcoming = self.nodes.iter().any(|n| !n.ready && n.removed.is_none());
        let room = |pi: usize| {
            let size = u32::try_from(self.pools[pi].live.len()).unwrap_or(u32::MAX);
            pools[pi].max_nodes.saturating_sub(size)
        };
        // With no node on its way no pending pod can be placed in the
        // simulation below, and with every cloud pool at its maximum there is
        // nothing to expand: the pass would change nothing.
        if !upcoming
            && !(0..pools.len()).any(|pi| pools[pi].kind == PoolKind::Cloud && room(pi) > 0)
        {
            return;
        }
        // The pass runs on the live snapshot with the upcoming nodes and the
        // pods it places laid over it, and every change is undone after it:
        // copying a snapshot of thousands of nodes and pods on every scan
        // cost more than the whole pass.
        #[cfg(debug_assertions)]
        let before = snapshot_contents(&self.snapshot);
        let mut added = Vec::new();
        for node in self
            .nodes
            .iter()
            .filter(|n| !n.ready && n.removed.is_none())
        {
            let spec = &pools[node.pool];
            self.snapshot.upsert_node(Node {
                name: node.name.clone(),
                labels: spec.labels.clone(),
                allocatable: Resources::new().with(GPU, i64::from(spec.gpus_per_node)),
                unschedulable: false,
            });
            added.push(node.name.clone());
        }
        let mut displaced = Vec::new();
        let choice = self.ca_expansion(upcoming, &mut displaced);
        for pod in displaced.into_iter().rev() {
            self.snapshot.upsert_pod(pod);
        }
        for name in &added {
            self.snapshot.remove_node(name);
        }
        #[cfg(debug_assertions)]
        debug_assert!(
            snapshot_contents(&self.snapshot) == before,
            "the autoscaler pass must leave the snapshot as it found it"
        );
        let Some((pi, count)) = choice else {
            return;
        };
        self.provision(pi, count);
    }

    /// cluster-autoscaler adds `count` nodes to pool `pi`; each joins after
    /// the pool's provisioning delay.
    fn provision(&mut self, pi: usize, count: u32) {
        for _ in 0..count {
            let n = self.add_node(pi);
            self.pools[pi].provisioned += 1;
            let d = self.sc.scenario.pools[pi].provisioning;
            let (lo, hi) = (d.min.us(), d.max.us());
            let delay = if hi > lo {
                self.rng.random_range(lo..=hi)
            } else {
                lo
            };
            self.push(self.now + delay, Ev::NodeReady { n: id(n) });
        }
    }

    /// Scale-up headroom (`spec.headroom`): for every policy that asks for
    /// room ahead of demand, the cloud pool of the asked unit and the GPUs
    /// of one replica. In the cluster a placeholder pod of that shape holds
    /// the room; here the room is a node with that many free GPUs (ready or
    /// joining), which cluster-autoscaler starts when there is none and
    /// does not remove while the ask lasts.
    fn headroom_asks(&self) -> Vec<(usize, i64)> {
        let pools = &self.sc.scenario.pools;
        let mut out = Vec::new();
        for policy in self.snapshot.policies() {
            let Some(ask) = headroom_ask(&self.snapshot, &self.ledger, policy, core_time(self.now))
            else {
                continue;
            };
            let unit = &policy.units[ask.unit];
            if let Some(pi) = pools
                .iter()
                .position(|p| p.kind == PoolKind::Cloud && unit.selects_node(&p.labels))
            {
                out.push((pi, ask.requests.get(GPU)));
            }
        }
        out
    }

    /// Whether pool `pi` has a node (ready or joining) with `gpus` free,
    /// other than `except`.
    fn has_room(&self, pi: usize, gpus: i64, except: Option<usize>) -> bool {
        self.pools[pi].live.iter().any(|&n| {
            Some(n) != except
                && (!self.nodes[n].ready
                    || self
                        .snapshot
                        .free(&self.nodes[n].name)
                        .is_some_and(|f| f.get(GPU) >= gpus))
        })
    }

    /// Starts a node for every ask (`headroom_asks`) no node has room for.
    fn ca_headroom(&mut self, asks: &[(usize, i64)]) {
        for &(pi, gpus) in asks {
            let max = self.sc.scenario.pools[pi].max_nodes;
            let size = u32::try_from(self.pools[pi].live.len()).unwrap_or(u32::MAX);
            if size < max && !self.has_room(pi, gpus, None) {
                self.provision(pi, 1);
                self.headroom_nodes += 1;
                self.node_scale_ups.push(NodeScaleUp {
                    t_s: secs(self.now),
                    pool: self.sc.scenario.pools[pi].name.clone(),
                    nodes: 1,
                    reason: "headroom: one node ahead of demand".to_owned(),
                });
            }
        }
    }

    /// The cluster-autoscaler's choice for the pending pods, on the snapshot
    /// with the upcoming nodes laid over it: the pool to grow and by how many
    /// nodes. Pods it places on upcoming or free room are written into the
    /// snapshot; their previous versions go to `displaced`, for the caller
    /// to put back.
    fn ca_expansion(&mut self, upcoming: bool, displaced: &mut Vec<Pod>) -> Option<(usize, u32)> {
        let pools = &self.sc.scenario.pools;
        let room = |pi: usize| {
            let size = u32::try_from(self.pools[pi].live.len()).unwrap_or(u32::MAX);
            pools[pi].max_nodes.saturating_sub(size)
        };
        let pending: Vec<usize> = self.pending.iter().copied().collect();
        let now_core = core_time(self.now);
        let mut unhelped = Vec::new();
        let mut stuck = BTreeSet::new();
        let mut cache = UsageCache::new();
        for &r in &pending {
            let Some(pod) = self.snapshot.pod(&self.replicas[r].uid).cloned() else {
                continue;
            };
            // Without upcoming nodes the pass just before this one already
            // found no room; with them, identical pods of a service that
            // found none need not be tried again.
            if !upcoming || stuck.contains(&self.replicas[r].svc) {
                unhelped.push(pod);
                continue;
            }
            let out = place_filter(
                &self.snapshot,
                &self.ledger,
                &mut cache,
                &pod,
                self.replicas[r].wait_since,
                now_core,
            );
            if let Some(&node) = out.eligible.first() {
                note_placed(&mut cache, &out, &pod);
                let mut placed = pod.clone();
                placed.node = Some(node.to_owned());
                placed.phase = PodPhase::Running;
                self.snapshot.upsert_pod(placed);
                displaced.push(pod);
            } else {
                if out.wait_since().is_none() {
                    stuck.insert(self.replicas[r].svc);
                }
                unhelped.push(pod);
            }
        }
        if unhelped.is_empty() {
            return None;
        }
        let mut groups = BTreeMap::new();
        let mut options = Vec::new();
        for (pi, spec) in pools.iter().enumerate() {
            if spec.kind != PoolKind::Cloud {
                continue;
            }
            let room = room(pi);
            if room == 0 {
                continue;
            }
            let alloc = Resources::new().with(GPU, i64::from(spec.gpus_per_node));
            let fitting: Vec<&Pod> = unhelped
                .iter()
                .filter(|p| p.requests.get(GPU) <= alloc.get(GPU))
                .collect();
            if fitting.is_empty() {
                continue;
            }
            // First-fit of the pods' GPU requests onto new nodes.
            let mut bins: Vec<i64> = Vec::new();
            for p in &fitting {
                let need = p.requests.get(GPU);
                if let Some(b) = bins.iter_mut().find(|b| **b >= need) {
                    *b -= need;
                } else {
                    bins.push(alloc.get(GPU) - need);
                }
            }
            let count = u32::try_from(bins.len()).unwrap_or(u32::MAX).min(room);
            let price = node_price_micros(spec.cost_per_gpu_hour, alloc.get(GPU));
            groups.insert(
                spec.name.clone(),
                NodeGroup {
                    id: spec.name.clone(),
                    labels: spec.labels.clone(),
                    allocatable: alloc,
                    price_per_node_hour_micros: price,
                },
            );
            options.push(ExpansionOption {
                group: spec.name.clone(),
                node_count: count,
                pods: fitting.iter().map(|p| p.uid.clone()).collect(),
            });
        }
        if options.is_empty() {
            return None;
        }
        let choice = best_options(&self.snapshot, &self.ledger, &groups, &options, now_core);
        let best = choice.chosen().first();
        if let Some(log) = self.expansion_log.as_mut() {
            log.push(ExpansionRecord {
                t_s: secs(self.now),
                now: now_core,
                snapshot: self.snapshot.clone(),
                ledger: self.ledger.clone(),
                groups: groups.clone(),
                options: options.clone(),
                chosen: best.map(|b| b.option.group.clone()),
            });
        }
        let best = best?;
        let pi = pools.iter().position(|p| p.name == best.option.group)?;
        // cluster-autoscaler takes the expander's choice of group, not its
        // node count: it adds the nodes its own estimate asked for.
        let asked = options
            .iter()
            .find(|o| o.group == best.option.group)
            .map_or(best.option.node_count, |o| o.node_count);
        self.node_scale_ups.push(NodeScaleUp {
            t_s: secs(self.now),
            pool: best.option.group.clone(),
            nodes: asked,
            reason: best.reason.clone(),
        });
        Some((pi, asked))
    }

    /// Removes cloud nodes empty for `scaleDownUnneededTime`, except the
    /// room the headroom asks hold (`spares`: pool and GPUs).
    fn ca_scale_down(&mut self, spares: &[(usize, i64)]) {
        let unneeded = self
            .sc
            .scenario
            .cluster_autoscaler
            .scale_down_unneeded_time
            .us();
        for pi in 0..self.pools.len() {
            let spec = &self.sc.scenario.pools[pi];
            if spec.kind != PoolKind::Cloud {
                continue;
            }
            let candidates: Vec<usize> = self.pools[pi]
                .live
                .iter()
                .copied()
                .filter(|&n| {
                    self.nodes[n].ready
                        && self.nodes[n].pods == 0
                        && self.now - self.nodes[n].empty_since >= unneeded
                })
                .collect();
            for n in candidates {
                if id(self.pools[pi].live.len()) <= spec.min_nodes {
                    break;
                }
                // The room headroom holds stays while it is asked for.
                if spares
                    .iter()
                    .any(|&(p, gpus)| p == pi && !self.has_room(pi, gpus, Some(n)))
                {
                    continue;
                }
                self.remove_node(n);
            }
        }
    }

    // ---- statistics -----------------------------------------------------------

    fn columns(&self) -> Vec<String> {
        let mut c = vec!["t_s".to_owned()];
        for (si, s) in self.sc.services.iter().enumerate() {
            let n = &s.spec.name;
            for k in [
                "rps",
                "replicas",
                "ready",
                "pending_pods",
                "waiting",
                "ttft_p50_s",
                "ttft_p95_s",
                "e2e_p50_s",
                "e2e_p95_s",
                "slo_attainment",
                "gpu_util_pct",
            ] {
                c.push(format!("{k}:{n}"));
            }
            for u in &self.unit_names[si] {
                c.push(format!("replicas:{n}:{u}"));
            }
        }
        for p in &self.sc.scenario.pools {
            for k in [
                "nodes",
                "nodes_added",
                "nodes_removed",
                "gpus",
                "gpus_used",
                "cost",
            ] {
                c.push(format!("{k}:{}", p.name));
            }
        }
        c.push("cost:total".into());
        c
    }

    fn node_seconds(&self, pool: usize, upto: i64) -> f64 {
        self.nodes
            .iter()
            .filter(|n| n.pool == pool)
            .map(|n| secs(n.removed.unwrap_or(upto).min(upto) - n.created))
            .sum()
    }

    fn sample(&mut self) {
        let interval = secs(self.now - self.last_sample).max(1e-9);
        self.last_sample = self.now;
        let mut row = vec![secs(self.now)];
        for si in 0..self.sc.services.len() {
            let mut replicas = 0.0;
            let mut ready = 0.0;
            let mut pending = 0.0;
            let mut waiting = 0.0;
            let mut by_unit = vec![0.0; self.unit_names[si].len()];
            let (mut util_sum, mut util_n) = (0.0, 0.0);
            for &r in &self.live[si] {
                let rep = &self.replicas[r];
                match rep.state {
                    RState::Gone => continue,
                    RState::Pending => pending += 1.0,
                    RState::Ready => {
                        ready += 1.0;
                        // What the scaler reads for this pod now.
                        if let Some(u) = self.metric_value(r, MetricKind::GpuUtilPercent) {
                            util_sum += u;
                            util_n += 1.0;
                        }
                    }
                    _ => {}
                }
                if rep.state != RState::Draining {
                    replicas += 1.0;
                }
                #[allow(clippy::cast_precision_loss)]
                {
                    waiting += rep.queue.len() as f64;
                }
                if let Some(n) = rep.node {
                    by_unit[self.pool_unit[si][self.nodes[n].pool]] += 1.0;
                }
            }
            if self.sc.services[si]
                .hpa
                .as_ref()
                .is_some_and(|(h, _)| replicas >= f64::from(h.max_replicas))
            {
                self.svcs[si].at_max_s += interval;
            }
            let svc = &mut self.svcs[si];
            #[allow(clippy::cast_precision_loss)]
            {
                waiting += svc.held.len() as f64;
                row.push(svc.arrivals_win as f64 / interval);
            }
            // Requests judged against the SLO in this window (completed or
            // dropped); NaN (an empty cell) when there were none.
            let judged = svc.counts.completed + svc.counts.dropped;
            #[allow(clippy::cast_precision_loss)]
            let window_attainment = if judged > svc.judged_sampled {
                (svc.slo_met - svc.slo_met_sampled) as f64 / (judged - svc.judged_sampled) as f64
            } else {
                f64::NAN
            };
            svc.slo_met_sampled = svc.slo_met;
            svc.judged_sampled = judged;
            svc.arrivals_win = 0;
            row.extend([
                replicas,
                ready,
                pending,
                waiting,
                svc.ttft_win.quantile_s(0.5),
                svc.ttft_win.quantile_s(0.95),
                svc.e2e_win.quantile_s(0.5),
                svc.e2e_win.quantile_s(0.95),
                window_attainment,
                if util_n > 0.0 {
                    util_sum / util_n
                } else {
                    f64::NAN
                },
            ]);
            // Window histograms fold into the run's totals here, so the hot
            // path records each latency once.
            svc.ttft.merge(&svc.ttft_win);
            svc.e2e.merge(&svc.e2e_win);
            svc.ttft_win.clear();
            svc.e2e_win.clear();
            row.extend(by_unit);
        }
        let mut total = 0.0;
        for (pi, spec) in self.sc.scenario.pools.iter().enumerate() {
            let live = &self.pools[pi].live;
            #[allow(clippy::cast_precision_loss)]
            let nodes = live.len() as f64;
            let gpus = nodes * f64::from(spec.gpus_per_node);
            let used: f64 = self
                .live
                .iter()
                .flatten()
                .map(|&r| &self.replicas[r])
                .filter(|r| r.node.is_some_and(|n| self.nodes[n].pool == pi))
                .map(|r| f64::from(self.sc.services[r.svc].spec.gpus_per_replica))
                .sum();
            let cost = self.node_seconds(pi, self.now) / 3600.0
                * f64::from(spec.gpus_per_node)
                * spec.cost_per_gpu_hour;
            total += cost;
            row.extend([
                nodes,
                f64::from(self.pools[pi].provisioned),
                f64::from(self.pools[pi].removed),
                gpus,
                used,
                cost,
            ]);
        }
        row.push(total);
        self.series.rows.push(row);
    }

    fn finish(self) -> Outcome {
        let end = self.end;
        let s = &self.sc.scenario;
        let mut pools = Vec::new();
        let mut cost_total = 0.0;
        let mut gpu_hours_total = 0.0;
        let mut replica_s_cloud = 0.0;
        let mut replica_s_all = 0.0;
        for (pi, spec) in s.pools.iter().enumerate() {
            let node_hours = self.node_seconds(pi, end) / 3600.0;
            let gpu_hours = node_hours * f64::from(spec.gpus_per_node);
            let used_us: f64 = self
                .replicas
                .iter()
                .filter(|r| r.node.is_some_and(|n| self.nodes[n].pool == pi))
                .map(|r| {
                    #[allow(clippy::cast_precision_loss)]
                    let held = (r.gone_at.unwrap_or(end).min(end) - r.bound_at) as f64;
                    held * f64::from(self.sc.services[r.svc].spec.gpus_per_replica)
                })
                .sum();
            let cost = gpu_hours * spec.cost_per_gpu_hour;
            cost_total += cost;
            gpu_hours_total += gpu_hours;
            pools.push(PoolOutcome {
                name: spec.name.clone(),
                kind: match spec.kind {
                    PoolKind::Datacenter => "datacenter".into(),
                    PoolKind::Cloud => "cloud".into(),
                },
                node_hours,
                gpu_hours,
                gpu_hours_used: used_us / HOUR_US,
                cost,
                nodes_provisioned: self.pools[pi].provisioned,
                nodes_removed: self.pools[pi].removed,
                peak_nodes: self.pools[pi].peak,
            });
        }
        let mut services = Vec::new();
        for (si, cs) in self.sc.services.iter().enumerate() {
            let svc = &self.svcs[si];
            let mut by_pool = vec![0.0; s.pools.len()];
            let mut by_unit = vec![0.0; self.unit_names[si].len()];
            for r in self.replicas.iter().filter(|r| r.svc == si) {
                let Some(n) = r.node else { continue };
                #[allow(clippy::cast_precision_loss)]
                let held = (r.gone_at.unwrap_or(end).min(end) - r.bound_at) as f64 / HOUR_US;
                let pool = self.nodes[n].pool;
                by_pool[pool] += held;
                by_unit[self.pool_unit[si][pool]] += held;
                replica_s_all += held;
                if s.pools[pool].kind == PoolKind::Cloud {
                    replica_s_cloud += held;
                }
            }
            let ttft_limit = cs.spec.slo.ttft.us();
            let mut counts = svc.counts;
            counts.unfinished = counts
                .arrived
                .saturating_sub(counts.completed + counts.dropped);
            // Dropped requests count as missed; requests still running at the end are not judged.
            let judged = counts.completed + counts.dropped;
            #[allow(clippy::cast_precision_loss)]
            let attainment = if judged == 0 {
                1.0
            } else {
                svc.slo_met as f64 / judged as f64
            };
            services.push(ServiceOutcome {
                name: cs.spec.name.clone(),
                requests: counts,
                ttft: pct(&svc.ttft),
                e2e: pct(&svc.e2e),
                queue: pct(&svc.queue_wait),
                slo: SloOutcome {
                    ttft_s: secs(ttft_limit),
                    e2e_s: cs.spec.slo.e2e.map(|e| secs(e.us())),
                    target: cs.spec.slo.target,
                    attainment,
                    met: attainment >= cs.spec.slo.target,
                },
                peak_replicas: svc.peak,
                max_replicas: cs.hpa.as_ref().map(|(h, _)| h.max_replicas),
                at_max_replicas_s: svc.at_max_s,
                scale_events: svc.scale_events,
                replica_hours_by_pool: s
                    .pools
                    .iter()
                    .map(|p| p.name.clone())
                    .zip(by_pool)
                    .collect(),
                replica_hours_by_unit: self.unit_names[si].iter().cloned().zip(by_unit).collect(),
            });
        }
        Outcome {
            summary: Summary {
                scenario: s.name.clone(),
                seed: s.seed,
                duration_s: secs(end),
                currency: s.currency.clone(),
                cost_total,
                gpu_hours_total,
                spill_fraction: if replica_s_all > 0.0 {
                    replica_s_cloud / replica_s_all
                } else {
                    0.0
                },
                pods_created: self.pods_created,
                pending_time: pct(&self.pending_time),
                pools,
                services,
                events: self.events,
                spill_back: self
                    .sc
                    .policies
                    .iter()
                    .any(|p| p.spill_back.is_some())
                    .then(|| SpillBackOutcome {
                        evictions: self.spill_back_evictions,
                        ..SpillBackOutcome::default()
                    }),
                headroom: self
                    .sc
                    .policies
                    .iter()
                    .any(|p| p.headroom.is_some())
                    .then(|| HeadroomOutcome {
                        nodes_started: self.headroom_nodes,
                        ..HeadroomOutcome::default()
                    }),
            },
            series: self.series,
            scale_events: self.scale_log,
            node_scale_ups: self.node_scale_ups,
        }
    }
}

/// Unit counts kept across one scheduling pass: counted once per policy and
/// group, then moved by the pass's own placements (nothing else changes
/// during a pass), so placing many pods stays linear.
type UsageCache = BTreeMap<(PolicyKey, GroupKey), Vec<UnitUsage>>;

/// Filters a pending pod as kube-scheduler plus the extender would: the
/// nodes that fit it, then the core's Filter with the pass's unit counts.
fn place_filter<'s>(
    snapshot: &'s Snapshot,
    ledger: &Ledger,
    cache: &mut UsageCache,
    pod: &Pod,
    wait_since: Option<Time>,
    now: Time,
) -> FilterOutcome<'s> {
    let feasible = fitting_nodes(snapshot, pod);
    let req = FilterRequest {
        pod,
        nodes: &feasible,
        wait_since,
        now,
    };
    filter_counted(snapshot, req, &mut |policy, group| {
        cache
            .entry((policy.key.clone(), group.clone()))
            .or_insert_with(|| unit_usage(snapshot, ledger, policy, group, &pod.uid, now))
            .clone()
    })
}

/// Nodes with their allocations, and pods: what the autoscaler pass must
/// put back as it found them (checked in debug builds).
#[cfg(debug_assertions)]
fn snapshot_contents(s: &Snapshot) -> (Vec<(Node, Option<Resources>)>, Vec<Pod>) {
    let nodes = s
        .nodes_allocated()
        .map(|(n, a)| (n.clone(), a.cloned()))
        .collect();
    (nodes, s.pods().cloned().collect())
}

/// Records in the cache that `pod` was placed as `out` decided.
fn note_placed(cache: &mut UsageCache, out: &FilterOutcome, pod: &Pod) {
    if let (Some(unit), Some(policy), Some(group)) = (out.chosen_unit(), &out.policy, &out.group)
        && let Some(usage) = cache.get_mut(&(policy.clone(), group.clone()))
        && let Some(u) = usage.get_mut(unit)
    {
        u.pods += 1;
        u.resources.add(&pod.requests);
    }
}

fn pct(h: &Histogram) -> Percentiles {
    Percentiles {
        mean: h.mean_s(),
        p50: h.quantile_s(0.5),
        p95: h.quantile_s(0.95),
        p99: h.quantile_s(0.99),
    }
}

/// The `permille` quantile (nearest rank) of the TTFTs of first tokens in
/// the `window_us` before `now`, in seconds (NaN when there were none), and
/// how many there were (the request rate's numerator, as a histogram's
/// `_count` gives it).
fn ttft_quantile(
    recent: Option<&VecDeque<(i64, i64)>>,
    now: i64,
    window_us: i64,
    permille: u16,
) -> (f64, usize) {
    let mut in_window: Vec<i64> = recent
        .into_iter()
        .flatten()
        .filter(|(t, _)| now - t <= window_us)
        .map(|(_, v)| *v)
        .collect();
    if in_window.is_empty() {
        return (f64::NAN, 0);
    }
    in_window.sort_unstable();
    let rank = (in_window.len() * usize::from(permille))
        .div_ceil(1000)
        .max(1);
    #[allow(clippy::cast_precision_loss)]
    let us = in_window[rank - 1] as f64;
    (us / 1e6, in_window.len())
}
