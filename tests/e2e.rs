//! Real-cluster test of the extender, skipped unless
//! `SPILLWAY_E2E_KUBECONFIG` names a kubeconfig.
//!
//! It assumes the cluster runs Spillway as deployed by `deploy/` (a
//! kube-scheduler named `spillway-scheduler` with Spillway as its extender,
//! and the CRDs). It creates five GPU nodes (two `local`, three `elastic`;
//! Node objects with no kubelet behind them, Ready and with 8
//! `nvidia.com/gpu` each), a namespace with a ResourcePolicy (`max: 4` on the
//! local unit, then the elastic unit) and 20 one-GPU pods, and asserts that
//! exactly 4 land on local nodes, 16 on elastic nodes and none elsewhere,
//! each carrying its unit's label. Then the policy controller: the policy's
//! `status.units` count 4 and 16 and every pod carries its deletion cost
//! (local 200, elastic 100). Then spill-back (`settleTime: 5s`): a
//! two-replica ReplicaSet lands on the elastic unit while the local unit is
//! full; two bare local pods are deleted; spill-back moves both ReplicaSet
//! pods home one at a time and never evicts a bare pod (nothing would
//! replace it). Headroom: with `spec.headroom` set, one placeholder pod at
//! PriorityClass `spillway-headroom` is bound to an elastic node and not
//! counted; without it, the placeholder is deleted. Everything it creates is
//! deleted at the end, pass or fail.
//!
//! ```sh
//! SPILLWAY_E2E_KUBECONFIG=~/.kube/config cargo test --test e2e -- --nocapture
//! # and the replica scaler, with a Prometheus the Spillway pod can reach:
//! SPILLWAY_E2E_PROMETHEUS_URL=http://prometheus-operated.monitoring.svc:9090 SPILLWAY_E2E_KUBECONFIG=~/.kube/config cargo test --test e2e
//! ```

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use spillway::load::cluster::create_namespace;

const NAMESPACE: &str = "spillway-e2e";
const POOL_LABEL: &str = "e2e.spillway.io/pool";

fn node_names() -> Vec<(String, &'static str)> {
    let mut v: Vec<(String, &'static str)> = (1..=2)
        .map(|i| (format!("spillway-e2e-local-{i}"), "local"))
        .collect();
    v.extend((1..=3).map(|i| (format!("spillway-e2e-elastic-{i}"), "elastic")));
    v
}

async fn client(path: &str) -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

async fn create_nodes(client: &kube::Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, pool) in node_names() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {POOL_LABEL: pool, "kubernetes.io/hostname": name}},
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
        let status = json!({"status": {
            "capacity": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
            "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "E2E", "message": "fake node",
                            "lastHeartbeatTime": chrono_now(), "lastTransitionTime": chrono_now()}],
        }});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    Ok(())
}

fn chrono_now() -> String {
    spillway::decision::time::format_rfc3339(spillway::serve::wall_clock())
}

/// The spec of a one-GPU pod for Spillway's scheduler that runs on the fake
/// nodes (no kubelet: the node controller may taint them).
fn gpu_pod_spec() -> serde_json::Value {
    json!({
        "schedulerName": "spillway-scheduler",
        "containers": [{"name": "server", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        "tolerations": [{"operator": "Exists"}],
    })
}

async fn create_workload(client: &kube::Client) -> anyhow::Result<()> {
    create_namespace(client, NAMESPACE).await?;
    let policies = policies(client);
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "scheduling.spillway.io/v1alpha1",
        "kind": "ResourcePolicy",
        "metadata": {"name": "e2e", "namespace": NAMESPACE},
        "spec": {
            "selector": {"app": "e2e-llm"},
            "strategy": "required",
            "spillBack": {"settleTime": "5s", "maxEvictions": 1, "interval": "5s"},
            "units": [
                {"name": "local", "resource": "idc", "nodeSelector": {POOL_LABEL: "local"}, "max": 4,
                 "podLabels": {"e2e.spillway.io/unit": "local"}},
                {"name": "elastic", "resource": "elastic", "nodeSelector": {POOL_LABEL: "elastic"},
                 "podLabels": {"e2e.spillway.io/unit": "elastic"}}
            ]
        }
    }))?;
    policies.create(&PostParams::default(), &policy).await?;
    // Give the extender's policy watch a moment before the pods arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    for i in 0..20 {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("llm-{i:02}"), "labels": {"app": "e2e-llm"}},
            "spec": gpu_pod_spec(),
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    Ok(())
}

