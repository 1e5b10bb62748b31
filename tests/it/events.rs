//! Issue 6: sales become one confirmation e-mail and one loyalty credit each (seed 003),
//! user events become per-user aggregates applied once per `event_id` (seed 004); replays
//! change nothing, a stopped consumer catches up, and bad events go to the dead-letter
//! topics with their reasons while the consumers carry on.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use herald::events::{Loyalty, LoyaltyRule, RoleStats, SaleEmail, UserEvents};
use herald::kafka::{self, dlq_headers};
use herald::model::Channel;
use rdkafka::message::Message as _;
use serde_json::{json, Value};

use crate::harness::{quiet_provider, wait_until, Fleet};

const DEDUP: Duration = Duration::from_secs(3600);

fn sale(id: &str, customer: Option<&str>, email: &str, total: &str, quantity: u32) -> Value {
    json!({
        "event_type": "sale_completed", "sale_id": id, "product_id": 7,
        "product_name": "Manzana Orgánica", "quantity": quantity, "total": total,
        "customer_email": email, "customer_id": customer, "timestamp": "2026-11-20T10:30:00"
    })
}

/// Floor of a decimal text: the default rule's points.
fn points(total: &str) -> i64 {
    total.split('.').next().unwrap().parse().unwrap()
}

/// Publishes to a topic directly, as a producer other than herald-ingest would.
async fn publish_raw(fleet: &Fleet, topic: &str, key: &str, payload: &[u8]) {
    static PRODUCERS: std::sync::Mutex<Vec<(String, rdkafka::producer::FutureProducer)>> =
        std::sync::Mutex::new(Vec::new());
    let producer = {
        let mut all = PRODUCERS.lock().unwrap();
        match all.iter().find(|(b, _)| b == fleet.brokers()) {
            Some((_, p)) => p.clone(),
            None => {
                let p = kafka::producer(fleet.brokers()).unwrap();
                all.push((fleet.brokers().to_string(), p.clone()));
                p
            }
        }
    };
    kafka::publish(&producer, topic, key, payload, None)
        .await
        .unwrap();
}

fn sale_email(fleet: &Fleet) -> SaleEmail {
    SaleEmail {
        store: fleet.store.events.clone(),
        producer: kafka::producer(fleet.brokers()).unwrap(),
        topics: fleet.topics.clone(),
        dedup_window: DEDUP,
    }
}

fn loyalty(fleet: &Fleet) -> Loyalty {
    Loyalty {
        store: fleet.store.events.clone(),
        rule: LoyaltyRule::default(),
        dedup_window: DEDUP,
    }
}

async fn wait_consumed(stats: &Arc<RoleStats>, what: &str, n: u64) {
    wait_until(
        &format!("{what} to consume {n}"),
        Duration::from_secs(30),
        || {
            let done = stats.consumed.load(Ordering::Relaxed) >= n;
            async move { done }
        },
    )
    .await;
}

/// The twelve sales of the sales tests: Ana and Bob by customer id, Carla by e-mail only.
fn twelve_sales(prefix: &str) -> Vec<Value> {
    let totals = ["19.99", "5.00", "120.50", "0.99"];
    let mut sales = Vec::new();
    for (i, total) in totals.iter().enumerate() {
        sales.push(sale(
            &format!("{prefix}-a{i}"),
            Some("ana"),
            "ana@example.com",
            total,
            1,
        ));
        sales.push(sale(
            &format!("{prefix}-b{i}"),
            Some("bob"),
            "bob@example.com",
            total,
            2,
        ));
        sales.push(sale(
            &format!("{prefix}-c{i}"),
            None,
            "Carla@Example.com",
            total,
            3,
        ));
    }
    sales
}

