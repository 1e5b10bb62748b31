//! Poison messages go to the dead-letter topic with their reason; the consumer carries on.

use std::time::Duration;

use herald::kafka::{self, dlq_headers};
use herald::model::{Channel, Message, Notification, RequestId};

use crate::harness::{quiet_provider, Fleet};

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_the_rest_still_sent() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let producer = kafka::producer(fleet.brokers()).unwrap();
    let topic = fleet.topics.notify(Channel::Email);
    kafka::publish(&producer, &topic, "junk", b"{not json", None)
        .await
        .unwrap();
    let stray = |id: &str, channel| Notification {
        id: RequestId(id.into()),
        message: Message {
            to: "x".into(),
            message: "m".into(),
            channel,
        },
        published_at_ms: 0,
    };
    for (id, channel) in [("r-wrong", Channel::Sms), ("r-unknown", Channel::Email)] {
        kafka::publish_json(&producer, &topic, id, &stray(id, channel))
            .await
            .unwrap();
    }

    let (dispatcher, _) = fleet
        .start_dispatcher(Channel::Email, fleet.shutdown.child_token())
        .await;
    let (ids, _) = fleet.submit(5, "email").await;
    let counts = fleet.wait_terminal(&ids, Duration::from_secs(30)).await;
    assert_eq!(counts.get("sent"), Some(&5), "{counts:?}");

    let dead = fleet
        .read_topic(&fleet.topics.dlq(), 3, Duration::from_secs(10))
        .await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| {
            kafka::header(m, dlq_headers::REASON)
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(dead.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("undecodable"), "{reasons:?}");
    assert!(
        reasons[1].contains("notification for sms on the email topic"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("unknown request r-unknown"),
        "{reasons:?}"
    );
    assert!(dead
        .iter()
        .all(|m| kafka::header(m, dlq_headers::SOURCE_TOPIC) == Some(topic.as_str())));
    assert_eq!(
        dispatcher
            .stats
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

/// Fan-out dead-letters what it cannot read on `herald.campaigns` (not JSON, a batch of a
/// campaign nobody stored), each with its reason, and fans out the next campaign as usual.
#[tokio::test]
async fn bad_campaign_messages_are_dead_lettered_and_fan_out_carries_on() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let producer = kafka::producer(fleet.brokers()).unwrap();
    let topic = fleet.topics.campaigns();
    kafka::publish(&producer, &topic, "junk", b"\x00 not a batch", None)
        .await
        .unwrap();
    let ghost = serde_json::json!({"campaign": "nobody-stored-this", "batch": 0});
    kafka::publish_json(&producer, &topic, "ghost", &ghost)
        .await
        .unwrap();
    let stop = fleet.shutdown.child_token();
    let fanout = fleet.start_fanout(stop.clone()).await;
    fleet.start_dispatcher(Channel::Email, stop).await;
    fleet
        .put_customers(vec![
            serde_json::json!({"id": "after", "contacts": {"email": "a@x"},
            "consent": {"email": true}, "time_zone": "Etc/GMT"}),
        ])
        .await;
    let (status, body) = fleet
        .post(
            "/v1/campaigns",
            serde_json::json!({"id": "after-poison", "name": "n", "template": "hi",
                "channels": ["email"], "audience": {"customer_ids": ["after"]}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let report = fleet
        .wait_campaign("after-poison", Duration::from_secs(30))
        .await;
    assert_eq!(report["counts"]["delivered"], 1, "{report}");

    let dead = fleet
        .read_topic(&fleet.topics.dlq(), 2, Duration::from_secs(10))
        .await;
    let reasons: Vec<&str> = dead
        .iter()
        .filter_map(|m| kafka::header(m, dlq_headers::REASON))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("undecodable campaign batch")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unknown campaign nobody-stored-this")),
        "{reasons:?}"
    );
    assert!(dead
        .iter()
        .all(|m| kafka::header(m, dlq_headers::SOURCE_TOPIC) == Some(topic.as_str())));
    assert_eq!(
        fanout
            .stats
            .batches
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "only the real campaign's batch was fanned out"
    );
}
