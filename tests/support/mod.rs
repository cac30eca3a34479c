//! Test harness: a real `redis-server` per test binary (or per test, when a test stops it), the
//! gateway in-process on port-0 listeners, the binary as a subprocess, and a small HTTP client
//! that speaks HTTP/1.1 or HTTP/2, in clear or over TLS, one connection per request.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod http;
pub mod logs;
pub mod postgres;
pub mod process;
pub mod sink;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use estafeta::app::{self, Listeners, Role};
use estafeta::config::Config;
use estafeta::model::time::{Clock, ClockHand};
use fred::prelude::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdefghij";
pub const MASTER_KEY: &str = "dGVzdC1tYXN0ZXIta2V5LTMyLWJ5dGVzLWxvbmchISE=";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// A unique key prefix per test.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        name,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `redis-server` owned by the test process. A shell watchdog kills it when the test process
/// exits, even if the test harness never runs destructors.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    appendonly: bool,
}

impl RedisServer {
    pub fn start(appendonly: bool) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            appendonly,
        };
        server.spawn();
        server
    }

    /// The per-binary shared server (no persistence); tests isolate themselves by prefix.
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(|| RedisServer::start(false))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut args = vec![
            "--port".to_owned(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--dir".into(),
            self.dir.path().display().to_string(),
            "--appendonly".into(),
            if self.appendonly { "yes" } else { "no" }.into(),
            // `DEBUG SLEEP` stalls Redis in the fault tests.
            "--enable-debug-command".into(),
            "local".into(),
        ];
        if self.appendonly {
            args.extend(["--appendfsync".into(), "always".into()]);
        }
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        // The watchdog: exits (killing redis) when the test process is gone.
        let script = format!(
            "redis-server {} & r=$!; trap 'kill $r 2>/dev/null' EXIT TERM; while kill -0 {} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.2; done",
            quoted.join(" "),
            std::process::id()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// Runs redis-cli against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Kills the server (SIGKILL on the whole group would also stop the watchdog; use SHUTDOWN).
    pub fn stop(&mut self) {
        let _ = self.cli(&["SHUTDOWN", "NOSAVE"]);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts again on the same port and data directory (AOF is replayed when enabled).
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// A fred client for assertions.
    pub async fn client(&self) -> Client {
        client_of(&self.url()).await
    }
}

/// A fred client of the Redis at `url`, for assertions.
pub async fn client_of(url: &str) -> Client {
    let client = Builder::from_config(fred::types::config::Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The TOML of a test gateway. `extra` is appended (more sections or keys).
pub fn config_toml(
    redis_url: &str,
    prefix: &str,
    addrs: &Addrs,
    certs: &Path,
    extra: &str,
) -> String {
    format!(
        r#"
[edge]
listen = "{tls}"
plain_listen = "{plain}"
max_body_bytes = 65536
header_read_timeout_ms = 1000
tls_handshake_timeout_ms = 1000
body_idle_timeout_ms = 1000
shutdown_grace_ms = 2000

[admin]
listen = "{admin}"
token = "{ADMIN_TOKEN}"

[tls]
cert = "{cert}"
key = "{key}"

[redis]
url = "{redis_url}"
prefix = "{prefix}"
command_timeout_ms = 1000
connect_timeout_ms = 2000

[security]
master_key = "{MASTER_KEY}"
allow_private_targets = true

[auth]
negative_ttl_ms = 200

[queue]
shards = 4

[log]
level = "warn"

[transform]
executable = "{worker}"
{extra}
{breaker}
"#,
        worker = env!("CARGO_BIN_EXE_estafeta"),
        // Tests of retries and the error queue make targets fail on purpose, many times: the
        // circuit breaker (on by default) would hold their deliveries. Its own tests turn
        // it on by declaring the section.
        breaker = if extra.contains("[dispatch.breaker]") {
            ""
        } else {
            "[dispatch.breaker]\nenabled = false"
        },
        tls = addrs.tls,
        plain = addrs.plain,
        admin = addrs.admin,
        cert = certs.join("dev.crt").display(),
        key = certs.join("dev.key").display(),
    )
}

/// The addresses of one gateway.
#[derive(Clone, Debug)]
pub struct Addrs {
    pub tls: SocketAddr,
    pub plain: SocketAddr,
    pub admin: SocketAddr,
}

/// Writes a development certificate for localhost into a fresh folder.
pub fn certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    estafeta::edge::tls::write_dev_cert(
        &dir.path().join("dev.crt"),
        &dir.path().join("dev.key"),
        &["localhost".into(), "127.0.0.1".into()],
    )
    .unwrap();
    dir
}

/// An in-process gateway on loopback ports.
pub struct Gateway {
    pub addrs: Addrs,
    pub prefix: String,
    pub redis_url: String,
    pub certs: Arc<tempfile::TempDir>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), app::StartError>>>,
    /// The gateway's clock: a test moves it ahead instead of sleeping.
    pub clock: Clock,
    hand: ClockHand,
    /// The monitors' settings of its config, for [`Gateway::check_monitors_now`].
    watch: (u32, u32, bool),
}

impl Gateway {
    /// A gateway on the shared Redis with its own prefix.
    pub async fn start(name: &str) -> Gateway {
        Self::start_with(&RedisServer::shared().url(), &unique_prefix(name), "").await
    }

    pub async fn start_with(redis_url: &str, prefix: &str, extra: &str) -> Gateway {
        Self::start_full(redis_url, prefix, extra, Arc::new(certs())).await
    }

    pub async fn start_full(
        redis_url: &str,
        prefix: &str,
        extra: &str,
        certs: Arc<tempfile::TempDir>,
    ) -> Gateway {
        Self::start_edited(redis_url, prefix, extra, certs, |t| t).await
    }

    /// Like [`Gateway::start_full`], with the config text passed through `edit` first.
    pub async fn start_edited(
        redis_url: &str,
        prefix: &str,
        extra: &str,
        certs: Arc<tempfile::TempDir>,
        edit: impl FnOnce(String) -> String,
    ) -> Gateway {
        Self::start_as(Role::All, redis_url, prefix, extra, certs, edit).await
    }

    /// A gateway running `role` (`Role::Edge`, `Role::Dispatcher` or the default, all).
    pub async fn start_as(
        role: Role,
        redis_url: &str,
        prefix: &str,
        extra: &str,
        certs: Arc<tempfile::TempDir>,
        edit: impl FnOnce(String) -> String,
    ) -> Gateway {
        let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = Addrs {
            tls: tls.local_addr().unwrap(),
            plain: plain.local_addr().unwrap(),
            admin: admin.local_addr().unwrap(),
        };
        let text = edit(config_toml(redis_url, prefix, &addrs, certs.path(), extra));
        let config = Config::from_toml(&text).unwrap();
        let shutdown = CancellationToken::new();
        let listeners = Listeners {
            edge_tls: Some(tls),
            edge_plain: Some(plain),
            admin: Some(admin),
        };
        let (clock, hand) = Clock::adjustable();
        let watch = (
            config.monitors.checks_kept,
            config.monitors.incidents_kept,
            config.log_store.is_some(),
        );
        let task = tokio::spawn(app::run_on(
            config,
            role,
            listeners,
            shutdown.clone(),
            clock.clone(),
        ));
        let gw = Gateway {
            clock,
            hand,
            watch,
            addrs,
            prefix: prefix.to_owned(),
            redis_url: redis_url.to_owned(),
            certs,
            shutdown,
            task: Some(task),
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(r) = http::Request::get("/readyz")
                .send_plain(self.addrs.plain)
                .await
            {
                if r.status == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gateway did not become ready");
    }

    /// Moves the gateway's clock `by` ahead: what it decides by time (due retries, sessions,
    /// portal links, monitors' deadlines, retention) now sees that much later.
    pub fn advance(&self, by: Duration) {
        self.hand.advance(by);
    }

    /// One pass of the overdue checker over the gateway's shards at its clock's time, as its
    /// own checker runs them. Once it returns, every monitor overdue by then has been handled,
    /// by this pass or a concurrent one (the signal script claims each overdue subject once),
    /// and its alert, if any, is in the stream: a test asserts what happened instead of
    /// sleeping through "several check periods".
    pub async fn check_monitors_now(&self) {
        let tasks = tokio_util::task::TaskTracker::new();
        let stop = CancellationToken::new();
        let watches = estafeta::monitors::state::Watches::new(
            client_of(&self.redis_url).await,
            estafeta::redis::keyspace::Keyspace::new(&self.prefix),
            estafeta::monitors::state::WatchSettings {
                checks_kept: self.watch.0,
                incidents_kept: self.watch.1,
                deadline: Duration::from_secs(2),
                logged: self.watch.2,
                clock: self.clock.clone(),
            },
            &tasks,
            stop.clone(),
        );
        let now = watches.clock().await.unwrap();
        estafeta::monitors::checker::check_once(&watches, 4, now).await;
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }

    /// Waits until the dispatcher has nothing left to do: every shard's entries read and
    /// finished (no lag, nothing pending) and the retry schedule empty. From then on no
    /// delivery happens that nothing new starts, so a test asserts "nothing more came" at
    /// once instead of sleeping through a guess.
    pub async fn settled(&self) {
        let redis = client_of(&self.redis_url).await;
        let keys = estafeta::redis::keyspace::Keyspace::new(&self.prefix);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let system = self.admin("GET", "/admin/system", None).await.json();
            let mut busy: Vec<String> = Vec::new();
            for s in system["shards"].as_array().into_iter().flatten() {
                if s["lag"] != 0 || s["pending"] != 0 {
                    busy.push(format!(
                        "shard {}: lag {}, pending {}",
                        s["shard"], s["lag"], s["pending"]
                    ));
                }
            }
            for shard in 0..4u16 {
                let scheduled: u64 = redis.zcard(keys.retries(shard)).await.unwrap_or(0);
                if scheduled > 0 {
                    busy.push(format!("shard {shard}: {scheduled} retries scheduled"));
                }
            }
            if busy.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("the dispatcher did not settle: {busy:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the gateway gracefully and returns how `run` ended.
    pub async fn stop(mut self) -> Result<(), app::StartError> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(t) => t.await.expect("gateway task panicked"),
            None => Ok(()),
        }
    }

    /// An admin API call with the admin token.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> http::Response {
        let mut req = http::Request::new(method, path).bearer(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send_plain(self.addrs.admin).await.unwrap()
    }

    /// Creates a tenant and returns (id, token).
    pub async fn tenant(&self, name: &str) -> (String, String) {
        self.tenant_with(serde_json::json!({ "name": name })).await
    }

    pub async fn tenant_with(&self, body: serde_json::Value) -> (String, String) {
        let r = self.admin("POST", "/admin/tenants", Some(body)).await;
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Posts an event on the cleartext listener.
    pub async fn post_event(&self, token: &str, event_type: &str, body: &[u8]) -> http::Response {
        http::Request::new("POST", &format!("/v1/events/{event_type}"))
            .bearer(token)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send_plain(self.addrs.plain)
            .await
            .unwrap()
    }

    /// Creates a target through the admin API; returns its JSON (with `secret`).
    pub async fn create_target(&self, tenant: &str, body: serde_json::Value) -> serde_json::Value {
        let r = self
            .admin(
                "POST",
                &format!("/admin/tenants/{tenant}/targets"),
                Some(body),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    /// Posts an event that must be accepted; returns its id.
    pub async fn post_ok(&self, token: &str, event_type: &str, body: &[u8]) -> String {
        let r = self.post_event(token, event_type, body).await;
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    }

    /// A GET of the tenant API on the cleartext listener.
    pub async fn get_as(&self, token: &str, path: &str) -> http::Response {
        http::Request::get(path)
            .bearer(token)
            .send_plain(self.addrs.plain)
            .await
            .unwrap()
    }

    /// The admin listener's `/metrics`, once it shows `needle` (the backlog gauges appear with
    /// the dispatcher's first pass), or after 10 s.
    pub async fn metrics_showing(&self, needle: &str) -> String {
        let mut text = String::new();
        for _ in 0..100 {
            text = http::Request::get("/metrics")
                .send_plain(self.addrs.admin)
                .await
                .unwrap()
                .text();
            if text.contains(needle) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        text
    }

    /// The stream key of a shard.
    pub fn stream(&self, shard: u16) -> String {
        estafeta::redis::keyspace::Keyspace::new(&self.prefix).stream(shard)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The events in one stream, in order, decoded from its entries.
pub async fn stream_events(redis: &Client, key: &str) -> Vec<estafeta::queue::StoredEvent> {
    let entries: Value = redis.xrange(key, "-", "+", None).await.unwrap();
    let mut out = Vec::new();
    let Value::Array(entries) = entries else {
        return out;
    };
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            panic!("entry is not an array")
        };
        let Some(Value::Array(flat)) = parts.pop() else {
            panic!("entry has no fields")
        };
        let fields: Vec<(bytes::Bytes, bytes::Bytes)> = flat
            .chunks(2)
            .map(|kv| {
                (
                    kv[0].as_bytes().unwrap().to_vec().into(),
                    kv[1].as_bytes().unwrap().to_vec().into(),
                )
            })
            .collect();
        out.extend(estafeta::queue::decode(&fields).unwrap());
    }
    out
}

/// Every event in every shard stream of `prefix` (4 shards in test configs), by shard.
pub async fn all_events(redis: &Client, prefix: &str) -> Vec<(u16, estafeta::queue::StoredEvent)> {
    let keys = estafeta::redis::keyspace::Keyspace::new(prefix);
    let mut out = Vec::new();
    for shard in 0..4 {
        for e in stream_events(redis, &keys.stream(shard)).await {
            out.push((shard, e));
        }
    }
    out
}

/// Waits until `check` holds, polling; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Path of the binary subprocess tests run: `ESTAFETA_BIN` when set (CI points it at the
/// release build, as users run it), else the one cargo built for this test run.
pub fn binary() -> PathBuf {
    match std::env::var_os("ESTAFETA_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_estafeta")),
    }
}

/// The system's time (ms), as a gateway on the system clock reads it.
pub fn now_ms() -> u64 {
    estafeta::model::time::Clock::system().now_ms()
}

/// Waits until the Redis that `probe` talks to is busy with a `DEBUG SLEEP` another client
/// sent: a `PING` then finds no answer within 50 ms.
pub async fn until_asleep(probe: &Client) {
    eventually(Duration::from_secs(5), "Redis asleep", || async {
        tokio::time::timeout(Duration::from_millis(50), probe.ping::<String>(None))
            .await
            .is_err()
    })
    .await;
}