async fn loyalty_of(fleet: &Fleet, who: &str) -> (u16, Value) {
    fleet.get(&format!("/v1/customers/{who}/loyalty")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_sale_is_one_email_and_one_credit_however_often_it_arrives() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let stop = fleet.shutdown.child_token();
    fleet.start_dispatcher(Channel::Email, stop.clone()).await;
    let mail = fleet.start_events(
        sale_email(&fleet),
        &fleet.topics.group("sale-email"),
        stop.clone(),
    );
    let points_stats = fleet.start_events(
        loyalty(&fleet),
        &fleet.topics.group("loyalty"),
        stop.clone(),
    );

    let sales = twelve_sales("s");
    for s in &sales {
        let (status, body) = fleet.post("/v1/sales", s.clone()).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            body["confirmation"],
            format!("sale-{}", s["sale_id"].as_str().unwrap())
        );
    }
    // Producers may publish directly: two copies, one poison, one invalid sale.
    let topic = fleet.topics.sales();
    for s in &sales[..2] {
        publish_raw(&fleet, &topic, "copy", s.to_string().as_bytes()).await;
    }
    publish_raw(&fleet, &topic, "poison", b"{\"event_type\": \"sale_comp").await;
    let mut zero = sale("s-zero", Some("ana"), "ana@example.com", "10.00", 1);
    zero["quantity"] = json!(0);
    publish_raw(&fleet, &topic, "s-zero", zero.to_string().as_bytes()).await;

    let ids: Vec<String> = sales
        .iter()
        .map(|s| format!("sale-{}", s["sale_id"].as_str().unwrap()))
        .collect();
    let counts = fleet.wait_terminal(&ids, Duration::from_secs(30)).await;
    assert_eq!(counts.get("sent"), Some(&12), "{counts:?}");
    wait_consumed(&points_stats, "loyalty", 16).await;
    wait_consumed(&mail, "sale-email", 16).await;

    let expected: i64 = ["19.99", "5.00", "120.50", "0.99"]
        .iter()
        .map(|t| points(t))
        .sum();
    let check_accounts = || async {
        for who in ["ana", "bob", "carla@example.com", "CARLA@example.com"] {
            let (status, account) = loyalty_of(&fleet, who).await;
            assert_eq!(status, 200, "{who}: {account}");
            assert_eq!(account["points"], expected, "{who}: {account}");
            assert_eq!(account["sales"], 4, "{who}: {account}");
            assert_eq!(account["spent"], "146.48", "{who}: {account}");
        }
    };
    check_accounts().await;
    let (_, ana) = loyalty_of(&fleet, "ana").await;
    assert_eq!(ana["recent"].as_array().unwrap().len(), 4, "{ana}");
    let sim = fleet.sim_stats().await;
    assert_eq!((sim.calls, sim.keys_delivered_twice), (12, 0), "{sim:?}");
    let (status, request) = fleet.get("/v1/requests/sale-s-a0").await;
    assert_eq!((status, request["status"].as_str()), (200, Some("sent")));

    // Both consumers dead-lettered the two bad sales, each saying who and why.
    let dead = fleet
        .read_topic(&fleet.topics.dlq(), 4, Duration::from_secs(10))
        .await;
    let reasons: Vec<String> = dead
        .iter()
        .filter_map(|m| kafka::header(m, dlq_headers::REASON).map(String::from))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for group in ["sale-email", "loyalty"] {
        let mine: Vec<&String> = reasons
            .iter()
            .filter(|r| r.contains(&format!("-{group}:")))
            .collect();
        assert_eq!(mine.len(), 2, "{group}: {reasons:?}");
        assert!(
            mine.iter().any(|r| r.contains("undecodable sale")),
            "{reasons:?}"
        );
        assert!(mine.iter().any(|r| r.contains("quantity")), "{reasons:?}");
    }

    // The whole day replayed: nothing more is sent or credited.
    for s in &sales {
        publish_raw(&fleet, &topic, "replay", s.to_string().as_bytes()).await;
    }
    wait_consumed(&points_stats, "loyalty", 28).await;
    wait_consumed(&mail, "sale-email", 28).await;
    let groups = [fleet.dispatch_group(herald::model::Channel::Email)];
    // Offsets commit every second; a group left one behind for good (two handlers storing
    // their offsets in the wrong order) fails here.
    fleet.wait_caught_up(&groups, Duration::from_secs(20)).await;
    check_accounts().await;
    assert_eq!(points_stats.applied.load(Ordering::Relaxed), 12);
    assert_eq!(points_stats.duplicates.load(Ordering::Relaxed), 14);
    assert_eq!(fleet.sim_stats().await.calls, 12);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_loyalty_stopped_emails_still_go_and_it_catches_up_when_started() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let stop = fleet.shutdown.child_token();
    fleet.start_dispatcher(Channel::Email, stop.clone()).await;
    let bin = env!("CARGO_BIN_EXE_herald-events");
    let mut mail = fleet.spawn(bin, &["--only", "sale-email"]);

    let sales = twelve_sales("t");
    for s in &sales {
        let (status, body) = fleet.post("/v1/sales", s.clone()).await;
        assert_eq!(status, 202, "{body}");
    }
    let ids: Vec<String> = sales
        .iter()
        .map(|s| format!("sale-{}", s["sale_id"].as_str().unwrap()))
        .collect();
    let counts = fleet.wait_terminal(&ids, Duration::from_secs(30)).await;
    assert_eq!(
        counts.get("sent"),
        Some(&12),
        "confirmations go without loyalty: {counts:?}"
    );
    let (status, _) = loyalty_of(&fleet, "ana").await;
    assert_eq!(status, 404, "nobody credits points yet");

    let mut credits = fleet.spawn(bin, &["--only", "loyalty"]);
    let expected: i64 = ["19.99", "5.00", "120.50", "0.99"]
        .iter()
        .map(|t| points(t))
        .sum();
    wait_until("loyalty to catch up", Duration::from_secs(30), || async {
        let mut all = true;
        for who in ["ana", "bob", "carla@example.com"] {
            let (_, account) = loyalty_of(&fleet, who).await;
            all &= account["points"] == expected && account["sales"] == 4;
        }
        all
    })
    .await;
    for (name, child) in [("sale-email", &mut mail), ("loyalty", &mut credits)] {
        let pid = child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let exit = child.wait_exit(Duration::from_secs(20)).await;
        assert!(
            exit.success(),
            "herald-events --only {name} stops cleanly: {exit:?}"
        );
    }
    assert_eq!(fleet.sim_stats().await.calls, 12);
    stop.cancel();
}

