//! The Filter and Preempt decisions (DESIGN semantic 1): order is enforced
//! by Filter, not only by scores.
//!
//! ```text
//!  pod + feasible node names ─► governing policy ─► group ─► unit usage (+ledger)
//!        ─► admissible unit ─► FilterOutcome { eligible (one unit), failed, unresolvable }
//! ```
//!
//! Every input node lands in exactly one of `eligible`, `failed` (preemption
//! or time may help: later units, waits, cache lag) and `unresolvable` (full
//! units, nodes a `required` policy forbids, pods the policy rejects), each
//! non-eligible node with a reason naming the unit and its count.

use std::collections::BTreeMap;

use super::admission::cap_reached;
use super::admission::{Admission, Skip, UnitState, WaitCause, admissible_unit};
use super::governance::governing_policy_in;
use super::ledger::{Ledger, Reservation};
use super::policy::{GroupKey, Policy, PolicyKey, PreemptPolicy, Strategy};
use super::quantity::format_milli;
use super::reasons::NodeReasons;
use super::snapshot::{Pod, Snapshot};
use super::time::{Time, format_duration};
use super::usage::{UnitUsage, unit_usage};

/// The governing decision for one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No policy selects the pod: every node passes unchanged.
    Ungoverned,
    /// The policy cannot place the pod at all (e.g. a `matchLabelKeys`
    /// label is missing).
    Rejected {
        /// Human-readable reason.
        reason: String,
    },
    /// The policy's unit order applies.
    Admitted(Admission),
}

/// The answer to a Filter call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterOutcome<'n> {
    /// The governing policy, if any.
    pub policy: Option<PolicyKey>,
    /// Other policies that also select the pod (a user error to report).
    pub conflicts: Vec<PolicyKey>,
    /// The pod's `matchLabelKeys` group (when governed and complete).
    pub group: Option<GroupKey>,
    /// What was decided.
    pub decision: Decision,
    /// Per-unit usage for the pod's group, as counted for this decision.
    pub usage: Vec<UnitUsage>,
    /// Nodes the pod may go to, in input order (all in one unit), borrowed
    /// from the request.
    pub eligible: Vec<&'n str>,
    /// Rejected nodes where preemption or time may help, with reasons.
    pub failed: NodeReasons<'n>,
    /// Rejected nodes where preemption cannot help, with reasons.
    pub unresolvable: NodeReasons<'n>,
}

impl Default for FilterOutcome<'_> {
    /// No policy, no nodes: an ungoverned pod's outcome before its nodes are
    /// added.
    fn default() -> Self {
        Self {
            policy: None,
            conflicts: Vec::new(),
            group: None,
            decision: Decision::Ungoverned,
            usage: Vec::new(),
            eligible: Vec::new(),
            failed: NodeReasons::new(),
            unresolvable: NodeReasons::new(),
        }
    }
}

impl FilterOutcome<'_> {
    /// The unit the pod is admitted to, if any.
    #[must_use]
    pub fn chosen_unit(&self) -> Option<usize> {
        match &self.decision {
            Decision::Admitted(Admission::Unit { unit, .. }) => Some(*unit),
            _ => None,
        }
    }

    /// The wait clock to persist when the pod started waiting in this call.
    #[must_use]
    pub fn wait_since(&self) -> Option<Time> {
        match &self.decision {
            Decision::Admitted(Admission::Wait { since, .. }) => Some(*since),
            _ => None,
        }
    }

    /// The reservation to record for `pod` when it was admitted to a unit:
    /// the slot is held until `expires` unless a Bind confirms it.
    #[must_use]
    pub fn reservation(&self, pod: &Pod, expires: Time) -> Option<Reservation> {
        let unit = self.chosen_unit()?;
        Some(Reservation {
            namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
            policy: self.policy.clone()?,
            unit,
            group: self.group.clone().unwrap_or_default(),
            requests: pod.requests.clone(),
            node: None,
            expires,
        })
    }
}

