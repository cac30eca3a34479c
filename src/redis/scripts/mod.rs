//! The Lua scripts, one `.lua` file each, and the registry that loads them.
//!
//! Every multi-key change the gateway makes runs as a script, so it is atomic on one Redis and
//! on a cluster alike (a script's keys share one hash slot: `{m}` for the control plane, the
//! tenant's `{q<n>}` shard for its events and their records). Each file opens with its `KEYS`
//! and `ARGV` by name, binds them to named locals, and answers one JSON document
//! (`cjson.encode`) that [`Script::run`] decodes into a typed answer.
//!
//! Scripts are loaded by SHA1 (`EVALSHA`); [`preload`] loads them all at start, and a script
//! that Redis lost (a restart or a flush) is loaded again on first use.
//!
//! | script | caller | what it does |
//! | --- | --- | --- |
//! | `create_tenant`, `update_tenant`, `delete_tenant` | `store::tenants` | tenant records and their indexes |
//! | `issue_token`, `revoke_token` | `store::tokens` | token hashes |
//! | `publish_invalidation` | `invalidation` | numbered cache invalidations |
//! | `save_target`, `delete_target` | `store::targets` | versioned target documents |
//! | `save_event_type` | `store::event_types` | a tenant's event catalogue |
//! | `gather`, `cut_batch` | `store::deliveries::batches` | batched targets' gathering lists and cut batches |
//! | `save_tokened`, `delete_tokened` | `store::sources`, `store::monitors` | documents reached by a URL token |
//! | `append_batch` | `queue::enqueue` | one stream entry per batch, with idempotency keys |
//! | `expand`, `record`, `claim_due`, `replay`, `restore`, `delete_dead_letter` | `store::deliveries` | delivery records, retry schedule, error queue (`record`, `replay`, `restore` and `gather` share `delivery.lua`) |
//! | `shipped`, `lease` | `store::deliveries` (for `log_store::shipper`) | the ship queue, shard leases |
//! | `signal`, `describe`, `forget` | `monitors::state` | live state of watched subjects, alerts |

use std::sync::OnceLock;

use fred::prelude::*;
use fred::types::scripts::Script as Loaded;
use serde::de::DeserializeOwned;

/// A script of the registry.
pub struct Script {
    /// The file's name, without `.lua`.
    name: &'static str,
    /// The Lua source.
    source: &'static str,
    /// The source with its SHA1, made on first use.
    loaded: OnceLock<Loaded>,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Script({})", self.name)
    }
}

/// Why a script call failed.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("script {script} answered something unexpected: {cause}")]
    Answer { script: &'static str, cause: String },
}

impl Script {
    const fn new(name: &'static str, source: &'static str) -> Script {
        Script {
            name,
            source,
            loaded: OnceLock::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn source(&self) -> &'static str {
        self.source
    }

    fn loaded(&self) -> &Loaded {
        self.loaded.get_or_init(|| Loaded::from_lua(self.source))
    }

    /// The SHA1 `EVALSHA` names the script by.
    pub fn sha1(&self) -> &str {
        self.loaded().sha1()
    }

    /// Loads the script into Redis.
    pub async fn load(&self, redis: &Client) -> Result<(), fred::error::Error> {
        self.loaded().load(redis).await.map(|_| ())
    }

    /// Runs the script (loading it again if Redis lost it) and decodes its JSON answer.
    pub async fn run<A, K, V>(&self, redis: &Client, keys: K, args: V) -> Result<A, ScriptError>
    where
        A: DeserializeOwned,
        K: Into<fred::types::MultipleKeys> + Send,
        V: TryInto<fred::types::MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        let answer: String = self.loaded().evalsha_with_reload(redis, keys, args).await?;
        self.decode(&answer)
    }

    /// Decodes an answer of this script.
    pub fn decode<A: DeserializeOwned>(&self, answer: &str) -> Result<A, ScriptError> {
        serde_json::from_str(answer).map_err(|e| ScriptError::Answer {
            script: self.name,
            cause: e.to_string(),
        })
    }
}

