//! Redis restarts (with persistence) in the middle of a run: dispatchers ride it out, and
//! every request still ends sent, once.

use std::process::Command;
use std::time::Duration;

use herald::model::Channel;
use serde_json::json;

use crate::harness::{
    assert_every_slot_ended, assert_repeats_are_counted_resends, quiet_provider, ChildGuard, Fleet,
};

struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    fsync: &'static str,
    server: ChildGuard,
}

impl OwnRedis {
    async fn start(port: u16, dir: &std::path::Path, fsync: &str) -> ChildGuard {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", fsync])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ChildGuard(Some(child))
    }

    async fn new() -> OwnRedis {
        OwnRedis::with_fsync("always").await
    }

    async fn with_fsync(fsync: &'static str) -> OwnRedis {
        let port = crate::harness::free_port();
        let dir = std::env::temp_dir().join(format!("herald-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = OwnRedis::start(port, &dir, fsync).await;
        OwnRedis {
            port,
            dir,
            fsync,
            server,
        }
    }

    async fn restart(&mut self, down_for: Duration) {
        let pid = self.server.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.server.wait_exit(Duration::from_secs(10)).await;
        assert!(status.success(), "redis stopped cleanly: {status:?}");
        tokio::time::sleep(down_for).await;
        self.server = OwnRedis::start(self.port, &self.dir, self.fsync).await;
    }

    /// SIGKILL, then a new server that loads the append-only file.
    async fn crash_and_recover(&mut self, down_for: Duration) {
        self.server.kill();
        let _ = self.server.wait_exit(Duration::from_secs(10)).await;
        tokio::time::sleep(down_for).await;
        self.server = OwnRedis::start(self.port, &self.dir, self.fsync).await;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.server.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn dispatchers_ride_out_a_redis_restart() {
    let mut redis = OwnRedis::new().await;
    let mut sim = quiet_provider();
    sim.rate_limit = 100;
    let fleet = Fleet::start_with_redis(sim, 4, &format!("redis://127.0.0.1:{}", redis.port)).await;
    let (ids, _) = fleet.submit(300, "email").await;
    let (dispatcher, _) = fleet
        .start_dispatcher(Channel::Email, fleet.shutdown.child_token())
        .await;
    crate::harness::wait_until(
        "50 deliveries before the restart",
        Duration::from_secs(30),
        || async { fleet.sim_stats().await.delivered >= 50 },
    )
    .await;
    redis.restart(Duration::from_secs(2)).await;

    let counts = fleet.wait_terminal(&ids, Duration::from_secs(60)).await;
    assert_eq!(counts.get("sent"), Some(&300), "{counts:?}");
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.delivered, 300, "{sim:?}");
    assert_eq!(sim.keys_delivered_twice, 0, "{sim:?}");
    let sent = dispatcher
        .stats
        .sent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, 300);
}

/// Redis is SIGKILLed mid-campaign and comes back from its append-only file (fsync always):
/// every recipient still ends with one outcome, nothing is stuck, and every extra delivery
/// is a resend Herald counted on that customer's slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_campaign_survives_redis_killed_and_recovered_from_its_aof() {
    let (sim, report, slots) = campaign_through_a_redis_crash("always").await;
    let count = |k: &str| report["counts"][k].as_u64().unwrap_or(0);
    assert!(sim.extra_deliveries <= count("resent"), "{sim:?} {report}");
    assert_repeats_are_counted_resends(&sim, &slots);
}

/// The same with `appendfsync everysec` (what most Redis deployments run). A machine crash may
/// lose up to a second of slot transitions there; a process crash, as here, does not (the
/// file's writes are in the kernel before any reply): every recipient still ends with one
/// outcome, and every repeat is a counted resend. The figures are printed for
/// docs/operations.md's persistence table (`cargo test --test it with_everysec -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_everysec_a_redis_crash_still_ends_every_recipient_once() {
    let (sim, report, slots) = campaign_through_a_redis_crash("everysec").await;
    let count = |k: &str| report["counts"][k].as_u64().unwrap_or(0);
    eprintln!(
        "persistence everysec: extra deliveries {}, counted resends {}, recipients reached twice {}",
        sim.extra_deliveries,
        count("resent"),
        sim.recipients_reached_twice
    );
    assert!(sim.extra_deliveries <= count("resent"), "{sim:?} {report}");
    assert_repeats_are_counted_resends(&sim, &slots);
}

