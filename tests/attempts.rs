//! An attempt's headers, end to end on real sockets: what was sent (credentials redacted) and
//! what came back, kept for the attempts `dispatch.attempt_headers` names, and never a secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value as Json, json};
use support::sink::{Reply, Sink};
use support::{Gateway, RedisServer, eventually, unique_prefix};

const WAIT: Duration = Duration::from_secs(10);

async fn gateway(name: &str, keep: &str) -> Gateway {
    let extra = format!("[dispatch]\nrequest_timeout_ms = 1000\nretry_poll_ms = 20\n{keep}");
    Gateway::start_with(&RedisServer::shared().url(), &unique_prefix(name), &extra).await
}

/// The event's view once every delivery of it has an attempt.
async fn attempted(gw: &Gateway, tenant: &str, event: &str, deliveries: usize) -> Json {
    let path = format!("/admin/tenants/{tenant}/events/{event}");
    eventually(WAIT, "every delivery attempted", || async {
        let view = gw.admin("GET", &path, None).await.json();
        view["attempts"]
            .as_array()
            .is_some_and(|a| a.len() == deliveries)
    })
    .await;
    gw.admin("GET", &path, None).await.json()
}

fn attempt_to<'a>(view: &'a Json, target: &str) -> &'a Json {
    view["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["target_id"] == target)
        .unwrap()
}

fn header<'a>(list: &'a Json, name: &str) -> Option<&'a str> {
    list.as_array()?
        .iter()
        .find(|h| h["name"] == name)
        .and_then(|h| h["value"].as_str())
}

#[tokio::test]
async fn a_failed_attempt_keeps_what_was_sent_and_received_with_credentials_redacted() {
    let gw = gateway("attempt-headers", "").await;
    let sink = Sink::start().await;
    // Every byte a receiver may put in a header value (HTTP allows tab, visible ASCII and
    // 0x80–0xFF; the rest cannot cross the wire).
    let mut odd: Vec<u8> = vec![b'a', b'\t'];
    odd.extend(0x20u8..=0x7E);
    odd.extend(0x80u8..=0xFF);
    sink.plan(
        "/refuses",
        vec![],
        Reply::Headers(
            503,
            vec![
                ("x-receiver-id", b"r-17".to_vec()),
                ("set-cookie", b"session=receiver-secret".to_vec()),
                ("x-odd", odd),
            ],
        ),
    );
    let (tenant, token) = gw.tenant("Headers Ltd").await;
    let refuses = gw
        .create_target(
            &tenant,
            json!({
                "url": sink.url("/refuses"), "events": ["*"], "mode": "once",
                "headers": {"x-team": "blue"},
                "auth": {"bearer": "bearer-secret-1"},
            }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let keyed = gw
        .create_target(
            &tenant,
            json!({
                "url": sink.url("/refuses"), "events": ["*"], "mode": "once",
                "auth": {"header": {"name": "X-Api-Key", "value": "key-secret-2"}},
            }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let delivers = gw
        .create_target(
            &tenant,
            json!({"url": sink.url("/ok"), "events": ["*"], "mode": "once"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = gw.post_ok(&token, "order.paid", br#"{"n":1}"#).await;
    let view = attempted(&gw, &tenant, &event, 3).await;
    let text = view.to_string();
    for secret in ["bearer-secret-1", "key-secret-2", "receiver-secret"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }

    let failed = attempt_to(&view, &refuses);
    let sent = &failed["request_headers"];
    assert_eq!(header(sent, "webhook-id"), Some(event.as_str()), "{sent}");
    assert_eq!(header(sent, "estafeta-event-type"), Some("order.paid"));
    assert_eq!(header(sent, "content-type"), Some("application/json"));
    assert_eq!(header(sent, "x-team"), Some("blue"));
    assert_eq!(header(sent, "authorization"), Some("[redacted]"));
    assert!(header(sent, "webhook-signature").is_some_and(|s| s.starts_with("v1,")));
    // The receiver got the very signature the attempt shows.
    let got = sink.received("/refuses");
    let signed: Vec<String> = got
        .iter()
        .filter_map(|r| r.header("webhook-signature"))
        .collect();
    assert!(
        signed
            .iter()
            .any(|s| Some(s.as_str()) == header(sent, "webhook-signature"))
    );
    let received = &failed["response_headers"];
    assert_eq!(
        header(received, "x-receiver-id"),
        Some("r-17"),
        "{received}"
    );
    assert_eq!(header(received, "set-cookie"), Some("[redacted]"));
    let odd = header(received, "x-odd").unwrap();
    assert!(
        odd.starts_with("a\t !\"#$%&'()*+,-./0123456789:;<=>?@ABC"),
        "{odd:?}"
    );
    assert!(odd.contains('\u{FFFD}') && !odd.contains('\0'), "{odd:?}");

    let own = &attempt_to(&view, &keyed)["request_headers"];
    assert_eq!(header(own, "x-api-key"), Some("[redacted]"), "{own}");

    // A delivered attempt keeps none by default: its record stays as small as before.
    let ok = attempt_to(&view, &delivers);
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["request_headers"], Json::Null);
    assert_eq!(ok["response_headers"], Json::Null);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn the_setting_chooses_which_attempts_keep_their_headers() {
    let sink = Sink::start().await;
    sink.plan("/no", vec![], Reply::Status(500));
    for (keep, ok_kept, failed_kept) in [
        ("attempt_headers = \"all\"", true, true),
        ("attempt_headers = \"none\"", false, false),
    ] {
        let gw = gateway("attempt-headers-setting", keep).await;
        let (tenant, token) = gw.tenant("Setting Ltd").await;
        let mut ids = Vec::new();
        for path in ["/ok", "/no"] {
            let t = gw
                .create_target(
                    &tenant,
                    json!({"url": sink.url(path), "events": ["*"], "mode": "once"}),
                )
                .await;
            ids.push(t["id"].as_str().unwrap().to_owned());
        }
        let event = gw.post_ok(&token, "x.y", b"{}").await;
        let view = attempted(&gw, &tenant, &event, 2).await;
        for (id, kept) in [(&ids[0], ok_kept), (&ids[1], failed_kept)] {
            let a = attempt_to(&view, id);
            assert_eq!(a["request_headers"].is_array(), kept, "{keep}: {a}");
            assert_eq!(a["response_headers"].is_array(), kept, "{keep}: {a}");
        }
        gw.stop().await.unwrap();
    }
}
