//! Statistics: the time series sampled every `sampleInterval` and the
//! run's summary.

use super::{
    HOUR_US, HeadroomOutcome, Histogram, MetricKind, Outcome, Percentiles, PoolKind, PoolOutcome,
    RState, ServiceOutcome, SloOutcome, SpillBackOutcome, Summary, World, secs,
};

impl World<'_> {
    // ---- statistics -----------------------------------------------------------

    pub(super) fn columns(&self) -> Vec<String> {
        let mut c = vec!["t_s".to_owned()];
        for (si, s) in self.sc.services.iter().enumerate() {
            let n = &s.spec.name;
            for k in [
                "rps",
                "replicas",
                "ready",
                "pending_pods",
                "waiting",
                "ttft_p50_s",
                "ttft_p95_s",
                "e2e_p50_s",
                "e2e_p95_s",
                "slo_attainment",
                "gpu_util_pct",
            ] {
                c.push(format!("{k}:{n}"));
            }
            for u in &self.unit_names[si] {
                c.push(format!("replicas:{n}:{u}"));
            }
        }
        for p in &self.sc.scenario.pools {
            for k in [
                "nodes",
                "nodes_added",
                "nodes_removed",
                "gpus",
                "gpus_used",
                "cost",
            ] {
                c.push(format!("{k}:{}", p.name));
            }
        }
        c.push("cost:total".into());
        c
    }

    pub(super) fn node_seconds(&self, pool: usize, upto: i64) -> f64 {
        self.nodes
            .iter()
            .filter(|n| n.pool == pool)
            .map(|n| secs(n.removed.unwrap_or(upto).min(upto) - n.created))
            .sum()
    }

    pub(super) fn sample(&mut self) {
        let interval = secs(self.now - self.last_sample).max(1e-9);
        self.last_sample = self.now;
        let mut row = vec![secs(self.now)];
        for si in 0..self.sc.services.len() {
            let mut replicas = 0.0;
            let mut ready = 0.0;
            let mut pending = 0.0;
            let mut waiting = 0.0;
            let mut by_unit = vec![0.0; self.unit_names[si].len()];
            let (mut util_sum, mut util_n) = (0.0, 0.0);
            for &r in &self.live[si] {
                let rep = &self.replicas[r];
                match rep.state {
                    RState::Gone => continue,
                    RState::Pending => pending += 1.0,
                    RState::Ready => {
                        ready += 1.0;
                        // What the scaler reads for this pod now.
                        if let Some(u) = self.metric_value(r, MetricKind::GpuUtilPercent) {
                            util_sum += u;
                            util_n += 1.0;
                        }
                    }
                    _ => {}
                }
                if rep.state != RState::Draining {
                    replicas += 1.0;
                }
                #[allow(clippy::cast_precision_loss)]
                {
                    waiting += rep.queue.len() as f64;
                }
                if let Some(n) = rep.node {
                    by_unit[self.pool_unit[si][self.nodes[n].pool]] += 1.0;
                }
            }
            if self.sc.services[si]
                .hpa
                .as_ref()
                .is_some_and(|(h, _)| replicas >= f64::from(h.max_replicas))
            {
                self.svcs[si].at_max_s += interval;
            }
            let svc = &mut self.svcs[si];
            #[allow(clippy::cast_precision_loss)]
            {
                waiting += svc.held.len() as f64;
                row.push(svc.arrivals_win as f64 / interval);
            }
            // Requests judged against the SLO in this window (completed or
            // dropped); NaN (an empty cell) when there were none.
            let judged = svc.counts.completed + svc.counts.dropped;
            #[allow(clippy::cast_precision_loss)]
            let window_attainment = if judged > svc.judged_sampled {
                (svc.slo_met - svc.slo_met_sampled) as f64 / (judged - svc.judged_sampled) as f64
            } else {
                f64::NAN
            };
            svc.slo_met_sampled = svc.slo_met;
            svc.judged_sampled = judged;
            svc.arrivals_win = 0;
            row.extend([
                replicas,
                ready,
                pending,
                waiting,
                svc.ttft_win.quantile_s(0.5),
                svc.ttft_win.quantile_s(0.95),
                svc.e2e_win.quantile_s(0.5),
                svc.e2e_win.quantile_s(0.95),
                window_attainment,
                if util_n > 0.0 {
                    util_sum / util_n
                } else {
                    f64::NAN
                },
            ]);
            // Window histograms fold into the run's totals here, so the hot
            // path records each latency once.
            svc.ttft.merge(&svc.ttft_win);
            svc.e2e.merge(&svc.e2e_win);
            svc.ttft_win.clear();
            svc.e2e_win.clear();
            row.extend(by_unit);
        }
        let mut total = 0.0;
        for (pi, spec) in self.sc.scenario.pools.iter().enumerate() {
            let live = &self.pools[pi].live;
            #[allow(clippy::cast_precision_loss)]
            let nodes = live.len() as f64;
            let gpus = nodes * f64::from(spec.gpus_per_node);
            let used: f64 = self
                .live
                .iter()
                .flatten()
                .map(|&r| &self.replicas[r])
                .filter(|r| r.node.is_some_and(|n| self.nodes[n].pool == pi))
                .map(|r| f64::from(self.sc.services[r.svc].spec.gpus_per_replica))
                .sum();
            let cost = self.node_seconds(pi, self.now) / 3600.0
                * f64::from(spec.gpus_per_node)
                * spec.cost_per_gpu_hour;
            total += cost;
            row.extend([
                nodes,
                f64::from(self.pools[pi].provisioned),
                f64::from(self.pools[pi].removed),
                gpus,
                used,
                cost,
            ]);
        }
        row.push(total);
        self.series.rows.push(row);
    }

    pub(super) fn finish(self) -> Outcome {
        let end = self.end;
        let s = &self.sc.scenario;
        let mut pools = Vec::new();
        let mut cost_total = 0.0;
        let mut gpu_hours_total = 0.0;
        let mut replica_s_cloud = 0.0;
        let mut replica_s_all = 0.0;
        for (pi, spec) in s.pools.iter().enumerate() {
            let node_hours = self.node_seconds(pi, end) / 3600.0;
            let gpu_hours = node_hours * f64::from(spec.gpus_per_node);
            let used_us: f64 = self
                .replicas
                .iter()
                .filter(|r| r.node.is_some_and(|n| self.nodes[n].pool == pi))
                .map(|r| {
                    #[allow(clippy::cast_precision_loss)]
                    let held = (r.gone_at.unwrap_or(end).min(end) - r.bound_at) as f64;
                    held * f64::from(self.sc.services[r.svc].spec.gpus_per_replica)
                })
                .sum();
            let cost = gpu_hours * spec.cost_per_gpu_hour;
            cost_total += cost;
            gpu_hours_total += gpu_hours;
            pools.push(PoolOutcome {
                name: spec.name.clone(),
                kind: match spec.kind {
                    PoolKind::Datacenter => "datacenter".into(),
                    PoolKind::Cloud => "cloud".into(),
                },
                node_hours,
                gpu_hours,
                gpu_hours_used: used_us / HOUR_US,
                cost,
                nodes_provisioned: self.pools[pi].provisioned,
                nodes_removed: self.pools[pi].removed,
                peak_nodes: self.pools[pi].peak,
            });
        }
        let mut services = Vec::new();
        for (si, cs) in self.sc.services.iter().enumerate() {
            let svc = &self.svcs[si];
            let mut by_pool = vec![0.0; s.pools.len()];
            let mut by_unit = vec![0.0; self.unit_names[si].len()];
            for r in self.replicas.iter().filter(|r| r.svc == si) {
                let Some(n) = r.node else { continue };
                #[allow(clippy::cast_precision_loss)]
                let held = (r.gone_at.unwrap_or(end).min(end) - r.bound_at) as f64 / HOUR_US;
                let pool = self.nodes[n].pool;
                by_pool[pool] += held;
                by_unit[self.pool_unit[si][pool]] += held;
                replica_s_all += held;
                if s.pools[pool].kind == PoolKind::Cloud {
                    replica_s_cloud += held;
                }
            }
            let ttft_limit = cs.spec.slo.ttft.us();
            let mut counts = svc.counts;
            counts.unfinished = counts
                .arrived
                .saturating_sub(counts.completed + counts.dropped);
            // Dropped requests count as missed; requests still running at the end are not judged.
            let judged = counts.completed + counts.dropped;
            #[allow(clippy::cast_precision_loss)]
            let attainment = if judged == 0 {
                1.0
            } else {
                svc.slo_met as f64 / judged as f64
            };
            services.push(ServiceOutcome {
                name: cs.spec.name.clone(),
                requests: counts,
                ttft: pct(&svc.ttft),
                e2e: pct(&svc.e2e),
                queue: pct(&svc.queue_wait),
                slo: SloOutcome {
                    ttft_s: secs(ttft_limit),
                    e2e_s: cs.spec.slo.e2e.map(|e| secs(e.us())),
                    target: cs.spec.slo.target,
                    attainment,
                    met: attainment >= cs.spec.slo.target,
                },
                peak_replicas: svc.peak,
                max_replicas: cs.hpa.as_ref().map(|(h, _)| h.max_replicas),
                at_max_replicas_s: svc.at_max_s,
                scale_events: svc.scale_events,
                replica_hours_by_pool: s
                    .pools
                    .iter()
                    .map(|p| p.name.clone())
                    .zip(by_pool)
                    .collect(),
                replica_hours_by_unit: self.unit_names[si].iter().cloned().zip(by_unit).collect(),
            });
        }
        Outcome {
            summary: Summary {
                scenario: s.name.clone(),
                seed: s.seed,
                duration_s: secs(end),
                currency: s.currency.clone(),
                cost_total,
                gpu_hours_total,
                spill_fraction: if replica_s_all > 0.0 {
                    replica_s_cloud / replica_s_all
                } else {
                    0.0
                },
                pods_created: self.pods_created,
                pending_time: pct(&self.pending_time),
                pools,
                services,
                events: self.events,
                spill_back: self
                    .sc
                    .policies
                    .iter()
                    .any(|p| p.spill_back.is_some())
                    .then(|| SpillBackOutcome {
                        evictions: self.spill_back_evictions,
                        ..SpillBackOutcome::default()
                    }),
                headroom: self
                    .sc
                    .policies
                    .iter()
                    .any(|p| p.headroom.is_some())
                    .then(|| HeadroomOutcome {
                        nodes_started: self.headroom_nodes,
                        ..HeadroomOutcome::default()
                    }),
            },
            series: self.series,
            scale_events: self.scale_log,
            node_scale_ups: self.node_scale_ups,
        }
    }
}

