//! Node-group ranking for cluster-autoscaler scale-up (the expander's rule).
//!
//! cluster-autoscaler simulates scheduling with the in-tree predicates only;
//! it never asks the extender, so on its own it may grow a pool the policy
//! would not use yet, or grow a unit past its `max`. Given the options CA
//! found, this keeps those that grow the unit the pending pods would be
//! admitted to, caps their node counts to the unit's headroom, and ranks the
//! rest by price, then least waste:
//!
//! ```text
//!  pending pods ─► admissible_unit (a new node counts as feasible in every
//!                  unit that has an option) ─► keep options of that unit
//!                  ─► cap node count by the unit's max ─► rank (price, waste)
//! ```
//!
//! Reusing [`admissible_unit`] means the expander answers exactly as Filter
//! will once the node is Ready: same caps, same `whenTryNextUnits`.
//!
//! # Units are per policy
//!
//! A unit index means something only within its own policy: unit 1 of one
//! ResourcePolicy may be the very node pool that is unit 0 of another, and
//! one option may name pending pods of several policies (and ungoverned
//! ones). So the unit test is made pod by pod, against the pod's own
//! governing policy: an option survives only when, for every governed pod it
//! names, its template node lies in the unit that pod would be admitted to.
//! [`RankedOption::units`] reports, per policy, the unit the new nodes belong
//! to.
//!
//! The ranking never compares unit indexes at all, neither across policies
//! nor within one. It does not need to: the admissible unit of a pod is one
//! unit, so every surviving option that names a pod grows that pod's unit,
//! and an option of a later unit has already been dropped whenever an
//! earlier unit could take the pod. Two survivors in different units of one
//! policy serve different pods (other `matchLabelKeys` groups, or requests
//! under `maxResources`), each in its own right unit, so neither is earlier
//! for the other's pods. Survivors are therefore ordered by price, then
//! waste, then node-group id (then node count and pod list, so equal keys
//! cannot depend on CA's order): a total, deterministic order.
//!
//! A rule such as "compare units when two options serve the same policy,
//! else compare prices" is not an order at all (it is not transitive), which
//! is why no unit appears in the sort key.

use std::collections::{BTreeMap, BTreeSet};

use super::admission::{Admission, UnitState, admissible_unit};
use super::governance::governing_policy_in;
use super::ledger::Ledger;
use super::policy::{GroupKey, Policy, PolicyKey};
use super::quantity::{GPU, Resources};
use super::snapshot::{Labels, Node, Pod, Snapshot};
use super::time::Time;
use super::usage::{Placement, UnitUsage, counts_toward_caps, placement, unit_usage};

/// A node group CA can grow, as its template node describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeGroup {
    /// Node-group id (CA's key).
    pub id: String,
    /// Labels of the template node (units select nodes by these).
    pub labels: Labels,
    /// Allocatable resources of one new node.
    pub allocatable: Resources,
    /// Configured price of one node-hour, in micro-units of currency; 0 when unknown.
    pub price_per_node_hour_micros: u64,
}

/// One scale-up option as CA proposes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpansionOption {
    /// The node group.
    pub group: String,
    /// Nodes CA would add.
    pub node_count: u32,
    /// UIDs of the pending pods the new nodes would hold.
    pub pods: Vec<String>,
}

/// An option that survived, possibly with fewer nodes, and why it ranks where it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankedOption {
    /// The option, node count capped to the unit's headroom.
    pub option: ExpansionOption,
    /// For each policy governing a pod the growth is for (see `served`):
    /// index of the unit of that policy the new nodes belong to (`None`: outside every unit of
    /// it, a place only `strategy: prefer` allows). Indexes of different
    /// policies are unrelated; empty when the option names no governed pod.
    pub units: BTreeMap<PolicyKey, Option<usize>>,
    /// The pods the growth is for: ungoverned ones and those admitted to
    /// this option's unit. Pods that must not trigger growth now (a wait,
    /// every unit at its cap) may ride along on the option's list, as
    /// cluster-autoscaler packs every pod that fits, but do not count.
    pub served: Vec<String>,
    /// Price of the added nodes per hour (cluster-autoscaler's own node
    /// count), micro-units.
    pub price_micros: u64,
    /// Unused share of the added GPUs (or CPU), in thousandths.
    pub waste_permille: u32,
    /// Human-readable reason (for the gRPC `debug` field and logs).
    pub reason: String,
}

/// A rejected option and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedOption {
    /// The node group.
    pub group: String,
    /// Why it was dropped.
    pub reason: String,
}

/// The expander's answer: options best first, and the ones dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Surviving options, best first.
    pub best: Vec<RankedOption>,
    /// Dropped options with reasons.
    pub rejected: Vec<RejectedOption>,
}

/// Price of one node-hour in micro-units: `per_gpu_hour` times the node's
/// GPUs (`gpu_milli`, in milli-units; a node without GPUs counts as one).
/// Negative, NaN or infinite prices count as 0.
#[must_use]
pub fn node_price_micros(per_gpu_hour: f64, gpu_milli: i64) -> u64 {
    let gpus = u32::try_from((gpu_milli / 1000).max(1)).unwrap_or(u32::MAX);
    let micros = (per_gpu_hour * f64::from(gpus) * 1e6).round();
    if micros.is_finite() && micros > 0.0 {
        // Bounded above by the check; prices are far below u64::MAX µ.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let m = micros.min(9.0e18) as u64;
        m
    } else {
        0
    }
}