/// A deterministic stream of user events: five users, four actions, three categories.
fn user_events() -> Vec<Value> {
    let actions = ["click", "view", "add_to_cart", "purchase"];
    let categories = ["shoes", "books", "toys"];
    (0..200)
        .map(|i| {
            let mut e = json!({
                "event_id": format!("e{i}"), "user_id": format!("u{}", i % 5),
                "event_type": actions[i % 4], "category": categories[i % 3],
                "timestamp": format!("2026-11-20T10:{:02}:{:02}Z", i / 60, i % 60),
            });
            if actions[i % 4] == "purchase" {
                e["amount"] = json!(format!("{}.25", i % 7));
            }
            e
        })
        .collect()
}

/// What the activity of `user` must be after `events`, computed independently.
fn expected_activity(events: &[Value], user: &str) -> Value {
    let mine: Vec<&Value> = events.iter().filter(|e| e["user_id"] == user).collect();
    let count = |a: &str| mine.iter().filter(|e| e["event_type"] == a).count();
    let cents: u64 = mine
        .iter()
        .filter_map(|e| e["amount"].as_str())
        .map(|a| a.replace('.', "").parse::<u64>().unwrap())
        .sum();
    let mut categories = BTreeMap::new();
    for e in &mine {
        *categories
            .entry(e["category"].as_str().unwrap().to_string())
            .or_insert(0u64) += 1;
    }
    let last = mine
        .iter()
        .map(|e| {
            e["timestamp"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_millisecond()
        })
        .max()
        .unwrap();
    json!({
        "user_id": user, "events": mine.len(), "clicks": count("click"), "views": count("view"),
        "add_to_cart": count("add_to_cart"), "purchases": count("purchase"),
        "spent": format!("{}.{:02}", cents / 100, cents % 100), "categories": categories,
        "last_seen_ms": last,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_events_aggregate_once_and_bad_ones_are_dead_lettered_without_stopping() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let stop = fleet.shutdown.child_token();
    let topic = fleet.topics.user_events();
    let events = user_events();
    let now = "2026-11-20T11:00:00Z";
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("undecodable", b"{\"event_id\": \"trunc".to_vec()),
        ("user_id", json!({"event_id": "x1", "event_type": "click", "timestamp": now}).to_string().into_bytes()),
        ("event_type", json!({"event_id": "x2", "user_id": "u1", "event_type": "hover", "timestamp": now}).to_string().into_bytes()),
        ("amount", json!({"event_id": "x3", "user_id": "u1", "event_type": "click", "amount": "1.00", "timestamp": now}).to_string().into_bytes()),
        ("amount", json!({"event_id": "x4", "user_id": "u1", "event_type": "purchase", "timestamp": now}).to_string().into_bytes()),
        ("amount", json!({"event_id": "x5", "user_id": "u1", "event_type": "purchase", "amount": "-3.00", "timestamp": now}).to_string().into_bytes()),
        ("timestamp", json!({"event_id": "x6", "user_id": "u1", "event_type": "view", "timestamp": "soon"}).to_string().into_bytes()),
        ("event_id", json!({"event_id": "x 7", "user_id": "u1", "event_type": "view", "timestamp": now}).to_string().into_bytes()),
    ];
    // Valid events, the bad ones in the middle, copies of twenty, then the rest.
    for e in &events[..100] {
        publish_raw(
            &fleet,
            &topic,
            e["user_id"].as_str().unwrap(),
            e.to_string().as_bytes(),
        )
        .await;
    }
    for (_, payload) in &bad {
        publish_raw(&fleet, &topic, "u1", payload).await;
    }
    for e in events[..20].iter().chain(&events[100..]) {
        publish_raw(
            &fleet,
            &topic,
            e["user_id"].as_str().unwrap(),
            e.to_string().as_bytes(),
        )
        .await;
    }
    let total = (events.len() + bad.len() + 20) as u64;

    let stats = fleet.start_events(
        UserEvents {
            store: fleet.store.events.clone(),
            dedup_window: DEDUP,
        },
        &fleet.topics.group("user-events"),
        stop.clone(),
    );
    wait_consumed(&stats, "user-events", total).await;
    wait_until("the last batch applied", Duration::from_secs(10), || {
        let done =
            stats.applied.load(Ordering::Relaxed) + stats.duplicates.load(Ordering::Relaxed) == 220;
        async move { done }
    })
    .await;
    assert_eq!(stats.applied.load(Ordering::Relaxed), 200);
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 20);
    assert_eq!(
        stats.dead_lettered.load(Ordering::Relaxed),
        bad.len() as u64
    );

    let mut before = Vec::new();
    for u in 0..5 {
        let user = format!("u{u}");
        let (status, activity) = fleet.get(&format!("/v1/customers/{user}/activity")).await;
        assert_eq!(status, 200, "{activity}");
        assert_eq!(activity, expected_activity(&events, &user), "{user}");
        before.push(activity);
    }

    let dead = fleet
        .read_topic(
            &fleet.topics.user_events_dlq(),
            bad.len(),
            Duration::from_secs(10),
        )
        .await;
    let reasons: Vec<String> = dead
        .iter()
        .filter_map(|m| kafka::header(m, dlq_headers::REASON).map(String::from))
        .collect();
    assert_eq!(reasons.len(), bad.len(), "{reasons:?}");
    for (field, payload) in &bad {
        let m = dead
            .iter()
            .find(|m| m.payload() == Some(&payload[..]))
            .expect("dead-lettered untouched");
        let reason = kafka::header(m, dlq_headers::REASON).unwrap();
        assert!(reason.contains(field), "{field}: {reason}");
    }

    // Another group reads the whole topic again: every event is known, nothing changes.
    let reread = fleet.start_events(
        UserEvents {
            store: fleet.store.events.clone(),
            dedup_window: DEDUP,
        },
        &fleet.topics.group("user-events-reread"),
        stop.clone(),
    );
    wait_consumed(&reread, "the second group", total).await;
    wait_until("the reread applied", Duration::from_secs(10), || {
        let done = reread.duplicates.load(Ordering::Relaxed) == 220;
        async move { done }
    })
    .await;
    assert_eq!(reread.applied.load(Ordering::Relaxed), 0);
    for (u, was) in before.iter().enumerate() {
        let (_, now) = fleet.get(&format!("/v1/customers/u{u}/activity")).await;
        assert_eq!(&now, was);
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_names_the_field_of_a_bad_sale_or_user_event() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let good = sale("api-1", None, "ana@example.com", "10.00", 1);
    for (field, value) in [
        ("sale_id", json!(null)),
        ("total", json!(1.005)),
        ("customer_email", json!("nobody")),
        ("event_type", json!("sale_refunded")),
        ("timestamp", json!("2099-01-01T00:00:00Z")),
    ] {
        let mut s = good.clone();
        s[field] = value;
        let (status, body) = fleet.post("/v1/sales", s).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some(field)),
            "{body}"
        );
    }
    let r = fleet
        .http
        .post(format!("{}/v1/sales", fleet.api_url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let click = json!({"event_id": "a1", "user_id": "u1", "event_type": "click", "timestamp": "2026-11-20T10:00:00Z"});
    let mut hover = click.clone();
    hover["event_type"] = json!("hover");
    let (status, body) = fleet
        .post("/v1/user-events", json!({"events": [click, hover]}))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("events[1].event_type")),
        "{body}"
    );
    let mut priced = click.clone();
    priced["amount"] = json!("2.00");
    let (status, body) = fleet
        .post(
            "/v1/user-events",
            json!({"events": [click.clone(), priced]}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("events[1].amount")),
        "{body}"
    );
    let (status, body) = fleet.post("/v1/user-events", json!({"events": []})).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("events")),
        "{body}"
    );
    let (status, body) = fleet.post("/v1/user-events", click).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(1)),
        "{body}"
    );

    for path in [
        "/v1/customers/nobody/activity",
        "/v1/customers/nobody/loyalty",
        "/v1/customers/a%20b/loyalty",
    ] {
        let (status, _) = fleet.get(path).await;
        assert_eq!(status, 404, "{path}");
    }
}
