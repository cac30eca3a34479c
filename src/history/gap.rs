//! A target's gap: what it did not receive while it failed and while it was disabled, sent
//! to it once it answers again. The events of the gap are those of `[since, until]` that it
//! wants today and whose delivery to it ended in the error queue (a breaker holding them, or
//! retries spent) or was never made (it was disabled when they came), from either tier.

use super::{History, HistoryError};
use crate::dispatch::TenantTargets;
use crate::model::notice;
use crate::model::{EventId, TenantId};
use crate::store::Target;
use crate::store::deliveries::dead_letters::DeadLetterFilter;
use crate::store::deliveries::replay::Resend;
use crate::store::deliveries::{EventFilter, EventStatus, EventSummary, State};

/// Events listed per page while the gap is gathered.
const PAGE: usize = 500;

/// Which gap to send, and when.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    /// Received at or after (ms): since when the target failed.
    pub since_ms: u64,
    /// Received at or before (ms): when it was enabled again.
    pub until_ms: u64,
    /// Most events sent (the newest of the gap when it holds more).
    pub max: usize,
    /// The first one's place in the retry schedule (ms).
    pub start_ms: u64,
}

/// What the target missed of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Missed {
    /// Its delivery ended in the error queue.
    DeadLettered,
    /// It was never sent (the target was disabled when the event came).
    NeverSent,
}

/// What `target` missed of `e`, judged by the event's type and deliveries alone; `None`
/// when it had it, is having it, or does not want it.
fn missed(e: &EventSummary, target: &Target, wants: &TenantTargets) -> Option<Missed> {
    match e.deliveries.iter().find(|(t, _, _)| *t == target.id) {
        Some((_, State::DeadLettered, _)) => Some(Missed::DeadLettered),
        Some(_) => None,
        // Not read by a dispatcher yet: it is expanded with the targets of the moment.
        None if e.status == EventStatus::InProgress && e.deliveries.is_empty() => None,
        None => (!wants.matching(&e.event_type).is_empty()).then_some(Missed::NeverSent),
    }
}

impl History {
    /// Sends `target` the events of its gap it missed, oldest first; how many went on the
    /// schedule.
    pub async fn send_gap(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &Target,
        gap: Gap,
    ) -> Result<u64, HistoryError> {
        let Gap {
            since_ms, start_ms, ..
        } = gap;
        let mut enabled = target.clone();
        enabled.active = true;
        let wants = TenantTargets::new(vec![enabled]);
        let missed = self.gather_gap(shard, tenant, target, &wants, gap).await?;
        let queued_filter = DeadLetterFilter {
            target_id: Some(target.id.clone()),
            since_ms: Some(since_ms),
            ..DeadLetterFilter::default()
        };
        let queued: std::collections::HashMap<EventId, _> = self
            .deliveries
            .dead_letters(shard, tenant, &queued_filter, usize::MAX)
            .await?
            .into_iter()
            .map(|d| (d.event_id.clone(), d))
            .collect();
        // One due time each, in order: the schedule hands them out oldest first.
        let start = start_ms;
        let mut sent = 0;
        for (i, (id, why)) in missed.iter().enumerate() {
            let dl = queued.get(id);
            let how = Resend {
                dl_id: dl.map(|d| &d.id),
                last: dl.map(|d| (d.last_status, d.last_error.clone())),
                fresh: *why == Missed::NeverSent,
                due_ms: start + i as u64,
            };
            if self.send_via(shard, tenant, id, &target.id, &how).await? {
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// The gap's events, oldest first, at most `max` (the newest).
    async fn gather_gap(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &Target,
        wants: &TenantTargets,
        Gap {
            since_ms,
            until_ms,
            max,
            ..
        }: Gap,
    ) -> Result<Vec<(EventId, Missed)>, HistoryError> {
        let mut gap = Vec::new();
        let mut cursor: Option<EventId> = None;
        while gap.len() < max {
            let filter = EventFilter {
                since_ms: Some(since_ms),
                until_ms: Some(until_ms),
                before: cursor.take(),
                ..EventFilter::default()
            };
            let page = self.list(shard, tenant, &filter, PAGE).await?;
            for e in &page.events {
                let Some(why) = missed(e, target, wants) else {
                    continue;
                };
                // Its payload decides: a filter on the body, or an event about the target.
                if why == Missed::NeverSent
                    && (target.filter.is_some() || notice::is_reserved(&e.event_type))
                    && !self.body_wanted(shard, tenant, &e.id, wants).await?
                {
                    continue;
                }
                gap.push((e.id.clone(), why));
                if gap.len() == max {
                    break;
                }
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        gap.reverse();
        Ok(gap)
    }

    /// Whether the target wants event `id` by its payload (read from its stream entry while
    /// Redis has it); `false` when no tier has the body any more.
    async fn body_wanted(
        &self,
        shard: u16,
        tenant: &TenantId,
        id: &EventId,
        wants: &TenantTargets,
    ) -> Result<bool, HistoryError> {
        if let Some(e) = self.stream_event(shard, id).await?
            && e.tenant == *tenant
        {
            return Ok(!wants.matching_event(&e).is_empty());
        }
        let Some(log) = &self.log else {
            return Ok(false);
        };
        let Some(l) = log.logged(tenant, id, false).await? else {
            return Ok(false);
        };
        let Ok(event_type) = crate::model::EventType::parse(&l.event_type) else {
            return Ok(false);
        };
        let e = crate::queue::StoredEvent {
            id: l.id,
            tenant: l.tenant,
            event_type,
            content_type: l.content_type.map(bytes::Bytes::from),
            body: l.body,
        };
        Ok(!wants.matching_event(&e).is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TargetId;

    fn summary(status: EventStatus, deliveries: Vec<(TargetId, State, u32)>) -> EventSummary {
        EventSummary {
            id: EventId::generate(),
            event_type: "order.paid".into(),
            content_type: None,
            received_at_ms: 1,
            status,
            deliveries,
        }
    }

    #[test]
    fn the_gap_holds_what_failed_and_what_was_never_sent() {
        let target = Target::sample(&["order.*"]);
        let wants = TenantTargets::new(vec![target.clone()]);
        let other = TargetId::generate();
        let me = target.id.clone();
        let cases = [
            (
                summary(
                    EventStatus::Failed,
                    vec![(me.clone(), State::DeadLettered, 3)],
                ),
                Some(Missed::DeadLettered),
            ),
            (
                summary(
                    EventStatus::Succeeded,
                    vec![(me.clone(), State::Succeeded, 1)],
                ),
                None,
            ),
            (
                summary(
                    EventStatus::InProgress,
                    vec![(me.clone(), State::Retrying, 1)],
                ),
                None,
            ),
            (
                summary(
                    EventStatus::Succeeded,
                    vec![(other.clone(), State::Succeeded, 1)],
                ),
                Some(Missed::NeverSent),
            ),
            (
                summary(EventStatus::NoTargets, vec![]),
                Some(Missed::NeverSent),
            ),
            // Unread: the dispatcher expands it with today's targets.
            (summary(EventStatus::InProgress, vec![]), None),
        ];
        for (i, (e, want)) in cases.iter().enumerate() {
            assert_eq!(missed(e, &target, &wants), *want, "case {i}");
        }
        let mut unwanted = summary(EventStatus::NoTargets, vec![]);
        unwanted.event_type = "user.created".into();
        assert_eq!(missed(&unwanted, &target, &wants), None);
    }
}
