//! The dispatcher: reads the shard streams through the consumer group, expands each event into
//! one delivery per matching target, sends them signed, and records every outcome before the
//! stream entry is acknowledged.
//!
//! - **Reading** (`consumer`, over [`crate::queue::consume`]): one reader per shard
//!   (`XREADGROUP … BLOCK`, on its own connection), plus a reclaimer that takes over entries
//!   left pending by a consumer that stopped (`XAUTOCLAIM`, after `dispatch.reclaim_idle_ms`),
//!   keeps this consumer's own long entries from looking idle, and recreates a missing group or
//!   stream (`NOGROUP`). `hold` counts an entry's open deliveries and acks it at zero.
//! - **Expanding**: one script per entry marks each event as expanded by that entry; an event id
//!   already expanded by *another* entry (a re-sent `XADD`) is skipped, so it yields one
//!   delivery per target, not two.
//! - **Matching** ([`matcher`], [`targets`]): each tenant's targets compiled into hash lookups,
//!   cached and reloaded when the store announces a change.
//! - **Shaping** ([`transform`]): a target's jq transformation, run in the sandbox, may
//!   rewrite a delivery's body, headers, URL path and method, or cancel it.
//! - **Delivering** (`worker`, [`client`], [`signing`], [`ssrf`], [`format`], [`headers`]): a per-target gate (`per_target_concurrency` in flight, at most
//!   `max_waiting_per_target` waiting) then the global cap (`concurrency`). A delivery that
//!   finds its target's queue full is deferred to the retry schedule in Redis instead of
//!   waiting in memory, so a slow target costs memory for its cap, not its backlog, and its
//!   tenant's other targets and other tenants keep moving. One in the queue waits while the
//!   target serves it (a permit given back within `defer`, up to eight of them); a target
//!   that serves nothing for `defer` gets its queue parked too. Its breaker, pause and rate
//!   limit are asked with the permit in hand, just before it is sent.
//! - **Recording** (`recorder`, batched): one script call per shard for many outcomes writes the delivery state, the attempt log, the
//!   counters, and the retry schedule or error queue entry. Only then does the entry's count of
//!   open deliveries go down; at zero the entry is acknowledged.
//! - **Batching** ([`batches`]): deliveries to a batched target are gathered in Redis when
//!   the stream is read, cut into batches (full, or waited long enough), and each batch is sent
//!   as one signed POST under a lease, retried whole.
//! - **Retrying** (`retries`): each shard's schedule is a sorted set of due times; a claim
//!   script leases due deliveries (moves their score forward), so two dispatchers never fire one
//!   retry twice, and a crash only delays it until the lease ends.
//!
//! Nothing acknowledged is lost: an entry is acked after all its outcomes are in Redis, and
//! anything in flight when a process dies is still pending (stream) or leased (schedule).

pub mod backoff;
pub mod batches;
pub mod client;
mod consumer;
mod delivery;
mod dispatcher;
pub mod format;
mod gate;
pub mod headers;
mod hold;
mod limit;
pub mod matcher;
mod oauth2;
mod pass;
pub mod ping;
mod pool;
mod recorder;
mod retries;
pub mod settings;
pub mod signing;
pub mod ssrf;
mod state;
mod takeover;
pub mod targets;
pub mod transform;
mod worker;

pub use dispatcher::{DispatchError, Dispatcher};
pub use settings::Settings;
pub use targets::{TargetCache, TenantTargets};
