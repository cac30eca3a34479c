//! Delivery records: what happened to each event at each target, the retry schedule, the error
//! queue and the per-tenant counters. All of a tenant's records live in its shard's slot
//! (`{q<n>}`), next to its stream, so each change is one atomic script on one node.
//!
//! The handle is here; its methods live by what they do: [`expand`] writes an event's
//! deliveries when the stream is read, [`record`] their outcomes, [`schedule`] the retry
//! schedule's claims, [`replay`] sending again (the error queue's replays, events restored from
//! the log store), [`views`] the records read back, [`dead_letters`] the error queue's reads,
//! [`health`] each target's health, [`batches`] batched targets' gathering and batches, [`ship`] the log store's side. What a record says (states,
//! attempts, their compact text) is [`crate::model::delivery`].

mod attempts;
pub mod batches;
pub mod dead_letters;
mod expand;
pub mod gate;
pub mod heal;
pub mod health;
mod record;
pub mod replay;
mod schedule;
pub mod ship;
mod views;

pub use crate::model::delivery::{
    AttemptHeaders, AttemptRecord, Counters, DeadLetter, DeliveryState, DueDelivery, EventFilter,
    EventRecord, EventStatus, EventSummary, Expansion, LoggedEvent, Next, Outcome, Recorded,
    Replayed, State,
};

use fred::prelude::*;
use serde::Serialize;

use super::error::StoreError;
use crate::model::time::Clock;
use crate::model::{EventId, TargetId};
use crate::redis::keyspace::Keyspace;

/// The retry-schedule member of a delivery.
pub fn member(event_id: &EventId, target_id: &TargetId) -> String {
    format!("{event_id}:{target_id}")
}

/// Handle to the delivery records. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Deliveries {
    redis: Client,
    keys: Keyspace,
    /// How long records live (the stream retention).
    ttl_secs: u64,
    /// Attempts kept per event.
    attempts_kept: u32,
    /// Whether a log store takes finished events (the records then track what is finished).
    logged: bool,
    /// The time outcomes are stamped and schedules judged by.
    clock: Clock,
}

fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    Ok(serde_json::to_string(v)?)
}

impl Deliveries {
    pub fn new(
        redis: Client,
        keys: Keyspace,
        ttl_secs: u64,
        attempts_kept: u32,
        logged: bool,
    ) -> Deliveries {
        Deliveries {
            redis,
            keys,
            ttl_secs,
            attempts_kept,
            logged,
            clock: Clock::system(),
        }
    }

    /// The same deliveries on `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Deliveries {
        self.clock = clock;
        self
    }

    /// The time it decides by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The key layout.
    pub fn keys(&self) -> &Keyspace {
        &self.keys
    }

    /// The Redis client.
    pub fn redis(&self) -> &Client {
        &self.redis
    }

    fn logged_flag(&self) -> &'static str {
        if self.logged { "1" } else { "" }
    }
}
