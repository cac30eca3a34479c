//! Whether a delivery may go now ([`Inner::pass`]): its target's pause, breaker and rate
//! limit, read from this dispatcher's view ([`super::gate::Gates`]) and asked of Redis only
//! when the view says so.

use super::delivery::Delivery;
use super::gate::{Pass, Why};
use super::state::Inner;
use crate::model::TargetId;
use crate::model::target_health::BreakerSettings;
use crate::store::deliveries::gate::{Breaker, BreakerState, Probe};

impl Inner {
    /// The breaker settings of `d`'s target.
    pub(super) fn breaker_of(&self, d: &Delivery) -> BreakerSettings {
        self.settings.breaker.with(d.target.breaker.as_ref())
    }

    /// Whether `d` may go now, or until when it waits.
    pub(super) async fn pass(&self, d: &Delivery) -> Pass {
        let pass = self.decide_pass(d).await;
        if let Pass::Wait { why, .. } = pass {
            crate::telemetry::delivery_held(why.metric());
        }
        pass
    }

    async fn decide_pass(&self, d: &Delivery) -> Pass {
        let settings = self.breaker_of(d);
        let target = &d.target.id;
        let changed = d.target.updated_at_ms;
        let (seen, stale) = self.breakers.view(target, changed);
        let view = if stale {
            match self
                .deliveries
                .gate_of(d.shard, &d.event.tenant, target)
                .await
            {
                Ok((breaker, pause)) => {
                    self.breakers.set(target, breaker, pause, Some(changed));
                    Some((breaker, pause))
                }
                Err(e) => {
                    tracing::debug!(target_id = %target, error = %e, "cannot read the target's gate");
                    seen.map(|v| (v.breaker, v.pause_until_ms))
                }
            }
        } else {
            seen.map(|v| (v.breaker, v.pause_until_ms))
        };
        let (breaker, pause) = view.unwrap_or_default();
        let now = self.deliveries.clock().now_ms();
        if pause > now {
            return Pass::Wait {
                until_ms: pause,
                why: Why::Paused,
            };
        }
        let gated = settings.enabled && breaker.state != BreakerState::Closed;
        if gated && breaker.state == BreakerState::Open && now < breaker.until_ms {
            return Pass::Wait {
                until_ms: breaker.until_ms,
                why: Why::Breaker,
            };
        }
        if let Some(limit) = &d.target.rate_limit {
            match self
                .deliveries
                .rate_wait(d.shard, &d.event.tenant, target, limit)
                .await
            {
                Ok(None) => {}
                Ok(Some(wait)) => {
                    // Spread the waiting ones over a few cells, so they do not all come
                    // back for the same one.
                    let spread = wait.mul_f64(1.0 + 3.0 * super::backoff::unit_random());
                    return Pass::Wait {
                        until_ms: now.saturating_add(spread.as_millis() as u64).max(now + 1),
                        why: Why::RateLimited,
                    };
                }
                Err(e) => return self.unknown(target, &e, now),
            }
        }
        if !gated {
            return Pass::Go { probe: false };
        }
        let timeout = self.settings.request_timeout * 2;
        match self
            .deliveries
            .probe_breaker(
                d.shard,
                &d.event.tenant,
                target,
                settings.probe_requests,
                timeout,
            )
            .await
        {
            Ok(Probe::Pass) => {
                self.breakers.set(
                    target,
                    Breaker::default(),
                    pause,
                    Some(d.target.updated_at_ms),
                );
                Pass::Go { probe: false }
            }
            Ok(Probe::Probe) => Pass::Go { probe: true },
            Ok(Probe::WaitUntil(until_ms)) => Pass::Wait {
                until_ms: until_ms.max(now + 1),
                why: Why::Breaker,
            },
            Err(e) => self.unknown(target, &e, now),
        }
    }

    fn unknown(&self, target: &TargetId, e: &dyn std::fmt::Display, now: u64) -> Pass {
        crate::telemetry::redis_error("gate");
        tracing::debug!(target_id = %target, error = %e, "cannot ask the target's gate");
        Pass::Wait {
            until_ms: now.saturating_add(self.settings.defer.as_millis() as u64),
            why: Why::Unknown,
        }
    }
}
