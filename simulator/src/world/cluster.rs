//! The cluster: nodes and pools, replica pods from creation to deletion
//! (placement through the core's Filter, scores and Bind check), and the
//! simulated cluster-autoscaler (the core's expander choosing the node group
//! to grow, headroom, scale-down of empty cloud nodes).

use super::{
    BTreeMap, BTreeSet, BinaryHeap, Ev, ExpansionOption, ExpansionRecord, FILTER_TTL,
    FilterOutcome, FilterRequest, GPU, GroupKey, Ledger, Node, NodeGroup, NodeRt, NodeScaleUp, Pod,
    PodPhase, PolicyKey, PoolKind, RState, Replica, Resources, Reverse, RngExt, Snapshot, Time,
    UnitUsage, VecDeque, World, admit_bind, best_options, core_time, filter_counted, fitting_nodes,
    headroom_ask, id, node_price_micros, scores, secs, unit_usage,
};

impl World<'_> {
    // ---- nodes --------------------------------------------------------------

    pub(super) fn add_node(&mut self, pool: usize) -> usize {
        self.version += 1;
        let p = &mut self.pools[pool];
        p.counter += 1;
        let name = format!("{}-{}", self.sc.scenario.pools[pool].name, p.counter);
        let id = self.nodes.len();
        self.nodes.push(NodeRt {
            pool,
            name,
            ready: false,
            created: self.now,
            removed: None,
            pods: 0,
            empty_since: self.now,
        });
        p.live.push(id);
        p.peak = p.peak.max(u32::try_from(p.live.len()).unwrap_or(u32::MAX));
        id
    }

    pub(super) fn node_ready(&mut self, n: usize) {
        let spec = &self.sc.scenario.pools[self.nodes[n].pool];
        let node = &mut self.nodes[n];
        node.ready = true;
        node.empty_since = self.now;
        self.node_ids.insert(node.name.clone(), n);
        self.version += 1;
        self.snapshot.upsert_node(Node {
            name: node.name.clone(),
            labels: spec.labels.clone(),
            allocatable: Resources::new().with(GPU, i64::from(spec.gpus_per_node)),
            unschedulable: false,
        });
    }

    pub(super) fn remove_node(&mut self, n: usize) {
        let pool = self.nodes[n].pool;
        self.nodes[n].removed = Some(self.now);
        self.snapshot.remove_node(&self.nodes[n].name);
        self.node_ids.remove(&self.nodes[n].name);
        self.version += 1;
        let p = &mut self.pools[pool];
        p.live.retain(|&x| x != n);
        p.removed += 1;
    }

    // ---- replicas -----------------------------------------------------------

    pub(super) fn create_replica(&mut self, si: usize) -> usize {
        let spec = &self.sc.services[si].spec;
        let svc = &mut self.svcs[si];
        let uid = format!("{}-{}", spec.name, svc.counter);
        svc.counter += 1;
        let r = self.replicas.len();
        self.snapshot.upsert_pod(Pod {
            uid: uid.clone(),
            namespace: spec.namespace.clone(),
            name: uid.clone(),
            labels: spec.labels.clone(),
            annotations: BTreeMap::new(),
            requests: Resources::new().with(GPU, i64::from(spec.gpus_per_replica)),
            node: None,
            phase: PodPhase::Pending,
            priority: 0,
            created: core_time(self.now),
            deleting: None,
            never_preempts: false,
            // The service's Deployment replaces a replica that goes.
            controlled: true,
        });
        self.replicas.push(Replica {
            svc: si,
            uid,
            state: RState::Pending,
            node: None,
            created: self.now,
            bound_at: 0,
            gone_at: None,
            wait_since: None,
            queue: VecDeque::new(),
            prefill: None,
            prefill_step: 0.0,
            ctx_base: 0.0,
            step: 1.0,
            decoding: BinaryHeap::new(),
            v: 0.0,
            v_at: self.now,
            busy_from: None,
            busy_acc: 0,
            scrapes: VecDeque::new(),
            slot: None,
        });
        self.pods_created += 1;
        self.pending.insert(r);
        self.live[si].insert(r);
        self.version += 1;
        let live = self.live_replicas(si);
        let svc = &mut self.svcs[si];
        svc.peak = svc.peak.max(live);
        r
    }

    pub(super) fn live_replicas(&self, si: usize) -> u32 {
        let n = self.live[si]
            .iter()
            .filter(|&&r| self.replicas[r].state != RState::Draining)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Places pending pods through the core: feasible nodes by resource fit,
    /// Filter for the policy's unit order, the best score, a Bind check.
    ///
    /// Pods of one service are interchangeable: once one finds no node for a
    /// reason that does not depend on its own wait clock, the service's other
    /// pending pods are not tried again in this pass (same answer).
    pub(super) fn schedule_pending(&mut self) {
        self.need_schedule = false;
        if self.pending.is_empty() {
            return;
        }
        let now_core = core_time(self.now);
        let pending: Vec<usize> = self.pending.iter().copied().collect();
        let mut stuck = BTreeSet::new();
        let mut cache = UsageCache::new();
        for r in pending {
            if stuck.contains(&self.replicas[r].svc) {
                continue;
            }
            let Some(pod) = self.snapshot.pod(&self.replicas[r].uid).cloned() else {
                continue;
            };
            let out = place_filter(
                &self.snapshot,
                &self.ledger,
                &mut cache,
                &pod,
                self.replicas[r].wait_since,
                now_core,
            );
            if let Some(since) = out.wait_since() {
                self.replicas[r].wait_since.get_or_insert(since);
            }
            if out.eligible.is_empty() {
                if out.wait_since().is_none() {
                    stuck.insert(self.replicas[r].svc);
                }
                continue;
            }
            let ranked = scores(&self.snapshot, &pod, &out.eligible);
            let Some(best) = ranked
                .iter()
                .max_by(|a, b| a.score.cmp(&b.score).then_with(|| b.node.cmp(a.node)))
            else {
                continue;
            };
            // As the extender does: Filter reserves the slot, Bind checks it,
            // the (here immediate) watch of the binding releases it.
            if let Some(res) = out.reservation(&pod, now_core.after(FILTER_TTL)) {
                self.ledger.reserve(&pod.uid, res);
            }
            let admitted = admit_bind(&self.snapshot, &self.ledger, &pod, best.node, now_core);
            let node = self.node_ids.get(best.node).copied();
            match (admitted, node) {
                (Ok(()), Some(n)) => {
                    note_placed(&mut cache, &out, &pod);
                    self.bind(r, n, pod);
                }
                _ => {
                    self.ledger.release(&pod.uid);
                }
            }
        }
    }

    pub(super) fn bind(&mut self, r: usize, n: usize, mut pod: Pod) {
        pod.node = Some(self.nodes[n].name.clone());
        pod.phase = PodPhase::Running;
        self.ledger.release(&pod.uid);
        self.snapshot.upsert_pod(pod);
        self.nodes[n].pods += 1;
        let spec = &self.sc.services[self.replicas[r].svc].spec;
        let startup = spec.startup.image_pull.us()
            + if spec.startup.model_cache {
                spec.startup.cached_model_load.us()
            } else {
                spec.startup.model_load.us()
            };
        let rep = &mut self.replicas[r];
        rep.node = Some(n);
        rep.state = RState::Starting;
        self.pending.remove(&r);
        self.version += 1;
        rep.bound_at = self.now;
        rep.busy_from = None;
        rep.busy_acc = 0;
        self.pending_time.record(self.now - rep.created);
        self.push(self.now + startup, Ev::ReplicaReady { r: id(r) });
    }

    pub(super) fn replica_ready(&mut self, r: usize) {
        let si = self.replicas[r].svc;
        self.replicas[r].state = RState::Ready;
        let load = self.replicas[r].outstanding() as usize;
        self.replicas[r].slot = Some(self.svcs[si].router.insert(id(r), load));
        // Requests held at the gateway while no replica was ready.
        while let Some(q) = self.svcs[si].held.pop_front() {
            if !self.dispatch(si, q) {
                self.svcs[si].held.push_front(q);
                break;
            }
        }
    }

    pub(super) fn remove_from_ready(&mut self, r: usize) {
        let si = self.replicas[r].svc;
        if let Some(slot) = self.replicas[r].slot.take()
            && let Some(moved) = self.svcs[si].router.remove(slot)
        {
            self.replicas[moved as usize].slot = Some(slot);
        }
    }

    /// Moves a ready replica to the router bucket of its current load.
    pub(super) fn reslot(&mut self, r: usize) {
        let si = self.replicas[r].svc;
        let Some(slot) = self.replicas[r].slot else {
            return;
        };
        let load = self.replicas[r].outstanding() as usize;
        if load == slot.load {
            return;
        }
        let router = &mut self.svcs[si].router;
        if let Some(moved) = router.remove(slot) {
            self.replicas[moved as usize].slot = Some(slot);
        }
        self.replicas[r].slot = Some(self.svcs[si].router.insert(id(r), load));
    }

    pub(super) fn delete_replica(&mut self, r: usize) {
        match self.replicas[r].state {
            RState::Pending | RState::Starting => self.replica_gone(r),
            RState::Ready => {
                self.remove_from_ready(r);
                self.replicas[r].state = RState::Draining;
                if let Some(mut pod) = self.snapshot.pod(&self.replicas[r].uid).cloned() {
                    pod.deleting = Some(core_time(self.now));
                    self.snapshot.upsert_pod(pod);
                    self.version += 1;
                }
                if self.replicas[r].outstanding() == 0 {
                    self.replica_gone(r);
                } else {
                    let grace = self.sc.services[self.replicas[r].svc]
                        .spec
                        .termination_grace_period
                        .us();
                    self.push(self.now + grace, Ev::DrainDeadline { r: id(r) });
                }
            }
            RState::Draining | RState::Gone => {}
        }
    }

    pub(super) fn drop_outstanding(&mut self, r: usize) {
        let si = self.replicas[r].svc;
        let rep = &mut self.replicas[r];
        let mut dropped: Vec<u32> = rep.queue.drain(..).collect();
        dropped.extend(rep.prefill.take().map(|(q, _)| q));
        rep.prefill_step = 0.0;
        dropped.extend(rep.decoding.drain().map(|Reverse((_, q))| q));
        rep.ctx_base = 0.0;
        self.svcs[si].counts.dropped += dropped.len() as u64;
        self.free_reqs.extend(dropped);
    }

    pub(super) fn replica_gone(&mut self, r: usize) {
        self.remove_from_ready(r);
        let rep = &mut self.replicas[r];
        if let (Some(from), RState::Ready | RState::Draining) = (rep.busy_from.take(), rep.state) {
            rep.busy_acc += self.now - from;
        }
        rep.state = RState::Gone;
        rep.gone_at = Some(self.now);
        let rep_svc = rep.svc;
        let uid = rep.uid.clone();
        let node = rep.node;
        self.timers.cancel(id(r));
        if let Some(n) = node {
            let node = &mut self.nodes[n];
            node.pods = node.pods.saturating_sub(1);
            if node.pods == 0 {
                node.empty_since = self.now;
            }
        }
        self.snapshot.remove_pod(&uid);
        self.pending.remove(&r);
        self.live[rep_svc].remove(&r);
        self.need_schedule = true;
        self.version += 1;
    }

    pub(super) fn ca_tick(&mut self) {
        let timed_waits = self
            .pending
            .iter()
            .any(|&r| self.replicas[r].wait_since.is_some());
        if timed_waits || self.settled_at != Some(self.version) {
            self.schedule_pending();
            self.ca_scale_up();
            self.settled_at = (!self.pending.is_empty()).then_some(self.version);
        }
        let asks = self.headroom_asks();
        self.ca_headroom(&asks);
        self.ca_scale_down(&asks);
    }

    /// cluster-autoscaler scale-up: simulate the pending pods on ready and
    /// upcoming nodes; for those left over, propose node groups and let the
    /// core expander choose.
    pub(super) fn ca_scale_up(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pools = &self.sc.scenario.pools;
        let upcoming = self.nodes.iter().any(|n| !n.ready && n.removed.is_none());
        let room = |pi: usize| {
            let size = u32::try_from(self.pools[pi].live.len()).unwrap_or(u32::MAX);
            pools[pi].max_nodes.saturating_sub(size)
        };
        // With no node on its way no pending pod can be placed in the
        // simulation below, and with every cloud pool at its maximum there is
        // nothing to expand: the pass would change nothing.
        if !upcoming
            && !(0..pools.len()).any(|pi| pools[pi].kind == PoolKind::Cloud && room(pi) > 0)
        {
            return;
        }
        // The pass runs on the live snapshot with the upcoming nodes and the
        // pods it places laid over it, and every change is undone after it:
        // copying a snapshot of thousands of nodes and pods on every scan
        // cost more than the whole pass.
        #[cfg(debug_assertions)]
        let before = snapshot_contents(&self.snapshot);
        let mut added = Vec::new();
        for node in self
            .nodes
            .iter()
            .filter(|n| !n.ready && n.removed.is_none())
        {
            let spec = &pools[node.pool];
            self.snapshot.upsert_node(Node {
                name: node.name.clone(),
                labels: spec.labels.clone(),
                allocatable: Resources::new().with(GPU, i64::from(spec.gpus_per_node)),
                unschedulable: false,
            });
            added.push(node.name.clone());
        }
        let mut displaced = Vec::new();
        let choice = self.ca_expansion(upcoming, &mut displaced);
        for pod in displaced.into_iter().rev() {
            self.snapshot.upsert_pod(pod);
        }
        for name in &added {
            self.snapshot.remove_node(name);
        }
        #[cfg(debug_assertions)]
        debug_assert!(
            snapshot_contents(&self.snapshot) == before,
            "the autoscaler pass must leave the snapshot as it found it"
        );
        let Some((pi, count)) = choice else {
            return;
        };
        self.provision(pi, count);
    }

    /// cluster-autoscaler adds `count` nodes to pool `pi`; each joins after
    /// the pool's provisioning delay.
    pub(super) fn provision(&mut self, pi: usize, count: u32) {
        for _ in 0..count {
            let n = self.add_node(pi);
            self.pools[pi].provisioned += 1;
            let d = self.sc.scenario.pools[pi].provisioning;
            let (lo, hi) = (d.min.us(), d.max.us());
            let delay = if hi > lo {
                self.rng.random_range(lo..=hi)
            } else {
                lo
            };
            self.push(self.now + delay, Ev::NodeReady { n: id(n) });
        }
    }

    /// Scale-up headroom (`spec.headroom`): for every policy that asks for
    /// room ahead of demand, the cloud pool of the asked unit and the GPUs
    /// of one replica. In the cluster a placeholder pod of that shape holds
    /// the room; here the room is a node with that many free GPUs (ready or
    /// joining), which cluster-autoscaler starts when there is none and
    /// does not remove while the ask lasts.
    pub(super) fn headroom_asks(&self) -> Vec<(usize, i64)> {
        let pools = &self.sc.scenario.pools;
        let mut out = Vec::new();
        for policy in self.snapshot.policies() {
            let Some(ask) = headroom_ask(&self.snapshot, &self.ledger, policy, core_time(self.now))
            else {
                continue;
            };
            let unit = &policy.units[ask.unit];
            if let Some(pi) = pools
                .iter()
                .position(|p| p.kind == PoolKind::Cloud && unit.selects_node(&p.labels))
            {
                out.push((pi, ask.requests.get(GPU)));
            }
        }
        out
    }

    /// Whether pool `pi` has a node (ready or joining) with `gpus` free,
    /// other than `except`.
    pub(super) fn has_room(&self, pi: usize, gpus: i64, except: Option<usize>) -> bool {
        self.pools[pi].live.iter().any(|&n| {
            Some(n) != except
                && (!self.nodes[n].ready
                    || self
                        .snapshot
                        .free(&self.nodes[n].name)
                        .is_some_and(|f| f.get(GPU) >= gpus))
        })
    }

    /// Starts a node for every ask (`headroom_asks`) no node has room for.
    pub(super) fn ca_headroom(&mut self, asks: &[(usize, i64)]) {
        for &(pi, gpus) in asks {
            let max = self.sc.scenario.pools[pi].max_nodes;
            let size = u32::try_from(self.pools[pi].live.len()).unwrap_or(u32::MAX);
            if size < max && !self.has_room(pi, gpus, None) {
                self.provision(pi, 1);
                self.headroom_nodes += 1;
                self.node_scale_ups.push(NodeScaleUp {
                    t_s: secs(self.now),
                    pool: self.sc.scenario.pools[pi].name.clone(),
                    nodes: 1,
                    reason: "headroom: one node ahead of demand".to_owned(),
                });
            }
        }
    }

    /// The cluster-autoscaler's choice for the pending pods, on the snapshot
    /// with the upcoming nodes laid over it: the pool to grow and by how many
    /// nodes. Pods it places on upcoming or free room are written into the
    /// snapshot; their previous versions go to `displaced`, for the caller
    /// to put back.
    pub(super) fn ca_expansion(
        &mut self,
        upcoming: bool,
        displaced: &mut Vec<Pod>,
    ) -> Option<(usize, u32)> {
        let pools = &self.sc.scenario.pools;
        let room = |pi: usize| {
            let size = u32::try_from(self.pools[pi].live.len()).unwrap_or(u32::MAX);
            pools[pi].max_nodes.saturating_sub(size)
        };
        let pending: Vec<usize> = self.pending.iter().copied().collect();
        let now_core = core_time(self.now);
        let mut unhelped = Vec::new();
        let mut stuck = BTreeSet::new();
        let mut cache = UsageCache::new();
        for &r in &pending {
            let Some(pod) = self.snapshot.pod(&self.replicas[r].uid).cloned() else {
                continue;
            };
            // Without upcoming nodes the pass just before this one already
            // found no room; with them, identical pods of a service that
            // found none need not be tried again.
            if !upcoming || stuck.contains(&self.replicas[r].svc) {
                unhelped.push(pod);
                continue;
            }
            let out = place_filter(
                &self.snapshot,
                &self.ledger,
                &mut cache,
                &pod,
                self.replicas[r].wait_since,
                now_core,
            );
            if let Some(&node) = out.eligible.first() {
                note_placed(&mut cache, &out, &pod);
                let mut placed = pod.clone();
                placed.node = Some(node.to_owned());
                placed.phase = PodPhase::Running;
                self.snapshot.upsert_pod(placed);
                displaced.push(pod);
            } else {
                if out.wait_since().is_none() {
                    stuck.insert(self.replicas[r].svc);
                }
                unhelped.push(pod);
            }
        }
        if unhelped.is_empty() {
            return None;
        }
        let mut groups = BTreeMap::new();
        let mut options = Vec::new();
        for (pi, spec) in pools.iter().enumerate() {
            if spec.kind != PoolKind::Cloud {
                continue;
            }
            let room = room(pi);
            if room == 0 {
                continue;
            }
            let alloc = Resources::new().with(GPU, i64::from(spec.gpus_per_node));
            let fitting: Vec<&Pod> = unhelped
                .iter()
                .filter(|p| p.requests.get(GPU) <= alloc.get(GPU))
                .collect();
            if fitting.is_empty() {
                continue;
            }
            // First-fit of the pods' GPU requests onto new nodes.
            let mut bins: Vec<i64> = Vec::new();
            for p in &fitting {
                let need = p.requests.get(GPU);
                if let Some(b) = bins.iter_mut().find(|b| **b >= need) {
                    *b -= need;
                } else {
                    bins.push(alloc.get(GPU) - need);
                }
            }
            let count = u32::try_from(bins.len()).unwrap_or(u32::MAX).min(room);
            let price = node_price_micros(spec.cost_per_gpu_hour, alloc.get(GPU));
            groups.insert(
                spec.name.clone(),
                NodeGroup {
                    id: spec.name.clone(),
                    labels: spec.labels.clone(),
                    allocatable: alloc,
                    price_per_node_hour_micros: price,
                },
            );
            options.push(ExpansionOption {
                group: spec.name.clone(),
                node_count: count,
                pods: fitting.iter().map(|p| p.uid.clone()).collect(),
            });
        }
        if options.is_empty() {
            return None;
        }
        let choice = best_options(&self.snapshot, &self.ledger, &groups, &options, now_core);
        let best = choice.chosen().first();
        if let Some(log) = self.expansion_log.as_mut() {
            log.push(ExpansionRecord {
                t_s: secs(self.now),
                now: now_core,
                snapshot: self.snapshot.clone(),
                ledger: self.ledger.clone(),
                groups: groups.clone(),
                options: options.clone(),
                chosen: best.map(|b| b.option.group.clone()),
            });
        }
        let best = best?;
        let pi = pools.iter().position(|p| p.name == best.option.group)?;
        // cluster-autoscaler takes the expander's choice of group, not its
        // node count: it adds the nodes its own estimate asked for.
        let asked = options
            .iter()
            .find(|o| o.group == best.option.group)
            .map_or(best.option.node_count, |o| o.node_count);
        self.node_scale_ups.push(NodeScaleUp {
            t_s: secs(self.now),
            pool: best.option.group.clone(),
            nodes: asked,
            reason: best.reason.clone(),
        });
        Some((pi, asked))
    }

    /// Removes cloud nodes empty for `scaleDownUnneededTime`, except the
    /// room the headroom asks hold (`spares`: pool and GPUs).
    pub(super) fn ca_scale_down(&mut self, spares: &[(usize, i64)]) {
        let unneeded = self
            .sc
            .scenario
            .cluster_autoscaler
            .scale_down_unneeded_time
            .us();
        for pi in 0..self.pools.len() {
            let spec = &self.sc.scenario.pools[pi];
            if spec.kind != PoolKind::Cloud {
                continue;
            }
            let candidates: Vec<usize> = self.pools[pi]
                .live
                .iter()
                .copied()
                .filter(|&n| {
                    self.nodes[n].ready
                        && self.nodes[n].pods == 0
                        && self.now - self.nodes[n].empty_since >= unneeded
                })
                .collect();
            for n in candidates {
                if id(self.pools[pi].live.len()) <= spec.min_nodes {
                    break;
                }
                // The room headroom holds stays while it is asked for.
                if spares
                    .iter()
                    .any(|&(p, gpus)| p == pi && !self.has_room(pi, gpus, Some(n)))
                {
                    continue;
                }
                self.remove_node(n);
            }
        }
    }
}