impl Expansion {
    /// The options to answer cluster-autoscaler with: the best one and any
    /// tied with it on price and waste (CA's next expander, or its random
    /// pick, breaks such a tie). Empty when no option may grow.
    #[must_use]
    pub fn chosen(&self) -> &[RankedOption] {
        let Some(first) = self.best.first() else {
            return &[];
        };
        let key = (first.price_micros, first.waste_permille);
        let n = self
            .best
            .iter()
            .take_while(|o| (o.price_micros, o.waste_permille) == key)
            .count();
        &self.best[..n]
    }
}

fn template(group: &NodeGroup) -> Node {
    Node {
        name: format!("template-{}", group.id),
        labels: group.labels.clone(),
        allocatable: group.allocatable.clone(),
        unschedulable: false,
    }
}

/// How many pods with `requests` one node of `allocatable` holds.
fn pods_per_node(allocatable: &Resources, requests: &Resources) -> u32 {
    let mut fit = u32::MAX;
    for (r, need) in requests.iter() {
        if need > 0 {
            let n = allocatable.get(r) / need;
            fit = fit.min(u32::try_from(n.max(0)).unwrap_or(u32::MAX));
        }
    }
    if fit == u32::MAX { 1 } else { fit }
}

/// Pods of one policy group not yet on any node but already promised a
/// unit: per unit, count and summed requests.
type Waiting = BTreeMap<(PolicyKey, GroupKey), Vec<UnitUsage>>;

/// Where a pending governed pod would be admitted if every unit that has an
/// option gained a node: `Some(Some(unit))`, `Some(None)` for nodes outside
/// every unit, `None` when it must not trigger growth (waits, exhausted,
/// rejected). Also returns the unit's remaining pod headroom. `waiting`
/// adds pods promised to units (for nodes being created) to the usage.
fn target(
    snapshot: &Snapshot,
    ledger: &Ledger,
    policy: &Policy,
    pod: &Pod,
    growable: &BTreeSet<Option<usize>>,
    waiting: &Waiting,
    now: Time,
) -> Option<(GroupKey, Option<usize>, Option<u32>)> {
    let group = policy.group_of(pod).ok()?;
    let mut usage = unit_usage(snapshot, ledger, policy, &group, &pod.uid, now);
    if let Some(w) = waiting.get(&(policy.key.clone(), group.clone())) {
        for (u, w) in usage.iter_mut().zip(w) {
            u.pods += w.pods;
            u.resources.add(&w.resources);
        }
    }
    let states: Vec<UnitState> = usage
        .iter()
        .enumerate()
        .map(|(i, u)| UnitState {
            usage: u.clone(),
            feasible: growable.contains(&Some(i)),
            preemption_may_help: false,
        })
        .collect();
    match admissible_unit(policy, &pod.requests, &states, None, now) {
        Admission::Unit { unit, .. } => {
            let headroom = policy.units[unit]
                .max
                .map(|m| m.saturating_sub(usage[unit].pods));
            Some((group, Some(unit), headroom))
        }
        Admission::OutsideUnits { .. } if growable.contains(&None) => Some((group, None, None)),
        Admission::OutsideUnits { .. } | Admission::Wait { .. } | Admission::Exhausted { .. } => {
            None
        }
    }
}

/// The units (or `None`, outside every unit) of `policy` that some option
/// would grow.
fn growable_units(
    policy: &Policy,
    groups: &BTreeMap<String, NodeGroup>,
    options: &[ExpansionOption],
) -> BTreeSet<Option<usize>> {
    options
        .iter()
        .filter_map(|o| groups.get(&o.group))
        .map(|g| policy.unit_of_node(&template(g)))
        .collect()
}

/// What one pending pod named by the options is, worked out once per request.
enum Verdict<'a> {
    /// Not in the snapshot (CA saw it, the watch has not yet).
    Unknown,
    /// No policy governs it: any option may host it.
    Ungoverned(&'a Pod),
    /// Governed by `policy`; `target` is [`target`]'s answer.
    Governed {
        pod: &'a Pod,
        policy: &'a Policy,
        target: Option<(GroupKey, Option<usize>, Option<u32>)>,
    },
}

/// Pending pods of the policies in `growable` that no option names: CA
/// found them room on nodes it is already creating (or none anywhere).
/// Each is promised to the unit it would be admitted to, oldest first, so
/// the headroom of that unit is not sold twice. Which nodes they wait for
/// is not in the request, so every unit counts as able to take them: a
/// waiting pod is charged to the earliest unit under its caps, never to a
/// later one it may not go to (which could refuse all growth for nothing).
/// Pods already placed by a reservation are in the usage already.
fn waiting_pods(
    snapshot: &Snapshot,
    ledger: &Ledger,
    extra: &BTreeMap<String, Pod>,
    named: &BTreeSet<&str>,
    growable: &BTreeMap<PolicyKey, BTreeSet<Option<usize>>>,
    now: Time,
) -> Waiting {
    let mut waiting = Waiting::new();
    let mut pods: Vec<(&Pod, &Policy)> = snapshot
        .pods()
        .chain(extra.values().filter(|p| snapshot.pod(&p.uid).is_none()))
        .filter(|p| {
            p.node.is_none()
                && !p.is_terminal()
                && !p.is_terminating()
                && !named.contains(p.uid.as_str())
        })
        .filter_map(|p| {
            let policy = governing_policy_in(snapshot, p).policy?;
            (growable.contains_key(&policy.key)
                && counts_toward_caps(policy, p)
                && placement(snapshot, ledger, policy, p, now) == Placement::Unplaced)
                .then_some((p, policy))
        })
        .collect();
    pods.sort_by(|a, b| (a.0.created, &a.0.uid).cmp(&(b.0.created, &b.0.uid)));
    for (pod, policy) in pods {
        let every_unit: BTreeSet<Option<usize>> =
            (0..policy.units.len()).map(Some).chain([None]).collect();
        if let Some((group, Some(unit), _)) =
            target(snapshot, ledger, policy, pod, &every_unit, &waiting, now)
        {
            let units = waiting
                .entry((policy.key.clone(), group))
                .or_insert_with(|| vec![UnitUsage::default(); policy.units.len()]);
            units[unit].pods += 1;
            units[unit].resources.add(&pod.requests);
        }
    }
    waiting
}

