//! Outgoing webhooks (issue 34) against local receivers: one that fails 30% of its calls
//! and is down for a minute, one that always answers, one that redirects; the signatures
//! checked with the Standard Webhooks reference implementation (PyPI `standardwebhooks`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald::events::Webhooks;
use herald::model::{Channel, LifecycleEvent, LifecycleKind};
use herald::outgoing::address::AddressPolicy;
use herald::outgoing::sender::{Sender, SenderConfig};
use rdkafka::message::Message as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::harness::{email_push_customer, quiet_provider, venv_tool, Fleet};

/// A call a receiver answered 2xx: what the specification's verifier needs.
#[derive(Clone, serde::Serialize)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

#[derive(Default)]
struct Receiver {
    fail_rate: f64,
    redirect_to: Option<String>,
    calls: AtomicU64,
    received: Mutex<Vec<Received>>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: String) -> Response {
    r.calls.fetch_add(1, Ordering::Relaxed);
    if let Some(to) = &r.redirect_to {
        return (StatusCode::TEMPORARY_REDIRECT, [("location", to.clone())]).into_response();
    }
    if rand::random::<f64>() < r.fail_rate {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    r.received.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
    });
    StatusCode::NO_CONTENT.into_response()
}

/// Serves `receiver` on `port` until `stop`.
async fn serve_on(port: u16, receiver: Arc<Receiver>, stop: CancellationToken) {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
}

async fn register(fleet: &Fleet, url: &str, events: &[&str]) -> Value {
    let (status, body) = fleet
        .post(
            "/v1/webhook-endpoints",
            json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

/// The sender as herald-events runs it, with waits short enough for a test.
fn start_sender(fleet: &Fleet, config: SenderConfig, stop: CancellationToken) -> Arc<Sender> {
    let sender = Arc::new(
        Sender::new(
            fleet.store.webhooks.clone(),
            herald::kafka::producer(fleet.brokers()).unwrap(),
            fleet.topics.clone(),
            AddressPolicy {
                allow_loopback: true,
                allow_networks: Vec::new(),
            },
            config,
        )
        .unwrap(),
    );
    tokio::spawn(sender.clone().run(stop));
    sender
}

fn ids(received: &Mutex<Vec<Received>>) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.id.clone())
        .collect()
}

