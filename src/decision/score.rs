//! Prioritize scores (0–10, kube-scheduler's extender range).
//!
//! Scores split the range into one band per unit, earliest unit highest, so
//! a node of an earlier unit always outscores every node of a later unit;
//! nodes outside every unit score 0. Within a band, GPU bin-packing: the
//! fuller the node would be with the pod placed, the higher, so whole nodes
//! stay free for large pods and cloud nodes drain and can be removed.
//!
//! ```text
//!  2 units:  unit 0 → 6..=10   unit 1 → 1..=5   outside → 0
//! ```
//!
//! Filter already returns one unit only; scores keep the order when another
//! extender or a stale answer widens the set, and rank nodes inside the unit.
//! The scheduler multiplies them by the extender's `weight` × 10.

use super::governance::governing_policy_in;
use super::policy::{MAX_UNITS, Policy};
use super::quantity::GPU;
use super::snapshot::{Pod, Snapshot};

/// The highest score kube-scheduler accepts from an extender.
pub const MAX_SCORE: u8 = 10;

/// One node's score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeScore<'n> {
    /// Node name (borrowed from the request).
    pub node: &'n str,
    /// 0..=[`MAX_SCORE`].
    pub score: u8,
}

/// The score band `(lowest, highest)` of unit `unit` in a policy with
/// `units` units.
#[must_use]
pub fn unit_band(units: usize, unit: usize) -> (u8, u8) {
    let units = units.clamp(1, MAX_UNITS);
    let width = usize::from(MAX_SCORE) / units;
    let top = usize::from(MAX_SCORE).saturating_sub(unit.min(units - 1) * width);
    let low = top + 1 - width;
    (
        u8::try_from(low).unwrap_or(0),
        u8::try_from(top).unwrap_or(0),
    )
}

/// The resource bin-packing looks at: GPUs if the pod asks for any, else CPU.
fn packing_resource(pod: &Pod) -> &'static str {
    if pod.requests.get(GPU) > 0 {
        GPU
    } else {
        "cpu"
    }
}

/// `used` of `cap`, scaled to `0..=steps` and rounded (0 when the node has
/// none of the resource).
fn level(cap: i64, used: i128, steps: u8) -> u8 {
    let cap = i128::from(cap);
    if cap <= 0 || steps == 0 {
        return 0;
    }
    let used = used.clamp(0, cap);
    let level = (used * i128::from(steps) * 2 + cap) / (2 * cap);
    u8::try_from(level.clamp(0, i128::from(steps))).unwrap_or(0)
}

/// How full `node` would be with `pod` placed, scaled to `0..=steps`.
fn fullness(snapshot: &Snapshot, node: &str, pod: &Pod, steps: u8) -> u8 {
    let res = packing_resource(pod);
    let Some(n) = snapshot.node(node) else {
        return 0;
    };
    let held = snapshot.allocated_ref(node).map_or(0, |a| a.get(res));
    let used = i128::from(held) + i128::from(pod.requests.get(res));
    level(n.allocatable.get(res), used, steps)
}

/// The score of a node in `unit` (`None`: outside every unit) whose
/// fullness `level_in(steps)` gives.
fn score_in(policy: &Policy, unit: Option<usize>, level_in: impl FnOnce(u8) -> u8) -> u8 {
    match unit {
        Some(u) => {
            let (low, high) = unit_band(policy.units.len(), u);
            low + level_in(high - low)
        }
        None => 0,
    }
}

/// Scores `nodes` for `pod` under `policy`. For a GPU pod under one of the
/// snapshot's own policies, every node's unit and GPUs come from one row
/// lookup ([`super::snapshot::UnitLookup::get_many_gpus`]); otherwise
/// [`scores_by_name`].
#[must_use]
pub fn scores_for<'n>(
    snapshot: &Snapshot,
    policy: &Policy,
    pod: &Pod,
    nodes: &[&'n str],
) -> Vec<NodeScore<'n>> {
    if packing_resource(pod) == GPU
        && let Some(rows) = snapshot.units_of(policy).get_many_gpus(nodes)
    {
        let asked = i128::from(pod.requests.get(GPU));
        return nodes
            .iter()
            .zip(rows)
            .map(|(&node, (unit, cap, held))| NodeScore {
                node,
                score: score_in(policy, unit.get().flatten(), |steps| {
                    level(cap, i128::from(held) + asked, steps)
                }),
            })
            .collect();
    }
    scores_by_name(snapshot, policy, pod, nodes)
}