/// Filters and ranks CA's scale-up `options` for the pending pods they name.
/// `groups` describes every node group by id.
///
/// A unit's headroom under `max` counts its bound pods, its reservations,
/// and the governed pending pods no option names (CA is already creating
/// nodes for them, or can create none): see [`waiting_pods`].
#[must_use]
pub fn best_options(
    snapshot: &Snapshot,
    ledger: &Ledger,
    groups: &BTreeMap<String, NodeGroup>,
    options: &[ExpansionOption],
    now: Time,
) -> Expansion {
    best_options_with(snapshot, ledger, &BTreeMap::new(), groups, options, now)
}

/// [`best_options`], with `extra` pending pods by UID for those the
/// snapshot does not have yet (cluster-autoscaler saw them before the
/// watch delivered them): no copy of the snapshot is needed.
#[must_use]
pub fn best_options_with(
    snapshot: &Snapshot,
    ledger: &Ledger,
    extra: &BTreeMap<String, Pod>,
    groups: &BTreeMap<String, NodeGroup>,
    options: &[ExpansionOption],
    now: Time,
) -> Expansion {
    let lookup = |uid: &str| snapshot.pod(uid).or_else(|| extra.get(uid));
    let mut out = Expansion::default();
    let named: BTreeSet<&str> = options
        .iter()
        .flat_map(|o| o.pods.iter().map(String::as_str))
        .collect();
    let mut growable: BTreeMap<PolicyKey, BTreeSet<Option<usize>>> = BTreeMap::new();
    for uid in &named {
        if let Some(pod) = lookup(uid)
            && let Some(policy) = governing_policy_in(snapshot, pod).policy
            && !growable.contains_key(&policy.key)
        {
            growable.insert(policy.key.clone(), growable_units(policy, groups, options));
        }
    }
    let waiting = waiting_pods(snapshot, ledger, extra, &named, &growable, now);
    let verdicts: BTreeMap<&str, Verdict<'_>> = named
        .iter()
        .map(|&uid| {
            let v = match lookup(uid) {
                None => Verdict::Unknown,
                Some(pod) => match governing_policy_in(snapshot, pod).policy {
                    None => Verdict::Ungoverned(pod),
                    Some(policy) => Verdict::Governed {
                        pod,
                        policy,
                        target: growable
                            .get(&policy.key)
                            .and_then(|g| target(snapshot, ledger, policy, pod, g, &waiting, now)),
                    },
                },
            };
            (uid, v)
        })
        .collect();
    for opt in options {
        let Some(group) = groups.get(&opt.group) else {
            out.rejected.push(RejectedOption {
                group: opt.group.clone(),
                reason: "unknown node group".into(),
            });
            continue;
        };
        let node = template(group);
        let mut units: BTreeMap<PolicyKey, Option<usize>> = BTreeMap::new();
        let mut placed: Vec<String> = Vec::new();
        let mut allowed_pods: u32 = 0;
        let mut served: Vec<String> = Vec::new();
        let mut requests = Resources::new();
        let mut reject: Option<String> = None;
        let mut held: Option<String> = None;
        let mut headroom_nodes: Option<u32> = None;
        for uid in &opt.pods {
            let (pod, policy, target) = match verdicts.get(uid.as_str()) {
                None | Some(Verdict::Unknown) => continue,
                Some(Verdict::Ungoverned(pod)) => {
                    allowed_pods += 1;
                    served.push(uid.clone());
                    requests.add(&pod.requests);
                    continue;
                }
                Some(Verdict::Governed {
                    pod,
                    policy,
                    target,
                }) => (*pod, *policy, target),
            };
            let unit_here = policy.unit_of_node(&node);
            match target {
                Some((_, unit, headroom)) if *unit == unit_here => {
                    if units.insert(policy.key.clone(), unit_here).is_none() {
                        placed.push(match unit_here {
                            Some(u) => format!("{}: unit {:?}", policy.key, policy.units[u].name),
                            None => format!("{}: outside every unit", policy.key),
                        });
                    }
                    allowed_pods += 1;
                    served.push(uid.clone());
                    requests.add(&pod.requests);
                    if let Some(h) = headroom {
                        let per_node = pods_per_node(&group.allocatable, &pod.requests).max(1);
                        let nodes = h.div_ceil(per_node);
                        headroom_nodes = Some(headroom_nodes.map_or(nodes, |x: u32| x.min(nodes)));
                    }
                }
                Some((_, Some(u), _)) => {
                    reject = Some(format!(
                        "pod {}/{} belongs in unit {:?} of ResourcePolicy {} first",
                        pod.namespace, pod.name, policy.units[*u].name, policy.key
                    ));
                }
                Some((_, None, _)) => {
                    reject = Some(format!(
                        "pod {}/{} goes to nodes outside every unit of ResourcePolicy {}",
                        pod.namespace, pod.name, policy.key
                    ));
                }
                // It must not trigger growth, but it does not stop growth
                // for the option's other pods either.
                None => {
                    held.get_or_insert_with(|| {
                        format!(
                            "pod {}/{} must not trigger growth now (its policy {} makes it wait, or every unit is at its cap)",
                            pod.namespace, pod.name, policy.key
                        )
                    });
                }
            }
            if reject.is_some() {
                break;
            }
        }
        if let Some(reason) = reject {
            out.rejected.push(RejectedOption {
                group: opt.group.clone(),
                reason,
            });
            continue;
        }
        let mut node_count = opt.node_count;
        if let Some(h) = headroom_nodes {
            node_count = node_count.min(h);
        }
        if allowed_pods == 0 {
            out.rejected.push(RejectedOption {
                group: opt.group.clone(),
                reason: held.unwrap_or_else(|| "it names no pending pod Spillway knows".into()),
            });
            continue;
        }
        if node_count == 0 {
            out.rejected.push(RejectedOption {
                group: opt.group.clone(),
                reason: format!(
                    "the unit has no headroom under its max ({})",
                    placed.join(", ")
                ),
            });
            continue;
        }
        let capped = if node_count < opt.node_count {
            format!("; {node_count} node(s) reach the unit's max")
        } else {
            String::new()
        };
        // Price and waste of what cluster-autoscaler will buy: its own
        // node count (it ignores the expander's), not the capped one.
        let bought = opt.node_count.max(node_count);
        let res = if requests.get(GPU) > 0 { GPU } else { "cpu" };
        let capacity = (i128::from(bought) * i128::from(group.allocatable.get(res))).max(1);
        let used = i128::from(requests.get(res)).clamp(0, capacity);
        let waste_permille = u32::try_from((capacity - used) * 1000 / capacity).unwrap_or(1000);
        let price_micros = u64::from(bought).saturating_mul(group.price_per_node_hour_micros);
        out.best.push(RankedOption {
            option: ExpansionOption {
                group: opt.group.clone(),
                node_count,
                pods: opt.pods.clone(),
            },
            units,
            served,
            price_micros,
            waste_permille,
            reason: format!(
                "{} node(s) for {allowed_pods} pod(s){}{capped}; price {price_micros} µ/h; waste {waste_permille}‰",
                opt.node_count,
                if placed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", placed.join(", "))
                }
            ),
        });
    }
    // No unit index in the key: see "Units are per policy" in the module doc.
    out.best.sort_by(|a, b| {
        (
            a.price_micros,
            a.waste_permille,
            &a.option.group,
            a.option.node_count,
            &a.option.pods,
        )
            .cmp(&(
                b.price_micros,
                b.waste_permille,
                &b.option.group,
                b.option.node_count,
                &b.option.pods,
            ))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::testutil::*;

    fn groups() -> BTreeMap<String, NodeGroup> {
        [
            ("dc-extra", "local", 5_000_000),
            ("cloud-a", "cloud", 3_000_000),
            ("cloud-b", "cloud", 2_000_000),
        ]
        .into_iter()
        .map(|(id, pool, price)| {
            (
                id.to_owned(),
                NodeGroup {
                    id: id.to_owned(),
                    labels: labels(&[("pool", pool)]),
                    allocatable: Resources::new().with(GPU, 4),
                    price_per_node_hour_micros: price,
                },
            )
        })
        .collect()
    }

    fn world(local_max: Option<u32>, bound_local: usize) -> Snapshot {
        let mut s = Snapshot::new();
        s.upsert_node(mk_node("l1", &[("pool", "local")], 8));
        let mut p = Policy::new(
            "ns",
            "p",
            vec![
                unit("local", &[("pool", "local")], local_max),
                unit("cloud", &[("pool", "cloud")], Some(3)),
            ],
        );
        p.selector = labels(&[("app", "llm")]);
        s.upsert_policy(p);
        for i in 0..bound_local {
            s.upsert_pod(bound(mk_pod(&format!("b{i}"), &[("app", "llm")], 1), "l1"));
        }
        for i in 0..4 {
            s.upsert_pod(mk_pod(&format!("pending{i}"), &[("app", "llm")], 1));
        }
        s
    }

    fn opt(group: &str, n: u32) -> ExpansionOption {
        ExpansionOption {
            group: group.into(),
            node_count: n,
            pods: (0..4).map(|i| format!("pending{i}")).collect(),
        }
    }

    #[test]
    fn earlier_unit_is_grown_before_cloud() {
        let s = world(Some(8), 2);
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[opt("cloud-a", 1), opt("dc-extra", 1)],
            t(2000),
        );
        assert_eq!(e.best.len(), 1);
        assert_eq!(e.best[0].option.group, "dc-extra");
        assert!(
            e.rejected
                .iter()
                .any(|r| r.group == "cloud-a" && r.reason.contains("unit \"local\""))
        );
    }

    #[test]
    fn full_unit_sends_growth_to_the_next_unit_capped_by_its_max_and_cheapest_first() {
        let s = world(Some(2), 2);
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[opt("dc-extra", 1), opt("cloud-a", 4), opt("cloud-b", 4)],
            t(2000),
        );
        let ids: Vec<&str> = e.best.iter().map(|o| o.option.group.as_str()).collect();
        assert_eq!(ids, ["cloud-b", "cloud-a"], "cheaper group first");
        // cloud max 3 pods, 4 GPUs per node and 1 GPU per pod → one node is enough.
        assert!(e.best.iter().all(|o| o.option.node_count == 1));
        assert!(e.rejected.iter().any(|r| r.group == "dc-extra"));
    }

    #[test]
    fn unknown_groups_and_waiting_pods_do_not_grow_anything() {
        let mut s = world(Some(8), 0);
        let mut p = s.policies().next().unwrap().clone();
        p.when_try_next_units = crate::decision::policy::NextUnitPolicy::ExceedMax;
        s.upsert_policy(p);
        // Only cloud can grow; under ExceedMax the pods wait for the local unit.
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[opt("cloud-a", 1), opt("nope", 1)],
            t(2000),
        );
        assert!(e.best.is_empty());
        assert_eq!(e.rejected.len(), 2);
    }

    fn opt_pods(group: &str, n: u32, pods: &[usize]) -> ExpansionOption {
        ExpansionOption {
            group: group.into(),
            node_count: n,
            pods: pods.iter().map(|i| format!("pending{i}")).collect(),
        }
    }

    #[test]
    fn pods_waiting_for_nodes_being_created_use_up_the_headroom() {
        // Local is full (max 2, 2 bound); cloud has max 3. CA is already
        // creating a node for pending0..2 (no option names them) and asks
        // for one more node for pending3: the cloud unit would hold 4.
        let s = world(Some(2), 2);
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[opt_pods("cloud-a", 1, &[3])],
            t(2000),
        );
        assert!(e.best.is_empty(), "{e:?}");
        assert!(
            e.rejected[0].reason.contains("every unit is at its cap"),
            "{}",
            e.rejected[0].reason
        );
        // With only two of them waiting, one more pod fits under max.
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[opt_pods("cloud-a", 1, &[2, 3])],
            t(2000),
        );
        assert_eq!(ids(&e), ["cloud-a"]);
    }

    #[test]
    fn pods_waiting_for_a_local_node_send_the_rest_to_the_next_unit() {
        // Local max 4 with 2 bound: pending0 and pending1 wait for the local
        // node being created, so pending2 and pending3 belong in cloud.
        let s = world(Some(4), 2);
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[
                opt_pods("dc-extra", 1, &[2, 3]),
                opt_pods("cloud-a", 1, &[2, 3]),
            ],
            t(2000),
        );
        assert_eq!(ids(&e), ["cloud-a"]);
        // Without the waiting pods, local still has room for two.
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[
                opt_pods("dc-extra", 1, &[0, 1, 2, 3]),
                opt_pods("cloud-a", 1, &[0, 1, 2, 3]),
            ],
            t(2000),
        );
        assert_eq!(ids(&e), ["dc-extra"]);
    }

    #[test]
    fn the_answer_is_the_best_option_and_its_ties() {
        let s = world(Some(2), 2);
        let mut g = groups();
        g.get_mut("cloud-a").unwrap().price_per_node_hour_micros = 2_000_000;
        let e = best_options(
            &s,
            &Ledger::new(),
            &g,
            &[opt("cloud-a", 1), opt("cloud-b", 1), opt("dc-extra", 1)],
            t(2000),
        );
        let chosen: Vec<&str> = e.chosen().iter().map(|o| o.option.group.as_str()).collect();
        assert_eq!(chosen, ["cloud-a", "cloud-b"], "same price and waste");
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[opt("cloud-a", 1), opt("cloud-b", 1)],
            t(2000),
        );
        assert_eq!(e.chosen().len(), 1);
        assert_eq!(e.chosen()[0].option.group, "cloud-b");
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[opt("dc-extra", 1)],
            t(2000),
        );
        assert!(e.chosen().is_empty());
    }

    // ---- several policies ----------------------------------------------------

    /// Policy `a` (pods `app=a`): units local (cap `a_local_max`), cloud.
    /// Policy `b` (pods `app=b`): units cloud, local — b's unit 0 is a's unit 1.
    /// Pending: a0, a1, b0, b1 and the ungoverned w0; `bound_a_local` pods of
    /// `a` run on the local node.
    fn two_policies(a_local_max: Option<u32>, bound_a_local: usize) -> Snapshot {
        let mut s = Snapshot::new();
        s.upsert_node(mk_node("l1", &[("pool", "local")], 8));
        let mut a = Policy::new(
            "ns",
            "a",
            vec![
                unit("local", &[("pool", "local")], a_local_max),
                unit("cloud", &[("pool", "cloud")], Some(8)),
            ],
        );
        a.selector = labels(&[("app", "a")]);
        let mut b = Policy::new(
            "ns",
            "b",
            vec![
                unit("cloud", &[("pool", "cloud")], None),
                unit("local", &[("pool", "local")], None),
            ],
        );
        b.selector = labels(&[("app", "b")]);
        s.upsert_policy(a);
        s.upsert_policy(b);
        for i in 0..bound_a_local {
            s.upsert_pod(bound(mk_pod(&format!("ba{i}"), &[("app", "a")], 1), "l1"));
        }
        for (uid, app) in [
            ("a0", "a"),
            ("a1", "a"),
            ("b0", "b"),
            ("b1", "b"),
            ("w0", "web"),
        ] {
            s.upsert_pod(mk_pod(uid, &[("app", app)], 1));
        }
        s
    }

    fn opt_for(group: &str, pods: &[&str]) -> ExpansionOption {
        ExpansionOption {
            group: group.into(),
            node_count: 1,
            pods: pods.iter().map(|&p| p.to_owned()).collect(),
        }
    }

    fn key(name: &str) -> PolicyKey {
        PolicyKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn ids(e: &Expansion) -> Vec<&str> {
        e.best.iter().map(|o| o.option.group.as_str()).collect()
    }

    #[test]
    fn pods_of_two_policies_on_one_option_each_get_their_own_unit() {
        // a's local unit is full: a's pods go to cloud (a's unit 1); b's pods
        // go to cloud too (b's unit 0). Both cloud options are right for all
        // four pods; only the pod order on them differs, and must not matter.
        let s = two_policies(Some(2), 2);
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[
                opt_for("cloud-a", &["a0", "b0", "a1", "b1"]),
                opt_for("cloud-b", &["b1", "a1", "b0", "a0"]),
                opt_for("dc-extra", &["a0", "b0"]),
            ],
            t(2000),
        );
        assert_eq!(ids(&e), ["cloud-b", "cloud-a"], "cheaper first");
        let want: BTreeMap<PolicyKey, Option<usize>> =
            [(key("a"), Some(1)), (key("b"), Some(0))].into();
        assert!(e.best.iter().all(|o| o.units == want), "{:?}", e.best);
        assert!(
            e.best[0].reason.contains("ns/a: unit \"cloud\"")
                && e.best[0].reason.contains("ns/b: unit \"cloud\""),
            "{}",
            e.best[0].reason
        );
        assert_eq!(e.rejected.len(), 1);
        assert_eq!(e.rejected[0].group, "dc-extra");
        assert!(
            e.rejected[0]
                .reason
                .contains("unit \"cloud\" of ResourcePolicy ns/a"),
            "{}",
            e.rejected[0].reason
        );
    }

    #[test]
    fn unit_1_of_one_policy_does_not_rank_after_unit_0_of_another() {
        // The cloud pool is a's unit 1 and b's unit 0. cloud-b (for a's pods)
        // is cheaper than cloud-a (for b's pods): price decides, not the
        // unrelated indexes 1 and 0.
        let s = two_policies(Some(2), 2);
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[
                opt_for("cloud-a", &["b0", "b1"]),
                opt_for("cloud-b", &["a0", "a1"]),
                opt_for("dc-extra", &["b0", "b1"]),
            ],
            t(2000),
        );
        assert_eq!(ids(&e), ["cloud-b", "cloud-a"]);
        assert_eq!(e.best[0].units, [(key("a"), Some(1))].into());
        assert_eq!(e.best[1].units, [(key("b"), Some(0))].into());
        // Local is b's unit 1: b's pods belong in cloud while it can grow.
        assert_eq!(e.rejected.len(), 1);
        assert!(
            e.rejected[0].group == "dc-extra"
                && e.rejected[0]
                    .reason
                    .contains("unit \"cloud\" of ResourcePolicy ns/b"),
            "{:?}",
            e.rejected
        );

        // With room in a's local unit, a's pods go there (a's unit 0) and
        // nowhere else; b's pods still go to cloud.
        let s = two_policies(Some(8), 0);
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[
                opt_for("cloud-b", &["a0", "a1"]),
                opt_for("dc-extra", &["a0", "a1"]),
                opt_for("cloud-a", &["b0", "b1"]),
            ],
            t(2000),
        );
        assert_eq!(ids(&e), ["cloud-a", "dc-extra"]);
        assert_eq!(e.best[0].units, [(key("b"), Some(0))].into());
        assert_eq!(e.best[1].units, [(key("a"), Some(0))].into());
        assert_eq!(e.rejected.len(), 1);
        assert_eq!(e.rejected[0].group, "cloud-b");
    }

    #[test]
    fn an_option_mixing_governed_and_ungoverned_pods() {
        let s = two_policies(Some(8), 0);
        let e = best_options(
            &s,
            &Ledger::new(),
            &groups(),
            &[
                opt_for("dc-extra", &["w0", "a0", "a1"]),
                // a0 belongs in local: the ungoverned w0 does not save the option.
                opt_for("cloud-a", &["w0", "a0"]),
                // Ungoverned pods only: no unit, ranked by price like any other.
                opt_for("cloud-b", &["w0"]),
            ],
            t(2000),
        );
        assert_eq!(ids(&e), ["cloud-b", "dc-extra"]);
        assert!(e.best[0].units.is_empty());
        assert_eq!(e.best[1].units, [(key("a"), Some(0))].into());
        assert!(
            e.best[1]
                .reason
                .starts_with("1 node(s) for 3 pod(s) (ns/a: unit \"local\")"),
            "{}",
            e.best[1].reason
        );
        assert_eq!(e.rejected.len(), 1);
        assert!(
            e.rejected[0].group == "cloud-a"
                && e.rejected[0]
                    .reason
                    .contains("pod ns/a0 belongs in unit \"local\""),
            "{:?}",
            e.rejected
        );
    }
}

