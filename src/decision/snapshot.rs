//! Snapshot types: the small, plain view of nodes, pods and policies the
//! core decides on.
//!
//! ```text
//!  watch events / simulator world ──► Snapshot::{upsert,remove}_* ──► decisions
//! ```
//!
//! A [`Snapshot`] is updated incrementally (one call per watch event or
//! simulated change) and keeps the secondary indexes decisions need: pods by
//! namespace and GPUs allocated per node. It may lag the API server by a
//! watch event; the reservation ledger covers the gap between Filter and the
//! Binding becoming visible. Iteration is in key order so the simulator is
//! deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::names::NameTable;
use super::policy::{Policy, PolicyKey};
use super::quantity::{GPU, Resources};
use super::time::Time;
use super::usage::{Counts, contribution};

/// Labels or annotations.
pub type Labels = BTreeMap<String, String>;

/// A node as the core needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// Node labels (units select nodes by these).
    pub labels: Labels,
    /// `status.allocatable`.
    pub allocatable: Resources,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
}

/// A pod's lifecycle phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PodPhase {
    /// Accepted, not yet running (includes unscheduled pods).
    #[default]
    Pending,
    /// Bound and at least one container running.
    Running,
    /// All containers exited successfully; holds no resources.
    Succeeded,
    /// All containers exited, some failed; holds no resources.
    Failed,
    /// State unknown (node unreachable); still holds resources.
    Unknown,
}

/// A pod as the core needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    /// `metadata.uid`, the key everywhere.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels (policy selectors and `matchLabelKeys` read these).
    pub labels: Labels,
    /// Annotations (the wait clock is persisted in one).
    pub annotations: Labels,
    /// Summed effective requests (max of init containers and sum of app
    /// containers, plus overhead), in milli-units.
    pub requests: Resources,
    /// `spec.nodeName` once bound.
    pub node: Option<String>,
    /// `status.phase`.
    pub phase: PodPhase,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// `metadata.creationTimestamp`.
    pub created: Time,
    /// `metadata.deletionTimestamp`, set while terminating.
    pub deleting: Option<Time>,
    /// `spec.preemptionPolicy: Never`: the pod may not preempt others.
    pub never_preempts: bool,
    /// A controller owns it (an `ownerReference` with `controller: true`):
    /// evicted, it is replaced.
    pub controlled: bool,
}

impl Pod {
    /// True when the pod has finished and holds no resources.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }

    /// True while the pod is being deleted.
    #[must_use]
    pub fn is_terminating(&self) -> bool {
        self.deleting.is_some()
    }

    /// The node whose resources the pod holds, if any.
    #[must_use]
    pub fn holding_node(&self) -> Option<&str> {
        if self.is_terminal() {
            None
        } else {
            self.node.as_deref()
        }
    }
}

/// Nodes, pods and policies, with the indexes decisions need.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    nodes: BTreeMap<String, Node>,
    /// Keyed by UID. The UID is one shared allocation for this map, both
    /// indexes below and the counts (at 50,000 pods a copy each would
    /// cost megabytes).
    pods: BTreeMap<Arc<str>, Pod>,
    pods_by_namespace: BTreeMap<String, BTreeSet<Arc<str>>>,
    pods_by_node: BTreeMap<String, BTreeSet<Arc<str>>>,
    // Keyed by node name, independent of `nodes`: a pod may be seen bound to a
    // node before the node itself is seen.
    allocated: BTreeMap<String, Resources>,
    policies: BTreeMap<PolicyKey, Policy>,
    /// Unit counts of bound pods, recomputed for exactly the pods a change
    /// can affect (the pod; the pods on a node; the pods of a namespace).
    counts: Counts,
    /// The unit of every node under every policy, kept as nodes and
    /// policies change, so a Filter over thousands of nodes does one compact
    /// table lookup per node instead of a name search and a label match.
    units: UnitCache,
}

