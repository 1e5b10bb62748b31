//! One effect per request, however Kafka delivers it and whoever dies.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald::dispatch::DispatchStats;
use herald::model::Channel;

use crate::harness::{quiet_provider, ChildGuard, Fleet, API_KEY};

#[tokio::test]
async fn two_dispatchers_in_one_group_handle_each_message_once() {
    let fleet = Fleet::start(quiet_provider(), 8).await;
    let (a, _) = fleet
        .start_dispatcher(Channel::Email, fleet.shutdown.child_token())
        .await;
    let (b, _) = fleet
        .start_dispatcher(Channel::Email, fleet.shutdown.child_token())
        .await;
    // Both in the group before any work arrives, so both get partitions: asked of the group
    // coordinator, not slept on.
    fleet
        .wait_group_members(
            &fleet.topics.dispatch_group(Channel::Email),
            2,
            Duration::from_secs(30),
        )
        .await;
    let (ids, _) = fleet.submit(200, "email").await;
    let counts = fleet.wait_terminal(&ids, Duration::from_secs(60)).await;
    assert_eq!(counts.get("sent"), Some(&200), "{counts:?}");

    let count = |stat: fn(&DispatchStats) -> &AtomicU64| {
        [&a, &b].map(|d| stat(&d.stats).load(Ordering::Relaxed))
    };
    let (received, sent) = (count(|s| &s.received), count(|s| &s.sent));
    assert!(
        received.iter().all(|r| *r > 0),
        "both instances took a share: {received:?}"
    );
    assert_eq!(
        sent.iter().sum::<u64>(),
        200,
        "each message sent by one instance: {sent:?}"
    );
    // A rebalance between the two hands a message whose offset was not committed yet to the
    // other instance: received twice, but the second finds it claimed or sent and drops it.
    let dropped: u64 = count(|s| &s.deduplicated).iter().sum();
    assert_eq!(
        received.iter().sum::<u64>(),
        200 + dropped,
        "every message received is sent once or dropped as a copy: received {received:?}, dropped {dropped}"
    );
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.distinct_keys, 200);
    assert_eq!(sim.keys_delivered_twice, 0);
}

#[tokio::test]
async fn duplicate_kafka_delivery_contacts_the_customer_once() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let (ids, _) = fleet.submit(50, "push").await;
    // Inject a second copy of every notification, as a redelivery would.
    let topic = fleet.topics.notify(Channel::Push);
    let originals = fleet.read_topic(&topic, 50, Duration::from_secs(10)).await;
    assert_eq!(originals.len(), 50);
    fleet.publish_copies(&topic, &originals).await;

    let (d, _) = fleet
        .start_dispatcher(Channel::Push, fleet.shutdown.child_token())
        .await;
    let counts = fleet.wait_terminal(&ids, Duration::from_secs(30)).await;
    assert_eq!(counts.get("sent"), Some(&50), "{counts:?}");
    for _ in 0..100 {
        if d.stats.received.load(Ordering::Relaxed) == 100
            && d.stats.deduplicated.load(Ordering::Relaxed) == 50
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.stats.deduplicated.load(Ordering::Relaxed), 50);
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.max_deliveries_per_key, 1);
    assert_eq!(sim.delivered, 50);
}

fn spawn_dispatcher(fleet: &Fleet, channel: &str) -> ChildGuard {
    spawn_dispatcher_with(fleet, channel, &[])
}

/// A dispatcher process at `rate` provider calls per second at most.
fn spawn_dispatcher_at(fleet: &Fleet, channel: &str, rate: &str) -> ChildGuard {
    spawn_dispatcher_with(
        fleet,
        channel,
        &["--provider-rate", rate, "--provider-max-rate", rate],
    )
}

fn spawn_dispatcher_with(fleet: &Fleet, channel: &str, extra: &[&str]) -> ChildGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_herald-dispatch"))
        .args(["--channel", channel, "--lease-ms", "3000"])
        .args(extra)
        .env("HERALD_KAFKA_BROKERS", fleet.brokers())
        .env("HERALD_REDIS_URL", crate::harness::redis_url())
        .env("HERALD_NAMESPACE", &fleet.ns)
        .env("HERALD_PROVIDER_URL", &fleet.provider_url)
        .env("HERALD_PROVIDER_API_KEY", API_KEY)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn herald-dispatch");
    ChildGuard(Some(child))
}

#[tokio::test]
async fn a_dispatcher_killed_mid_run_leaves_nothing_stuck_at_an_idempotent_provider() {
    let mut sim = quiet_provider();
    sim.latency_min_ms = 20;
    sim.latency_max_ms = 80;
    // A provider that honours idempotency keys, as real ones do: a crash between its success
    // and our record is then replayed, not sent again.
    sim.idempotent = true;
    let fleet = Fleet::start(sim, 4).await;
    // Queued first and sent at 60/s per dispatcher, so the kill lands mid-run however
    // slowly a loaded machine submits.
    let (ids, _) = fleet.submit(400, "email").await;
    let mut first = spawn_dispatcher_at(&fleet, "email", "60");
    let mut second = spawn_dispatcher_at(&fleet, "email", "60");

    // Kill one instance with SIGKILL while work is in flight, then bring it back.
    crate::harness::wait_until(
        "60 deliveries before the kill",
        Duration::from_secs(30),
        || async { fleet.sim_stats().await.delivered >= 60 },
    )
    .await;
    first.kill();
    let mid = fleet.status_counts(&ids).await;
    assert!(
        mid.get("sent").copied().unwrap_or(0) < 400,
        "the kill came mid-run: {mid:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut restarted = spawn_dispatcher(&fleet, "email");

    let counts = fleet.wait_terminal(&ids, Duration::from_secs(90)).await;
    second.kill();
    restarted.kill();
    assert_eq!(
        counts.get("sent"),
        Some(&400),
        "nothing stuck in processing or queued: {counts:?}"
    );
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.distinct_keys, 400);
    assert_eq!(sim.max_deliveries_per_key, 1, "{sim:?}");
    eprintln!("after the kill: {sim:?}");
}

