//! Console page bench: a tenant with `events` events (all delivered to one target but `dead`,
//! which go to a target that answers 500 and end in the error queue), then every console page
//! fetched `ROUNDS` times with a signed-in session; prints each page's weight (bytes, as sent:
//! pages are not compressed, see `web::pages::routes`) and its time to the last byte over
//! loopback (median and max), which is the server's time plus a loopback round trip.
//!
//! `pages_bench <edge plain addr> <admin addr> <admin token> <events> <dead>`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const ROUNDS: usize = 7;
const CONNS: u64 = 32;

/// A receiver: `/fail…` answers 500, anything else 200.
async fn sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let fail = req.uri().path().starts_with("/fail");
                    let _ = req.into_body().collect().await;
                    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                    if fail {
                        *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// One request on a fresh connection: status, headers, body.
async fn request(
    addr: SocketAddr,
    req: hyper::Request<Full<Bytes>>,
) -> (u16, hyper::HeaderMap, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

async fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: String,
) -> serde_json::Value {
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (_, _, body) = request(addr, req).await;
    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
}

/// The `name=value` parts of every `Set-Cookie`.
fn cookies(h: &hyper::HeaderMap) -> Vec<String> {
    h.get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect()
}

/// Signs in to the console; the session's cookie header.
async fn sign_in(admin: SocketAddr, token: &str) -> String {
    let form = hyper::Request::get("/console/login")
        .header("host", "bench")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, h, _) = request(admin, form).await;
    let jar = cookies(&h);
    let csrf = jar[0].split_once('=').unwrap().1.to_owned();
    let post = hyper::Request::post("/console/login")
        .header("host", "bench")
        .header("cookie", jar.join("; "))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!(
            "_csrf={csrf}&token={token}"
        ))))
        .unwrap();
    let (status, h, _) = request(admin, post).await;
    assert_eq!(status, 303, "sign-in");
    cookies(&h).join("; ")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: pages_bench <edge> <admin> <admin token> <events> <dead>");
        std::process::exit(2);
    }
    let edge: SocketAddr = args[1].parse().unwrap();
    let admin: SocketAddr = args[2].parse().unwrap();
    let admin_token = args[3].clone();
    let events: u64 = args[4].parse().unwrap();
    let dead: u64 = args[5].parse().unwrap();

    let sink = sink().await;
    let tenant = api(
        admin,
        "POST",
        "/admin/tenants",
        &admin_token,
        r#"{"name":"pages"}"#.into(),
    )
    .await;
    let (tenant_id, token) = (
        tenant["id"].as_str().unwrap().to_owned(),
        tenant["token"].as_str().unwrap().to_owned(),
    );
    let mut target_ids = Vec::new();
    for (path, events, mode) in [
        ("/ok", "order.*", "persistent"),
        ("/fail", "refund.*", "once"),
    ] {
        let body = serde_json::json!({"url": format!("http://{sink}{path}"), "events": [events], "mode": mode});
        let t = api(
            admin,
            "POST",
            &format!("/admin/tenants/{tenant_id}/targets"),
            &admin_token,
            body.to_string(),
        )
        .await;
        target_ids.push(t["id"].as_str().unwrap().to_owned());
    }

    let started = Instant::now();
    let accepted = Arc::new(AtomicU64::new(0));
    let last_event = Arc::new(std::sync::Mutex::new(String::new()));
    let mut senders = Vec::new();
    for c in 0..CONNS {
        let (token, accepted, last_event) = (token.clone(), accepted.clone(), last_event.clone());
        let mine: Vec<u64> = (0..events).filter(|i| i % CONNS == c).collect();
        senders.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(edge).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            for i in mine {
                // Every (events / dead)-th event fails, spread over the whole run.
                let kind = if dead > 0
                    && i % (events / dead).max(1) == 0
                    && i / (events / dead).max(1) < dead
                {
                    "refund.issued"
                } else {
                    "order.paid"
                };
                let req = hyper::Request::post(format!("/v1/events/{kind}"))
                    .header("host", "bench")
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(
                        r#"{{"order":{i},"amount":129900,"currency":"BRL","note":"\u0000\u00ff"}}"#
                    ))))
                    .unwrap();
                send.ready().await.unwrap();
                let resp = send.send_request(req).await.unwrap();
                let ok = resp.status() == 202;
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                if ok {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    if i == 1 {
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        *last_event.lock().unwrap() = v["id"].as_str().unwrap().to_owned();
                    }
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let accepted = accepted.load(Ordering::Relaxed);
    println!(
        "{accepted} events accepted in {:.1} s ({dead} for the failing target)",
        started.elapsed().as_secs_f64()
    );
    // Until the error queue holds every failure.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let q = api(
            admin,
            "GET",
            &format!("/admin/tenants/{tenant_id}/dead-letters?limit=1"),
            &admin_token,
            String::new(),
        )
        .await;
        if q["total"].as_u64() == Some(dead) || Instant::now() > deadline {
            println!("error queue: {} entries", q["total"]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let session = sign_in(admin, &admin_token).await;
    let event = last_event.lock().unwrap().clone();
    let base = format!("/console/tenants/{tenant_id}");
    let q = api(
        admin,
        "GET",
        &format!("/admin/tenants/{tenant_id}/dead-letters?limit=100"),
        &admin_token,
        String::new(),
    )
    .await;
    let second_page = q["next"]
        .as_str()
        .map(|n| format!("{base}/dead-letters?after={n}"));
    let mut pages = vec![
        ("home".to_owned(), "/console".to_owned()),
        ("tenants".into(), "/console/tenants".into()),
        ("tenant overview".into(), base.clone()),
        ("targets".into(), format!("{base}/targets")),
        (
            "target (delivering)".into(),
            format!("{base}/targets/{}", target_ids[0]),
        ),
        (
            "target (failing)".into(),
            format!("{base}/targets/{}", target_ids[1]),
        ),
        ("events".into(), format!("{base}/events")),
        (
            "events of the failing target".into(),
            format!("{base}/events?target_id={}", target_ids[1]),
        ),
        ("an event".into(), format!("{base}/events/{event}")),
        ("error queue".into(), format!("{base}/dead-letters")),
        ("sources".into(), format!("{base}/sources")),
        ("monitors".into(), format!("{base}/monitors")),
        ("system".into(), "/console/system".into()),
        (
            "tenant overview, 7 days".into(),
            format!("{base}?window=7d"),
        ),
        ("system, 7 days".into(), "/console/system?window=7d".into()),
    ];
    if let Some(p) = second_page {
        pages.insert(10, ("error queue, page 2".into(), p));
    }
    println!(
        "{:<32} {:>9} {:>10} {:>10}  first heading",
        "page", "bytes", "median ms", "max ms"
    );
    for (name, path) in pages {
        let mut times = Vec::with_capacity(ROUNDS);
        let mut size = 0;
        let mut heading = String::new();
        for _ in 0..ROUNDS {
            let req = hyper::Request::get(path.as_str())
                .header("host", "bench")
                .header("cookie", session.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap();
            let t = Instant::now();
            let (status, _, body) = request(admin, req).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
            size = body.len();
            // The page's first heading, to show the page is the one asked for.
            let text = String::from_utf8_lossy(&body);
            heading = text
                .split_once("<h1>")
                .and_then(|(_, rest)| rest.split_once("</h1>"))
                .map(|(h, _)| h.chars().take(40).collect())
                .unwrap_or_default();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{name:<32} {size:>9} {:>10.1} {:>10.1}  {heading}",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}
