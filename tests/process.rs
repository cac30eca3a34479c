//! The `estafeta` binary as an operator runs it: CLI, exit codes, start-up failures, logs,
//! memory under abuse, and signals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::http::Request;
use support::process::{Served, addrs, write_config};
use support::{ADMIN_TOKEN, MASTER_KEY, RedisServer, binary, eventually, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(binary());
    c.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn config_errors_name_the_key_in_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let certs = support::certs();
    let redis_url = "redis://127.0.0.1:1";
    let good = support::config_toml(redis_url, "x", &addrs(), certs.path(), "");
    let cases = [
        (
            good.replace("[queue]", "[queue]\nshardz = 3"),
            "queue.shardz",
        ),
        (good.replace(MASTER_KEY, "c2hvcnQ="), "security.master_key"),
        (
            good.replace(
                &format!("\"{ADMIN_TOKEN}\""),
                "\"env:ESTAFETA_TEST_SURELY_UNSET\"",
            ),
            "ESTAFETA_TEST_SURELY_UNSET",
        ),
        (
            good.replace("[queue]", "[queue]\nretention_hours = \"soon\""),
            "queue.retention_hours",
        ),
        (format!("{good}\n[nonsense]\na = 1\n"), "nonsense"),
    ];
    for (text, key) in cases {
        let path = write_config(dir.path(), &text);
        for cmd in ["check-config", "serve"] {
            let out = cli(&[cmd, "--config", path.to_str().unwrap()], &[]);
            assert_eq!(out.status.code(), Some(1), "{cmd} with bad {key}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
            assert!(err.contains(key), "{cmd}: {err:?} should name {key}");
        }
    }
    let out = cli(
        &["check-config", "--config", "/nonexistent/estafeta.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/estafeta.toml"));
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let certs = support::certs();
    let text = support::config_toml("redis://127.0.0.1:1", "x", &addrs(), certs.path(), "")
        .replace(&format!("\"{ADMIN_TOKEN}\""), "\"env:TEST_ADMIN\"");
    let path = write_config(dir.path(), &text);
    let secret = "admin-secret-from-the-environment-1234";
    let out = cli(
        &["check-config", "--config", path.to_str().unwrap()],
        &[
            ("TEST_ADMIN", secret),
            ("ESTAFETA_REDIS__PREFIX", "from-env"),
            ("ESTAFETA_CONFIG", "/ignored"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("prefix = \"from-env\""),
        "environment override applied: {shown}"
    );
    assert!(shown.contains("token = \"env:TEST_ADMIN\""));
    assert!(shown.contains("master_key = \"[redacted]\""));
    assert!(!shown.contains(secret) && !shown.contains(MASTER_KEY));
    // ESTAFETA_CONFIG picks the file when --config is absent.
    let out = cli(
        &["check-config"],
        &[
            ("TEST_ADMIN", secret),
            ("ESTAFETA_CONFIG", path.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn gen_cert_writes_a_certificate_and_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    let out = cli(
        &[
            "gen-cert",
            "--out",
            out_dir.to_str().unwrap(),
            "--host",
            "localhost",
            "--host",
            "10.0.0.1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let cert = std::fs::read_to_string(out_dir.join("dev.crt")).unwrap();
    let key = std::fs::read_to_string(out_dir.join("dev.key")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(key.contains("PRIVATE KEY"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PRIVATE KEY"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out_dir.join("dev.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn unreachable_redis_fails_start_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let certs = support::certs();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let path = write_config(
        dir.path(),
        &support::config_toml(&url, "x", &addrs(), certs.path(), ""),
    );
    let started = Instant::now();
    let out = cli(
        &["serve", "--config", path.to_str().unwrap()],
        &[("RUST_LOG", "off")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach Redis at {url}: connection refused")),
        "{err}"
    );
}

#[test]
fn require_durable_checks_the_servers_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let certs = support::certs();
    let volatile = RedisServer::start(false);
    let a = addrs();
    let text = support::config_toml(&volatile.url(), "x", &a, certs.path(), "")
        .replace("[redis]", "[redis]\nrequire_durable = true");
    let path = write_config(dir.path(), &text);
    let out = cli(
        &["serve", "--config", path.to_str().unwrap()],
        &[("RUST_LOG", "off")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("require_durable") && err.contains("appendonly=no"),
        "{err}"
    );

    let durable = RedisServer::start(true);
    let text = support::config_toml(&durable.url(), "x", &a, certs.path(), "")
        .replace("[redis]", "[redis]\nrequire_durable = true");
    let path = write_config(dir.path(), &text);
    let mut served = Served::start(&path, a, &[("RUST_LOG", "info")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(served.wait_ready());
    assert_eq!(served.terminate(Duration::from_secs(10)), Some(0));
    assert!(
        served.logs().contains("survive") || served.logs().contains("keeps acknowledged events")
    );
}

#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let certs = support::certs();
    let redis = RedisServer::shared();
    let a = addrs();
    let text = support::config_toml(
        &redis.url(),
        &support::unique_prefix("logs"),
        &a,
        certs.path(),
        "",
    )
    .replace(&format!("\"{ADMIN_TOKEN}\""), "\"env:TEST_ADMIN\"")
    .replace(&format!("\"{MASTER_KEY}\""), "\"env:TEST_MASTER\"");
    let path = write_config(dir.path(), &text);
    let admin = "admin-token-that-must-never-be-logged-42";
    let mut served = Served::start(
        &path,
        a.clone(),
        &[
            ("TEST_ADMIN", admin),
            ("TEST_MASTER", MASTER_KEY),
            ("RUST_LOG", "trace"),
            ("ESTAFETA_LOG__FORMAT", "json"),
        ],
    );
    served.wait_ready().await;
    let create = Request::new("POST", "/admin/tenants")
        .bearer(admin)
        .json(&serde_json::json!({"name": "acme", "external_id": "ext-secret-777"}))
        .send_plain(a.admin)
        .await
        .unwrap();
    assert_eq!(create.status, 201);
    let token = create.json()["token"].as_str().unwrap().to_owned();
    let id = create.json()["id"].as_str().unwrap().to_owned();
    let post = |t: String| {
        let addr = a.plain;
        async move {
            Request::new("POST", "/v1/events/a")
                .bearer(&t)
                .header("idempotency-key", "idem-key-1")
                .body("{}")
                .send_plain(addr)
                .await
        }
    };
    assert_eq!(post(token.clone()).await.unwrap().status, 202);
    assert_eq!(post(format!("{token}x")).await.unwrap().status, 401);
    let issued = Request::new("POST", &format!("/admin/tenants/{id}/tokens"))
        .bearer(admin)
        .send_plain(a.admin)
        .await
        .unwrap()
        .json();
    let token2 = issued["token"].as_str().unwrap().to_owned();
    let wrong_admin = Request::get("/admin/tenants")
        .bearer("wrong-admin-token-xyz")
        .send_plain(a.admin)
        .await
        .unwrap();
    assert_eq!(wrong_admin.status, 401);
    assert_eq!(served.terminate(Duration::from_secs(10)), Some(0));
    let logs = served.logs();
    assert!(logs.len() > 1000, "trace logging produced output");
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    for secret in [
        admin,
        MASTER_KEY,
        token.as_str(),
        token2.as_str(),
        "wrong-admin-token-xyz",
        "ext-secret-777",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

#[tokio::test]
async fn chunked_bodies_past_the_cap_keep_memory_flat() {
    let mut served = Served::on_shared_redis("memory", &[("RUST_LOG", "warn")]).await;
    let token = served.tenant_token().await;
    let a = served.addrs.clone();
    let before = proc_status_kb(served.pid(), "VmRSS:");
    // 16 clients at once, each offering 64 MiB of chunked body against a 64 KiB cap.
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (token, addr) = (token.clone(), a.plain);
        clients.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST /v1/events/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "y".repeat(64 * 1024));
            for _ in 0..1024 {
                match tokio::time::timeout(Duration::from_secs(1), s.write_all(chunk.as_bytes())).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            let mut answer = vec![0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut answer)).await;
            matches!(n, Ok(Ok(n)) if String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 413"))
        }));
    }
    let mut refused = 0;
    for c in clients {
        refused += usize::from(c.await.unwrap());
    }
    assert_eq!(refused, 16, "every oversized body gets 413");
    let peak = proc_status_kb(served.pid(), "VmHWM:");
    let after = proc_status_kb(served.pid(), "VmRSS:");
    eprintln!("RSS before {before} kB, after {after} kB, peak {peak} kB");
    assert!(
        peak < before + 24 * 1024,
        "1 GiB offered, peak RSS grew from {before} to {peak} kB"
    );
    assert_eq!(served.terminate(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mut served = Served::on_shared_redis("sigterm", &[("RUST_LOG", "info")]).await;
    let token = served.tenant_token().await;
    let a = served.addrs.clone();
    // A request in flight (its body half sent) when the signal arrives.
    let mut s = tokio::net::TcpStream::connect(a.plain).await.unwrap();
    let head = format!(
        "POST /v1/events/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 2\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // Time for the server to accept and read the head: nothing outside the process shows
    // that it has (the one fixed wait left in these tests, with its twin in resilience.rs).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(served.pid().to_string())
        .status();
    eventually(Duration::from_secs(5), "shutdown under way", || async {
        served.logs().contains("shutting down")
    })
    .await;
    s.write_all(b"}").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 202"));
    // The one signal is enough: a second one would mean "exit now".
    let code = served.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", served.logs());
    assert!(served.logs().contains("stopped cleanly"));
}

#[test]
fn checked_in_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dev = cli(
        &[
            "check-config",
            "--config",
            root.join("config/estafeta.toml").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        dev.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dev.stderr)
    );
    let prod_path = root.join("config/production.example.toml");
    let prod = cli(
        &["check-config", "--config", prod_path.to_str().unwrap()],
        &[
            (
                "ESTAFETA_ADMIN_TOKEN",
                "production-admin-token-0123456789abcdef",
            ),
            ("ESTAFETA_MASTER_KEY", MASTER_KEY),
            (
                "ESTAFETA_LOG_STORE_URL",
                "postgres://estafeta:pw@db.internal:5432/estafeta",
            ),
        ],
    );
    assert_eq!(
        prod.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&prod.stderr)
    );
    // The production template reads every secret from the environment.
    let missing = cli(
        &["check-config", "--config", prod_path.to_str().unwrap()],
        &[],
    );
    assert_eq!(missing.status.code(), Some(1));
    let text = std::fs::read_to_string(prod_path).unwrap();
    assert!(text.contains("token = \"env:") && text.contains("master_key = \"env:"));
    assert!(text.contains("url = \"env:ESTAFETA_LOG_STORE_URL\""));
    // The effective config never shows the log store's password.
    assert!(!String::from_utf8_lossy(&prod.stdout).contains(":pw@"));
}
