//! Resource quantities (`100m`, `64Mi`, `8`) and resource lists.
//!
//! Every amount is kept as an integer number of milli-units, the way
//! Kubernetes compares quantities (`MilliValue`, rounded up), so sums and caps
//! are exact and the core needs no floating point to decide placement.

use std::fmt;

/// The extended resource name of an NVIDIA GPU.
pub const GPU: &str = "nvidia.com/gpu";

/// Why a quantity string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {input:?}: {why}")]
pub struct QuantityError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Parses a Kubernetes quantity into milli-units, rounding up as Kubernetes
/// does. `"1"` is 1000, `"100m"` is 100, `"1Ki"` is 1 024 000.
///
/// # Errors
/// [`QuantityError`] for malformed text, an unknown suffix, or a value that
/// does not fit in `i64` milli-units.
pub fn parse_quantity(input: &str) -> Result<i64, QuantityError> {
    let err = |why| QuantityError {
        input: input.to_owned(),
        why,
    };
    let s = input.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        Some(_) => (false, s),
        None => return Err(err("empty")),
    };
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err("expected a number"));
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.len() > 30 || whole.len() > 30 {
        return Err(err("too many digits"));
    }
    let mantissa: i128 = format!("{whole}{frac}")
        .parse()
        .map_err(|_| err("expected a number"))?;
    let frac_digits = i32::try_from(frac.len()).unwrap_or(i32::MAX);

    // value = mantissa * 10^(exp10 - frac_digits) * 2^exp2, then * 1000 for milli.
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other if other.starts_with(['e', 'E']) => {
            let exp: i32 = other[1..].parse().map_err(|_| err("bad exponent"))?;
            if !(-40..=40).contains(&exp) {
                return Err(err("exponent out of range"));
            }
            (exp, 0)
        }
        _ => return Err(err("unknown suffix")),
    };
    let scale10 = exp10 - frac_digits + 3;
    let too_large = || err("too large");
    let mut value = mantissa.checked_mul(1_i128 << exp2).ok_or_else(too_large)?;
    if scale10 >= 0 {
        let factor = 10_i128
            .checked_pow(scale10.unsigned_abs())
            .ok_or_else(too_large)?;
        value = value.checked_mul(factor).ok_or_else(too_large)?;
    } else {
        let divisor = 10_i128.checked_pow(scale10.unsigned_abs());
        value = match divisor {
            // Round up, as Kubernetes' MilliValue does.
            Some(d) => (value + d - 1) / d,
            None => i128::from(value > 0),
        };
    }
    if negative {
        value = -value;
    }
    i64::try_from(value).map_err(|_| too_large())
}

/// Formats milli-units back into the shortest exact plain form
/// (`8`, `100m`); used in messages, not on the wire.
#[must_use]
pub fn format_milli(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// Formats an amount of resource `name` for people: byte resources
/// (`memory`, `ephemeral-storage`, `hugepages-*`) in the largest exact
/// binary unit (`32Gi`), everything else as [`format_milli`].
#[must_use]
pub fn format_amount(name: &str, milli: i64) -> String {
    let is_bytes =
        name == "memory" || name == "ephemeral-storage" || name.starts_with("hugepages-");
    if is_bytes && milli % 1000 == 0 && milli != 0 {
        let bytes = milli / 1000;
        for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
            if bytes % (1_i64 << shift) == 0 {
                return format!("{}{suffix}", bytes >> shift);
            }
        }
    }
    format_milli(milli)
}

/// A set of resource amounts by resource name, in milli-units.
/// Absent names are zero; zero amounts are not stored. Kept as a vector
/// sorted by name: a pod names two or three resources, and the index holds
/// one of these per pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources(Vec<(String, i64)>);

impl Resources {
    /// No resources.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    /// The amount of `name`, zero when absent.
    #[must_use]
    pub fn get(&self, name: &str) -> i64 {
        self.find(name).map_or(0, |i| self.0[i].1)
    }

    /// Sets `name` to `milli` (removing it when zero).
    pub fn set(&mut self, name: &str, milli: i64) {
        match (self.find(name), milli) {
            (Ok(i), 0) => {
                self.0.remove(i);
            }
            (Ok(i), m) => self.0[i].1 = m,
            (Err(_), 0) => {}
            (Err(i), m) => self.0.insert(i, (name.to_owned(), m)),
        }
    }

    /// Builder form of [`Resources::set`] taking whole units.
    #[must_use]
    pub fn with(mut self, name: &str, units: i64) -> Self {
        self.set(name, units.saturating_mul(1000));
        self
    }

    /// Adds every amount of `other` (saturating).
    pub fn add(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            let sum = self.get(k).saturating_add(*v);
            self.set(k, sum);
        }
    }

    /// Subtracts every amount of `other` (saturating; may go negative).
    pub fn sub(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            let diff = self.get(k).saturating_sub(*v);
            self.set(k, diff);
        }
    }

    /// Iterates `(name, milli-units)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// True when no resource has a non-zero amount.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The amounts of only the resources named in `names` (e.g. what a pod requests).
    #[must_use]
    pub fn only(&self, names: &Resources) -> Resources {
        Resources(
            self.0
                .iter()
                .filter(|(k, _)| names.find(k).is_ok())
                .cloned()
                .collect(),
        )
    }

    /// Number of resource names with a non-zero amount.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl FromIterator<(String, i64)> for Resources {
    fn from_iter<T: IntoIterator<Item = (String, i64)>>(iter: T) -> Self {
        let mut r = Resources::new();
        for (k, v) in iter {
            let sum = r.get(&k).saturating_add(v);
            r.set(&k, sum);
        }
        r.0.shrink_to_fit();
        r
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.0 {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{k}={}", format_amount(k, *v))?;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_quantities() {
        let cases = [
            ("1", 1000),
            ("8", 8000),
            ("100m", 100),
            ("0.5", 500),
            ("1.5", 1500),
            ("1k", 1_000_000),
            ("64Mi", 64 * 1024 * 1024 * 1000),
            ("1Gi", 1024 * 1024 * 1024 * 1000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1n", 1),
            ("1500u", 2),
            ("+2", 2000),
            ("-1", -1000),
            ("0", 0),
            (".5", 500),
        ];
        for (text, milli) in cases {
            assert_eq!(parse_quantity(text).unwrap(), milli, "{text}");
        }
    }

    #[test]
    fn rejects_malformed_quantities() {
        for text in [
            "",
            "abc",
            "1.2.3",
            "5X",
            "1Zi",
            "1e",
            "99999999999999999999Ei",
            "1e99",
            ".",
        ] {
            assert!(parse_quantity(text).is_err(), "{text:?} should fail");
        }
    }

    #[test]
    fn resources_add_and_subtract_exactly() {
        let mut a = Resources::new().with(GPU, 2);
        a.add(&Resources::new().with(GPU, 3).with("cpu", 1));
        assert_eq!(a.get(GPU), 5000);
        a.sub(&Resources::new().with(GPU, 5));
        assert_eq!(a.get(GPU), 0);
        assert_eq!(a.len(), 1, "zero amounts are dropped");
        assert_eq!(a.to_string(), "cpu=1");
        let mem = Resources::new().with("memory", 32 << 30).with("cpu", 2);
        assert_eq!(mem.to_string(), "cpu=2, memory=32Gi");
        assert_eq!(
            mem.only(&Resources::new().with("memory", 1)).to_string(),
            "memory=32Gi"
        );
    }
}