/// Unit counts kept across one scheduling pass: counted once per policy and
/// group, then moved by the pass's own placements (nothing else changes
/// during a pass), so placing many pods stays linear.
pub(super) type UsageCache = BTreeMap<(PolicyKey, GroupKey), Vec<UnitUsage>>;

/// Filters a pending pod as kube-scheduler plus the extender would: the
/// nodes that fit it, then the core's Filter with the pass's unit counts.
fn place_filter<'s>(
    snapshot: &'s Snapshot,
    ledger: &Ledger,
    cache: &mut UsageCache,
    pod: &Pod,
    wait_since: Option<Time>,
    now: Time,
) -> FilterOutcome<'s> {
    let feasible = fitting_nodes(snapshot, pod);
    let req = FilterRequest {
        pod,
        nodes: &feasible,
        wait_since,
        now,
    };
    filter_counted(snapshot, req, &mut |policy, group| {
        cache
            .entry((policy.key.clone(), group.clone()))
            .or_insert_with(|| unit_usage(snapshot, ledger, policy, group, &pod.uid, now))
            .clone()
    })
}

/// Nodes with their allocations, and pods: what the autoscaler pass must
/// put back as it found them (checked in debug builds).
#[cfg(debug_assertions)]
fn snapshot_contents(s: &Snapshot) -> (Vec<(Node, Option<Resources>)>, Vec<Pod>) {
    let nodes = s
        .nodes_allocated()
        .map(|(n, a)| (n.clone(), a.cloned()))
        .collect();
    (nodes, s.pods().cloned().collect())
}

