//! The policy controller's effector: every period it calls the core's
//! [`reconcile`] on the extender's index (one watch per kind, no second
//! cache) and applies the actions through kube-rs. It holds no policy logic.
//!
//! ```text
//!  tick ──► reconcile(snapshot, ledger, observed, now) ──► PATCH pod   (deletion cost, unit labels; UID-checked)
//!                                                      ├─► POST pods/NAME/eviction (spill-back; PDBs hold)
//!                                                      ├─► notices   (Events, rate-limited by the writer)
//!                                                      ├─► POST / DELETE pod (headroom placeholders, `spec.headroom`)
//!                                                      └─► PATCH …/resourcepolicies/NAME/status
//!                                                           (units, summary, Ready/Invalid/Conflict; only when
//!                                                            it changed, at most once per second per policy)
//! ```
//!
//! A patch that succeeded is applied to the index at once
//! ([`apply_patch`]), so the next reconcile does not repeat it before the
//! watch shows it; a failed one is retried on the next tick.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, DeleteParams, DynamicObject, EvictParams, Patch, PatchParams, PostParams, Preconditions,
};
use serde_json::json;

use crate::crd::{PolicyCondition, ResourcePolicyStatus, UnitStatus};
use crate::decision::deletion::DELETION_COST_ANNOTATION;
use crate::decision::headroom::{
    HEADROOM_LABEL, HEADROOM_UNIT_ANNOTATION, HeadroomAsk, PlaceholderAction, placeholder_actions,
};
use crate::decision::policy::PolicyKey;
use crate::decision::quantity::format_milli;
use crate::decision::reconcile::{Actions, PodPatch, PolicyView, apply_patch, reconcile};
use crate::decision::spillback::{Eviction, SpillBackState};
use crate::decision::time::{Time, format_rfc3339};
use crate::extender::backend::{Binder, Extender, Notice, PodRef};
use crate::extender::metrics::Metrics;
use crate::index::feed::{Group, StatusWrite};

/// How often a policy's status may be written at most.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// The merge patch of one pod's labels and annotations, naming its UID so
/// that a pod re-created under the same name is not patched by mistake.
#[must_use]
pub fn pod_patch(p: &PodPatch) -> serde_json::Value {
    let mut meta = json!({"uid": p.pod.uid});
    if !p.labels.is_empty() {
        meta["labels"] = json!(p.labels);
    }
    if !p.annotations.is_empty() {
        meta["annotations"] = json!(p.annotations);
    }
    json!({ "metadata": meta })
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    seen: Option<&ResourcePolicyStatus>,
    now: Time,
) -> PolicyCondition {
    let previous = seen.map_or(&[][..], |s| s.conditions.as_slice());
    PolicyCondition::observed(type_, status, reason, message, previous, generation, now)
}

fn quantities(r: &crate::decision::quantity::Resources) -> BTreeMap<String, String> {
    r.iter()
        .map(|(k, v)| (k.to_owned(), format_milli(v)))
        .collect()
}

