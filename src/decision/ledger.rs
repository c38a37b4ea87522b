//! The reservation ledger: placements assumed at Filter time (DESIGN
//! semantic 2).
//!
//! kube-scheduler binds asynchronously, so the next pod's Filter can arrive
//! before the previous pod's Binding is visible in the watch. Because Filter
//! returns the nodes of exactly one unit, it reserves one slot in that unit:
//!
//! ```text
//!  Filter ──reserve(ttl)──► assumed ──Bind──► confirmed(node, ttl) ──watch shows node──► released
//!     ▲  re-Filter replaces      │ TTL lapses / pod deleted / bind failed        │
//!     └──────────────────────────┴──────────────► released ◄────────────────────┘
//! ```
//!
//! Counting ([`super::usage`]) adds a live reservation only for a pod the
//! snapshot does not already show on a node, so a pod is never counted twice.
//! The ledger is plain data; `now` is always an argument.
//!
//! A scheduling cycle can fail after Filter (another extender or plugin
//! rejects the node, the cycle times out): no Bind follows, and a slot held
//! for the whole [`FILTER_TTL`] would send the next pods of the policy to a
//! later unit for nothing. So an *assumed* reservation (Filter, no Bind
//! yet) is released as soon as
//! - the same pod is filtered again (its new Filter replaces it), or
//! - [`UNBOUND_GRACE`] has passed since its Filter and the watch shows the
//!   pod still unbound ([`Ledger::release_unbound`]).
//!
//! A Bind marks its reservation with the node before the API call
//! ([`Ledger::confirm`]), so a slot is never released while its pod is
//! being bound; a Bind that arrives after its reservation was released
//! re-checks the caps against the counts of that moment.

use std::collections::BTreeMap;
use std::time::Duration;

use super::policy::{GroupKey, PolicyKey};
use super::quantity::Resources;
use super::time::Time;

/// How long a Filter reservation lives without a Bind. The scheduler binds
/// within its 5 s extender timeout or fails the cycle; a lapsed reservation
/// only means the next Filter counts from the watch again.
pub const FILTER_TTL: Duration = Duration::from_secs(30);

/// How long an assumed reservation is kept once the watch shows its pod
/// still unbound. kube-scheduler calls Bind within milliseconds of Filter
/// unless a PreBind or Permit step waits (volume binding, gang scheduling);
/// a Bind after the grace re-checks the caps, so `max` holds either way.
pub const UNBOUND_GRACE: Duration = Duration::from_secs(5);

/// How long a confirmed (bound) reservation lives until the watch shows the
/// pod on its node.
pub const BIND_TTL: Duration = Duration::from_secs(120);

/// One assumed placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod (for messages).
    pub pod_name: String,
    /// The policy whose unit the slot is in.
    pub policy: PolicyKey,
    /// Index of the unit in the policy.
    pub unit: usize,
    /// The pod's `matchLabelKeys` group.
    pub group: GroupKey,
    /// The pod's requests (for `maxResources`).
    pub requests: Resources,
    /// The node, once Bind named it.
    pub node: Option<String>,
    /// When the reservation lapses unless renewed.
    pub expires: Time,
}

impl Reservation {
    /// True until `expires`.
    #[must_use]
    pub fn is_live(&self, now: Time) -> bool {
        now < self.expires
    }
}

/// Assumed placements keyed by pod UID.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    entries: BTreeMap<String, Reservation>,
}

impl Ledger {
    /// An empty ledger.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves a slot for pod `uid`, replacing any earlier reservation of
    /// the same pod (a re-Filter moves the slot).
    pub fn reserve(&mut self, uid: &str, reservation: Reservation) -> Option<Reservation> {
        self.entries.insert(uid.to_owned(), reservation)
    }

    /// Confirms pod `uid` was bound to `node` and extends its life to
    /// `now + ttl`. Returns false when there is no reservation to confirm.
    pub fn confirm(&mut self, uid: &str, node: &str, now: Time, ttl: Duration) -> bool {
        match self.entries.get_mut(uid) {
            Some(r) => {
                r.node = Some(node.to_owned());
                r.expires = now.after(ttl);
                true
            }
            None => false,
        }
    }

    /// Releases pod `uid`'s reservation (deleted, bind failed, or the watch
    /// now shows it bound).
    pub fn release(&mut self, uid: &str) -> Option<Reservation> {
        self.entries.remove(uid)
    }

