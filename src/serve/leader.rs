//! One writer among replicas: leader election on a `coordination.k8s.io`
//! Lease, with client-go's semantics (`leaseDuration` 15 s, `renewDeadline`
//! 10 s, `retryPeriod` 2 s by default).
//!
//! ```text
//!  every retryPeriod: GET lease ──► decide(record, observed, now) ──► Acquire / Renew: PUT (resourceVersion-checked)
//!                                                                 └─► Wait
//!  leader ──► extender answers, controller writes     follower ──► warm index, verbs refused, /readyz false
//!  became leader ──► gate closed ──► pods re-listed ──► gate open     lost / stopping ──► gate closed (release on stop)
//! ```
//!
//! Two modes. `acquire`: replicas contend for the lease (Spillway behind a
//! Service). `follow`: Spillway never writes the lease and leads while the
//! kube-scheduler of its own pod holds the scheduler's lease, so with
//! Spillway as a sidecar the scheduler that schedules always calls the
//! Spillway that decides, on loopback.
//!
//! Why not a shared library's elector: expiry is judged the way client-go
//! judges it, by *when this process last saw the record change* on its own
//! monotonic clock, never by comparing the holder's `renewTime` with the
//! local wall clock, so clock skew between nodes cannot make two leaders;
//! and the clock is tokio's, so the hand-over test runs on paused time.
//!
//! Reservations live in the leader's memory, so only the leader may
//! answer: a follower answers Filter with an `Error`, refuses Bind and
//! allows no preemption victim (the same gate as unsynced caches), and its
//! `/readyz` fails, so the extender Service sends the scheduler to the
//! leader only. A new leader closes the gate and re-lists pods before it
//! decides anything, so every Binding the previous leader made is counted.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::extender::backend::{Binder, Extender};

/// The gate's name for "not the leader".
pub const GATE: &str = "leader";
/// The gate's name for "became leader, pods not yet re-listed".
pub const HANDOVER: &str = "handover";

/// How this instance takes part in the election.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Contend for the lease itself (Spillway behind a Service, called by
    /// an existing kube-scheduler).
    #[default]
    Acquire,
    /// Never write the lease: lead while the kube-scheduler in the same
    /// pod holds it (its identity is `POD-NAME_UUID`). Spillway as the
    /// sidecar of a second scheduler: the scheduler that schedules is the
    /// one whose local Spillway answers.
    Follow,
}

/// Where the lease is and how it is held.
#[derive(Clone, Debug)]
pub struct LeaderOptions {
    /// Contend for the lease, or follow the scheduler that holds it.
    pub mode: Mode,
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This instance's identity in `holderIdentity` (unique per process);
    /// under [`Mode::Follow`], the pod name: the holder it follows is
    /// `NAME_...`.
    pub identity: String,
    /// How long a lease not seen renewed is honoured.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down
    /// (shorter than `lease_duration`).
    pub renew_deadline: Duration,
    /// How often the lease is read and acquired or renewed.
    pub retry_period: Duration,
}

/// The fields of a Lease the election reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `holderIdentity` (empty: free).
    pub holder: String,
    /// `renewTime` as written (compared for change only).
    pub renew_time: Option<String>,
    /// `leaseDurationSeconds`.
    pub duration_seconds: i32,
    /// `leaseTransitions`.
    pub transitions: i32,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.unwrap_or_default(),
            renew_time: spec.renew_time.map(|t| t.0.to_string()),
            duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// What to do with the lease as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ours: write a new `renewTime`.
    Renew,
    /// Free, or its holder stopped renewing: take it.
    Acquire,
    /// Someone else holds it and renews it.
    Wait,
}

/// The election rule (client-go's `tryAcquireOrRenew`): a lease held by
/// another identity is honoured until `lease_duration` after this process
/// last saw its record change (`observed_at`), whatever its timestamps say.
#[must_use]
pub fn decide(
    record: &Record,
    identity: &str,
    observed_at: Instant,
    now: Instant,
    lease_duration: Duration,
) -> Step {
    if record.holder == identity {
        Step::Renew
    } else if record.holder.is_empty() || now >= observed_at + lease_duration {
        Step::Acquire
    } else {
        Step::Wait
    }
}

/// The follower's rule: this pod leads while the lease names its
/// scheduler and has been seen renewed within its own `leaseDurationSeconds`.
#[must_use]
pub fn follows(record: &Record, pod: &str, observed_at: Instant, now: Instant) -> bool {
    let duration = Duration::from_secs(u64::try_from(record.duration_seconds).unwrap_or(0));
    record
        .holder
        .strip_prefix(pod)
        .is_some_and(|rest| rest.starts_with('_'))
        && now < observed_at + duration
}

fn spec(opts: &LeaderOptions, acquired: bool, previous: Option<&LeaseSpec>) -> LeaseSpec {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(opts.identity.clone()),
        lease_duration_seconds: Some(
            i32::try_from(opts.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
        ),
        acquire_time: if acquired {
            Some(now.clone())
        } else {
            previous.and_then(|p| p.acquire_time.clone())
        },
        renew_time: Some(now),
        lease_transitions: Some(if acquired && previous.is_some() {
            transitions + 1
        } else {
            transitions
        }),
        ..LeaseSpec::default()
    }
}

