//! Adaptive concurrency: each target's in-flight limit, found from its own answers.
//!
//! A gradient limiter after Envoy's adaptive concurrency filter (and Netflix's
//! concurrency-limits, `Gradient`): once per round trip the limit moves to
//! `limit × gradient + √limit`, the gradient being `allowed / rtt` clamped to 0.5–1 and
//! `allowed` the larger of `1.25 × min_rtt` (Envoy's default buffer) and `min_rtt + 10 ms` (a
//! receiver answering in a millisecond is not queueing when it answers in five: this process
//! was busy). The step is spread over the round trip's samples (each moves the limit by
//! `gradient − 1 + √limit / limit`), so a round trip moves it once, whatever the limit: an
//! update per sample at full weight would grow by about `limit^1.5` per round trip and overshoot
//! a knee by twice before the first slow answer came back.
//!
//! While answers come within the tolerance the limit grows faster than the square root: by
//! half per round trip. A new target starts at 64, so it reaches a cap of 256 in under four
//! round trips: deliveries wait for their target's limit only so long (eight `defer`s, while
//! the target serves) before they are parked in Redis for longer, so a slow climb under a
//! deep backlog parks part of it (a start at 16 halved ten 200 ms receivers' deliveries per
//! second when the wait was one `defer`). A receiver
//! with a knee below 64 sees its latency at most that much above the knee's for a round trip
//! or two, while the gradient halves the limit per round trip at most.
//!
//! The unloaded latency (`min_rtt`) cannot be seen while the limit keeps the receiver a little
//! loaded, and a minimum kept forever would never follow a receiver that became slower for
//! good. So every 30 s the limit is held at 16 until what was in flight has come back and 16
//! answers sent after that have arrived; the fastest of them is the new `min_rtt`, and the
//! limit returns to where it was (Envoy does the same, at 3 in flight). The price is about two
//! round trips at 16 in flight every 30 s.
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
const TOLERANCE: f64 = 1.25;
/// How much slower than unloaded an answer may be in any case: a fast receiver's answers
/// come a few milliseconds late whenever this process is busy (its own tasks wait for the
/// cores), which is no sign of a queue in the receiver.
const SLACK: Duration = Duration::from_millis(10);
/// The share by which the limit grows per round trip while answers are as fast as unloaded.
const GROWTH: f64 = 0.5;
/// The cut on a 429 or 503.
const BACKOFF: f64 = 0.75;
/// How often the unloaded latency is measured again.
const PROBE_EVERY: Duration = Duration::from_secs(30);
/// How long a ceiling is kept without a new refusal.
const CEILING_TTL: Duration = Duration::from_secs(60);
/// Where a new target starts.
const INITIAL: f64 = 64.0;
/// The lowest limit latency alone can bring a target to, and the limit a probe holds.
const LATENCY_FLOOR: f64 = 16.0;
/// Answers a probe waits for (sent after what was in flight before it came back).
const PROBE_SAMPLES: u32 = 16;

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

/// Where the measurement of the unloaded latency is.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// Not measuring; the next measurement starts at `next`.
    Idle { next: Instant },
    /// The limit is held at the floor until what is in flight is down to it.
    Draining { resume: f64 },
    /// Answers to requests sent since `drained` are counted.
    Measuring {
        resume: f64,
        drained: Instant,
        fastest: Option<Duration>,
        samples: u32,
    },
}

#[derive(Debug)]
struct State {
    limit: f64,
    /// The fastest answer since the last probe (or ever, before the first).
    min_rtt: Option<Duration>,
    probe: Probe,
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
        Limit::new(n.max(1), false, Instant::now())
    }

    pub(super) fn adaptive(max: usize) -> Limit {
        Limit::new(max.max(1), true, Instant::now())
    }

    fn new(max: usize, adaptive: bool, now: Instant) -> Limit {
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
                min_rtt: None,
                probe: Probe::Idle {
                    next: now + PROBE_EVERY,
                },
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
        self.sample_at(Instant::now(), rtt, signal, in_flight)
    }

    fn sample_at(&self, now: Instant, rtt: Duration, signal: Signal, in_flight: usize) -> usize {
        if !self.adaptive {
            return self.max;
        }
        let mut s = self.lock();
        if s.ceiling
            .is_some_and(|(_, at)| now.duration_since(at) >= CEILING_TTL)
        {
            s.ceiling = None;
        }
        match signal {
            Signal::Unknown => {}
            Signal::Refused => s.refused(now, rtt),
            Signal::Answered => {
                if !s.probing(now, rtt, in_flight) {
                    s.answered(rtt, in_flight, self.max as f64);
                }
            }
        }
        (s.limit.round() as usize).clamp(1, self.max)
    }
}

impl State {
    /// The limit the probe will return to, or the limit itself outside a probe.
    fn resume(&mut self) -> &mut f64 {
        match &mut self.probe {
            Probe::Draining { resume } | Probe::Measuring { resume, .. } => resume,
            Probe::Idle { .. } => &mut self.limit,
        }
    }