/// A Filter request as the core sees it.
#[derive(Clone, Copy, Debug)]
pub struct FilterRequest<'a, 'n> {
    /// The pod being scheduled (from the request body, possibly newer than
    /// the snapshot's copy).
    pub pod: &'a Pod,
    /// Node names that passed kube-scheduler's own filters (the outcome
    /// borrows them).
    pub nodes: &'a [&'n str],
    /// The pod's persisted wait clock, if it has one.
    pub wait_since: Option<Time>,
    /// The current time.
    pub now: Time,
}

/// Decides a Filter call. Pure: the caller applies the reservation
/// ([`FilterOutcome::reservation`]) and persists the wait clock.
#[must_use]
pub fn filter<'n>(
    snapshot: &Snapshot,
    ledger: &Ledger,
    req: FilterRequest<'_, 'n>,
) -> FilterOutcome<'n> {
    filter_counted(snapshot, req, &mut |policy, group| {
        unit_usage(snapshot, ledger, policy, group, &req.pod.uid, req.now)
    })
}

/// [`filter`] with the unit counts supplied by `count(policy, group)`
/// instead of recounted from the snapshot. For drivers that keep counts
/// incrementally (a scheduling pass placing many pods); `count` must answer
/// what [`unit_usage`] would for the pod being filtered.
#[must_use]
pub fn filter_counted<'n>(
    snapshot: &Snapshot,
    req: FilterRequest<'_, 'n>,
    count: &mut dyn FnMut(&Policy, &GroupKey) -> Vec<UnitUsage>,
) -> FilterOutcome<'n> {
    let gov = governing_policy_in(snapshot, req.pod);
    let mut out = FilterOutcome {
        policy: gov.policy.map(|p| p.key.clone()),
        conflicts: gov.conflicts,
        ..FilterOutcome::default()
    };
    let Some(policy) = gov.policy else {
        out.eligible = req.nodes.to_vec();
        return out;
    };
    let group = match policy.group_of(req.pod) {
        Ok(g) => g,
        Err(missing) => {
            let reason = format!(
                "pod lacks label {:?} required by matchLabelKeys of ResourcePolicy {}",
                missing.key, policy.key
            );
            for &n in req.nodes {
                out.unresolvable.insert(n, &reason);
            }
            out.decision = Decision::Rejected { reason };
            return out;
        }
    };
    let usage = count(policy, &group);
    // Slot of every input node in `answers` below: its unit, `outside` for
    // none, `unknown` for a node not in the snapshot (4 bytes a node, so a
    // 5,000-node request keeps its working set small).
    let outside = policy.units.len();
    let unknown = outside + 1;
    let mut node_slots: Vec<u32> = Vec::with_capacity(req.nodes.len());
    let mut feasible_units = vec![false; outside];
    let units = snapshot.units_of(policy).get_many(req.nodes);
    for (&name, &unit) in req.nodes.iter().zip(&units) {
        let slot = match unit.get() {
            Some(Some(u)) => {
                if let Some(f) = feasible_units.get_mut(u) {
                    *f = true;
                }
                u
            }
            Some(None) => outside,
            None => {
                out.failed.insert(
                    name,
                    "node is not in Spillway's cache yet (just added?); the scheduler will retry",
                );
                unknown
            }
        };
        node_slots.push(u32::try_from(slot).unwrap_or(u32::MAX));
    }
    let states = unit_states(snapshot, policy, req.pod, &usage, &feasible_units);
    let admission = admissible_unit(policy, &req.pod.requests, &states, req.wait_since, req.now);
    let ctx = Messages {
        policy,
        usage: &usage,
        group: &group,
    };
    // The verdict depends on the node's unit only: decide it once per unit
    // (and once for "outside every unit"), not once per node, and keep the
    // id of its reason.
    let mut answers: Vec<Option<Answer>> = vec![None; outside + 1];
    out.eligible.reserve(req.nodes.len());
    out.failed.reserve(req.nodes.len());
    for (&name, &slot) in req.nodes.iter().zip(&node_slots) {
        let slot = slot as usize;
        if slot > outside {
            continue;
        }
        let unit = (slot < outside).then_some(slot);
        let answer = *answers[slot].get_or_insert_with(|| match verdict(&ctx, &admission, unit) {
            Verdict::Eligible => Answer::Eligible,
            Verdict::Failed(r) => Answer::Failed(out.failed.intern(&r)),
            Verdict::Unresolvable(r) => Answer::Unresolvable(out.unresolvable.intern(&r)),
        });
        match answer {
            Answer::Eligible => out.eligible.push(name),
            Answer::Failed(id) => out.failed.push(name, id),
            Answer::Unresolvable(id) => out.unresolvable.push(name, id),
        }
    }
    out.group = Some(group);
    out.usage = usage;
    out.decision = Decision::Admitted(admission);
    out
}

