//! One delivery: wait for the target's gate and the global cap, send, decide what the result
//! means, record it, and release the stream entry's hold.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::backoff::{Verdict, delay, unit_random, verdict_for_status};
use super::client::{AttemptResult, Message};
use super::delivery::{Delivery, Memory, Queued};
use super::gate::{Pass, Why};
use super::limit::Signal;
use super::signing::SigningKey;
use super::state::{Gate, Inner};
use super::transform::{self, EventInput, Transformed};
use crate::model::notice as notices;
use crate::model::{DeadLetterId, Mode};
use crate::store::Target;
use crate::store::deliveries::gate::{Class, GateNote};
use crate::store::deliveries::{AttemptRecord, DeadLetter, DeliveryState, Next, Outcome, State};

/// Starts a delivery: ordered targets take it through their queue (one at a time, in arrival
/// order), the others run it as a task of its own.
///
/// With `wait_for_room` (the stream reader), a target whose queue is full makes the caller wait
/// up to `defer` for room: a busy target slows the reader down instead of having its deliveries
/// parked; only a target that stays saturated gets them deferred to Redis.
pub(super) async fn start(inner: &Arc<Inner>, d: Delivery, memory: Memory, wait_for_room: bool) {
    if d.target.ordered {
        let queue = ordered_queue(inner, &d.target);
        // A full queue makes the reader wait: order is kept over throughput.
        if let Err(returned) = queue.send((d, memory)).await {
            let (d, _) = returned.0;
            abandon(inner, &d).await;
        }
        return;
    }
    let mut queued = None;
    if d.target.mode != Mode::FireAndForget {
        let gate = inner.gate(&d.target);
        let max = inner.settings.max_waiting_per_target;
        if wait_for_room {
            let deadline = tokio::time::Instant::now() + inner.settings.defer;
            while gate.waiting.load(Ordering::Acquire) >= max
                && tokio::time::Instant::now() < deadline
            {
                let _ = tokio::time::timeout_at(deadline, gate.room.notified()).await;
            }
        }
        if gate.waiting.load(Ordering::Acquire) < max {
            gate.waiting.fetch_add(1, Ordering::AcqRel);
            queued = Some(gate);
        }
    }
    // Boxed: the future holds a whole HTTP exchange; moving it into the task would copy it.
    inner
        .tasks
        .spawn(Box::pin(run(inner.clone(), d, memory, queued)));
}

