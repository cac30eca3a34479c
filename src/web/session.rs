//! Server-side sessions of the console and the portal, in Redis so that every instance
//! behind a load balancer knows them, and the CSRF token each one carries.
//!
//! The cookie holds a random session id; Redis holds the session under the id's keyed hash
//! (a copy of Redis does not yield live sessions). A session ends after `session_idle_s`
//! without a request, `session_max_s` after sign-in, at sign-out, or, for a portal session,
//! when its link is revoked. Both limits are checked on every read by the gateway's clock;
//! the key's TTL (the idle limit, renewed on use) only clears what nobody reads again.

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use crate::crypto::{Keys, random_token, secrets_equal};
use crate::model::TenantId;
use crate::model::time::Clock;
use crate::redis::keyspace::Keyspace;

use super::error::WebError;

/// Who a session acts for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    /// The operator, signed in with the admin token: the console.
    Operator {
        /// The keyed hash (hex) of the admin token it signed in with: a changed admin token
        /// ends the session.
        admin: String,
    },
    /// One tenant, signed in with its token or through a portal link: the portal.
    Tenant {
        tenant: TenantId,
        /// The portal link it came through; revoking the link ends the session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<String>,
        /// The keyed hash (hex) of the tenant token it signed in with; revoking the token
        /// ends the session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
}

/// A live session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    #[serde(flatten)]
    pub principal: Principal,
    /// Sent back in every state-changing form.
    pub csrf: String,
    pub created_ms: u64,
    /// The last request's time; absent in sessions written before it was kept (their TTL
    /// alone judged their idleness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_ms: Option<u64>,
}

impl Session {
    /// Whether `presented` is this session's CSRF token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        secrets_equal(presented.as_bytes(), self.csrf.as_bytes())
    }
}

/// The sessions of one deployment.
#[derive(Debug, Clone)]
pub struct Sessions {
    redis: Client,
    keys: Keyspace,
    crypto: std::sync::Arc<Keys>,
    idle_s: u64,
    max_s: u64,
    clock: Clock,
}

impl Sessions {
    pub fn new(
        redis: Client,
        keys: Keyspace,
        crypto: std::sync::Arc<Keys>,
        idle_s: u64,
        max_s: u64,
        clock: Clock,
    ) -> Sessions {
        Sessions {
            redis,
            keys,
            crypto,
            idle_s,
            max_s,
            clock,
        }
    }

    fn key(&self, id: &str) -> String {
        let hash = self.crypto.hash_token(id);
        format!("{}:web_session:{}", self.keys.prefix(), hash.to_hex())
    }

    /// The absolute lifetime, for the cookie's `Max-Age` (idleness is Redis's TTL: the
    /// cookie is set once, so it must outlive every request of a busy session).
    pub fn max_s(&self) -> u64 {
        self.max_s
    }

    /// Starts a session for `principal`; answers the cookie's value (the session id).
    pub async fn create(&self, principal: Principal) -> Result<(String, Session), WebError> {
        let id = random_token("")?;
        let now = self.clock.now_ms();
        let session = Session {
            principal,
            csrf: random_token("")?,
            created_ms: now,
            seen_ms: Some(now),
        };
        let value = serde_json::to_string(&session).map_err(WebError::internal)?;
        let _: () = self
            .redis
            .set(
                self.key(&id),
                value,
                Some(Expiration::EX(self.idle_s as i64)),
                None,
                false,
            )
            .await?;
        Ok((id, session))
    }

    /// The live session of cookie value `id`, its idle time renewed; `None` when there is
    /// none or it has run out.
    pub async fn read(&self, id: &str) -> Result<Option<Session>, WebError> {
        let key = self.key(id);
        let value: Option<String> = self.redis.get(&key).await?;
        let Some(value) = value else {
            return Ok(None);
        };
        // An unreadable session (another version's) is no session: sign in again.
        let Ok(mut session) = serde_json::from_str::<Session>(&value) else {
            return Ok(None);
        };
        let now = self.clock.now_ms();
        let idle = session
            .seen_ms
            .is_some_and(|seen| now.saturating_sub(seen) > self.idle_s.saturating_mul(1000));
        if idle || now.saturating_sub(session.created_ms) > self.max_s.saturating_mul(1000) {
            let _: i64 = self.redis.del(&key).await?;
            return Ok(None);
        }
        session.seen_ms = Some(now);
        let value = serde_json::to_string(&session).map_err(WebError::internal)?;
        // XX: a sign-out between the read and this write stays a sign-out.
        let _: Option<String> = self
            .redis
            .set(
                &key,
                value,
                Some(Expiration::EX(self.idle_s as i64)),
                Some(SetOptions::XX),
                false,
            )
            .await?;
        Ok(Some(session))
    }

    /// Ends the session of cookie value `id`.
    pub async fn end(&self, id: &str) -> Result<(), WebError> {
        let _: i64 = self.redis.del(self.key(id)).await?;
        Ok(())
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// How a cookie is set: the session cookies are `HttpOnly`, scoped to their UI's path, and
/// `SameSite=Strict` unless the portal is embedded in another site's frame (then `None`,
/// `Secure` and `Partitioned`, as browsers require, with the CSRF token still guarding every form).
#[derive(Debug, Clone, Copy)]
pub struct CookieSpec {
    pub name: &'static str,
    pub path: &'static str,
    pub secure: bool,
    pub embeddable: bool,
}

impl CookieSpec {
    /// `Set-Cookie` for `value`, living `max_age_s` (0 clears it).
    pub fn set(&self, value: &str, max_age_s: u64) -> String {
        let mut c = format!(
            "{}={value}; Path={}; Max-Age={max_age_s}; HttpOnly",
            self.name, self.path
        );
        if self.embeddable {
            c.push_str("; SameSite=None; Secure; Partitioned");
        } else {
            c.push_str("; SameSite=Strict");
            if self.secure {
                c.push_str("; Secure");
            }
        }
        c
    }

    pub fn clear(&self) -> String {
        self.set("", 0)
    }
}
