//! Adaptive concurrency: each target's in-flight limit, found from its own answers.
//!
//! A gradient limiter in the style of Netflix's concurrency-limits (`Gradient2`) and Envoy's
//! adaptive concurrency filter: the limit follows `limit × gradient + √limit`, where the
//! gradient is `allowed / rtt` clamped to 0.5–1, `allowed` the larger of `1.5 × min_rtt` and
//! `min_rtt + 20 ms` (a receiver answering in a millisecond is not queueing when it answers
//! in five: this process was busy). While the receiver answers as fast as it does unloaded
//! (within the tolerance), the gradient is 1 and the limit grows by
//! its square root per sample (smoothed), so a fast receiver reaches the cap in a second or
//! two; once queueing inside the receiver makes it slower, the gradient falls below 1 and the
//! limit settles where latency stays within the tolerance of the unloaded one. The unloaded
//! latency is the smallest seen over the current and the previous 30 s, so it follows a
//! receiver that becomes slower for good.
//!
//! Latency alone does not see a receiver that refuses work (429, 503) without slowing down:
//! such an answer cuts the limit to three quarters (once per round trip, however many answers
//! of that round trip say so) and remembers the limit it happened at as a ceiling; near the
//! ceiling the limit grows by one per round trip instead of its square root (AIMD), and not
//! past one below the ceiling until the ceiling is forgotten, a minute after its refusal: the
//! receiver is asked for more once a minute, not once a cycle.
//!
//! Latency alone never takes the limit below 16: it cannot tell a receiver's queue from this
//! process's own (a dispatcher busy on two cores sees every answer late, and would otherwise
//! throttle a receiver that is idle); refusals can take it down to 1.
//!
//! Chosen over plain AIMD, which needs an overload signal (a 429 or a timeout) to stop
//! growing: against a receiver that merely slows down, it would keep adding requests until
//! they time out. The gradient stops where latency starts to grow, which is what a receiver
//! with a knee needs; the AIMD part handles the receivers that say "no" instead.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much slower than unloaded an answer may be before the limit stops growing.
const TOLERANCE: f64 = 1.5;
/// How much slower than unloaded an answer may be in any case: a fast receiver's answers
/// come a few milliseconds late whenever this process is busy (its own tasks wait for the
/// cores), which is no sign of a queue in the receiver.
const SLACK: Duration = Duration::from_millis(20);
/// The share of each sample's new limit taken (exponential smoothing).
const SMOOTHING: f64 = 0.2;
/// The cut on a 429 or 503.
const BACKOFF: f64 = 0.75;
/// How long the unloaded latency is measured over (two windows are kept).
const RTT_WINDOW: Duration = Duration::from_secs(30);
/// How long a ceiling is kept without a new refusal.
const CEILING_TTL: Duration = Duration::from_secs(60);
/// Where a new target starts.
const INITIAL: f64 = 16.0;
/// The lowest limit latency alone can bring a target to.
const LATENCY_FLOOR: f64 = 16.0;

/// What an attempt says about the receiver's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    /// It answered (any status but 429 and 503).
    Answered,
    /// It refused for load: 429 or 503.
    Refused,
    /// No answer in time, or no connection: says nothing about load (the breaker handles it).
    Unknown,
}

#[derive(Debug)]
struct State {
    limit: f64,
    /// The smallest latency of the previous window and of the current one.
    previous_min: Option<Duration>,
    current_min: Option<Duration>,
    window_start: Instant,
    last_cut: Option<Instant>,
    ceiling: Option<(f64, Instant)>,
}

/// One target's in-flight limit: fixed, or adaptive between 1 and `max`.
#[derive(Debug)]
pub(super) struct Limit {
    max: usize,
    adaptive: bool,
    state: Mutex<State>,
}

impl Limit {
    pub(super) fn fixed(n: usize) -> Limit {
        Limit::new(n.max(1), false)
    }

    pub(super) fn adaptive(max: usize) -> Limit {
        Limit::new(max.max(1), true)
    }

