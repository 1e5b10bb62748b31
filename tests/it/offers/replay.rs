//! A customer dead-lettered for want of a channel, fixed and replayed through the CLI.

use super::*;

/// Runs the operators' CLI against this fleet; its standard output.
async fn herald_cli(fleet: &Fleet, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("HERALD_KAFKA_BROKERS", fleet.brokers())
        .env("HERALD_NAMESPACE", &fleet.ns)
        .env("HERALD_REDIS_URL", crate::harness::redis_url())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "herald {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_dead_lettered_for_no_channel_is_delivered_once_after_a_fix_and_a_replay() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let mut mute = customer("mute", &["email"], &daytime());
    mute["consent"]["email"] = json!(false);
    fleet
        .put_customers(vec![customer("ok", &["email"], &daytime()), mute])
        .await;
    let _stop = start_workers(&fleet, &[Channel::Email], 1).await;
    let audience = ["ok", "mute"].map(String::from);
    let (status, _) = fleet
        .post(
            "/v1/campaigns",
            campaign("replay1", &["email"], 5000, &audience),
        )
        .await;
    assert_eq!(status, 202);
    let report = fleet
        .wait_campaign("replay1", Duration::from_secs(30))
        .await;
    assert_eq!(count(&report, "failed:no_channel"), 1, "{report}");
    fleet
        .read_topic(&fleet.topics.dlq(), 1, Duration::from_secs(20))
        .await;

    let listed = herald_cli(&fleet, &["dlq", "list"]).await;
    assert!(
        listed.contains("herald-fanout") && listed.contains("no usable channel"),
        "{listed}"
    );

    // The fix: the customer gives consent. A dry run changes nothing.
    fleet
        .put_customers(vec![customer("mute", &["email"], &daytime())])
        .await;
    let dry = herald_cli(
        &fleet,
        &[
            "dlq",
            "replay",
            "--reason",
            "no usable channel",
            "--dry-run",
        ],
    )
    .await;
    assert!(
        dry.contains("would fan out mute of campaign replay1 again"),
        "{dry}"
    );
    let (_, report) = fleet.get("/v1/campaigns/replay1").await;
    assert_eq!(count(&report, "failed:no_channel"), 1, "{report}");

    let replayed = herald_cli(&fleet, &["dlq", "replay", "--reason", "no usable channel"]).await;
    assert!(replayed.contains("replayed 1,"), "{replayed}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        let (_, report) = fleet.get("/v1/campaigns/replay1").await;
        if count(&report, "delivered") == 2 || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(count(&report, "delivered"), 2, "{report}");
    assert_eq!(count(&report, "failed"), 0, "{report}");
    assert_eq!(report["status"], "completed", "{report}");

    // Replaying again finds nothing to do, and the customer still got one message.
    let again = herald_cli(&fleet, &["dlq", "replay", "--reason", "no usable channel"]).await;
    assert!(again.contains("replayed 0,"), "{again}");
    let groups = [fleet.fanout_group(), fleet.dispatch_group(Channel::Email)];
    fleet.wait_caught_up(&groups, Duration::from_secs(20)).await;
    let key: Value = fleet
        .http
        .get(format!("{}/v1/keys/replay1:mute:email", fleet.provider_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(key["deliveries"], 1, "{key}");
    let (_, report) = fleet.get("/v1/campaigns/replay1").await;
    assert_eq!(count(&report, "delivered"), 2, "{report}");
}