fn ordered_queue(inner: &Arc<Inner>, target: &Target) -> tokio::sync::mpsc::Sender<Queued> {
    let mut queues = match inner.ordered.lock() {
        Ok(q) => q,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(tx) = queues.get(&target.id).filter(|tx| !tx.is_closed()) {
        return tx.clone();
    }
    let (tx, rx) = tokio::sync::mpsc::channel(inner.settings.max_waiting_per_target);
    queues.insert(target.id.clone(), tx.clone());
    inner.tasks.spawn(run_ordered(inner.clone(), rx));
    tx
}

/// One ordered target's deliveries, strictly one after the other. A failing head is retried
/// here, holding the queue, until it succeeds or runs out of attempts.
async fn run_ordered(inner: Arc<Inner>, mut rx: tokio::sync::mpsc::Receiver<Queued>) {
    loop {
        let next = tokio::select! {
            _ = inner.stop.cancelled() => break,
            n = rx.recv() => n,
        };
        let Some((mut d, _memory)) = next else { break };
        loop {
            // The head of an ordered queue waits for its target's gate where it is: the
            // events behind it must not overtake it through the retry schedule.
            let probe = match inner.pass(&d).await {
                Pass::Go { probe } => probe,
                Pass::Wait { until_ms, .. } => {
                    let now = inner.deliveries.clock().now_ms();
                    if !inner
                        .pause(Duration::from_millis(until_ms.saturating_sub(now)))
                        .await
                    {
                        abandon(&inner, &d).await;
                        return;
                    }
                    continue;
                }
            };
            let Ok(_global) = inner.global.clone().acquire_owned().await else {
                return;
            };
            let Some((next, verdict, _)) = attempt_and_record(&inner, &d, probe).await else {
                break;
            };
            if let Next::HeldUntil(due) = next {
                drop(_global);
                let wait =
                    Duration::from_millis(due.saturating_sub(inner.deliveries.clock().now_ms()));
                if !inner.pause(wait).await {
                    // Still pending in the stream (or leased in the schedule): not lost.
                    abandon(&inner, &d).await;
                    return;
                }
                d.attempt += 1;
                continue;
            }
            after(&inner, &d, verdict).await;
            break;
        }
    }
}

/// Runs one delivery to its recorded outcome. `queued` is its target's gate when [`start`]
/// counted it as waiting there; without it the target was saturated and the delivery is
/// deferred at once. `_memory` is released at the end.
pub(super) async fn run(
    inner: Arc<Inner>,
    d: Delivery,
    _memory: Memory,
    queued: Option<Arc<Gate>>,
) {
    if d.target.mode == Mode::FireAndForget {
        fire_and_forget(&inner, &d).await;
        finish(&inner, &d).await;
        return;
    }
    let Some(gate) = queued else {
        defer(&inner, &d).await;
        return;
    };
    let Some(target_permit) = gate.permit_while_served(inner.settings.defer).await else {
        defer(&inner, &d).await;
        return;
    };
    // Asked with the permit in hand, just before sending: a breaker that opened, a pause or a
    // rate limit cell taken while the delivery waited would be stale by now. Held, the
    // delivery waits in the retry schedule, its attempts untouched.
    let probe = match inner.pass(&d).await {
        Pass::Go { probe } => probe,
        Pass::Wait { until_ms, why } => {
            gate.release(target_permit);
            hold(&inner, &d, until_ms, why).await;
            return;
        }
    };
    let Ok(global_permit) = inner.global.clone().acquire_owned().await else {
        gate.release(target_permit);
        abandon(&inner, &d).await;
        return;
    };
    let done = attempt_and_record(&inner, &d, probe).await;
    drop(global_permit);
    if let Some((_, _, (rtt, signal))) = done {
        gate.observe(rtt, signal);
    }
    gate.release(target_permit);
    if let Some((_, verdict, _)) = done {
        after(&inner, &d, verdict).await;
    }
}

/// What an attempt says of its receiver's capacity, for its adaptive limit.
fn signal_of(outcome: &Outcome) -> Signal {
    match outcome.attempt.as_ref().and_then(|a| a.status) {
        Some(429 | 503) => Signal::Refused,
        Some(_) => Signal::Answered,
        None => Signal::Unknown,
    }
}

/// One attempt, its outcome recorded and counted; `None` when it could not be recorded (the
/// delivery is then abandoned to a reclaim).
async fn attempt_and_record(
    inner: &Inner,
    d: &Delivery,
    probe: bool,
) -> Option<(Next, Verdict, (Duration, Signal))> {
    let (outcome, verdict, latency) = attempt(inner, d, probe).await;
    if !record(inner, &outcome).await {
        abandon(inner, d).await;
        return None;
    }
    count(&outcome, latency);
    tell(inner, d, &outcome).await;
    let signal = signal_of(&outcome);
    Some((outcome.next, verdict, (latency, signal)))
}

/// The operational events an attempt's recorded outcome calls for. None is told about the
/// delivery of an operational event: two failing targets subscribed to them would otherwise
/// tell each other of their failures forever.
async fn tell(inner: &Inner, d: &Delivery, outcome: &Outcome) {
    if outcome.attempt.is_none() || notices::is_reserved(d.event.event_type.as_str()) {
        return;
    }
    let event_type = match &outcome.next {
        Next::Done if d.attempt > notices::FAILING_AFTER => notices::DELIVERY_RECOVERED,
        Next::DeadLetter(_) => notices::DELIVERY_EXHAUSTED,
        Next::RetryAt(_) | Next::HeldUntil(_) if d.attempt == notices::FAILING_AFTER => {
            notices::DELIVERY_FAILING
        }
        _ => return,
    };
    if !inner
        .targets
        .wanted(&d.event.tenant, event_type, &d.target.id)
        .await
    {
        return;
    }
    let fields = || {
        serde_json::json!({
            "target_id": d.target.id,
            "event_id": d.event.id,
            "event_type": d.event.event_type,
            "attempts": d.attempt,
            "last_status": outcome.state.last_status,
            "last_error": outcome.state.last_error,
        })
    };
    let (shard, tenant) = (d.shard, &d.event.tenant);
    match &outcome.next {
        Next::Done if d.attempt > notices::FAILING_AFTER => {
            inner
                .notices
                .tell(shard, tenant, notices::DELIVERY_RECOVERED, fields())
                .await;
        }
        Next::DeadLetter(dl) => {
            let mut f = fields();
            f["dead_letter_id"] = dl.id.to_string().into();
            inner
                .notices
                .tell(shard, tenant, notices::DELIVERY_EXHAUSTED, f)
                .await;
        }
        Next::RetryAt(_) | Next::HeldUntil(_) if d.attempt == notices::FAILING_AFTER => {
            let told = inner
                .notices
                .notify_failing(shard, tenant, d.target.id.as_str(), fields())
                .await;
            if let Err(e) = told {
                tracing::warn!(target_id = %d.target.id, error = %e, "could not append an operational event");
            }
        }
        _ => {}
    }
}

/// Parks a delivery whose target is saturated in the retry schedule, without counting an
/// attempt. Each time it finds the target still saturated it waits twice as long (up to 64 ×
/// `defer`), so a big backlog is not churned through Redis at full speed.
async fn defer(inner: &Inner, d: &Delivery) {
    let wait = inner.settings.defer * 2u32.pow(d.deferrals.min(6));
    let due = inner
        .deliveries
        .clock()
        .now_ms()
        .saturating_add(wait.as_millis() as u64);
    let outcome = outcome_of(
        d,
        DeliveryState {
            state: State::Retrying,
            attempts: d.attempt - 1,
            last_status: None,
            last_error: None,
            next_retry_at_ms: Some(due),
            updated_at_ms: inner.deliveries.clock().now_ms(),
            deferrals: d.deferrals + 1,
        },
        None,
        Next::RetryAt(due),
    );
    if record(inner, &outcome).await {
        crate::telemetry::delivery("deferred", None);
        finish(inner, d).await;
    } else {
        abandon(inner, d).await;
    }
}

/// Parks a delivery its target's gate holds (breaker, pause, rate limit) in the retry
/// schedule until `until_ms`, without spending an attempt.
async fn hold(inner: &Inner, d: &Delivery, until_ms: u64, why: Why) {
    let now = inner.deliveries.clock().now_ms();
    let outcome = outcome_of(
        d,
        DeliveryState {
            state: State::Retrying,
            attempts: d.attempt - 1,
            last_status: None,
            last_error: Some(why.reason().to_owned()),
            next_retry_at_ms: Some(until_ms),
            updated_at_ms: now,
            deferrals: d.deferrals,
        },
        None,
        Next::RetryAt(until_ms),
    );
    if record(inner, &outcome).await {
        finish(inner, d).await;
    } else {
        abandon(inner, d).await;
    }
}

/// The event as the target's transformation reads it.
fn event_input(d: &Delivery) -> EventInput<'_> {
    EventInput {
        event_type: d.event.event_type.as_str(),
        meta: d.event.content_type.as_deref(),
        body: &d.event.body,
    }
}

