//! Time as carried in objects: milliseconds since the Unix epoch, shown as RFC 3339.
//!
//! This crate reads no clock; callers pass the current time in.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Why a time or duration could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{got:?} is neither an RFC 3339 time (2026-12-31T00:00:00Z) nor a duration (30d, 12h, 15m)")]
pub struct Error {
    pub got: String,
}

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_system(t: SystemTime) -> Timestamp {
        let ms = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    pub fn to_system(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    /// The absolute distance between two times.
    pub fn abs_diff(self, other: Timestamp) -> Duration {
        Duration::from_millis(self.0.abs_diff(other.0))
    }

    /// Parses an RFC 3339 time, or a duration counted from `now` (`30d`, `12h`, `15m`).
    pub fn parse_at_or_after(s: &str, now: Timestamp) -> Result<Timestamp, Error> {
        if let Ok(t) = humantime::parse_rfc3339_weak(s) {
            return Ok(Timestamp::from_system(t));
        }
        match humantime::parse_duration(s) {
            Ok(d) => Ok(now.saturating_add(d)),
            Err(_) => Err(Error { got: s.to_string() }),
        }
    }

    /// Parses an RFC 3339 time, or a duration counted back from `now` (for `--since 1h`).
    pub fn parse_at_or_before(s: &str, now: Timestamp) -> Result<Timestamp, Error> {
        if let Ok(t) = humantime::parse_rfc3339_weak(s) {
            return Ok(Timestamp::from_system(t));
        }
        match humantime::parse_duration(s) {
            Ok(d) => Ok(Timestamp(now.0.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))),
            Err(_) => Err(Error { got: s.to_string() }),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.to_system()))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_forms() {
        let now = Timestamp(1_000_000);
        assert_eq!(Timestamp::parse_at_or_after("15m", now), Ok(Timestamp(1_000_000 + 900_000)));
        assert_eq!(Timestamp::parse_at_or_after("30d", now), Ok(Timestamp(1_000_000 + 30 * 86_400_000)));
        assert_eq!(Timestamp::parse_at_or_after("2026-12-31T00:00:00Z", now), Ok(Timestamp(1_798_675_200_000)));
        assert!(Timestamp::parse_at_or_after("soon", now).is_err());
        assert_eq!(Timestamp(1_798_675_200_000).to_string(), "2026-12-31T00:00:00.000Z");
    }
}
