//! Samplers and numeric helpers: exponential and normal variates by
//! ziggurat, token-count distributions, float/integer conversions.
//!
//! The exponential is Spillway's own ziggurat: `benches/primitives.rs`
//! finds `rand_distr`'s `Exp1` 8 % faster (417 against 452 µs per 100,000
//! draws), too little to change every run's arrival sequence, and with it
//! every report, for. Normals come from `rand_distr`.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------------------
// Numeric helpers: the module's float/integer conversions and samplers
// ---------------------------------------------------------------------------

/// `floor(x)` saturated to the i64 range (NaN → 0).
///
/// By truncation and one comparison rather than `f64::floor`, which on the
/// baseline x86-64 target is a libm call on every arrival. Exact: a float
/// beyond 2^53 is an integer and truncates exactly.
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)] // `as` saturates
pub(crate) fn floor_i64(x: f64) -> i64 {
    let t = x as i64;
    if (t as f64) > x {
        t.saturating_sub(1)
    } else {
        t
    }
}

/// `ceil(x)` saturated to the i64 range (NaN → 0), the same way as [`floor_i64`].
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)] // `as` saturates
pub(crate) fn ceil_i64(x: f64) -> i64 {
    let t = x as i64;
    if (t as f64) < x {
        t.saturating_add(1)
    } else {
        t
    }
}

/// `round(x)` saturated to the i64 range (NaN → 0).
#[allow(clippy::cast_possible_truncation)] // `as` saturates, and after round() nothing is truncated
pub(super) fn round_i64(x: f64) -> i64 {
    x.round() as i64
}

#[allow(clippy::cast_precision_loss)] // µs offsets below 2^53 (285 years) convert exactly
pub(super) fn i64_f64(x: i64) -> f64 {
    x as f64
}

#[allow(clippy::cast_precision_loss)] // counts below 2^53 convert exactly
pub(super) fn usize_f64(x: usize) -> f64 {
    x as f64
}

/// A token count from a real sample: rounded, clamped to `1..=u32::MAX`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped into u32 range first (NaN → 1 by the max)
pub(super) fn token_count(x: f64) -> u32 {
    x.round().max(1.0).min(f64::from(u32::MAX)) as u32
}

/// `v` if it is a whole number in u32 range.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked whole and in range first
pub(super) fn whole_u32(v: f64) -> Option<u32> {
    (v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v)).then_some(v as u32)
}

/// Uniform on [0, 1) with 52 random bits, built from the bit pattern of
/// 1.x (exact, no integer-to-float cast).
#[inline]
pub(super) fn unit_open_above(rng: &mut Pcg64Mcg) -> f64 {
    f64::from_bits(0x3FF0_0000_0000_0000 | (rng.next_u64() >> 12)) - 1.0
}

/// Unit exponential by inversion: -ln(u) with u uniform on (0, 1], so never
/// infinite (for the ziggurats' tails).
#[inline]
pub(super) fn exponential_by_inversion(rng: &mut Pcg64Mcg) -> f64 {
    -(1.0 - unit_open_above(rng)).ln()
}

/// Layers of the ziggurat for the unit exponential (Marsaglia & Tsang 2000).
pub(super) const EXP_LAYERS: usize = 256;
/// Where the tail starts for 256 layers.
pub(super) const EXP_R: f64 = 7.697_117_470_131_05;
/// Area of every layer under `exp(-x)` (the base layer including the tail).
pub(super) const EXP_V: f64 = 3.949_659_822_581_557e-3;

/// The unit exponential's ziggurat (`f(x) = exp(-x)`).
pub(super) type ExpZiggurat = Tables<{ EXP_LAYERS + 1 }>;

pub(super) fn exp_ziggurat() -> &'static ExpZiggurat {
    static TABLES: OnceLock<ExpZiggurat> = OnceLock::new();
    TABLES.get_or_init(|| Tables::build(EXP_R, EXP_V, |x| (-x).exp(), |y| -y.ln()))
}

/// Unit exponential by the ziggurat method: one 64-bit draw and a table
/// comparison about 98.9 % of the time, a logarithm only in the rare
/// wedges. The tail beyond `EXP_R` is `EXP_R` plus a fresh exponential
/// (the distribution is memoryless).
#[inline]
pub fn unit_exponential(rng: &mut Pcg64Mcg) -> f64 {
    let z = exp_ziggurat();
    loop {
        // The low 8 bits pick the layer, the top 52 the position: disjoint bits.
        let bits = rng.next_u64();
        let i = usize::try_from(bits & 0xFF).unwrap_or(0);
        let u = f64::from_bits(0x3FF0_0000_0000_0000 | (bits >> 12)) - 1.0;
        let x = u * z.x[i];
        if x < z.x[i + 1] {
            return x;
        }
        if i == 0 {
            return EXP_R + exponential_by_inversion(rng);
        }
        if unit_open_above(rng).mul_add(z.f[i] - z.f[i + 1], z.f[i + 1]) < (-x).exp() {
            return x;
        }
    }
}

/// Ziggurat tables for a density `f` with `f(0) = 1`, decreasing on
/// `x >= 0`: `x[0] = V / f(R)` (the base layer's equivalent width),
/// `x[1] = R`, strictly decreasing to `x[L - 1] = 0`; `f[i] = f(x[i])`.
pub(super) struct Tables<const L: usize> {
    pub(super) x: [f64; L],
    pub(super) f: [f64; L],
}

impl<const L: usize> fmt::Debug for Tables<L> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Ziggurat")
    }
}

impl<const L: usize> Tables<L> {
    /// Layer edges by the recurrence `x[i] = f⁻¹(V / x[i-1] + f(x[i-1]))`
    /// (every layer has area `v`).
    pub(super) fn build(r: f64, v: f64, density: fn(f64) -> f64, inverse: fn(f64) -> f64) -> Self {
        let mut x = [0.0; L];
        x[0] = v / density(r);
        x[1] = r;
        for i in 2..L - 1 {
            let prev = x[i - 1];
            x[i] = inverse(v / prev + density(prev));
        }
        Self {
            x,
            f: x.map(density),
        }
    }
}

/// A standard normal variate, by `rand_distr`'s ziggurat (which
/// `benches/primitives.rs` measured at 1.9 times the speed of the
/// hand-written one Spillway had).
#[inline]
pub fn standard_normal(rng: &mut Pcg64Mcg) -> f64 {
    rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng)
}

/// Uniform index in `0..n` (n >= 1) by a 64x64-bit multiply; the bias is below n / 2^64.
#[inline]
pub(super) fn index_below(rng: &mut Pcg64Mcg, n: usize) -> usize {
    let wide = u128::from(rng.next_u64()) * n as u128;
    usize::try_from(wide >> 64).unwrap_or(0)
}
