//! The watches that feed the index: Nodes, Pods and ResourcePolicies (both
//! API groups), each a kube-runtime watcher with backoff, applied through
//! [`crate::index::feed`]. The extender turns ready once every watch has
//! finished its first list.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedSender;

use crate::crd::{COMPAT_GROUP, GROUP, KIND, VERSION};
use crate::decision::time::Time;
use crate::extender::backend::{Binder, Extender, Index};
use crate::index::feed::{self, FeedError, Group, Relist, StatusWrite};

/// Counts watches that finished their first list.
struct Synced {
    done: AtomicUsize,
    of: usize,
}

/// The API of ResourcePolicies in `group`.
fn policies(client: kube::Client, group: &str) -> (Api<DynamicObject>, ApiResource) {
    let gvk = GroupVersionKind::gvk(group, VERSION, KIND);
    let ar = ApiResource::from_gvk_with_plural(&gvk, "resourcepolicies");
    (Api::all_with(client, &ar), ar)
}

async fn watch<K, B, F>(
    api: Api<K>,
    kind: &'static str,
    ext: Arc<Extender<B>>,
    synced: Arc<Synced>,
    mut apply: F,
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    B: Binder,
    F: FnMut(&mut Index, &mut Relist, Event<K>, Time) -> Result<(), FeedError>,
{
    let mut relist = Relist::default();
    let mut first_list = true;
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let metrics = ext.metrics().clone();
    while let Some(item) = stream.next().await {
        match item {
            Ok(ev) => {
                let listed = matches!(ev, Event::InitDone);
                let now = ext.now();
                metrics.watch_events.with_label_values(&[kind]).inc();
                if let Err(e) = ext.with_index(|ix| apply(ix, &mut relist, ev, now)) {
                    metrics.invalid_objects.with_label_values(&[e.kind()]).inc();
                    tracing::warn!(kind, error = %e, "object skipped");
                }
                if listed && first_list {
                    first_list = false;
                    let done = synced.done.fetch_add(1, Ordering::SeqCst) + 1;
                    tracing::info!(kind, "initial list applied ({done}/{})", synced.of);
                    if done == synced.of {
                        ext.set_ready(true);
                        tracing::info!("caches synced; ready");
                    }
                }
            }
            Err(e) => {
                metrics.watch_errors.with_label_values(&[kind]).inc();
                tracing::warn!(kind, error = %e, "watch failed; retrying with backoff");
            }
        }
    }
}

/// Runs every watch until the process stops. With `compat`, ResourcePolicies
/// of the `scheduling.alibabacloud.com` group are watched too (its CRD must
/// be installed, or readiness waits for it).
pub async fn run<B: Binder>(
    client: kube::Client,
    ext: Arc<Extender<B>>,
    compat: bool,
    status: UnboundedSender<StatusWrite>,
) {
    // Each policy object's `Ready` condition goes to the status writer.
    let policy_apply = |group: Group| {
        let status = status.clone();
        move |ix: &mut Index, r: &mut Relist, ev: Event<DynamicObject>, now: Time| {
            feed::policy_event_reporting(ix, r, group, ev, now, &mut |w| {
                // The writer ends only at shutdown; a status then is moot.
                let _ = status.send(w);
            })
        }
    };
    let synced = Arc::new(Synced {
        done: AtomicUsize::new(0),
        of: if compat { 4 } else { 3 },
    });
    let nodes = watch(
        Api::<Node>::all(client.clone()),
        "node",
        ext.clone(),
        synced.clone(),
        |ix, r, ev, _| feed::node_event(ix, r, ev),
    );
    let pods = watch(
        Api::<Pod>::all(client.clone()),
        "pod",
        ext.clone(),
        synced.clone(),
        feed::pod_event,
    );
    let (own, _) = policies(client.clone(), GROUP);
    let own = watch(
        own,
        "resourcepolicy",
        ext.clone(),
        synced.clone(),
        policy_apply(Group::Spillway),
    );
    if compat {
        let (theirs, _) = policies(client, COMPAT_GROUP);
        let theirs = watch(
            theirs,
            "resourcepolicy_compat",
            ext,
            synced,
            policy_apply(Group::Compat),
        );
        tokio::join!(nodes, pods, own, theirs);
    } else {
        tokio::join!(nodes, pods, own);
    }
}
