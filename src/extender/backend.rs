//! The extender's state and the decisions it serves: the index (snapshot +
//! reservation ledger) behind one lock, and the binder that writes to the
//! API server.
//!
//! ```text
//!  Filter ──► core filter ──► reserve the slot (ledger, FILTER_TTL) ─┐
//!  Bind   ──► admit_bind (core) ──► binder: create the Binding (with the unit's annotations)
//!               ok  ──► confirm the reservation (BIND_TTL) until the watch shows the pod bound
//!               err ──► release the reservation, answer Error
//! ```
//!
//! The lock is held only for core calls (microseconds), never across the
//! binder's API round trips, so binds run concurrently.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crate::decision::admission::Admission;
use crate::decision::filter::{
    Decision, FilterOutcome, FilterRequest, PreemptOutcome, admit_bind, filter, preempt, summary,
};
use crate::decision::governance::governing_policy_in;
use crate::decision::ledger::{BIND_TTL, FILTER_TTL, Ledger, UNBOUND_GRACE};
use crate::decision::reconcile::bind_annotations;
use crate::decision::score::{NodeScore, scores};
use crate::decision::snapshot::{Labels, Pod, Snapshot};
use crate::decision::time::Time;
use crate::index::convert;

use super::metrics::Metrics;

/// A pod, by reference, for writes about it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

impl PodRef {
    fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        }
    }
}

/// Something a decision wants written to the API server, off the request
/// path (the serve loop persists annotations and records Events; tests
/// collect them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The pod started waiting: persist its wait clock in the
    /// `scheduling.spillway.io/wait-since` annotation so that a restart
    /// neither resets nor skips the timeout.
    WaitSince {
        /// The pod.
        pod: PodRef,
        /// When the wait began.
        since: Time,
    },
    /// The pod was admitted to a unit after the policy's first.
    Spilled {
        /// The pod.
        pod: PodRef,
        /// Why the earlier units were passed over, and where it went.
        message: String,
    },
    /// The pod waits in a unit.
    Waiting {
        /// The pod.
        pod: PodRef,
        /// Why, and for how long at most.
        message: String,
    },
    /// An Event the policy controller records on the pod.
    PodEvent {
        /// The pod.
        pod: PodRef,
        /// CamelCase reason (a fixed set, see [`crate::decision::reconcile`]).
        reason: &'static str,
        /// What happened.
        message: String,
    },
}

impl Notice {
    /// The pod the notice is about.
    #[must_use]
    pub fn pod(&self) -> &PodRef {
        match self {
            Self::WaitSince { pod, .. }
            | Self::Spilled { pod, .. }
            | Self::Waiting { pod, .. }
            | Self::PodEvent { pod, .. } => pod,
        }
    }
}

type NoticeSink = Box<dyn Fn(Notice) + Send + Sync>;

/// Records what a Filter decided that the policy's status shows: which
/// unit a pending pod waits for, and when pods last spilled past a unit.
fn observe(
    observed: &mut crate::decision::reconcile::Observed,
    pod: &Pod,
    out: &FilterOutcome<'_>,
    why: Option<&str>,
    now: Time,
) {
    let Some(key) = &out.policy else {
        observed.waiting.remove(&pod.uid);
        return;
    };
    match &out.decision {
        Decision::Admitted(Admission::Wait { unit, .. }) => {
            observed
                .waiting
                .insert(pod.uid.clone(), (key.clone(), *unit));
        }
        Decision::Admitted(a) => {
            observed.waiting.remove(&pod.uid);
            if matches!(a, Admission::Unit { unit, .. } if *unit > 0) {
                for s in a.skipped() {
                    observed.spills.insert(
                        (key.clone(), s.unit),
                        (now, why.unwrap_or_default().to_owned()),
                    );
                }
            }
        }
        _ => {
            observed.waiting.remove(&pod.uid);
        }
    }
}

/// What the metrics and notices of a Filter need from the policy, read
/// under the index lock.
#[derive(Default)]
struct FilterFacts {
    units: Vec<String>,
    summary: Option<String>,
}

