//! The clock and the one time format of the APIs: RFC 3339, UTC, milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last millisecond RFC 3339 can show (9999-12-31T23:59:59.999Z); later times are shown
/// as this one instead of overflowing.
pub const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch, by the system's clock. Only [`Clock`] reads it: what
/// the gateway decides by time (a retry's due time, a session's age, a link's expiry, a
/// monitor's deadline, retention) asks the clock it was given, so a test can move that clock
/// forward instead of sleeping.
fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// The time the gateway decides by: the system's clock, plus however far a test has moved
/// it ahead. Cheap to clone; every clone reads the same time. It only ever moves forward,
/// and the real time keeps running under it, because Redis, sockets and timers do.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Milliseconds added to the system's time; `None` for the plain system clock.
    ahead: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system's clock, as every deployment runs.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that starts at the system's time and that the returned hand moves forward.
    pub fn adjustable() -> (Clock, ClockHand) {
        let ahead = Arc::new(AtomicU64::new(0));
        (
            Clock {
                ahead: Some(ahead.clone()),
            },
            ClockHand { ahead },
        )
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.shift(system_now_ms())
    }

    /// How far a test has moved this clock ahead of the system's (0 in a deployment), for
    /// scripts that read Redis's `TIME`.
    pub fn ahead_ms(&self) -> u64 {
        self.ahead
            .as_ref()
            .map_or(0, |ahead| ahead.load(Ordering::Relaxed))
    }

    /// `ms`, a time read from another clock (Redis's `TIME`), moved as far as this clock is.
    pub fn shift(&self, ms: u64) -> u64 {
        match &self.ahead {
            Some(ahead) => ms.saturating_add(ahead.load(Ordering::Relaxed)),
            None => ms,
        }
    }
}

/// Moves an adjustable [`Clock`] forward (tests).
#[derive(Clone, Debug)]
pub struct ClockHand {
    ahead: Arc<AtomicU64>,
}

impl ClockHand {
    /// Moves the clock `by` forward.
    pub fn advance(&self, by: Duration) {
        self.ahead
            .fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}

/// RFC 3339 (UTC, milliseconds) of a Unix time in milliseconds. Never panics: a time past
/// year 9999 (only a corrupt record holds one) is shown as the last representable instant.
pub fn rfc3339(ms: u64) -> String {
    let ms = ms.min(MAX_RFC3339_MS);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Parses an RFC 3339 time (`Z` or a `±hh:mm` offset, either case, any fraction of a second,
/// a leap second) into Unix milliseconds; a time before the epoch reads as the epoch (no
/// event is older).
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.trim().as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac: String = std::str::from_utf8(&b[start..i.min(start + 3)])
            .ok()?
            .to_owned();
        millis = format!("{frac:0<3}").parse().ok()?;
    }
    let offset_s = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            (h * 3600 + m * 60) * if *sign == b'+' { 1 } else { -1 }
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // A leap second is the last millisecond of its minute.
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_s;
    let ms = secs * 1000 + if second == 60 { 999 } else { millis };
    Some(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_millis_and_bounded() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14t23:13:20.123+01:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T21:13:20.123-01:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20z"),
            Some(1_700_000_000_000)
        );
        for bad in [
            "yesterday",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20+1:00",
            "2023-11-14T22:13:20+25:00",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
