//! Micro-benchmarks of the ingest hot path's pieces: the token hash, the auth-cache hit path,
//! shard routing and entry decoding.
//!
//! The cache benchmark needs a Redis to fill the cache once (its misses go there):
//! `ESTAFETA_BENCH_REDIS` (default `redis://127.0.0.1:6379`); it writes under a throwaway
//! prefix and deletes it afterwards. Without a reachable Redis that benchmark is skipped.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use estafeta::auth::Auth;
use estafeta::config::{AuthConfig, RedisConfig};
use estafeta::crypto::Keys;
use estafeta::model::{Name, Origin, TenantId, TenantSpec};
use estafeta::redis::keyspace::Keyspace;
use estafeta::store::Store;
use fred::prelude::*;

fn token_hash(c: &mut Criterion) {
    let keys = Keys::derive(&[7u8; 32]);
    let token = "est_g2liWspfF_jvdR5uygPwszlxB1iRlVm5UdFtlKfhKm0";
    c.bench_function("token_hash", |b| {
        b.iter(|| keys.hash_token(std::hint::black_box(token)))
    });
}

fn routing_and_decoding(c: &mut Criterion) {
    let Ok(tenant) = TenantId::parse("ten_01M829E6B1GN701AJV6ZWAWYDY") else {
        return;
    };
    c.bench_function("shard_of", |b| {
        b.iter(|| estafeta::redis::keyspace::shard_of(std::hint::black_box(&tenant), 16))
    });
    let pair = |k: &str, v: &[u8]| {
        (
            Bytes::copy_from_slice(k.as_bytes()),
            Bytes::copy_from_slice(v),
        )
    };
    let mut fields = vec![pair("v", b"1")];
    for i in 0..32 {
        fields.push(pair("id", format!("evt_{i:026}").as_bytes()));
        fields.push(pair("tenant", b"ten_01M829E6B1GN701AJV6ZWAWYDY"));
        fields.push(pair("type", b"order.paid"));
        fields.push(pair("ct", b"application/json"));
        fields.push(pair("body", &[b'x'; 200]));
    }
    c.bench_function("decode_entry_32_events", |b| {
        b.iter(|| estafeta::queue::decode(std::hint::black_box(&fields)))
    });
}

fn auth_cache_hit(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let url =
        std::env::var("ESTAFETA_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench-auth-{}", std::process::id());
    let setup = rt.block_on(async {
        let cfg = RedisConfig {
            url,
            ..RedisConfig::default()
        };
        let redis = estafeta::redis::connection::connect(&cfg).await.ok()?;
        let store = Store::new(
            redis.clone(),
            Keyspace::new(&prefix),
            Arc::new(Keys::derive(&[7u8; 32])),
        );
        let (token_id, token) = estafeta::store::tokens::generate_token().ok()?;
        let hash = store.crypto().hash_token(&token);
        let spec = TenantSpec {
            name: Name::parse("bench").ok()?,
            external_id: None,
            active: true,
            rate_limit: None,
            catalogue: Default::default(),
            keep_headers: Default::default(),
        };
        store
            .create_tenant(None, &spec, Origin::Api, Some((&token_id, &hash)))
            .await
            .ok()?;
        let auth = Auth::new(store, &AuthConfig::default(), None, 16);
        auth.authenticate(&token).await.ok()?; // fills the cache
        Some((redis, auth, token))
    });
    let Some((redis, auth, token)) = setup else {
        eprintln!("auth_cache_hit skipped: no Redis reachable (set ESTAFETA_BENCH_REDIS)");
        return;
    };
    let header = format!("Bearer {token}");
    c.bench_function("auth_cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| auth.authenticate_header(Some(std::hint::black_box(header.as_bytes()))))
    });
    rt.block_on(async {
        let keys: Vec<String> = redis
            .custom(fred::cmd!("KEYS"), vec![format!("{prefix}:*")])
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis.del(keys).await;
        }
    });
}

criterion_group!(benches, token_hash, routing_and_decoding, auth_cache_hit);
criterion_main!(benches);
