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

/// How full `node` would be with `pod` placed, scaled to `0..=steps`.
fn fullness(snapshot: &Snapshot, node: &str, pod: &Pod, steps: u8) -> u8 {
    let res = packing_resource(pod);
    let Some(n) = snapshot.node(node) else {
        return 0;
    };
    let cap = i128::from(n.allocatable.get(res));
    if cap <= 0 || steps == 0 {
        return 0;
    }
    let held = snapshot.allocated_ref(node).map_or(0, |a| a.get(res));
    let used = i128::from(held) + i128::from(pod.requests.get(res));
    let used = used.clamp(0, cap);
    let level = (used * i128::from(steps) * 2 + cap) / (2 * cap);
    u8::try_from(level.clamp(0, i128::from(steps))).unwrap_or(0)
}

/// Scores `nodes` for `pod` under `policy`.
#[must_use]
pub fn scores_for<'n>(
    snapshot: &Snapshot,
    policy: &Policy,
    pod: &Pod,
    nodes: &[&'n str],
) -> Vec<NodeScore<'n>> {
    let units = snapshot.units_of(policy);
    nodes
        .iter()
        .map(|&name| {
            let unit = units.get(name).flatten();
            let score = match unit {
                Some(u) => {
                    let (low, high) = unit_band(policy.units.len(), u);
                    low + fullness(snapshot, name, pod, high - low)
                }
                None => 0,
            };
            NodeScore { node: name, score }
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
    use super::*;
    use crate::decision::testutil::*;

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
