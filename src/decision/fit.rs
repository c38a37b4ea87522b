//! Resource fit: which nodes could hold a pod, for drivers that have no
//! kube-scheduler in front of them (`spillway explain`, the simulator).
//!
//! Models what matters for GPU pools — cordons and requested resources
//! against `allocatable − allocated` — and nothing else: taints, affinity and
//! pod node selectors are kube-scheduler's business in a real cluster.

use std::collections::BTreeMap;

use super::quantity::Resources;
use super::quantity::format_milli;
use super::snapshot::{Node, Pod, Snapshot};

/// Why a node cannot hold a pod.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    /// The node is not in the snapshot.
    #[error("node unknown")]
    UnknownNode,
    /// The node is cordoned.
    #[error("node is cordoned (unschedulable)")]
    Cordoned,
    /// A requested resource is short.
    #[error("insufficient {resource}: {} free, {} requested", format_milli(*free), format_milli(*request))]
    Insufficient {
        /// The resource.
        resource: String,
        /// Free on the node, milli-units.
        free: i64,
        /// Requested by the pod, milli-units.
        request: i64,
    },
}

/// Checks whether `node` can hold `pod` now.
///
/// # Errors
/// The first reason it cannot.
pub fn fit(snapshot: &Snapshot, node: &str, pod: &Pod) -> Result<(), Unfit> {
    let n = snapshot.node(node).ok_or(Unfit::UnknownNode)?;
    fit_on(n, snapshot.allocated_ref(node), pod)
}

/// [`fit`] for a node and its allocation at hand.
fn fit_on(n: &Node, allocated: Option<&Resources>, pod: &Pod) -> Result<(), Unfit> {
    if n.unschedulable {
        return Err(Unfit::Cordoned);
    }
    for (resource, request) in pod.requests.iter() {
        let have = n.allocatable.get(resource) - allocated.map_or(0, |a| a.get(resource));
        if have < request {
            return Err(Unfit::Insufficient {
                resource: resource.to_owned(),
                free: have,
                request,
            });
        }
    }
    Ok(())
}

/// The names of the nodes that fit `pod`, in name order (what
/// kube-scheduler's resource filters would pass on to the extender).
#[must_use]
pub fn fitting_nodes<'s>(snapshot: &'s Snapshot, pod: &Pod) -> Vec<&'s str> {
    snapshot
        .nodes_allocated()
        .filter(|(n, a)| fit_on(n, *a, pod).is_ok())
        .map(|(n, _)| n.name.as_str())
        .collect()
}

/// Every node of the snapshot, split into those that fit `pod` (name order)
/// and those that do not, with reasons.
#[must_use]
pub fn feasible_nodes(snapshot: &Snapshot, pod: &Pod) -> (Vec<String>, BTreeMap<String, Unfit>) {
    let mut ok = Vec::new();
    let mut no = BTreeMap::new();
    for (n, allocated) in snapshot.nodes_allocated() {
        match fit_on(n, allocated, pod) {
            Ok(()) => ok.push(n.name.clone()),
            Err(e) => {
                no.insert(n.name.clone(), e);
            }
        }
    }
    (ok, no)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::testutil::*;

    #[test]
    fn fit_checks_cordons_and_free_resources() {
        let mut s = Snapshot::new();
        s.upsert_node(mk_node("a", &[], 8));
        let mut cordoned = mk_node("b", &[], 8);
        cordoned.unschedulable = true;
        s.upsert_node(cordoned);
        s.upsert_node(mk_node("c", &[], 8));
        s.upsert_pod(bound(mk_pod("x", &[], 6), "c"));
        let (ok, no) = feasible_nodes(&s, &mk_pod("p", &[], 4));
        assert_eq!(ok, ["a"]);
        assert_eq!(fitting_nodes(&s, &mk_pod("p", &[], 4)), ok);
        assert_eq!(no["b"], Unfit::Cordoned);
        assert_eq!(
            no["c"].to_string(),
            "insufficient nvidia.com/gpu: 2 free, 4 requested"
        );
    }

    proptest::proptest! {
        /// The ordered walk of nodes and allocations answers what a lookup
        /// per node does, also with pods bound to nodes the snapshot lacks
        /// (sorting before, between and after the known ones).
        #[test]
        fn the_ordered_walk_matches_a_lookup_per_node(
            nodes in proptest::collection::btree_set(0u8..12, 0..8),
            pods in proptest::collection::vec((0u8..12, 1i64..5), 0..16),
            cordon in 0u8..12,
            want in 1i64..6,
        ) {
            let mut s = Snapshot::new();
            for &n in &nodes {
                let mut node = mk_node(&format!("n{n:02}"), &[], 8);
                node.unschedulable = n == cordon;
                s.upsert_node(node);
            }
            for (i, &(n, gpus)) in pods.iter().enumerate() {
                s.upsert_pod(bound(mk_pod(&format!("p{i}"), &[], gpus), &format!("n{n:02}")));
            }
            let pod = mk_pod("new", &[], want);
            let naive: Vec<&str> = s
                .nodes()
                .filter(|n| fit(&s, &n.name, &pod).is_ok())
                .map(|n| n.name.as_str())
                .collect();
            proptest::prop_assert_eq!(fitting_nodes(&s, &pod), naive);
        }
    }
}