/// A node's answer in [`filter_counted`], with the id of its reason.
#[derive(Clone, Copy)]
enum Answer {
    Eligible,
    Failed(u32),
    Unresolvable(u32),
}

/// One line on where a governed pod goes and why: the unit it is admitted
/// to or waits in, and every unit passed over with its reason (the text of
/// Spillway's Events). `None` unless `out` is an admission decided under
/// `policy`.
#[must_use]
pub fn summary(policy: &Policy, out: &FilterOutcome) -> Option<String> {
    let Decision::Admitted(admission) = &out.decision else {
        return None;
    };
    if out.policy.as_ref() != Some(&policy.key) || out.usage.len() != policy.units.len() {
        return None;
    }
    let group = out.group.as_ref()?;
    let m = Messages {
        policy,
        usage: &out.usage,
        group,
    };
    let head = match admission {
        Admission::Unit { unit, .. } => format!(
            "admitted to unit {:?} ({}) of ResourcePolicy {}",
            m.unit_name(*unit),
            m.count(*unit),
            policy.key
        ),
        Admission::Wait { unit, cause, .. } => m.waiting(*unit, cause),
        Admission::OutsideUnits { .. } | Admission::Exhausted { .. } => m.outside(),
    };
    let skipped: Vec<String> = admission
        .skipped()
        .iter()
        .map(|s| m.skip(s.unit, &s.why))
        .collect();
    Some(if skipped.is_empty() {
        head
    } else {
        format!("{head}; passed over: {}", skipped.join("; "))
    })
}

/// The per-unit state the admission rule reads. Whether preemption may
/// help is estimated only where the rule can ask it: `BeforeNextUnit`, an
/// infeasible unit, and no earlier unit that takes the pod (the first
/// feasible unit under its caps ends the walk).
fn unit_states(
    snapshot: &Snapshot,
    policy: &Policy,
    pod: &Pod,
    usage: &[UnitUsage],
    feasible_units: &[bool],
) -> Vec<UnitState> {
    let mut decided = false;
    usage
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let feasible = feasible_units.get(i).copied().unwrap_or(false);
            let asked =
                !decided && !feasible && policy.preempt_policy == PreemptPolicy::BeforeNextUnit;
            if feasible && cap_reached(&policy.units[i], u, &pod.requests).is_none() {
                decided = true;
            }
            UnitState {
                usage: u.clone(),
                feasible,
                preemption_may_help: asked && preemption_may_help(snapshot, policy, i, pod),
            }
        })
        .collect()
}

/// True when some schedulable node of unit `unit` would fit `pod` if its
/// lower-priority, non-terminating pods were evicted. An estimate of
/// kube-scheduler's preemption dry run over resources only; the wait it
/// causes is bounded by the policy's `timeout`. A node without a victim of
/// lower priority is passed over before its free resources are summed, so
/// a unit of pods at the pod's own priority costs one pass over its pods.
#[must_use]
pub fn preemption_may_help(snapshot: &Snapshot, policy: &Policy, unit: usize, pod: &Pod) -> bool {
    if pod.never_preempts {
        return false;
    }
    let victim = |v: &Pod| v.priority < pod.priority && !v.is_terminating();
    let units = snapshot.units_of(policy);
    snapshot
        .nodes()
        .filter(|n| !n.unschedulable && units.get(&n.name) == Some(Some(unit)))
        .any(|n| {
            if !snapshot.pods_on(&n.name).any(victim) {
                return false;
            }
            let Some(mut room) = snapshot.free(&n.name) else {
                return false;
            };
            for v in snapshot.pods_on(&n.name).filter(|v| victim(v)) {
                room.add(&v.requests);
            }
            pod.requests.iter().all(|(r, need)| room.get(r) >= need)
        })
}

