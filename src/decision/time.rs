//! Time as the core sees it: an explicit instant passed in by the caller.
//!
//! The core never reads a clock. Drivers pass `now` (wall clock in the cluster,
//! simulated time in the simulator), so every decision is reproducible from
//! its inputs.

use std::fmt;
use std::time::Duration;

/// An instant, in milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub i64);

impl Time {
    /// The instant `ms` milliseconds after the Unix epoch.
    #[must_use]
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// The instant `s` seconds after the Unix epoch.
    #[must_use]
    pub const fn from_secs(s: i64) -> Self {
        Self(s.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant moved `d` later, saturating at the end of time.
    #[must_use]
    pub fn after(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// This instant moved `d` earlier, saturating at the start of time.
    #[must_use]
    pub fn before(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(ms))
    }

    /// How long after `earlier` this instant is (zero if it is not later).
    #[must_use]
    pub fn since(self, earlier: Time) -> Duration {
        let ms = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {why} (expected Go syntax such as \"15m\", \"90s\" or \"1h30m\")"
)]
pub struct DurationError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Parses a duration in Go's `time.ParseDuration` syntax, as Kubernetes
/// manifests write them (`15m`, `1h30m`, `2.5s`, `500ms`). Negative
/// durations are rejected: every duration Spillway reads is a wait.
///
/// # Errors
/// [`DurationError`] when the text is empty, has no unit, an unknown unit or
/// a number that does not fit.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        input: input.to_owned(),
        why,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(err("negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_nanos: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let number = &s[start..i];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err("expected a number"));
        }
        let unit_start = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let unit_nanos: u128 = match &s[unit_start..i] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err("number too large"))?
        };
        let mut nanos = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| err("number too large"))?;
        let mut scale = unit_nanos;
        for digit in frac.bytes().take(18) {
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| err("number too large"))?;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| err("number too large"))?;
    let sub = u32::try_from(total_nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

/// Formats a duration compactly for messages (`15m`, `1h30m`, `2.5s`).
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if !ms.is_multiple_of(1000) && ms < 60_000 {
        let frac = format!("{:03}", ms % 1000);
        return format!("{}.{}s", ms / 1000, frac.trim_end_matches('0'));
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&(secs / size).to_string());
            out.push_str(unit);
            secs %= size;
        }
    }
    out
}

/// Why a timestamp was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 timestamp {input:?} (expected e.g. \"2026-11-22T13:35:04Z\")")]
pub struct TimestampError {
    /// The rejected text.
    pub input: String,
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 timestamp as Kubernetes writes them
/// (`2026-11-22T13:35:04Z`, optional fraction, `Z` or `±hh:mm`).
///
/// # Errors
/// [`TimestampError`] for anything else.
pub fn parse_rfc3339(input: &str) -> Result<Time, TimestampError> {
    let err = || TimestampError {
        input: input.to_owned(),
    };
    let s = input.trim().as_bytes();
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't' | b' ')
        || s[13] != b':'
        || s[16] != b':'
    {
        return Err(err());
    }
    let num = |a: usize, b: usize| -> Result<i64, TimestampError> {
        let part = std::str::from_utf8(&s[a..b]).map_err(|_| err())?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        part.parse().map_err(|_| err())
    };
    let (y, mo, d, h, mi, sec) = (
        num(0, 4)?,
        num(5, 7)?,
        num(8, 10)?,
        num(11, 13)?,
        num(14, 16)?,
        num(17, 19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(err());
    }
    let mut i = 19;
    let mut millis = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(err());
        }
        let frac = &s[start..i.min(start + 3)];
        let mut ms = 0;
        for (k, c) in frac.iter().enumerate() {
            ms += i64::from(c - b'0') * [100, 10, 1][k];
        }
        millis = ms;
    }
    let offset_secs = match s.get(i) {
        Some(b'Z' | b'z') if i + 1 == s.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == s.len() && s[i + 3] == b':' => {
            let off = num(i + 1, i + 3)? * 3600 + num(i + 4, i + 6)? * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return Err(err()),
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Ok(Time(secs * 1000 + millis))
}

/// Formats an instant as RFC 3339 UTC with second precision
/// (`2026-11-22T13:35:04Z`), the form Kubernetes writes.
#[must_use]
pub fn format_rfc3339(t: Time) -> String {
    let secs = t.0.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("15m", 900_000),
            ("1h30m", 5_400_000),
            ("90s", 90_000),
            ("2.5s", 2_500),
            ("500ms", 500),
            ("0", 0),
            ("1h0m0s", 3_600_000),
            ("+5s", 5_000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration(text).unwrap().as_millis(), ms, "{text}");
        }
    }

    #[test]
    fn rejects_malformed_durations() {
        for text in [
            "",
            "15",
            "m",
            "-5m",
            "5x",
            "1..5s",
            "abc",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} should fail");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["15m", "1h30m", "2.5s", "45s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn time_arithmetic_saturates() {
        let t = Time::from_secs(10);
        assert_eq!(t.after(Duration::from_secs(5)), Time::from_secs(15));
        assert_eq!(Time::from_secs(5).since(t), Duration::ZERO);
        assert_eq!(Time(i64::MAX).after(Duration::from_secs(1)), Time(i64::MAX));
    }

    #[test]
    fn rfc3339_round_trips_kubernetes_timestamps() {
        let t = parse_rfc3339("2026-11-22T13:35:04Z").unwrap();
        assert_eq!(t.as_millis(), 1_795_354_504_000);
        assert_eq!(format_rfc3339(t), "2026-11-22T13:35:04Z");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), Time(0));
        assert_eq!(
            parse_rfc3339("2026-11-22T14:35:04.250+01:00")
                .unwrap()
                .as_millis(),
            1_795_354_504_250
        );
        assert_eq!(
            format_rfc3339(Time(951_782_400_000)),
            "2000-02-29T00:00:00Z"
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T13:35:04",
            "2026-11-22T13:35:04Zjunk",
            "2026-11-22T13:35:04.",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }
}