/// Shapes one attempt (the target's transformation), sends it and decides what it means.
async fn attempt(inner: &Inner, d: &Delivery, probe: bool) -> (Outcome, Verdict, Duration) {
    let shaped = match transform::apply(
        &inner.sandbox,
        &d.target,
        None,
        event_input(d),
        inner.settings.allow_private,
    )
    .await
    {
        Transformed::Untouched => None,
        Transformed::Send(s) => Some(s),
        Transformed::Cancel { version } => {
            return (cancelled(inner, d, version), Verdict::Final, Duration::ZERO);
        }
        Transformed::Fail {
            version,
            error,
            retry,
        } => {
            let result = AttemptResult {
                status: None,
                retry_after: None,
                error: Some(error),
                // A final failure is handled like a refused address: no retry.
                refused: !retry,
                response: None,
                latency: Duration::ZERO,
                sent: None,
                received: None,
            };
            let (mut outcome, verdict) = decide(inner, d, &result, probe);
            if let Some(a) = outcome.attempt.as_mut() {
                a.transform_version = Some(version);
            }
            // Our program failed, not the receiver: nothing for its breaker to count.
            if let Some(g) = outcome.gate.as_mut() {
                g.class = Class::Uncounted;
            }
            return (outcome, verdict, Duration::ZERO);
        }
    };
    let now = inner.deliveries.clock().now_ms();
    let keys = SigningKey::all(&d.target.secrets_at(now));
    let msg = Message {
        event_id: d.event.id.as_str(),
        event_type: d.event.event_type.as_str(),
        content_type: d.event.content_type.as_deref(),
        body: &d.event.body,
        shaped: shaped.as_ref(),
    };
    let result = inner
        .client
        .send(&d.target, &keys, msg, (now / 1000) as i64)
        .await;
    let (mut outcome, verdict) = decide(inner, d, &result, probe);
    if let (Some(a), Some(s)) = (outcome.attempt.as_mut(), &shaped) {
        a.transform_version = Some(s.version);
    }
    (outcome, verdict, result.latency)
}

