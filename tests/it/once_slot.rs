//! The once-slot without crashes: copies of one campaign delivery handled at the same time
//! contact the customer once, and nothing counts as an uncertain send. A claim that took
//! over a live owner's slot (a broken owner or lease check) shows here as a second
//! delivery or a resend.

use std::time::Duration;

use herald::model::Channel;
use serde_json::json;

use crate::harness::{quiet_provider, Fleet};

#[tokio::test]
async fn copies_in_flight_together_contact_the_customer_once_and_resend_nothing() {
    const N: usize = 300;
    let mut sim = quiet_provider();
    // Slow enough that a copy is claimed while the first is inside its provider call.
    sim.latency_min_ms = 100;
    sim.latency_max_ms = 200;
    let fleet = Fleet::start(sim, 2).await;
    let customers = (0..N)
        .map(|i| {
            json!({"id": format!("o{i}"), "contacts": {"email": format!("o{i}@x")},
                        "consent": {"email": true}, "time_zone": "Etc/GMT"})
        })
        .collect();
    fleet.put_customers(customers).await;
    let stop = fleet.shutdown.child_token();
    fleet.start_fanout(stop.clone()).await;
    let ids: Vec<String> = (0..N).map(|i| format!("o{i}")).collect();
    let (status, body) = fleet
        .post(
            "/v1/campaigns",
            json!({"id": "copies", "name": "copies", "template": "hi {{id}}",
                   "channels": ["email"], "confirmation_timeout_ms": {"email": 60_000},
                   "audience": {"customer_ids": ids}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    // Every delivery twice on the topic, the copy right behind the original.
    let topic = fleet.topics.notify(Channel::Email);
    let originals = fleet.read_topic(&topic, N, Duration::from_secs(30)).await;
    assert_eq!(originals.len(), N);
    fleet.publish_copies(&topic, &originals).await;
    let (dispatcher, _) = fleet.start_dispatcher(Channel::Email, stop).await;

    let report = fleet.wait_campaign("copies", Duration::from_secs(60)).await;
    let count = |k: &str| report["counts"][k].as_u64().unwrap_or(0);
    assert_eq!(count("delivered"), N as u64, "{report}");
    assert_eq!(count("resent"), 0, "no crash, no resend: {report}");
    assert_eq!(count("uncertain"), 0, "{report}");
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.extra_deliveries, 0, "{sim:?}");
    assert_eq!(sim.distinct_keys, N as u64, "{sim:?}");
    let stats = &dispatcher.stats;
    let read = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(read(&stats.resent), 0);
    assert_eq!(read(&stats.sent_after_lost_lease), 0);
}