fn policies(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("scheduling.spillway.io", "v1alpha1", "ResourcePolicy");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "resourcepolicies");
    Api::namespaced_with(client.clone(), NAMESPACE, &ar)
}

/// Polls `check` every second for up to `secs` seconds; the last error says
/// what never held.
async fn eventually<F, Fut>(secs: u64, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut last = Ok(());
    for _ in 0..secs {
        last = check().await;
        if last.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    last
}

/// The policy's status counts the pods where they are, and every governed
/// pod carries the deletion cost of its unit.
async fn controller_wrote_status_and_costs(client: &kube::Client) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    eventually(60, || async {
        let policy = policies(client).get("e2e").await?;
        let status = &policy.data["status"];
        anyhow::ensure!(
            status["summary"] == "local 4/4, elastic 16"
                && status["units"][0]["pods"] == 4
                && status["units"][1]["pods"] == 16,
            "status: {status}"
        );
        for p in pods.list(&ListParams::default()).await?.items {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let want = if node.starts_with("spillway-e2e-local-") {
                "200"
            } else {
                "100"
            };
            let cost = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost").cloned());
            anyhow::ensure!(
                cost.as_deref() == Some(want),
                "{:?} on {node}: cost {cost:?}",
                p.metadata.name
            );
        }
        Ok(())
    })
    .await
}

/// Spill-back moves the ReplicaSet's pods home once the local unit has
/// room, and leaves the bare pods where they are.
async fn spill_back_moves_only_replaceable_pods(client: &kube::Client) -> anyhow::Result<()> {
    let replicasets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(client.clone(), NAMESPACE);
    let rs = serde_json::from_value(json!({
        "metadata": {"name": "rs-llm"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "e2e-llm", "owner": "rs"}},
            "template": {
                "metadata": {"labels": {"app": "e2e-llm", "owner": "rs"}},
                "spec": gpu_pod_spec(),
            }
        }
    }))?;
    replicasets.create(&PostParams::default(), &rs).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let rs_pods = ListParams::default().labels("owner=rs");
    let rs_nodes = || async {
        let list = pods.list(&rs_pods).await?;
        Ok::<_, anyhow::Error>(
            list.items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| p.spec.and_then(|s| s.node_name).unwrap_or_default())
                .collect::<Vec<String>>(),
        )
    };
    eventually(60, || async {
        let nodes = rs_nodes().await?;
        anyhow::ensure!(
            nodes.len() == 2 && nodes.iter().all(|n| n.starts_with("spillway-e2e-elastic-")),
            "ReplicaSet pods: {nodes:?}"
        );
        Ok(())
    })
    .await?;
    // Room for two in the local unit: two bare local pods go.
    let bare_local: Vec<String> = pods
        .list(&ListParams::default().labels("!owner"))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| n.starts_with("spillway-e2e-local-"))
        })
        .filter_map(|p| p.metadata.name)
        .take(2)
        .collect();
    for name in &bare_local {
        pods.delete(name, &DeleteParams::default().grace_period(0))
            .await?;
    }
    eventually(120, || async {
        let nodes = rs_nodes().await?;
        anyhow::ensure!(
            nodes.len() == 2 && nodes.iter().all(|n| n.starts_with("spillway-e2e-local-")),
            "ReplicaSet pods: {nodes:?}"
        );
        Ok(())
    })
    .await?;
    // The 16 bare elastic pods were never evicted.
    let bare_elastic = pods
        .list(&ListParams::default().labels("!owner"))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| n.starts_with("spillway-e2e-elastic-"))
        })
        .count();
    anyhow::ensure!(bare_elastic == 16, "{bare_elastic} bare elastic pods left");
    Ok(())
}

