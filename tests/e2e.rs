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
//! each carrying its unit's label. Everything it creates is deleted at the
//! end, pass or fail.
//!
//! ```sh
//! SPILLWAY_E2E_KUBECONFIG=~/.kube/config cargo test --test e2e -- --nocapture
//! ```

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

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

async fn create_workload(client: &kube::Client) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    let gvk = GroupVersionKind::gvk("scheduling.spillway.io", "v1alpha1", "ResourcePolicy");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "resourcepolicies");
    let policies: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &ar);
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "scheduling.spillway.io/v1alpha1",
        "kind": "ResourcePolicy",
        "metadata": {"name": "e2e", "namespace": NAMESPACE},
        "spec": {
            "selector": {"app": "e2e-llm"},
            "strategy": "required",
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
            "spec": {
                "schedulerName": "spillway-scheduler",
                "containers": [{"name": "server", "image": "registry.k8s.io/pause:3.10",
                                "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                // The fake nodes have no kubelet; the node controller may taint them.
                "tolerations": [{"operator": "Exists"}],
            }
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    Ok(())
}

async fn cleanup(client: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, _) in node_names() {
        let _ = nodes.delete(&name, &DeleteParams::default()).await;
    }
}

/// Waits until every pod has a node (or 3 minutes pass); returns
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
        if placed.len() == 20 {
            return Ok(placed);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let list = pods.list(&ListParams::default()).await?;
    anyhow::bail!(
        "only {} of 20 pods were bound within 3 minutes",
        list.items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count()
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
        placements(&client).await
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
