//! What a delivery is, as the dispatcher's tasks pass it along: the event, its target, and
//! the stream entry it came from.

use std::sync::Arc;

use bytes::Bytes;

use super::hold::EntryHold;
use crate::model::{EventId, EventType, TenantId};
use crate::store::Target;

/// An event as the dispatcher holds it.
#[derive(Debug)]
pub(super) struct EventData {
    pub id: EventId,
    pub tenant: TenantId,
    pub event_type: EventType,
    pub content_type: Option<Bytes>,
    pub body: Bytes,
}

/// One attempt to make.
#[derive(Debug)]
pub(super) struct Delivery {
    pub shard: u16,
    pub event: Arc<EventData>,
    pub target: Arc<Target>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Times it was deferred because the target was saturated.
    pub deferrals: u32,
    /// The stream entry it came from (first attempts); `None` for scheduled ones.
    pub entry: Option<Arc<EntryHold>>,
}

/// A delivery waiting in an ordered target's queue, with its room in memory.
pub(super) type Queued = (Delivery, Memory);

/// Room in memory for one delivery: its tenant's share and the process-wide bound.
#[derive(Debug)]
pub(super) struct Memory {
    pub(super) _tenant: tokio::sync::OwnedSemaphorePermit,
    pub(super) _all: tokio::sync::OwnedSemaphorePermit,
}
