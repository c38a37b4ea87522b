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

use std::collections::{BTreeMap, BTreeSet};

use super::admission::{Admission, UnitState, admissible_unit};
use super::governance::governing_policy_in;
use super::ledger::Ledger;
use super::policy::{Policy, PolicyKey};
use super::quantity::{GPU, Resources};
use super::snapshot::{Labels, Node, Pod, Snapshot};
use super::time::Time;
use super::usage::unit_usage;

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
    /// Index of the unit the new nodes belong to, for governed pods.
    pub unit: Option<usize>,
    /// Price of the added nodes per hour, micro-units.
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

/// Where a pending governed pod would be admitted if every unit that has an
/// option gained a node: `Some(Some(unit))`, `Some(None)` for nodes outside
/// every unit, `None` when it must not trigger growth (waits, exhausted,
/// rejected). Also returns the unit's remaining pod headroom.
fn target(
    snapshot: &Snapshot,
    ledger: &Ledger,
    policy: &Policy,
    pod: &Pod,
    growable: &BTreeSet<Option<usize>>,
    now: Time,
) -> Option<(Option<usize>, Option<u32>)> {
    let group = policy.group_of(pod).ok()?;
    let usage = unit_usage(snapshot, ledger, policy, &group, &pod.uid, now);
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
            Some((Some(unit), headroom))
        }
        Admission::OutsideUnits { .. } if growable.contains(&None) => Some((None, None)),
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

/// Filters and ranks CA's scale-up `options` for the pending pods they name.
/// `groups` describes every node group by id.
#[must_use]
pub fn best_options(
    snapshot: &Snapshot,
    ledger: &Ledger,
    groups: &BTreeMap<String, NodeGroup>,
    options: &[ExpansionOption],
    now: Time,
) -> Expansion {
    let mut out = Expansion::default();
    let mut growable: BTreeMap<PolicyKey, BTreeSet<Option<usize>>> = BTreeMap::new();
    for opt in options {
        let Some(group) = groups.get(&opt.group) else {
            out.rejected.push(RejectedOption {
                group: opt.group.clone(),
                reason: "unknown node group".into(),
            });
            continue;
        };
        let node = template(group);
        let mut unit_of_group: Option<usize> = None;
        let mut allowed_pods: u32 = 0;
        let mut requests = Resources::new();
        let mut reject: Option<String> = None;
        let mut headroom_nodes: Option<u32> = None;
        for uid in &opt.pods {
            let Some(pod) = snapshot.pod(uid) else {
                continue;
            };
            let Some(policy) = governing_policy_in(snapshot, pod).policy else {
                allowed_pods += 1;
                requests.add(&pod.requests);
                continue;
            };
            let unit_here = policy.unit_of_node(&node);
            unit_of_group = unit_here;
            let growable = growable
                .entry(policy.key.clone())
                .or_insert_with(|| growable_units(policy, groups, options));
            match target(snapshot, ledger, policy, pod, growable, now) {
                Some((unit, headroom)) if unit == unit_here => {
                    allowed_pods += 1;
                    requests.add(&pod.requests);
                    if let Some(h) = headroom {
                        let per_node = pods_per_node(&group.allocatable, &pod.requests).max(1);
                        let nodes = h.div_ceil(per_node);
                        headroom_nodes = Some(headroom_nodes.map_or(nodes, |x: u32| x.min(nodes)));
                    }
                }
                Some((Some(u), _)) => {
                    reject = Some(format!(
                        "pod {}/{} belongs in unit {:?} of ResourcePolicy {} first",
                        pod.namespace, pod.name, policy.units[u].name, policy.key
                    ));
                }
                Some((None, _)) => {
                    reject = Some(format!(
                        "pod {}/{} goes to nodes outside every unit of ResourcePolicy {}",
                        pod.namespace, pod.name, policy.key
                    ));
                }
                None => {
                    reject = Some(format!(
                        "pod {}/{} must not trigger growth now (its policy {} makes it wait, or every unit is at its cap)",
                        pod.namespace, pod.name, policy.key
                    ));
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
        if node_count == 0 || allowed_pods == 0 {
            out.rejected.push(RejectedOption {
                group: opt.group.clone(),
                reason: "the unit has no headroom under its max".into(),
            });
            continue;
        }
        let res = if requests.get(GPU) > 0 { GPU } else { "cpu" };
        let capacity = i64::from(node_count)
            .saturating_mul(group.allocatable.get(res))
            .max(1);
        let used = requests.get(res).clamp(0, capacity);
        let waste_permille = u32::try_from((capacity - used) * 1000 / capacity).unwrap_or(1000);
        let price_micros = u64::from(node_count).saturating_mul(group.price_per_node_hour_micros);
        out.best.push(RankedOption {
            option: ExpansionOption {
                group: opt.group.clone(),
                node_count,
                pods: opt.pods.clone(),
            },
            unit: unit_of_group,
            price_micros,
            waste_permille,
            reason: format!("{node_count} node(s) for {allowed_pods} pod(s); price {price_micros} µ/h; waste {waste_permille}‰"),
        });
    }
    out.best.sort_by(|a, b| {
        (
            a.unit.unwrap_or(usize::MAX),
            a.price_micros,
            a.waste_permille,
            &a.option.group,
        )
            .cmp(&(
                b.unit.unwrap_or(usize::MAX),
                b.price_micros,
                b.waste_permille,
                &b.option.group,
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
}