    fn refused(&mut self, now: Instant, rtt: Duration) {
        // One cut per round trip: the answers of one round all report the same load.
        let round = self.min_rtt.map_or(rtt, |m| m.max(rtt));
        if self
            .last_cut
            .is_some_and(|at| now.duration_since(at) < round)
        {
            return;
        }
        let before = *self.resume();
        self.ceiling = Some((before, now));
        *self.resume() = (before * BACKOFF).max(1.0);
        self.last_cut = Some(now);
        if !matches!(self.probe, Probe::Idle { .. }) {
            // A probe holds the limit at the floor, or lower after this cut.
            self.limit = self.limit.min(*self.resume());
        }
    }

    /// Moves the probe on with one answer; true while a probe holds the limit.
    fn probing(&mut self, now: Instant, rtt: Duration, in_flight: usize) -> bool {
        match self.probe {
            Probe::Idle { next } => {
                if now < next {
                    return false;
                }
                let resume = self.limit;
                self.limit = self.limit.min(LATENCY_FLOOR);
                self.probe = Probe::Draining { resume };
                true
            }
            Probe::Draining { resume } => {
                if in_flight as f64 <= self.limit {
                    self.probe = Probe::Measuring {
                        resume,
                        drained: now,
                        fastest: None,
                        samples: 0,
                    };
                }
                true
            }
            Probe::Measuring {
                resume,
                drained,
                fastest,
                samples,
            } => {
                // Only answers to requests sent once the load was down count.
                let sent = now.checked_sub(rtt).unwrap_or(now);
                if sent < drained {
                    return true;
                }
                let fastest = Some(fastest.map_or(rtt, |f| f.min(rtt)));
                if samples + 1 < PROBE_SAMPLES {
                    self.probe = Probe::Measuring {
                        resume,
                        drained,
                        fastest,
                        samples: samples + 1,
                    };
                } else {
                    self.min_rtt = fastest;
                    self.limit = resume;
                    self.probe = Probe::Idle {
                        next: now + PROBE_EVERY,
                    };
                }
                true
            }
        }
    }

