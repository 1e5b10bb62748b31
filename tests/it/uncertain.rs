//! The uncertain send under load: a provider that delivers every call but answers some only
//! after the dispatcher's time-out (`late_answer_rate`), counting every delivery (it does not
//! drop a repeated idempotency key, as SMTP relays, Twilio, Meta and FCM do not). Whatever the
//! channel's `uncertain_send` policy, the figures add up against that count: under `skip`
//! nobody is reached twice and every unanswered call is counted `uncertain`; under `resend`
//! every extra delivery is a counted resend.

use std::time::Duration;

use serde_json::{json, Value};

use crate::campaign_crash::rules_with_policy;
use crate::harness::{assert_repeats_are_counted_resends, quiet_provider, Fleet};

/// Calls delivered at once but answered after `LATE_MS`, well past the dispatchers' 600 ms
/// time-out; their receipts come 4 s after delivery, after the dispatcher gave up waiting.
const LATE_MS: u64 = 2_500;

fn count(report: &Value, key: &str) -> u64 {
    report["counts"][key].as_u64().unwrap_or(0)
}

/// A campaign to `n` e-mail-only customers, sent by one e-mail dispatcher process with a
/// 600 ms provider time-out, under `policy`; returns the final report.
async fn late_answers_campaign(fleet: &Fleet, policy: &str, n: usize) -> Value {
    let ids: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
    fleet
        .put_customers(
            ids.iter()
                .map(|id| {
                    json!({"id": id, "contacts": {"email": format!("{id}@x")},
                           "consent": {"email": true}, "time_zone": "Etc/GMT"})
                })
                .collect(),
        )
        .await;
    let rules = rules_with_policy(policy);
    let rules = rules.to_str().unwrap();
    let _workers = [
        fleet.spawn(
            env!("CARGO_BIN_EXE_herald-dispatch"),
            &[
                "--channel",
                "email",
                "--provider-timeout-ms",
                "600",
                "--provider-backoff-ms",
                "20",
            ],
        ),
        fleet.spawn(env!("CARGO_BIN_EXE_herald-fanout"), &["--rules", rules]),
        fleet.spawn(env!("CARGO_BIN_EXE_herald-retry"), &["--rules", rules]),
    ];
    let (status, created) = fleet
        .post(
            "/v1/campaigns",
            json!({"id": "late", "name": "late", "template": "offer for {{id}}",
                   "channels": ["email"], "confirmation_timeout_ms": {"email": 60_000},
                   "audience": {"customer_ids": ids}}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let report = fleet.wait_campaign("late", Duration::from_secs(120)).await;
    let _ = std::fs::remove_file(rules);
    report
}

fn late_provider() -> herald::dev::simulator::SimulatorArgs {
    let mut sim = quiet_provider();
    sim.late_answer_rate = 0.1;
    sim.late_answer_ms = LATE_MS;
    sim.receipt_delay_ms = 4_000;
    sim
}

/// Policy `skip` (at most once): an unanswered call is never made again, on this provider or
/// any other; the slot ends `uncertain`, counted on the report, and the provider's own count
/// shows nobody reached twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_skip_a_call_answered_after_the_time_out_is_counted_uncertain_and_never_repeated() {
    const N: usize = 300;
    let fleet = Fleet::start(late_provider(), 2).await;
    let report = late_answers_campaign(&fleet, "skip", N).await;
    let sim = fleet.sim_stats().await;
    eprintln!("{sim:?}\n{report}");
    assert_eq!(report["status"], "completed", "{report}");
    assert!(sim.late_answers > 0, "the fault was made: {sim:?}");
    assert_eq!(sim.keys_delivered_twice, 0, "{sim:?}");
    assert_eq!(sim.recipients_reached_twice, 0, "{sim:?}");
    assert_eq!(count(&report, "resent"), 0, "{report}");
    // An unanswered call ends `uncertain`, unless its receipt came before the dispatcher's
    // next turn (a rate-limited queue can delay it past the 4 s): then the receipt proves it
    // delivered, recorded sent without an acceptance (not under `provider:http`).
    let settled_by_receipt = count(&report, "delivered") - count(&report, "provider:http");
    assert_eq!(
        count(&report, "uncertain") + settled_by_receipt,
        sim.late_answers,
        "every unanswered call counted uncertain or settled by its receipt: {report}"
    );
    assert_eq!(
        count(&report, "delivered") + count(&report, "uncertain"),
        N as u64,
        "{report}"
    );
    assert_eq!(
        sim.delivered, N as u64,
        "every call delivered once: {sim:?}"
    );
}

/// Policy `resend` (at least once): an unanswered call is made again with the same key, each
/// time counted `resent` on the slot and the report; the provider's extra deliveries are
/// exactly those resends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_resend_every_extra_delivery_of_an_unanswered_call_is_a_counted_resend() {
    const N: usize = 300;
    let fleet = Fleet::start(late_provider(), 2).await;
    let report = late_answers_campaign(&fleet, "resend", N).await;
    let sim = fleet.sim_stats().await;
    eprintln!("{sim:?}\n{report}");
    assert_eq!(report["status"], "completed", "{report}");
    assert!(sim.extra_deliveries > 0, "calls were repeated: {sim:?}");
    assert!(count(&report, "resent") > 0, "{report}");
    assert!(
        sim.extra_deliveries <= count(&report, "resent"),
        "extra deliveries {} against resends counted {}: {report}",
        sim.extra_deliveries,
        count(&report, "resent")
    );
    let ids: Vec<String> = (0..N).map(|i| format!("u{i}")).collect();
    let slots = fleet.slots("late", &ids).await;
    assert_repeats_are_counted_resends(&sim, &slots);
    assert_eq!(count(&report, "uncertain"), 0, "{report}");
}

