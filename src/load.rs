//! A synthetic cluster for the benchmarks and the `spillway-load` binary:
//! GPU nodes in two pools (data-center `dc`, cloud `cloud`), pods shaped
//! like a real cluster's (labels, owner annotations, two containers), and
//! one ResourcePolicy over the pools. Objects are Kubernetes objects,
//! converted by the same feed the watches use, so what is measured is what
//! runs in a cluster.

pub mod cluster;
pub mod expander;
pub mod scaler;

use k8s_openapi::api::core::v1 as k8s;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use crate::decision::time::Time;
use crate::extender::backend::Index;
use crate::index::feed::{self, Group, Relist};

/// The namespace of the governed workload.
pub const NAMESPACE: &str = "llm";

/// Name of node `i`, in the style of a cloud provider's.
#[must_use]
pub fn node_name(i: usize) -> String {
    format!("gpu-{}-{i:05}.compute.internal", pool(i))
}

/// Half the nodes are data-center nodes, half cloud nodes.
#[must_use]
pub fn pool(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "dc" } else { "cloud" }
}

/// Node `i` as the API server returns it (labels, allocatable, conditions).
#[must_use]
pub fn node(i: usize) -> k8s::Node {
    let name = node_name(i);
    let v = json!({
        "metadata": {
            "name": name,
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-01T00:00:00Z",
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "p4d.24xlarge",
                "topology.kubernetes.io/region": "us-west-2",
                "topology.kubernetes.io/zone": format!("us-west-2{}", ["a", "b", "c"][i % 3]),
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
                "spillway.io/pool": pool(i),
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {"providerID": format!("aws:///us-west-2a/i-{i:017x}")},
        "status": {
            "capacity": {"cpu": "96", "memory": "1152Gi", "nvidia.com/gpu": "8", "pods": "110", "ephemeral-storage": "7500Gi"},
            "allocatable": {"cpu": "95690m", "memory": "1130Gi", "nvidia.com/gpu": "8", "pods": "110", "ephemeral-storage": "7000Gi"},
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                 "lastHeartbeatTime": "2026-11-22T00:00:00Z", "lastTransitionTime": "2026-11-01T00:00:00Z"},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available",
                 "lastHeartbeatTime": "2026-11-22T00:00:00Z", "lastTransitionTime": "2026-11-01T00:00:00Z"},
            ],
            "addresses": [{"type": "InternalIP", "address": format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256)},
                          {"type": "Hostname", "address": name}],
            "images": [
                {"names": ["docker.io/vllm/vllm-openai@sha256:4f1c8e1b2a9d0c7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e", "docker.io/vllm/vllm-openai:v0.11.0"], "sizeBytes": 9_876_543_210_u64},
                {"names": ["nvcr.io/nvidia/k8s-device-plugin@sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9", "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"], "sizeBytes": 123_456_789},
                {"names": ["nvcr.io/nvidia/k8s/dcgm-exporter@sha256:1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a", "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3-4.1.1-ubuntu22.04"], "sizeBytes": 456_789_012},
                {"names": ["registry.k8s.io/kube-proxy@sha256:2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b", "registry.k8s.io/kube-proxy:v1.33.5"], "sizeBytes": 31_234_567},
                {"names": ["docker.io/calico/node@sha256:3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c", "docker.io/calico/node:v3.30.2"], "sizeBytes": 151_234_567},
                {"names": ["registry.k8s.io/pause@sha256:4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d", "registry.k8s.io/pause:3.10"], "sizeBytes": 320_368},
            ],
            "nodeInfo": {"kubeletVersion": "v1.33.5", "containerRuntimeVersion": "containerd://1.7.27",
                         "kernelVersion": "6.1.0", "osImage": "Amazon Linux 2023", "architecture": "amd64",
                         "operatingSystem": "linux", "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""},
        }
    });
    serde_json::from_value(v).unwrap_or_default()
}