fn pct(h: &Histogram) -> Percentiles {
    Percentiles {
        mean: h.mean_s(),
        p50: h.quantile_s(0.5),
        p95: h.quantile_s(0.95),
        p99: h.quantile_s(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{scenario, world};
    use crate::traffic::Request;

    #[test]
    fn a_sample_row_has_a_value_per_column_and_nan_where_nothing_was_measured() {
        let mut w = world(&scenario(
            1,
            1,
            "{kind: fixed, prefillUsPerToken: 10, decodeUsPerToken: 1000}",
        ));
        let columns = w.columns();
        for c in [
            "slo_attainment:svc",
            "gpu_util_pct:svc",
            "nodes_added:cloud",
            "nodes_removed:cloud",
        ] {
            assert!(columns.iter().any(|x| x == c), "no column {c}");
        }
        let at = |name: &str| columns.iter().position(|c| c == name).unwrap();
        w.run_to(60_000_001);
        let quiet = w.series.rows.last().unwrap().clone();
        assert_eq!(quiet.len(), columns.len());
        assert!(
            quiet[at("slo_attainment:svc")].is_nan(),
            "no request was judged"
        );
        // One request meets the 1 s TTFT objective in the next minute.
        w.arrive(
            0,
            Request {
                arrival_us: 60_000_001,
                prompt_tokens: 10,
                output_tokens: 3,
            },
        );
        w.run_to(120_000_001);
        let busy = w.series.rows.last().unwrap();
        assert!((busy[at("slo_attainment:svc")] - 1.0).abs() < 1e-12);
        assert!((busy[at("t_s")] - 120.0).abs() < 1e-6);
    }
}