/// Node → unit lookups under one policy ([`Snapshot::units_of`]).
#[derive(Clone, Copy, Debug)]
pub struct UnitLookup<'a> {
    snapshot: &'a Snapshot,
    policy: &'a Policy,
    slot: Option<usize>,
}

impl UnitLookup<'_> {
    /// The unit of node `name`: `None` for a node the snapshot does not
    /// hold, `Some(None)` for a node outside every unit.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<Option<usize>> {
        match self.slot {
            Some(slot) => {
                let code = self.snapshot.units.code(name, slot)?;
                Some((code != OUTSIDE).then_some(usize::from(code)))
            }
            None => self
                .snapshot
                .nodes
                .get(name)
                .map(|n| self.policy.unit_of_node(n)),
        }
    }
}

/// A node's unit as [`UnitLookup::get_many`] reports it, in four bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeUnit(u32);

impl NodeUnit {
    const UNKNOWN: u32 = u32::MAX;
    const OUTSIDE: u32 = u32::MAX - 1;

    /// A node the snapshot holds, in `unit` (`None`: outside every unit).
    fn known(unit: Option<usize>) -> Self {
        NodeUnit(unit.map_or(Self::OUTSIDE, |u| {
            u32::try_from(u).unwrap_or(Self::OUTSIDE).min(Self::OUTSIDE)
        }))
    }

    /// As [`UnitLookup::get`] answers: `None` for a node the snapshot does
    /// not hold, `Some(None)` for one outside every unit.
    #[must_use]
    pub fn get(self) -> Option<Option<usize>> {
        match self.0 {
            Self::UNKNOWN => None,
            Self::OUTSIDE => Some(None),
            u => Some(Some(u as usize)),
        }
    }
}

impl UnitLookup<'_> {
    /// [`UnitLookup::get`] for each of `names`, in order; for the
    /// snapshot's own policies the name lookups go as one batch
    /// ([`NameTable::get_many`]).
    #[must_use]
    pub fn get_many(&self, names: &[&str]) -> Vec<NodeUnit> {
        match self.slot {
            Some(slot) => self.rows(names, |units, row| units.node_unit(row, slot)),
            None => names
                .iter()
                .map(|n| {
                    self.get(n)
                        .map_or(NodeUnit(NodeUnit::UNKNOWN), NodeUnit::known)
                })
                .collect(),
        }
    }

    /// [`UnitLookup::get_many`] with each node's GPUs, allocatable and
    /// allocated (zero for a node the snapshot does not hold), from the
    /// same row lookup; `None` for a policy that is not the snapshot's own.
    #[must_use]
    pub fn get_many_gpus(&self, names: &[&str]) -> Option<Vec<(NodeUnit, i64, i64)>> {
        let slot = self.slot?;
        Some(self.rows(names, |units, row| {
            let (cap, used) = row
                .and_then(|r| units.gpus.get(r as usize).copied())
                .unwrap_or_default();
            (units.node_unit(row, slot), cap, used)
        }))
    }

    /// `each` of the unit cache's row (`None`: not held) for every name, in
    /// order, looked up as one batch.
    fn rows<T>(&self, names: &[&str], each: impl Fn(&UnitCache, Option<u32>) -> T) -> Vec<T> {
        let units = &self.snapshot.units;
        let mut out = Vec::with_capacity(names.len());
        units
            .names
            .get_many(names, |row| out.push(each(units, row)));
        out
    }
}

/// Marks "outside every unit" in [`UnitCache`].
const OUTSIDE: u8 = u8::MAX;

#[derive(Clone, Debug, Default)]
struct UnitCache {
    /// Node name → row.
    names: NameTable,
    /// Unit code of row `r` under policy slot `s` at `r * width + s`
    /// ([`OUTSIDE`] for none).
    codes: Vec<u8>,
    width: usize,
    slots: BTreeMap<PolicyKey, usize>,
    free: Vec<usize>,
    /// GPUs of row `r`: (allocatable, allocated), kept with the node and its
    /// pods so that Prioritize reads both without a name search.
    gpus: Vec<(i64, i64)>,
}

