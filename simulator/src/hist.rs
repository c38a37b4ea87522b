//! Log-linear latency histograms (HDR style): fixed memory, under 1 %
//! relative error at bucket midpoints, exact counts, deterministic
//! percentiles. A bucket is read straight from the bits of the value as a
//! float (exponent and top mantissa bits), so recording costs no logarithm.

/// Sub-buckets per power of two (relative bucket width 1/64 ≈ 1.6 %).
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Bucket 0 holds zero; then 64 sub-buckets for each power of two up to 2^63.
const BUCKETS: usize = 1 + 64 * SUB;

/// A histogram of non-negative durations in microseconds.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_us: f64,
    max_us: i64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            sum_us: 0.0,
            max_us: 0,
        }
    }
}

fn bucket_of(us: i64) -> usize {
    if us <= 0 {
        return 0;
    }
    #[allow(clippy::cast_precision_loss)]
    // Only the exponent and the top mantissa bits are used.
    let bits = (us as f64).to_bits();
    let exponent = ((bits >> 52) & 0x7ff).saturating_sub(1023);
    let mantissa = (bits >> (52 - SUB_BITS)) & (SUB as u64 - 1);
    usize::try_from(1 + exponent * SUB as u64 + mantissa)
        .map_or(BUCKETS - 1, |b| b.min(BUCKETS - 1))
}

fn bucket_mid(b: usize) -> f64 {
    if b == 0 {
        return 0.0;
    }
    let exponent = i32::try_from((b - 1) / SUB).unwrap_or(0);
    #[allow(clippy::cast_precision_loss)] // b - 1 < 4096
    let sub = ((b - 1) % SUB) as f64;
    #[allow(clippy::cast_precision_loss)]
    let width = SUB as f64;
    2f64.powi(exponent) * (1.0 + (sub + 0.5) / width)
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, us: i64) {
        let us = us.max(0);
        self.counts[bucket_of(us)] += 1;
        self.total += 1;
        #[allow(clippy::cast_precision_loss)]
        // Latencies are far below 2^52 µs.
        {
            self.sum_us += us as f64;
        }
        self.max_us = self.max_us.max(us);
    }

    /// Number of values.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Mean in seconds (0 when empty).
    #[must_use]
    pub fn mean_s(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let n = self.total as f64;
        self.sum_us / n / 1e6
    }

    /// The `q` quantile (0..=1) in seconds (0 when empty).
    #[must_use]
    pub fn quantile_s(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                #[allow(clippy::cast_precision_loss)]
                let cap = self.max_us as f64;
                return bucket_mid(b).min(cap.max(1.0)) / 1e6;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let max = self.max_us as f64;
        max / 1e6
    }

    /// Share of values at or below `limit_us` (bucket resolution).
    #[must_use]
    pub fn share_below(&self, limit_us: i64) -> f64 {
        if self.total == 0 {
            return 1.0;
        }
        let last = bucket_of(limit_us);
        let below: u64 = self.counts[..=last].iter().sum();
        #[allow(clippy::cast_precision_loss)]
        let share = below as f64 / self.total as f64;
        share
    }

    /// Adds another histogram's values.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Empties the histogram, keeping its memory.
    pub fn clear(&mut self) {
        if self.total > 0 {
            self.counts.iter_mut().for_each(|c| *c = 0);
        }
        self.total = 0;
        self.sum_us = 0.0;
        self.max_us = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut h = Histogram::default();
        for us in 1..=100_000 {
            h.record(us * 10);
        }
        for q in [0.5, 0.95, 0.99] {
            let exact = q * 1_000_000.0 / 1e6;
            let got = h.quantile_s(q);
            assert!((got - exact).abs() / exact < 0.02, "q{q}: {got} vs {exact}");
        }
        assert!((h.mean_s() - 0.500_005).abs() < 1e-9);
        assert!((h.share_below(500_000) - 0.5).abs() < 0.02);
    }

    #[test]
    fn empty_and_merged_histograms_behave() {
        let mut a = Histogram::default();
        assert_eq!(a.quantile_s(0.5), 0.0);
        let mut b = Histogram::default();
        b.record(2_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 1);
        assert!((a.quantile_s(0.5) - 2.0).abs() < 0.03);
        a.clear();
        assert_eq!(a.count(), 0);
    }
}
