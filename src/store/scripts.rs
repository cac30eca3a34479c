//! Lua scripts for the store's multi-key changes. Every key a script touches is passed in KEYS
//! and lives in the `{m}` slot; keys a change does not need are passed as a placeholder so the
//! argument positions stay fixed. Each script answers with a status word.

use std::sync::LazyLock;

use fred::types::scripts::Script;

/// Creates a tenant (and optionally its first token) unless the id or external id is taken.
/// KEYS: tenant, tenants index, external-id index (or placeholder), token, tenant_tokens.
/// ARGV: id, name, sealed ext, ext index, active, rl_ps, rl_burst, now, origin, token id, token hash.
pub static CREATE_TENANT: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if ARGV[4] ~= '' then
  if not redis.call('SET', KEYS[3], ARGV[1], 'NX') then return 'external_id_taken' end
end
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'ext', ARGV[3], 'ext_idx', ARGV[4], 'active', ARGV[5],
  'rl_ps', ARGV[6], 'rl_burst', ARGV[7], 'created_at', ARGV[8], 'updated_at', ARGV[8], 'origin', ARGV[9])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
if ARGV[10] ~= '' then
  redis.call('HSET', KEYS[4], 'tenant', ARGV[1], 'id', ARGV[10], 'created_at', ARGV[8])
  redis.call('HSET', KEYS[5], ARGV[10], ARGV[11])
end
return 'ok'
"#,
    )
});

/// Updates a tenant's fields; `retry` when its external id changed since the caller read it.
/// KEYS: tenant, old external-id index (or placeholder), new external-id index (or placeholder).
/// ARGV: id, expected ext index, set_name, name, set_active, active, set_rl, rl_ps, rl_burst,
/// set_ext, sealed ext, new ext index, now.
pub static UPDATE_TENANT: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'not_found' end
local cur = redis.call('HGET', KEYS[1], 'ext_idx') or ''
if cur ~= ARGV[2] then return 'retry' end
if ARGV[10] == '1' and ARGV[12] ~= cur then
  if ARGV[12] ~= '' then
    local owner = redis.call('GET', KEYS[3])
    if owner and owner ~= ARGV[1] then return 'external_id_taken' end
    redis.call('SET', KEYS[3], ARGV[1])
  end
  if cur ~= '' then redis.call('DEL', KEYS[2]) end
  redis.call('HSET', KEYS[1], 'ext', ARGV[11], 'ext_idx', ARGV[12])
end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'name', ARGV[4]) end
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'active', ARGV[6]) end
if ARGV[7] == '1' then redis.call('HSET', KEYS[1], 'rl_ps', ARGV[8], 'rl_burst', ARGV[9]) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[13])
return 'ok'
"#,
    )
});

/// Deletes a tenant, its indexes and all its tokens; `retry` when its tokens or external id
/// changed since the caller listed them.
/// KEYS: tenant, tenants index, tenant_tokens, external-id index (or placeholder), token keys...
/// ARGV: id, expected ext index, expected token count.
pub static DELETE_TENANT: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'not_found' end
if (redis.call('HGET', KEYS[1], 'ext_idx') or '') ~= ARGV[2] then return 'retry' end
if redis.call('HLEN', KEYS[3]) ~= tonumber(ARGV[3]) then return 'retry' end
for i = 5, #KEYS do redis.call('DEL', KEYS[i]) end
if ARGV[2] ~= '' then redis.call('DEL', KEYS[4]) end
redis.call('DEL', KEYS[3], KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 'ok'
"#,
    )
});

/// Registers a token for a tenant. Idempotent for a token already registered to that tenant.
/// KEYS: tenant, token, tenant_tokens. ARGV: tenant id, token id, token hash, now, max tokens.
pub static ISSUE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'not_found' end
local owner = redis.call('HGET', KEYS[2], 'tenant')
if owner then
  if owner == ARGV[1] then
    redis.call('HSET', KEYS[3], redis.call('HGET', KEYS[2], 'id'), ARGV[3])
    return 'exists'
  end
  return 'taken'
end
if redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[5]) then return 'too_many' end
redis.call('HSET', KEYS[2], 'tenant', ARGV[1], 'id', ARGV[2], 'created_at', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 'ok'
"#,
    )
});

/// Revokes one token. KEYS: tenant_tokens, token. ARGV: token id, token hash.
pub static REVOKE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 'not_found' end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 'ok'
"#,
    )
});

/// Numbers an auth-cache invalidation and publishes it as `<seq> <entry>`.
/// KEYS: the sequence counter. ARGV: channel, entry.
pub static PUBLISH_INVALIDATION: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local n = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], n .. ' ' .. ARGV[2])
return n
"#,
    )
});

/// Writes a target document if its version is still the expected one (0: must not exist) and
/// its tenant exists. KEYS: target, tenant's target index, tenant. ARGV: id, doc, expected
/// version, tenant id.
pub static SAVE_TARGET: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('EXISTS', KEYS[3]) == 0 then return 'no_tenant' end
local ver = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
if ver ~= tonumber(ARGV[3]) then
  if ARGV[3] == '0' then return 'exists' end
  return 'retry'
end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'ver', ver + 1, 'tenant', ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 'ok'
"#,
    )
});

/// Deletes a target and its index entry. KEYS: target, tenant's target index. ARGV: id.
pub static DELETE_TARGET: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"#,
    )
});

/// Writes a document reached by a URL token (a source or a monitor) and points its token at it,
/// if its tenant exists and the stored document is still the one the change was made from ('':
/// none, for a creation). KEYS: document, token index entry, tenant's index, tenant, old token
/// index entry (or the new one again). ARGV: id, doc, tenant id, expected stored doc.
pub static SAVE_TOKENED: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('EXISTS', KEYS[4]) == 0 then return 'no_tenant' end
if (redis.call('HGET', KEYS[1], 'doc') or '') ~= ARGV[4] then return 'changed' end
if KEYS[5] ~= KEYS[2] then redis.call('DEL', KEYS[5]) end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'tenant', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return 'ok'
"#,
    )
});

/// Deletes a document reached by a URL token, its token entry and its index entry. KEYS:
/// document, token index entry, tenant's index. ARGV: id.
pub static DELETE_TOKENED: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
return redis.call('DEL', KEYS[1])
"#,
    )
});