/// The status a policy object should carry: its `Ready` condition as the
/// feed computed it, `Invalid` (the same facts, for alerting on), and, for
/// a policy in force, the per-unit counts and `Conflict`.
#[must_use]
pub fn desired_status(
    ready: &StatusWrite,
    view: Option<&PolicyView>,
    seen: Option<&ResourcePolicyStatus>,
    now: Time,
) -> ResourcePolicyStatus {
    let generation = ready.generation;
    let r = &ready.condition;
    let invalid = if r.status == "False" {
        condition(
            "Invalid",
            "True",
            &r.reason,
            r.message.clone(),
            generation,
            seen,
            now,
        )
    } else {
        condition(
            "Invalid",
            "False",
            "Valid",
            "the spec is valid".to_owned(),
            generation,
            seen,
            now,
        )
    };
    let mut conditions = vec![r.clone(), invalid];
    let mut units = Vec::new();
    let mut summary = None;
    if let Some(v) = view {
        let conflict = if v.conflicts.is_empty() {
            condition(
                "Conflict",
                "False",
                "NoConflict",
                "no older ResourcePolicy selects its pods".to_owned(),
                generation,
                seen,
                now,
            )
        } else {
            let who: Vec<String> = v
                .conflicts
                .iter()
                .map(|(k, n)| format!("{n} pod(s) to {k}"))
                .collect();
            condition(
                "Conflict",
                "True",
                "OlderPolicySelectsPods",
                format!(
                    "pods it selects are governed by an older ResourcePolicy (the oldest wins): {}",
                    who.join(", ")
                ),
                generation,
                seen,
                now,
            )
        };
        conditions.push(conflict);
        units = v
            .units
            .iter()
            .map(|u| UnitStatus {
                name: u.name.clone(),
                resource: u.resource.to_owned(),
                pods: i32::try_from(u.pods).unwrap_or(i32::MAX),
                max: u.max.map(|m| i32::try_from(m).unwrap_or(i32::MAX)),
                resources_used: quantities(&u.resources_used),
                max_resources: quantities(&u.max_resources),
                reserved: i32::try_from(u.reserved).unwrap_or(i32::MAX),
                pending: i32::try_from(u.waiting).unwrap_or(i32::MAX),
                last_spill: u.last_spill.as_ref().map(|(t, _)| format_rfc3339(*t)),
                reason: u.last_spill.as_ref().map(|(_, r)| r.clone()),
            })
            .collect();
        summary = Some(
            v.units
                .iter()
                .map(|u| match u.max {
                    Some(m) => format!("{} {}/{m}", u.name, u.pods),
                    None => format!("{} {}", u.name, u.pods),
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    ResourcePolicyStatus {
        observed_generation: generation,
        units,
        summary,
        conditions,
    }
}

/// Remembers what was written to each policy object, and when, so that a
/// status is written only when it changed and at most once per
/// [`STATUS_INTERVAL`].
#[derive(Debug, Default)]
pub struct StatusMemory {
    written: BTreeMap<(Group, PolicyKey), (ResourcePolicyStatus, Time)>,
}

impl StatusMemory {
    /// True when `desired` should be written now: it differs from both
    /// what the object carries and what was last written, and the last
    /// write is at least [`STATUS_INTERVAL`] old.
    pub fn due(
        &self,
        group: Group,
        key: &PolicyKey,
        desired: &ResourcePolicyStatus,
        seen: Option<&ResourcePolicyStatus>,
        now: Time,
    ) -> bool {
        if seen == Some(desired) {
            return false;
        }
        match self.written.get(&(group, key.clone())) {
            Some((last, _)) if last == desired => false,
            Some((_, at)) => now >= at.after(STATUS_INTERVAL),
            None => true,
        }
    }

    /// The status last written to an object.
    pub fn last(&self, group: Group, key: &PolicyKey) -> Option<&ResourcePolicyStatus> {
        self.written.get(&(group, key.clone())).map(|(s, _)| s)
    }

    /// Records a write.
    pub fn wrote(
        &mut self,
        group: Group,
        key: &PolicyKey,
        status: ResourcePolicyStatus,
        now: Time,
    ) {
        self.written.insert((group, key.clone()), (status, now));
    }
}

/// What one tick found to write.
struct Tick {
    actions: Actions,
    statuses: Vec<(Group, PolicyKey, ResourcePolicyStatus)>,
    placeholders: Vec<PlaceholderAction>,
}

/// PriorityClass of headroom placeholders (in `deploy/base`): negative, so
/// that any replica preempts them, and `preemptionPolicy: Never`, so that
/// they preempt nothing.
pub const HEADROOM_PRIORITY_CLASS: &str = "spillway-headroom";

/// The placeholder pod for `ask`: a pause container with the replica's
/// requests (extended resources as limits too, as the API requires),
/// pinned to the unit's nodes by its node selector, tolerating every taint
/// there (the replicas it stands in for run on those nodes).
#[must_use]
pub fn placeholder_pod(policy: &PolicyKey, unit_name: &str, ask: &HeadroomAsk) -> Pod {
    let requests = quantities(&ask.requests);
    let limits: BTreeMap<String, String> = requests
        .iter()
        .filter(|(k, _)| k.contains('/'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("spillway-headroom-{}-", policy.name),
            "namespace": policy.namespace,
            "labels": {
                HEADROOM_LABEL: policy.name,
                "app.kubernetes.io/managed-by": "spillway",
            },
            "annotations": {
                HEADROOM_UNIT_ANNOTATION: unit_name,
                "scheduling.spillway.io/headroom-reason": ask.reason,
            },
        },
        "spec": {
            "priorityClassName": HEADROOM_PRIORITY_CLASS,
            "nodeSelector": ask.node_selector,
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65535,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "pause",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": requests, "limits": limits},
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    });
    serde_json::from_value(pod).unwrap_or_default()
}

/// Creates and deletes headroom placeholders; each success is applied to
/// the index at once, so the next tick does not repeat it.
async fn placeholders<B: Binder>(
    client: &kube::Client,
    ext: &Extender<B>,
    actions: Vec<PlaceholderAction>,
    now: Time,
) {
    let metrics = ext.metrics();
    for action in actions {
        match action {
            PlaceholderAction::Create {
                policy,
                unit_name,
                ask,
            } => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), &policy.namespace);
                let body = placeholder_pod(&policy, &unit_name, &ask);
                match pods.create(&PostParams::default(), &body).await {
                    Ok(created) => {
                        metrics.count_write("headroom_placeholder", true);
                        tracing::info!(policy = %policy, unit = %unit_name, "headroom: placeholder created: {}", ask.reason);
                        if let Ok(pod) = crate::index::convert::pod(&created, None, now) {
                            ext.with_index(|ix| ix.snapshot.upsert_pod(pod));
                        }
                    }
                    Err(e) => {
                        metrics.count_write("headroom_placeholder", false);
                        tracing::warn!(policy = %policy, error = %e, "headroom: placeholder not created (is PriorityClass {HEADROOM_PRIORITY_CLASS} installed?)");
                    }
                }
            }
            PlaceholderAction::Delete {
                namespace,
                name,
                uid,
                reason,
            } => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match pods.delete(&name, &params).await {
                    Ok(_) => {
                        metrics.count_write("headroom_placeholder", true);
                        tracing::info!(pod = %format!("{namespace}/{name}"), "headroom: placeholder deleted: {reason}");
                        ext.with_index(|ix| ix.snapshot.remove_pod(&uid));
                    }
                    // Gone already (the watch will say so).
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        ext.with_index(|ix| ix.snapshot.remove_pod(&uid));
                    }
                    Err(e) => {
                        metrics.count_write("headroom_placeholder", false);
                        tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "headroom: placeholder not deleted");
                    }
                }
            }
        }
    }
}