/// The outcome of a delivery its transformation cancelled: final, not an error, noted in
/// the attempt log with the program's version.
fn cancelled(inner: &Inner, d: &Delivery, version: u32) -> Outcome {
    let now = inner.deliveries.clock().now_ms();
    let attempt = AttemptRecord {
        target_id: d.target.id.clone(),
        attempt: d.attempt,
        at_ms: now,
        status: None,
        latency_ms: 0,
        error: Some(format!(
            "cancelled by the target's transformation (version {version})"
        )),
        response: None,
        headers: None,
        transform_version: Some(version),
        batch_id: None,
    };
    let state = DeliveryState {
        state: State::Cancelled,
        attempts: d.attempt,
        last_status: None,
        last_error: None,
        next_retry_at_ms: None,
        updated_at_ms: now,
        deferrals: 0,
    };
    outcome_of(d, state, Some(attempt), Next::Dropped)
}

fn count(outcome: &Outcome, latency: Duration) {
    crate::telemetry::delivery(
        match outcome.next {
            Next::Done => "delivered",
            Next::RetryAt(_) | Next::HeldUntil(_) => "retry",
            Next::DeadLetter(_) => "dead_letter",
            Next::Dropped => "dropped",
        },
        Some(latency),
    );
}

/// After the outcome is recorded: a 410 disables the target; the entry's hold is released.
async fn after(inner: &Inner, d: &Delivery, verdict: Verdict) {
    if verdict == Verdict::Gone {
        tracing::warn!(target_id = %d.target.id, "target answered 410 Gone; disabling it");
        match inner
            .store
            .disable_target(&d.target.tenant, &d.target.id, "gone")
            .await
        {
            Ok(())
                if inner
                    .targets
                    .wanted(&d.event.tenant, notices::TARGET_DISABLED, &d.target.id)
                    .await =>
            {
                let fields = serde_json::json!({
                    "target_id": d.target.id,
                    "trigger": "automatic",
                    "reason": "gone",
                    "failing_since": null,
                });
                inner
                    .notices
                    .tell(d.shard, &d.event.tenant, notices::TARGET_DISABLED, fields)
                    .await;
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(target_id = %d.target.id, error = %e, "could not disable the target");
            }
        }
    }
    finish(inner, d).await;
}

/// How an attempt's result counts for its target's breaker.
fn class_of(result: &AttemptResult) -> Class {
    match (result.status, result.refused) {
        (_, true) => Class::Uncounted,
        (Some(429), _) => Class::Uncounted,
        (Some(408 | 500..=599), _) => Class::Failure,
        (Some(_), _) => Class::Success,
        (None, _) => Class::Failure,
    }
}

/// What the attempt tells its target's gate; a 429 with `Retry-After` pauses the target here
/// at once (and everywhere once recorded).
fn gate_note(
    inner: &Inner,
    d: &Delivery,
    result: &AttemptResult,
    probe: bool,
    now: u64,
) -> GateNote {
    let pause_until_ms = match (result.status, result.retry_after) {
        (Some(429), Some(after)) => {
            let until = now.saturating_add(after.as_millis().min(MAX_PAUSE_MS) as u64);
            inner.breakers.pause(&d.target.id, until);
            until
        }
        _ => 0,
    };
    GateNote {
        class: class_of(result),
        probe,
        pause_until_ms,
        breaker: inner.breaker_of(d),
        disable_after_ms: d
            .target
            .disable_after_h
            .map_or(inner.settings.disable_after_ms, |h| h.as_ms()),
        concurrency_limit: inner.gate(&d.target).limit.current() as u32,
    }
}

/// Longest pause a 429's `Retry-After` puts on a whole target: an hour, as for one delivery.
const MAX_PAUSE_MS: u128 = 3_600_000;