#[derive(Clone)]
enum Verdict {
    Eligible,
    Failed(String),
    Unresolvable(String),
}

struct Messages<'a> {
    policy: &'a Policy,
    usage: &'a [UnitUsage],
    group: &'a GroupKey,
}

impl Messages<'_> {
    fn unit_name(&self, u: usize) -> &str {
        &self.policy.units[u].name
    }

    /// `2/4 pods` or `2 pods`, with the group when there is one.
    fn count(&self, u: usize) -> String {
        let used = self.usage[u].pods;
        let mut s = match self.policy.units[u].max {
            Some(max) => format!("{used}/{max} pods"),
            None => format!("{used} pods"),
        };
        if !self.group.0.is_empty() {
            let pairs: Vec<String> = self
                .policy
                .match_label_keys
                .iter()
                .zip(&self.group.0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(" with ");
            s.push_str(&pairs.join(","));
        }
        s
    }

    fn skip(&self, u: usize, why: &Skip) -> String {
        let name = self.unit_name(u);
        match why {
            Skip::Full { count, max } => {
                let mut s = format!("unit {name:?} is full ({count}/{max})");
                if !self.group.0.is_empty() {
                    s = format!("unit {name:?} is full ({})", self.count(u));
                }
                s
            }
            Skip::ResourceCap {
                resource,
                used,
                request,
                cap,
            } => format!(
                "unit {name:?} would exceed maxResources {resource} ({} used + {} requested > {})",
                format_milli(*used),
                format_milli(*request),
                format_milli(*cap)
            ),
            Skip::NoRoom => format!("unit {name:?} has no feasible node"),
            Skip::WaitExpired { waited } => format!(
                "unit {name:?} had no room for {} (timeout {})",
                format_duration(*waited),
                format_duration(self.policy.timeout)
            ),
        }
    }

    fn outside(&self) -> String {
        match self.policy.strategy {
            Strategy::Prefer => format!(
                "node is in no unit of ResourcePolicy {}; such nodes are used only after all units",
                self.policy.key
            ),
            Strategy::Required => format!(
                "node is in no unit of ResourcePolicy {} (strategy: required)",
                self.policy.key
            ),
        }
    }

    fn waiting(&self, u: usize, cause: &WaitCause) -> String {
        let name = self.unit_name(u);
        let count = self.count(u);
        match cause {
            WaitCause::BelowCap => format!(
                "pod waits for room in unit {name:?} ({count}; whenTryNextUnits: ExceedMax)"
            ),
            WaitCause::Timeout { deadline } => format!(
                "pod waits for room in unit {name:?} ({count}; whenTryNextUnits: TimeoutOrExceedMax, timeout {}, moves on at {} ms)",
                format_duration(self.policy.timeout),
                deadline.as_millis()
            ),
            WaitCause::Terminating { count: n } => format!(
                "pod waits: {n} pod(s) of unit {name:?} are terminating (whenTryNextUnits: LackResourceAndNoTerminating)"
            ),
            WaitCause::Preemption { .. } => format!(
                "pod tries preemption in unit {name:?} before later units (preemptPolicy: BeforeNextUnit)"
            ),
        }
    }
}

