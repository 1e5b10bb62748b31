//! Crash tests: campaigns while dispatchers, fan-out and `herald-retry` (real processes) are
//! killed with SIGKILL and restarted, against a provider that counts every delivery (it
//! does not drop a repeated idempotency key, as SMTP, Twilio and FCM do not). What the
//! fleet promises depends on the channel's policy for the uncertain send (a dispatcher
//! killed after the provider call may have gone out, before the slot recorded it):
//! `resend` delivers again, and every extra delivery is one Herald counted as a resend;
//! `skip` never reaches anyone twice and counts the sends it could not vouch for.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use herald::dev::simulator::SimStats;
use herald::model::Channel;
use serde_json::{json, Value};

use crate::harness::{
    assert_every_slot_ended, assert_repeats_are_counted_resends, quiet_provider, ChildGuard, Fleet,
    Slot,
};

/// One of the fleet's processes, restartable.
struct Worker {
    bin: &'static str,
    args: Vec<String>,
    child: ChildGuard,
}

impl Worker {
    fn start(fleet: &Fleet, bin: &'static str, args: &[&str]) -> Worker {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = spawn(fleet, bin, &args);
        Worker { bin, args, child }
    }

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
        self.child = spawn(fleet, self.bin, &self.args);
        exit
    }
}