/// The elector's memory between rounds.
struct Elector {
    api: Api<Lease>,
    opts: LeaderOptions,
    /// The record last read and when it was first seen as it is.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// One round: true when this process holds the lease afterwards.
    async fn round(&mut self) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.opts.name).await? else {
            return match self.opts.mode {
                Mode::Acquire => self.create().await,
                Mode::Follow => Ok(false),
            };
        };
        let record = Record::of(&lease);
        let now = Instant::now();
        let observed_at = match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => {
                self.observed = Some((record.clone(), now));
                now
            }
        };
        if self.opts.mode == Mode::Follow {
            return Ok(follows(&record, &self.opts.identity, observed_at, now));
        }
        let step = decide(
            &record,
            &self.opts.identity,
            observed_at,
            now,
            self.opts.lease_duration,
        );
        if step == Step::Wait {
            return Ok(false);
        }
        let mut next = lease.clone();
        next.spec = Some(spec(&self.opts, step == Step::Acquire, lease.spec.as_ref()));
        // The PUT carries the resourceVersion read: a concurrent writer
        // makes it fail with 409 instead of both believing they lead.
        match self
            .api
            .replace(&self.opts.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => {
                self.observed = Some((Record::of(&l), Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the lease, held by this process; false when another
    /// process created it first.
    async fn create(&mut self) -> Result<bool, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.opts.name.clone()),
                namespace: Some(self.opts.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec(&self.opts, true, None)),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(l) => {
                self.observed = Some((Record::of(&l), Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (on shutdown), so a follower takes over at its
    /// next round instead of after `lease_duration`.
    async fn release(&mut self) -> Result<(), kube::Error> {
        if self.opts.mode == Mode::Follow {
            return Ok(());
        }
        let Some(mut lease) = self.api.get_opt(&self.opts.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.opts.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        self.api
            .replace(&self.opts.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

/// Changes of leadership the extender must act on.
fn became_leader<B: Binder>(ext: &Extender<B>, relist: &watch::Sender<u64>) {
    // Closed first (the pods must be re-listed), then "not the leader" is
    // lifted: the gate never opens in between.
    ext.cache_listing(HANDOVER);
    ext.cache_listed(GATE);
    // Reservations of an earlier term describe Filters another leader has
    // since answered or abandoned; the re-list shows what was bound.
    ext.with_index(|ix| ix.ledger = crate::decision::ledger::Ledger::new());
    relist.send_modify(|g| *g += 1);
    ext.metrics().leader.set(1);
    ext.metrics().leader_acquired.inc();
}

fn stepped_down<B: Binder>(ext: &Extender<B>) {
    ext.cache_listing(GATE);
    ext.metrics().leader.set(0);
}

/// Runs the election until `stop` turns true, then releases the lease if
/// held. `relist` asks the pod watch to list again (a new leader's first
/// step).
pub async fn run<B: Binder>(
    client: kube::Client,
    ext: Arc<Extender<B>>,
    opts: LeaderOptions,
    relist: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut elector = Elector {
        api: Api::namespaced(client, &opts.namespace),
        opts: opts.clone(),
        observed: None,
    };
    let mut leading = false;
    let mut last_renewed = Instant::now();
    loop {
        let (held, renewed) = match elector.round().await {
            Ok(held) => (held, held),
            Err(e) => {
                tracing::warn!(lease = %format!("{}/{}", opts.namespace, opts.name), error = %e, "lease round failed");
                // A leader keeps its term until the renew deadline.
                (
                    leading && last_renewed.elapsed() < opts.renew_deadline,
                    false,
                )
            }
        };
        if held && !leading {
            tracing::info!(identity = %opts.identity, "became the leader: re-listing pods, then answering");
            became_leader(&ext, &relist);
        } else if !held && leading {
            tracing::warn!(identity = %opts.identity, "lost the lease: refusing placements from now on");
            stepped_down(&ext);
        }
        if renewed {
            last_renewed = Instant::now();
        }
        leading = held;
        tokio::select! {
            () = tokio::time::sleep(opts.retry_period) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if leading {
        stepped_down(&ext);
        match elector.release().await {
            Ok(()) => tracing::info!("lease released"),
            Err(e) => {
                tracing::warn!(error = %e, "releasing the lease failed; a follower takes over when it lapses");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str) -> Record {
        Record {
            holder: holder.into(),
            renew_time: Some("2026-01-01T00:00:00Z".into()),
            duration_seconds: 15,
            transitions: 0,
        }
    }

    #[test]
    fn a_follower_leads_while_its_schedulers_lease_is_seen_renewed() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let rows = [
            ("pod-a_1f2e", 0, true),
            ("pod-a_1f2e", 14, true),
            ("pod-a_1f2e", 15, false), // lapsed: not renewed for 15 s
            ("pod-ab_9", 0, false),    // another pod whose name extends ours
            ("pod-a", 0, false),       // not a scheduler identity
            ("pod-b_1", 0, false),
            ("", 0, false),
        ];
        for (holder, seen_ago, want) in rows {
            assert_eq!(
                follows(&rec(holder), "pod-a", t0, s(seen_ago)),
                want,
                "{holder} {seen_ago}"
            );
        }
    }

    #[test]
    fn the_rule_of_client_go() {
        let t0 = Instant::now();
        let d = Duration::from_secs(15);
        let rows = [
            ("me", 0, Step::Renew),
            ("me", 100, Step::Renew),
            ("", 0, Step::Acquire),
            ("other", 0, Step::Wait),
            ("other", 14, Step::Wait),
            ("other", 15, Step::Acquire),
            ("other", 60, Step::Acquire),
        ];
        for (holder, seen_ago, want) in rows {
            let now = t0 + Duration::from_secs(seen_ago);
            assert_eq!(
                decide(&rec(holder), "me", t0, now, d),
                want,
                "{holder} {seen_ago}"
            );
        }
    }
}