/// Pod `j` of node `i`: every other pod is a governed LLM replica holding
/// one GPU; the rest are small CPU pods of other teams.
#[must_use]
pub fn pod(i: usize, j: usize) -> k8s::Pod {
    let llm = j.is_multiple_of(2);
    let (namespace, app) = if llm {
        (NAMESPACE.to_owned(), "qwen-chat".to_owned())
    } else {
        (format!("team-{}", j % 7), format!("svc-{}", j % 13))
    };
    let hash = format!("{:010x}", (i * 31 + j) % 1_000_003);
    let gpu = if llm { "1" } else { "0" };
    let v = json!({
        "metadata": {
            "name": format!("{app}-{hash}-{i:05}{j:02}"),
            "namespace": namespace,
            "uid": format!("11111111-0000-4000-8000-{:06}{j:06}", i),
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-20T00:00:00Z",
            "generateName": format!("{app}-{hash}-"),
            "labels": {
                "app": app,
                "app.kubernetes.io/name": app,
                "pod-template-hash": hash,
                "spillway.io/unit": pool(i),
            },
            "annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-11-20T00:00:00Z",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "8000",
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-{hash}"),
                                 "uid": "22222222-0000-4000-8000-000000000000", "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {
            "nodeName": node_name(i),
            "schedulerName": "spillway-scheduler",
            "priority": 0,
            "containers": [
                {"name": "server", "image": "vllm/vllm-openai:v0.11.0",
                 "args": ["--model=Qwen/Qwen2.5-7B-Instruct", "--port=8000"],
                 "resources": {"requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": gpu},
                               "limits": {"memory": "32Gi", "nvidia.com/gpu": gpu}}},
                {"name": "metrics", "image": "example/exporter:1.0",
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
            ],
        },
        "status": {"phase": "Running", "podIP": "10.1.2.3", "qosClass": "Burstable",
                   "startTime": "2026-11-20T00:00:05Z"}
    });
    serde_json::from_value(v).unwrap_or_default()
}

/// The ResourcePolicy of the synthetic cluster: the data-center pool first
/// (a cap high enough never to bind), the cloud pool second.
#[must_use]
pub fn policy() -> kube::core::DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "scheduling.spillway.io/v1alpha1",
        "kind": "ResourcePolicy",
        "metadata": {"name": "qwen-chat", "namespace": NAMESPACE},
        "spec": {
            "selector": {"app": "qwen-chat"},
            "units": [
                {"name": "dc", "resource": "idc", "nodeSelector": {"spillway.io/pool": "dc"}, "max": 1_000_000,
                 "podLabels": {"spillway.io/unit": "dc"}},
                {"name": "cloud", "resource": "elastic", "nodeSelector": {"spillway.io/pool": "cloud"},
                 "podLabels": {"spillway.io/unit": "cloud"}}
            ]
        }
    }))
    .unwrap_or_else(|e| unreachable!("the synthetic policy is valid JSON: {e}"))
}

/// Feeds `nodes` nodes with `pods_per_node` pods each, and the policy,
/// through the watch feed into `index` (objects are built one at a time
/// and dropped, as a watch delivers them).
pub fn fill(index: &mut Index, nodes: usize, pods_per_node: usize) {
    let now = Time::from_secs(1_800_000_000);
    let mut relist = Relist::default();
    for i in 0..nodes {
        let _ = feed::node_event(index, &mut relist, Event::Apply(node(i)));
        for j in 0..pods_per_node {
            let _ = feed::pod_event(index, &mut relist, Event::Apply(pod(i, j)), now);
        }
    }
    let _ = feed::policy_event(index, &mut relist, Group::Spillway, Event::Apply(policy()));
}

/// A pending replica of the governed workload, as the scheduler embeds it.
#[must_use]
pub fn pending_pod() -> Value {
    json!({
        "metadata": {"name": "qwen-chat-7d9f-new", "namespace": NAMESPACE, "uid": "33333333-0000-4000-8000-000000000000",
                     "labels": {"app": "qwen-chat", "pod-template-hash": "7d9f"},
                     "creationTimestamp": "2026-11-22T00:00:00Z"},
        "spec": {"schedulerName": "spillway-scheduler",
                 "containers": [{"name": "server", "image": "vllm/vllm-openai:v0.11.0",
                                 "resources": {"requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"},
                                               "limits": {"nvidia.com/gpu": "1"}}}]},
        "status": {"phase": "Pending"}
    })
}

/// A filter/prioritize request over `nodes` nodes: names only
/// (`nodeCacheCapable`) or the full NodeList.
#[must_use]
pub fn request(nodes: usize, full: bool) -> Vec<u8> {
    let body = if full {
        let items: Vec<k8s::Node> = (0..nodes).map(node).collect();
        json!({"Pod": pending_pod(), "Nodes": {"metadata": {}, "items": items}, "NodeNames": null})
    } else {
        let names: Vec<String> = (0..nodes).map(node_name).collect();
        json!({"Pod": pending_pod(), "Nodes": null, "NodeNames": names})
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_cluster_is_converted_and_governed() {
        let mut ix = Index::default();
        fill(&mut ix, 10, 4);
        assert_eq!(ix.snapshot.node_count(), 10);
        assert_eq!(ix.snapshot.pod_count(), 40);
        let p = ix.snapshot.policies().next().unwrap();
        let dc = ix.snapshot.node(&node_name(0)).unwrap();
        assert_eq!(p.unit_of_node(dc), Some(0));
        assert!(request(3, true).len() > request(3, false).len());
    }
}