/// What the binder writes for one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindRequest {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID (the Binding's precondition).
    pub uid: String,
    /// Target node.
    pub node: String,
    /// What the Binding sets on the pod with its node
    /// ([`crate::decision::reconcile::bind_annotations`]): the unit's
    /// `podAnnotations` and the pod's deletion cost with Spillway's record
    /// of it. The unit's `podLabels` follow from the policy controller.
    pub annotations: Labels,
}

/// Why a bind failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The pod changed, was deleted or is already bound.
    #[error("pod {0} changed or was deleted before it could be bound")]
    Conflict(String),
    /// The node no longer exists.
    #[error("node {0} no longer exists")]
    NodeGone(String),
    /// Any other API server error.
    #[error("API server: {0}")]
    Api(String),
}

impl BindError {
    /// A stable label for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Conflict(_) => "conflict",
            Self::NodeGone(_) => "node_gone",
            Self::Api(_) => "api",
        }
    }
}

/// Writes bindings to the API server (or to a test double).
pub trait Binder: Send + Sync + 'static {
    /// Creates the pod's `pods/binding`, with the unit's annotations: one
    /// API call.
    fn bind(&self, req: BindRequest) -> impl Future<Output = Result<(), BindError>> + Send;
}

/// The index the decisions read: updated by the watches, read by requests.
#[derive(Debug, Default)]
pub struct Index {
    /// Nodes, pods and policies.
    pub snapshot: Snapshot,
    /// Assumed placements.
    pub ledger: Ledger,
    /// Pods seen in Filter requests and not yet bound (the watch may lag).
    pub seen: BTreeMap<String, Pod>,
    /// ResourcePolicies of both API groups, before one per key is chosen.
    pub policies: crate::index::feed::PolicySources,
    /// True once the node watch applied a list: from then on a unit that
    /// selects no node is reported in its policy's status.
    pub nodes_listed: bool,
    /// Waits and spills the Filters saw, for the policies' status.
    pub observed: crate::decision::reconcile::Observed,
}

/// How often a refusal for unsynced caches is logged at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Whether the caches decisions read are complete.
///
/// Until every watched kind has finished its list — at start and again
/// whenever a watch re-lists — the index may lack policies (every pod would
/// look ungoverned) or pods (every unit would count zero), so decisions
/// made on it could break unit order and `max`. While any kind lists,
/// Filter answers an `Error` (the scheduler retries the pod after its
/// backoff, and runs no preemption for an error), Bind refuses and Preempt
/// allows no candidate.
#[derive(Default)]
struct Gate {
    /// True once every expected kind is listed (or forced by `set_ready`).
    synced: AtomicBool,
    /// Kinds whose (re-)list has not finished.
    listing: Mutex<BTreeSet<&'static str>>,
    /// Shutting down: `/readyz` fails, the verbs are still answered.
    draining: AtomicBool,
    /// When a refusal was last logged (ms of the extender's clock).
    logged_ms: AtomicI64,
}

/// The extender: index, binder and clock.
pub struct Extender<B> {
    index: Mutex<Index>,
    binder: B,
    clock: Box<dyn Fn() -> Time + Send + Sync>,
    gate: Gate,
    grace: Duration,
    metrics: Metrics,
    notices: NoticeSink,
}

impl<B: Binder> Extender<B> {
    /// An extender over `index`, binding with `binder`, reading time from `clock`.
    pub fn new(index: Index, binder: B, clock: Box<dyn Fn() -> Time + Send + Sync>) -> Self {
        Self {
            index: Mutex::new(index),
            binder,
            clock,
            gate: Gate {
                logged_ms: AtomicI64::new(i64::MIN),
                ..Gate::default()
            },
            grace: UNBOUND_GRACE,
            metrics: Metrics::new(),
            notices: Box::new(|_| {}),
        }
    }

    /// Keeps an assumed reservation of a pod the watch shows pending for
    /// `grace` after its Filter (default [`UNBOUND_GRACE`]).
    #[must_use]
    pub fn with_reservation_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sends decisions' [`Notice`]s to `sink` (called under no lock; it
    /// must not block).
    #[must_use]
    pub fn with_notices(mut self, sink: impl Fn(Notice) + Send + Sync + 'static) -> Self {
        self.notices = Box::new(sink);
        self
    }

