//! Writes the extender's [`Notice`]s to the API server, off the request
//! path: the wait-clock annotation and rate-limited Events.
//!
//! ```text
//!  Filter ──Notice──► unbounded channel ──► writer task ──► one task per write (PATCH pod / POST event)
//! ```
//!
//! - `WaitSince` is written once per pod, retried only if the scheduler
//!   still sends the pod without it after a few seconds (the annotation
//!   comes back through the scheduler's informer, and every later Filter
//!   reads it).
//! - `Spilled` / `Waiting` Events are sent at most once per pod and reason
//!   per `interval`; the scheduler retries a waiting pod every few seconds,
//!   and an Event per retry would flood the API server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::decision::time::format_rfc3339;
use crate::extender::backend::{Notice, PodRef};
use crate::extender::metrics::Metrics;
use crate::index::convert::WAIT_SINCE_ANNOTATION;

/// The longest Event note the API accepts (events.k8s.io/v1: 1 kB).
const MAX_NOTE: usize = 1024;

/// How soon a wait-clock write is retried if the scheduler still sends the
/// pod without the annotation.
const WAIT_SINCE_RETRY: Duration = Duration::from_secs(10);

/// Decides which notices become writes: one wait-clock write per pod (retried
/// after [`WAIT_SINCE_RETRY`]), one Event per pod and reason per interval.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: HashMap<(String, &'static str), Instant>,
    sweeps_at: usize,
}

impl Throttle {
    /// Events of the same pod and reason at most once per `interval`.
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: HashMap::new(),
            sweeps_at: 1024,
        }
    }

    /// True when `notice` should be written now.
    pub fn admit(&mut self, notice: &Notice, now: Instant) -> bool {
        let kind = kind_of(notice);
        let key = (notice.pod().uid.clone(), kind);
        // A pod asks for its wait clock to be written only while the
        // scheduler's copy lacks the annotation; a repeat within a few
        // seconds is the same request, a later one means the write failed.
        let every = match notice {
            Notice::WaitSince { .. } => WAIT_SINCE_RETRY.min(self.interval),
            _ => self.interval,
        };
        if let Some(at) = self.last.get(&key)
            && now.saturating_duration_since(*at) < every
        {
            return false;
        }
        self.last.insert(key, now);
        if self.last.len() >= self.sweeps_at {
            let interval = self.interval;
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < interval);
            self.sweeps_at = (self.last.len() * 2).max(1024);
        }
        true
    }

    /// Forgets a pod (it was deleted).
    pub fn forget(&mut self, uid: &str) {
        self.last.retain(|(u, _), _| u != uid);
    }
}

fn kind_of(notice: &Notice) -> &'static str {
    match notice {
        Notice::WaitSince { .. } => "wait_since",
        Notice::Spilled { .. } => "spilled",
        Notice::Waiting { .. } => "waiting",
        Notice::PodEvent { reason, .. } => reason,
    }
}

fn reference(pod: &PodRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: Some(pod.uid.clone()),
        ..ObjectReference::default()
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Records a Normal Event with `reason` on the pod.
async fn publish(
    recorder: &Recorder,
    reason: &str,
    pod: &PodRef,
    message: String,
) -> Result<(), kube::Error> {
    let ev = Event {
        type_: EventType::Normal,
        reason: reason.to_owned(),
        note: Some(truncate(message, MAX_NOTE)),
        action: "Scheduling".to_owned(),
        secondary: None,
    };
    recorder.publish(&ev, &reference(pod)).await
}

/// Performs one write.
async fn write(
    client: kube::Client,
    recorder: Arc<Recorder>,
    notice: Notice,
) -> Result<(), kube::Error> {
    match notice {
        Notice::WaitSince { pod, since } => {
            let pods: Api<Pod> = Api::namespaced(client, &pod.namespace);
            let patch = json!({"metadata": {
                "uid": pod.uid,
                "annotations": {WAIT_SINCE_ANNOTATION: format_rfc3339(since)},
            }});
            pods.patch(&pod.name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(|_| ())
        }
        Notice::Spilled { pod, message } => publish(&recorder, "Spilled", &pod, message).await,
        Notice::Waiting { pod, message } => {
            publish(&recorder, "WaitingForUnit", &pod, message).await
        }
        Notice::PodEvent {
            pod,
            reason,
            message,
        } => publish(&recorder, reason, &pod, message).await,
    }
}

/// Runs until the channel closes: throttles notices and writes each admitted
/// one in its own task.
pub async fn run(
    client: kube::Client,
    reporter: Reporter,
    mut notices: UnboundedReceiver<Notice>,
    interval: Duration,
    metrics: Metrics,
) {
    let recorder = Arc::new(Recorder::new(client.clone(), reporter));
    let mut throttle = Throttle::new(interval);
    while let Some(notice) = notices.recv().await {
        let kind = kind_of(&notice);
        if !throttle.admit(&notice, Instant::now()) {
            metrics
                .api_writes
                .with_label_values(&[kind, "suppressed"])
                .inc();
            continue;
        }
        let (client, recorder, metrics) = (client.clone(), recorder.clone(), metrics.clone());
        tokio::spawn(async move {
            let pod = notice.pod().clone();
            match write(client, recorder, notice).await {
                Ok(()) => metrics.count_write(kind, true),
                Err(e) => {
                    metrics.count_write(kind, false);
                    tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), kind, error = %e, "write failed");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(uid: &str, kind: &str) -> Notice {
        let pod = PodRef {
            namespace: "ml".into(),
            name: uid.into(),
            uid: uid.into(),
        };
        match kind {
            "wait" => Notice::WaitSince {
                pod,
                since: crate::decision::time::Time::from_secs(1),
            },
            "spill" => Notice::Spilled {
                pod,
                message: String::new(),
            },
            _ => Notice::Waiting {
                pod,
                message: String::new(),
            },
        }
    }

    #[test]
    fn one_event_per_pod_and_reason_per_interval() {
        let mut t = Throttle::new(Duration::from_secs(300));
        let t0 = Instant::now();
        assert!(t.admit(&notice("a", "spill"), t0));
        assert!(!t.admit(&notice("a", "spill"), t0 + Duration::from_secs(299)));
        assert!(t.admit(&notice("a", "waiting"), t0), "another reason");
        assert!(t.admit(&notice("b", "spill"), t0), "another pod");
        assert!(t.admit(&notice("a", "spill"), t0 + Duration::from_secs(300)));
        t.forget("b");
        assert!(t.admit(&notice("b", "spill"), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_wait_clock_write_is_retried_after_a_short_delay() {
        let mut t = Throttle::new(Duration::from_secs(300));
        let t0 = Instant::now();
        assert!(t.admit(&notice("a", "wait"), t0));
        assert!(!t.admit(&notice("a", "wait"), t0 + Duration::from_secs(9)));
        assert!(t.admit(&notice("a", "wait"), t0 + WAIT_SINCE_RETRY));
    }

    #[test]
    fn the_throttle_forgets_old_entries_as_it_grows() {
        let mut t = Throttle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..5000 {
            let at = t0 + Duration::from_millis(i * 10);
            assert!(t.admit(&notice(&format!("p{i}"), "spill"), at));
        }
        assert!(t.last.len() < 3000, "{}", t.last.len());
    }

    #[test]
    fn notes_are_cut_at_the_api_limit_on_a_char_boundary() {
        let s = truncate("é".repeat(600), MAX_NOTE);
        assert!(s.len() <= MAX_NOTE && s.ends_with("..."));
        assert_eq!(truncate("short".into(), MAX_NOTE), "short");
    }
}
