//! Seeing a campaign: the metrics aggregator counts each event once, the dashboard (in a
//! real headless Chromium) shows what the counters hold, a real Prometheus scrapes the
//! fleet, the Grafana dashboard only asks for series that exist, and one notification's
//! spans share a trace from ingest to dispatch.

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::health::Probes;
use herald::kafka::{self, dlq_headers};
use herald::model::{CampaignId, Channel, CustomerId, LifecycleEvent, LifecycleKind};
use serde_json::{json, Value};

use crate::browser::{chromium, chromium_command};
use crate::harness::{email_push_customer, quiet_provider, wait_until, ChildGuard, Fleet, API_KEY};

mod traces;

fn event(kind: LifecycleKind, campaign: &str, customer: usize, channel: Channel) -> LifecycleEvent {
    LifecycleEvent::for_delivery(
        kind,
        &CampaignId::parse(campaign).unwrap(),
        &CustomerId::parse(&format!("u{customer}")).unwrap(),
        channel,
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_counted_once_across_copies_poison_and_a_full_reread() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let producer = kafka::producer(fleet.brokers()).unwrap();
    let topic = fleet.topics.events();
    let mut events = Vec::new();
    for i in 0..120 {
        events.push(event(LifecycleKind::Sent, "obs1", i, Channel::Email));
    }
    for i in 0..30 {
        let mut e = event(LifecycleKind::Delivered, "obs1", i, Channel::Email);
        e.latency_ms = Some(40 + i as u64);
        events.push(e);
    }
    for e in &events {
        kafka::publish_json(&producer, &topic, e.id.as_str(), e)
            .await
            .unwrap();
    }
    // Ten events published twice (a producer retry's copy: same event id, new offset).
    for e in &events[..10] {
        kafka::publish_json(&producer, &topic, e.id.as_str(), e)
            .await
            .unwrap();
    }
    kafka::publish(&producer, &topic, "bad", b"{not json", None)
        .await
        .unwrap();
    let total_messages = events.len() as u64 + 11;

    let stop = fleet.shutdown.child_token();
    let (first, url) = fleet.start_metrics("obs-first", stop.clone()).await;
    wait_until(
        "the first aggregator to read everything",
        Duration::from_secs(30),
        || {
            let first = first.clone();
            async move {
                first.stats.flushes.load(Ordering::Relaxed) > 0
                    && first.stats.consumed.load(Ordering::Relaxed) >= total_messages
            }
        },
    )
    .await;
    let campaign = CampaignId::parse("obs1").unwrap();
    wait_counted(
        &fleet,
        &campaign,
        "delivered:email",
        30,
        Duration::from_secs(10),
    )
    .await;
    let events = fleet.topics.events();
    fleet
        .wait_caught_up(
            &[("obs-first".into(), events.clone())],
            Duration::from_secs(20),
        )
        .await;
    let counts = fleet
        .store
        .metrics
        .metrics_campaign(&campaign)
        .await
        .unwrap();
    assert_eq!(counts.get("sent:email"), Some(&120), "{counts:?}");
    assert_eq!(counts.get("delivered:email"), Some(&30));
    assert_eq!(counts.get("lat:email:count"), Some(&30));
    assert_eq!(first.stats.duplicates.load(Ordering::Relaxed), 10);
    assert_eq!(first.stats.dead_lettered.load(Ordering::Relaxed), 1);
    let dlq = fleet
        .read_topic(&fleet.topics.dlq(), 1, Duration::from_secs(10))
        .await;
    assert_eq!(
        kafka::header(&dlq[0], dlq_headers::REASON)
            .map(|r| r.starts_with("undecodable lifecycle event")),
        Some(true)
    );

    // The JSON view agrees.
    let stats = fleet
        .get_json(&format!("{url}/v1/stats/campaigns/obs1"))
        .await
        .unwrap();
    assert_eq!(stats["counts"]["outcomes"]["sent"], 120);
    assert_eq!(stats["counts"]["latency_ms"]["email"]["count"], 30);
    let missing = fleet
        .http
        .get(format!("{url}/v1/stats/campaigns/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    stop.cancel();

    // Twenty new events arrive while no aggregator runs; then a second aggregator in a new
    // group reads the whole topic again, as after a crash before any commit. The watermarks
    // in Redis make it skip what was counted and count only the new events, even where old
    // and new share a run.
    for i in 120..140 {
        let e = event(LifecycleKind::Sent, "obs1", i, Channel::Email);
        kafka::publish_json(&producer, &topic, e.id.as_str(), &e)
            .await
            .unwrap();
    }
    let stop = fleet.shutdown.child_token();
    let (second, _) = fleet.start_metrics("obs-second", stop.clone()).await;
    wait_until(
        "the second aggregator to reread everything",
        Duration::from_secs(30),
        || {
            let second = second.clone();
            async move {
                second.stats.already_counted.load(Ordering::Relaxed) >= total_messages
                    && second.stats.counted.load(Ordering::Relaxed) >= 20
            }
        },
    )
    .await;
    fleet
        .wait_caught_up(&[("obs-second".into(), events)], Duration::from_secs(20))
        .await;
    assert_eq!(second.stats.counted.load(Ordering::Relaxed), 20);
    assert_eq!(
        second.stats.already_counted.load(Ordering::Relaxed),
        total_messages
    );
    let after = fleet
        .store
        .metrics
        .metrics_campaign(&campaign)
        .await
        .unwrap();
    assert_eq!(after.get("sent:email"), Some(&140), "{after:?}");
    assert_eq!(after.get("delivered:email"), counts.get("delivered:email"));
    stop.cancel();
}

/// Waits until the aggregator has counted `n` in one campaign field.
async fn wait_counted(fleet: &Fleet, campaign: &CampaignId, field: &str, n: u64, limit: Duration) {
    wait_until(&format!("{field} = {n} in {campaign}"), limit, || async {
        fleet
            .store
            .metrics
            .metrics_campaign(campaign)
            .await
            .unwrap()
            .get(field)
            == Some(&n)
    })
    .await;
}

/// The `data-metric` → `data-value` pairs of a page's DOM.
fn shown_metrics(dom: &str) -> BTreeMap<String, u64> {
    let mut shown = BTreeMap::new();
    for tag in dom.split('<').filter(|t| t.contains("data-metric=\"")) {
        let attr = |name: &str| {
            let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
            let len = tag[start..].find('"')?;
            Some(tag[start..start + len].to_string())
        };
        if let (Some(m), Some(v)) = (attr("data-metric"), attr("data-value")) {
            shown.insert(m, v.parse().unwrap_or(u64::MAX));
        }
    }
    shown
}

/// A page that posts `key` to herald-metrics' login form at once, as a person would type it.
fn login_page(profile: &std::path::Path, metrics: &str, key: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(profile).unwrap();
    let page = profile.join("login.html");
    std::fs::write(
        &page,
        format!(
            "<form method=\"post\" action=\"{metrics}/login\"><input name=\"key\" value=\"{key}\"></form>\
             <script>document.forms[0].submit()</script>"
        ),
    )
    .unwrap();
    page
}

/// Customers, a campaign, dispatchers, fan-out, retry and the aggregator: the whole story.
async fn run_small_campaign(
    fleet: &Fleet,
    id: &str,
    n: usize,
) -> (Arc<herald::metrics::Aggregator>, String) {
    let stop = fleet.shutdown.child_token();
    let mut patient = fleet.provider_args();
    patient.provider_timeout_ms = 15_000;
    for ch in [Channel::Email, Channel::Push] {
        fleet
            .start_dispatcher_with(ch, stop.clone(), patient.clone())
            .await;
    }
    fleet.start_fanout(stop.clone()).await;
    fleet.start_retry(stop.clone()).await;
    let metrics = fleet
        .start_metrics(&fleet.topics.metrics_group(), stop)
        .await;
    let ids: Vec<String> = (0..n).map(|i| format!("{id}-c{i}")).collect();
    fleet
        .put_customers(ids.iter().map(|i| email_push_customer(i)).collect())
        .await;
    let (status, body) = fleet
        .post(
            "/v1/campaigns",
            json!({"id": id, "name": "obs", "template": "Hola {{name}}", "channels": ["email", "push"],
                   "confirmation_timeout_ms": {"email": 5000, "push": 5000}, "audience": {"customer_ids": ids}}),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let report = fleet.wait_campaign(id, Duration::from_secs(60)).await;
    assert_eq!(report["status"], "completed", "{report}");
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_what_the_counters_hold() {
    let browser = chromium();
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let (agg, url) = run_small_campaign(&fleet, "dash1", 40).await;
    let campaign = CampaignId::parse("dash1").unwrap();
    wait_counted(
        &fleet,
        &campaign,
        "delivered:email",
        40,
        Duration::from_secs(20),
    )
    .await;
    let _ = agg;
    let stats = fleet.get_json(&format!("{url}/v1/stats")).await.unwrap();

    let profile = std::env::temp_dir().join(format!("herald-chromium-{}", fleet.ns));
    // As an operator does: the login form, a key with stats:read, then the dashboard (the
    // form is submitted by a page of the test's, since a headless browser types nothing).
    let login = login_page(
        &profile,
        &url,
        &fleet.key("dash", &[herald::auth::Scope::StatsRead]),
    );
    let out = chromium_command(&profile)
        .arg("--dump-dom")
        .arg(format!("file://{}", login.display()))
        .output()
        .unwrap_or_else(|e| panic!("running {browser}: {e}"));
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    let dom = String::from_utf8_lossy(&out.stdout);
    let shown = shown_metrics(&dom);
    assert!(!shown.is_empty(), "the page shows no metric: {dom}");
    for outcome in [
        "accepted",
        "sent",
        "delivered",
        "failed",
        "fallback",
        "dead_lettered",
    ] {
        let want = stats["totals"]["outcomes"][outcome].as_u64().unwrap_or(0);
        assert_eq!(
            shown.get(&format!("totals.{outcome}")),
            Some(&want),
            "totals.{outcome}"
        );
    }
    assert_eq!(shown.get("campaign.dash1.recipients"), Some(&40));
    assert_eq!(shown.get("campaign.dash1.delivered"), Some(&40));
    assert_eq!(shown.get("campaign.dash1.finished"), Some(&40));
    assert_eq!(
        shown.get("channel.email.sent"),
        stats["totals"]["channels"]["email"]["sent"]
            .as_u64()
            .as_ref()
    );
    assert_eq!(shown.get("latency.email.count"), Some(&40));
    assert!(
        dom.contains("100.0%"),
        "the campaign's progress shows complete"
    );
    // It updates by itself: the page polled /v1/stats and rendered the answer.
    let polls: u64 = dom
        .split("data-polls=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(polls >= 1, "the dashboard never polled /v1/stats");

    let shot = std::env::var("HERALD_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::temp_dir().join(format!("herald-dashboard-{}.png", fleet.ns))
        });
    let status = chromium_command(&profile)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1400,1100")
        .arg(format!("file://{}", login.display()))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot at {}",
        shot.display()
    );
    let _ = std::fs::remove_dir_all(&profile);
}

/// Serves a dispatcher's probes (and `/metrics`) on an ephemeral port; returns its URL.
async fn serve_probes(probes: Probes, stop: tokio_util::sync::CancellationToken) -> String {
    let port = crate::harness::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(herald::health::serve(addr, probes, stop));
    let url = format!("http://{addr}");
    let client = reqwest::Client::new();
    for _ in 0..50 {
        if client.get(format!("{url}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    url
}

/// Every `herald_*` metric name a Grafana panel queries.
fn grafana_metric_names() -> Vec<String> {
    let path = crate::harness::repo_file("dashboards/herald.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let mut rest = expr;
            while let Some(i) = rest.find("herald_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                names.push(name);
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_the_fleet_and_grafana_asks_only_for_what_exists() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let (_agg, metrics_url) = run_small_campaign(&fleet, "prom1", 20).await;
    let stop = fleet.shutdown.child_token();
    let (dispatcher, _) = fleet.start_dispatcher(Channel::Sms, stop.clone()).await;
    let (d1, d2) = (dispatcher.clone(), dispatcher.clone());
    let dispatch_url = serve_probes(
        Probes {
            ready: Arc::new(|| Box::pin(async { Ok(()) })),
            stats: Arc::new(move || d1.stats_json()),
            metrics: Arc::new(move || d2.prometheus()),
        },
        stop.clone(),
    )
    .await;
    let campaign = CampaignId::parse("prom1").unwrap();
    wait_counted(
        &fleet,
        &campaign,
        "delivered:email",
        20,
        Duration::from_secs(20),
    )
    .await;

    // Every series the Grafana dashboard queries exists in the fleet's /metrics.
    let mut exposition = String::new();
    for url in [
        format!("{metrics_url}/metrics"),
        format!("{dispatch_url}/metrics"),
        format!("{}/metrics", fleet.api_url),
        format!("{}/metrics", fleet.provider_url),
    ] {
        let r = fleet.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        exposition.push_str(&r.text().await.unwrap());
    }
    // herald-events' families, as its health address renders them.
    let events = [(
        herald::events::Role::UserEvents,
        Arc::new(herald::events::RoleStats::default()),
    )];
    exposition.push_str(&herald::prom::render(herald::events::prometheus(
        &fleet.topics,
        &events,
    )));
    let names = grafana_metric_names();
    assert!(
        names.len() >= 6,
        "the dashboard queries Herald's series: {names:?}"
    );
    for name in &names {
        assert!(
            exposition
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "Grafana queries {name}, which no /metrics shows"
        );
    }
    assert!(exposition
        .contains("herald_notifications_total{channel=\"email\",outcome=\"delivered\"} 20"));
    assert!(
        exposition.contains("herald_provider_circuit_state{channel=\"sms\",provider=\"http\"} 0")
    );
    assert!(exposition.contains("herald_simulator_total{what=\"calls\"} "));

    // A real Prometheus scrapes them.
    let prometheus = "/usr/bin/prometheus";
    assert!(
        std::path::Path::new(prometheus).exists(),
        "scripts/test.sh installs Debian's prometheus"
    );
    let dir = std::env::temp_dir().join(format!("herald-prom-{}", fleet.ns));
    std::fs::create_dir_all(&dir).unwrap();
    let target = |url: &str| url.trim_start_matches("http://").to_string();
    // As an operator sets it up: a key of its own that may read stats and nothing else.
    let scrape_key = fleet.key("prometheus", &[herald::auth::Scope::StatsRead]);
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: herald\n    authorization:\n      credentials: '{scrape_key}'\n    static_configs:\n      - targets: ['{}', '{}', '{}']\n",
        target(&metrics_url), target(&dispatch_url), target(&fleet.api_url)
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = crate::harness::free_port();
    let _prom = ChildGuard(Some(
        Command::new(prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus"),
    ));
    let query = |q: &str| {
        let url = format!("http://127.0.0.1:{port}/api/v1/query");
        let (http, q) = (fleet.http.clone(), q.to_string());
        async move {
            match http.get(url).query(&[("query", q)]).send().await {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            }
        }
    };
    for (q, want) in [
        (
            "herald_notifications_total{outcome=\"delivered\",channel=\"email\"}",
            20.0,
        ),
        (
            "sum(herald_http_requests_total{route=\"/v1/campaigns\"})",
            1.0,
        ),
        ("herald_provider_circuit_state{channel=\"sms\"}", 0.0),
    ] {
        wait_until(
            &format!("Prometheus to have {q}"),
            Duration::from_secs(60),
            || {
                let fut = query(q);
                async move {
                    fut.await
                        .as_ref()
                        .and_then(|v| v["data"]["result"][0]["value"][1].as_str())
                        .and_then(|v| v.parse::<f64>().ok())
                        == Some(want)
                }
            },
        )
        .await;
    }
    let up = query("up{job=\"herald\"}").await.unwrap();
    assert_eq!(up["data"]["result"].as_array().unwrap().len(), 3, "{up}");
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
