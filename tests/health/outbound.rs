//! Outbound TLS and credentials, on real sockets: an HTTPS sink whose CA is made here (rcgen)
//! is trusted only by the targets that carry that CA; an mTLS sink refuses a client without
//! the certificate it asks for and takes the one that presents it; a server name checks a
//! certificate that names another host than the URL's. OAuth2 client credentials against a
//! local token server: one token for many deliveries, a new one after a 401, an endpoint that
//! refuses makes the delivery fail with `oauth2_token: …` and retry. Keys and secrets never
//! appear in views or in Redis.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value as Json, json};

use crate::support::sink::{Reply, Sink};
use crate::support::{Gateway, RedisServer, eventually, unique_prefix};

const ONCE: &str = r#"
[dispatch]
request_timeout_ms = 2000
retry_poll_ms = 20
retry = { initial_delay_ms = 20, multiplier = 1.0, max_delay_ms = 20, max_attempts = 2 }
"#;

const WAIT: Duration = Duration::from_secs(15);

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` signed by this CA, and its key.
    fn issue(&self, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        (params.signed_by(&key, &self.cert, &self.key).unwrap(), key)
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn der_key(key: &rcgen::KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// A TLS server presenting a certificate for `names` from `ca`; with `clients`, it asks for
/// a client certificate from that CA and refuses a client without one.
fn server(ca: &Ca, names: &[&str], clients: Option<&Ca>) -> rustls::ServerConfig {
    let (cert, key) = ca.issue(names);
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(c) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(c.roots()),
                provider(),
            )
            .build()
            .unwrap(),
        ),
    };
    builder
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            der_key(&key),
        )
        .unwrap()
}

fn id_of(v: &Json) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// The one delivery of `event` once it is final (delivered or dead-lettered).
async fn settled(gw: &Gateway, token: &str, event: &str) -> Json {
    let read = || async {
        let r = gw.get_as(token, &format!("/v1/events/{event}")).await;
        r.json()["deliveries"][0].clone()
    };
    eventually(WAIT, "the delivery settles", || async {
        let d = read().await;
        d["state"] == "succeeded" || d["state"] == "dead_lettered"
    })
    .await;
    read().await
}

#[tokio::test]
async fn https_targets_trust_their_own_ca_present_their_certificate_and_check_a_named_server() {
    let gw = Gateway::start_with(&RedisServer::shared().url(), &unique_prefix("tls"), ONCE).await;
    let ca = Ca::new("Estafeta test CA");
    let client_ca = Ca::new("Estafeta test client CA");
    let plain_tls = Sink::start_tls(server(&ca, &["127.0.0.1"], None)).await;
    let mtls = Sink::start_tls(server(&ca, &["127.0.0.1"], Some(&client_ca))).await;
    let renamed = Sink::start_tls(server(&ca, &["receiver.internal"], None)).await;
    let (client_cert, client_key) = client_ca.issue(&["estafeta.client"]);
    let (tenant, token) = gw.tenant("TLS Ltd").await;
    let target = |url: String, tls: Json| {
        let mut t = json!({"url": url, "events": ["order.*"], "mode": "once"});
        if !tls.is_null() {
            t["tls"] = tls;
        }
        t
    };
    let identity = json!({
        "ca_pem": ca.pem(),
        "client_cert_pem": client_cert.pem(),
        "client_key_pem": client_key.serialize_pem(),
    });

    // One event, five targets: each gets what its settings allow.
    let trusted = id_of(
        &gw.create_target(
            &tenant,
            target(plain_tls.url("/trusted"), json!({"ca_pem": ca.pem()})),
        )
        .await,
    );
    let untrusted = id_of(
        &gw.create_target(&tenant, target(plain_tls.url("/untrusted"), Json::Null))
            .await,
    );
    let with_identity = gw
        .create_target(&tenant, target(mtls.url("/mtls"), identity.clone()))
        .await;
    let anonymous = id_of(
        &gw.create_target(
            &tenant,
            target(mtls.url("/anonymous"), json!({"ca_pem": ca.pem()})),
        )
        .await,
    );
    let named = id_of(
        &gw.create_target(
            &tenant,
            target(
                renamed.url("/named"),
                json!({"ca_pem": ca.pem(), "server_name": "receiver.internal"}),
            ),
        )
        .await,
    );
    // Every byte a sender may send goes through TLS as it came.
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let event = gw.post_ok(&token, "order.paid", &every_byte).await;
    eventually(WAIT, "every target's delivery is final", || async {
        let r = gw.get_as(&token, &format!("/v1/events/{event}")).await;
        let d = r.json()["deliveries"].clone();
        d.as_array().is_some_and(|d| {
            d.len() == 5
                && d.iter()
                    .all(|d| d["state"] == "succeeded" || d["state"] == "dead_lettered")
        })
    })
    .await;
    let r = gw.get_as(&token, &format!("/v1/events/{event}")).await;
    let deliveries = r.json()["deliveries"].clone();
    let of = |id: &str| {
        deliveries
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["target_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(of(&trusted)["state"], "succeeded", "{deliveries}");
    assert_eq!(of(&id_of(&with_identity))["state"], "succeeded");
    assert_eq!(of(&named)["state"], "succeeded");
    // Without the CA, the web's roots do not know the test CA.
    let u = of(&untrusted);
    assert_eq!(u["state"], "dead_lettered", "{u}");
    assert!(
        u["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("certificate")),
        "{u}"
    );
    // Without the client certificate, the mTLS sink refuses the handshake.
    assert_eq!(of(&anonymous)["state"], "dead_lettered");
    assert!(mtls.refused_handshakes() >= 1);
    assert_eq!(mtls.count("/anonymous"), 0);
    assert_eq!(mtls.count("/mtls"), 1);
    assert_eq!(renamed.count("/named"), 1);
    assert_eq!(
        mtls.received("/mtls")[0].body.as_ref(),
        every_byte.as_slice()
    );
    assert_eq!(
        renamed.received("/named")[0].body.as_ref(),
        every_byte.as_slice()
    );

    // The test route goes through the same TLS.
    let tested = gw
        .admin(
            "POST",
            &format!(
                "/admin/tenants/{tenant}/targets/{}/test",
                id_of(&with_identity)
            ),
            None,
        )
        .await;
    assert_eq!(tested.status, 200, "{}", tested.text());
    assert_eq!(tested.json()["delivered"], true, "{}", tested.text());
    assert_eq!(mtls.count("/mtls"), 2);

    // The view shows the certificates, never the key; Redis holds the settings sealed.
    let view = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{tenant}/targets/{}", id_of(&with_identity)),
            None,
        )
        .await
        .json();
    assert_eq!(view["tls"]["client_key_pem"], "***", "{view}");
    assert_eq!(view["tls"]["ca_pem"], ca.pem().as_str());
    assert!(!view.to_string().contains("PRIVATE KEY"));
    assert!(!with_identity.to_string().contains("PRIVATE KEY"));
    let redis = RedisServer::shared().client().await;
    let key = format!("{}:{{m}}:target:{}", gw.prefix, id_of(&with_identity));
    let fields: std::collections::HashMap<String, String> = redis.hgetall(&key).await.unwrap();
    assert!(
        fields.get("doc").is_some_and(|d| d.contains("\"tls\"")),
        "{key}: {fields:?}"
    );
    for v in fields.values() {
        assert!(!v.contains("PRIVATE KEY"), "{key} holds a key in the clear");
        assert!(
            !v.contains("BEGIN CERTIFICATE"),
            "{key}: the settings are sealed whole"
        );
    }

    // Removing the settings: the web's roots again, and the delivery fails.
    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}/targets/{trusted}"),
            Some(json!({"tls": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tls"], Json::Null);
    let again = gw.post_ok(&token, "order.paid", b"{\"n\":2}").await;
    eventually(WAIT, "the target without its CA fails", || async {
        let r = gw.get_as(&token, &format!("/v1/events/{again}")).await;
        r.json()["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["target_id"] == trusted.as_str() && d["state"] == "dead_lettered")
    })
    .await;
}

#[tokio::test]
async fn bad_tls_settings_are_refused_naming_the_field_and_nothing_is_stored() {
    let gw = Gateway::start_with(
        &RedisServer::shared().url(),
        &unique_prefix("tls-bad"),
        ONCE,
    )
    .await;
    let ca = Ca::new("CA");
    let (cert, _) = ca.issue(&["client"]);
    let (_, other_key) = ca.issue(&["other"]);
    let (tenant, _) = gw.tenant("Careless").await;
    let path = format!("/admin/tenants/{tenant}/targets");
    for (tls, url, field) in [
        (
            json!({"ca_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}),
            "https://example.com/",
            "tls: ca_pem",
        ),
        (
            json!({"ca_pem": "no PEM here"}),
            "https://example.com/",
            "tls: ca_pem",
        ),
        (
            json!({"client_cert_pem": cert.pem(), "client_key_pem": other_key.serialize_pem()}),
            "https://example.com/",
            "tls: client_key_pem",
        ),
        (
            json!({"client_cert_pem": cert.pem()}),
            "https://example.com/",
            "tls: client_key_pem",
        ),
        (
            json!({"server_name": "-- nope --"}),
            "https://example.com/",
            "tls: server_name",
        ),
        (json!({"ca_pem": ca.pem()}), "http://example.com/", "tls"),
        (json!([null, null]), "https://example.com/", "tls"),
    ] {
        let r = gw
            .admin(
                "POST",
                &path,
                Some(json!({"url": url, "events": ["*"], "tls": tls})),
            )
            .await;
        assert_eq!(r.status, 400, "{tls}: {}", r.text());
        assert!(r.is_error("invalid_target"), "{}", r.text());
        assert!(r.text().contains(field), "{field}: {}", r.text());
    }
    // A PATCH is checked against the target as it would become.
    let t = id_of(
        &gw.create_target(
            &tenant,
            json!({"url": "https://example.com/", "events": ["*"], "tls": {"ca_pem": ca.pem()}}),
        )
        .await,
    );
    let r = gw
        .admin(
            "PATCH",
            &format!("{path}/{t}"),
            Some(json!({"url": "http://example.com/"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("tls"), "{}", r.text());
    let listed = gw.admin("GET", &path, None).await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["url"], "https://example.com/");
}

#[tokio::test]
async fn oauth2_tokens_are_shared_replaced_after_a_401_and_a_refusing_endpoint_fails_the_attempt() {
    let gw =
        Gateway::start_with(&RedisServer::shared().url(), &unique_prefix("oauth2"), ONCE).await;
    let auth = Sink::start().await;
    let receiver = Sink::start().await;
    let token_answer = |token: &str, expires_in: u64| {
        Reply::Body(
            200,
            bytes::Bytes::from(
                json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in})
                    .to_string(),
            ),
        )
    };
    auth.plan(
        "/token",
        vec![token_answer("tok-1", 3600), token_answer("tok-2", 3600)],
        Reply::Status(500),
    );
    let (tenant, token) = gw.tenant("OAuth Ltd").await;
    let target = gw
        .create_target(
            &tenant,
            json!({"url": receiver.url("/hook"), "events": ["order.*"],
                "auth": {"oauth2": {"token_url": auth.url("/token"), "client_id": "estafeta client",
                    "client_secret": "s3cr:et", "scope": "webhooks:write", "audience": "https://api.example"}}}),
        )
        .await;
    assert_eq!(target["auth"]["oauth2"]["client_secret"], "***", "{target}");
    assert_eq!(
        target["auth"]["oauth2"]["method"], "client_secret_basic",
        "{target}"
    );

    // Five deliveries, one token; the first carries every byte a sender may send.
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let mut events = vec![gw.post_ok(&token, "order.paid", &every_byte).await];
    for n in 1..5 {
        events.push(
            gw.post_ok(&token, "order.paid", format!("{{\"n\":{n}}}").as_bytes())
                .await,
        );
    }
    for e in &events {
        assert_eq!(settled(&gw, &token, e).await["state"], "succeeded");
    }
    assert!(
        receiver
            .received("/hook")
            .iter()
            .any(|r| r.body.as_ref() == every_byte.as_slice()),
        "the body arrives as it was sent"
    );
    assert_eq!(auth.count("/token"), 1);
    let asked = &auth.received("/token")[0];
    let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&asked.body)
        .into_owned()
        .collect();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "webhooks:write");
    assert_eq!(form["audience"], "https://api.example");
    assert!(
        !form.contains_key("client_secret"),
        "basic keeps it out of the form"
    );
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("estafeta+client:s3cr%3Aet");
    assert_eq!(
        asked.header("authorization").as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    assert!(
        receiver
            .received("/hook")
            .iter()
            .all(|r| r.header("authorization").as_deref() == Some("Bearer tok-1"))
    );

    // The receiver refuses the cached token once: a new one is fetched and the same attempt
    // is sent again with it.
    receiver.plan("/hook", vec![Reply::Status(401)], Reply::Status(200));
    let refused = gw.post_ok(&token, "order.paid", b"{\"n\":5}").await;
    let d = settled(&gw, &token, &refused).await;
    assert_eq!(d["state"], "succeeded", "{d}");
    assert_eq!(d["attempts"], 1, "{d}");
    assert_eq!(auth.count("/token"), 2);
    let last: Vec<String> = receiver
        .received("/hook")
        .iter()
        .rev()
        .take(2)
        .map(|r| r.header("authorization").unwrap_or_default())
        .collect();
    assert_eq!(last, ["Bearer tok-2", "Bearer tok-1"]);

    // A token endpoint that refuses (client_secret_post, another client): each attempt fails
    // with the endpoint's words and is retried, then dead-lettered.
    auth.plan(
        "/token-bad",
        vec![],
        Reply::Body(
            400,
            bytes::Bytes::from_static(
                br#"{"error":"invalid_client","error_description":"unknown client"}"#,
            ),
        ),
    );
    let bad = gw
        .create_target(
            &tenant,
            json!({"url": receiver.url("/bad"), "events": ["invoice.*"],
                "auth": {"oauth2": {"token_url": auth.url("/token-bad"), "client_id": "c2",
                    "client_secret": "x", "method": "client_secret_post"}}}),
        )
        .await;
    assert_eq!(bad["auth"]["oauth2"]["client_secret"], "***");
    let failing = gw.post_ok(&token, "invoice.sent", b"{}").await;
    let d = settled(&gw, &token, &failing).await;
    assert_eq!(d["state"], "dead_lettered", "{d}");
    assert_eq!(d["attempts"], 2, "{d}");
    assert_eq!(
        d["last_error"],
        "oauth2_token: the token endpoint answered 400: invalid_client (unknown client)"
    );
    assert_eq!(receiver.count("/bad"), 0);
    let asked = &auth.received("/token-bad")[0];
    let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&asked.body)
        .into_owned()
        .collect();
    assert_eq!(
        (form["client_id"].as_str(), form["client_secret"].as_str()),
        ("c2", "x")
    );
    assert_eq!(asked.header("authorization"), None);

    // A token that expires at once is not kept: each delivery fetches its own.
    auth.plan("/token-short", vec![], token_answer("short", 0));
    gw.create_target(
        &tenant,
        json!({"url": receiver.url("/short"), "events": ["short.*"],
            "auth": {"oauth2": {"token_url": auth.url("/token-short"), "client_id": "c3", "client_secret": "y"}}}),
    )
    .await;
    for n in 0..3 {
        let e = gw
            .post_ok(&token, "short.lived", format!("{{\"n\":{n}}}").as_bytes())
            .await;
        assert_eq!(settled(&gw, &token, &e).await["state"], "succeeded");
    }
    assert_eq!(auth.count("/token-short"), 3);
    let metrics = gw
        .metrics_showing("estafeta_oauth2_token_fetches_total{outcome=\"failed\"}")
        .await;
    assert!(
        metrics.contains("estafeta_oauth2_token_fetches_total{outcome=\"ok\"}"),
        "{metrics}"
    );
}
