//! The console and the portal in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, which `.ci/run` installs), against gateways
//! started here, with real HTTP sinks as targets. Screenshots of the main pages are saved
//! under `target/screenshots/` for review.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::http::{Alpn, Request};
use support::sink::{Reply, Sink};
use support::{ADMIN_TOKEN, Gateway, RedisServer, eventually, free_port, unique_prefix};

/// Long enough for a delivery, a retry or a board refresh (every 5 s) on a busy machine.
const WAIT: Duration = Duration::from_secs(30);

/// Fast checks and retries, so the flows take seconds.
const EXTRA: &str = r#"
[monitors]
check_every_ms = 200

[dispatch]
retry = { initial_delay_ms = 100, multiplier = 1.0, max_delay_ms = 100, max_attempts = 2 }
"#;

/// A chromedriver and a headless Chromium session; both end on drop.
struct Browser {
    client: Client,
    driver: Child,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        // A process group of its own, so its Chromium processes end with it (killing
        // chromedriver alone leaves them running, and they weigh on whatever runs next).
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect(
                "chromedriver not found: install Debian's chromium and chromium-driver \
                 (.ci/run does)",
            );
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }
        }))
        .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            // WebDriver on loopback is plain HTTP: no TLS stack for it.
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => return Browser { client, driver },
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot start a Chromium session: {last:?}");
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn css(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    /// The text of `css`; found again when the page replaced it meanwhile (a reload, or a
    /// self-updating part swapped in).
    async fn text(&self, css: &str) -> String {
        let mut last = None;
        for _ in 0..20 {
            match self.css(css).await.text().await {
                Ok(t) => return t,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot read {css}: {last:?}");
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.css(css).await;
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.css(css).await.click().await.unwrap();
    }

    /// The page's whole text.
    async fn body(&self) -> String {
        self.text("body").await
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Waits until `ok` holds, checking every `every`; fails naming `what` (with the page).
    async fn until<F, Fut>(&self, what: &str, every: Duration, mut ok: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !ok().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} never happened: at {}\n{}",
                self.path().await,
                self.body().await
            );
            tokio::time::sleep(every).await;
        }
    }

    /// Waits until the browser is at `path` (after a click that navigates).
    async fn expect_path(&self, path: &str) {
        let what = format!("reaching {path}");
        self.until(&what, Duration::from_millis(100), || async {
            self.path().await == path
        })
        .await;
    }

    /// Waits until the page's text holds `needle`, reloading every half second (pages that
    /// update themselves are checked without reloads by [`Browser::wait_live`]).
    async fn wait_text(&self, needle: &str) {
        let what = format!("showing {needle:?} (reloading)");
        self.until(&what, Duration::from_millis(500), || async {
            if self.body().await.contains(needle) {
                return true;
            }
            self.client.refresh().await.unwrap();
            false
        })
        .await;
    }

    /// Waits, without reloading, until the page's text holds `needle` (the page a click
    /// navigated to may still be loading).
    async fn expect_text(&self, needle: &str) {
        let what = format!("showing {needle:?}");
        self.until(&what, Duration::from_millis(100), || async {
            self.body().await.contains(needle)
        })
        .await;
    }

    /// Waits, without reloading, until `css` matches: the page must update itself.
    async fn wait_live(&self, css: &str) {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("the page did not update itself to show {css}: {e}"));
    }

    /// Whether any script of a test's payload ran (they all set `window.__xss`).
    async fn script_ran(&self) -> bool {
        self.client
            .execute("return window.__xss === 1;", vec![])
            .await
            .unwrap()
            == json!(true)
    }

    /// Saves a screenshot as `target/screenshots/<name>.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Whether the page fits `width` without sideways scrolling.
    async fn fits_width(&self) -> bool {
        let v = self
            .client
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await
            .unwrap();
        v == json!(true)
    }

    async fn sign_in(&self, gw: &Gateway) {
        self.goto(&format!("http://{}/console", gw.addrs.admin))
            .await;
        self.fill("#token", ADMIN_TOKEN).await;
        self.click("#sign-in").await;
        // Signed in, the console opens on its home page.
        self.css("#summary").await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A gateway on the shared Redis with the fast settings plus `extra`.
async fn gateway(name: &str, extra: &str) -> Gateway {
    Gateway::start_with(&RedisServer::shared().url(), &unique_prefix(name), extra).await
}

fn console(gw: &Gateway, path: &str) -> String {
    format!("http://{}/console{path}", gw.addrs.admin)
}

fn portal(gw: &Gateway, path: &str) -> String {
    format!("http://{}/portal{path}", gw.addrs.plain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_a_tenant_from_the_console() {
    let gw = gateway("browser_op", EXTRA).await;
    let sink = Sink::start().await;
    let b = Browser::start().await;

    // Signed out, the console sends people to its sign-in page; a wrong token is refused.
    b.goto(&console(&gw, "/tenants")).await;
    assert_eq!(b.path().await, "/console/login");
    b.fill("#token", "not-the-admin-token-0123456789").await;
    b.click("#sign-in").await;
    b.expect_text("not the admin token").await;
    b.sign_in(&gw).await;
    b.goto(&console(&gw, "/tenants")).await;

    // A tenant, and its token shown once.
    b.fill("#new-tenant input[name=name]", "acme").await;
    b.fill("#new-tenant input[name=external_id]", "cust-42")
        .await;
    b.click("#new-tenant button[type=submit]").await;
    let token = b.text("#new-token").await;
    assert!(token.starts_with("est_"), "{token}");
    assert!(
        b.body().await.contains("keyed hash is kept"),
        "a token is hashed"
    );
    b.click("#to-tenant").await;
    b.css("#stats").await;
    let tenant_path = b.path().await;
    b.expect_text("acme").await;
    // The token works, and the overview never shows it again.
    assert!(!b.client.source().await.unwrap().contains(&token));

    // Search finds it by external id and not by nonsense.
    b.goto(&console(&gw, "/tenants?q=CUST-4")).await;
    assert!(b.text("#tenants").await.contains("acme"));
    b.goto(&console(&gw, "/tenants?q=zzz-nothing")).await;
    assert!(!b.text("#tenants").await.contains("acme"));

    // A target that fails once-mode deliveries first, pointing at a real sink.
    sink.plan("/hook", vec![], Reply::Status(500));
    b.goto(&format!(
        "http://{}{tenant_path}/targets/new",
        gw.addrs.admin
    ))
    .await;
    b.fill("#target-form input[name=url]", &sink.url("/hook"))
        .await;
    b.fill("#target-form input[name=events]", "order.*").await;
    b.css("#target-form select[name=mode]")
        .await
        .select_by_value("once")
        .await
        .unwrap();
    b.fill("#target-form textarea[name=headers]", "X-Team: payments")
        .await;
    b.click("#target-form button[type=submit]").await;
    let secret = b.text("#target-secret").await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    // A signing secret is sealed, not hashed: the page says what is true.
    let page = b.body().await;
    assert!(
        page.contains("kept sealed") && !page.contains("keyed hash"),
        "{page}"
    );

    // An event, sent with plain HTTP; its delivery fails and lands in the error queue.
    let r = Request::new("POST", "/v1/events/order.paid")
        .bearer(&token)
        .header("content-type", "application/json")
        .body(r#"{"order":42,"note":"first"}"#)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let event_id = r.json()["id"].as_str().unwrap().to_owned();
    b.goto(&format!(
        "http://{}{tenant_path}/dead-letters",
        gw.addrs.admin
    ))
    .await;
    b.wait_text(&event_id).await;
    b.screenshot("error-queue").await;

    // The home page says what needs looking at: the failing target, with its tenant, linked;
    // the targets list marks it red.
    b.goto(&format!("http://{}/console", gw.addrs.admin)).await;
    let troubled = b.text("#troubled-targets").await;
    assert!(
        troubled.contains(&sink.url("/hook")) && troubled.contains("failing"),
        "{troubled}"
    );
    let queues = b.text("#error-queues").await;
    assert!(queues.contains("1"), "{queues}");
    b.screenshot("home").await;
    b.goto(&format!("http://{}{tenant_path}/targets", gw.addrs.admin))
        .await;
    let health = b.text("#targets td.health").await;
    assert!(
        health.contains("failing") && health.contains("500"),
        "{health}"
    );
    b.css("#targets td.health .badge.bad").await;
    // Find by id: the event's id goes to the event's page; an unknown one says so.
    b.goto(&format!("http://{}/console", gw.addrs.admin)).await;
    b.fill("form.search input[name=q]", &event_id).await;
    b.click("form.search button[type=submit]").await;
    b.expect_path(&format!("{tenant_path}/events/{event_id}"))
        .await;
    b.goto(&format!("http://{}/console", gw.addrs.admin)).await;
    b.fill("form.search input[name=q]", "evt_nothing_here")
        .await;
    b.click("form.search button[type=submit]").await;
    assert!(b.text("#find-missing").await.contains("evt_nothing_here"));

    // The event's page: pretty JSON body, the failed attempt with its status.
    b.goto(&format!(
        "http://{}{tenant_path}/events/{event_id}",
        gw.addrs.admin
    ))
    .await;
    let body = b.text("#event-body").await;
    assert!(body.contains("\"order\": 42"), "pretty JSON: {body}");
    assert!(b.text(".delivery").await.contains("dead lettered"));
    assert!(b.text(".attempts").await.contains("500"));

    // The target recovers; replaying from the error queue delivers the event.
    sink.plan("/hook", vec![], Reply::Status(200));
    b.goto(&format!(
        "http://{}{tenant_path}/dead-letters",
        gw.addrs.admin
    ))
    .await;
    b.click("#dead-letters input[name=ids]").await;
    b.click("#replay-selected").await;
    b.expect_text("Replayed").await;
    eventually(WAIT, "the replayed delivery", || async {
        sink.count("/hook") >= 2
    })
    .await;
    b.goto(&format!(
        "http://{}{tenant_path}/events/{event_id}",
        gw.addrs.admin
    ))
    .await;
    b.wait_text("succeeded").await;
    let attempts = b.text(".attempts").await;
    assert!(
        attempts.contains("200") && attempts.contains("500"),
        "{attempts}"
    );
    // The failed attempt keeps what was sent and what came back; the delivered one keeps none.
    assert_eq!(
        attempts.matches("Headers of attempt").count(),
        1,
        "{attempts}"
    );
    b.click("tr.headers summary").await;
    let headers = b.text("tr.headers").await;
    assert!(
        headers.contains(&format!("webhook-id: {event_id}")) && headers.contains("Received"),
        "{headers}"
    );
    b.screenshot("event").await;
    let received = sink.received("/hook");
    let last = received.last().unwrap();
    assert_eq!(last.header("x-team").as_deref(), Some("payments"));
    assert!(last.header("webhook-signature").is_some());

    // A second event shows up in the event list without a reload.
    b.goto(&format!("http://{}{tenant_path}/events", gw.addrs.admin))
        .await;
    b.css(&format!("a[href$='{event_id}']")).await;
    let second = gw
        .post_ok(&token, "order.shipped", br#"{"order":43}"#)
        .await;
    b.wait_live(&format!("#event-rows a[href$='{second}']"))
        .await;
    b.screenshot("events").await;
    // Filtered by a type pattern and a target chosen by its URL.
    b.css("#event-filters select[name=target_id]")
        .await
        .select_by_label(&sink.url("/hook"))
        .await
        .unwrap();
    b.fill("#event-filters input[name=event_type]", "order.*")
        .await;
    b.click("#event-filters button[type=submit]").await;
    b.css(&format!("#event-rows a[href$='{event_id}']")).await;
    b.css(&format!("#event-rows a[href$='{second}']")).await;

    // The target's health, and its failure and success counted on the overview.
    b.goto(&format!("http://{}{tenant_path}/targets", gw.addrs.admin))
        .await;
    b.click("#targets a").await;
    let health = b.text("#target-health").await;
    assert!(
        health.contains("Last status") && health.contains("attempts"),
        "{health}"
    );
    let target_page = b.path().await;
    // A test event, answered now; the settings readable, the retry policy and format edited.
    let before = sink.count("/hook");
    b.click("#send-test").await;
    let result = b.text("#test-result").await;
    assert!(
        result.contains("delivered") && result.contains("200"),
        "{result}"
    );
    assert_eq!(sink.count("/hook"), before + 1);
    b.goto(&format!("http://{}{target_page}", gw.addrs.admin))
        .await;
    b.fill("#target-form input[name=retry_max_attempts]", "4")
        .await;
    b.fill("#target-form input[name=retry_initial_delay_ms]", "250")
        .await;
    b.click("#target-form button[type=submit]").await;
    b.expect_text("Saved.").await;
    let details = b.text("#target-details").await;
    assert!(
        details.contains("4 attempts in all") && details.contains("250 ms"),
        "{details}"
    );
    assert!(!details.contains('{'), "no JSON in the details: {details}");
    assert!(
        details.contains("none: every subscribed event"),
        "{details}"
    );
    // A payload filter: refused with its path when it does not compile, shown once saved.
    b.fill(
        "#target-form textarea[name=filter]",
        r#"{"body.order": {"$gte": "x", "$like": 1}}"#,
    )
    .await;
    b.click("#target-form button[type=submit]").await;
    b.expect_text("body.order.$like").await;
    b.goto(&format!("http://{}{target_page}", gw.addrs.admin))
        .await;
    b.fill(
        "#target-form textarea[name=filter]",
        r#"{"body.order": {"$gte": 40}}"#,
    )
    .await;
    b.click("#target-form button[type=submit]").await;
    b.expect_text("Saved.").await;
    let filter = b.text("#target-filter").await;
    assert!(filter.contains("\"$gte\": 40"), "{filter}");
    b.goto(&format!("http://{}{tenant_path}", gw.addrs.admin))
        .await;
    let stats = b.text("#stats").await;
    assert!(stats.contains("Deliveries succeeded"), "{stats}");
    // The tenant's own overview lists its target in trouble: delivering again, but only half
    // of the last hour's attempts did.
    let troubled = b.text("#troubled-targets").await;
    assert!(
        troubled.contains(&sink.url("/hook")) && troubled.contains("degraded"),
        "{troubled}"
    );
    // The charts are drawn (uPlot, served from the binary, runs under the CSP).
    for chart in ["received", "outcomes", "latency"] {
        b.css(&format!("#tenant-{chart} canvas")).await;
    }
    b.screenshot("tenant").await;
    // A week's window reads the hourly rollups: a point per hour.
    b.goto(&format!("http://{}{tenant_path}?window=7d", gw.addrs.admin))
        .await;
    b.expect_text("The last 7 days, per hour (UTC)").await;
    b.css("#tenant-received canvas").await;

    // Disable (asked first, in the browser) and enable: the tenant's ingest follows.
    b.click("#toggle-tenant").await;
    let question = b.client.get_alert_text().await.unwrap();
    assert!(question.contains("Disable this tenant?"), "{question}");
    b.client.accept_alert().await.unwrap();
    b.expect_text("Disabled.").await;
    eventually(WAIT, "ingest refused for a disabled tenant", || async {
        gw.post_event(&token, "order.paid", b"{}").await.status == 403
    })
    .await;
    b.click("#toggle-tenant").await;
    b.expect_text("Enabled.").await;

    // The tenant list and the system page.
    b.goto(&console(&gw, "/tenants")).await;
    b.screenshot("tenants").await;
    b.goto(&console(&gw, "/system")).await;
    let system = b.text("#shards").await;
    assert!(
        system.contains("Consumers") || system.contains("Shard"),
        "{system}"
    );
    assert!(b.text("#durability").await.contains("Redis durability"));
    let config = b.text("#config").await;
    assert!(
        config.contains("[redacted]") && !config.contains(ADMIN_TOKEN),
        "secrets redacted"
    );
    b.screenshot("system").await;

    // At 360 px the pages still fit.
    b.client.set_window_size(360, 800).await.unwrap();
    for path in ["/tenants", "/system"] {
        b.goto(&console(&gw, path)).await;
        assert!(b.fits_width().await, "{path} scrolls sideways at 360 px");
    }
    b.goto(&format!(
        "http://{}{tenant_path}/events/{event_id}",
        gw.addrs.admin
    ))
    .await;
    assert!(
        b.fits_width().await,
        "the event page scrolls sideways at 360 px"
    );
    b.screenshot("event-360").await;
    b.client.set_window_size(1280, 1000).await.unwrap();

    // Signing out ends the session: the old cookie opens nothing.
    let cookie = b.client.get_named_cookie("estafeta_console").await.unwrap();
    b.goto(&console(&gw, "/tenants")).await;
    b.click("#sign-out").await;
    b.expect_path("/console/login").await;
    b.goto(&console(&gw, "/tenants")).await;
    assert_eq!(b.path().await, "/console/login");
    let r = Request::get("/console/tenants")
        .header("cookie", &format!("estafeta_console={}", cookie.value()))
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(r.status, 303, "the ended session still opens the console");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_that_misses_its_deadline_turns_red_on_the_board() {
    let gw = gateway("browser_mon", EXTRA).await;
    let (tenant, _) = gw.tenant("ops").await;
    let b = Browser::start().await;
    // With the keyboard alone: the token field has the focus, Enter signs in.
    b.goto(&console(&gw, "/login")).await;
    b.client
        .active_element()
        .await
        .unwrap()
        .send_keys(&format!("{ADMIN_TOKEN}\u{E007}"))
        .await
        .unwrap();
    b.css("#summary").await;

    // Created from the board's form: its URLs are shown once, with copy buttons.
    b.goto(&console(&gw, &format!("/tenants/{tenant}/monitors")))
        .await;
    b.fill("#new-monitor input[name=name]", "nightly backup")
        .await;
    b.fill("#new-monitor input[name=heartbeat_interval_s]", "2")
        .await;
    b.fill("#new-monitor input[name=grace_s]", "0").await;
    b.click("#new-monitor button[type=submit]").await;
    let heartbeat = b.text("#heartbeat-url").await;
    assert!(heartbeat.starts_with("/v1/monitors/") && heartbeat.ends_with("/heartbeat"));
    assert!(
        b.css("button[data-copy=heartbeat-url]")
            .await
            .is_displayed()
            .await
            .unwrap()
    );

    // One heartbeat: up. Then silence: the board turns it red by itself.
    let r = Request::new("POST", &heartbeat)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    b.goto(&console(&gw, &format!("/tenants/{tenant}/monitors")))
        .await;
    b.css(".tile[data-status=up]").await;
    b.wait_live(".tile.down[data-status=down]").await;
    b.screenshot("monitors").await;

    // Its page shows the open incident and the uptime strip.
    b.click(".tile.down").await;
    let incidents = b.text("#incidents").await;
    assert!(incidents.contains("open"), "{incidents}");
    assert!(b.css("#uptime span").await.is_displayed().await.unwrap());
    b.screenshot("monitor").await;

    // The home page lists it as down, linked to its page.
    b.goto(&console(&gw, "")).await;
    let unwell = b.text("#unwell").await;
    assert!(
        unwell.contains("nightly backup") && unwell.contains("down"),
        "{unwell}"
    );
    b.click("#unwell a[href*='/monitors/']").await;
    b.css("#incidents").await;
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_link_shows_one_tenant_and_refuses_the_others() {
    let gw = gateway("browser_portal", EXTRA).await;
    let sink = Sink::start().await;
    let (a, a_token) = gw.tenant("alpha").await;
    let (b_id, b_token) = gw.tenant("beta").await;
    gw.create_target(&a, json!({"url": sink.url("/a"), "events": ["*"]}))
        .await;
    let b_target = gw
        .create_target(&b_id, json!({"url": sink.url("/b"), "events": ["*"]}))
        .await;
    let b_target = b_target["id"].as_str().unwrap().to_owned();
    let a_event = gw
        .post_ok(&a_token, "user.created", br#"{"user":"a"}"#)
        .await;
    let b_event = gw
        .post_ok(&b_token, "user.created", br#"{"user":"b"}"#)
        .await;

    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{a}/portal-links"),
            Some(json!({"ttl_s": 600})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let link = r.json();
    // Absolute, under the edge's TLS listener (no web.public_url here).
    let origin = format!("https://{}", gw.addrs.tls);
    let url = link["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{origin}/portal/link/pl_")),
        "{url}"
    );
    let url = url[origin.len()..].to_owned();
    assert_eq!(link["single_use"], true);

    let br = Browser::start().await;
    br.goto(&portal(&gw, &url["/portal".len()..])).await;
    assert_eq!(br.path().await, "/portal");
    br.expect_text("alpha").await;
    br.screenshot("portal").await;
    // A's events and targets are there, and no operator page is.
    br.goto(&portal(&gw, "/events")).await;
    br.wait_text(&a_event).await;
    assert!(!br.body().await.contains(&b_event));
    assert!(!br.client.source().await.unwrap().contains("/console"));
    br.goto(&portal(&gw, &format!("/events/{a_event}"))).await;
    br.wait_text("succeeded").await;
    br.screenshot("portal-event").await;

    // B's ids are not found from A's portal, whatever page names them.
    for path in [
        format!("/events/{b_event}"),
        format!("/targets/{b_target}"),
        format!("/events?target_id={b_target}"),
    ] {
        let r = Request::get(&format!("/portal{path}"))
            .header("cookie", &portal_cookie(&br).await)
            .send_plain(gw.addrs.plain)
            .await
            .unwrap();
        let text = r.text();
        assert!(
            !text.contains(&b_event) && !text.contains("\"user\":\"b\""),
            "{path}: {text}"
        );
        if !path.contains('?') {
            assert_eq!(r.status, 404, "{path}");
        }
    }

    // The portal's session does not open the console, under either cookie name.
    let value = br
        .client
        .get_named_cookie("estafeta_portal")
        .await
        .unwrap()
        .value()
        .to_owned();
    for name in ["estafeta_portal", "estafeta_console"] {
        let r = Request::get("/console/tenants")
            .header("cookie", &format!("{name}={value}"))
            .send_plain(gw.addrs.admin)
            .await
            .unwrap();
        assert_eq!(
            r.status, 303,
            "a portal session reached the console as {name}"
        );
        assert_eq!(r.header("location").as_deref(), Some("/console/login"));
    }

    // The link signed in once: a second use is refused, and says why.
    let again = Request::get(&url).send_plain(gw.addrs.plain).await.unwrap();
    assert_eq!(
        again.status, 403,
        "a single-use link opened a second session"
    );
    assert!(again.text().contains("used already"), "{}", again.text());
    // Listed with its expiry and its first use, never its URL.
    let listed = gw
        .admin("GET", &format!("/admin/tenants/{a}/portal-links"), None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let listed = listed.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["id"], link["id"]);
    assert_eq!(listed["data"][0]["expires_at"], link["expires_at"]);
    assert!(listed["data"][0]["used_at"].is_string(), "{listed}");
    assert!(!listed.to_string().contains(&url["/portal/link/".len()..]));
    // The other tenant has none.
    let none = gw
        .admin("GET", &format!("/admin/tenants/{b_id}/portal-links"), None)
        .await
        .json();
    assert_eq!(none["data"], json!([]));

    // Revoking the link ends its session and refuses the link.
    let r = gw
        .admin(
            "DELETE",
            &format!(
                "/admin/tenants/{a}/portal-links/{}",
                link["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let listed = gw
        .admin("GET", &format!("/admin/tenants/{a}/portal-links"), None)
        .await
        .json();
    assert_eq!(listed["data"], json!([]), "a revoked link is not listed");
    br.goto(&portal(&gw, "/events")).await;
    assert_eq!(
        br.path().await,
        "/portal/login",
        "a revoked link's session lives on"
    );
    br.goto(&portal(&gw, &url["/portal".len()..])).await;
    br.expect_text("not valid").await;

    // An expired link, and one whose signature was altered, are refused too.
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{a}/portal-links"),
            Some(json!({"ttl_s": 1})),
        )
        .await;
    let short = r.json()["url"].as_str().unwrap()[origin.len()..].to_owned();
    let mut forged = short.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let r = Request::get(&forged)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "an altered link opened the portal");
    gw.advance(Duration::from_millis(1500));
    let r = Request::get(&short)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "an expired link opened the portal");

    // Signing in with a tenant token works as well, and signing out ends it.
    br.goto(&portal(&gw, "/login")).await;
    br.fill("#token", &b_token).await;
    br.click("#sign-in").await;
    br.expect_text("beta").await;
    br.click("#sign-out").await;
    br.expect_path("/portal/login").await;
    br.goto(&portal(&gw, "/events")).await;
    assert_eq!(br.path().await, "/portal/login");

    // Revoking the token a session signed in with ends that session.
    br.fill("#token", &b_token).await;
    br.click("#sign-in").await;
    br.expect_text("beta").await;
    let tokens = gw
        .admin("GET", &format!("/admin/tenants/{b_id}/tokens"), None)
        .await
        .json();
    let token_id = tokens["data"][0]["id"].as_str().unwrap().to_owned();
    let r = gw
        .admin(
            "DELETE",
            &format!("/admin/tenants/{b_id}/tokens/{token_id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    br.goto(&portal(&gw, "/events")).await;
    assert_eq!(
        br.path().await,
        "/portal/login",
        "a revoked token's session lives on"
    );

    // A link issued as reusable signs in as often as it is opened, until it expires.
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{a}/portal-links"),
            Some(json!({"ttl_s": 60, "single_use": false})),
        )
        .await;
    assert_eq!(r.json()["single_use"], false);
    let reusable = r.json()["url"].as_str().unwrap()[origin.len()..].to_owned();
    for _ in 0..2 {
        let r = Request::get(&reusable)
            .send_plain(gw.addrs.plain)
            .await
            .unwrap();
        assert_eq!(r.status, 303, "{}", r.text());
    }

    // Bad requests for links get the contract's errors.
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{a}/portal-links"),
            Some(json!({"ttl_s": 0})),
        )
        .await;
    assert!(r.is_error("invalid_portal_link"), "{}", r.text());
    let r = gw
        .admin("POST", "/admin/tenants/ten_nobody/portal-links", None)
        .await;
    assert_eq!(r.status, 404);
    gw.stop().await.unwrap();
}

async fn portal_cookie(b: &Browser) -> String {
    let c = b.client.get_named_cookie("estafeta_portal").await.unwrap();
    format!("estafeta_portal={}", c.value())
}

/// Signs in over plain HTTP: the session's whole `Set-Cookie`.
async fn sign_in_cookie(gw: &Gateway) -> String {
    let form = Request::get("/console/login")
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    let signin = form.header("set-cookie").unwrap();
    let signin = signin.split(';').next().unwrap().to_owned();
    let csrf = signin.split_once('=').unwrap().1.to_owned();
    let r = Request::new("POST", "/console/login")
        .header("cookie", &signin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}&token={ADMIN_TOKEN}"))
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(r.status, 303, "{}", r.text());
    r.header("set-cookie").unwrap()
}

async fn http_session(gw: &Gateway) -> (String, String) {
    let session = sign_in_cookie(gw)
        .await
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = Request::get("/console/tenants")
        .header("cookie", &session)
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    let text = page.text();
    let csrf = text
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    (session, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_need_their_csrf_token_and_pages_send_a_strict_policy() {
    let gw = gateway("browser_csrf", EXTRA).await;
    let (session, csrf) = http_session(&gw).await;
    let create = |body: String| {
        Request::new("POST", "/console/tenants")
            .header("cookie", &session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let r = create("name=forged".into())
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "a form without its CSRF token was taken");
    let r = create("name=forged&_csrf=wrong".into())
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "a form with a wrong CSRF token was taken");
    let r = gw.admin("GET", "/admin/tenants", None).await;
    assert!(
        !r.text().contains("forged"),
        "the refused forms created a tenant"
    );
    let r = create(format!("name=real&_csrf={csrf}"))
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // The sign-in form has its own token (double submit): without the cookie it is refused.
    let r = Request::new("POST", "/console/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf=x&token={ADMIN_TOKEN}"))
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(r.status, 403);

    // Without scripts, a destructive form answers a confirmation page that posts the same
    // fields again; only the confirmed post acts.
    let (victim, victim_token) = gw.tenant("victim").await;
    let toggle = |body: String| {
        Request::new("POST", &format!("/console/tenants/{victim}/toggle"))
            .header("cookie", &session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let ask = toggle(format!("_csrf={csrf}&active=false"))
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(ask.status, 200, "{}", ask.text());
    let text = ask.text();
    assert!(
        text.contains("Please confirm") && text.contains("Disable this tenant?"),
        "{text}"
    );
    assert!(text.contains(r#"name="active" value="false""#), "{text}");
    assert!(text.contains(r#"name="confirmed" value="1""#), "{text}");
    assert_eq!(
        gw.post_event(&victim_token, "a.b", b"{}").await.status,
        202,
        "not disabled yet"
    );
    let done = toggle(format!("_csrf={csrf}&active=false&confirmed=1"))
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(done.status, 303, "{}", done.text());
    eventually(WAIT, "disabled once confirmed", || async {
        gw.post_event(&victim_token, "a.b", b"{}").await.status == 403
    })
    .await;
    // Enabling is not destructive: no question.
    let back = toggle(format!("_csrf={csrf}&active=true"))
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(back.status, 303);

    // A failed page is styled, with a way home, under its face's headers.
    let missing = Request::get("/console/tenants/ten_nobody")
        .header("cookie", &session)
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
    let text = missing.text();
    assert!(
        text.contains("/console/assets/app.css") && text.contains("id=\"home\""),
        "{text}"
    );
    assert!(missing.header("content-security-policy").is_some());

    // Assets are compressed for a client that asks (pages are not: BREACH), with a favicon.
    for (encoding, asset) in [("br", "htmx.min.js"), ("gzip", "uPlot.iife.min.js")] {
        let plain = Request::get(&format!("/console/assets/{asset}"))
            .send_plain(gw.addrs.admin)
            .await
            .unwrap();
        let packed = Request::get(&format!("/console/assets/{asset}"))
            .header("accept-encoding", encoding)
            .send_plain(gw.addrs.admin)
            .await
            .unwrap();
        assert_eq!(
            packed.header("content-encoding").as_deref(),
            Some(encoding),
            "{asset}"
        );
        assert!(
            packed.body.len() * 2 < plain.body.len(),
            "{asset}: {} of {}",
            packed.body.len(),
            plain.body.len()
        );
    }
    let page = Request::get("/console/tenants")
        .header("cookie", &session)
        .header("accept-encoding", "br, gzip")
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert!(
        page.header("content-encoding").is_none(),
        "a page with a CSRF token is compressed"
    );
    assert!(page.text().contains("/console/assets/favicon.svg"));
    let icon = Request::get("/portal/assets/favicon.svg")
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(icon.status, 200);
    assert_eq!(
        icon.header("content-type").as_deref(),
        Some("image/svg+xml")
    );

    // Security headers: console and portal alike, the portal not embeddable by default.
    let page = Request::get("/console/tenants")
        .header("cookie", &session)
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(
        page.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        page.header("referrer-policy").as_deref(),
        Some("no-referrer")
    );
    let login = Request::get("/portal/login")
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert!(
        login
            .header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let cookie = login.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "cleartext: a Secure cookie would be dropped: {cookie}"
    );
    // Over TLS, the same page's cookie is Secure.
    let cert = gw.certs.path().join("dev.crt");
    for alpn in [Alpn::H1, Alpn::H2] {
        let login = Request::get("/portal/login")
            .send_tls(gw.addrs.tls, &cert, alpn)
            .await
            .unwrap();
        let cookie = login.header("set-cookie").unwrap();
        assert!(cookie.contains("; Secure"), "{alpn:?}: {cookie}");
    }
    // The session cookie outlives the idle limit (Redis ends idle sessions): it lasts the
    // absolute limit, so a busy session is not dropped by the browser.
    let session = sign_in_cookie(&gw).await;
    assert!(session.contains("Max-Age=43200"), "{session}");
    gw.stop().await.unwrap();

    // With frame ancestors configured, the portal (only) may be framed by them.
    let extra = format!("{EXTRA}\n[web]\nframe_ancestors = [\"https://app.example.com\"]\n");
    let gw = gateway("browser_frame", &extra).await;
    let login = Request::get("/portal/login")
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    let csp = login.header("content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors https://app.example.com"),
        "{csp}"
    );
    assert!(login.header("x-frame-options").is_none());
    // Over cleartext the portal still signs in: its cookies stay first-party, never the
    // `SameSite=None; Secure` a browser would drop there.
    let signin = login.header("set-cookie").unwrap();
    assert!(
        signin.contains("SameSite=Strict") && !signin.contains("Secure"),
        "{signin}"
    );
    let signin = signin.split(';').next().unwrap().to_owned();
    let csrf = signin.split_once('=').unwrap().1.to_owned();
    let (_, token) = gw.tenant("framed").await;
    let r = Request::new("POST", "/portal/login")
        .header("cookie", &signin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}&token={token}"))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(
        r.status,
        303,
        "cleartext portal sign-in with frame_ancestors: {}",
        r.text()
    );
    let session = r.header("set-cookie").unwrap();
    assert!(
        session.contains("SameSite=Strict") && !session.contains("Secure"),
        "{session}"
    );
    let home = Request::get("/portal")
        .header("cookie", session.split(';').next().unwrap())
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(home.status, 200);
    assert!(home.text().contains("framed"));
    // Over TLS the portal's cookie is the embeddable kind.
    let cert = gw.certs.path().join("dev.crt");
    let login = Request::get("/portal/login")
        .send_tls(gw.addrs.tls, &cert, Alpn::H1)
        .await
        .unwrap();
    let cookie = login.header("set-cookie").unwrap();
    assert!(
        cookie.contains("SameSite=None; Secure; Partitioned"),
        "{cookie}"
    );
    let console = Request::get("/console/login")
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert!(
        console
            .header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_tenants_and_senders_write_is_shown_escaped() {
    let gw = gateway("browser_xss", EXTRA).await;
    let sink = Sink::start().await;
    let script = "<script>window.__xss=1</script>";
    let img = "\"><img src=x onerror=\"window.__xss=1\">";
    let (tenant, token) = gw.tenant_with(json!({"name": format!("t{img}")})).await;
    let target = gw
        .create_target(
            &tenant,
            // A URL cannot hold `"`, `<` or `>` (it is refused), but it can hold `'` and `&`.
            json!({"url": format!("{}?q='onmouseover='window.__xss=1'&x=1", sink.url("/x")), "events": ["*"],
                   "headers": {"X-Note": script}}),
        )
        .await;
    let target_id = target["id"].as_str().unwrap().to_owned();
    let event = gw
        .post_ok(
            &token,
            "user.created",
            format!("{{\"bio\":\"{}\"}}", script.replace('"', "\\\"")).as_bytes(),
        )
        .await;
    let plain = gw
        .post_ok(&token, "note.added", format!("{script}{img}").as_bytes())
        .await;
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/monitors"),
            Some(json!({"name": format!("m{script}{img}")})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let monitor = r.json()["id"].as_str().unwrap().to_owned();

    let b = Browser::start().await;
    b.sign_in(&gw).await;
    let base = format!("/tenants/{tenant}");
    for (path, shown) in [
        ("/tenants".to_owned(), img.to_owned()),
        (base.clone(), img.to_owned()),
        (
            format!("{base}/targets"),
            "'onmouseover='window.__xss=1'&x=1".to_owned(),
        ),
        (format!("{base}/targets/{target_id}"), script.to_owned()),
        (format!("{base}/events/{event}"), script.to_owned()),
        (format!("{base}/events/{plain}"), format!("{script}{img}")),
        (format!("{base}/events"), "user.created".to_owned()),
        (format!("{base}/monitors"), format!("m{script}{img}")),
        (
            format!("{base}/monitors/{monitor}"),
            format!("m{script}{img}"),
        ),
    ] {
        b.goto(&console(&gw, &path)).await;
        b.css("main").await;
        assert!(!b.script_ran().await, "a payload ran on {path}");
        let text = b.body().await;
        assert!(
            text.contains(&shown),
            "{path} does not show {shown:?} as text:\n{text}"
        );
        let injected = b
            .client
            .find_all(Locator::Css(
                "main img, main script:not([type='application/json'])",
            ))
            .await
            .unwrap();
        assert!(injected.is_empty(), "{path} holds an injected element");
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_and_at_their_absolute_limit() {
    let extra = format!("{EXTRA}\n[web]\nsession_idle_s = 600\nsession_max_s = 3600\n");
    let gw = gateway("browser_idle", &extra).await;
    let open = |session: String| async move {
        Request::get("/console/tenants")
            .header("cookie", &session)
            .send_plain(gw.addrs.admin)
            .await
            .unwrap()
            .status
    };
    // Idle past its limit: gone.
    let (session, _) = http_session(&gw).await;
    gw.advance(Duration::from_secs(590));
    assert_eq!(
        open(session.clone()).await,
        200,
        "ended before its idle limit"
    );
    gw.advance(Duration::from_secs(601));
    assert_eq!(open(session).await, 303, "an idle session lived on");

    // Busy, it lives on until its absolute limit, then ends all the same.
    let (session, _) = http_session(&gw).await;
    for _ in 0..6 {
        gw.advance(Duration::from_secs(590));
        assert_eq!(
            open(session.clone()).await,
            200,
            "a busy session ended early"
        );
    }
    gw.advance(Duration::from_secs(61));
    assert_eq!(open(session).await, 303, "a session outlived session_max_s");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_range_is_recovered_from_the_target_page_after_a_dry_run_count() {
    let gw = gateway("browser_recover", EXTRA).await;
    let sink = Sink::start().await;
    sink.plan("/down", vec![], Reply::Status(503));
    let (tenant, token) = gw.tenant("recovering").await;
    let target = gw
        .create_target(
            &tenant,
            json!({"url": sink.url("/down"), "events": ["*"], "mode": "once"}),
        )
        .await;
    let target = target["id"].as_str().unwrap().to_owned();
    for n in 0..3 {
        gw.post_ok(&token, "order.paid", format!("{{\"n\":{n}}}").as_bytes())
            .await;
    }
    let queued = || async {
        gw.admin(
            "GET",
            &format!("/admin/tenants/{tenant}/dead-letters"),
            None,
        )
        .await
        .json()["total"]
            .as_u64()
    };
    eventually(WAIT, "three in the error queue", || async {
        queued().await == Some(3)
    })
    .await;
    sink.plan("/down", vec![], Reply::Status(200));
    let before = sink.count("/down");

    // The API's dry run counts and sends nothing.
    let since = estafeta::model::time::rfc3339(support::now_ms().saturating_sub(3_600_000));
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/targets/{target}/recover"),
            Some(json!({"since": since, "dry_run": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"recovering": 3, "dry_run": true}));

    // The page: the range's count first, as a question; only the confirmed post sends.
    let (session, csrf) = http_session(&gw).await;
    let local = &since[..16];
    let post = |body: String| {
        Request::new(
            "POST",
            &format!("/console/tenants/{tenant}/targets/{target}/recover"),
        )
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
    };
    let ask = post(format!("_csrf={csrf}&since={local}"))
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(ask.status, 200, "{}", ask.text());
    assert!(
        ask.text()
            .contains("3 events of this range did not reach this target"),
        "{}",
        ask.text()
    );
    // Nothing left the error queue: a count schedules nothing.
    assert_eq!(queued().await, Some(3), "a count sent something");
    assert_eq!(sink.count("/down"), before);
    let sent = post(format!("_csrf={csrf}&since={local}&confirmed=1"))
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(sent.status, 303, "{}", sent.text());
    let location = sent.header("location").unwrap();
    assert!(location.ends_with("recovered=3"), "{location}");
    eventually(WAIT, "the three sent again", || async {
        sink.count("/down") == before + 3
    })
    .await;
    let page = Request::get(&location)
        .header("cookie", &session)
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert!(
        page.text().contains("Recovered 3 events"),
        "{}",
        page.text()
    );
    eventually(WAIT, "the error queue emptied", || async {
        queued().await == Some(0)
    })
    .await;
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_a_transformation_and_a_batch_are_run_from_the_pages() {
    let gw = gateway("browser_routing", EXTRA).await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("routing").await;
    let b = Browser::start().await;
    b.sign_in(&gw).await;

    // The tenant's settings: warn on its catalogue, keep a header.
    b.goto(&console(&gw, &format!("/tenants/{tenant}"))).await;
    b.css("#tenant-settings select[name=catalogue] option[value=warn]")
        .await
        .click()
        .await
        .unwrap();
    b.fill("#tenant-settings input[name=keep_headers]", "X-Shop")
        .await;
    b.click("#tenant-settings button[type=submit]").await;
    b.expect_text("Saved.").await;

    // The catalogue: a type with a schema; a bad schema is refused with its pointer.
    b.goto(&console(&gw, &format!("/tenants/{tenant}/event-types")))
        .await;
    b.fill("#event-type-form input[name=name]", "order.paid")
        .await;
    b.fill("#event-type-form input[name=owner_team]", "Payments")
        .await;
    b.fill(
        "#event-type-form textarea[name=schema]",
        r#"{"type": "object", "properties": {"amount": {"minimum": "x"}}}"#,
    )
    .await;
    b.click("#event-type-form button[type=submit]").await;
    b.expect_text("/properties/amount/minimum").await;
    b.goto(&console(&gw, &format!("/tenants/{tenant}/event-types")))
        .await;
    b.fill("#event-type-form input[name=name]", "order.paid")
        .await;
    b.fill("#event-type-form input[name=owner_team]", "Payments")
        .await;
    b.fill(
        "#event-type-form textarea[name=schema]",
        r#"{"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}}}"#,
    )
    .await;
    b.click("#event-type-form button[type=submit]").await;
    b.expect_path(&format!("/console/tenants/{tenant}/event-types/order.paid"))
        .await;
    b.expect_text("Version 1").await;
    b.fill(
        "#schema-version-form textarea[name=schema]",
        r#"{"type": "object"}"#,
    )
    .await;
    b.click("#schema-version-form button[type=submit]").await;
    b.expect_text("Version 2").await;
    b.click("#deprecate").await;
    b.expect_text("deprecated").await;
    b.goto(&console(&gw, &format!("/tenants/{tenant}/event-types")))
        .await;
    let listed = b.text("#event-types").await;
    assert!(
        listed.contains("order.paid") && listed.contains("Payments") && listed.contains("1, 2"),
        "{listed}"
    );
    b.screenshot("catalogue").await;

    // A target with a transformation, simulated on a real event from its page.
    let t = gw
        .create_target(
            &tenant,
            json!({"url": sink.url("/shaped"), "events": ["order.*"],
            "transform": {"program": ".body.cents = (.body.amount * 100)"}}),
        )
        .await;
    let target = t["id"].as_str().unwrap().to_owned();
    let r = Request::new("POST", "/v1/events/order.paid")
        .bearer(&token)
        .header("content-type", "application/json")
        .header("x-shop", "acme")
        .header("estafeta-schema-version", "1")
        .body(br#"{"amount": "7"}"#.to_vec())
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(
        r.status,
        202,
        "warn accepts what breaks the schema: {}",
        r.text()
    );
    let event = r.json()["id"].as_str().unwrap().to_owned();
    b.goto(&console(
        &gw,
        &format!("/tenants/{tenant}/targets/{target}"),
    ))
    .await;
    b.fill(
        "#simulate-form textarea[name=program]",
        r#".method = "PUT" | .body = {n: .body.amount}"#,
    )
    .await;
    b.fill("#simulate-form input[name=event_id]", &event).await;
    b.click("#simulate-run").await;
    b.expect_text("Simulated delivery").await;
    assert_eq!(b.text("#simulation-outcome").await, "send");
    assert!(b.text("#simulation-line").await.starts_with("PUT "));
    assert!(b.text("#simulation-body").await.contains("\"n\":\"7\""));

    // The event's page: its kept header, what the catalogue found, and the shaped attempt.
    eventually(WAIT, "the shaped delivery", || async {
        sink.count("/shaped") == 1
    })
    .await;
    b.goto(&console(&gw, &format!("/tenants/{tenant}/events/{event}")))
        .await;
    b.wait_text("transformation v1").await;
    let page = b.body().await;
    assert!(page.contains("x-shop") && page.contains("acme"), "{page}");
    assert!(b.text("#schema-errors").await.contains("/amount"));

    // A batch from the settings form: refused beside a transformation, saved without one.
    b.goto(&console(
        &gw,
        &format!("/tenants/{tenant}/targets/{target}"),
    ))
    .await;
    b.fill("#target-form input[name=batch_max_events]", "50")
        .await;
    b.fill("#target-form input[name=batch_max_wait_ms]", "100")
        .await;
    b.click("#target-form button[type=submit]").await;
    b.expect_text("cannot be combined with a transformation")
        .await;
    b.goto(&console(
        &gw,
        &format!("/tenants/{tenant}/targets/{target}"),
    ))
    .await;
    b.fill("#target-form textarea[name=transform_program]", "")
        .await;
    b.fill("#target-form input[name=batch_max_events]", "50")
        .await;
    b.fill("#target-form input[name=batch_max_wait_ms]", "100")
        .await;
    b.click("#target-form button[type=submit]").await;
    b.expect_text("Saved.").await;
    assert!(b.text("#target-batch").await.contains("up to 50 events"));
    // The filter tried on stored events from the same page.
    b.fill(
        "#filter-try textarea[name=filter]",
        r#"{"headers.x-shop": "acme"}"#,
    )
    .await;
    b.click("#filter-try-run").await;
    b.expect_text("Filter tried").await;
    assert_eq!(b.text("#filter-matched").await, "1");
    b.screenshot("filter-tried").await;
    gw.stop().await.unwrap();
}
