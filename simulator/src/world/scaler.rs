//! The replica scaler and its metrics: scrapes of the emulated DCGM and
//! serving series, the core's HPA algorithm every sync period, scale-out and
//! scale-in (victims in the core's deletion-cost order), spill-back.

use super::{
    BTreeMap, DrainCandidate, MetricKind, Pod, RState, ScaleEvent, Scrape, VecDeque, World,
    core_time, deletion_costs, governing_policy_in, hpa, scale_down_order, secs, spill_back,
};

impl World<'_> {
    // ---- scaler, metrics, autoscaler ------------------------------------------

    pub(super) fn scrape(&mut self) {
        let every = self.sc.scenario.metrics.scrape_interval.us().max(1);
        // Keep what a query `queryLag` in the past can still see.
        let keep = self.sc.scenario.metrics.query_lag.us() + every;
        let now = self.now;
        for &r in self.live.iter().flatten() {
            let rep = &mut self.replicas[r];
            if !matches!(
                rep.state,
                RState::Ready | RState::Starting | RState::Draining
            ) {
                continue;
            }
            if let Some(from) = rep.busy_from {
                rep.busy_acc += now - from;
                rep.busy_from = Some(now);
            }
            #[allow(clippy::cast_precision_loss)]
            let scrape = Scrape {
                at: now,
                busy: (rep.busy_acc as f64 / every as f64).clamp(0.0, 1.0),
                waiting: rep.queue.len() as f64,
                running: (rep.decoding.len() + usize::from(rep.prefill.is_some())) as f64,
            };
            rep.busy_acc = 0;
            rep.scrapes.push_back(scrape);
            while rep.scrapes.len() > 1 && rep.scrapes.front().is_some_and(|s| now - s.at > keep) {
                rep.scrapes.pop_front();
            }
        }
    }

    /// The value a metrics query sees for replica `r` now: its newest scrape
    /// at least `queryLag` old, or none (a missing metric) before its first one.
    pub(super) fn metric_value(&self, r: usize, kind: MetricKind) -> Option<f64> {
        let rep = &self.replicas[r];
        let factor = self.sc.services[rep.svc].spec.utilization_factor;
        let visible = self.now - self.sc.scenario.metrics.query_lag.us();
        let s = rep.scrapes.iter().rev().find(|s| s.at <= visible)?;
        Some(match kind {
            MetricKind::GpuUtilPercent => s.busy * factor * 100.0,
            MetricKind::GpuActiveRatio => s.busy * factor,
            MetricKind::RequestsWaiting => s.waiting,
            MetricKind::RequestsRunning => s.running,
            MetricKind::TtftQuantile { .. } => return None,
        })
    }

    pub(super) fn hpa_tick(&mut self) {
        for si in 0..self.sc.services.len() {
            let Some((spec, metrics)) = &self.sc.services[si].hpa else {
                continue;
            };
            let current = self.svcs[si].desired;
            let (mut ids, mut pods) = std::mem::take(&mut self.svcs[si].hpa_pods);
            if !ids.iter().eq(self.live[si].iter()) {
                ids = self.live[si].iter().copied().collect();
                pods = ids
                    .iter()
                    .map(|&r| hpa::PodSample::running(&self.replicas[r].uid))
                    .collect();
            }
            for (pod, &r) in pods.iter_mut().zip(&ids) {
                let state = self.replicas[r].state;
                pod.ready = state == RState::Ready;
                pod.terminating = state == RState::Draining;
            }
            // The latency metrics' trailing windows.
            let longest = metrics
                .iter()
                .filter_map(|m| match m.kind {
                    MetricKind::TtftQuantile { window_us, .. } => Some(window_us),
                    _ => None,
                })
                .max();
            let now = self.now;
            if let (Some(longest), Some(recent)) = (longest, &mut self.svcs[si].recent_ttft) {
                while recent.front().is_some_and(|(t, _)| now - t > longest) {
                    recent.pop_front();
                }
            }
            // Pods report once Starting or Ready; the rest are missing.
            let reported = |r: usize, kind| {
                matches!(self.replicas[r].state, RState::Ready | RState::Starting)
                    .then(|| self.metric_value(r, kind))
                    .flatten()
            };
            let recent = &self.svcs[si].recent_ttft;
            let inputs: Vec<hpa::MetricInput> = metrics
                .iter()
                .map(|m| {
                    let observation = if let MetricKind::TtftQuantile {
                        permille,
                        window_us,
                    } = m.kind
                    {
                        let (latency, count) =
                            ttft_quantile(recent.as_ref(), now, window_us, permille);
                        #[allow(clippy::cast_precision_loss)]
                        let rate = count as f64 / (window_us.max(1) as f64 / 1e6);
                        hpa::Observation::LatencyAtRate { latency, rate }
                    } else if m.per_pod {
                        hpa::Observation::InPodOrder(
                            ids.iter().map(|&r| reported(r, m.kind)).collect(),
                        )
                    } else {
                        hpa::Observation::Total(
                            ids.iter().filter_map(|&r| reported(r, m.kind)).sum(),
                        )
                    };
                    hpa::MetricInput {
                        name: m.name.clone(),
                        target: m.target,
                        observation: Ok(observation),
                    }
                })
                .collect();
            let rec = hpa::recommend_replicas(
                spec,
                &mut self.svcs[si].hpa_state,
                current,
                &pods,
                &inputs,
                core_time(self.now),
            );
            self.svcs[si].hpa_pods = (ids, pods);
            if rec.desired != current {
                self.scale_log.push(ScaleEvent {
                    t_s: secs(self.now),
                    service: self.sc.services[si].spec.name.clone(),
                    from: current,
                    to: rec.desired,
                    reason: rec.reason.clone(),
                });
                self.svcs[si].scale_events += 1;
                self.svcs[si].desired = rec.desired;
                self.scale_to(si, rec.desired);
            }
        }
    }

    /// The policy controller's spill-back, on the scaler's period: the core
    /// picks the pod to move; it drains like a scaled-in replica and the
    /// service's Deployment creates its replacement, which the core's Filter
    /// places in the earlier unit.
    pub(super) fn spill_back_tick(&mut self) {
        if !self.sc.policies.iter().any(|p| p.spill_back.is_some()) {
            return;
        }
        let moves = spill_back(
            &self.snapshot,
            &self.ledger,
            &mut self.spill,
            core_time(self.now),
        );
        for m in moves {
            let found = self.live.iter().enumerate().find_map(|(si, live)| {
                live.iter()
                    .copied()
                    .find(|&r| self.replicas[r].uid == m.uid)
                    .map(|r| (si, r))
            });
            let Some((si, r)) = found else { continue };
            self.spill_back_evictions += 1;
            self.delete_replica(r);
            self.create_replica(si);
        }
        self.schedule_pending();
    }

    /// Creates or deletes replicas; victims follow the ReplicaSet controller's
    /// order with the core's deletion costs.
    pub(super) fn scale_to(&mut self, si: usize, desired: u32) {
        let live: Vec<usize> = self.live[si]
            .iter()
            .copied()
            .filter(|&r| self.replicas[r].state != RState::Draining)
            .collect();
        let n = u32::try_from(live.len()).unwrap_or(u32::MAX);
        if desired > n {
            for _ in n..desired {
                self.create_replica(si);
            }
            self.schedule_pending();
            return;
        }
        // The cluster scaler's order (core `scale_down_order`): unscheduled,
        // then not ready, then the lowest deletion cost, then the fewest
        // requests in flight, then the newest.
        let costs = self.deletion_costs_of(si);
        let candidates: Vec<DrainCandidate> = live
            .iter()
            .map(|&r| {
                let rep = &self.replicas[r];
                let waiting = self.metric_value(r, MetricKind::RequestsWaiting);
                let running = self.metric_value(r, MetricKind::RequestsRunning);
                DrainCandidate {
                    name: rep.uid.clone(),
                    scheduled: rep.state != RState::Pending,
                    ready: rep.state == RState::Ready,
                    cost: costs.get(&rep.uid).copied().unwrap_or(0),
                    in_flight: waiting.zip(running).map(|(w, r)| w + r),
                    created_ms: rep.created / 1000,
                }
            })
            .collect();
        for i in scale_down_order(&candidates)
            .into_iter()
            .take((n - desired) as usize)
        {
            self.delete_replica(live[i]);
        }
    }

    pub(super) fn deletion_costs_of(&self, si: usize) -> BTreeMap<String, i32> {
        match self.service_policy(si) {
            Some(p) => deletion_costs(&self.snapshot, &self.ledger, p, core_time(self.now)),
            None => BTreeMap::new(),
        }
    }

    /// The policy governing a service's pods (all replicas share namespace
    /// and labels, so one probe pod answers for all of them).
    pub(super) fn service_policy(&self, si: usize) -> Option<&spillway::decision::policy::Policy> {
        let spec = &self.sc.services[si].spec;
        let probe = Pod {
            namespace: spec.namespace.clone(),
            labels: spec.labels.clone(),
            ..Pod::default()
        };
        governing_policy_in(&self.snapshot, &probe).policy
    }
}