/// Records in the cache that `pod` was placed as `out` decided.
fn note_placed(cache: &mut UsageCache, out: &FilterOutcome, pod: &Pod) {
    if let (Some(unit), Some(policy), Some(group)) = (out.chosen_unit(), &out.policy, &out.group)
        && let Some(usage) = cache.get_mut(&(policy.clone(), group.clone()))
        && let Some(u) = usage.get_mut(unit)
    {
        u.pods += 1;
        u.resources.add(&pod.requests);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{scenario, world};
    use super::RState;

    const FIXED: &str = "{kind: fixed, prefillUsPerToken: 10, decodeUsPerToken: 1000}";
    const MINUTE: i64 = 60_000_000;

    #[test]
    fn a_pod_that_fits_nowhere_waits_until_cluster_autoscaler_adds_a_cloud_node() {
        // Two GPUs in the data center, both taken by the initial replicas.
        let mut w = world(&scenario(2, 2, FIXED));
        assert!(
            w.replicas
                .iter()
                .all(|r| r.node.map(|n| w.nodes[n].pool) == Some(0))
        );
        let r = w.create_replica(0);
        w.schedule_pending();
        assert_eq!(w.replicas[r].state, RState::Pending);
        assert_eq!(w.replicas[r].node, None);
        // The next scan (10 s) asks for a cloud node; it is Ready 5 minutes later.
        w.run_to(MINUTE);
        assert_eq!(w.pools[1].provisioned, 1);
        assert_eq!(w.replicas[r].node, None, "the node is still provisioning");
        w.run_to(6 * MINUTE);
        let node = w.replicas[r].node.expect("bound once the node is Ready");
        assert_eq!(w.nodes[node].pool, 1);
        assert_ne!(w.replicas[r].state, RState::Pending);
    }

    #[test]
    fn an_empty_cloud_node_is_removed_after_the_unneeded_time() {
        let mut w = world(&scenario(2, 2, FIXED));
        let r = w.create_replica(0);
        w.schedule_pending();
        w.run_to(6 * MINUTE);
        assert!(w.replicas[r].node.is_some());
        w.delete_replica(r);
        // scaleDownUnneededTime is 10 minutes.
        w.run_to(12 * MINUTE);
        assert_eq!(w.pools[1].removed, 0);
        w.run_to(20 * MINUTE);
        assert_eq!(w.pools[1].removed, 1);
        assert!(w.pools[1].live.is_empty());
    }
}