fn free_port() -> u16 {
    crate::harness::free_port()
}

#[tokio::test]
async fn sigterm_finishes_or_hands_back_in_flight_work_and_sends_nothing_twice() {
    let mut sim = quiet_provider();
    sim.latency_min_ms = 30;
    sim.latency_max_ms = 120;
    // Not idempotent: any double send would show.
    let fleet = Fleet::start(sim, 4).await;
    // All queued before the dispatcher starts, so that however slowly a loaded machine
    // submits, the stop below lands mid-run: at 50/s the 300 take six seconds.
    let (ids, _) = fleet.submit(300, "sms").await;
    let port = free_port();
    let mut dispatcher = ChildGuard(Some(
        Command::new(env!("CARGO_BIN_EXE_herald-dispatch"))
            .args([
                "--channel",
                "sms",
                "--lease-ms",
                "3000",
                "--shutdown-grace-ms",
                "300",
            ])
            .args(["--health-addr", &format!("127.0.0.1:{port}")])
            .args(["--provider-rate", "50", "--provider-max-rate", "50"])
            .env("HERALD_KAFKA_BROKERS", fleet.brokers())
            .env("HERALD_REDIS_URL", crate::harness::redis_url())
            .env("HERALD_NAMESPACE", &fleet.ns)
            .env("HERALD_PROVIDER_URL", &fleet.provider_url)
            .env("HERALD_PROVIDER_API_KEY", API_KEY)
            .env(
                "RUST_LOG",
                std::env::var("HERALD_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .unwrap(),
    ));
    let probe = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = fleet.http.get(format!("{probe}/readyz")).send().await {
            ready = r.status().is_success();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "dispatcher reports ready");
    crate::harness::wait_until(
        "50 deliveries before the stop",
        Duration::from_secs(30),
        || async { fleet.sim_stats().await.delivered >= 50 },
    )
    .await;
    let stats: serde_json::Value = fleet
        .http
        .get(format!("{probe}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats["dispatch"]["sent"].as_u64().unwrap() > 0, "{stats}");

    let term = Command::new("kill")
        .args(["-TERM", &dispatcher.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = dispatcher.wait_exit(Duration::from_secs(30)).await;
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
    let after = fleet.status_counts(&ids).await;
    assert_eq!(
        after.get("processing"),
        None,
        "nothing left claimed after a graceful stop: {after:?}"
    );
    assert!(
        after.get("queued").copied().unwrap_or(0) > 0,
        "the stop came mid-run: {after:?}"
    );

    let mut successor = spawn_dispatcher(&fleet, "sms");
    let counts = fleet.wait_terminal(&ids, Duration::from_secs(60)).await;
    successor.kill();
    assert_eq!(counts.get("sent"), Some(&300), "{counts:?}");
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.keys_delivered_twice, 0, "{sim:?}");
    assert_eq!(sim.delivered, 300);
}

/// A dispatcher told to stop while work waits on the provider's rate hands that work back
/// (its offsets stay uncommitted, its claims are released), and the next one sends each of
/// those requests once.
#[tokio::test]
async fn a_stopped_dispatcher_hands_back_what_it_had_not_sent_and_the_next_sends_it_once() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let (ids, _) = fleet.submit(60, "email").await;
    let mut slow = fleet.provider_args();
    slow.provider_rate = 5.0;
    slow.provider_max_rate = 5.0;
    let first_stop = fleet.shutdown.child_token();
    let (first, running) = fleet
        .start_dispatcher_with(Channel::Email, first_stop.clone(), slow)
        .await;
    // A few sent, and more received than the rate lets out before the stop (under a loaded
    // machine the consumer can lag, and a stop with nothing received hands nothing back).
    crate::harness::wait_until(
        "a few sent, more waiting",
        Duration::from_secs(30),
        || async {
            let sent = first.stats.sent.load(Ordering::Relaxed);
            sent >= 3 && first.stats.received.load(Ordering::Relaxed) >= sent + 20
        },
    )
    .await;
    first_stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the dispatcher stops within its grace period")
        .unwrap();
    let handed_back = first.stats.handed_back.load(Ordering::Relaxed);
    let sent_first = first.stats.sent.load(Ordering::Relaxed);
    assert!(handed_back > 0, "work waiting on the rate was handed back");
    assert!(sent_first < 60, "{sent_first}");

    fleet
        .start_dispatcher(Channel::Email, fleet.shutdown.child_token())
        .await;
    let counts = fleet.wait_terminal(&ids, Duration::from_secs(60)).await;
    assert_eq!(counts.get("sent"), Some(&60), "{counts:?}");
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.distinct_keys, 60, "{sim:?}");
    assert_eq!(sim.extra_deliveries, 0, "nothing sent twice: {sim:?}");
}
