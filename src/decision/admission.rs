//! The admissible unit for a pod (DESIGN semantics 1 and 3).
//!
//! Units are tried in list order. For each unit the questions are, in order:
//! 1. is it at a cap (`max` pods, or `maxResources` with this pod added)? → next unit;
//! 2. does a feasible node (one kube-scheduler let through) lie in it? → this unit;
//! 3. otherwise `whenTryNextUnits` (and `preemptPolicy: BeforeNextUnit`)
//!    decides between moving on and waiting here.
//!
//! | policy | unit has room but no feasible node |
//! |---|---|
//! | `LackResourceOrExceedMax` | next unit |
//! | `ExceedMax` | wait if the unit has a cap, else next unit |
//! | `TimeoutOrExceedMax` | wait until `timeout` if the unit has a cap or the wait-for-scaling pod label, else next |
//! | `LackResourceAndNoTerminating` | wait while a pod of the unit is terminating, else next |
//!
//! With `BeforeNextUnit`, a unit where preemption could make room is waited
//! on (bounded by `timeout`) so that kube-scheduler's preemption runs there
//! first. The wait clock is one instant per pod (`wait_since`): the first
//! time the pod had to wait. The driver persists it (a pod annotation), so
//! restarts neither reset nor skip a timeout; every timed wait of the pod is
//! bounded by `wait_since + timeout`.

use std::time::Duration;

use super::policy::{NextUnitPolicy, Policy, PreemptPolicy, Strategy, Unit};
use super::quantity::Resources;
use super::time::Time;
use super::usage::UnitUsage;

/// What the core knows about one unit when placing a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitState {
    /// Counted pods and resources for the pod's group.
    pub usage: UnitUsage,
    /// At least one node of the unit is among the scheduler's feasible nodes.
    pub feasible: bool,
    /// Preempting lower-priority pods could make room on some node of the unit.
    pub preemption_may_help: bool,
}

/// Why a unit was passed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `max` reached.
    Full {
        /// Counted pods.
        count: u32,
        /// The unit's `max`.
        max: u32,
    },
    /// Adding the pod would exceed `maxResources`.
    ResourceCap {
        /// The capped resource.
        resource: String,
        /// Already used, milli-units.
        used: i64,
        /// The pod's request, milli-units.
        request: i64,
        /// The cap, milli-units.
        cap: i64,
    },
    /// No feasible node in the unit and the policy moves on.
    NoRoom,
    /// The pod waited `timeout` and now moves on.
    WaitExpired {
        /// How long the pod has waited.
        waited: Duration,
    },
}

impl Skip {
    /// True for cap skips: preemption cannot help there.
    #[must_use]
    pub fn is_cap(&self) -> bool {
        matches!(self, Self::Full { .. } | Self::ResourceCap { .. })
    }
}

/// A unit passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Index of the unit.
    pub unit: usize,
    /// Why.
    pub why: Skip,
}

/// Why a pod waits in a unit instead of moving on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitCause {
    /// `ExceedMax`: the unit has a cap and room under it; wait for nodes.
    BelowCap,
    /// `TimeoutOrExceedMax`: wait for room until the deadline.
    Timeout {
        /// When the pod moves on.
        deadline: Time,
    },
    /// `LackResourceAndNoTerminating`: pods of the unit are terminating.
    Terminating {
        /// How many.
        count: u32,
    },
    /// `BeforeNextUnit`: preemption may make room in this unit.
    Preemption {
        /// When the pod gives up on preemption and moves on.
        deadline: Time,
    },
}

