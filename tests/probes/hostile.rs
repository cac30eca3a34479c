//! Hostile and ambiguous input, against the binary: each case of the README's table of hostile
//! inputs, sent as an attacker or a careless integrator would, gets the answer the table says.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::http::{Request, Response};
use super::support::process::Served;
use super::support::{ADMIN_TOKEN, RedisServer};

async fn served(name: &str, extra: &str) -> Served {
    Served::on(&RedisServer::shared().url(), name, extra, &[]).await
}

async fn admin(s: &Served, method: &str, path: &str, body: Option<Json>) -> Response {
    let mut r = Request::new(method, path).bearer(ADMIN_TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send_plain(s.addrs.admin).await.unwrap()
}

async fn tenant(s: &Served, body: Json) -> (String, String) {
    let r = admin(s, "POST", "/admin/tenants", Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    (
        r.json()["id"].as_str().unwrap().to_owned(),
        r.json()["token"].as_str().unwrap().to_owned(),
    )
}

/// Writes `raw`, then reads whatever comes back within `wait` (until the server closes or a
/// whole answer came).
async fn exchange(addr: SocketAddr, raw: &[u8], wait: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(wait, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// The JSON error of a raw answer.
fn error_of(answer: &str) -> Json {
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Json::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_is_not_a_host_is_400() {
    let s = served("probe-host", "").await;
    for host in ["a b", "user@example.com", "example.com:http"] {
        let raw = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = exchange(s.addrs.plain, raw.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{host}: {answer}");
        assert_eq!(
            error_of(&answer)["error"]["code"],
            "invalid_host",
            "{answer}"
        );
    }
    let ok = exchange(
        s.addrs.plain,
        b"GET /healthz HTTP/1.1\r\nHost: hooks.example.com:8080\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_declaring_more_than_the_cap_is_413_at_once() {
    let s = served("probe-chunk", "").await;
    let (_, token) = tenant(&s, json!({"name": "acme"})).await;
    for size in ["7FFFFFFFFFFFFFFF", "10001"] {
        // The head and one chunk-size line; the bytes it declares never come.
        let raw = format!(
            "POST /v1/events/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nab"
        );
        let answer = exchange(s.addrs.plain, raw.as_bytes(), Duration::from_secs(8)).await;
        // Before, the body's idle deadline answered it (408): the declared size is enough now.
        assert!(answer.starts_with("HTTP/1.1 413"), "{size}: {answer}");
        assert_eq!(
            error_of(&answer)["error"]["code"],
            "payload_too_large",
            "{answer}"
        );
    }
    // On a keep-alive connection's second request too, and over TLS's cleartext twin alike:
    // a small first request, then the lying one.
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/events/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nFFFFFFFFFF\r\n"
    );
    let mut conn = tokio::net::TcpStream::connect(s.addrs.plain).await.unwrap();
    conn.write_all(raw.as_bytes()).await.unwrap();
    let mut answers = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut buf)).await {
        if n == 0 || String::from_utf8_lossy(&answers).contains("payload_too_large") {
            break;
        }
        answers.extend_from_slice(&buf[..n]);
    }
    let answers = String::from_utf8_lossy(&answers);
    assert!(answers.starts_with("HTTP/1.1 200"), "{answers}");
    assert!(answers.contains("HTTP/1.1 413"), "{answers}");
    // A chunked body within the cap is taken as before.
    let raw = format!(
        "POST /v1/events/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\n{{}}x\r\n0\r\n\r\n"
    );
    let answer = exchange(s.addrs.plain, raw.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_hyper_cannot_parse_gets_the_json_error() {
    let s = served("probe-head", "").await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    for (raw, status, code) in [
        (
            "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_owned(),
            "400",
            "malformed_request",
        ),
        ("G\u{1}T / HTTP/1.1\r\n\r\n".to_owned(), "400", "malformed_request"),
        (
            "POST /v1/events/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                .to_owned(),
            "400",
            "malformed_request",
        ),
        (
            "POST /v1/events/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_owned(),
            "400",
            "malformed_request",
        ),
        (big, "431", "headers_too_large"),
        (many, "431", "headers_too_large"),
    ] {
        for addr in [s.addrs.plain, s.addrs.admin] {
            let answer = exchange(addr, raw.as_bytes(), Duration::from_secs(5)).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{}: {answer}",
                &raw[..raw.len().min(60)]
            );
            assert!(answer.contains("content-type: application/json"), "{answer}");
            assert_eq!(error_of(&answer)["error"]["code"], code, "{answer}");
        }
    }
    // HTTP/2 with prior knowledge still reaches hyper untouched.
    let h2 = exchange(
        s.addrs.plain,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        Duration::from_secs(2),
    )
    .await;
    assert!(!h2.contains("malformed_request"), "{h2:?}");
    let r = Request::get("/healthz")
        .send_plain(s.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_keys_are_refused_where_a_pointer_or_a_parser_reads_the_body() {
    let s = served("probe-dupkeys", "").await;
    let (id, _) = tenant(&s, json!({"name": "acme"})).await;
    let src = admin(
        &s,
        "POST",
        &format!("/admin/tenants/{id}/sources"),
        Some(json!({"name": "ci", "verify": {"scheme": "none"}, "event_type": {"json_pointer": "/type"}})),
    )
    .await;
    assert_eq!(src.status, 201, "{}", src.text());
    let hook = format!("/v1/hooks/{}", src.json()["token"].as_str().unwrap());
    let r = Request::new("POST", &hook)
        .body(br#"{"type":"first.t","type":"second.t"}"#.to_vec())
        .send_plain(s.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.is_error("duplicate_key"), "{}", r.text());
    // Written with an escape, the same key is the same key.
    let r = Request::new("POST", &hook)
        .body(br#"{"type":"first.t","\u0074ype":"second.t"}"#.to_vec())
        .send_plain(s.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let r = Request::new("POST", &hook)
        .body(br#"{"type":"first.t","data":{"type":"x"}}"#.to_vec())
        .send_plain(s.addrs.plain)
        .await
        .unwrap();
    assert_eq!(
        r.status,
        202,
        "a key repeated in another object is fine: {}",
        r.text()
    );
    // A status push and an admin document too.
    let m = admin(
        &s,
        "POST",
        &format!("/admin/tenants/{id}/monitors"),
        Some(json!({"name": "db"})),
    )
    .await;
    let push = format!("/v1/monitors/{}", m.json()["token"].as_str().unwrap());
    let r = Request::new("POST", &push)
        .body(br#"{"status":"up","status":"down"}"#.to_vec())
        .send_plain(s.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("appears twice"), "{}", r.text());
    let r = Request::new("POST", &format!("/admin/tenants/{id}/targets"))
        .bearer(ADMIN_TOKEN)
        .body(
            br#"{"url":"http://127.0.0.1:9/a","events":["*"],"headers":{"x-a":"1","x-a":"2"}}"#
                .to_vec(),
        )
        .send_plain(s.addrs.admin)
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_ids_are_unique_in_a_normalised_form_and_lookalikes_are_refused() {
    let s = served("probe-lookalike", "").await;
    let (acme, _) = tenant(&s, json!({"name": "Acme", "external_id": "acme"})).await;
    for same in ["ACME", "\u{ff41}\u{ff43}\u{ff4d}\u{ff45}"] {
        let r = admin(
            &s,
            "POST",
            "/admin/tenants",
            Some(json!({"name": "x", "external_id": same})),
        )
        .await;
        assert_eq!(r.status, 409, "{same}: {}", r.text());
    }
    for refused in ["acme\u{200B}", "a\u{441}me", "\u{202E}emca"] {
        let r = admin(
            &s,
            "POST",
            "/admin/tenants",
            Some(json!({"name": "x", "external_id": refused})),
        )
        .await;
        assert_eq!(r.status, 400, "{refused:?}: {}", r.text());
        assert!(r.text().contains("external_id"), "{}", r.text());
    }
    let (_, _) = tenant(
        &s,
        json!({"name": "Acme Brasil", "external_id": "acm\u{e9}"}),
    )
    .await;
    let r = admin(
        &s,
        "POST",
        "/admin/tenants",
        Some(json!({"name": "x", "external_id": "acme\u{301}"})),
    )
    .await;
    assert_eq!(r.status, 409, "NFD after NFC: {}", r.text());
    // Looking up by any spelling finds the one tenant.
    let r = admin(&s, "GET", "/admin/tenants?external_id=ACME", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let found = r.json();
    let ids: Vec<&str> = found["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, vec![acme.as_str()]);
    // Names refuse what reorders or hides text.
    for name in [
        "invoice\u{202E}fdp.exe",
        "ac\u{200B}me",
        "\u{2066}x\u{2069}",
    ] {
        let r = admin(&s, "POST", "/admin/tenants", Some(json!({"name": name}))).await;
        assert_eq!(r.status, 400, "{name:?}: {}", r.text());
        assert!(r.text().contains("name"), "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_naming_no_target_of_the_tenant_is_400() {
    let s = served("probe-replay", "").await;
    let (id, token) = tenant(&s, json!({"name": "acme"})).await;
    let (_, other) = tenant(&s, json!({"name": "other"})).await;
    let _ = other;
    for target in ["nope", "tgt_01J0000000000000000000000"] {
        let r = admin(
            &s,
            "POST",
            &format!("/admin/tenants/{id}/dead-letters/replay"),
            Some(json!({"target_id": target})),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text());
        let r = Request::new("POST", "/v1/dead-letters/replay")
            .bearer(&token)
            .json(&json!({"target_id": target}))
            .send_plain(s.addrs.plain)
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
    }
    let r = admin(
        &s,
        "POST",
        &format!("/admin/tenants/{id}/dead-letters/replay"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_are_reported_as_sent_and_unknown_assets_are_json() {
    let s = served("probe-numbers", "").await;
    let r = Request::new("POST", "/admin/tenants")
        .bearer(ADMIN_TOKEN)
        .body(
            br#"{"name":"n","rate_limit":{"per_second":1,"burst":18446744073709551616}}"#.to_vec(),
        )
        .send_plain(s.addrs.admin)
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("18446744073709551616"), "{message}");
    assert!(!message.contains("18446744073709552000"), "{message}");
    for (addr, path) in [
        (s.addrs.admin, "/console/assets/nope.js"),
        (s.addrs.plain, "/portal/assets/nope.js"),
    ] {
        let r = Request::get(path).send_plain(addr).await.unwrap();
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json"),
            "{path}"
        );
        assert!(r.is_error("not_found"), "{path}: {}", r.text());
    }
}

/// The sign-in form's double-submit cookie and token, from `root` on `addr`.
async fn signin_form(
    addr: SocketAddr,
    root: &str,
    forwarded_for: Option<&str>,
) -> (String, String) {
    let mut r = Request::get(&format!("{root}/login"));
    if let Some(f) = forwarded_for {
        r = r.header("x-forwarded-for", f);
    }
    let form = r.send_plain(addr).await.unwrap();
    let cookie = form.header("set-cookie").unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let csrf = cookie.split_once('=').unwrap().1.to_owned();
    (cookie, csrf)
}

async fn sign_in(
    addr: SocketAddr,
    root: &str,
    token: &str,
    forwarded_for: Option<&str>,
) -> Response {
    let (cookie, csrf) = signin_form(addr, root, forwarded_for).await;
    let mut r = Request::new("POST", &format!("{root}/login"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}&token={token}"));
    if let Some(f) = forwarded_for {
        r = r.header("x-forwarded-for", f);
    }
    r.send_plain(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_throttled_per_address_across_instances() {
    let redis = RedisServer::shared().url();
    let prefix = "web-throttle";
    let a = Served::on(&redis, prefix, "", &[]).await;
    // A second process on the same Redis and prefix: they share the counters.
    let dir = tempfile::tempdir().unwrap();
    let addrs = super::support::process::addrs();
    let text = a_config_like(&a, &addrs);
    let path = super::support::process::write_config(dir.path(), &text);
    let mut b = Served::start(&path, addrs, &[]);
    b.wait_ready().await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let on = if i % 2 == 0 { &a } else { &b };
        statuses.push(
            sign_in(on.addrs.admin, "/console", &format!("wrong-{i}"), None)
                .await
                .status,
        );
    }
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    for on in [&a, &b] {
        let r = sign_in(on.addrs.admin, "/console", "wrong-again", None).await;
        assert_eq!(r.status, 429, "{}", r.text());
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        // Even the right token waits: the address is throttled, not the guess.
        let r = sign_in(on.addrs.admin, "/console", ADMIN_TOKEN, None).await;
        assert_eq!(r.status, 429, "{}", r.text());
    }
    // The portal counts its own failures.
    let mut portal = Vec::new();
    for i in 0..11 {
        portal.push(
            sign_in(a.addrs.plain, "/portal", &format!("est_wrong{i}"), None)
                .await
                .status,
        );
    }
    assert_eq!(&portal[..10], &[401; 10]);
    assert_eq!(portal[10], 429);
    // No failed sign-in logs the token.
    let logs = a.logs() + &b.logs();
    assert!(logs.contains("sign-in refused"), "{logs}");
    assert!(
        !logs.contains("wrong-3") && !logs.contains("est_wrong"),
        "a token was logged"
    );
}

/// The config of `a` for another process: same Redis and prefix, its own addresses.
fn a_config_like(a: &Served, addrs: &super::support::Addrs) -> String {
    let text = std::fs::read_to_string(a.dirs[0].path().join("estafeta.toml")).unwrap();
    text.replace(&a.addrs.tls.to_string(), &addrs.tls.to_string())
        .replace(&a.addrs.plain.to_string(), &addrs.plain.to_string())
        .replace(&a.addrs.admin.to_string(), &addrs.admin.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    // Untrusted: a client's own X-Forwarded-For does not make it someone else, and its
    // X-Forwarded-Proto does not make a cleartext cookie Secure.
    let s = served("probe-untrusted", "").await;
    for i in 0..10 {
        let guess = format!("wrong-{i}");
        let r = sign_in(
            s.addrs.admin,
            "/console",
            &guess,
            Some(&format!("203.0.113.{i}")),
        )
        .await;
        assert_eq!(r.status, 401);
    }
    let r = sign_in(
        s.addrs.admin,
        "/console",
        "fresh-guess",
        Some("198.51.100.1"),
    )
    .await;
    assert_eq!(r.status, 429, "a made-up address is not another client");
    let s = served("probe-untrusted-proto", "").await;
    let (cookie, csrf) = signin_form(s.addrs.admin, "/console", None).await;
    let r = Request::new("POST", "/console/login")
        .header("cookie", &cookie)
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}&token={ADMIN_TOKEN}"))
        .send_plain(s.addrs.admin)
        .await
        .unwrap();
    assert_eq!(r.status, 303, "{}", r.text());
    let set = r.header("set-cookie").unwrap();
    assert!(!set.contains("Secure"), "{set}");
    // Trusted (the loopback proxy): the address it names is the client, per address and per
    // credential, and its https is believed.
    let s = served(
        "probe-trusted",
        "[web]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
    )
    .await;
    for i in 0..10 {
        let r = sign_in(
            s.addrs.admin,
            "/console",
            "wrong",
            Some(&format!("203.0.113.{i}")),
        )
        .await;
        assert_eq!(r.status, 401);
    }
    // Ten clients, one guess each: the guess is used up.
    let r = sign_in(s.addrs.admin, "/console", "wrong", Some("198.51.100.1")).await;
    assert_eq!(r.status, 429, "per credential");
    // Another guess from a fresh client is fine; the right token from a fresh client signs in.
    let r = sign_in(
        s.addrs.admin,
        "/console",
        "other-guess",
        Some("198.51.100.2"),
    )
    .await;
    assert_eq!(r.status, 401);
    let (cookie, csrf) = signin_form(s.addrs.admin, "/console", Some("198.51.100.3")).await;
    let r = Request::new("POST", "/console/login")
        .header("cookie", &cookie)
        .header("x-forwarded-for", "198.51.100.3")
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}&token={ADMIN_TOKEN}"))
        .send_plain(s.addrs.admin)
        .await
        .unwrap();
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.header("set-cookie").unwrap().contains("Secure"));
}