/// Property: random small worlds of one or two policies sharing node pools,
/// checked against a naive reference of "the earliest unit with room under
/// its max that CA can grow for the pod".
#[cfg(test)]
mod props {
    use proptest::prelude::{Just, ProptestConfig, any, prop_assert, prop_assert_eq, proptest};
    use proptest::strategy::Strategy as Gen;

    use super::*;
    use crate::decision::policy::{NextUnitPolicy, Strategy};
    use crate::decision::testutil::{bound, labels, mk_node, mk_pod, t, unit};

    const POOLS: [&str; 4] = ["p0", "p1", "p2", "p3"];
    const APPS: [&str; 3] = ["a", "b", "web"];

    #[derive(Clone, Debug)]
    struct PolicySpec {
        /// (pool index, max) per unit, pools distinct.
        units: Vec<(usize, Option<u32>)>,
        required: bool,
        next: NextUnitPolicy,
    }

    #[derive(Clone, Debug)]
    struct GroupSpec {
        /// Pool of the template node; `None`: outside every unit.
        pool: Option<usize>,
        gpus: i64,
        price: u64,
    }

    #[derive(Clone, Debug)]
    struct OptSpec {
        nodes: u32,
        /// Bit i: the option names pending pod i.
        mask: u8,
        /// Rotation of the pod list (CA's order is arbitrary).
        rot: usize,
    }