fn unit_code(policy: &Policy, node: &Node) -> u8 {
    policy
        .unit_of_node(node)
        .and_then(|u| u8::try_from(u).ok())
        .unwrap_or(OUTSIDE)
}

impl UnitCache {
    /// The unit code of node `name` under `slot`: `None` for an unknown node.
    fn code(&self, name: &str, slot: usize) -> Option<u8> {
        let row = self.names.get(name)? as usize;
        Some(self.code_of_row(row, slot))
    }

    /// Row `row`'s unit under `slot` as [`UnitLookup::get_many`] reports it.
    fn node_unit(&self, row: Option<u32>, slot: usize) -> NodeUnit {
        NodeUnit(row.map_or(
            NodeUnit::UNKNOWN,
            |r| match self.code_of_row(r as usize, slot) {
                OUTSIDE => NodeUnit::OUTSIDE,
                code => u32::from(code),
            },
        ))
    }

    fn code_of_row(&self, row: usize, slot: usize) -> u8 {
        self.codes
            .get(row * self.width + slot)
            .copied()
            .unwrap_or(OUTSIDE)
    }

    fn row_of(&mut self, name: &str) -> usize {
        let row = self.names.insert(name) as usize;
        let need = (row + 1) * self.width;
        if self.codes.len() < need {
            self.codes.resize(need, OUTSIDE);
        }
        row
    }

    fn set_node(&mut self, node: &Node, policies: &BTreeMap<PolicyKey, Policy>) {
        let row = self.row_of(&node.name);
        let width = self.width;
        self.codes[row * width..(row + 1) * width].fill(OUTSIDE);
        for (key, &slot) in &self.slots {
            if let Some(p) = policies.get(key) {
                self.codes[row * width + slot] = unit_code(p, node);
            }
        }
    }

    fn remove_node(&mut self, name: &str) {
        self.names.remove(name);
    }

    fn set_policy(&mut self, policy: &Policy, nodes: &BTreeMap<String, Node>) {
        let slot = if let Some(&s) = self.slots.get(&policy.key) {
            s
        } else {
            let s = self
                .free
                .pop()
                .unwrap_or(self.slots.len() + self.free.len());
            self.slots.insert(policy.key.clone(), s);
            s
        };
        if slot >= self.width {
            // Re-lay the rows out with room for more policies.
            let width = (slot + 1).max(self.width * 2);
            let rows = self.names.rows();
            let mut codes = vec![OUTSIDE; rows * width];
            for r in 0..rows {
                for s in 0..self.width {
                    codes[r * width + s] = self
                        .codes
                        .get(r * self.width + s)
                        .copied()
                        .unwrap_or(OUTSIDE);
                }
            }
            self.codes = codes;
            self.width = width;
        }
        for (name, node) in nodes {
            let row = self.row_of(name);
            self.codes[row * self.width + slot] = unit_code(policy, node);
        }
    }

    fn remove_policy(&mut self, key: &PolicyKey) {
        if let Some(slot) = self.slots.remove(key) {
            self.free.push(slot);
        }
    }
}

impl Snapshot {
    /// An empty snapshot.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a node.
    pub fn upsert_node(&mut self, node: Node) {
        let name = node.name.clone();
        let relabelled = self
            .nodes
            .get(&name)
            .is_none_or(|old| old.labels != node.labels);
        if relabelled {
            self.units.set_node(&node, &self.policies);
        }
        self.nodes.insert(name.clone(), node);
        self.sync_gpus(&name);
        if relabelled {
            self.recount_node(&name);
        }
    }