/// The `permille` quantile (nearest rank) of the TTFTs of first tokens in
/// the `window_us` before `now`, in seconds (NaN when there were none), and
/// how many there were (the request rate's numerator, as a histogram's
/// `_count` gives it).
fn ttft_quantile(
    recent: Option<&VecDeque<(i64, i64)>>,
    now: i64,
    window_us: i64,
    permille: u16,
) -> (f64, usize) {
    let mut in_window: Vec<i64> = recent
        .into_iter()
        .flatten()
        .filter(|(t, _)| now - t <= window_us)
        .map(|(_, v)| *v)
        .collect();
    if in_window.is_empty() {
        return (f64::NAN, 0);
    }
    in_window.sort_unstable();
    let rank = (in_window.len() * usize::from(permille))
        .div_ceil(1000)
        .max(1);
    #[allow(clippy::cast_precision_loss)]
    let us = in_window[rank - 1] as f64;
    (us / 1e6, in_window.len())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{scenario, world};
    use super::MetricKind;
    use crate::traffic::Request;

    #[test]
    fn gpu_utilisation_is_the_busy_share_of_the_last_scrape_interval() {
        // 0.1 ms per prompt token: a 75,000-token prompt keeps the GPU busy
        // for 7.5 s of the 15 s scrape interval.
        let mut w = world(&scenario(
            1,
            1,
            "{kind: fixed, prefillUsPerToken: 100, decodeUsPerToken: 1000}",
        ));
        // Before the first scrape the metric is missing, as in Prometheus.
        assert_eq!(w.metric_value(0, MetricKind::GpuUtilPercent), None);
        w.arrive(
            0,
            Request {
                arrival_us: 0,
                prompt_tokens: 75_000,
                output_tokens: 1,
            },
        );
        w.run_to(15_000_001);
        let util = w.metric_value(0, MetricKind::GpuUtilPercent).unwrap();
        assert!((util - 50.0).abs() < 1e-9, "{util}");
        assert!((w.metric_value(0, MetricKind::GpuActiveRatio).unwrap() - 0.5).abs() < 1e-9);
        // The next interval is idle.
        w.run_to(30_000_001);
        assert_eq!(w.metric_value(0, MetricKind::GpuUtilPercent), Some(0.0));
    }
}