macro_rules! script {
    ($(#[$doc:meta])* $name:ident, $file:literal) => {
        $(#[$doc])*
        pub static $name: Script = Script::new($file, include_str!(concat!($file, ".lua")));
    };
    ($(#[$doc:meta])* $name:ident, $file:literal, with_delivery) => {
        $(#[$doc])*
        pub static $name: Script = Script::new(
            $file,
            concat!(include_str!("delivery.lua"), include_str!(concat!($file, ".lua"))),
        );
    };
    ($(#[$doc:meta])* $name:ident, $file:literal, with_entry) => {
        $(#[$doc])*
        pub static $name: Script = Script::new(
            $file,
            concat!(include_str!("entry.lua"), include_str!(concat!($file, ".lua"))),
        );
    };
}

script!(
    /// Creates a tenant (and its first token).
    CREATE_TENANT, "create_tenant"
);
script!(
    /// Changes a tenant's fields.
    UPDATE_TENANT, "update_tenant"
);
script!(
    /// Deletes a tenant, its indexes and its tokens.
    DELETE_TENANT, "delete_tenant"
);
script!(
    /// Registers a token.
    ISSUE_TOKEN, "issue_token"
);
script!(
    /// Revokes a token.
    REVOKE_TOKEN, "revoke_token"
);
script!(
    /// Numbers and publishes a cache invalidation.
    PUBLISH_INVALIDATION, "publish_invalidation"
);
script!(
    /// Writes a versioned target document.
    SAVE_TARGET, "save_target"
);
script!(
    /// Deletes a target.
    DELETE_TARGET, "delete_target"
);
script!(
    /// Writes a document reached by a URL token.
    SAVE_TOKENED, "save_tokened"
);
script!(
    /// Deletes a document reached by a URL token.
    DELETE_TOKENED, "delete_tokened"
);
script!(
    /// Appends a batch of events as one stream entry, with idempotency keys.
    APPEND_BATCH, "append_batch", with_entry
);
script!(
    /// Records which entry expanded each event.
    EXPAND, "expand"
);
script!(
    /// Records delivery outcomes.
    RECORD, "record", with_delivery
);
script!(
    /// Leases due retries.
    CLAIM_DUE, "claim_due"
);
script!(
    /// Lets a delivery through a target's circuit breaker, or says until when it waits.
    BREAKER_PROBE, "breaker_probe"
);
script!(
    /// A target's shared rate limit (GCRA).
    RATE_LIMIT, "rate_limit"
);
script!(
    /// Sends a dead-lettered delivery again.
    REPLAY, "replay", with_delivery
);
script!(
    /// Brings an event back from the log store.
    RESTORE, "restore", with_delivery
);
script!(
    /// Marks events as stored in the log store.
    SHIPPED, "shipped"
);
script!(
    /// Takes or renews a lease.
    LEASE, "lease"
);
script!(
    /// Removes an error queue entry.
    DELETE_DEAD_LETTER, "delete_dead_letter"
);
script!(
    /// Brings an error queue's index in line with its entries.
    REINDEX_DEAD_LETTERS, "reindex_dead_letters"
);
script!(
    /// Records signals of watched subjects and appends their alerts.
    SIGNAL, "signal", with_entry
);
script!(
    /// Creates or renames a watched subject's state.
    DESCRIBE, "describe"
);
script!(
    /// Removes a watched subject's state and history.
    FORGET, "forget"
);
script!(
    /// Gathers events for their batched targets.
    GATHER, "gather", with_delivery
);
script!(
    /// Cuts a batched target's next batch.
    CUT_BATCH, "cut_batch"
);
script!(
    /// Writes one event type of a tenant's catalogue.
    SAVE_EVENT_TYPE, "save_event_type"
);
script!(
    /// Counts a sign-in attempt against its throttle.
    SIGNIN_ATTEMPT, "signin_attempt"
);

/// Every script of the registry.
pub static ALL: [&Script; 29] = [
    &SAVE_EVENT_TYPE,
    &GATHER,
    &CUT_BATCH,
    &CREATE_TENANT,
    &UPDATE_TENANT,
    &DELETE_TENANT,
    &ISSUE_TOKEN,
    &REVOKE_TOKEN,
    &PUBLISH_INVALIDATION,
    &SAVE_TARGET,
    &DELETE_TARGET,
    &SAVE_TOKENED,
    &DELETE_TOKENED,
    &APPEND_BATCH,
    &EXPAND,
    &RECORD,
    &CLAIM_DUE,
    &BREAKER_PROBE,
    &RATE_LIMIT,
    &REPLAY,
    &RESTORE,
    &SHIPPED,
    &LEASE,
    &DELETE_DEAD_LETTER,
    &REINDEX_DEAD_LETTERS,
    &SIGNAL,
    &DESCRIBE,
    &FORGET,
    &SIGNIN_ATTEMPT,
];

/// Loads every script, so no request pays for a load after a start.
pub async fn preload(redis: &Client) -> Result<(), fred::error::Error> {
    for script in ALL {
        script.load(redis).await?;
    }
    Ok(())
}

/// The common answer of scripts that say what they did in one word.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Status {
    pub status: String,
}

/// A list in a script's answer: `cjson` encodes an empty Lua table as `{}`, so an empty
/// object is read as an empty list.
pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum ListOrEmpty<T> {
        List(Vec<T>),
        Empty(std::collections::BTreeMap<String, serde::de::IgnoredAny>),
    }
    match <ListOrEmpty<T> as serde::Deserialize>::deserialize(d)? {
        ListOrEmpty::List(v) => Ok(v),
        ListOrEmpty::Empty(m) if m.is_empty() => Ok(Vec::new()),
        ListOrEmpty::Empty(_) => Err(serde::de::Error::custom("expected a list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_names_its_keys_args_and_answer() {
        for s in ALL {
            for word in ["KEYS", "ARGV", "Answer"] {
                assert!(
                    s.source.contains(&format!("-- {word}")),
                    "{} lacks `-- {word}`",
                    s.name
                );
            }
            assert!(
                s.source.contains("cjson.encode"),
                "{} answers without cjson",
                s.name
            );
        }
        let names: std::collections::HashSet<&str> = ALL.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), ALL.len());
    }

    #[derive(serde::Deserialize)]
    struct Members {
        #[serde(deserialize_with = "list")]
        members: Vec<String>,
    }

    #[test]
    fn empty_lua_tables_read_as_empty_lists() {
        let a: Result<Members, _> = CLAIM_DUE.decode(r#"{"members":{}}"#);
        assert!(a.is_ok_and(|m| m.members.is_empty()));
        let b: Result<Members, _> = CLAIM_DUE.decode(r#"{"members":["a:b"]}"#);
        assert!(b.is_ok_and(|m| m.members == ["a:b"]));
        assert!(
            CLAIM_DUE
                .decode::<Members>(r#"{"members":{"x":1}}"#)
                .is_err()
        );
    }
}