fn plan<B: Binder>(ext: &Extender<B>, memory: &mut Memory, now: Time) -> Tick {
    ext.with_index(|ix| {
        // Timed from when the index is held: the time Filters wait.
        let started = std::time::Instant::now();
        let actions = reconcile(
            &ix.snapshot,
            &ix.ledger,
            &ix.observed,
            &mut memory.spill,
            now,
        );
        let views: BTreeMap<&PolicyKey, &PolicyView> =
            actions.policies.iter().map(|v| (&v.key, v)).collect();
        let mut statuses = Vec::new();
        for (group, key, ready, seen) in ix.policies.objects() {
            // Conditions keep their transition time from what the object
            // shows, or from what was written before the watch shows it.
            let previous = seen
                .filter(|s| !s.conditions.is_empty())
                .or_else(|| memory.status.last(group, key))
                .or(seen);
            let desired = desired_status(ready, views.get(key).copied(), previous, now);
            if memory.status.due(group, key, &desired, seen, now) {
                statuses.push((group, key.clone(), desired));
            }
        }
        let placeholders = placeholder_actions(&ix.snapshot, &ix.ledger, now);
        ext.metrics()
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        Tick {
            actions,
            statuses,
            placeholders,
        }
    })
}

fn policy_api(client: kube::Client, group: Group, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &super::watch::policy_resource(group))
}

/// Sets the per-unit gauges from the views (series of deleted policies
/// and units go).
fn unit_gauges(metrics: &Metrics, views: &[PolicyView]) {
    for g in [
        &metrics.unit_pods,
        &metrics.unit_max,
        &metrics.unit_reserved,
        &metrics.unit_waiting,
    ] {
        g.reset();
    }
    for v in views {
        let policy = v.key.to_string();
        for u in &v.units {
            let labels = [policy.as_str(), u.name.as_str()];
            let set = |g: &prometheus::IntGaugeVec, n: u32| {
                g.with_label_values(&labels).set(i64::from(n));
            };
            set(&metrics.unit_pods, u.pods);
            set(&metrics.unit_reserved, u.reserved);
            set(&metrics.unit_waiting, u.waiting);
            if let Some(m) = u.max {
                set(&metrics.unit_max, m);
            }
        }
    }
}

