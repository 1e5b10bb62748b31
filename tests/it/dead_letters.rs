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

/// A customer whose message renders past the size limit (a template of placeholders filled
/// with long attributes) is failed and dead-lettered; the others are sent, the campaign
/// completes, and fan-out goes on with the next campaign.
#[tokio::test]
async fn a_message_that_renders_too_big_is_dead_lettered_and_the_campaign_completes() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let stop = fleet.shutdown.child_token();
    fleet.start_fanout(stop.clone()).await;
    fleet.start_dispatcher(Channel::Email, stop).await;
    let person = |id: &str, a: &str| {
        serde_json::json!({"id": id, "contacts": {"email": format!("{id}@x.example")},
            "consent": {"email": true}, "time_zone": "Etc/GMT", "attributes": {"a": a}})
    };
    fleet
        .put_customers(vec![
            person("huge", &"x".repeat(1024)),
            person("small", "y"),
        ])
        .await;
    // 100 placeholders: 500 bytes of template, 100 KiB once filled with 1 KiB.
    let template = "{{a}}".repeat(100);
    for (id, audience) in [("too-big", vec!["huge", "small"]), ("next", vec!["small"])] {
        let (status, body) = fleet
            .post(
                "/v1/campaigns",
                serde_json::json!({"id": id, "name": "n", "template": template,
                    "channels": ["email"], "audience": {"customer_ids": audience}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let report = fleet
        .wait_campaign("too-big", Duration::from_secs(30))
        .await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["counts"]["delivered"], 1, "{report}");
    assert_eq!(report["counts"]["failed:too_large"], 1, "{report}");
    let next = fleet.wait_campaign("next", Duration::from_secs(30)).await;
    assert_eq!(next["counts"]["delivered"], 1, "fan-out carried on: {next}");

    let dead = fleet
        .read_topic(&fleet.topics.dlq(), 1, Duration::from_secs(10))
        .await;
    assert_eq!(dead.len(), 1);
    assert!(
        kafka::header(&dead[0], dlq_headers::REASON).is_some_and(|r| r.contains("64 KiB")),
        "{:?}",
        kafka::header(&dead[0], dlq_headers::REASON)
    );

    let (status, body) = fleet
        .post(
            "/v1/campaigns",
            serde_json::json!({"id": "long", "name": "n", "template": "x".repeat(17 * 1024),
                "channels": ["email"], "audience": {"customer_ids": ["small"]}}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("template")),
        "{body}"
    );
}
