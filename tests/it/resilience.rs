//! Seed 001's judgement: a provider that fails, rate-limits and hangs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use herald::model::Channel;

use crate::harness::{quiet_provider, Fleet};

#[tokio::test]
async fn five_hundred_requests_through_a_failing_rate_limited_provider_all_end() {
    let mut sim = quiet_provider();
    sim.error_rate = 0.2;
    sim.rate_limit = 10;
    sim.rate_window_ms = 1000;
    sim.hang_rate = 0.02;
    sim.hang_ms = 3000;
    let fleet = Fleet::start(sim, 4).await;
    let (d, _) = fleet
        .start_dispatcher(Channel::Email, fleet.shutdown.child_token())
        .await;
    let (ids, http_statuses) = fleet.submit(500, "email").await;
    assert!(
        http_statuses.iter().all(|s| *s < 500),
        "the API never answers 5xx"
    );

    let counts = fleet.wait_terminal(&ids, Duration::from_secs(240)).await;
    let sent = counts.get("sent").copied().unwrap_or(0);
    let failed = counts.get("failed").copied().unwrap_or(0);
    assert_eq!(
        sent + failed,
        500,
        "every request ends sent or failed: {counts:?}"
    );
    assert!(
        sent >= 490,
        "retries carry nearly everything through 20% errors: {counts:?}"
    );

    let sim = fleet.sim_stats().await;
    eprintln!(
        "provider saw: {sim:?}; adaptive rate now {:.1}/s",
        d.providers.provider(0).current_rate()
    );
    assert_eq!(
        sim.keys_delivered_twice, 0,
        "no idempotency key succeeded twice"
    );
    assert_eq!(sim.delivered as usize, sent);
    // The adaptive limit keeps 429s a small share of calls rather than a storm.
    assert!(sim.rate_limited * 10 < sim.calls, "429 storm: {sim:?}");
    assert_eq!(d.stats.sent.load(Ordering::Relaxed) as usize, sent);
}
