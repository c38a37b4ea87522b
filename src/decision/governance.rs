//! Which policy governs a pod (DESIGN semantic 6).
//!
//! A pod is governed by a policy of its own namespace whose selector matches
//! its labels. Several matching policies are a user error: the oldest wins
//! (ties broken by name, so every driver agrees) and the others are reported
//! as conflicts, for an Event on the pod and a condition on each loser.

use super::policy::{Policy, PolicyKey};
use super::snapshot::{Pod, Snapshot};

/// The outcome of [`governing_policy`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Governance<'a> {
    /// The policy that governs the pod, if any.
    pub policy: Option<&'a Policy>,
    /// Other policies that also select the pod and lost to the oldest.
    pub conflicts: Vec<PolicyKey>,
}

/// Finds the policy governing `pod` among `policies`: same namespace,
/// selector matches, oldest `created` first, then name.
#[must_use]
pub fn governing_policy<'a>(
    pod: &Pod,
    policies: impl IntoIterator<Item = &'a Policy>,
) -> Governance<'a> {
    let mut matching: Vec<&Policy> = policies
        .into_iter()
        .filter(|p| p.selects_pod(pod))
        .collect();
    matching.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
    let mut it = matching.into_iter();
    Governance {
        policy: it.next(),
        conflicts: it.map(|p| p.key.clone()).collect(),
    }
}

/// [`governing_policy`] over the policies of the pod's namespace in a snapshot.
#[must_use]
pub fn governing_policy_in<'a>(snapshot: &'a Snapshot, pod: &Pod) -> Governance<'a> {
    governing_policy(pod, snapshot.policies_in(&pod.namespace))
}

/// True when `policy` is the one governing `pod` in `snapshot`.
#[must_use]
pub fn governs(snapshot: &Snapshot, policy: &Policy, pod: &Pod) -> bool {
    policy.selects_pod(pod)
        && governing_policy_in(snapshot, pod)
            .policy
            .is_some_and(|p| p.key == policy.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::snapshot::Labels;
    use crate::decision::testutil::{labels, mk_pod, unit};
    use crate::decision::time::Time;

    fn policy(name: &str, created: i64, selector: &[(&str, &str)]) -> Policy {
        let mut p = Policy::new("ns", name, vec![unit("u", &[("pool", "x")], None)]);
        p.created = Time::from_secs(created);
        p.selector = labels(selector);
        p
    }

    #[test]
    fn oldest_matching_policy_wins_and_others_conflict() {
        let pod = mk_pod("p", &[("app", "llm"), ("tier", "gpu")], 1);
        let ps = [
            policy("newer", 20, &[("app", "llm")]),
            policy("older", 10, &[("tier", "gpu")]),
            policy("other", 5, &[("app", "web")]),
        ];
        let g = governing_policy(&pod, &ps);
        assert_eq!(g.policy.unwrap().key.name, "older");
        assert_eq!(g.conflicts.len(), 1);
        assert_eq!(g.conflicts[0].name, "newer");
    }

    #[test]
    fn same_age_policies_are_ordered_by_name() {
        let pod = mk_pod("p", &[], 1);
        let ps = [policy("b", 10, &[]), policy("a", 10, &[])];
        assert_eq!(governing_policy(&pod, &ps).policy.unwrap().key.name, "a");
    }

    #[test]
    fn empty_selector_governs_every_pod_of_the_namespace_only() {
        let mut pod = mk_pod("p", &[], 1);
        pod.labels = Labels::new();
        let ps = [policy("all", 1, &[])];
        assert!(governing_policy(&pod, &ps).policy.is_some());
        pod.namespace = "elsewhere".into();
        assert!(governing_policy(&pod, &ps).policy.is_none());
    }
}
