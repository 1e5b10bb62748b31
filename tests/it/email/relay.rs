//! What a real relay does to Herald: a login in the SMTP URL, a late answer to DATA, a
//! dispatcher killed mid-send.

use super::*;

/// A server that requires AUTH: the right login from the URL sends; a wrong password is a
/// refusal (535), so the customer falls back to the next channel rather than waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_login_in_the_smtp_url_is_used_and_a_wrong_one_falls_back() {
    let catcher = Catcher::start_with(&["--auth", "herald:s3cret-pass"]);
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let stop = fleet.shutdown.child_token();
    fleet.start_fanout(stop.clone()).await;
    fleet.start_retry(stop.clone()).await;
    fleet.start_dispatcher(Channel::Push, stop.clone()).await;
    let login = |password: &str| ProvidersArgs {
        smtp_url: Some(
            format!("smtp://herald:{password}@127.0.0.1:{}", catcher.port)
                .as_str()
                .into(),
        ),
        ..smtp_providers(&fleet, &catcher)
    };
    let wrong = fleet.shutdown.child_token();
    fleet
        .start_dispatcher_through(
            Channel::Email,
            wrong.clone(),
            fleet.provider_args(),
            login("nope"),
        )
        .await;
    put_customers(&fleet, &ids("a", 2), true).await;
    post_campaign(&fleet, "wrong-login", &ids("a", 2)).await;
    let report = fleet
        .wait_campaign("wrong-login", Duration::from_secs(30))
        .await;
    assert_eq!(report["counts"]["delivered:push"], 2, "{report}");
    assert!(catcher.messages().is_empty());
    wrong.cancel();

    fleet
        .start_dispatcher_through(
            Channel::Email,
            stop,
            fleet.provider_args(),
            login("s3cret-pass"),
        )
        .await;
    post_campaign(&fleet, "right-login", &ids("a", 2)).await;
    let report = fleet
        .wait_campaign("right-login", Duration::from_secs(30))
        .await;
    assert_eq!(report["counts"]["delivered:email"], 2, "{report}");
    assert_eq!(catcher.messages().len(), 2);
}

/// SIGKILL of an e-mail dispatcher (a real process) mid-campaign, then a restart: every
/// customer still holds exactly one message, counted by Message-ID at the server (a resend
/// after the crash carries the same Message-ID).
/// A relay that takes the message and answers the end of DATA only after the dispatcher's
/// time-out: lettre bounds only the connect, so Herald bounds the whole call itself. The
/// unanswered send is then an uncertain send: e-mail's policy is `resend` (config/rules.toml),
/// so it goes again with the same Message-ID, and every second copy the relay holds is a
/// resend counted on the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_answering_data_late_is_timed_out_and_every_second_copy_is_a_counted_resend() {
    let catcher = Catcher::start();
    catcher.control(json!({"late_every": 10, "late_ms": 3000}));
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let stop = fleet.shutdown.child_token();
    fleet.start_fanout(stop.clone()).await;
    fleet.start_retry(stop.clone()).await;
    let mut provider = fleet.provider_args();
    provider.provider_concurrency = 8;
    provider.provider_timeout_ms = 800;
    let (email, _) = fleet
        .start_dispatcher_through(
            Channel::Email,
            stop,
            provider,
            smtp_providers(&fleet, &catcher),
        )
        .await;
    let ids = ids("l", 60);
    put_customers(&fleet, &ids, false).await;
    post_campaign(&fleet, "late", &ids).await;
    let report = fleet.wait_campaign("late", Duration::from_secs(90)).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["counts"]["delivered:email"], 60, "{report}");
    let by = catcher.by_recipient();
    assert_eq!(by.len(), 60, "every customer got the e-mail");
    let copies: u64 = by.values().map(|m| m.len() as u64 - 1).sum();
    let resent = report["counts"]["resent"].as_u64().unwrap_or(0);
    assert!(copies > 0, "late answers were timed out and sent again");
    assert!(
        copies <= resent,
        "{copies} second copies at the relay, {resent} resends counted: {report}"
    );
    let stats = email.providers.provider(0).stats();
    assert!(
        stats
            .network_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= copies,
        "each unanswered DATA was a time-out"
    );
}

/// A killed dispatcher may leave a send uncertain; e-mail's policy (`resend`) sends it again
/// with the same Message-ID. Each customer gets one message id, and every second copy the
/// relay holds is a resend counted on the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_email_dispatcher_gives_each_customer_one_message_id_and_counts_every_copy() {
    let catcher = Catcher::start();
    // A relay's pace, so the kill lands mid-campaign.
    catcher.control(json!({"delay_ms": 20}));
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let stop = fleet.shutdown.child_token();
    fleet.start_fanout(stop.clone()).await;
    fleet.start_retry(stop.clone()).await;
    let ids = ids("k", 400);
    put_customers(&fleet, &ids, false).await;
    let url = catcher.url();
    let args = [
        "--channel",
        "email",
        "--provider-concurrency",
        "8",
        "--smtp-url",
        url.as_str(),
        "--email-from",
        "Tienda <ofertas@shop.test>",
        "--public-url",
        fleet.api_url.as_str(),
    ];
    let dispatch = env!("CARGO_BIN_EXE_herald-dispatch");
    let mut first = fleet.spawn(dispatch, &args);
    let _second = fleet.spawn(dispatch, &args);
    post_campaign(&fleet, "killed", &ids).await;
    wait_until("some e-mails out", Duration::from_secs(30), || async {
        catcher.messages().len() >= 60
    })
    .await;
    first.kill();
    let _restarted = fleet.spawn(dispatch, &args);
    let report = fleet
        .wait_campaign("killed", Duration::from_secs(120))
        .await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["counts"]["delivered:email"], 400, "{report}");
    let by = catcher.by_recipient();
    assert_eq!(by.len(), 400);
    for (to, got) in &by {
        let distinct: HashSet<&str> = got
            .iter()
            .filter_map(|m| m["message_id"].as_str())
            .collect();
        assert_eq!(distinct.len(), 1, "{to}: {got:?}");
    }
    let copies: u64 = by.values().map(|m| m.len() as u64 - 1).sum();
    let resent = report["counts"]["resent"].as_u64().unwrap_or(0);
    assert!(
        copies <= resent,
        "{copies} second copies at the relay, {resent} resends counted: {report}"
    );
}