/// Runs the reference verifier over `records` with `secret`; returns how many verified.
fn verified_by_the_reference(secret: &str, records: &[Received]) -> usize {
    let dir = tempfile_dir();
    let file = dir.join("received.json");
    std::fs::write(&file, serde_json::to_vec(records).unwrap()).unwrap();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
wh = Webhook(sys.argv[1])
ok = 0
for r in json.load(open(sys.argv[2])):
    wh.verify(r["body"], {"webhook-id": r["id"], "webhook-timestamp": r["timestamp"], "webhook-signature": r["signature"]})
    ok += 1
print(ok)
"#;
    let out = std::process::Command::new(venv_tool("python"))
        .args(["-c", script, secret, file.to_str().unwrap()])
        .output()
        .expect("the test venv's python (scripts/test.sh makes it)");
    if !out.status.success() {
        return usize::MAX - 1; // a failed verification: never the count asked for
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-webhooks-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flaky_endpoint_down_for_a_minute_gets_every_event_signed_and_another_is_unaffected() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let stop = fleet.shutdown.child_token();
    fleet.start_dispatcher(Channel::Push, stop.clone()).await;
    fleet.start_fanout(stop.clone()).await;
    fleet.start_retry(stop.clone()).await;
    let group = format!("{}-webhooks", fleet.ns);
    fleet.start_events(
        Webhooks {
            store: fleet.store.webhooks.clone(),
        },
        &group,
        stop.clone(),
    );
    let sender = start_sender(
        &fleet,
        SenderConfig {
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            ..SenderConfig::default()
        },
        stop.clone(),
    );

    let (flaky_port, steady_port, redirect_port) = (
        crate::harness::free_port(),
        crate::harness::free_port(),
        crate::harness::free_port(),
    );
    let flaky = Arc::new(Receiver {
        fail_rate: 0.3,
        ..Receiver::default()
    });
    let steady = Arc::new(Receiver::default());
    let redirecting = Arc::new(Receiver {
        redirect_to: Some(format!("http://127.0.0.1:{steady_port}/hook")),
        ..Receiver::default()
    });
    serve_on(steady_port, steady.clone(), stop.clone()).await;
    serve_on(redirect_port, redirecting.clone(), stop.clone()).await;
    let types = ["message.sent", "message.delivered"];
    let flaky_ep = register(
        &fleet,
        &format!("http://127.0.0.1:{flaky_port}/hook"),
        &types,
    )
    .await;
    let steady_ep = register(
        &fleet,
        &format!("http://127.0.0.1:{steady_port}/hook"),
        &types,
    )
    .await;
    register(
        &fleet,
        &format!("http://127.0.0.1:{redirect_port}/hook"),
        &types,
    )
    .await;
    let (_, listed) = fleet.get("/v1/webhook-endpoints").await;
    assert!(
        !listed.to_string().contains("whsec_"),
        "a secret listed: {listed}"
    );

    // The flaky receiver is down while the campaign runs: its port is held by a listener
    // that never accepts (calls time out), so that no other test's server can take it.
    let placeholder = tokio::net::TcpListener::bind(("127.0.0.1", flaky_port))
        .await
        .unwrap();
    let down_since = tokio::time::Instant::now();
    let n = 200;
    let customers: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
    fleet
        .put_customers(customers.iter().map(|c| email_push_customer(c)).collect())
        .await;
    let (status, body) = fleet
        .post(
            "/v1/campaigns",
            json!({"id": "hooks", "name": "hooks", "template": "Hola {{name}}", "channels": ["push"],
                   "audience": {"customer_ids": customers}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let report = fleet.wait_campaign("hooks", Duration::from_secs(60)).await;
    assert_eq!(report["counts"]["delivered"], n, "{report}");

    // What should arrive: every sent and delivered event, as herald.events holds them.
    let events = fleet
        .read_topic(&fleet.topics.events(), 2 * n + 1, Duration::from_secs(30))
        .await;
    let expected: BTreeSet<String> = events
        .iter()
        .filter_map(|m| serde_json::from_slice::<LifecycleEvent>(m.payload()?).ok())
        .filter(|e| matches!(e.kind, LifecycleKind::Sent | LifecycleKind::Delivered))
        .map(|e| e.event_id)
        .collect();
    assert_eq!(expected.len(), 2 * n, "events on the topic");

    // The steady endpoint has them all while the flaky one is still down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ids(&steady.received).len() < expected.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let steady_ids = ids(&steady.received);
    assert_eq!(
        steady_ids.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "the steady endpoint's events"
    );
    assert!(
        down_since.elapsed() < Duration::from_secs(60),
        "the steady endpoint waited for the flaky one"
    );
    // Redirects are not followed: the redirecting endpoint's calls never reach the steady
    // receiver, which got each event once.
    assert!(redirecting.calls.load(Ordering::Relaxed) > 0);
    assert_eq!(steady_ids.len(), expected.len(), "a redirect was followed");
    assert!(flaky.calls.load(Ordering::Relaxed) == 0);

    // Down for a minute, then up, failing 30% of its calls.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(down_since.elapsed())).await;
    drop(placeholder);
    serve_on(flaky_port, flaky.clone(), stop.clone()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: BTreeSet<String> = ids(&flaky.received).into_iter().collect();
        if got.is_superset(&expected) || tokio::time::Instant::now() > deadline {
            assert_eq!(
                got, expected,
                "the flaky endpoint's events (at least once each)"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let calls = flaky.calls.load(Ordering::Relaxed);
    assert!(
        calls > expected.len() as u64,
        "no call failed ({calls} calls): the receiver's 30% failures were never retried"
    );
    assert!(sender.stats.failed_attempts.load(Ordering::Relaxed) > 0);

    // Every call verifies with the specification's reference implementation; a tampered
    // body does not.
    let flaky_records = flaky.received.lock().unwrap().clone();
    let secret = flaky_ep["secret"].as_str().unwrap();
    assert_eq!(
        verified_by_the_reference(secret, &flaky_records),
        flaky_records.len()
    );
    let steady_records = steady.received.lock().unwrap().clone();
    let steady_secret = steady_ep["secret"].as_str().unwrap();
    assert_eq!(
        verified_by_the_reference(steady_secret, &steady_records),
        steady_records.len()
    );
    let mut tampered = flaky_records[..1].to_vec();
    tampered[0].body.push(' ');
    assert_ne!(verified_by_the_reference(secret, &tampered), 1);
    let body: Value = serde_json::from_str(&flaky_records[0].body).unwrap();
    assert!(types.contains(&body["type"].as_str().unwrap()), "{body}");
    assert!(body["data"]["customer"].as_str().unwrap().starts_with('w'));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_the_whole_retry_period_is_disabled_with_an_event() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let stop = fleet.shutdown.child_token();
    let group = format!("{}-webhooks", fleet.ns);
    fleet.start_events(
        Webhooks {
            store: fleet.store.webhooks.clone(),
        },
        &group,
        stop.clone(),
    );
    let sender = start_sender(
        &fleet,
        SenderConfig {
            retry_period: Duration::from_secs(3),
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            ..SenderConfig::default()
        },
        stop.clone(),
    );
    // Nothing listens there.
    let dead = register(
        &fleet,
        &format!("http://127.0.0.1:{}/hook", crate::harness::free_port()),
        &["customer.unsubscribed", "webhook.endpoint_disabled"],
    )
    .await;
    // An event of a chosen type: a sale's unsubscription, published as herald does.
    let event = LifecycleEvent {
        channel: None,
        ..LifecycleEvent::new(
            LifecycleKind::Unsubscribed,
            &herald::model::RequestId("c1".into()),
            Channel::Email,
            None,
        )
    };
    let producer = herald::kafka::producer(fleet.brokers()).unwrap();
    herald::kafka::emit_event(&producer, &fleet.topics.events(), &event).await;

    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = fleet.get("/v1/webhook-endpoints").await.1;
        if listed["endpoints"][0]["status"] == "disabled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed["endpoints"][0]["status"], "disabled", "{listed}");
    assert_eq!(listed["endpoints"][0]["id"], dead["id"]);
    assert!(
        listed["endpoints"][0]["figures"]["gave_up"].as_u64() >= Some(1),
        "{listed}"
    );
    assert_eq!(sender.stats.endpoints_disabled.load(Ordering::Relaxed), 1);
    let exposition = herald::prom::render(vec![sender.prometheus()]);
    assert!(
        exposition.contains("herald_webhook_deliveries_total{result=\"endpoints_disabled\"} 1"),
        "{exposition}"
    );
    let events = fleet
        .read_topic(&fleet.topics.events(), 2, Duration::from_secs(10))
        .await;
    let disabled: Vec<LifecycleEvent> = events
        .iter()
        .filter_map(|m| serde_json::from_slice::<LifecycleEvent>(m.payload()?).ok())
        .filter(|e| e.kind == LifecycleKind::EndpointDisabled)
        .collect();
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    assert_eq!(disabled[0].id.0, dead["id"].as_str().unwrap());
    stop.cancel();
}

#[tokio::test]
async fn endpoints_that_would_reach_inside_the_network_are_refused() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let cases: HashMap<&str, &str> = HashMap::from([
        ("http://crm.shop.example/hook", "url"),
        ("https://10.0.0.7/hook", "url"),
        ("https://169.254.169.254/latest/meta-data", "url"),
        ("https://[fd00::1]/hook", "url"),
    ]);
    for (url, field) in cases {
        let (status, body) = fleet
            .post(
                "/v1/webhook-endpoints",
                json!({"url": url, "events": ["message.sent"]}),
            )
            .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some(field)),
            "{url}: {body}"
        );
    }
    let (status, body) = fleet
        .post(
            "/v1/webhook-endpoints",
            json!({"url": "https://crm.shop.example/hook", "events": ["message.sen"]}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("events[0]")),
        "{body}"
    );
    // Only admins: a key with every other scope is refused.
    let scopes: Vec<herald::auth::Scope> = herald::auth::Scope::ALL
        .into_iter()
        .filter(|s| *s != herald::auth::Scope::Admin)
        .collect();
    let status = fleet
        .status_with_new_key(&scopes, reqwest::Method::GET, "/v1/webhook-endpoints")
        .await;
    assert_eq!(status, 403);
}