/// What the controller remembers between ticks (the leader's alone: a
/// new leader starts afresh, which only delays spill-back by a settle time).
#[derive(Debug, Default)]
pub struct Memory {
    /// Status writes.
    pub status: StatusMemory,
    /// Spill-back's settle clocks and recent evictions.
    pub spill: SpillBackState,
}

/// Evicts one pod for spill-back through the Eviction API (so
/// PodDisruptionBudgets hold), with its UID as a precondition.
async fn evict<B: Binder>(client: &kube::Client, ext: &Extender<B>, e: Eviction) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &e.namespace);
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(e.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        }),
        post_options: PostParams::default(),
    };
    let pod = PodRef {
        namespace: e.namespace.clone(),
        name: e.name.clone(),
        uid: e.uid.clone(),
    };
    let result = match pods.evict(&e.name, &params).await {
        Ok(_) => {
            tracing::info!(pod = %format!("{}/{}", e.namespace, e.name), policy = %e.policy, "spill-back eviction");
            ext.notify(Notice::PodEvent {
                pod,
                reason: "SpilledBack",
                message: format!("evicted: {}", e.message),
            });
            "ok"
        }
        // A PodDisruptionBudget allows no disruption now: try again later.
        Err(kube::Error::Api(s)) if s.code == 429 => {
            ext.notify(Notice::PodEvent {
                pod,
                reason: "SpillBackBlocked",
                message: format!(
                    "not evicted, a PodDisruptionBudget allows no disruption now ({}); {}",
                    s.message, e.message
                ),
            });
            "blocked"
        }
        Err(err) => {
            tracing::warn!(pod = %format!("{}/{}", e.namespace, e.name), error = %err, "spill-back eviction failed");
            "error"
        }
    };
    ext.metrics()
        .spill_back_evictions
        .with_label_values(&[result])
        .inc();
}

/// One reconcile and its writes.
pub async fn tick<B: Binder>(client: &kube::Client, ext: &Extender<B>, memory: &mut Memory) {
    let now = ext.now();
    if !ext.is_synced() {
        return;
    }
    let Tick {
        actions,
        statuses,
        placeholders: headroom,
    } = plan(ext, memory, now);
    placeholders(client, ext, headroom, now).await;
    let metrics = ext.metrics();
    unit_gauges(metrics, &actions.policies);
    for e in actions.events {
        ext.notify(Notice::PodEvent {
            pod: PodRef {
                namespace: e.pod.namespace,
                name: e.pod.name,
                uid: e.pod.uid,
            },
            reason: e.reason,
            message: e.message,
        });
    }
    for e in actions.evictions {
        evict(client, ext, e).await;
    }
    for p in &actions.patches {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &p.pod.namespace);
        match pods
            .patch(
                &p.pod.name,
                &PatchParams::default(),
                &Patch::Merge(pod_patch(p)),
            )
            .await
        {
            Ok(_) => {
                metrics.count_write("pod_labels_cost", true);
                if p.annotations.contains_key(DELETION_COST_ANNOTATION) {
                    metrics.deletion_cost_patches.inc();
                }
                ext.with_index(|ix| apply_patch(&mut ix.snapshot, p));
            }
            Err(e) => {
                metrics.count_write("pod_labels_cost", false);
                tracing::warn!(pod = %format!("{}/{}", p.pod.namespace, p.pod.name), error = %e, "pod patch failed");
            }
        }
    }
    for (group, key, status) in statuses {
        let api = policy_api(client.clone(), group, &key.namespace);
        let body = json!({ "status": status });
        match api
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(body))
            .await
        {
            Ok(_) => {
                metrics.count_write("policy_status", true);
                memory.status.wrote(group, &key, status, now);
            }
            Err(e) => {
                metrics.count_write("policy_status", false);
                tracing::warn!(policy = %key, error = %e, "status write failed");
            }
        }
    }
}

/// Runs a reconcile every `period` until the process stops.
pub async fn run<B: Binder>(client: kube::Client, ext: Arc<Extender<B>>, period: Duration) {
    let mut memory = Memory::default();
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        tick(&client, &ext, &mut memory).await;
    }
}
