//! Each customer's message history (issue 34): written by herald-events' `history` consumer
//! from the lifecycle events, read through the API.

use std::time::Duration;

use herald::events::History;
use herald::model::{Channel, LifecycleEvent, LifecycleKind};
use herald::store::{HistoryItem, HistoryLimits};
use serde_json::Value;

use crate::harness::{quiet_provider, Fleet};
use crate::offers::{campaign, customer, daytime};

fn statuses(message: &Value) -> Vec<(String, String)> {
    message["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["status"].as_str().unwrap_or("").to_string(),
                e["channel"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn at_ms(event: &Value) -> i64 {
    let at: jiff::Timestamp = event["at"].as_str().unwrap().parse().unwrap();
    at.as_millisecond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_reached_by_email_after_a_silent_sms_has_both_attempts_and_the_fallback_in_order(
) {
    let mut sim = quiet_provider();
    sim.silent_channels = vec![Channel::Sms];
    let fleet = Fleet::start(sim, 2).await;
    let stop = fleet.shutdown.child_token();
    for channel in [Channel::Sms, Channel::Email] {
        fleet.start_dispatcher(channel, stop.clone()).await;
    }
    fleet.start_fanout(stop.clone()).await;
    fleet.start_retry(stop.clone()).await;
    let history = History {
        store: fleet.store.events.clone(),
        limits: HistoryLimits::default(),
    };
    let recorder = fleet.start_events(history, &format!("{}-history", fleet.ns), stop.clone());
    let ids: Vec<String> = (0..3).map(|i| format!("h{i}")).collect();
    fleet
        .put_customers(
            ids.iter()
                .map(|id| customer(id, &["sms", "email"], &daytime()))
                .collect(),
        )
        .await;
    for id in ["older", "newer"] {
        let (status, body) = fleet
            .post("/v1/campaigns", campaign(id, &["sms", "email"], 800, &ids))
            .await;
        assert_eq!(status, 202, "{body}");
        let report = fleet.wait_campaign(id, Duration::from_secs(60)).await;
        assert_eq!(report["counts"]["delivered:email"], 3, "{report}");
    }
    // Every event of h0's two messages recorded: each ends delivered by e-mail.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (_, page) = fleet.get("/v1/customers/h0/messages").await;
        let done = page["messages"]
            .as_array()
            .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["status"] == "delivered"));
        if done || tokio::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let newest = &page["messages"][0];
    assert_eq!(newest["campaign"], "newer", "{page}");
    assert_eq!(
        (newest["channel"].as_str(), newest["provider"].as_str()),
        (Some("email"), Some("http"))
    );
    let order = statuses(newest);
    let wanted = [
        ("sent", "sms"),
        ("fallback", "email"),
        ("sent", "email"),
        ("delivered", "email"),
    ];
    let mut at = 0;
    for (status, channel) in wanted {
        let found = order[at..]
            .iter()
            .position(|(s, c)| s == status && c == channel)
            .unwrap_or_else(|| panic!("no {status} on {channel} after step {at}: {order:?}"));
        at += found + 1;
    }
    let events = newest["events"].as_array().unwrap();
    let sms_sent = events.iter().find(|e| e["status"] == "sent").unwrap();
    let fallback = events.iter().find(|e| e["status"] == "fallback").unwrap();
    assert_eq!(fallback["detail"], "from sms");
    assert!(
        at_ms(fallback) - at_ms(sms_sent) >= 800,
        "fell back before the SMS's 800 ms: {newest}"
    );

    // Paged, newest first: one at a time, the second page holds the older one.
    let (_, first) = fleet.get("/v1/customers/h0/messages?limit=1").await;
    assert_eq!(first["messages"][0]["campaign"], "newer", "{first}");
    let next = first["next"].as_str().expect("a next page");
    let (_, second) = fleet
        .get(&format!("/v1/customers/h0/messages?limit=1&before={next}"))
        .await;
    assert_eq!(second["messages"][0]["campaign"], "older", "{second}");
    assert!(second.get("next").is_none(), "{second}");
    let (status, bad) = fleet.get("/v1/customers/h0/messages?limit=0").await;
    assert_eq!(
        (status, bad["field"].as_str()),
        (422, Some("limit")),
        "{bad}"
    );

    // One recipient: the once-slot now, beside its history.
    let (status, recipient) = fleet.get("/v1/campaigns/older/recipients/h1").await;
    assert_eq!(status, 200, "{recipient}");
    assert_eq!(recipient["now"]["status"], "delivered");
    assert_eq!(recipient["now"]["tried"], "sms,email");
    assert_eq!(recipient["history"]["status"], "delivered");
    let (status, _) = fleet.get("/v1/campaigns/older/recipients/nobody").await;
    assert_eq!(status, 404);

    // What one recipient costs in Redis: h0's index and its two messages.
    let mut bytes = 0u64;
    let index = format!("{}:history:{{h0}}", fleet.ns);
    for key in [
        index.clone(),
        format!("{index}:m:older"),
        format!("{index}:m:newer"),
    ] {
        let used: Option<u64> =
            crate::harness::redis_query(redis::cmd("MEMORY").arg("USAGE").arg(&key)).await;
        bytes += used.expect("the key exists");
    }
    eprintln!("history of one customer with 2 messages: {bytes} bytes in Redis");
    assert!(bytes < 4_096, "{bytes} bytes for 2 messages");
    assert_eq!(
        recorder
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    stop.cancel();
}

#[tokio::test]
async fn an_event_recorded_twice_is_kept_once_and_a_customer_keeps_only_the_newest_messages() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let limits = HistoryLimits {
        messages: 2,
        ..HistoryLimits::default()
    };
    let event = |campaign: &str, at_ms: u64| {
        let campaign = herald::model::CampaignId::parse(campaign).unwrap();
        let customer = herald::model::CustomerId::parse("k").unwrap();
        HistoryItem::of(&LifecycleEvent {
            at_ms,
            ..LifecycleEvent::for_delivery(
                LifecycleKind::Sent,
                &campaign,
                &customer,
                Channel::Push,
                None,
            )
        })
        .unwrap()
    };
    let first = event("a", 1_000);
    let kept = fleet
        .store
        .events
        .record_history(&[first.clone(), first], limits)
        .await
        .unwrap();
    assert_eq!(kept, [true, false]);
    for (i, campaign) in ["b", "c"].iter().enumerate() {
        let item = event(campaign, 2_000 + i as u64);
        fleet
            .store
            .events
            .record_history(&[item], limits)
            .await
            .unwrap();
    }
    let customer = herald::model::CustomerId::parse("k").unwrap();
    let page = fleet
        .store
        .events
        .customer_history(&customer, None, 10)
        .await
        .unwrap();
    let campaigns: Vec<&str> = page.messages.iter().map(|m| m.campaign.as_str()).collect();
    assert_eq!(campaigns, ["c", "b"]);
    let dropped = herald::model::CampaignId::parse("a").unwrap();
    assert!(fleet
        .store
        .events
        .message_history(&customer, &dropped)
        .await
        .unwrap()
        .is_none());
}