    /// Copies node `name`'s allocatable and allocated GPUs into its row of
    /// the unit cache (when it has one: only nodes the snapshot holds do).
    fn sync_gpus(&mut self, name: &str) {
        let Some(row) = self.units.names.get(name) else {
            return;
        };
        let row = row as usize;
        let cap = self.nodes.get(name).map_or(0, |n| n.allocatable.get(GPU));
        let used = self.allocated.get(name).map_or(0, |a| a.get(GPU));
        if self.units.gpus.len() <= row {
            self.units.gpus.resize(row + 1, (0, 0));
        }
        self.units.gpus[row] = (cap, used);
    }

    /// Removes a node (pods bound to it stay until their own deletion).
    pub fn remove_node(&mut self, name: &str) -> Option<Node> {
        let node = self.nodes.remove(name);
        self.units.remove_node(name);
        self.recount_node(name);
        node
    }

    /// The unit of node `name` under `policy`: `None` for a node the
    /// snapshot does not hold, `Some(None)` for a node outside every unit.
    /// Same answer as [`Policy::unit_of_node`]. For many nodes, take
    /// [`Snapshot::units_of`] once.
    #[must_use]
    pub fn unit_of(&self, policy: &Policy, name: &str) -> Option<Option<usize>> {
        self.units_of(policy).get(name)
    }

    /// Looks up nodes' units under `policy`: for the snapshot's own policies
    /// one hash lookup per node, else a label match.
    #[must_use]
    pub fn units_of<'a>(&'a self, policy: &'a Policy) -> UnitLookup<'a> {
        let own = self
            .policies
            .get(&policy.key)
            .is_some_and(|p| std::ptr::eq(p, policy));
        UnitLookup {
            snapshot: self,
            policy,
            slot: if own {
                self.units.slots.get(&policy.key).copied()
            } else {
                None
            },
        }
    }

    /// The incremental unit counts (read by [`super::usage::unit_usage`]).
    #[must_use]
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    fn recount(&mut self, uids: Vec<Arc<str>>) {
        for uid in uids {
            let c = self.pods.get(&uid).and_then(|p| contribution(self, p));
            self.counts.set(&uid, c);
        }
    }

    fn recount_node(&mut self, name: &str) {
        let uids = self
            .pods_by_node
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        self.recount(uids);
    }

    fn recount_namespace(&mut self, namespace: &str) {
        let uids = self
            .pods_by_namespace
            .get(namespace)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        self.recount(uids);
    }

    /// The node named `name`.
    #[must_use]
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// All nodes in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Number of nodes.
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Resources requested by the pods holding `node`.
    #[must_use]
    pub fn allocated(&self, node: &str) -> Resources {
        self.allocated.get(node).cloned().unwrap_or_default()
    }

    /// Resources requested by the pods holding `node`, without copying
    /// (`None` when nothing is allocated there).
    #[must_use]
    pub fn allocated_ref(&self, node: &str) -> Option<&Resources> {
        self.allocated.get(node)
    }

    /// Every node in name order with what is allocated on it: one ordered
    /// walk of both maps instead of a lookup per node.
    pub fn nodes_allocated(&self) -> impl Iterator<Item = (&Node, Option<&Resources>)> {
        let mut allocated = self.allocated.iter().peekable();
        self.nodes.iter().map(move |(name, node)| {
            while allocated.next_if(|(a, _)| *a < name).is_some() {}
            (node, allocated.next_if(|(a, _)| *a == name).map(|(_, r)| r))
        })
    }

    /// `allocatable − allocated` for `node`, or `None` for an unknown node.
    #[must_use]
    pub fn free(&self, node: &str) -> Option<Resources> {
        let n = self.nodes.get(node)?;
        let mut free = n.allocatable.clone();
        if let Some(a) = self.allocated.get(node) {
            free.sub(a);
        }
        Some(free)
    }