    #[derive(Clone, Debug)]
    struct World {
        policies: Vec<PolicySpec>,
        groups: Vec<GroupSpec>,
        /// (app, pool) of running pods.
        bound: Vec<(usize, usize)>,
        /// (app, gpus) of pending pods.
        pending: Vec<(usize, i64)>,
        /// At most one option per group, same index.
        options: Vec<Option<OptSpec>>,
    }

    fn policy_spec() -> impl Gen<Value = PolicySpec> {
        (
            Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
            proptest::collection::vec(proptest::option::of(0..4u32), 2..=3),
            any::<bool>(),
            proptest::sample::select(vec![
                NextUnitPolicy::LackResourceOrExceedMax,
                NextUnitPolicy::ExceedMax,
                NextUnitPolicy::TimeoutOrExceedMax,
                NextUnitPolicy::LackResourceAndNoTerminating,
            ]),
        )
            .prop_map(|(pools, maxes, required, next)| PolicySpec {
                units: pools.into_iter().zip(maxes).collect(),
                required,
                next,
            })
    }

    fn world() -> impl Gen<Value = World> {
        (
            proptest::collection::vec(policy_spec(), 1..=2),
            proptest::collection::vec(
                (proptest::option::of(0..4usize), 1..=4i64, 1..=4u64).prop_map(
                    |(pool, gpus, price)| GroupSpec {
                        pool,
                        gpus,
                        price: price * 1_000_000,
                    },
                ),
                2..=5,
            ),
            proptest::collection::vec((0..3usize, 0..4usize), 0..8),
            proptest::collection::vec((0..3usize, 1..=2i64), 1..=6),
            proptest::collection::vec(
                proptest::option::weighted(
                    0.8,
                    (1..=3u32, any::<u8>(), 0..6usize).prop_map(|(nodes, mask, rot)| OptSpec {
                        nodes,
                        mask,
                        rot,
                    }),
                ),
                5,
            ),
        )
            .prop_map(|(policies, groups, bound, pending, mut options)| {
                options.truncate(groups.len());
                World {
                    policies,
                    groups,
                    bound,
                    pending,
                    options,
                }
            })
    }

