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

/// True when `policy` is the one governing `pod` in `snapshot`: it selects
/// the pod and no older policy of the namespace does. Same answer as
/// [`governing_policy_in`], without allocating (counting calls it per pod).
#[must_use]
pub fn governs(snapshot: &Snapshot, policy: &Policy, pod: &Pod) -> bool {
    let rank = (policy.created, &policy.key);
    policy.selects_pod(pod)
        && !snapshot
            .policies_in(&pod.namespace)
            .any(|other| (other.created, &other.key) < rank && other.selects_pod(pod))
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
    fn governs_agrees_with_governing_policy() {
        let mut s = Snapshot::new();
        let ps = [
            policy("b", 10, &[("app", "llm")]),
            policy("a", 10, &[]),
            policy("c", 5, &[("tier", "x")]),
        ];
        for p in &ps {
            s.upsert_policy(p.clone());
        }
        for labels_ in [&[("app", "llm")][..], &[("tier", "x")], &[]] {
            let pod = mk_pod("p", labels_, 1);
            let winner = governing_policy_in(&s, &pod)
                .policy
                .map(|p| p.key.name.clone());
            for p in &ps {
                assert_eq!(
                    governs(&s, p, &pod),
                    winner.as_deref() == Some(p.key.name.as_str())
                );
            }
        }
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
