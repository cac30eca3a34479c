//! The clock and the one time format of the APIs: RFC 3339, UTC, milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last millisecond RFC 3339 can show (9999-12-31T23:59:59.999Z); later times are shown
/// as this one instead of overflowing.
pub const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// RFC 3339 (UTC, milliseconds) of a Unix time in milliseconds. Never panics: a time past
/// year 9999 (only a corrupt record holds one) is shown as the last representable instant.
pub fn rfc3339(ms: u64) -> String {
    let ms = ms.min(MAX_RFC3339_MS);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Parses an RFC 3339 time (`Z` or a `±hh:mm` offset, either case) into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let text = text.trim();
    let (local, offset_s): (&str, i64) = if let Some(t) = text.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else {
        let split = text.len().checked_sub(6)?;
        let (t, off) = (text.get(..split)?, text.get(split..)?);
        let sign = match off.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (h, m) = off.get(1..)?.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        if h > 23 || m > 59 {
            return None;
        }
        (t, sign * (h * 3600 + m * 60))
    };
    let normalized = local.replacen(['t', ' '], "T", 1);
    if normalized.len() < 19 || normalized.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let t = humantime::parse_rfc3339(&format!("{normalized}Z")).ok()?;
    let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64 - offset_s * 1000;
    u64::try_from(ms).ok()
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
