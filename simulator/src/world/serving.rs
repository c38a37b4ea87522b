//! Serving: requests arrive, are routed to a ready replica, wait for a batch
//! slot, are prefilled (alone, or in chunks beside the batch) and decoded by
//! continuous batching; the engine's per-replica virtual step counter.

use super::{RState, Req, Request, Reverse, Routing, World, id};

impl World<'_> {
    // ---- requests -----------------------------------------------------------

    pub(super) fn alloc_req(&mut self, req: Req) -> u32 {
        if let Some(i) = self.free_reqs.pop() {
            self.reqs[i as usize] = req;
            i
        } else {
            self.reqs.push(req);
            u32::try_from(self.reqs.len() - 1).unwrap_or(u32::MAX)
        }
    }

    pub(super) fn arrive(&mut self, si: usize, r: Request) {
        let q = self.alloc_req(Req {
            arrival: r.arrival_us,
            first: r.arrival_us,
            prompt: r.prompt_tokens,
            output: r.output_tokens.max(1),
            svc: u32::try_from(si).unwrap_or(0),
        });
        let svc = &mut self.svcs[si];
        svc.counts.arrived += 1;
        svc.arrivals_win += 1;
        if !svc.held.is_empty() || !self.dispatch(si, q) {
            self.svcs[si].held.push_back(q);
        }
    }

    /// Sends request `q` to a ready replica; false when the gateway must hold it.
    pub(super) fn dispatch(&mut self, si: usize, q: u32) -> bool {
        let Some((r, load)) = self.svcs[si].router.least() else {
            return false;
        };
        let cs = &self.sc.services[si];
        if cs.spec.routing == Routing::CentralQueue && load >= cs.perf.max_batch() as usize {
            return false;
        }
        let r = r as usize;
        self.replicas[r].queue.push_back(q);
        self.reslot(r);
        if self.kick(r) {
            self.schedule_next(r);
        }
        true
    }

    /// The decode batch's iteration time now, µs: by batch size, and by the
    /// running requests' mean context where the profile measures it.
    pub(super) fn decode_step(&self, r: usize) -> i64 {
        let rep = &self.replicas[r];
        let perf = &self.sc.services[rep.svc].perf;
        let b = u32::try_from(rep.decoding.len()).unwrap_or(u32::MAX);
        if perf.uses_context() && b > 0 {
            #[allow(clippy::cast_precision_loss)]
            let n = rep.decoding.len() as f64;
            perf.decode_step_at_us(b, (rep.ctx_base + n * rep.v) / n)
        } else {
            perf.decode_step_us(b)
        }
    }

    /// Sets the step time the batch advances at until its next change.
    pub(super) fn restep(&mut self, r: usize) {
        let rep = &self.replicas[r];
        #[allow(clippy::cast_precision_loss)]
        let step = match rep.prefill {
            Some(_) if rep.prefill_step > 0.0 => rep.prefill_step,
            _ => self.decode_step(r) as f64,
        };
        self.replicas[r].step = step.max(1.0);
    }

    pub(super) fn advance(&mut self, r: usize) {
        let now = self.now;
        let rep = &mut self.replicas[r];
        let moving = rep.prefill.is_none() || rep.prefill_step > 0.0;
        if moving && !rep.decoding.is_empty() {
            #[allow(clippy::cast_precision_loss)]
            let dt = (now - rep.v_at) as f64;
            rep.v += dt / rep.step;
        }
        rep.v_at = now;
    }

    pub(super) fn set_busy(&mut self, r: usize) {
        let now = self.now;
        let rep = &mut self.replicas[r];
        let busy = rep.prefill.is_some() || !rep.decoding.is_empty();
        match (busy, rep.busy_from) {
            (true, None) => rep.busy_from = Some(now),
            (false, Some(from)) => {
                rep.busy_acc += now - from;
                rep.busy_from = None;
            }
            _ => {}
        }
    }

    /// Starts the next prefill if the replica is free to; true if it did.
    pub(super) fn kick(&mut self, r: usize) -> bool {
        let si = self.replicas[r].svc;
        let max_batch = self.sc.services[si].perf.max_batch() as usize;
        {
            let rep = &self.replicas[r];
            if rep.prefill.is_some() || rep.queue.is_empty() || rep.decoding.len() + 1 > max_batch {
                return false;
            }
        }
        self.advance(r);
        let Some(q) = self.replicas[r].queue.pop_front() else {
            return false;
        };
        let req = self.reqs[q as usize];
        let perf = &self.sc.services[si].perf;
        let batch = u32::try_from(self.replicas[r].decoding.len()).unwrap_or(u32::MAX);
        let chunked = if perf.is_chunked() {
            perf.chunked_prefill(req.prompt, batch, self.decode_step(r))
        } else {
            None
        };
        let (dur, prefill_step) = match chunked {
            // The batch keeps decoding, one token per iteration of the prefill.
            #[allow(clippy::cast_precision_loss)]
            Some((dur, iterations)) if batch > 0 => {
                (dur, (dur as f64 / f64::from(iterations.max(1))).max(1.0))
            }
            Some((dur, _)) => (dur, 0.0),
            None => (perf.prefill_us(req.prompt).max(1), 0.0),
        };
        self.svcs[si].queue_wait.record(self.now - req.arrival);
        self.replicas[r].prefill = Some((q, self.now + dur));
        self.replicas[r].prefill_step = prefill_step;
        self.set_busy(r);
        true
    }

    pub(super) fn schedule_next(&mut self, r: usize) {
        self.restep(r);
        let rep = &self.replicas[r];
        let next_done = rep.decoding.peek().map(|Reverse((bits, _))| {
            let remaining = (f64::from_bits(*bits) - rep.v).max(0.0);
            let dt = crate::traffic::sample::ceil_i64(remaining * rep.step);
            rep.v_at + dt.max(0)
        });
        let t = match (rep.prefill, next_done) {
            // A chunked prefill: the batch keeps finishing requests meanwhile.
            (Some((_, end)), Some(done)) if rep.prefill_step > 0.0 => end.min(done),
            (Some((_, end)), _) => end,
            (None, Some(done)) => done,
            (None, None) => {
                self.timers.cancel(id(r));
                return;
            }
        };
        self.seq += 1;
        self.timers.set(id(r), (t.max(self.now), self.seq));
    }

    pub(super) fn replica_step(&mut self, r: usize) {
        self.advance(r);
        let si = self.replicas[r].svc;
        // Prefill finished: first token out, join the decode batch.
        if let Some((q, end)) = self.replicas[r].prefill
            && end <= self.now
        {
            self.replicas[r].prefill = None;
            self.replicas[r].prefill_step = 0.0;
            self.reqs[q as usize].first = self.now;
            let req = self.reqs[q as usize];
            let ttft = self.now - req.arrival;
            self.svcs[si].ttft_win.record(ttft);
            if let Some(recent) = &mut self.svcs[si].recent_ttft {
                recent.push_back((self.now, ttft));
            }
            if req.output <= 1 {
                self.complete(r, q);
            } else {
                let rep = &mut self.replicas[r];
                let finish = rep.v + f64::from(req.output - 1);
                rep.decoding.push(Reverse((finish.to_bits(), q)));
                if self.sc.services[si].perf.uses_context() {
                    rep.ctx_base += f64::from(req.prompt) + 1.0 - rep.v;
                }
            }
        }
        // Completions: every request whose last step is done.
        loop {
            let rep = &mut self.replicas[r];
            let Some(&Reverse((bits, q))) = rep.decoding.peek() else {
                break;
            };
            if f64::from_bits(bits) > rep.v + 1e-6 {
                break;
            }
            rep.decoding.pop();
            if self.sc.services[si].perf.uses_context() {
                let req = &self.reqs[q as usize];
                let joined = f64::from_bits(bits) - f64::from(req.output - 1);
                rep.ctx_base -= f64::from(req.prompt) + 1.0 - joined;
                if rep.decoding.is_empty() {
                    rep.ctx_base = 0.0;
                }
            }
            self.complete(r, q);
        }
        if self.replicas[r].state == RState::Draining && self.replicas[r].outstanding() == 0 {
            self.set_busy(r);
            self.replica_gone(r);
            return;
        }
        self.refill(r);
        self.kick(r);
        self.set_busy(r);
        self.schedule_next(r);
    }

    /// Central-queue routing: pull held requests into free batch slots.
    pub(super) fn refill(&mut self, r: usize) {
        let si = self.replicas[r].svc;
        if self.sc.services[si].spec.routing != Routing::CentralQueue
            || self.replicas[r].state != RState::Ready
        {
            return;
        }
        while self.replicas[r].outstanding() < self.sc.services[si].perf.max_batch() {
            let Some(q) = self.svcs[si].held.pop_front() else {
                break;
            };
            self.replicas[r].queue.push_back(q);
            self.reslot(r);
        }
    }

    pub(super) fn complete(&mut self, r: usize, q: u32) {
        let req = self.reqs[q as usize];
        let si = req.svc as usize;
        let e2e = self.now - req.arrival;
        let slo = &self.sc.services[si].spec.slo;
        let svc = &mut self.svcs[si];
        svc.e2e_win.record(e2e);
        svc.counts.completed += 1;
        if req.first - req.arrival <= slo.ttft.us() && slo.e2e.is_none_or(|e| e2e <= e.us()) {
            svc.slo_met += 1;
        }
        self.free_reqs.push(q);
        self.reslot(r);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{scenario, world};
    use super::{Request, World};

    /// 10 µs per prompt token, 1 ms per decode step whatever the batch.
    const FIXED: &str = "{kind: fixed, prefillUsPerToken: 10, decodeUsPerToken: 1000}";

    fn send(w: &mut World<'_>, at: i64, prompt: u32, output: u32) -> usize {
        w.run_to(at);
        w.arrive(
            0,
            Request {
                arrival_us: at,
                prompt_tokens: prompt,
                output_tokens: output,
            },
        );
        w.reqs.len() - 1
    }

    fn decoding(w: &World<'_>) -> usize {
        w.replicas.iter().map(|r| r.decoding.len()).sum()
    }

    #[test]
    fn a_request_is_prefilled_then_decoded_one_token_per_step() {
        let mut w = world(&scenario(1, 1, FIXED));
        let q = send(&mut w, 0, 100, 5);
        w.run_to(1_000);
        assert_eq!(w.reqs[q].first, 0, "not before its prefill ends");
        w.run_to(1_001);
        assert_eq!(w.reqs[q].first, 1_000, "first token after 100 × 10 µs");
        // Four more tokens, one per 1 ms step.
        w.run_to(4_999);
        assert_eq!(decoding(&w), 1);
        w.run_to(5_001);
        assert_eq!(decoding(&w), 0);
        assert_eq!(w.svcs[0].counts.completed, 1);
    }

    #[test]
    fn a_prefill_pauses_the_batch_unless_it_is_chunked() {
        // A long request decodes; a second prompt of 1,000 tokens arrives.
        let run = |perf: &str| {
            let mut w = world(&scenario(1, 1, perf));
            send(&mut w, 0, 10, 1_000);
            let late = send(&mut w, 5_000, 1_000, 2);
            w.run_to(200_000);
            (w.reqs[late].first, w.replicas[0].v)
        };
        // Whole: the prefill takes 10 ms alone; the first request's steps stop.
        let (first, v) = run(FIXED);
        assert_eq!(first, 5_000 + 10_000);
        // Chunked, 256 tokens per iteration: the prompt shares iterations
        // with the batch, which keeps advancing.
        let chunked = "{kind: profile, overheadMs: 0.5, chunkedPrefill: true, tokenBudget: 257, \
             prefill: [{promptTokens: 100, ms: 1.5}, {promptTokens: 1000, ms: 10.5}], \
             decode: [{batch: 1, ms: 1}, {batch: 4, ms: 1}]}";
        let (first_chunked, v_chunked) = run(chunked);
        assert!(first_chunked > first, "{first_chunked} vs {first}");
        assert!(v_chunked > v, "the batch advanced {v_chunked} steps vs {v}");
    }
}