/// A 3,000-recipient campaign through a Redis SIGKILLed a third of the way and recovered
/// from its append-only file (`fsync`): completed, one outcome per recipient, every slot
/// ended. Returns the provider's counts, the report and the slots.
async fn campaign_through_a_redis_crash(
    fsync: &'static str,
) -> (
    herald::dev::simulator::SimStats,
    serde_json::Value,
    std::collections::HashMap<String, crate::harness::Slot>,
) {
    const N: usize = 3_000;
    let mut redis = OwnRedis::with_fsync(fsync).await;
    let mut sim = quiet_provider();
    sim.latency_min_ms = 5;
    sim.latency_max_ms = 30;
    let fleet = Fleet::start_with_redis(sim, 4, &redis.url()).await;
    let ids: Vec<String> = (0..N).map(|i| format!("r{i}")).collect();
    fleet
        .put_customers(
            ids.iter()
                .map(|id| json!({"id": id, "contacts": {"email": format!("{id}@x"), "push": format!("tok-{id}")},
                                 "consent": {"email": true, "push": true}, "time_zone": "Etc/GMT"}))
                .collect(),
        )
        .await;
    let stop = fleet.shutdown.child_token();
    // At most 500 sends a second, so the crash lands mid-campaign however loaded the machine.
    let mut steady = fleet.provider_args();
    steady.provider_rate = 500.0;
    steady.provider_max_rate = 500.0;
    for channel in [Channel::Email, Channel::Push] {
        fleet
            .start_dispatcher_with(channel, stop.clone(), steady.clone())
            .await;
    }
    fleet.start_fanout(stop.clone()).await;
    fleet.start_retry(stop.clone()).await;
    let (status, body) = fleet
        .post(
            "/v1/campaigns",
            json!({"id": "aof", "name": "aof", "template": "hi {{id}}", "channels": ["email", "push"],
                   "confirmation_timeout_ms": {"email": 5000, "push": 5000},
                   "audience": {"customer_ids": ids}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    crate::harness::wait_until(
        "a third of the campaign sent",
        Duration::from_secs(60),
        || async { fleet.sim_stats().await.delivered >= (N / 3) as u64 },
    )
    .await;
    let (_, before) = fleet.get("/v1/campaigns/aof").await;
    let outcomes_before = before["progress"]["outcomes"].as_u64().unwrap_or(0);
    assert!(
        outcomes_before < N as u64,
        "the crash lands mid-campaign: {before}"
    );
    redis.crash_and_recover(Duration::from_secs(1)).await;

    let report = fleet.wait_campaign("aof", Duration::from_secs(120)).await;
    let count = |k: &str| report["counts"][k].as_u64().unwrap_or(0);
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(
        count("delivered") + count("failed") + count("uncertain"),
        N as u64,
        "one outcome per recipient: {report}"
    );
    let sim = fleet.sim_stats().await;
    let slots = fleet.slots("aof", &ids).await;
    assert_every_slot_ended(&slots);
    eprintln!("redis ({fsync}) crash after {outcomes_before} outcomes: {report} {sim:?}");
    (sim, report, slots)
}

/// Redis stops answering (SIGSTOP) while fifty callers wait on it: every one times out, and
/// the connection is replaced once, not fifty times (the reconnect is single-flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_that_time_out_together_reconnect_once() {
    let redis = OwnRedis::new().await;
    let store = crate::harness::TestStores::connect(&redis.url(), "single-flight")
        .await
        .unwrap();
    store.ping().await.unwrap();
    let pid = redis.server.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.ping().await })
        })
        .collect();
    // Past the 3 s operation time-out, then Redis answers again.
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    let mut timed_out = 0;
    for caller in callers {
        if caller.await.unwrap().is_err() {
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, 50, "every caller timed out");
    store.ping().await.unwrap();
    assert_eq!(
        store.reconnections(),
        1,
        "one replacement for fifty time-outs"
    );
}