/// `spec.headroom` on the policy (local is 4/4, so 100 % full): the
/// controller creates one placeholder pod, which the default scheduler binds
/// to an elastic node and which the policy does not count; without
/// `spec.headroom` the placeholder is deleted.
async fn headroom_placeholder_follows_the_policy(client: &kube::Client) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let selector = ListParams::default().labels("scheduling.spillway.io/headroom-for=e2e");
    let set = |headroom: serde_json::Value| {
        let body = json!({"spec": {"headroom": headroom}});
        async move {
            policies(client)
                .patch("e2e", &PatchParams::default(), &Patch::Merge(&body))
                .await
        }
    };
    set(json!({"fillPercent": 100})).await?;
    eventually(90, || async {
        let list = pods.list(&selector).await?;
        anyhow::ensure!(list.items.len() == 1, "{} placeholders", list.items.len());
        let spec = list.items[0].spec.clone().unwrap_or_default();
        anyhow::ensure!(
            spec.priority_class_name.as_deref() == Some("spillway-headroom"),
            "priority class {:?}",
            spec.priority_class_name
        );
        let node = spec.node_name.unwrap_or_default();
        anyhow::ensure!(
            node.starts_with("spillway-e2e-elastic-"),
            "placeholder on {node:?}"
        );
        let policy = policies(client).get("e2e").await?;
        anyhow::ensure!(
            policy.data["status"]["summary"] == "local 4/4, elastic 16",
            "the placeholder was counted: {}",
            policy.data["status"]["summary"]
        );
        Ok(())
    })
    .await?;
    set(serde_json::Value::Null).await?;
    eventually(60, || async {
        let list = pods.list(&selector).await?;
        anyhow::ensure!(
            list.items
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_some()),
            "{} placeholders left",
            list.items.len()
        );
        Ok(())
    })
    .await
}

async fn cleanup(client: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, _) in node_names() {
        let _ = nodes.delete(&name, &DeleteParams::default()).await;
    }
}

/// Waits until every pod has a node and its unit label (or 3 minutes
/// pass); returns
/// `(pod, node, unit label)` for each.
async fn placements(client: &kube::Client) -> anyhow::Result<Vec<(String, String, String)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    for _ in 0..180 {
        let list = pods.list(&ListParams::default()).await?;
        let placed: Vec<(String, String, String)> = list
            .items
            .iter()
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                let unit = p
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("e2e.spillway.io/unit").cloned())
                    .unwrap_or_default();
                Some((p.metadata.name.clone()?, node, unit))
            })
            .collect();
        // The unit label follows the bind: the policy controller writes it
        // on its next reconcile.
        if placed.len() == 20 && placed.iter().all(|(_, _, unit)| !unit.is_empty()) {
            return Ok(placed);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let list = pods.list(&ListParams::default()).await?;
    let bound = |p: &&Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let labelled = |p: &&Pod| {
        p.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("e2e.spillway.io/unit"))
    };
    anyhow::bail!(
        "within 3 minutes only {} of 20 pods were bound and {} of those labelled with their unit",
        list.items.iter().filter(bound).count(),
        list.items.iter().filter(bound).filter(labelled).count()
    )
}

#[tokio::test]
async fn twenty_pods_four_local_sixteen_elastic() {
    let Ok(path) = std::env::var("SPILLWAY_E2E_KUBECONFIG") else {
        eprintln!(
            "skipped: set SPILLWAY_E2E_KUBECONFIG to a kubeconfig of a cluster running Spillway \
             (deploy/overlays/production) to run the real-cluster test"
        );
        return;
    };
    let client = client(&path).await.expect("kubeconfig");
    cleanup(&client).await;
    let run = async {
        create_nodes(&client).await?;
        create_workload(&client).await?;
        let placed = placements(&client).await?;
        controller_wrote_status_and_costs(&client).await?;
        headroom_placeholder_follows_the_policy(&client).await?;
        spill_back_moves_only_replaceable_pods(&client).await?;
        anyhow::Ok(placed)
    };
    let result = run.await;
    cleanup(&client).await;
    let placed = result.expect("e2e run");
    let local: Vec<_> = placed
        .iter()
        .filter(|(_, n, _)| n.starts_with("spillway-e2e-local-"))
        .collect();
    let elastic: Vec<_> = placed
        .iter()
        .filter(|(_, n, _)| n.starts_with("spillway-e2e-elastic-"))
        .collect();
    assert_eq!(local.len(), 4, "local: {local:?}");
    assert_eq!(elastic.len(), 16, "elastic: {elastic:?}");
    assert_eq!(
        local.len() + elastic.len(),
        20,
        "pods elsewhere: {placed:?}"
    );
    assert!(local.iter().all(|(_, _, u)| u == "local"), "{local:?}");
    assert!(
        elastic.iter().all(|(_, _, u)| u == "elastic"),
        "{elastic:?}"
    );
}