    /// Sends `notice` to the notice sink (the writer).
    pub fn notify(&self, notice: Notice) {
        (self.notices)(notice);
    }

    /// The metrics this extender records.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Housekeeping between requests: lapses expired reservations and
    /// refreshes the index gauges.
    pub fn tick(&self) {
        let now = (self.clock)();
        self.with_index(|ix| {
            self.lapse(ix, now);
            self.metrics
                .reservations_live
                .set(i64::try_from(ix.ledger.len()).unwrap_or(i64::MAX));
            for (kind, n) in [
                ("node", ix.snapshot.node_count()),
                ("pod", ix.snapshot.pod_count()),
                ("resourcepolicy", ix.snapshot.policies().count()),
            ] {
                self.metrics
                    .index_objects
                    .with_label_values(&[kind])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        });
    }

    /// The current time of the extender's clock.
    pub fn now(&self) -> Time {
        (self.clock)()
    }

    /// Forces the caches synced (`true`: for an index filled by hand, as in
    /// tests and the load tool) or unsynced (`false`).
    pub fn set_ready(&self, ready: bool) {
        let mut listing = self.lock_listing();
        listing.clear();
        self.gate.synced.store(ready, Ordering::SeqCst);
        self.gate.draining.store(false, Ordering::SeqCst);
    }

    fn lock_listing(&self) -> std::sync::MutexGuard<'_, BTreeSet<&'static str>> {
        self.gate
            .listing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The watch of `kind` started a (re-)list: decisions wait for it.
    pub fn cache_listing(&self, kind: &'static str) {
        let mut listing = self.lock_listing();
        let was_synced = self.gate.synced.swap(false, Ordering::SeqCst);
        listing.insert(kind);
        self.metrics.cache_synced.with_label_values(&[kind]).set(0);
        if was_synced {
            tracing::warn!(
                kind,
                "watch re-lists: Filter and Bind refuse until its list is applied"
            );
        }
    }

    /// The watch of `kind` applied its list. Returns true when this made
    /// every cache synced.
    pub fn cache_listed(&self, kind: &'static str) -> bool {
        let mut listing = self.lock_listing();
        listing.remove(kind);
        self.metrics.cache_synced.with_label_values(&[kind]).set(1);
        if listing.is_empty() && !self.gate.synced.swap(true, Ordering::SeqCst) {
            tracing::info!("caches synced: answering Filter and Bind");
            return true;
        }
        false
    }

    /// Shutting down: `/readyz` fails from now on.
    pub fn drain(&self) {
        self.gate.draining.store(true, Ordering::SeqCst);
    }

    /// True once every cache is synced (decisions are answered).
    pub fn is_synced(&self) -> bool {
        self.gate.synced.load(Ordering::SeqCst)
    }

    /// True when synced and not shutting down (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.is_synced() && !self.gate.draining.load(Ordering::SeqCst)
    }

    /// Why a request is refused while a cache lists, counted per verb and
    /// logged at most every 10 s.
    pub fn refusal(&self, verb: &'static str) -> String {
        self.metrics
            .not_ready_refusals
            .with_label_values(&[verb])
            .inc();
        let kinds: Vec<&str> = self.lock_listing().iter().copied().collect();
        let reason = if kinds.contains(&crate::serve::leader::GATE) {
            "this Spillway replica is a follower: only the leader decides placements (it holds the reservations); the scheduler retries the pod".to_owned()
        } else {
            let lists: Vec<&str> = kinds
                .iter()
                .map(|k| {
                    if *k == crate::serve::leader::HANDOVER {
                        "the new leader's pod"
                    } else {
                        k
                    }
                })
                .collect();
            let waiting = if lists.is_empty() {
                "the watches have not started".to_owned()
            } else {
                format!("waiting for the {} list", lists.join(", "))
            };
            format!(
                "Spillway's caches are not synced ({waiting}); it decides no placement until they are, and the scheduler retries the pod"
            )
        };
        let now = self.now().as_millis();
        let last = self.gate.logged_ms.load(Ordering::Relaxed);
        let interval = i64::try_from(REFUSAL_LOG_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(last) >= interval
            && self
                .gate
                .logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(verb, %reason, "request refused");
        }
        reason
    }

    /// Runs `f` on the index (for the watch feed and tests).
    pub fn with_index<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        let mut ix = self
            .index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut ix)
    }

    /// Filter: the core decision, plus the reservation of the chosen unit's
    /// slot (a re-Filter of the same pod replaces it).
    pub fn filter<'n>(&self, pod: &Pod, nodes: &[&'n str]) -> FilterOutcome<'n> {
        let now = (self.clock)();
        let (out, facts) = self.with_index(|ix| {
            self.lapse(ix, now);
            let out = filter(
                &ix.snapshot,
                &ix.ledger,
                FilterRequest {
                    pod,
                    nodes,
                    wait_since: convert::wait_since(pod),
                    now,
                },
            );
            match out.reservation(pod, now.after(FILTER_TTL)) {
                Some(r) => {
                    ix.ledger.reserve(&pod.uid, r);
                }
                None => {
                    ix.ledger.release(&pod.uid);
                }
            }
            if out.policy.is_some() {
                ix.seen.insert(pod.uid.clone(), pod.clone());
            }

            self.metrics
                .reservations_live
                .set(i64::try_from(ix.ledger.len()).unwrap_or(i64::MAX));
            let mut facts = FilterFacts::default();
            if let Some(p) = out.policy.as_ref().and_then(|k| ix.snapshot.policy(k)) {
                facts.units = p.units.iter().map(|u| u.name.clone()).collect();
                let notable = match &out.decision {
                    Decision::Admitted(Admission::Unit { unit, .. }) => *unit > 0,
                    Decision::Admitted(Admission::Wait { .. }) => true,
                    _ => false,
                };
                if notable {
                    facts.summary = summary(p, &out);
                }
            }
            observe(&mut ix.observed, pod, &out, facts.summary.as_deref(), now);
            (out, facts)
        });
        self.record_filter(pod, &out, &facts);
        out
    }

    /// Drops reservations that lapsed, and assumed ones no Bind followed
    /// within the grace while the watch shows their pod pending (see
    /// [`crate::decision::ledger`]).
    fn lapse(&self, ix: &mut Index, now: Time) {
        let expired = ix.ledger.expire(now).len();
        self.metrics.reservations_expired.inc_by(expired as u64);
        let snapshot = &ix.snapshot;
        let unbound = ix.ledger.release_unbound(now, self.grace, |uid| {
            snapshot.pod(uid).is_some_and(|p| p.node.is_none())
        });
        for (uid, _) in &unbound {
            ix.seen.remove(uid);
        }
        self.metrics
            .reservations_unbound
            .inc_by(unbound.len() as u64);
    }

    /// Metrics and notices of one Filter decision.
    fn record_filter(&self, pod: &Pod, out: &FilterOutcome, facts: &FilterFacts) {
        let Some(policy) = &out.policy else {
            return;
        };
        let policy = policy.to_string();
        let unit_name = |u: usize| facts.units.get(u).map_or("", String::as_str);
        let (unit, decision) = match &out.decision {
            Decision::Ungoverned => return,
            Decision::Rejected { .. } => ("", "rejected"),
            Decision::Admitted(Admission::Unit { unit, .. }) => (unit_name(*unit), "admitted"),
            Decision::Admitted(Admission::Wait { unit, .. }) => (unit_name(*unit), "wait"),
            Decision::Admitted(Admission::OutsideUnits { .. }) => ("", "outside_units"),
            Decision::Admitted(Admission::Exhausted { .. }) => ("", "exhausted"),
        };
        self.metrics
            .decisions
            .with_label_values(&[policy.as_str(), unit, decision])
            .inc();
        let message = || facts.summary.clone().unwrap_or_default();
        match &out.decision {
            Decision::Admitted(Admission::Unit { unit, .. }) if *unit > 0 => {
                self.metrics
                    .spills
                    .with_label_values(&[policy.as_str(), unit_name(*unit)])
                    .inc();
                (self.notices)(Notice::Spilled {
                    pod: PodRef::of(pod),
                    message: message(),
                });
            }
            Decision::Admitted(Admission::Wait { since, .. }) => {
                if convert::wait_since(pod).is_none() {
                    (self.notices)(Notice::WaitSince {
                        pod: PodRef::of(pod),
                        since: *since,
                    });
                }
                (self.notices)(Notice::Waiting {
                    pod: PodRef::of(pod),
                    message: message(),
                });
            }
            _ => {}
        }
    }

    /// Prioritize: the core scores.
    pub fn prioritize<'n>(&self, pod: &Pod, nodes: &[&'n str]) -> Vec<NodeScore<'n>> {
        self.with_index(|ix| scores(&ix.snapshot, pod, nodes))
    }

    /// Preempt: the candidates the policy allows.
    pub fn preempt(&self, pod: &Pod, candidates: &[&str]) -> PreemptOutcome {
        let now = (self.clock)();
        self.with_index(|ix| {
            preempt(
                &ix.snapshot,
                &ix.ledger,
                pod,
                candidates,
                convert::wait_since(pod),
                now,
            )
        })
    }

    /// Bind: checks the caps again (core), writes through the binder, then
    /// confirms or releases the reservation.
    ///
    /// # Errors
    /// A reason for the scheduler's `Error` field.
    pub async fn bind(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        node: &str,
    ) -> Result<(), String> {
        if !self.is_synced() {
            self.metrics.binds.with_label_values(&["not_ready"]).inc();
            return Err(self.refusal("bind"));
        }
        let now = (self.clock)();
        let req = self.with_index(|ix| {
            // What Spillway knows of the pod: the Filter request's copy and
            // the watch's (newer, when a cost was set after the Filter).
            let copies: Vec<&Pod> = [ix.seen.get(uid), ix.snapshot.pod(uid)]
                .into_iter()
                .flatten()
                .collect();
            let pod = copies.first().map_or_else(
                || Pod {
                    uid: uid.to_owned(),
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    ..Pod::default()
                },
                |p| (*p).clone(),
            );
            admit_bind(&ix.snapshot, &ix.ledger, &pod, node, now)?;
            let mut req = BindRequest {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid: uid.to_owned(),
                node: node.to_owned(),
                annotations: Labels::new(),
            };
            if let (Some(policy), Some(n)) = (
                governing_policy_in(&ix.snapshot, &pod).policy,
                ix.snapshot.node(node),
            ) && let Some(unit) = policy.unit_of_node(n)
            {
                req.annotations = bind_annotations(policy, unit, &copies);
                // A live reservation is marked with the node for the API
                // call, so the unbound-grace rule cannot release it while
                // the pod is being bound. A bind without one (it lapsed,
                // or the extender restarted) takes its slot now, so that
                // concurrent Filters count it while the API call runs.
                // A reservation in another unit is replaced.
                if ix
                    .ledger
                    .live(uid, now)
                    .is_some_and(|r| r.policy == policy.key && r.unit == unit)
                {
                    ix.ledger.confirm(uid, node, now, BIND_TTL);
                } else if let Ok(group) = policy.group_of(&pod) {
                    ix.ledger.reserve(
                        uid,
                        crate::decision::ledger::Reservation {
                            namespace: pod.namespace.clone(),
                            pod_name: pod.name.clone(),
                            policy: policy.key.clone(),
                            unit,
                            group,
                            requests: pod.requests.clone(),
                            node: Some(node.to_owned()),
                            expires: now.after(BIND_TTL),
                        },
                    );
                }
            }
            Ok::<_, String>(req)
        });
        let req = match req {
            Ok(r) => r,
            Err(reason) => {
                self.metrics.binds.with_label_values(&["rejected"]).inc();
                return Err(reason);
            }
        };
        let result = self.binder.bind(req).await;
        let now = (self.clock)();
        self.with_index(|ix| {
            ix.seen.remove(uid);
            match &result {
                Ok(()) => {
                    ix.ledger.confirm(uid, node, now, BIND_TTL);
                }
                Err(_) => {
                    ix.ledger.release(uid);
                }
            }
            self.metrics
                .reservations_live
                .set(i64::try_from(ix.ledger.len()).unwrap_or(i64::MAX));
        });
        let label = result
            .as_ref()
            .map_or_else(BindError::metric_label, |()| "ok");
        self.metrics.binds.with_label_values(&[label]).inc();
        result.map_err(|e| e.to_string())
    }
}
