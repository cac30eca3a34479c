//! The Redis key layout: every key and channel the gateway uses is named here and nowhere else.
//!
//! All keys start with the configured prefix `P`. Keys in braces are Redis Cluster hash tags:
//! keys sharing a tag live in one slot, so multi-key scripts and transactions work on a cluster.
//!
//! | key | type | what it holds |
//! | --- | --- | --- |
//! | `P:{m}:tenant:<id>` | hash | a tenant: `name`, `ext` (sealed external id), `active`, `rl_ps`, `rl_burst`, `created_at`, `updated_at`, `origin` |
//! | `P:{m}:tenants` | sorted set (score 0) | every tenant id, listed in lexical order (ids sort by creation) |
//! | `P:{m}:tenant_ext:<blind>` | string | tenant id by keyed hash of its external id in its normalised form (unique); entries of earlier versions hash the text as sent |
//! | `P:{m}:upgrade:<name>` | string | a one-time upgrade of stored data that has run (`external_id_index_nfkc_cf`) |
//! | `P:{m}:token:<hash>` | hash | a token by HMAC of its text: `tenant`, `id`, `created_at` |
//! | `P:{m}:tenant_tokens:<id>` | hash | a tenant's tokens: token id → token hash |
//! | `P:{q<n>}:events` | stream | shard `n` of the event queue; consumer group [`DISPATCH_GROUP`] |
//! | `P:{q<n>}:idem:<tenant>:<sha256>` | string, 24 h TTL | `<event id> <fingerprint>` of an `Idempotency-Key` |
//! | `P:{m}:target:<id>` | hash | a delivery target: `doc` (JSON, secrets sealed), `ver`, `tenant` |
//! | `P:{m}:tenant_targets:<tenant>` | sorted set (score 0) | a tenant's target ids |
//! | `P:{m}:target_transforms:<id>` | list | a target's last 20 transformations, newest first (JSON: `version`, `program`, `enabled`, `saved_at`) |
//! | `P:{m}:event_types:<tenant>` | hash | a tenant's event catalogue: event type → JSON document (description, owner, group, schemas by version, deprecated and archived times) |
//! | `P:{q<n>}:ev:<event id>` | hash | an event's delivery record: `entry` (stream entry that expanded it), `tenant`, `type`, `ct`, `at`, `d:<target>` (delivery state, compact text), `body` (kept once a retry or the error queue needs it); with a log store also `open` (unfinished deliveries), `fin` (times finished), `fin_at` |
//! | `P:{q<n>}:att:<event id>` | list | the event's last delivery attempts (JSON), bounded |
//! | `P:{q<n>}:gather:<target>` | list | a batched target's events waiting for its next batch, in arrival order |
//! | `P:{q<n>}:gathering` | sorted set | `<tenant>|<target>` of the shard's batched targets with events gathered, scored by when their next batch is cut (ms) |
//! | `P:{q<n>}:batch:<batch id>` | hash | a cut batch: `tenant`, `target`, `events` (ids, comma-separated, in order), `attempts`, `created_at` |
//! | `P:{q<n>}:batches` | sorted set | cut batches by when they are sent (or retried) next (ms), leased like the retry schedule |
//! | `P:{q<n>}:retry` | sorted set | deliveries waiting for their next attempt: `<event>:<target>` scored by due time (ms) |
//! | `P:{q<n>}:dlq:<tenant>` | hash | the tenant's error queue: entry id → JSON |
//! | `P:{q<n>}:dlq_at:<tenant>` | sorted set | the same entries' ids scored by when they failed (ms): the error queue's order, for paging |
//! | `P:{q<n>}:stats:<tenant>` | hash | the tenant's delivery counters |
//! | `P:{q<n>}:thealth:<tenant>` | hash | how each of the tenant's targets fares: `<target>:b<k>` attempts and failures of a ten-minute bucket (`<start ms>:<attempts>:<failed>`, a ring of 12), `<target>:last` its newest attempt, `<target>:ok_at`, `<target>:fail_since`, its gate (`br` breaker, `bw` breaker window, `pause`, `cl` in-flight limit) and `heal` (`<wait ms>:<2xx in a row>:<gap start ms>` while probed); see [`crate::store::deliveries::health`] |
//! | `P:{q<n>}:heal` | sorted set | targets disabled for failing, `<tenant> <target>` scored by their next probe (ms), leased like the retry schedule |
//! | `P:{q<n>}:series:<tenant>:<hour>` | hash, 49 h TTL | the tenant's per-minute counters of one hour (`hour` = ms / 3 600 000): `<minute of the hour>:<metric>`, metrics `r` received, `s` succeeded, `f` failed attempts, `a` attempts, `l` attempt latency (ms, summed); see [`crate::store::series`] |
//! | `P:{q<n>}:series_all:<hour>` | hash, 49 h TTL | the same counters summed over the shard's tenants |
//! | `P:{q<n>}:unfinished` | sorted set | with a log store: events with unfinished deliveries, scored by stream position (ms); retention never trims past the first |
//! | `P:{q<n>}:ship` | sorted set | with a log store: finished events not yet in it, scored by stream position (ms) |
//! | `P:{q<n>}:history` | stream | with a log store: status records and incident changes of the shard's watched subjects, until shipped |
//! | `P:{q<n>}:ship_lease` | string, TTL | the process shipping the shard right now |
//! | `P:{q<n>}:quarantine` | stream, capped | records the shard's consumers could not process, set aside: `consumer`, `id`, `reason`, then the record's fields ([`crate::store::quarantine`]) |
//! | `P:{m}:portal_link:<id>` | string (JSON), TTL to expiry | a portal link's record: tenant, expiry, issue time, single use |
//! | `P:{m}:portal_link_used:<id>` | string, TTL to expiry | when a single-use portal link was exchanged for a session (`SET NX`) |
//! | `P:{m}:tenant_portal_links:<tenant>` | sorted set, TTL to the last expiry | a tenant's portal links scored by expiry (ms), for listing |
//! | `P:{m}:signin:<face>:<addr\|cred>:<hash>` | string (counter), 60 s TTL | failed sign-ins of the console or portal in the current minute, per client address and per credential (keyed hashes of both) |
//! | `P:ready` | string, 10 s TTL | written by `/readyz`: readiness needs Redis to take writes |
//! | `P:alive:<consumer>` | string, TTL | a dispatcher consumer's liveness lease, renewed while its process runs |
//! | `P:{q<n>}:dlq_total` | string (counter) | entries in the shard's error queues, for metrics |
//! | `P:{m}:source:<id>` | hash | an inbound source: `doc` (JSON, secret sealed), `tenant` |
//! | `P:{m}:source_token:<hash>` | string | source id by keyed hash of its URL token |
//! | `P:{m}:tenant_sources:<tenant>` | sorted set (score 0) | a tenant's source ids |
//! | `P:{m}:source_last:<id>` | string, 30 d TTL | when the source last accepted a webhook (ms) |
//! | `P:{m}:source_refusals:<id>` | list, 30 d TTL | the source's last 20 refused deliveries (JSON: `at_ms`, `reason`, `sender_ip`) |
//! | `P:{q<n>}:seen:<source>:<sha256>` | string, TTL 2 × tolerance | a signed request already accepted (replay refusal) |
//! | `P:{m}:monitor:<id>` | hash | a passive monitor: `doc` (JSON, secret sealed), `tenant` |
//! | `P:{m}:monitor_token:<hash>` | string | monitor id by keyed hash of its URL token |
//! | `P:{m}:tenant_monitors:<tenant>` | sorted set (score 0) | a tenant's monitor ids |
//! | `P:{q<n>}:watch:<subject>` | hash | live state of a monitor or a watched source: `status`, `since`, `by` (`push` when a status push set it), `last_signal`, `last_heartbeat`, `started_at`, `last_duration_ms`, `incident`, `kind`, `tenant`, `name` |
//! | `P:{q<n>}:due` | sorted set | watched subjects by deadline (ms): the checker reads only what is overdue |
//! | `P:{q<n>}:checks:<subject>` | list | recent status records (JSON, newest first), bounded |
//! | `P:{q<n>}:incidents:<subject>` | list | incident history (JSON, newest first), bounded |
//! | `P:{q<n>}:watch_counts` | hash | subjects per `<kind>:<status>` in the shard, for metrics |
//! | `P:{q<n>}:unwell` | sorted set | the shard's watched subjects that are down or degraded, scored by since when (ms): what the console's home page lists |
//! | `P:{m}:invalidations` | string (counter) | sequence number of the last cache invalidation |
//! | channel `P:invalidate` | pub/sub | `<seq> <message>`, a [`crate::redis::invalidation::Invalidation`]: drop what it names from every instance's caches |
//!
//! Control-plane keys share the `{m}` tag: they are small and change rarely, and one slot lets
//! tenant creation and deletion run as single atomic scripts. Each shard stream has its own tag
//! so a cluster spreads the event load; a tenant's idempotency keys sit in its shard's slot so
//! the check and the append are one atomic script.