    fn answered(&mut self, rtt: Duration, in_flight: usize, max: f64) {
        let min_rtt = self.min_rtt.map_or(rtt, |m| m.min(rtt));
        self.min_rtt = Some(min_rtt);
        let min = min_rtt.as_secs_f64();
        let took = rtt.as_secs_f64();
        // A limit the target does not use says nothing: grow only when it is used.
        let used = in_flight as f64 * 2.0 >= self.limit;
        let allowed = (TOLERANCE * min).max(min + SLACK.as_secs_f64());
        let gradient = if took <= 0.0 {
            1.0
        } else {
            (allowed / took).clamp(0.5, 1.0)
        };
        let near_ceiling = self.ceiling.is_some_and(|(c, _)| self.limit >= c * 0.9);
        // What the round trip adds, spread over its `limit` answers: half as much again while
        // the receiver is as fast as unloaded, the square root once it is slower (the
        // equilibrium lies there), one near a refusal's ceiling.
        let headroom = match (used, near_ceiling) {
            (false, _) => 0.0,
            (true, true) => 1.0,
            (true, false) if gradient >= 1.0 => GROWTH * self.limit,
            (true, false) => self.limit.sqrt(),
        };
        let step = gradient - 1.0 + headroom / self.limit;
        let next = self.limit + step;
        // Not past one below the last refusal's limit until it is forgotten: asking
        // again at once would only be refused again.
        let cap = self.ceiling.map_or(max, |(c, _)| (c - 1.0).max(1.0));
        let next = if next > self.limit {
            next.min(cap.max(self.limit))
        } else {
            // Latency alone does not take it below the floor: it cannot tell a
            // receiver's queue from this process's own (a dispatcher busy on two
            // cores sees every answer late); only refusals can.
            next.max(LATENCY_FLOOR.min(self.limit))
        };
        self.limit = next.clamp(1.0, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// What a simulated sender saw after the warm-up.
    #[derive(Default)]
    struct Seen {
        answered: Vec<Duration>,
        refused: usize,
        limits: Vec<usize>,
    }

    impl Seen {
        fn p99(&mut self) -> Duration {
            self.answered.sort();
            self.answered[self.answered.len() * 99 / 100]
        }
        fn per_second(&self, over: Duration) -> f64 {
            self.answered.len() as f64 / over.as_secs_f64()
        }
    }

    /// A sender with an endless backlog, in virtual time: it keeps `limit` requests in flight,
    /// `receiver` says how long a request that finds `n` in flight (itself included) takes,
    /// or `None` for a refusal (answered in 1 ms). Counts what happens from `warm` to `end`.
    fn simulate(
        l: &Limit,
        start: Instant,
        warm: Duration,
        end: Duration,
        receiver: impl Fn(Duration, usize) -> Option<Duration>,
    ) -> Seen {
        let mut seen = Seen::default();
        let mut flying: BinaryHeap<Reverse<(Instant, Instant, bool)>> = BinaryHeap::new();
        let mut now = start;
        while now < start + end {
            while flying.len() < l.current() {
                let n = flying.len() + 1;
                let (took, refused) = match receiver(now - start, n) {
                    Some(d) => (d, false),
                    None => (ms(1), true),
                };
                flying.push(Reverse((now + took, now, refused)));
            }
            let Some(Reverse((at, sent, refused))) = flying.pop() else {
                break;
            };
            now = at;
            let signal = if refused {
                Signal::Refused
            } else {
                Signal::Answered
            };
            let limit = l.sample_at(now, now - sent, signal, flying.len() + 1);
            if now - start >= warm {
                seen.limits.push(limit);
                if refused {
                    seen.refused += 1;
                } else {
                    seen.answered.push(now - sent);
                }
            }
        }
        seen
    }

    /// A receiver that serves 50 at once in 50 ms and queues the rest: latency in proportion
    /// to what is in flight beyond 50, so 1,000 answers/s however many are sent.
    fn knee(_: Duration, in_flight: usize) -> Option<Duration> {
        Some(ms(50) * (in_flight.max(50) as u32) / 50)
    }

    #[test]
    fn a_fixed_limit_never_moves() {
        let l = Limit::fixed(8);
        assert_eq!(l.sample(ms(5000), Signal::Refused, 8), 8);
        assert_eq!(l.current(), 8);
        assert!(!l.is_adaptive());
    }

    #[test]
    fn a_receiver_as_fast_loaded_as_unloaded_gets_the_cap_in_a_few_round_trips() {
        let start = Instant::now();
        let l = Limit::new(256, true, start);
        let mut seen = simulate(&l, start, ms(2000), ms(2000), |_, _| Some(ms(200)));
        assert_eq!(l.current(), 256);
        // Four round trips from 64 to 256, then the cap: whatever ran after 2 s.
        assert!(seen.limits.iter().all(|&n| n == 256));
        // Probes every 30 s cost little: over two minutes at least 95 % of 1,280/s.
        let l = Limit::new(256, true, start);
        seen = simulate(&l, start, ms(0), ms(120_000), |_, _| Some(ms(200)));
        let rate = seen.per_second(ms(120_000));
        assert!(rate >= 0.95 * 1280.0, "{rate}/s");
    }

    #[test]
    fn an_unused_limit_does_not_grow() {
        let l = Limit::adaptive(256);
        for _ in 0..1000 {
            l.sample(ms(10), Signal::Answered, 1);
        }
        assert_eq!(l.current(), INITIAL as usize);
    }

    #[test]
    fn past_a_knee_goodput_is_full_and_latency_within_twice_the_unloaded() {
        let start = Instant::now();
        let l = Limit::new(1000, true, start);
        // Two minutes: four probes of the unloaded latency, slow start included.
        let mut seen = simulate(&l, start, ms(0), ms(120_000), knee);
        let rate = seen.per_second(ms(120_000));
        assert!(rate >= 0.95 * 1000.0, "{rate}/s");
        let p99 = seen.p99();
        assert!(p99 <= ms(100), "p99 {p99:?}");
        // Settled: never below the knee outside a probe, never at twice it.
        let l = Limit::new(1000, true, start);
        let seen = simulate(&l, start, ms(5000), ms(25_000), knee);
        let (lo, hi) = (
            seen.limits.iter().copied().min().unwrap_or(0),
            seen.limits.iter().copied().max().unwrap_or(0),
        );
        assert!(lo >= 50 && hi < 100, "settled between {lo} and {hi}");
    }

    #[test]
    fn a_receiver_that_becomes_slower_for_good_is_followed_by_the_probes() {
        let start = Instant::now();
        let l = Limit::new(256, true, start);
        // A knee at 50 with 20 ms answers, then from 40 s on 200 ms answers however many are
        // in flight: the old unloaded latency would hold it at the floor for ever.
        let receiver = |at: Duration, n: usize| {
            if at < ms(40_000) {
                Some(ms(20) * (n.max(50) as u32) / 50)
            } else {
                Some(ms(200))
            }
        };
        let seen = simulate(&l, start, ms(100_000), ms(120_000), receiver);
        assert!(
            seen.limits.iter().all(|&n| n == 256),
            "{:?}",
            seen.limits.iter().min()
        );
    }

    #[test]
    fn refusals_cut_the_limit_once_per_round_trip_and_growth_near_the_ceiling_is_slow() {
        let start = Instant::now();
        let l = Limit::new(1000, true, start);
        // Refuses whatever finds more than 40 in flight; answers in 10 ms otherwise.
        let refuse_above_40 = |_: Duration, n: usize| (n <= 40).then_some(ms(10));
        let seen = simulate(&l, start, ms(10_000), ms(70_000), refuse_above_40);
        let total = seen.refused + seen.answered.len();
        assert!(
            (seen.refused as f64) < 0.01 * total as f64,
            "{} of {total} refused",
            seen.refused
        );
        // Most of the capacity used: at least 30 in flight at 10 ms, 3,000/s.
        let rate = seen.per_second(ms(60_000));
        assert!(rate >= 3000.0, "{rate}/s");
    }
}