const SCALER_NAMESPACE: &str = "spillway-e2e-scaler";

fn gpu_autoscalers(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("scheduling.spillway.io", "v1alpha1", "GpuAutoscaler");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "gpuautoscalers");
    Api::namespaced_with(client.clone(), SCALER_NAMESPACE, &ar)
}

/// `(status, reason)` of a GpuAutoscaler's condition.
async fn scaler_condition(
    client: &kube::Client,
    name: &str,
    type_: &str,
) -> anyhow::Result<(String, String)> {
    let obj = gpu_autoscalers(client).get(name).await?;
    let c = obj.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .ok_or_else(|| {
            anyhow::anyhow!("{name}: no {type_} condition yet: {}", obj.data["status"])
        })?;
    Ok((
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// The replica scaler in the cluster: a GpuAutoscaler on a PromQL constant
/// (30 against an average of 10 per replica) takes a one-replica Deployment
/// to 3 through `/scale`; one aimed at a ConfigMap reports FailedGetScale.
/// Needs `SPILLWAY_E2E_PROMETHEUS_URL`: a Prometheus that Spillway's pod
/// can reach (any will do; the query is a constant).
#[tokio::test]
async fn gpu_autoscaler_scales_a_deployment_through_its_scale_subresource() {
    let (Ok(path), Ok(prometheus)) = (
        std::env::var("SPILLWAY_E2E_KUBECONFIG"),
        std::env::var("SPILLWAY_E2E_PROMETHEUS_URL"),
    ) else {
        eprintln!(
            "skipped: set SPILLWAY_E2E_KUBECONFIG (a cluster running Spillway) and \
             SPILLWAY_E2E_PROMETHEUS_URL (a Prometheus reachable from Spillway's pod) to run the scaler's real-cluster test"
        );
        return;
    };
    let client = client(&path).await.expect("kubeconfig");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .delete(SCALER_NAMESPACE, &DeleteParams::default())
        .await;
    let run = async {
        eventually(60, || async {
            create_namespace(&client, SCALER_NAMESPACE)
                .await
                .map_err(|e| anyhow::anyhow!("namespace: {e}"))
        })
        .await?;
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(client.clone(), SCALER_NAMESPACE);
        deployments
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "scaled"},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "scaled"}},
                             "template": {"metadata": {"labels": {"app": "scaled"}},
                                          "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}
                }))?,
            )
            .await?;
        let scalers = gpu_autoscalers(&client);
        for (name, kind, target) in [
            ("constant", "Deployment", "scaled"),
            ("no-scale", "ConfigMap", "kube-root-ca.crt"),
        ] {
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "scheduling.spillway.io/v1alpha1", "kind": "GpuAutoscaler",
                "metadata": {"name": name, "namespace": SCALER_NAMESPACE},
                "spec": {
                    "scaleTargetRef": {"apiVersion": if kind == "Deployment" { "apps/v1" } else { "v1" }, "kind": kind, "name": target},
                    "minReplicas": 1, "maxReplicas": 5,
                    "metrics": [{"type": "Query", "query": {"promql": "vector(30)", "averageValue": 10}}],
                    "prometheus": {"url": prometheus},
                }
            }))?;
            scalers.create(&PostParams::default(), &obj).await?;
        }
        eventually(90, || async {
            let d = deployments.get("scaled").await?;
            let r = d.spec.and_then(|s| s.replicas).unwrap_or_default();
            anyhow::ensure!(r == 3, "Deployment scaled has {r} replicas, want 3");
            let c = scaler_condition(&client, "constant", "AbleToScale").await?;
            anyhow::ensure!(c.0 == "True", "constant AbleToScale {c:?}");
            Ok(())
        })
        .await?;
        eventually(60, || async {
            let c = scaler_condition(&client, "no-scale", "AbleToScale").await?;
            anyhow::ensure!(
                c == ("False".to_owned(), "FailedGetScale".to_owned()),
                "no-scale AbleToScale {c:?}"
            );
            Ok(())
        })
        .await?;
        anyhow::Ok(())
    };
    let result = run.await;
    let _ = namespaces
        .delete(SCALER_NAMESPACE, &DeleteParams::default())
        .await;
    result.expect("scaler e2e run");
}