    /// Removes and returns every reservation that lapsed by `now`.
    pub fn expire(&mut self, now: Time) -> Vec<(String, Reservation)> {
        let dead: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, r)| !r.is_live(now))
            .map(|(k, _)| k.clone())
            .collect();
        dead.into_iter()
            .filter_map(|k| self.entries.remove(&k).map(|r| (k, r)))
            .collect()
    }

    /// Releases and returns the assumed reservations (no Bind yet) whose
    /// Filter was at least `grace` before `now` and whose pod `unbound`
    /// says the watch shows without a node. A Filter reservation is made
    /// with [`FILTER_TTL`], so its Filter time is `expires - FILTER_TTL`.
    pub fn release_unbound(
        &mut self,
        now: Time,
        grace: Duration,
        unbound: impl Fn(&str) -> bool,
    ) -> Vec<(String, Reservation)> {
        let ttl = i64::try_from(FILTER_TTL.as_millis()).unwrap_or(i64::MAX);
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let stale: Vec<String> = self
            .entries
            .iter()
            .filter(|(uid, r)| {
                let filtered = r.expires.as_millis().saturating_sub(ttl);
                r.node.is_none()
                    && now.as_millis() >= filtered.saturating_add(grace)
                    && unbound(uid)
            })
            .map(|(k, _)| k.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|k| self.entries.remove(&k).map(|r| (k, r)))
            .collect()
    }

    /// Pod `uid`'s reservation, live or not.
    #[must_use]
    pub fn get(&self, uid: &str) -> Option<&Reservation> {
        self.entries.get(uid)
    }

    /// Pod `uid`'s reservation if it is live at `now`.
    #[must_use]
    pub fn live(&self, uid: &str, now: Time) -> Option<&Reservation> {
        self.entries.get(uid).filter(|r| r.is_live(now))
    }

    /// All reservations (live or lapsed) in UID order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Reservation)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of reservations held (live or lapsed but not yet expired).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no reservation is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(expires: i64) -> Reservation {
        Reservation {
            namespace: "ns".into(),
            pod_name: "p".into(),
            policy: PolicyKey {
                namespace: "ns".into(),
                name: "pol".into(),
            },
            unit: 0,
            group: GroupKey::default(),
            requests: Resources::new(),
            node: None,
            expires: Time::from_secs(expires),
        }
    }

    #[test]
    fn refilter_replaces_and_bind_extends() {
        let mut l = Ledger::new();
        l.reserve("u1", res(30));
        let mut moved = res(40);
        moved.unit = 1;
        assert!(l.reserve("u1", moved).is_some());
        assert_eq!(l.len(), 1);
        assert_eq!(l.get("u1").unwrap().unit, 1);
        assert!(l.confirm("u1", "n1", Time::from_secs(35), Duration::from_secs(120)));
        assert_eq!(l.get("u1").unwrap().expires, Time::from_secs(155));
        assert!(!l.confirm("nobody", "n1", Time::from_secs(35), BIND_TTL));
    }

    /// (filtered at s, Bind named a node, watch shows the pod unbound,
    /// now s, released?)
    #[test]
    fn assumed_slots_of_pods_seen_unbound_go_after_the_grace() {
        type Row = (i64, bool, bool, i64, bool);
        let rows: &[Row] = &[
            (100, false, true, 104, false),  // within the grace
            (100, false, true, 105, true),   // grace over, pod seen pending
            (100, false, false, 110, false), // the watch has not shown the pod
            (100, true, true, 110, false),   // being bound or bound: kept
            (100, false, true, 129, true),   // long before the TTL
        ];
        for &(filtered, named, unbound, now, released) in rows {
            let mut l = Ledger::new();
            let mut r = res(0);
            r.expires = Time::from_secs(filtered).after(FILTER_TTL);
            if named {
                r.node = Some("n1".into());
            }
            l.reserve("a", r);
            let gone = l.release_unbound(Time::from_secs(now), UNBOUND_GRACE, |uid| {
                uid == "a" && unbound
            });
            assert_eq!(
                gone.len() == 1,
                released,
                "filtered {filtered} named {named} unbound {unbound} now {now}"
            );
            assert_eq!(l.is_empty(), released);
        }
    }

    #[test]
    fn lapsed_reservations_are_not_live_and_expire() {
        let mut l = Ledger::new();
        l.reserve("a", res(10));
        l.reserve("b", res(20));
        assert!(
            l.live("a", Time::from_secs(10)).is_none(),
            "expiry instant is exclusive"
        );
        assert!(l.live("b", Time::from_secs(10)).is_some());
        let gone = l.expire(Time::from_secs(15));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "a");
        assert_eq!(l.len(), 1);
    }
}