/// What `result` means for this delivery.
fn decide(inner: &Inner, d: &Delivery, result: &AttemptResult, probe: bool) -> (Outcome, Verdict) {
    let now = inner.deliveries.clock().now_ms();
    let verdict = match (result.status, result.refused) {
        (_, true) => Verdict::Final,
        (Some(s), _) => verdict_for_status(s),
        (None, _) => Verdict::Retry,
    };
    let policy = d.target.retry.unwrap_or(inner.settings.retry);
    let error = result
        .error
        .clone()
        .or_else(|| match (verdict, result.status) {
            (Verdict::Delivered, _) | (_, None) => None,
            (_, Some(s)) => Some(format!("the target answered {s}")),
        });
    let attempt = AttemptRecord {
        target_id: d.target.id.clone(),
        attempt: d.attempt,
        at_ms: now,
        status: result.status,
        latency_ms: result.latency.as_millis() as u64,
        error: error.clone(),
        response: result.response.clone(),
        headers: result
            .sent
            .as_ref()
            .filter(|_| {
                inner
                    .settings
                    .attempt_headers
                    .keeps(verdict == Verdict::Delivered)
            })
            .map(|sent| super::headers::kept(sent, result.received.as_ref(), &d.target)),
        transform_version: None,
        batch_id: None,
    };
    let mut state = DeliveryState {
        state: State::Succeeded,
        attempts: d.attempt,
        last_status: result.status,
        last_error: error.clone(),
        next_retry_at_ms: None,
        updated_at_ms: now,
        deferrals: 0,
    };
    let can_retry = d.target.mode == Mode::Persistent && d.attempt < policy.max_attempts();
    let next = match verdict {
        Verdict::Delivered => Next::Done,
        Verdict::Retry if can_retry => {
            let wait = delay(&policy, d.attempt + 1, result.retry_after, unit_random());
            let due = now.saturating_add(wait.as_millis() as u64);
            state.state = State::Retrying;
            state.next_retry_at_ms = Some(due);
            if d.target.ordered {
                Next::HeldUntil(due)
            } else {
                Next::RetryAt(due)
            }
        }
        _ => {
            state.state = State::DeadLettered;
            Next::DeadLetter(DeadLetter {
                id: DeadLetterId::failed_at(now),
                event_id: d.event.id.clone(),
                target_id: d.target.id.clone(),
                event_type: d.event.event_type.clone(),
                attempts: d.attempt,
                last_status: result.status,
                last_error: error,
                failed_at_ms: now,
            })
        }
    };
    let mut outcome = outcome_of(d, state, Some(attempt), next);
    outcome.gate = Some(gate_note(inner, d, result, probe, now));
    (outcome, verdict)
}

fn outcome_of(
    d: &Delivery,
    state: DeliveryState,
    attempt: Option<AttemptRecord>,
    next: Next,
) -> Outcome {
    Outcome {
        shard: d.shard,
        tenant: d.event.tenant.clone(),
        event_id: d.event.id.clone(),
        target_id: d.target.id.clone(),
        state,
        attempt,
        next,
        body: d.event.body.clone(),
        content_type: d.event.content_type.clone(),
        gate: None,
    }
}

/// Records an outcome, retrying while Redis is away; `false` if the dispatcher stopped first.
async fn record(inner: &Inner, outcome: &Outcome) -> bool {
    let mut pause = Duration::from_millis(50);
    loop {
        if inner.recorder.record(outcome.clone()).await {
            return true;
        }
        crate::telemetry::redis_error("record");
        tracing::warn!(event = %outcome.event_id, target_id = %outcome.target_id, "cannot record a delivery outcome; retrying");
        if !inner.pause(pause).await {
            return false;
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Sends without waiting for the answer: the contract's fire-and-forget records a counter only.
async fn fire_and_forget(inner: &Arc<Inner>, d: &Delivery) {
    let Ok(permit) = inner.global.clone().acquire_owned().await else {
        return;
    };
    let inner2 = inner.clone();
    let event = d.event.clone();
    let target = d.target.clone();
    inner.tasks.spawn(async move {
        let _permit = permit;
        let input = EventInput {
            event_type: event.event_type.as_str(),
            meta: event.content_type.as_deref(),
            body: &event.body,
        };
        let allow_private = inner2.settings.allow_private;
        let shaped =
            match transform::apply(&inner2.sandbox, &target, None, input, allow_private).await {
                Transformed::Untouched => None,
                Transformed::Send(s) => Some(s),
                // Nothing to send, or nothing that can be sent: only a counter remembers it.
                Transformed::Cancel { .. } | Transformed::Fail { .. } => {
                    crate::telemetry::delivery("dropped", None);
                    return;
                }
            };
        let now = inner2.deliveries.clock().now_ms();
        let keys = SigningKey::all(&target.secrets_at(now));
        let msg = Message {
            event_id: event.id.as_str(),
            event_type: event.event_type.as_str(),
            content_type: event.content_type.as_deref(),
            body: &event.body,
            shaped: shaped.as_ref(),
        };
        let r = inner2
            .client
            .send(&target, &keys, msg, (now / 1000) as i64)
            .await;
        crate::telemetry::delivery("sent", Some(r.latency));
    });
}

async fn finish(inner: &Inner, d: &Delivery) {
    if let Some(entry) = &d.entry {
        entry.finish(&inner.entries).await;
    }
}

async fn abandon(inner: &Inner, d: &Delivery) {
    if let Some(entry) = &d.entry {
        entry.abandon(&inner.entries).await;
    }
}
