//! Retry timing: exponential backoff with jitter that only ever adds to a delay, and what
//! counts as retryable.

use std::time::Duration;

use crate::model::RetryPolicy;

/// What to do after an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target took it.
    Delivered,
    /// Worth another attempt (connect error, timeout, 408, 429, 5xx).
    Retry,
    /// Another attempt would fail the same way (other 4xx, a refused address).
    Final,
    /// 410 Gone: the receiver asks us to stop; the target is disabled.
    Gone,
}

/// Classifies a response status.
pub fn verdict_for_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        408 | 429 | 500..=599 => Verdict::Retry,
        // 1xx/3xx end up here too: redirects are not followed (they could point anywhere).
        _ => Verdict::Final,
    }
}

/// Longest `Retry-After` honoured when the policy's maximum is shorter.
const RETRY_AFTER_CAP_MS: u64 = 3_600_000;

/// The nominal delay before attempt `next_attempt` (2 = the first retry):
/// `initial × multiplier^(next_attempt − 2)`, capped at the policy's maximum.
pub fn nominal(policy: &RetryPolicy, next_attempt: u32) -> Duration {
    Duration::from_millis(policy.ceiling_ms(next_attempt))
}

/// How much jitter may add to a delay, as a share of it.
pub const JITTER: f64 = 0.5;

/// The delay before attempt `next_attempt`: uniform in `[nominal, nominal × 1.5]`, and never
/// sooner than the receiver's `Retry-After` (capped at an hour, or the policy's maximum when
/// that is longer).
///
/// Jitter only adds. A policy's attempts therefore always span at least its nominal total, so
/// an outage shorter than the policy is ridden out whatever the draws: with jitter that could
/// also subtract (equal jitter, `[nominal / 2, nominal]`), a 30 s policy dead-lettered 16–35 of
/// 150–300 events during a 20 s outage. Failures of one moment still come back spread over
/// half of each step, so a receiver that recovers is not hit by a synchronized storm. The
/// policy's `max_delay_ms` caps the nominal delay; jitter may add half of it again.
pub fn delay(
    policy: &RetryPolicy,
    next_attempt: u32,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    let base = nominal(policy, next_attempt);
    // `unit` is clamped to [0, 1], so the product stays within 1.5 days at most.
    let jittered =
        Duration::try_from_secs_f64(base.as_secs_f64() * (1.0 + JITTER * unit.clamp(0.0, 1.0)))
            .unwrap_or(base);
    match retry_after {
        Some(ra) => jittered.max(ra.min(Duration::from_millis(
            policy.max_delay_ms().max(RETRY_AFTER_CAP_MS),
        ))),
        None => jittered,
    }
}

/// A uniform number in `[0, 1)` from the OS source (a failure falls back to the ceiling).
pub fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 1.0,
    }
}

/// Reads `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date, which counts from
/// `now` (a date in the past means "now").
pub fn parse_retry_after(value: &[u8], now: std::time::SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::clamped(1000, 2.0, 10_000, 10)
    }

    #[test]
    fn nominal_grows_then_caps() {
        let p = policy();
        let ms: Vec<u128> = (2..8).map(|a| nominal(&p, a).as_millis()).collect();
        assert_eq!(ms, vec![1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(nominal(&p, 200).as_millis(), 10_000);
    }

    #[test]
    fn jitter_only_adds_and_respects_retry_after() {
        let p = policy();
        assert_eq!(delay(&p, 3, None, 0.0).as_millis(), 2000);
        assert_eq!(delay(&p, 3, None, 0.5).as_millis(), 2500);
        assert_eq!(delay(&p, 3, None, 1.0).as_millis(), 3000);
        // The whole schedule, at the smallest draws, spans the nominal total; at the largest,
        // half as much again.
        let nominal_total: u128 = (2..=10).map(|a| nominal(&p, a).as_millis()).sum();
        let least: u128 = (2..=10).map(|a| delay(&p, a, None, 0.0).as_millis()).sum();
        let most: u128 = (2..=10).map(|a| delay(&p, a, None, 1.0).as_millis()).sum();
        assert_eq!(least, nominal_total);
        assert_eq!(most * 2, nominal_total * 3);
        let ra = Some(Duration::from_secs(5));
        assert_eq!(delay(&p, 2, ra, 0.1), Duration::from_secs(5));
        assert_eq!(
            delay(&p, 2, Some(Duration::from_secs(99)), 0.1),
            Duration::from_secs(99)
        );
        assert_eq!(
            delay(&p, 2, Some(Duration::from_secs(86_400)), 0.1),
            Duration::from_secs(3600)
        );
        let u = unit_random();
        assert!((0.0..1.0).contains(&u));
    }

    /// The policy (2 s × 2 up to 16 s, 5 attempts: 30 s nominal) against a 20 s
    /// outage: whatever the draws, the last attempt of an event that failed at any moment of
    /// the outage comes after it ended.
    #[test]
    fn a_policy_outlasts_an_outage_shorter_than_its_nominal_span() {
        let p = RetryPolicy::clamped(2000, 2.0, 16_000, 5);
        let outage = Duration::from_secs(20);
        for _ in 0..10_000 {
            let span: Duration = (2..=5).map(|a| delay(&p, a, None, unit_random())).sum();
            assert!(span >= Duration::from_secs(30), "{span:?}");
            assert!(span > outage);
        }
    }

    /// 1,000 deliveries failing at one moment come back spread over at least half of their
    /// step (the draws' spread: half of it, short of one part in a hundred at most), never
    /// all at once.
    #[test]
    fn failures_of_one_moment_come_back_spread_over_half_the_step() {
        let p = policy();
        for attempt in [2, 5, 9] {
            let step = nominal(&p, attempt);
            let due: Vec<Duration> = (0..1000)
                .map(|_| delay(&p, attempt, None, unit_random()))
                .collect();
            let (Some(first), Some(last)) = (due.iter().min(), due.iter().max()) else {
                panic!("no delays");
            };
            assert!(*first >= step, "attempt {attempt}: sooner than its step");
            let spread = (*last - *first).as_secs_f64() / step.as_secs_f64();
            assert!(
                spread >= 0.49,
                "attempt {attempt}: spread over {spread} of the step"
            );
            // Both halves of the window are used: no clumping at one end.
            let mid = step.mul_f64(1.25);
            let early = due.iter().filter(|d| **d < mid).count();
            assert!(
                (350..=650).contains(&early),
                "attempt {attempt}: {early} early"
            );
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(verdict_for_status(204), Verdict::Delivered);
        assert_eq!(verdict_for_status(400), Verdict::Final);
        assert_eq!(verdict_for_status(301), Verdict::Final);
        assert_eq!(verdict_for_status(408), Verdict::Retry);
        assert_eq!(verdict_for_status(429), Verdict::Retry);
        assert_eq!(verdict_for_status(503), Verdict::Retry);
        assert_eq!(verdict_for_status(410), Verdict::Gone);
    }

    #[test]
    fn retry_after_in_seconds_or_as_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap_or(std::time::UNIX_EPOCH);
        assert_eq!(parse_retry_after(b" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:28:09 GMT", now),
            Some(Duration::from_secs(9))
        );
        // RFC 850 and asctime forms are HTTP-dates too.
        assert_eq!(
            parse_retry_after(b"Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after(b"Wed Oct 21 07:28:30 2015", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(b"soon", now), None);
        assert_eq!(parse_retry_after(b"-3", now), None);
        assert_eq!(parse_retry_after(b"\xff", now), None);
    }
}