fn spawn(fleet: &Fleet, bin: &str, args: &[String]) -> ChildGuard {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fleet.spawn(bin, &args)
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

/// Channel rules with `policy` for e-mail and push, written where fan-out and retry read them.
pub(crate) fn rules_with_policy(policy: &str) -> std::path::PathBuf {
    let default = std::fs::read_to_string(crate::harness::repo_file("config/rules.toml")).unwrap();
    let rules = default
        .lines()
        .filter(|l| !l.starts_with("uncertain_send"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            "[channels.email]\n",
            &format!("[channels.email]\nuncertain_send = \"{policy}\"\n"),
        )
        .replace(
            "[channels.push]\n",
            &format!("[channels.push]\nuncertain_send = \"{policy}\"\n"),
        );
    let set = rules
        .lines()
        .filter(|l| l.starts_with("uncertain_send"))
        .count();
    assert_eq!(set, 2, "{rules}");
    let path = std::env::temp_dir().join(format!("herald-rules-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, rules).unwrap();
    path
}

/// How a crash run ended.
struct CrashRun {
    report: Value,
    sim: SimStats,
    /// Every slot's fields, by customer.
    slots: HashMap<String, Slot>,
    dispatcher_kills: u64,
    /// Process ids of the processes killed, with when (ms since the epoch, taken just before
    /// the signal).
    killed: Vec<(String, u64)>,
}

impl CrashRun {
    fn count(&self, k: &str) -> u64 {
        self.report["counts"][k].as_u64().unwrap_or(0)
    }
}

/// Dispatchers in-flight at most, per process: what one SIGKILL can leave uncertain.
const MAX_IN_FLIGHT: u64 = 64;

/// A campaign to `n` customers with the uncertain-send `policy` while one process is
/// SIGKILLed and restarted every second, each kind at least once.
async fn crash_run(policy: &str, n: usize, receipt_loss_rate: f64, timeout_ms: u64) -> CrashRun {
    let mut sim = quiet_provider();
    // A real provider's latency, so that kills land inside calls.
    sim.latency_min_ms = 5;
    sim.latency_max_ms = 40;
    // Some calls hang (then fail): a copy or a redelivery after a rebalance then meets a
    // slot its live owner is still sending.
    sim.hang_rate = 0.03;
    sim.hang_ms = 1500;
    sim.receipt_loss_rate = receipt_loss_rate;
    let fleet = Fleet::start(sim, 8).await;
    let ids: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    put_email_push_customers(&fleet, &ids).await;

    let rules = rules_with_policy(policy);
    let rules = rules.to_str().unwrap();
    let dispatch = env!("CARGO_BIN_EXE_herald-dispatch");
    let in_flight = MAX_IN_FLIGHT.to_string();
    let email = ["--channel", "email", "--max-in-flight", &in_flight];
    let push = ["--channel", "push", "--max-in-flight", &in_flight];
    let mut workers = [
        Worker::start(&fleet, dispatch, &email),
        Worker::start(&fleet, dispatch, &email),
        Worker::start(&fleet, dispatch, &push),
        Worker::start(&fleet, dispatch, &push),
        Worker::start(
            &fleet,
            env!("CARGO_BIN_EXE_herald-fanout"),
            &["--rules", rules],
        ),
        Worker::start(
            &fleet,
            env!("CARGO_BIN_EXE_herald-retry"),
            &["--rules", rules],
        ),
        Worker::start(
            &fleet,
            env!("CARGO_BIN_EXE_herald-retry"),
            &["--rules", rules],
        ),
    ];
    post_campaign(&fleet, "crash", &ids, timeout_ms).await;
    // Copies of the first deliveries, handled alongside their originals by live owners.
    let copying = fleet.shutdown.child_token();
    let copies = fleet.duplicate_messages(
        vec![
            fleet.topics.notify(Channel::Email),
            fleet.topics.notify(Channel::Push),
        ],
        3000,
        copying.clone(),
    );

    // The kills start once the campaign is under way: under a full parallel test run the
    // freshly started workers can take seconds to join their groups, and kills that all land
    // before the first send test nothing (one CI run saw no outcome at any of the nine).
    crate::harness::wait_until(
        "the campaign's first outcome",
        Duration::from_secs(60),
        || async {
            let (_, now) = fleet.get("/v1/campaigns/crash").await;
            now["progress"]["outcomes"].as_u64().unwrap_or(0) > 0
        },
    )
    .await;
    let victims = [0, 5, 2, 4, 6, 1, 3, 5, 0];
    let mut outcomes_at_kills = Vec::new();
    let mut killed = Vec::new();
    let outcomes = || async {
        let (_, now) = fleet.get("/v1/campaigns/crash").await;
        now["progress"]["outcomes"].as_u64().unwrap_or(0)
    };
    for victim in victims {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // Each kill waits for sends to be under way again: the groups rebalance after every
        // kill, and on a loaded machine one CI run sat at the same 87 outcomes through all
        // nine kills, so none landed inside a provider call.
        let before = outcomes_at_kills.last().copied().unwrap_or(0);
        crate::harness::wait_until("sends under way again", Duration::from_secs(30), || async {
            let now = outcomes().await;
            now > before || now >= n as u64
        })
        .await;
        outcomes_at_kills.push(outcomes().await);
        killed.push((
            workers[victim].child.id().to_string(),
            herald::model::now_ms(),
        ));
        workers[victim]
            .replace(&fleet, "-KILL", Duration::from_secs(10))
            .await;
    }
    assert!(
        outcomes_at_kills[2] < n as u64,
        "the kills must land mid-campaign: {outcomes_at_kills:?}"
    );
    let report = fleet.wait_campaign("crash", Duration::from_secs(240)).await;
    copying.cancel();
    let copied = copies.await.unwrap();
    assert!(copied > 1000, "copies were made: {copied}");
    eprintln!(
        "[{policy}] copies {copied}; outcomes at each kill: {outcomes_at_kills:?}; final: {report}"
    );
    let sim = fleet.sim_stats().await;
    let slots = fleet.slots("crash", &ids).await;
    let _ = std::fs::remove_file(rules);
    CrashRun {
        report,
        sim,
        slots,
        dispatcher_kills: victims.iter().filter(|v| **v < 4).count() as u64,
        killed,
    }
}

/// Every slot sent again or left uncertain was taken over from a dispatcher that had been
/// killed by then (its kill came before the takeover the slot records in `pt`): a live
/// owner's slot taken over (a broken owner or lease check) fails this, and so does one taken
/// from a process killed only later in the run.
fn assert_only_killed_owners_left_uncertain_sends(run: &CrashRun) {
    let mut takeovers = 0;
    for (customer, slot) in &run.slots {
        let taken_over =
            slot.get("rs").is_some() || slot.get("st").map(String::as_str) == Some("uncertain");
        if !taken_over {
            continue;
        }
        // Handed back by its live owner after an attempt that timed out (`pr`, no takeover
        // since): a counted resend, not a takeover; the resend counts below hold it.
        if slot.get("pr").is_some() && slot.get("pt").is_none() {
            continue;
        }
        takeovers += 1;
        let previous = slot.get("po").map(String::as_str).unwrap_or("");
        let pid = previous.split('-').next().unwrap_or("");
        let at: u64 = slot
            .get("pt")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{customer}: a takeover records its time; slot {slot:?}"));
        let killed_at = run.killed.iter().find(|(k, _)| k == pid).map(|(_, t)| *t);
        assert!(
            killed_at.is_some_and(|t| t <= at),
            "{customer}: its send was taken over at {at} from {previous:?}, which was killed at {killed_at:?} (kills: {:?}); slot {slot:?}",
            run.killed
        );
    }
    eprintln!("{takeovers} takeovers, each from an owner already killed");
}

/// Every recipient ended delivered, failed or uncertain, and no slot is stuck in between.
fn assert_one_outcome_each(run: &CrashRun, n: usize) {
    let report = &run.report;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(
        run.count("delivered") + run.count("failed") + run.count("uncertain"),
        n as u64,
        "one outcome per recipient: {report}"
    );
    assert_eq!(
        run.count("delivered:email") + run.count("delivered:push"),
        run.count("delivered"),
        "{report}"
    );
    assert_every_slot_ended(&run.slots);
    let uncertain_slots = run
        .slots
        .values()
        .filter(|s| s.get("st").map(String::as_str) == Some("uncertain"))
        .count() as u64;
    assert_eq!(uncertain_slots, run.count("uncertain"), "{report}");
}

/// Policy `resend` (at least once): a send a kill left uncertain goes again with the same
/// idempotency key. Against a counting provider that is a second delivery, and every one
/// of them must be a resend Herald recorded on that very slot: any other duplicate (two
/// live owners sending at once) fails the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_resend_every_extra_delivery_is_a_counted_resend_of_a_killed_send() {
    const N: usize = 12_000;
    let run = crash_run("resend", N, 0.05, 1500).await;
    assert_one_outcome_each(&run, N);
    assert_only_killed_owners_left_uncertain_sends(&run);
    assert_eq!(run.count("uncertain"), 0, "{}", run.report);
    assert!(
        run.count("fallbacks:push") > 0,
        "lost receipts caused fallbacks: {}",
        run.report
    );
    let sim = &run.sim;
    assert_repeats_are_counted_resends(sim, &run.slots);
    assert!(
        run.count("resent") > 0,
        "dispatcher kills landed inside provider calls and were resent: {}",
        run.report
    );
    assert!(
        sim.extra_deliveries <= run.count("resent"),
        "{sim:?} {}",
        run.report
    );
    assert!(
        run.count("resent") <= run.dispatcher_kills * MAX_IN_FLIGHT,
        "resends are bounded by what the kills left in flight: {}",
        run.report
    );
}

/// Policy `skip` (at most once): nobody is reached twice, on one channel or two; what the
/// kills left uncertain is counted, never sent again, and bounded by what was in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_skip_nobody_is_reached_twice_and_the_uncertain_sends_are_counted() {
    const N: usize = 12_000;
    // No lost receipts and a long time-out: no fallback, so a second message could only
    // come from a resend.
    let run = crash_run("skip", N, 0.0, 60_000).await;
    assert_one_outcome_each(&run, N);
    assert_only_killed_owners_left_uncertain_sends(&run);
    let sim = &run.sim;
    assert_eq!(sim.keys_delivered_twice, 0, "{sim:?}");
    assert_eq!(sim.recipients_reached_twice, 0, "{sim:?}");
    assert_eq!(run.count("resent"), 0, "{}", run.report);
    assert!(
        run.count("uncertain") > 0,
        "dispatcher kills landed inside provider calls: {}",
        run.report
    );
    assert!(
        run.count("uncertain") <= run.dispatcher_kills * MAX_IN_FLIGHT,
        "{}",
        run.report
    );
    // Every uncertain customer was reached at most once, and nobody else was left out.
    assert_eq!(
        run.count("delivered") + run.count("uncertain"),
        N as u64,
        "{}",
        run.report
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
    let mut workers = [
        Worker::start(&fleet, dispatch, &["--channel", "email"]),
        Worker::start(&fleet, dispatch, &["--channel", "email"]),
        Worker::start(&fleet, dispatch, &["--channel", "push"]),
        Worker::start(&fleet, env!("CARGO_BIN_EXE_herald-fanout"), &[]),
        Worker::start(&fleet, env!("CARGO_BIN_EXE_herald-retry"), &[]),
    ];
    // Receipts are never lost here, so a long time-out costs nothing; a short one turned
    // receipts slowed by a loaded CI machine into fallbacks and exhausted customers, which
    // this test is not about.
    post_campaign(&fleet, "rolling", &ids, 20_000).await;

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