use crate::crypto::TokenHash;
use crate::model::{BatchId, EventId, MonitorId, SourceId, TargetId, TenantId};

/// The shard of a tenant. Stable across versions and processes (FNV-1a, not a seeded hash):
/// changing it, or `queue.shards`, would split a tenant's events across two streams.
pub fn shard_of(tenant: &TenantId, shards: u16) -> u16 {
    shard_of_text(tenant.as_str(), shards)
}

fn shard_of_text(tenant: &str, shards: u16) -> u16 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in tenant.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % u64::from(shards.max(1))) as u16
}

/// The consumer group of the dispatcher on every shard stream.
pub const DISPATCH_GROUP: &str = "dispatch";

/// Key builder for one deployment's prefix.
#[derive(Debug, Clone)]
pub struct Keyspace {
    /// The configured `redis.prefix`.
    prefix: String,
}

impl Keyspace {
    /// A key builder for `prefix` (already validated by the config).
    pub fn new(prefix: &str) -> Keyspace {
        Keyspace {
            prefix: prefix.to_owned(),
        }
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn tenant(&self, id: &TenantId) -> String {
        format!("{}:{{m}}:tenant:{id}", self.prefix)
    }

    pub fn tenants(&self) -> String {
        format!("{}:{{m}}:tenants", self.prefix)
    }

    /// The marker of a one-time upgrade of stored data that has run.
    pub fn upgrade_done(&self, name: &str) -> String {
        format!("{}:{{m}}:upgrade:{name}", self.prefix)
    }

    pub fn tenant_by_external_id(&self, blind: &str) -> String {
        format!("{}:{{m}}:tenant_ext:{blind}", self.prefix)
    }

    pub fn token(&self, hash: &TokenHash) -> String {
        self.token_hex(&hash.to_hex())
    }

    pub fn token_hex(&self, hash_hex: &str) -> String {
        format!("{}:{{m}}:token:{hash_hex}", self.prefix)
    }

    pub fn tenant_tokens(&self, id: &TenantId) -> String {
        format!("{}:{{m}}:tenant_tokens:{id}", self.prefix)
    }

    pub fn target(&self, id: &TargetId) -> String {
        format!("{}:{{m}}:target:{id}", self.prefix)
    }

    pub fn tenant_targets(&self, tenant: &TenantId) -> String {
        format!("{}:{{m}}:tenant_targets:{tenant}", self.prefix)
    }

    pub fn target_transforms(&self, id: &TargetId) -> String {
        format!("{}:{{m}}:target_transforms:{id}", self.prefix)
    }

    pub fn event_types(&self, tenant: &TenantId) -> String {
        format!("{}:{{m}}:event_types:{tenant}", self.prefix)
    }

    pub fn source(&self, id: &SourceId) -> String {
        format!("{}:{{m}}:source:{id}", self.prefix)
    }

    pub fn source_token(&self, hash: &TokenHash) -> String {
        format!("{}:{{m}}:source_token:{}", self.prefix, hash.to_hex())
    }

    pub fn tenant_sources(&self, tenant: &TenantId) -> String {
        format!("{}:{{m}}:tenant_sources:{tenant}", self.prefix)
    }

    /// A signed request already seen from a source (replay refusal), in the tenant's shard slot.
    pub fn source_seen(&self, shard: u16, source: &SourceId, digest: &str) -> String {
        format!("{}:{{q{shard}}}:seen:{source}:{digest}", self.prefix)
    }

    pub fn monitor(&self, id: &MonitorId) -> String {
        format!("{}:{{m}}:monitor:{id}", self.prefix)
    }

    pub fn monitor_token(&self, hash: &TokenHash) -> String {
        format!("{}:{{m}}:monitor_token:{}", self.prefix, hash.to_hex())
    }

    pub fn tenant_monitors(&self, tenant: &TenantId) -> String {
        format!("{}:{{m}}:tenant_monitors:{tenant}", self.prefix)
    }

    /// Live state of a watched subject (monitor or source), in its tenant's shard slot.
    pub fn watch(&self, shard: u16, subject: &str) -> String {
        format!("{}:{{q{shard}}}:watch:{subject}", self.prefix)
    }

    /// Deadlines of the shard's watched subjects.
    pub fn due(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:due", self.prefix)
    }

    /// A watched subject's recent status records.
    pub fn checks(&self, shard: u16, subject: &str) -> String {
        format!("{}:{{q{shard}}}:checks:{subject}", self.prefix)
    }

    /// A watched subject's incident history.
    pub fn incidents(&self, shard: u16, subject: &str) -> String {
        format!("{}:{{q{shard}}}:incidents:{subject}", self.prefix)
    }

    /// Watched subjects per kind and status, of one shard.
    pub fn watch_counts(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:watch_counts", self.prefix)
    }

    /// The shard's watched subjects that are down or degraded, by since when.
    pub fn unwell(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:unwell", self.prefix)
    }

    /// An event's delivery record, in its shard's slot.
    pub fn event_record(&self, shard: u16, event: &EventId) -> String {
        format!("{}:{{q{shard}}}:ev:{event}", self.prefix)
    }

    /// An event's recent attempts.
    pub fn attempts(&self, shard: u16, event: &EventId) -> String {
        format!("{}:{{q{shard}}}:att:{event}", self.prefix)
    }

    /// Deliveries due for another attempt, of one shard.
    pub fn gather(&self, shard: u16, target: &TargetId) -> String {
        format!("{}:{{q{shard}}}:gather:{target}", self.prefix)
    }

    pub fn gathering(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:gathering", self.prefix)
    }

    pub fn batch(&self, shard: u16, batch: &BatchId) -> String {
        format!("{}:{{q{shard}}}:batch:{batch}", self.prefix)
    }

    pub fn batches(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:batches", self.prefix)
    }

    pub fn retries(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:retry", self.prefix)
    }

    /// With a log store: the shard's events with unfinished deliveries.
    pub fn unfinished(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:unfinished", self.prefix)
    }

    /// With a log store: the shard's finished events not yet shipped to it.
    pub fn ship(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:ship", self.prefix)
    }

    /// With a log store: the shard's monitor history waiting to be shipped.
    pub fn history(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:history", self.prefix)
    }

    /// The shard's quarantine: records its consumers could not process.
    pub fn quarantine(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:quarantine", self.prefix)
    }

    /// The lease of the process shipping the shard.
    pub fn ship_lease(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:ship_lease", self.prefix)
    }

    /// Failed sign-ins of `face` (`console`, `portal`) in the current minute, by `what`
    /// (`addr` or `cred`) and the keyed hash of the address or credential.
    pub fn signin_failures(&self, face: &str, what: &str, hash_hex: &str) -> String {
        format!("{}:{{m}}:signin:{face}:{what}:{hash_hex}", self.prefix)
    }

    /// The key `/readyz` writes.
    pub fn readiness_probe(&self) -> String {
        format!("{}:ready", self.prefix)
    }

    /// The liveness lease of a dispatcher consumer (one per process, on every shard).
    pub fn consumer_lease(&self, consumer: &str) -> String {
        format!("{}:alive:{consumer}", self.prefix)
    }

    /// A tenant's error queue entries.
    pub fn dead_letters(&self, shard: u16, tenant: &TenantId) -> String {
        format!("{}:{{q{shard}}}:dlq:{tenant}", self.prefix)
    }

    /// The ids of a tenant's error queue entries, scored by when they failed (ms).
    pub fn dead_letter_order(&self, shard: u16, tenant: &TenantId) -> String {
        format!("{}:{{q{shard}}}:dlq_at:{tenant}", self.prefix)
    }

    /// Entries in all error queues of one shard (a gauge for metrics).
    pub fn dead_letter_total(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:dlq_total", self.prefix)
    }

    /// A tenant's delivery counters.
    pub fn stats(&self, shard: u16, tenant: &TenantId) -> String {
        format!("{}:{{q{shard}}}:stats:{tenant}", self.prefix)
    }

    /// How each of a tenant's targets fares (written by `record.lua`).
    pub fn target_health(&self, shard: u16, tenant: &TenantId) -> String {
        format!("{}:{{q{shard}}}:thealth:{tenant}", self.prefix)
    }

    /// Set while an operational event of `what` about `target` was told recently (its bound).
    pub fn notice_bound(&self, shard: u16, tenant: &TenantId, target: &str, what: &str) -> String {
        format!(
            "{}:{{q{shard}}}:notice:{tenant}:{target}:{what}",
            self.prefix
        )
    }

    /// When each target disabled for failing is probed next (score: ms), members
    /// `<tenant> <target>`; see [`crate::store::deliveries::heal`].
    pub fn heal(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:heal", self.prefix)
    }

    /// A target's shared rate limit (`rate_limit.lua`).
    pub fn target_rate(&self, shard: u16, tenant: &TenantId, target: &TargetId) -> String {
        format!("{}:{{q{shard}}}:trate:{tenant}:{target}", self.prefix)
    }

    /// A tenant's per-minute counters of one hour (`hour` = ms / 3 600 000), in its shard's
    /// slot so the delivery scripts write them with the tenant's counters.
    pub fn series(&self, shard: u16, tenant: &TenantId, hour: u64) -> String {
        format!("{}:{{q{shard}}}:series:{tenant}:{hour}", self.prefix)
    }

    /// The per-minute counters of one hour summed over the shard's tenants.
    pub fn series_all(&self, shard: u16, hour: u64) -> String {
        format!("{}:{{q{shard}}}:series_all:{hour}", self.prefix)
    }

    /// A tenant's hourly rollups of one day (`day` = ms / 86 400 000), in its shard's slot.
    pub fn series_day(&self, shard: u16, tenant: &TenantId, day: u64) -> String {
        format!("{}:{{q{shard}}}:series_day:{tenant}:{day}", self.prefix)
    }

    /// The hourly rollups of one day summed over the shard's tenants.
    pub fn series_all_day(&self, shard: u16, day: u64) -> String {
        format!("{}:{{q{shard}}}:series_all_day:{day}", self.prefix)
    }

    /// Whether an hour's rollups are written (`done`) or being written (`running`).
    pub fn rollup_marker(&self, hour: u64) -> String {
        format!("{}:{{m}}:rollup:{hour}", self.prefix)
    }

    /// Shard `n`'s event stream.
    pub fn stream(&self, shard: u16) -> String {
        format!("{}:{{q{shard}}}:events", self.prefix)
    }

    /// An idempotency record, in the same slot as the tenant's shard stream.
    pub fn idempotency(&self, shard: u16, tenant: &TenantId, key_digest: &str) -> String {
        format!("{}:{{q{shard}}}:idem:{tenant}:{key_digest}", self.prefix)
    }

    /// The counter numbering auth-cache invalidations, so a subscriber can tell it missed one.
    pub fn invalidation_seq(&self) -> String {
        format!("{}:{{m}}:invalidations", self.prefix)
    }

    /// The pub/sub channel of auth-cache invalidations.
    pub fn invalidation_channel(&self) -> String {
        format!("{}:invalidate", self.prefix)
    }
}

/// Cluster hash slot of a key (CRC16/XMODEM of the hash tag, or of the whole key).
#[cfg(test)]
fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            bytes[open + 1..]
                .iter()
                .position(|&b| b == b'}')
                .filter(|&len| len > 0)
                .map(|len| &bytes[open + 1..open + 1 + len])
        })
        .unwrap_or(bytes);
    let mut crc: u16 = 0;
    for &b in tagged {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_redis_reference() {
        // From the Redis Cluster specification: "123456789" hashes to 0x31C3.
        assert_eq!(hash_slot("123456789"), 0x31C3);
    }

    #[test]
    fn keys_that_scripts_touch_together_share_a_slot() {
        let k = Keyspace::new("est");
        let id = |s: &str| TenantId::parse(s).unwrap_or_else(|_| TenantId::generate());
        let ten = id("ten_1");
        let t = k.tenant(&ten);
        let hash = TokenHash([0; 32]);
        let evt = EventId::generate();
        let mon = MonitorId::generate();
        assert_eq!(hash_slot(&t), hash_slot(&k.tenants()));
        assert_eq!(hash_slot(&t), hash_slot(&k.tenant_tokens(&ten)));
        assert_eq!(hash_slot(&t), hash_slot(&k.tenant_by_external_id("ab")));
        assert_eq!(hash_slot(&t), hash_slot(&k.token_hex("00")));
        assert_eq!(hash_slot(&t), hash_slot(&k.invalidation_seq()));
        assert_eq!(
            hash_slot(&k.stream(3)),
            hash_slot(&k.idempotency(3, &ten, "ff"))
        );
        assert_eq!(hash_slot(&t), hash_slot(&k.target(&TargetId::generate())));
        assert_eq!(hash_slot(&t), hash_slot(&k.tenant_targets(&ten)));
        assert_eq!(hash_slot(&t), hash_slot(&k.monitor(&mon)));
        assert_eq!(hash_slot(&t), hash_slot(&k.monitor_token(&hash)));
        assert_eq!(hash_slot(&t), hash_slot(&k.tenant_monitors(&ten)));
        for key in [
            k.event_record(3, &evt),
            k.attempts(3, &evt),
            k.retries(3),
            k.unfinished(3),
            k.ship(3),
            k.ship_lease(3),
            k.history(3),
            k.dead_letters(3, &ten),
            k.dead_letter_order(3, &ten),
            k.stats(3, &ten),
            k.target_health(3, &ten),
            k.unwell(3),
            k.series(3, &ten, 493_000),
            k.series_all(3, 493_000),
            k.dead_letter_total(3),
            k.watch(3, "mon_1"),
            k.due(3),
            k.checks(3, "mon_1"),
            k.incidents(3, "mon_1"),
            k.watch_counts(3),
        ] {
            assert_eq!(hash_slot(&k.stream(3)), hash_slot(&key), "{key}");
        }
    }

    #[test]
    fn shard_is_stable_and_in_range() {
        // Pinned values: a change here would reorder every deployed tenant's events.
        assert_eq!(shard_of_text("", 16), (0xcbf29ce484222325u64 % 16) as u16);
        assert_eq!(shard_of_text("ten_a", 16), shard_of_text("ten_a", 16));
        for i in 0..1000 {
            assert!(shard_of_text(&format!("t{i}"), 7) < 7);
        }
        let used: std::collections::HashSet<u16> = (0..1000)
            .map(|i| shard_of_text(&format!("ten_{i}"), 16))
            .collect();
        assert_eq!(used.len(), 16);
    }

    #[test]
    fn shards_spread_over_slots() {
        let k = Keyspace::new("est");
        let slots: std::collections::HashSet<u16> =
            (0..16).map(|s| hash_slot(&k.stream(s))).collect();
        assert_eq!(slots.len(), 16);
        assert!(k.stream(0).starts_with("est:"));
    }
}
