//! Time as carried in objects: milliseconds since the Unix epoch, shown as RFC 3339.
//!
//! This crate reads no clock; callers pass the current time in.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Why a time or duration could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{got:?} is neither an RFC 3339 time (2026-12-31T00:00:00Z) nor a duration (30d, 12h, 15m)")]
    Unparsable { got: String },
    #[error("{got:?} is after 9999-12-31T23:59:59.999Z, the last time deltafed can carry")]
    OutOfRange { got: String },
}

/// Milliseconds since 1970-01-01T00:00:00Z, at most [`Timestamp::MAX`]. Decoding refuses larger
/// values, so every time in an object can be shown as RFC 3339.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let ms = u64::deserialize(d)?;
        if ms > Timestamp::MAX.0 {
            return Err(serde::de::Error::custom(format!(
                "time {ms} ms is after 9999-12-31T23:59:59.999Z, the last time deltafed can carry"
            )));
        }
        Ok(Timestamp(ms))
    }
}

impl Timestamp {
    /// 9999-12-31T23:59:59.999Z: the last time RFC 3339 (four-digit years) can show.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    pub fn from_system(t: SystemTime) -> Timestamp {
        let ms = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// As a `SystemTime`, clamped to [`Timestamp::MAX`].
    pub fn to_system(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.min(Timestamp::MAX.0))
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
        let t = if let Ok(t) = humantime::parse_rfc3339_weak(s) {
            Timestamp::from_system(t)
        } else {
            match humantime::parse_duration(s) {
                Ok(d) => now.saturating_add(d),
                Err(_) => return Err(Error::Unparsable { got: s.to_string() }),
            }
        };
        if t > Timestamp::MAX {
            return Err(Error::OutOfRange { got: s.to_string() });
        }
        Ok(t)
    }

    /// Parses an RFC 3339 time, or a duration counted back from `now` (for `--since 1h`).
    pub fn parse_at_or_before(s: &str, now: Timestamp) -> Result<Timestamp, Error> {
        if let Ok(t) = humantime::parse_rfc3339_weak(s) {
            return Ok(Timestamp::from_system(t));
        }
        match humantime::parse_duration(s) {
            Ok(d) => Ok(Timestamp(now.0.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))),
            Err(_) => Err(Error::Unparsable { got: s.to_string() }),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never fails: a value past MAX (only ever built in memory, never decoded) shows as such.
        if *self > Timestamp::MAX {
            return write!(f, "+{}ms", self.0);
        }
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

    #[test]
    fn far_future_times_are_refused_and_never_panic() {
        let now = Timestamp(1_798_675_200_000);
        assert!(matches!(Timestamp::parse_at_or_after("3000000d", now), Err(Error::OutOfRange { .. })));
        assert!(matches!(
            Timestamp::parse_at_or_after("10000-01-01T00:00:00Z", now),
            Err(Error::Unparsable { .. }) | Err(Error::OutOfRange { .. })
        ));
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp(u64::MAX).to_string(), format!("+{}ms", u64::MAX));
        let _ = Timestamp(u64::MAX).to_system();
        let enc = |ms: u64| cbor4ii::serde::to_vec(Vec::new(), &ms).expect("encode");
        let dec = |b: &[u8]| cbor4ii::serde::from_slice::<Timestamp>(b);
        assert_eq!(dec(&enc(Timestamp::MAX.0)).expect("max decodes"), Timestamp::MAX);
        assert!(dec(&enc(Timestamp::MAX.0 + 1)).is_err(), "past MAX is refused at decode");
    }
}
