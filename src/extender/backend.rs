//! The extender's state and the decisions it serves: the index (snapshot +
//! reservation ledger) behind one lock, and the binder that writes to the
//! API server.
//!
//! ```text
//!  Filter ──► core filter ──► reserve the slot (ledger, FILTER_TTL) ─┐
//!  Bind   ──► admit_bind (core) ──► binder: patch unit labels, create Binding
//!               ok  ──► confirm the reservation (BIND_TTL) until the watch shows the pod bound
//!               err ──► release the reservation, answer Error
//! ```
//!
//! The lock is held only for core calls (microseconds), never across the
//! binder's API round trips, so binds run concurrently.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::decision::admission::Admission;
use crate::decision::filter::{
    Decision, FilterOutcome, FilterRequest, PreemptOutcome, admit_bind, filter, preempt, summary,
};
use crate::decision::governance::governing_policy_in;
use crate::decision::ledger::{BIND_TTL, FILTER_TTL, Ledger};
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
}

impl Notice {
    /// The pod the notice is about.
    #[must_use]
    pub fn pod(&self) -> &PodRef {
        match self {
            Self::WaitSince { pod, .. } | Self::Spilled { pod, .. } | Self::Waiting { pod, .. } => {
                pod
            }
        }
    }
}

type NoticeSink = Box<dyn Fn(Notice) + Send + Sync>;

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
    /// The unit's `podLabels`, patched on before binding.
    pub labels: Labels,
    /// The unit's `podAnnotations`, patched on before binding.
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
    /// Patches the unit's labels and annotations onto the pod, then creates
    /// its `pods/binding`.
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
}

/// The extender: index, binder and clock.
pub struct Extender<B> {
    index: Mutex<Index>,
    binder: B,
    clock: Box<dyn Fn() -> Time + Send + Sync>,
    ready: AtomicBool,
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
            ready: AtomicBool::new(false),
            metrics: Metrics::new(),
            notices: Box::new(|_| {}),
        }
    }

    /// Sends decisions' [`Notice`]s to `sink` (called under no lock; it
    /// must not block).
    #[must_use]
    pub fn with_notices(mut self, sink: impl Fn(Notice) + Send + Sync + 'static) -> Self {
        self.notices = Box::new(sink);
        self
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
            let expired = ix.ledger.expire(now).len();
            self.metrics.reservations_expired.inc_by(expired as u64);
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

    /// Marks the caches as synced (readiness).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// True once the caches have synced.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
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
            let expired = ix.ledger.expire(now).len();
            self.metrics.reservations_expired.inc_by(expired as u64);
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
            (out, facts)
        });
        self.record_filter(pod, &out, &facts);
        out
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
        let now = (self.clock)();
        let req = self.with_index(|ix| {
            let pod = ix
                .seen
                .get(uid)
                .or_else(|| ix.snapshot.pod(uid))
                .cloned()
                .unwrap_or_else(|| Pod {
                    uid: uid.to_owned(),
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    ..Pod::default()
                });
            admit_bind(&ix.snapshot, &ix.ledger, &pod, node, now)?;
            let mut req = BindRequest {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid: uid.to_owned(),
                node: node.to_owned(),
                labels: Labels::new(),
                annotations: Labels::new(),
            };
            if let (Some(policy), Some(n)) = (
                governing_policy_in(&ix.snapshot, &pod).policy,
                ix.snapshot.node(node),
            ) && let Some(unit) = policy.unit_of_node(n)
            {
                req.labels.clone_from(&policy.units[unit].pod_labels);
                req.annotations
                    .clone_from(&policy.units[unit].pod_annotations);
                // A bind without a live reservation (it lapsed, or the
                // extender restarted) takes its slot now, so that concurrent
                // Filters count it while the API call runs.
                if ix.ledger.live(uid, now).is_none()
                    && let Ok(group) = policy.group_of(&pod)
                {
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
