//! The watches that feed the index: Nodes, Pods and ResourcePolicies (both
//! API groups), each a kube-runtime watcher with backoff, applied through
//! [`crate::index::feed`]. Decisions wait until every watch has applied
//! its list, at start and after every re-list
//! ([`Extender::cache_listing`]).

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, ListSemantic, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::watch::Receiver as WatchReceiver;

use crate::crd::{COMPAT_GROUP, GROUP, KIND, VERSION};
use crate::decision::time::Time;
use crate::extender::backend::{Binder, Extender, Index};
use crate::index::feed::{self, FeedError, Group, Relist};
use crate::serve::leader;

/// The API of ResourcePolicies in `group`.
/// The ResourcePolicy resource of `group` (for watches and status writes).
pub(crate) fn policy_resource(group: Group) -> ApiResource {
    let name = match group {
        Group::Spillway => GROUP,
        Group::Compat => COMPAT_GROUP,
    };
    let gvk = GroupVersionKind::gvk(name, VERSION, KIND);
    ApiResource::from_gvk_with_plural(&gvk, "resourcepolicies")
}

/// ResourcePolicies of `group` in every namespace.
fn policies(client: kube::Client, group: Group) -> Api<DynamicObject> {
    Api::all_with(client, &policy_resource(group))
}

async fn watch<K, B, F>(
    api: Api<K>,
    kind: &'static str,
    ext: Arc<Extender<B>>,
    mut apply: F,
    mut relist: Option<WatchReceiver<u64>>,
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    B: Binder,
    F: FnMut(&mut Index, &mut Relist, Event<K>, Time) -> Result<(), FeedError>,
{
    let mut state = Relist::default();
    let metrics = ext.metrics().clone();
    // A list asked for by a new leader: its InitDone also ends the hand-over.
    let mut handover = false;
    // A re-list reads from etcd, not from the API server's watch cache
    // (which may lag): a new leader must see the last leader's Bindings.
    let config = watcher::Config::default().list_semantic(ListSemantic::MostRecent);
    loop {
        let stream = watcher(api.clone(), config.clone()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                asked = asked_to_relist(&mut relist) => {
                    if asked {
                        handover = true;
                        ext.cache_listing(kind);
                        break;
                    }
                    continue;
                }
            };
            let Some(item) = item else { return };
            match item {
                Ok(ev) => {
                    let listed = matches!(ev, Event::InitDone);
                    if matches!(ev, Event::Init) {
                        ext.cache_listing(kind);
                    }
                    let now = ext.now();
                    metrics.watch_events.with_label_values(&[kind]).inc();
                    if let Err(e) = ext.with_index(|ix| apply(ix, &mut state, ev, now)) {
                        metrics.invalid_objects.with_label_values(&[e.kind()]).inc();
                        tracing::warn!(kind, error = %e, "object skipped");
                    }
                    if listed {
                        tracing::info!(kind, "list applied");
                        ext.cache_listed(kind);
                        if std::mem::take(&mut handover) {
                            tracing::info!("hand-over: pods re-listed, answering placements");
                            ext.cache_listed(leader::HANDOVER);
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
}

/// True when a re-list was asked for; never returns without a sender.
async fn asked_to_relist(relist: &mut Option<WatchReceiver<u64>>) -> bool {
    match relist {
        Some(rx) => {
            if rx.changed().await.is_ok() {
                return true;
            }
            *relist = None;
            false
        }
        None => std::future::pending().await,
    }
}

/// Runs every watch until the process stops. With `compat`, ResourcePolicies
/// of the `scheduling.alibabacloud.com` group are watched too (its CRD must
/// be installed, or the caches never sync). Policy status (including the
/// `Ready` condition the feed computes) is written by [`super::controller`].
///
/// `relist` (from the leader election) makes the pod watch list again.
pub async fn run<B: Binder>(
    client: kube::Client,
    ext: Arc<Extender<B>>,
    compat: bool,
    relist: Option<WatchReceiver<u64>>,
) {
    // Every kind counts as listing from the start, so that a fast list of
    // one kind cannot open the gate before the others began.
    for kind in ["node", "pod", "resourcepolicy"] {
        ext.cache_listing(kind);
    }
    if compat {
        ext.cache_listing("resourcepolicy_compat");
    }
    let nodes = watch(
        Api::<Node>::all(client.clone()),
        "node",
        ext.clone(),
        |ix, r, ev, _| feed::node_event(ix, r, ev),
        None,
    );
    let pods = watch(
        Api::<Pod>::all(client.clone()),
        "pod",
        ext.clone(),
        feed::pod_event,
        relist,
    );
    let policy_apply = |group: Group| {
        move |ix: &mut Index, r: &mut Relist, ev: Event<DynamicObject>, now: Time| {
            feed::policy_event_reporting(ix, r, group, ev, now, &mut |_| {})
        }
    };
    let own = policies(client.clone(), Group::Spillway);
    let own = watch(
        own,
        "resourcepolicy",
        ext.clone(),
        policy_apply(Group::Spillway),
        None,
    );
    if compat {
        let theirs = policies(client, Group::Compat);
        let theirs = watch(
            theirs,
            "resourcepolicy_compat",
            ext,
            policy_apply(Group::Compat),
            None,
        );
        tokio::join!(nodes, pods, own, theirs);
    } else {
        tokio::join!(nodes, pods, own);
    }
}