/// Where a pod may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Place the pod in this unit (only its feasible nodes are eligible).
    Unit {
        /// Index of the unit.
        unit: usize,
        /// Units passed over before it.
        skipped: Vec<Skipped>,
    },
    /// Keep the pod pending in this unit.
    Wait {
        /// Index of the unit.
        unit: usize,
        /// Why it waits.
        cause: WaitCause,
        /// The pod's wait clock (persist it if it was not given).
        since: Time,
        /// Units passed over before it.
        skipped: Vec<Skipped>,
    },
    /// Every unit failed; with `strategy: prefer` nodes outside every unit
    /// may be used.
    OutsideUnits {
        /// Every unit, each with its reason.
        skipped: Vec<Skipped>,
    },
    /// Every unit failed and `strategy: required` forbids other nodes.
    Exhausted {
        /// Every unit, each with its reason.
        skipped: Vec<Skipped>,
    },
}

impl Admission {
    /// The units passed over.
    #[must_use]
    pub fn skipped(&self) -> &[Skipped] {
        match self {
            Self::Unit { skipped, .. }
            | Self::Wait { skipped, .. }
            | Self::OutsideUnits { skipped }
            | Self::Exhausted { skipped } => skipped,
        }
    }

    /// Why unit `unit` was passed over, if it was.
    #[must_use]
    pub fn skip_of(&self, unit: usize) -> Option<&Skip> {
        self.skipped()
            .iter()
            .find(|s| s.unit == unit)
            .map(|s| &s.why)
    }
}

/// The cap a unit has reached for a pod with `requests`, if any.
#[must_use]
pub fn cap_reached(unit: &Unit, usage: &UnitUsage, requests: &Resources) -> Option<Skip> {
    if let Some(max) = unit.max
        && usage.pods >= max
    {
        return Some(Skip::Full {
            count: usage.pods,
            max,
        });
    }
    for (resource, cap) in unit.max_resources.iter() {
        let used = usage.resources.get(resource);
        let request = requests.get(resource);
        if used.saturating_add(request) > cap {
            return Some(Skip::ResourceCap {
                resource: resource.to_owned(),
                used,
                request,
                cap,
            });
        }
    }
    None
}