/// [`scores_for`] by a name search per node: for pods without GPUs and for
/// policies the snapshot does not hold, and the reference the row lookup
/// is tested against.
#[must_use]
pub fn scores_by_name<'n>(
    snapshot: &Snapshot,
    policy: &Policy,
    pod: &Pod,
    nodes: &[&'n str],
) -> Vec<NodeScore<'n>> {
    let units = snapshot.units_of(policy);
    nodes
        .iter()
        .map(|&name| NodeScore {
            node: name,
            score: score_in(policy, units.get(name).flatten(), |steps| {
                fullness(snapshot, name, pod, steps)
            }),
        })
        .collect()
}

/// Scores `nodes` for `pod`: by its governing policy, or 0 everywhere for
/// pods no policy governs (Spillway stays neutral on them).
#[must_use]
pub fn scores<'n>(snapshot: &Snapshot, pod: &Pod, nodes: &[&'n str]) -> Vec<NodeScore<'n>> {
    match governing_policy_in(snapshot, pod).policy {
        Some(policy) => scores_for(snapshot, policy, pod, nodes),
        None => nodes
            .iter()
            .map(|&node| NodeScore { node, score: 0 })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::decision::snapshot::PodPhase;
    use crate::decision::testutil::*;

    /// A change to the snapshot, applied in order.
    #[derive(Clone, Debug)]
    enum Op {
        /// Node `n` with pool label `pool` and `gpus` GPUs.
        Node {
            n: u8,
            pool: u8,
            gpus: i64,
        },
        RemoveNode(u8),
        /// Pod `p` on node `n` (or pending), asking `gpus`.
        Pod {
            p: u8,
            n: Option<u8>,
            gpus: i64,
            done: bool,
        },
        RemovePod(u8),
        Policy,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6u8, 0..3u8, 0..9i64).prop_map(|(n, pool, gpus)| Op::Node { n, pool, gpus }),
            (0..6u8).prop_map(Op::RemoveNode),
            (
                0..12u8,
                proptest::option::of(0..7u8),
                0..4i64,
                any::<bool>()
            )
                .prop_map(|(p, n, gpus, done)| Op::Pod { p, n, gpus, done }),
            (0..12u8).prop_map(Op::RemovePod),
            Just(Op::Policy),
        ]
    }

    fn policy() -> Policy {
        Policy::new(
            "ns",
            "p",
            vec![
                unit("a", &[("pool", "a")], None),
                unit("b", &[("pool", "b")], None),
            ],
        )
    }

    /// The naive model: the node's unit by label match, its GPUs in use
    /// summed over every pod that holds it.
    fn naive(s: &Snapshot, policy: &Policy, pod: &Pod, name: &str) -> u8 {
        let Some(node) = s.node(name) else { return 0 };
        let Some(u) = policy.unit_of_node(node) else {
            return 0;
        };
        let held: i64 = s
            .pods_in("ns")
            .filter(|p| p.holding_node() == Some(name))
            .map(|p| p.requests.get(GPU))
            .sum();
        let cap = node.allocatable.get(GPU);
        let (low, high) = unit_band(policy.units.len(), u);
        let steps = i64::from(high - low);
        if cap <= 0 {
            return low;
        }
        let used = (held + pod.requests.get(GPU)).clamp(0, cap);
        low + u8::try_from((used * steps * 2 + cap) / (2 * cap)).unwrap()
    }

    proptest! {
        /// Scores from the row lookup equal the naive model's after any
        /// sequence of node, pod and policy changes (nodes removed and
        /// re-added, pods seen before their node, finished pods).
        #[test]
        fn row_scores_match_the_naive_model(ops in proptest::collection::vec(op(), 0..60), asked in 1..3i64) {
            let mut s = Snapshot::new();
            for o in ops {
                match o {
                    Op::Node { n, pool, gpus } => {
                        s.upsert_node(mk_node(&format!("n{n}"), &[("pool", ["a", "b", "x"][pool as usize])], gpus));
                    }
                    Op::RemoveNode(n) => { s.remove_node(&format!("n{n}")); }
                    Op::Pod { p, n, gpus, done } => {
                        let mut pod = mk_pod(&format!("p{p}"), &[("app", "x")], gpus);
                        if let Some(n) = n {
                            pod = bound(pod, &format!("n{n}"));
                        }
                        if done {
                            pod.phase = PodPhase::Succeeded;
                        }
                        s.upsert_pod(pod);
                    }
                    Op::RemovePod(p) => { s.remove_pod(&format!("p{p}")); }
                    Op::Policy => s.upsert_policy(policy()),
                }
            }
            s.upsert_policy(policy());
            let policy = s.policies().next().unwrap().clone();
            let own = s.policies().next().unwrap();
            let pod = mk_pod("new", &[("app", "x")], asked);
            let names: Vec<String> = (0..7).map(|n| format!("n{n}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let fast = scores_for(&s, own, &pod, &names);
            let by_name = scores_by_name(&s, &policy, &pod, &names);
            for (i, name) in names.iter().enumerate() {
                let want = naive(&s, &policy, &pod, name);
                prop_assert_eq!(fast[i].score, want, "row lookup, {}", name);
                prop_assert_eq!(by_name[i].score, want, "by name, {}", name);
            }
        }
    }

    #[test]
    fn bands_are_disjoint_and_ordered_for_every_unit_count() {
        for n in 1..=MAX_UNITS {
            let mut prev_low = MAX_SCORE + 1;
            for u in 0..n {
                let (low, high) = unit_band(n, u);
                assert!(
                    low >= 1 && low <= high && high < prev_low,
                    "n={n} u={u}: {low}..{high}"
                );
                prev_low = low;
            }
        }
        assert_eq!(unit_band(2, 0), (6, 10));
        assert_eq!(unit_band(2, 1), (1, 5));
        assert_eq!(unit_band(1, 0), (1, 10));
    }

    #[test]
    fn earlier_unit_outscores_later_and_fuller_nodes_win_inside_a_unit() {
        let mut s = Snapshot::new();
        s.upsert_node(mk_node("l-empty", &[("pool", "l")], 8));
        s.upsert_node(mk_node("l-busy", &[("pool", "l")], 8));
        s.upsert_node(mk_node("c-full", &[("pool", "c")], 8));
        s.upsert_node(mk_node("x", &[("pool", "x")], 8));
        s.upsert_pod(bound(mk_pod("a", &[("app", "other")], 6), "l-busy"));
        s.upsert_pod(bound(mk_pod("b", &[("app", "other")], 7), "c-full"));
        let p = Policy::new(
            "ns",
            "p",
            vec![
                unit("l", &[("pool", "l")], None),
                unit("c", &[("pool", "c")], None),
            ],
        );
        s.upsert_policy(p);
        let pod = mk_pod("new", &[], 1);
        let names = ["l-empty", "l-busy", "c-full", "x", "ghost"];
        let got: Vec<u8> = scores(&s, &pod, &names)
            .into_iter()
            .map(|x| x.score)
            .collect();
        // l-empty: 1/8 full → 6 + round(0.125*4)=6+1; l-busy: 7/8 → 6+round(3.5)=10
        assert_eq!(got, [7, 10, 5, 0, 0]);
    }

    #[test]
    fn ungoverned_pods_score_zero() {
        let mut s = Snapshot::new();
        s.upsert_node(mk_node("n", &[("pool", "l")], 8));
        let pod = mk_pod("p", &[], 1);
        assert_eq!(scores(&s, &pod, &["n"])[0].score, 0);
    }
}