fn verdict(m: &Messages<'_>, admission: &Admission, unit: Option<usize>) -> Verdict {
    // A node in a unit passed over for a cap: preemption cannot help there.
    if let Some(u) = unit
        && let Some(why) = admission.skip_of(u)
    {
        let msg = m.skip(u, why);
        return if why.is_cap() {
            Verdict::Unresolvable(msg)
        } else {
            Verdict::Failed(msg)
        };
    }
    match (admission, unit) {
        (_, None) if m.policy.strategy == Strategy::Required => Verdict::Unresolvable(m.outside()),
        (Admission::OutsideUnits { .. }, None) => Verdict::Eligible,
        (Admission::Unit { unit: k, .. }, Some(u)) if u == *k => Verdict::Eligible,
        // Repeated for every node of every later unit (thousands per
        // answer) and shown only if a later extender drops the chosen
        // unit's nodes: kept short, the counts are in the pod's Event.
        (Admission::Unit { unit: k, .. }, Some(_)) => Verdict::Failed(format!(
            "unit {:?} has room and comes first",
            m.unit_name(*k)
        )),
        (Admission::Unit { .. }, None) => Verdict::Failed(m.outside()),
        (Admission::Wait { unit: k, cause, .. }, _) => Verdict::Failed(m.waiting(*k, cause)),
        // Remaining: a unit node not passed over while every unit was (impossible
        // by construction), kept explicit rather than silently eligible.
        (Admission::OutsideUnits { .. } | Admission::Exhausted { .. }, Some(u)) => {
            Verdict::Failed(format!("unit {:?} cannot take the pod", m.unit_name(u)))
        }
        (Admission::Exhausted { .. }, None) => Verdict::Unresolvable(m.outside()),
    }
}

/// The answer to a Preempt call: which candidate nodes the policy lets
/// kube-scheduler preempt on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreemptOutcome {
    /// Candidates kept.
    pub allowed: Vec<String>,
    /// Candidates dropped, with reasons.
    pub refused: BTreeMap<String, String>,
}

/// Decides a Preempt call. kube-scheduler preempts only after Filter left no
/// node, so the admission is taken with no feasible node:
/// - `BeforeNextUnit`: preemption is allowed in the unit the pod waits in;
/// - `AfterAllUnits`: only once every unit failed, on the candidates of the
///   earliest unit that is not at a cap and has candidates (with `prefer`,
///   nodes outside every unit only when no unit has one);
/// - never on nodes of a unit at its cap: evicting there would break `max`.
#[must_use]
pub fn preempt(
    snapshot: &Snapshot,
    ledger: &Ledger,
    pod: &Pod,
    candidates: &[&str],
    wait_since: Option<Time>,
    now: Time,
) -> PreemptOutcome {
    let outcome = filter(
        snapshot,
        ledger,
        FilterRequest {
            pod,
            nodes: &[],
            wait_since,
            now,
        },
    );
    let mut out = PreemptOutcome::default();
    let admission = match outcome.decision {
        Decision::Ungoverned => {
            out.allowed = candidates.iter().map(|&c| c.to_owned()).collect();
            return out;
        }
        Decision::Rejected { reason } => {
            for &c in candidates {
                out.refused.insert(c.to_owned(), reason.clone());
            }
            return out;
        }
        Decision::Admitted(a) => a,
    };
    let Some(policy) = outcome.policy.as_ref().and_then(|k| snapshot.policy(k)) else {
        out.allowed = candidates.iter().map(|&c| c.to_owned()).collect();
        return out;
    };
    let no_group = GroupKey::default();
    let m = Messages {
        policy,
        usage: &outcome.usage,
        group: outcome.group.as_ref().unwrap_or(&no_group),
    };
    // Once every unit failed, victims are taken in the earliest unit that
    // is under its caps and has a candidate (the scheduler's dry run found
    // victims there); nodes outside every unit come after all units.
    let open = |u: usize| admission.skip_of(u).is_none_or(|why| !why.is_cap());
    let earliest = match &admission {
        Admission::OutsideUnits { .. } | Admission::Exhausted { .. } => candidates
            .iter()
            .filter_map(|&c| snapshot.unit_of(policy, c).flatten())
            .filter(|&u| open(u))
            .min(),
        _ => None,
    };
    for &c in candidates {
        let unit = snapshot.unit_of(policy, c);
        let refusal = match (&admission, unit) {
            (_, None) => Some("node is not in Spillway's cache yet".to_owned()),
            (_, Some(Some(u))) if admission.skip_of(u).is_some_and(Skip::is_cap) => {
                admission.skip_of(u).map(|why| m.skip(u, why))
            }
            (Admission::Wait { unit: k, .. }, Some(Some(u)))
                if policy.preempt_policy == PreemptPolicy::BeforeNextUnit && u == *k =>
            {
                None
            }
            (Admission::Wait { unit: k, cause, .. }, _) => Some(match policy.preempt_policy {
                PreemptPolicy::BeforeNextUnit => format!(
                    "preemption is tried in unit {:?} first (preemptPolicy: BeforeNextUnit)",
                    m.unit_name(*k)
                ),
                PreemptPolicy::AfterAllUnits => format!(
                    "no preemption before every unit has failed (preemptPolicy: AfterAllUnits); {}",
                    m.waiting(*k, cause)
                ),
            }),
            (Admission::OutsideUnits { .. } | Admission::Exhausted { .. }, Some(Some(u)))
                if earliest.is_some_and(|e| e < u) =>
            {
                earliest.map(|e| {
                    format!(
                        "preemption is tried in unit {:?} first, the earliest unit with candidates",
                        m.unit_name(e)
                    )
                })
            }
            (Admission::OutsideUnits { .. }, Some(None)) if earliest.is_some() => {
                earliest.map(|e| {
                    format!(
                        "preemption is tried in unit {:?} before nodes outside every unit",
                        m.unit_name(e)
                    )
                })
            }
            (Admission::OutsideUnits { .. } | Admission::Exhausted { .. }, Some(Some(_)))
            | (Admission::OutsideUnits { .. }, Some(None)) => None,
            (Admission::Exhausted { .. }, Some(None)) => Some(m.outside()),
            // With no feasible node no unit can be chosen; keep the node out.
            (Admission::Unit { .. }, Some(_)) => {
                Some("unexpected: a unit was admitted without feasible nodes".into())
            }
        };
        match refusal {
            None => out.allowed.push(c.to_owned()),
            Some(r) => {
                out.refused.insert(c.to_owned(), r);
            }
        }
    }
    out
}