    fn new(max: usize, adaptive: bool) -> Limit {
        let start = if adaptive {
            INITIAL.min(max as f64)
        } else {
            max as f64
        };
        Limit {
            max,
            adaptive,
            state: Mutex::new(State {
                limit: start,
                previous_min: None,
                current_min: None,
                window_start: Instant::now(),
                last_cut: None,
                ceiling: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(super) fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    /// The limit now, as a whole number of deliveries in flight.
    pub(super) fn current(&self) -> usize {
        (self.lock().limit.round() as usize).clamp(1, self.max)
    }

    /// Learns from one attempt that took `rtt` with `in_flight` deliveries to the target
    /// (this one included); returns the new limit.
    pub(super) fn sample(&self, rtt: Duration, signal: Signal, in_flight: usize) -> usize {
        if !self.adaptive {
            return self.max;
        }
        let now = Instant::now();
        let mut s = self.lock();
        if now.duration_since(s.window_start) >= RTT_WINDOW {
            s.previous_min = s.current_min.take();
            s.window_start = now;
        }
        if s.ceiling
            .is_some_and(|(_, at)| now.duration_since(at) >= CEILING_TTL)
        {
            s.ceiling = None;
        }
        let min_rtt = [s.previous_min, s.current_min, Some(rtt)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rtt);
        match signal {
            Signal::Unknown => {}
            Signal::Refused => {
                // One cut per round trip: the answers of one round all report the same load.
                let recent = s
                    .last_cut
                    .is_some_and(|at| now.duration_since(at) < min_rtt.max(rtt));
                if !recent {
                    s.ceiling = Some((s.limit, now));
                    s.limit = (s.limit * BACKOFF).max(1.0);
                    s.last_cut = Some(now);
                }
            }
            Signal::Answered => {
                s.current_min = Some(s.current_min.map_or(rtt, |m| m.min(rtt)));
                // A limit the target does not use says nothing: grow only when it is used.
                let used = in_flight as f64 * 2.0 >= s.limit;
                let allowed =
                    (TOLERANCE * min_rtt.as_secs_f64()).max((min_rtt + SLACK).as_secs_f64());
                let gradient = if rtt.is_zero() {
                    1.0
                } else {
                    (allowed / rtt.as_secs_f64()).clamp(0.5, 1.0)
                };
                let near_ceiling = s.ceiling.is_some_and(|(c, _)| s.limit >= c * 0.9);
                let growth = match (used, near_ceiling) {
                    (false, _) => 0.0,
                    // One per round trip: each of the round's `limit` samples adds 1/limit,
                    // undone by the smoothing's share.
                    (true, true) => 1.0 / (s.limit * SMOOTHING),
                    (true, false) => s.limit.sqrt(),
                };
                let target = s.limit * gradient + growth;
                let smoothed = s.limit * (1.0 - SMOOTHING) + target * SMOOTHING;
                // Not past one below the last refusal's limit until it is forgotten: asking
                // again at once would only be refused again.
                let cap = s
                    .ceiling
                    .map_or(self.max as f64, |(c, _)| (c - 1.0).max(1.0));
                let next = if smoothed > s.limit {
                    smoothed.min(cap.max(s.limit))
                } else {
                    // Latency alone does not take it below the floor: it cannot tell a
                    // receiver's queue from this process's own (a dispatcher busy on two
                    // cores sees every answer late); only refusals can.
                    smoothed.max(LATENCY_FLOOR.min(s.limit))
                };
                s.limit = next.clamp(1.0, self.max as f64);
            }
        }
        (s.limit.round() as usize).clamp(1, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_fixed_limit_never_moves() {
        let l = Limit::fixed(8);
        assert_eq!(l.sample(ms(5000), Signal::Refused, 8), 8);
        assert_eq!(l.current(), 8);
        assert!(!l.is_adaptive());
    }

    #[test]
    fn a_receiver_as_fast_loaded_as_unloaded_gets_the_cap() {
        let l = Limit::adaptive(256);
        let mut limit = l.current();
        for _ in 0..2000 {
            limit = l.sample(ms(200), Signal::Answered, limit);
        }
        assert_eq!(limit, 256);
    }

    #[test]
    fn an_unused_limit_does_not_grow() {
        let l = Limit::adaptive(256);
        for _ in 0..1000 {
            l.sample(ms(10), Signal::Answered, 1);
        }
        assert_eq!(l.current(), 16);
    }

    /// A receiver that serves 50 at once and queues the rest: latency grows with what is in
    /// flight beyond 50.
    fn knee(in_flight: usize) -> Duration {
        ms(100) * (in_flight.max(50) as u32) / 50
    }

    #[test]
    fn the_limit_settles_past_a_knee_with_latency_within_the_tolerance() {
        let l = Limit::adaptive(1000);
        let mut limit = l.current();
        let mut seen = Vec::new();
        for i in 0..20_000 {
            limit = l.sample(knee(limit), Signal::Answered, limit);
            if i >= 10_000 {
                seen.push(limit);
            }
        }
        let (lo, hi) = (
            *seen.iter().min().unwrap_or(&0),
            *seen.iter().max().unwrap_or(&0),
        );
        // At least the knee (full goodput), and latency within the tolerance: at most 1.5 ×
        // the knee in flight, so within 2 × the unloaded latency.
        assert!(lo >= 50 && hi <= 100, "settled between {lo} and {hi}");
    }

    #[test]
    fn refusals_cut_the_limit_once_per_round_trip_and_growth_near_the_ceiling_is_slow() {
        let l = Limit::adaptive(1000);
        let mut limit = l.current();
        // A receiver that refuses everything above 40 in flight, answering in 1 ms.
        let (mut refused, mut total) = (0u32, 0u32);
        for i in 0..40_000 {
            let signal = if limit > 40 {
                Signal::Refused
            } else {
                Signal::Answered
            };
            if i >= 20_000 {
                total += 1;
                refused += u32::from(signal == Signal::Refused);
            }
            limit = l.sample(ms(1), signal, limit);
            if signal == Signal::Refused {
                // Samples of the same round trip do not cut again.
                std::thread::sleep(ms(1));
            }
        }
        assert!((20..=41).contains(&limit), "{limit}");
        assert!(
            f64::from(refused) / f64::from(total) < 0.01,
            "{refused} of {total} refused"
        );
    }
}