    fn pool_label(pool: Option<usize>) -> &'static str {
        pool.map_or("none", |p| POOLS[p])
    }

    /// The snapshot, node groups and CA's options for a world.
    fn build(w: &World) -> (Snapshot, BTreeMap<String, NodeGroup>, Vec<ExpansionOption>) {
        let mut s = Snapshot::new();
        for pool in POOLS {
            s.upsert_node(mk_node(&format!("n-{pool}"), &[("pool", pool)], 64));
        }
        for (i, spec) in w.policies.iter().enumerate() {
            let units = spec
                .units
                .iter()
                .enumerate()
                .map(|(u, &(pool, max))| unit(&format!("u{u}"), &[("pool", POOLS[pool])], max))
                .collect();
            let mut p = Policy::new("ns", APPS[i], units);
            p.selector = labels(&[("app", APPS[i])]);
            p.strategy = if spec.required {
                Strategy::Required
            } else {
                Strategy::Prefer
            };
            p.when_try_next_units = spec.next;
            s.upsert_policy(p);
        }
        for (i, &(app, pool)) in w.bound.iter().enumerate() {
            let pod = mk_pod(&format!("run{i}"), &[("app", APPS[app])], 1);
            s.upsert_pod(bound(pod, &format!("n-{}", POOLS[pool])));
        }
        for (i, &(app, gpus)) in w.pending.iter().enumerate() {
            s.upsert_pod(mk_pod(&format!("pend{i}"), &[("app", APPS[app])], gpus));
        }
        let groups = w
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let id = format!("g{i}");
                let group = NodeGroup {
                    id: id.clone(),
                    labels: labels(&[("pool", pool_label(g.pool))]),
                    allocatable: Resources::new().with(GPU, g.gpus),
                    price_per_node_hour_micros: g.price,
                };
                (id, group)
            })
            .collect();
        let options = w
            .options
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                let o = o.as_ref()?;
                let mut pods: Vec<String> = (0..w.pending.len())
                    .filter(|b| o.mask & (1 << b) != 0)
                    .map(|b| format!("pend{b}"))
                    .collect();
                let n = pods.len().max(1);
                pods.rotate_left(o.rot % n);
                Some(ExpansionOption {
                    group: format!("g{i}"),
                    node_count: o.nodes,
                    pods,
                })
            })
            .collect();
        (s, groups, options)
    }

    /// The reference: index of the policy governing pending pod `uid`
    /// (policy i selects `app=APPS[i]` only).
    fn naive_policy(w: &World, uid: &str) -> Option<usize> {
        let i: usize = uid.strip_prefix("pend")?.parse().ok()?;
        let app = w.pending.get(i)?.0;
        (app < w.policies.len()).then_some(app)
    }

    /// The reference: unit of policy `p` a node of group `g` belongs to.
    fn naive_unit(w: &World, p: usize, g: &str) -> Option<usize> {
        let i: usize = g.strip_prefix('g')?.parse().ok()?;
        let pool = w.groups.get(i)?.pool?;
        w.policies[p].units.iter().position(|&(up, _)| up == pool)
    }

    /// The reference: pending pods of policy `p` that no option names
    /// (they wait for nodes being created and may take any unit's room).
    fn naive_waiting(w: &World, p: usize) -> usize {
        (0..w.pending.len())
            .filter(|&i| w.pending[i].0 == p)
            .filter(|&i| !w.options.iter().flatten().any(|o| o.mask & (1 << i) != 0))
            .count()
    }

    /// The reference: running pods of policy `p` on unit `u`.
    fn naive_running(w: &World, p: usize, u: usize) -> usize {
        let pool = w.policies[p].units[u].0;
        w.bound.iter().filter(|&&b| b == (p, pool)).count()
    }

    /// The reference: unit `u` of policy `p` surely has room for one more
    /// pod of `p` under its max, even if every waiting pod went there.
    fn naive_has_room(w: &World, p: usize, u: usize) -> bool {
        let max = w.policies[p].units[u].1;
        let taken = naive_running(w, p, u) + naive_waiting(w, p);
        max.is_none_or(|m| taken < usize::try_from(m).unwrap_or(usize::MAX))
    }

    fn projection(e: &Expansion) -> Vec<(String, u32, BTreeMap<PolicyKey, Option<usize>>)> {
        e.best
            .iter()
            .map(|o| (o.option.group.clone(), o.option.node_count, o.units.clone()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn never_keeps_a_later_unit_when_an_earlier_one_can_host_the_pod(w in world()) {
            let (s, groups, options) = build(&w);
            let now = t(2000);
            let e = best_options(&s, &Ledger::new(), &groups, &options, now);

            // Every option is answered exactly once.
            let mut answered: Vec<&str> = e.best.iter().map(|o| o.option.group.as_str())
                .chain(e.rejected.iter().map(|r| r.group.as_str()))
                .collect();
            answered.sort_unstable();
            let mut asked: Vec<&str> = options.iter().map(|o| o.group.as_str()).collect();
            asked.sort_unstable();
            prop_assert_eq!(answered, asked);

            for kept in &e.best {
                let asked = options.iter().find(|o| o.group == kept.option.group);
                prop_assert!(asked.is_some_and(|o| o.pods == kept.option.pods));
                prop_assert!(asked.is_some_and(|o| (1..=o.node_count).contains(&kept.option.node_count)));
                let mut want_units = BTreeMap::new();
                for uid in &kept.served {
                    let Some(p) = naive_policy(&w, uid) else { continue };
                    let here = naive_unit(&w, p, &kept.option.group);
                    want_units.insert(key(p), here);
                    let earlier = here.unwrap_or(w.policies[p].units.len());
                    for u in 0..earlier {
                        let can_host = naive_has_room(&w, p, u)
                            && options.iter().any(|o| {
                                naive_unit(&w, p, &o.group) == Some(u) && o.pods.contains(uid)
                            });
                        prop_assert!(
                            !can_host,
                            "{} kept for {} in unit {:?} of policy {}, but unit {} can host it: {:?}",
                            kept.option.group, uid, here, APPS[p], u, e
                        );
                    }
                }
                prop_assert_eq!(&kept.units, &want_units);

                // Never more nodes than the unit's max leaves room for.
                for uid in &kept.served {
                    let Some(p) = naive_policy(&w, uid) else { continue };
                    let Some(u) = naive_unit(&w, p, &kept.option.group) else { continue };
                    let Some(max) = w.policies[p].units[u].1 else { continue };
                    let running = naive_running(&w, p, u);
                    let max = usize::try_from(max).unwrap_or(usize::MAX);
                    prop_assert!(running < max, "{} kept for {} in a full unit: {:?}", kept.option.group, uid, e);
                    let i: usize = uid.strip_prefix("pend").and_then(|x| x.parse().ok()).unwrap_or(0);
                    let g: usize = kept.option.group.strip_prefix('g').and_then(|x| x.parse().ok()).unwrap_or(0);
                    let per_node = usize::try_from((w.groups[g].gpus / w.pending[i].1).max(1)).unwrap_or(1);
                    let nodes = usize::try_from(kept.option.node_count).unwrap_or(usize::MAX);
                    prop_assert!(
                        (nodes - 1) * per_node < max - running,
                        "{} nodes of {} for {}: more than max {} allows with {} running: {:?}",
                        nodes, kept.option.group, uid, max, running, e
                    );
                }
            }

            // Ranked by price, then waste, then group id.
            for pair in e.best.windows(2) {
                let k = |o: &RankedOption| (o.price_micros, o.waste_permille, o.option.group.clone());
                prop_assert!(k(&pair[0]) < k(&pair[1]), "{:?}", e.best);
            }

            // CA's order of options, and of pods on an option, changes nothing.
            let mut shuffled: Vec<ExpansionOption> = options.iter().rev().cloned().collect();
            for o in &mut shuffled {
                o.pods.reverse();
            }
            let again = best_options(&s, &Ledger::new(), &groups, &shuffled, now);
            prop_assert_eq!(projection(&again), projection(&e));
        }
    }

    fn key(p: usize) -> PolicyKey {
        PolicyKey {
            namespace: "ns".into(),
            name: APPS[p].into(),
        }
    }
}