/// Checks a Bind of `pod` to `node` against the policy's caps, the last
/// line of defence for `max` (DESIGN semantic 2). A Bind normally follows a
/// Filter whose live reservation covers the node's unit; when it does not
/// (the reservation lapsed, or the extender restarted between Filter and
/// Bind) the caps are checked afresh against the current counts.
///
/// # Errors
/// A reason naming the unit when binding would break a cap, put the pod on
/// a node a `required` policy forbids, or the node is unknown.
pub fn admit_bind(
    snapshot: &Snapshot,
    ledger: &Ledger,
    pod: &Pod,
    node: &str,
    now: Time,
) -> Result<(), String> {
    let Some(policy) = governing_policy_in(snapshot, pod).policy else {
        return Ok(());
    };
    let Some(n) = snapshot.node(node) else {
        return Err(format!("node {node:?} is not in Spillway's cache yet"));
    };
    let Some(unit) = policy.unit_of_node(n) else {
        return match policy.strategy {
            Strategy::Prefer => Ok(()),
            Strategy::Required => Err(format!(
                "node {node:?} is in no unit of ResourcePolicy {} (strategy: required)",
                policy.key
            )),
        };
    };
    if ledger
        .live(&pod.uid, now)
        .is_some_and(|r| r.policy == policy.key && r.unit == unit)
    {
        return Ok(());
    }
    let group = policy.group_of(pod).map_err(|e| e.to_string())?;
    let usage = unit_usage(snapshot, ledger, policy, &group, &pod.uid, now);
    match cap_reached(&policy.units[unit], &usage[unit], &pod.requests) {
        None => Ok(()),
        Some(why) => Err(Messages {
            policy,
            usage: &usage,
            group: &group,
        }
        .skip(unit, &why)),
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