    /// Adds or replaces a pod, keeping per-node allocation exact.
    pub fn upsert_pod(&mut self, pod: Pod) {
        self.remove_pod(&pod.uid);
        let uid: Arc<str> = Arc::from(pod.uid.as_str());
        if let Some(node) = pod.holding_node() {
            self.allocated
                .entry(node.to_owned())
                .or_default()
                .add(&pod.requests);
            self.pods_by_node
                .entry(node.to_owned())
                .or_default()
                .insert(Arc::clone(&uid));
            self.sync_gpus(node);
        }
        self.pods_by_namespace
            .entry(pod.namespace.clone())
            .or_default()
            .insert(Arc::clone(&uid));
        self.pods.insert(Arc::clone(&uid), pod);
        self.recount(vec![uid]);
    }

    /// Sets `labels` and `annotations` on the pod with this UID (values
    /// set, nothing removed), in place: its node, namespace and requests
    /// stay, so only its count is redone (labels decide its policy and
    /// group). False for an unknown pod.
    pub fn merge_pod_metadata(&mut self, uid: &str, labels: &Labels, annotations: &Labels) -> bool {
        let Some((key, pod)) = self.pods.get_key_value(uid) else {
            return false;
        };
        let key = Arc::clone(key);
        let labels_change = labels.iter().any(|(k, v)| pod.labels.get(k) != Some(v));
        if let Some(pod) = self.pods.get_mut(uid) {
            pod.labels
                .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            pod.annotations
                .extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if labels_change {
            self.recount(vec![key]);
        }
        true
    }

    /// Removes a pod by UID.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Pod> {
        let pod = self.pods.remove(uid)?;
        self.counts.clear(uid);
        if let Some(node) = pod.holding_node()
            && let Some(a) = self.allocated.get_mut(node)
        {
            a.sub(&pod.requests);
            if a.is_empty() {
                self.allocated.remove(node);
            }
            self.sync_gpus(node);
        }
        if let Some(node) = pod.holding_node()
            && let Some(set) = self.pods_by_node.get_mut(node)
        {
            set.remove(uid);
            if set.is_empty() {
                self.pods_by_node.remove(node);
            }
        }
        if let Some(set) = self.pods_by_namespace.get_mut(&pod.namespace) {
            set.remove(uid);
            if set.is_empty() {
                self.pods_by_namespace.remove(&pod.namespace);
            }
        }
        Some(pod)
    }

    /// The pod with this UID.
    #[must_use]
    pub fn pod(&self, uid: &str) -> Option<&Pod> {
        self.pods.get(uid)
    }

    /// The pod with this namespace and name (linear in the namespace).
    #[must_use]
    pub fn pod_by_name(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods_in(namespace).find(|p| p.name == name)
    }