/// Seed 001 requests are sent at most once: a request whose call went unanswered ends
/// `failed` (its reason says uncertain) and is never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_whose_call_went_unanswered_is_not_sent_again() {
    let mut sim = late_provider();
    sim.receipt_url = None;
    let fleet = Fleet::start(sim, 2).await;
    let _dispatcher = fleet.spawn(
        env!("CARGO_BIN_EXE_herald-dispatch"),
        &["--channel", "email", "--provider-timeout-ms", "600"],
    );
    let (ids, statuses) = fleet.submit(200, "email").await;
    assert!(
        statuses.iter().all(|s| (200..=202).contains(s)),
        "{statuses:?}"
    );
    let counts = fleet.wait_terminal(&ids, Duration::from_secs(90)).await;
    let sim = fleet.sim_stats().await;
    eprintln!("{counts:?} {sim:?}");
    assert!(sim.late_answers > 0, "{sim:?}");
    assert_eq!(sim.keys_delivered_twice, 0, "{sim:?}");
    assert_eq!(
        counts.get("failed").copied().unwrap_or(0) as u64,
        sim.late_answers,
        "{counts:?}"
    );
    assert_eq!(sim.delivered, 200, "{sim:?}");
}

/// With `HERALD_REQUEST_UNCERTAIN_SEND=resend` a seed 001 request whose call went unanswered
/// is called again with the same key: every request ends `sent`, and every extra delivery at
/// the counting provider is a resend the dispatcher counted on `/stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_resend_a_request_whose_call_went_unanswered_is_sent_again_and_counted() {
    let mut sim = late_provider();
    sim.receipt_url = None;
    let fleet = Fleet::start(sim, 2).await;
    let port = crate::harness::free_port().to_string();
    let health = format!("127.0.0.1:{port}");
    let _dispatcher = fleet.spawn(
        env!("CARGO_BIN_EXE_herald-dispatch"),
        &[
            "--channel",
            "email",
            "--provider-timeout-ms",
            "600",
            "--request-uncertain-send",
            "resend",
            "--health-addr",
            &health,
        ],
    );
    let (ids, _) = fleet.submit(200, "email").await;
    let counts = fleet.wait_terminal(&ids, Duration::from_secs(90)).await;
    let sim = fleet.sim_stats().await;
    let stats = fleet
        .get_json(&format!("http://{health}/stats"))
        .await
        .expect("the dispatcher's /stats");
    let resent = stats["dispatch"]["resent"].as_u64().unwrap_or(0);
    eprintln!("{counts:?} {sim:?} resent {resent}");
    assert_eq!(counts.get("sent"), Some(&200), "{counts:?}");
    assert!(
        sim.extra_deliveries > 0,
        "unanswered calls were made again: {sim:?}"
    );
    assert!(
        sim.extra_deliveries <= resent,
        "extra deliveries {} against resends counted {resent}",
        sim.extra_deliveries
    );
}