/// The admissible unit for a pod with `requests` under `policy`, given each
/// unit's state (same order as `policy.units`), the pod's wait clock and `now`.
#[must_use]
pub fn admissible_unit(
    policy: &Policy,
    requests: &Resources,
    units: &[UnitState],
    wait_since: Option<Time>,
    now: Time,
) -> Admission {
    let since = wait_since.unwrap_or(now);
    let deadline = since.after(policy.timeout);
    let in_time = now < deadline;
    let mut skipped = Vec::new();
    for (i, (unit, state)) in policy.units.iter().zip(units).enumerate() {
        if let Some(why) = cap_reached(unit, &state.usage, requests) {
            skipped.push(Skipped { unit: i, why });
            continue;
        }
        if state.feasible {
            return Admission::Unit { unit: i, skipped };
        }
        let wait = |cause| Admission::Wait {
            unit: i,
            cause,
            since,
            skipped: skipped.clone(),
        };
        if policy.preempt_policy == PreemptPolicy::BeforeNextUnit && state.preemption_may_help {
            if in_time {
                return wait(WaitCause::Preemption { deadline });
            }
            skipped.push(Skipped {
                unit: i,
                why: Skip::WaitExpired {
                    waited: now.since(since),
                },
            });
            continue;
        }
        let why = match policy.when_try_next_units {
            NextUnitPolicy::LackResourceOrExceedMax => Skip::NoRoom,
            NextUnitPolicy::ExceedMax => {
                if unit.has_cap() {
                    return wait(WaitCause::BelowCap);
                }
                Skip::NoRoom
            }
            NextUnitPolicy::TimeoutOrExceedMax => {
                if unit.has_cap() || unit.waits_for_scaling() {
                    if in_time {
                        return wait(WaitCause::Timeout { deadline });
                    }
                    Skip::WaitExpired {
                        waited: now.since(since),
                    }
                } else {
                    Skip::NoRoom
                }
            }
            NextUnitPolicy::LackResourceAndNoTerminating => {
                if state.usage.terminating > 0 {
                    return wait(WaitCause::Terminating {
                        count: state.usage.terminating,
                    });
                }
                Skip::NoRoom
            }
        };
        skipped.push(Skipped { unit: i, why });
    }
    match policy.strategy {
        Strategy::Prefer => Admission::OutsideUnits { skipped },
        Strategy::Required => Admission::Exhausted { skipped },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::policy::WAIT_FOR_SCALING_LABEL;
    use crate::decision::quantity::GPU;
    use crate::decision::testutil::*;

    fn state(pods: u32, feasible: bool) -> UnitState {
        UnitState {
            usage: UnitUsage {
                pods,
                resources: Resources::new().with(GPU, i64::from(pods)),
                terminating: 0,
            },
            feasible,
            preemption_may_help: false,
        }
    }

    fn two_units(max0: Option<u32>, next: NextUnitPolicy) -> Policy {
        let mut p = Policy::new(
            "ns",
            "p",
            vec![
                unit("local", &[("pool", "l")], max0),
                unit("cloud", &[("pool", "c")], None),
            ],
        );
        p.when_try_next_units = next;
        p
    }

    fn gpu1() -> Resources {
        Resources::new().with(GPU, 1)
    }

    fn chosen(a: &Admission) -> String {
        match a {
            Admission::Unit { unit, .. } => format!("unit{unit}"),
            Admission::Wait { unit, cause, .. } => format!("wait{unit}:{cause:?}"),
            Admission::OutsideUnits { .. } => "outside".into(),
            Admission::Exhausted { .. } => "exhausted".into(),
        }
    }

    /// One row per policy value and unit situation: (policy, max of unit 0,
    /// pods counted in unit 0, unit 0 feasible, unit 1 feasible, expected).
    #[test]
    fn next_unit_policy_table() {
        use NextUnitPolicy::*;
        type Row = (NextUnitPolicy, Option<u32>, u32, bool, bool, &'static str);
        let rows: &[Row] = &[
            (LackResourceOrExceedMax, Some(4), 2, true, true, "unit0"),
            (LackResourceOrExceedMax, Some(4), 4, true, true, "unit1"),
            (LackResourceOrExceedMax, Some(4), 2, false, true, "unit1"),
            (LackResourceOrExceedMax, None, 9, false, true, "unit1"),
            (LackResourceOrExceedMax, Some(4), 2, false, false, "outside"),
            (ExceedMax, Some(4), 2, true, true, "unit0"),
            (ExceedMax, Some(4), 4, true, true, "unit1"),
            (ExceedMax, Some(4), 2, false, true, "wait0:BelowCap"),
            (ExceedMax, None, 2, false, true, "unit1"),
            (TimeoutOrExceedMax, Some(4), 2, true, true, "unit0"),
            (TimeoutOrExceedMax, Some(4), 4, false, true, "unit1"),
            (TimeoutOrExceedMax, None, 2, false, true, "unit1"),
            (
                LackResourceAndNoTerminating,
                Some(4),
                2,
                false,
                true,
                "unit1",
            ),
            (
                LackResourceAndNoTerminating,
                Some(4),
                4,
                true,
                true,
                "unit1",
            ),
            (LackResourceAndNoTerminating, None, 2, true, false, "unit0"),
        ];
        for &(next, max, pods, f0, f1, want) in rows {
            let p = two_units(max, next);
            let a = admissible_unit(&p, &gpu1(), &[state(pods, f0), state(0, f1)], None, t(0));
            assert_eq!(
                chosen(&a),
                want,
                "{next:?} max={max:?} pods={pods} f0={f0} f1={f1}"
            );
        }
    }

    #[test]
    fn timeout_waits_then_moves_on() {
        let mut p = two_units(Some(4), NextUnitPolicy::TimeoutOrExceedMax);
        p.timeout = Duration::from_secs(600);
        let units = [state(1, false), state(0, true)];
        let a = admissible_unit(&p, &gpu1(), &units, None, t(1000));
        assert_eq!(
            a,
            Admission::Wait {
                unit: 0,
                cause: WaitCause::Timeout { deadline: t(1600) },
                since: t(1000),
                skipped: vec![]
            }
        );
        // Restarted extender: the persisted clock keeps counting.
        let a = admissible_unit(&p, &gpu1(), &units, Some(t(1000)), t(1599));
        assert!(matches!(a, Admission::Wait { .. }));
        let a = admissible_unit(&p, &gpu1(), &units, Some(t(1000)), t(1600));
        assert_eq!(chosen(&a), "unit1");
        assert_eq!(
            a.skip_of(0),
            Some(&Skip::WaitExpired {
                waited: Duration::from_secs(600)
            })
        );
    }

    #[test]
    fn wait_for_scaling_label_waits_without_max() {
        let mut p = two_units(None, NextUnitPolicy::TimeoutOrExceedMax);
        p.units[0]
            .pod_labels
            .insert(WAIT_FOR_SCALING_LABEL.into(), "true".into());
        let a = admissible_unit(&p, &gpu1(), &[state(0, false), state(0, true)], None, t(0));
        assert_eq!(
            chosen(&a),
            format!("wait0:{:?}", WaitCause::Timeout { deadline: t(900) })
        );
    }

    #[test]
    fn terminating_pods_block_spill_under_no_terminating_policy() {
        let p = two_units(Some(4), NextUnitPolicy::LackResourceAndNoTerminating);
        let mut s0 = state(2, false);
        s0.usage.terminating = 1;
        let a = admissible_unit(&p, &gpu1(), &[s0, state(0, true)], None, t(0));
        assert_eq!(chosen(&a), "wait0:Terminating { count: 1 }");
    }

    #[test]
    fn max_resources_caps_by_summed_requests() {
        let mut p = two_units(None, NextUnitPolicy::LackResourceOrExceedMax);
        p.units[0].max_resources = Resources::new().with(GPU, 4);
        let two = Resources::new().with(GPU, 2);
        let a = admissible_unit(&p, &two, &[state(2, true), state(0, true)], None, t(0));
        assert_eq!(chosen(&a), "unit0", "2 used + 2 requested = 4 fits the cap");
        let a = admissible_unit(&p, &two, &[state(3, true), state(0, true)], None, t(0));
        assert_eq!(chosen(&a), "unit1");
        assert_eq!(
            a.skip_of(0),
            Some(&Skip::ResourceCap {
                resource: GPU.into(),
                used: 3000,
                request: 2000,
                cap: 4000
            })
        );
    }

    #[test]
    fn required_strategy_exhausts_instead_of_going_outside() {
        let mut p = two_units(Some(1), NextUnitPolicy::LackResourceOrExceedMax);
        p.strategy = Strategy::Required;
        let a = admissible_unit(&p, &gpu1(), &[state(1, true), state(0, false)], None, t(0));
        assert_eq!(chosen(&a), "exhausted");
        assert_eq!(a.skipped().len(), 2);
    }

    #[test]
    fn before_next_unit_waits_for_preemption_within_timeout() {
        let mut p = two_units(None, NextUnitPolicy::LackResourceOrExceedMax);
        p.preempt_policy = PreemptPolicy::BeforeNextUnit;
        let mut s0 = state(0, false);
        s0.preemption_may_help = true;
        let units = [s0, state(0, true)];
        let a = admissible_unit(&p, &gpu1(), &units, None, t(0));
        assert_eq!(
            chosen(&a),
            format!("wait0:{:?}", WaitCause::Preemption { deadline: t(900) })
        );
        let a = admissible_unit(&p, &gpu1(), &units, Some(t(0)), t(900));
        assert_eq!(chosen(&a), "unit1");
        // AfterAllUnits ignores the chance to preempt and spills.
        p.preempt_policy = PreemptPolicy::AfterAllUnits;
        assert_eq!(
            chosen(&admissible_unit(&p, &gpu1(), &units, None, t(0))),
            "unit1"
        );
    }
}
