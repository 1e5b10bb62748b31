//! The crash test of issue 3: a 20,000-recipient campaign while dispatchers, fan-out and
//! `herald-retry` (real processes) are killed with SIGKILL and restarted. At the end every
//! recipient has exactly one outcome and the provider never delivered a key twice.

use std::process::Command;
use std::time::Duration;

use futures::future::join_all;
use herald::model::{CampaignId, CustomerId};
use serde_json::json;

use crate::harness::{quiet_provider, ChildGuard, Fleet};

const RECIPIENTS: usize = 20_000;

/// One of the fleet's processes, restartable.
struct Worker {
    bin: &'static str,
    args: &'static [&'static str],
    child: ChildGuard,
}

impl Worker {
    /// Sends `signal`, waits up to `limit` for the process to exit, starts a new one;
    /// returns the old one's exit.
    async fn replace(
        &mut self,
        fleet: &Fleet,
        signal: &str,
        limit: Duration,
    ) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
        let exit = self.child.wait_exit(limit).await;
        self.child = fleet.spawn(self.bin, self.args);
        exit
    }
}

type Spec = (&'static str, &'static [&'static str]);

fn start_workers(fleet: &Fleet, specs: &[Spec]) -> Vec<Worker> {
    specs
        .iter()
        .map(|(bin, args)| Worker {
            bin,
            args,
            child: fleet.spawn(bin, args),
        })
        .collect()
}

/// Customers reachable by e-mail and push, in a zone where quiet hours do not matter
/// (SMS is not used).
async fn put_email_push_customers(fleet: &Fleet, ids: &[String]) {
    fleet
        .put_customers(
            ids.iter()
                .map(|id| {
                    json!({"id": id, "contacts": {"email": format!("{id}@x"), "push": format!("tok-{id}")},
                           "consent": {"email": true, "push": true}, "time_zone": "Etc/GMT"})
                })
                .collect(),
        )
        .await;
}

/// Posts an e-mail-then-push campaign to `ids`.
async fn post_campaign(fleet: &Fleet, id: &str, ids: &[String], timeout_ms: u64) {
    let (status, created) = fleet
        .post(
            "/v1/campaigns",
            json!({"id": id, "name": id, "template": "offer for {{id}}",
                   "channels": ["email", "push"],
                   "confirmation_timeout_ms": {"email": timeout_ms, "push": timeout_ms},
                   "audience": {"customer_ids": ids}}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_dispatchers_fanout_and_retry_mid_campaign_leaves_one_outcome_each() {
    let mut sim = quiet_provider();
    // A real provider answers a repeated idempotency key from its first result; a crash
    // between the provider's accept and the record of it makes Herald ask again.
    sim.idempotent = true;
    sim.receipt_loss_rate = 0.05;
    let fleet = Fleet::start(sim, 8).await;
    let ids: Vec<String> = (0..RECIPIENTS).map(|i| format!("k{i}")).collect();
    put_email_push_customers(&fleet, &ids).await;

    let dispatch = env!("CARGO_BIN_EXE_herald-dispatch");
    let specs: [Spec; 7] = [
        (dispatch, &["--channel", "email"]),
        (dispatch, &["--channel", "email"]),
        (dispatch, &["--channel", "push"]),
        (dispatch, &["--channel", "push"]),
        (env!("CARGO_BIN_EXE_herald-fanout"), &[]),
        (env!("CARGO_BIN_EXE_herald-retry"), &[]),
        (env!("CARGO_BIN_EXE_herald-retry"), &[]),
    ];
    let mut workers = start_workers(&fleet, &specs);
    post_campaign(&fleet, "crash", &ids, 1500).await;

    // Kill one process every 1.5 s, each kind at least once, and start it again.
    let mut outcomes_at_kills = Vec::new();
    for victim in [0, 5, 2, 4, 6, 1, 3, 5, 0] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (_, now) = fleet.get("/v1/campaigns/crash").await;
        outcomes_at_kills.push(now["progress"]["outcomes"].as_u64().unwrap_or(0));
        workers[victim]
            .replace(&fleet, "-KILL", Duration::from_secs(10))
            .await;
    }

    let report = fleet.wait_campaign("crash", Duration::from_secs(240)).await;
    eprintln!("outcomes at each kill: {outcomes_at_kills:?}; final: {report}");
    assert!(
        outcomes_at_kills[2] < RECIPIENTS as u64,
        "the kills must land mid-campaign: {outcomes_at_kills:?}"
    );
    let count = |k: &str| report["counts"][k].as_u64().unwrap_or(0);
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(
        count("delivered") + count("failed"),
        RECIPIENTS as u64,
        "one outcome per recipient: {report}"
    );
    assert_eq!(
        count("delivered:email") + count("delivered:push"),
        count("delivered"),
        "{report}"
    );
    assert_eq!(count("failed"), count("failed:exhausted"), "{report}");
    assert!(
        count("fallbacks:push") > 0,
        "lost receipts caused fallbacks: {report}"
    );

    let sim = fleet.sim_stats().await;
    assert!(sim.max_deliveries_per_key <= 1, "{sim:?}");
    assert_eq!(sim.keys_delivered_twice, 0, "{sim:?}");

    // Every once-slot ended delivered or failed; none is stuck in between.
    let campaign = CampaignId::parse("crash").unwrap();
    let mut stuck = Vec::new();
    for chunk in ids.chunks(500) {
        let slots = join_all(chunk.iter().map(|id| {
            let (store, campaign) = (fleet.store.clone(), campaign.clone());
            let id = CustomerId::parse(id).unwrap();
            async move { (id.clone(), store.slot(&campaign, &id).await.unwrap()) }
        }))
        .await;
        stuck.extend(slots.into_iter().filter(|(_, s)| {
            !matches!(
                s.get("st").map(String::as_str),
                Some("delivered" | "failed")
            )
        }));
    }
    assert!(
        stuck.is_empty(),
        "{} slots not terminal, e.g. {:?}",
        stuck.len(),
        stuck.first()
    );
}

/// Issue 7: an upgrade stops every process with SIGTERM mid-campaign. Each exits 0, its
/// successor carries on, and with a provider that does *not* drop repeated keys nothing is
/// delivered twice and nobody is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_to_every_process_mid_campaign_loses_nothing_and_sends_nothing_twice() {
    const N: usize = 4_000;
    let mut sim = quiet_provider();
    sim.idempotent = false;
    sim.latency_min_ms = 5;
    sim.latency_max_ms = 30;
    let fleet = Fleet::start(sim, 4).await;
    let ids: Vec<String> = (0..N).map(|i| format!("t{i}")).collect();
    put_email_push_customers(&fleet, &ids).await;
    let dispatch = env!("CARGO_BIN_EXE_herald-dispatch");
    let specs: [Spec; 5] = [
        (dispatch, &["--channel", "email"]),
        (dispatch, &["--channel", "email"]),
        (dispatch, &["--channel", "push"]),
        (env!("CARGO_BIN_EXE_herald-fanout"), &[]),
        (env!("CARGO_BIN_EXE_herald-retry"), &[]),
    ];
    let mut workers = start_workers(&fleet, &specs);
    post_campaign(&fleet, "rolling", &ids, 3000).await;

    // A rolling restart: each process in turn gets SIGTERM, must exit 0, and is replaced.
    let mut finished_at_stops = Vec::new();
    for victim in [0, 3, 1, 4, 2] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (_, now) = fleet.get("/v1/campaigns/rolling").await;
        finished_at_stops.push(now["progress"]["outcomes"].as_u64().unwrap_or(0));
        let w = &mut workers[victim];
        let exit = w.replace(&fleet, "-TERM", Duration::from_secs(30)).await;
        assert!(
            exit.success(),
            "{} {:?} exited {exit:?} on SIGTERM",
            w.bin,
            w.args
        );
    }

    let report = fleet
        .wait_campaign("rolling", Duration::from_secs(180))
        .await;
    eprintln!("finished at each stop: {finished_at_stops:?}; final: {report}");
    assert!(
        finished_at_stops[1] < N as u64,
        "the stops must land mid-campaign: {finished_at_stops:?}"
    );
    let count = |k: &str| report["counts"][k].as_u64().unwrap_or(0);
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(count("delivered"), N as u64, "nobody lost: {report}");
    assert_eq!(count("failed"), 0, "{report}");
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.keys_delivered_twice, 0, "nothing sent twice: {sim:?}");
    assert!(sim.max_deliveries_per_key <= 1, "{sim:?}");
}
