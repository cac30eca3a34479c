//! The OpenAPI description against the routers that serve it: every documented operation is
//! routed on its listener (it reaches a handler, never the router's own 404 or 405), and every
//! other method of a documented path is refused with the contract's 405 and an `Allow` header
//! naming exactly the documented methods.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::Value as Json;
use support::http::{Request, Response};
use support::{ADMIN_TOKEN, Gateway};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A value for a path parameter: well-formed, naming nothing that exists.
fn sample(param: &str) -> &'static str {
    match param {
        "signal" => "0",
        "event" => "order.paid",
        _ => "x1",
    }
}

fn fill(template: &str) -> String {
    template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(param) => sample(param),
                None => segment,
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The listeners a path is served on, with the token its callers present.
fn served_on<'a>(gw: &Gateway, path: &str, tenant_token: &'a str) -> Vec<(SocketAddr, &'a str)> {
    if path == "/healthz" || path == "/readyz" {
        vec![
            (gw.addrs.admin, ADMIN_TOKEN),
            (gw.addrs.plain, tenant_token),
        ]
    } else if path.starts_with("/v1/") {
        vec![(gw.addrs.plain, tenant_token)]
    } else {
        vec![(gw.addrs.admin, ADMIN_TOKEN)]
    }
}

async fn send(addr: SocketAddr, method: &str, path: &str, token: &str) -> Response {
    Request::new(method, path)
        .bearer(token)
        .header("content-type", "application/json")
        .body(b"{}".to_vec())
        .send_plain(addr)
        .await
        .unwrap()
}

/// Whether the answer came from the router itself rather than a handler.
fn from_router(r: &Response) -> bool {
    r.status == 405 || (r.status == 404 && r.json()["error"]["message"] == "no such route")
}

#[tokio::test]
async fn the_document_and_the_routers_describe_the_same_routes() {
    let gw = Gateway::start("openapi-walk").await;
    let (_, tenant_token) = gw.tenant("walker").await;
    let doc: Json = Request::get("/openapi.json")
        .send_plain(gw.addrs.admin)
        .await
        .unwrap()
        .json();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 40, "{} paths", paths.len());
    let mut operations = 0;
    for (template, item) in paths {
        let documented: BTreeSet<String> = METHODS
            .iter()
            .filter(|m| item.get(m.to_lowercase()).is_some())
            .map(|m| m.to_string())
            .collect();
        assert!(!documented.is_empty(), "{template} has no operation");
        let path = fill(template);
        for (addr, token) in served_on(&gw, template, &tenant_token) {
            for method in METHODS {
                let r = send(addr, method, &path, token).await;
                if documented.contains(method) {
                    operations += 1;
                    assert!(
                        !from_router(&r),
                        "{method} {template} is documented but not routed on {addr}: {} {}",
                        r.status,
                        r.text()
                    );
                    continue;
                }
                assert_eq!(
                    r.status,
                    405,
                    "{method} {template} is not documented: {}",
                    r.text()
                );
                assert!(r.is_error("method_not_allowed"), "{}", r.text());
                let allow: BTreeSet<String> = r
                    .header("allow")
                    .unwrap_or_default()
                    .split(',')
                    .map(|m| m.trim().to_owned())
                    .filter(|m| !m.is_empty() && m != "HEAD")
                    .collect();
                assert_eq!(allow, documented, "Allow of {method} {template}");
            }
        }
    }
    assert!(operations > 70, "{operations} operations walked");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_path_is_the_contracts_404_on_both_listeners() {
    let gw = Gateway::start("openapi-unknown").await;
    for addr in [gw.addrs.plain, gw.addrs.admin] {
        for path in ["/nope", "/v1/nope", "/admin/nope", "/v1/targets/x/y/z"] {
            let r = send(addr, "GET", path, ADMIN_TOKEN).await;
            assert_eq!(r.status, 404, "{path}: {}", r.text());
            assert!(r.is_error("not_found"), "{}", r.text());
        }
    }
    // Under the console and the portal, a person followed a link: their own 404 page, styled,
    // with a way home, and the faces' strict headers; `/consoles` is not under the console.
    for (addr, root) in [(gw.addrs.admin, "/console"), (gw.addrs.plain, "/portal")] {
        for path in [
            format!("{root}/nope"),
            format!("{root}/tenants/ten_x/nope/deeper"),
        ] {
            let r = send(addr, "GET", &path, "").await;
            assert_eq!(r.status, 404, "{path}");
            let ct = r.header("content-type").unwrap_or_default();
            assert!(ct.starts_with("text/html"), "{path}: {ct}");
            let text = r.text();
            assert!(text.contains("There is no such page."), "{path}: {text}");
            assert!(
                text.contains(&format!("href=\"{root}\"")),
                "{path}: a way home"
            );
            assert!(
                text.contains(&format!("{root}/assets/app.css")),
                "{path}: styled"
            );
            assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
            assert!(
                r.header("content-security-policy")
                    .is_some_and(|c| c.contains("default-src 'none'"))
            );
        }
    }
    let r = send(gw.addrs.admin, "GET", "/consoles", ADMIN_TOKEN).await;
    assert!(r.is_error("not_found"), "{}", r.text());
    gw.stop().await.unwrap();
}
