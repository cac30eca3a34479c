//! Monitors' status maps: a jq program turns what a platform pushes (Alertmanager, Grafana,
//! GitHub Actions) into a status, with the README's own programs and the platforms' real
//! payload shapes.

use super::*;
use support::http::{Request, Response};

const ALERTMANAGER: &str = include_str!("../../docs/status_maps/alertmanager.jq");
const GRAFANA: &str = include_str!("../../docs/status_maps/grafana.jq");
const GITHUB: &str = include_str!("../../docs/status_maps/github_actions.jq");

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/status_maps")
        .join(name);
    std::fs::read(path).unwrap()
}

async fn push(gw: &Gateway, token: &str, body: Vec<u8>) -> Response {
    Request::new("POST", &format!("/v1/monitors/{token}"))
        .header("content-type", "application/json")
        .body(body)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap()
}

async fn monitor(gw: &Gateway, tenant: &str, name: &str, program: &str) -> (String, String) {
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/monitors"),
            Some(json!({"name": name, "status_map": program})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn the_readme_shows_the_programs_the_tests_run() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    for program in [ALERTMANAGER, GRAFANA, GITHUB] {
        assert!(readme.contains(program.trim()), "README lacks:\n{program}");
    }
}

#[tokio::test]
async fn alertmanager_grafana_and_github_drive_monitors_through_their_status_maps() {
    let gw = gateway("status-maps").await;
    let sink = Sink::start().await;
    let (tenant, _) = gw.tenant("acme").await;
    gw.create_target(
        &tenant,
        json!({"url": sink.url("/alerts"), "events": ["monitor.*"]}),
    )
    .await;
    let status = |id: String| {
        let gw = &gw;
        let tenant = tenant.clone();
        async move {
            gw.admin(
                "GET",
                &format!("/admin/tenants/{tenant}/monitors/{id}"),
                None,
            )
            .await
            .json()["status"]
                .clone()
        }
    };

    let (am, am_token) = monitor(&gw, &tenant, "prometheus", ALERTMANAGER).await;
    let r = push(&gw, &am_token, fixture("alertmanager_firing.json")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["monitor"]["status"],
        json!("down"),
        "a critical alert fires"
    );
    let r = push(&gw, &am_token, fixture("alertmanager_warning.json")).await;
    assert_eq!(
        r.json()["monitor"]["status"],
        json!("degraded"),
        "{}",
        r.text()
    );
    let r = push(&gw, &am_token, fixture("alertmanager_resolved.json")).await;
    assert_eq!(r.json()["monitor"]["status"], json!("up"));
    assert_eq!(status(am.clone()).await, json!("up"));
    let checks = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{tenant}/monitors/{am}/checks"),
            None,
        )
        .await
        .json();
    let text = checks.to_string();
    assert!(
        text.contains("p99 latency above 2s on api-1"),
        "the summary is the message: {text}"
    );

    let (gr, gr_token) = monitor(&gw, &tenant, "grafana", GRAFANA).await;
    let r = push(&gw, &gr_token, fixture("grafana_firing.json")).await;
    assert_eq!(r.json()["monitor"]["status"], json!("down"), "{}", r.text());
    let r = push(&gw, &gr_token, fixture("grafana_resolved.json")).await;
    assert_eq!(r.json()["monitor"]["status"], json!("up"));
    assert_eq!(status(gr).await, json!("up"));

    let (gh, gh_token) = monitor(&gw, &tenant, "ci", GITHUB).await;
    let r = push(&gw, &gh_token, fixture("github_failure.json")).await;
    assert_eq!(r.json()["monitor"]["status"], json!("down"), "{}", r.text());
    let r = push(&gw, &gh_token, fixture("github_requested.json")).await;
    assert_eq!(
        r.status,
        202,
        "a run that starts changes nothing: {}",
        r.text()
    );
    assert_eq!(r.json()["ignored"], json!(true));
    assert_eq!(status(gh.clone()).await, json!("down"));
    let r = push(&gw, &gh_token, fixture("github_success.json")).await;
    assert_eq!(r.json()["monitor"]["status"], json!("up"));

    gw.settled().await;
    let alerts: Vec<Json> = sink
        .received("/alerts")
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let gh_down = alerts
        .iter()
        .find(|a| a.to_string().contains("CI #41 on main: failure"))
        .unwrap_or_else(|| panic!("the failure's alert names the run: {alerts:?}"));
    assert!(gh_down.to_string().contains("down"));
}

#[tokio::test]
async fn status_maps_are_checked_and_their_failures_answered() {
    let gw = gateway("status-map-bad").await;
    let (tenant, _) = gw.tenant("acme").await;
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/monitors"),
            Some(json!({"name": "x", "status_map": "{status: ."})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("status_map does not compile"));
    let (id, token) = monitor(&gw, &tenant, "mapped", "{status: .state, message: .why}").await;
    let r = push(
        &gw,
        &token,
        br#"{"state": "down", "why": "db gone"}"#.to_vec(),
    )
    .await;
    assert_eq!(r.json()["monitor"]["status"], json!("down"), "{}", r.text());
    for (body, status, code) in [
        (&br#"{"state": "sideways"}"#[..], 422, "status_map_failed"),
        (b"not json", 400, "invalid_status"),
        (br#"{"state": "up", "state": "down"}"#, 400, "duplicate_key"),
    ] {
        let r = push(&gw, &token, body.to_vec()).await;
        assert_eq!(r.status, status, "{}", r.text());
        assert!(r.is_error(code), "{}", r.text());
    }
    // Patched away, the plain status push works again.
    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}/monitors/{id}"),
            Some(json!({"status_map": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status_map"], Json::Null);
    let r = push(&gw, &token, br#"{"status": "up"}"#.to_vec()).await;
    assert_eq!(r.json()["monitor"]["status"], json!("up"), "{}", r.text());
}