    /// All pods in UID order.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// Number of pods.
    #[must_use]
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Pods of one namespace in UID order. A namespace that holds a large
    /// share of the pods is read in one walk of all of them (a string
    /// compare each) rather than by a UID search per pod.
    pub fn pods_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Pod> + 'a {
        let uids = self.pods_by_namespace.get(namespace);
        let walk = uids.is_some_and(|u| u.len() * 4 >= self.pods.len());
        let (searched, walked) = if walk {
            (None, Some(namespace.to_owned()))
        } else {
            (uids, None)
        };
        let searched = searched
            .into_iter()
            .flatten()
            .filter_map(|uid| self.pods.get(uid));
        let walked = walked
            .into_iter()
            .flat_map(|namespace| self.pods.values().filter(move |p| p.namespace == namespace));
        searched.chain(walked)
    }

    /// Number of pods in one namespace.
    #[must_use]
    pub fn pod_count_in(&self, namespace: &str) -> usize {
        self.pods_by_namespace
            .get(namespace)
            .map_or(0, BTreeSet::len)
    }

    /// Pods holding resources on `node`, in UID order.
    pub fn pods_on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.pods.get(uid))
    }

    /// Adds or replaces a policy (recounting the pods of its namespace:
    /// governance and units may have changed).
    pub fn upsert_policy(&mut self, policy: Policy) {
        let namespace = policy.key.namespace.clone();
        self.units.set_policy(&policy, &self.nodes);
        self.policies.insert(policy.key.clone(), policy);
        self.recount_namespace(&namespace);
    }

    /// Removes a policy.
    pub fn remove_policy(&mut self, key: &PolicyKey) -> Option<Policy> {
        let p = self.policies.remove(key);
        self.units.remove_policy(key);
        self.recount_namespace(&key.namespace);
        p
    }

    /// The policy with this key.
    #[must_use]
    pub fn policy(&self, key: &PolicyKey) -> Option<&Policy> {
        self.policies.get(key)
    }

    /// All policies in key order.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    /// Policies of one namespace in name order.
    pub fn policies_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Policy> + 'a {
        let start = PolicyKey {
            namespace: namespace.to_owned(),
            name: String::new(),
        };
        let namespace = namespace.to_owned();
        self.policies
            .range(start..)
            .take_while(move |(k, _)| k.namespace == namespace)
            .map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::quantity::GPU;
    use crate::decision::testutil::{bound, mk_node, mk_pod, unit};

    #[test]
    fn allocation_follows_pod_updates_and_phases() {
        let mut s = Snapshot::new();
        s.upsert_node(mk_node("n1", &[], 8));
        s.upsert_pod(bound(mk_pod("a", &[], 2), "n1"));
        s.upsert_pod(bound(mk_pod("b", &[], 3), "n1"));
        assert_eq!(s.allocated("n1").get(GPU), 5000);
        assert_eq!(s.free("n1").unwrap().get(GPU), 3000);

        let mut done = s.pod("a").unwrap().clone();
        done.phase = PodPhase::Succeeded;
        s.upsert_pod(done);
        assert_eq!(
            s.allocated("n1").get(GPU),
            3000,
            "finished pods hold nothing"
        );

        s.remove_pod("b");
        assert!(s.allocated("n1").is_empty());
        assert_eq!(s.pods_in("ns").count(), 1);
    }

    #[test]
    fn pods_in_lists_a_namespace_in_uid_order_whether_searched_or_walked() {
        // "big" holds most pods (walked), "small" and "one" few (searched).
        let mut s = Snapshot::new();
        for (i, ns) in ["big"; 30]
            .into_iter()
            .chain(["small"; 3])
            .chain(["one"])
            .enumerate()
        {
            // UIDs out of insertion order.
            let mut p = mk_pod(&format!("p{:02}", (i * 7) % 34), &[], 1);
            p.namespace = ns.to_owned();
            s.upsert_pod(p);
        }
        for ns in ["big", "small", "one", "none"] {
            let got: Vec<&str> = s.pods_in(ns).map(|p| p.uid.as_str()).collect();
            let want: Vec<&str> = s
                .pods()
                .filter(|p| p.namespace == ns)
                .map(|p| p.uid.as_str())
                .collect();
            assert_eq!(got, want, "{ns}");
            assert_eq!(s.pod_count_in(ns), want.len(), "{ns}");
        }
        assert_eq!(s.pods_in("big").count(), 30);
    }

    #[test]
    fn allocation_is_kept_for_nodes_seen_after_their_pods() {
        let mut s = Snapshot::new();
        s.upsert_pod(bound(mk_pod("a", &[], 2), "late"));
        s.upsert_node(mk_node("late", &[], 8));
        assert_eq!(s.free("late").unwrap().get(GPU), 6000);
    }

    #[test]
    fn policies_in_lists_one_namespace_only() {
        let mut s = Snapshot::new();
        for (ns, name) in [("a", "x"), ("b", "y"), ("b", "z"), ("c", "w")] {
            s.upsert_policy(crate::decision::policy::Policy::new(
                ns,
                name,
                vec![unit("u", &[("k", "v")], None)],
            ));
        }
        let names: Vec<_> = s.policies_in("b").map(|p| p.key.name.as_str()).collect();
        assert_eq!(names, ["y", "z"]);
    }
}
