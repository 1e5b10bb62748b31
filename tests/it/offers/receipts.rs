//! Receipts against the campaign's record: only a fresh, signed one for the recorded message
//! counts, and one that beats the provider's answer still ends delivered.

use super::*;

/// A receipt is taken only with the provider's signature, fresh, and for the message the
/// provider accepted: a forged, stale or unsigned one changes nothing, and one naming another
/// provider id is refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_fresh_signed_receipt_for_the_recorded_message_is_applied() {
    let mut sim = quiet_provider();
    sim.silent_channels = vec![Channel::Email];
    let fleet = Fleet::start(sim, 1).await;
    let ids = vec!["r0".to_string()];
    fleet
        .put_customers(vec![customer("r0", &["email", "sms"], &daytime())])
        .await;
    let _stop = start_workers(&fleet, &[Channel::Email], 1).await;
    let (status, _) = fleet
        .post(
            "/v1/campaigns",
            campaign("signed", &["email", "sms"], 60_000, &ids),
        )
        .await;
    assert_eq!(status, 202);
    let sent = || async { fleet.slots("signed", &ids).await["r0"].get("st").cloned() };
    crate::harness::wait_until("the e-mail to be sent", Duration::from_secs(30), || async {
        sent().await.as_deref() == Some("sent")
    })
    .await;
    let recorded = fleet.slots("signed", &ids).await["r0"]["pid"].clone();
    assert!(recorded.starts_with("sim-"), "{recorded}");

    let body = |provider_id: &str| {
        json!({"key": "signed:r0:email", "status": "delivered", "provider_id": provider_id})
            .to_string()
    };
    let post = |signature: Option<String>, body: String| {
        let mut req = fleet
            .anon
            .post(format!("{}/v1/receipts", fleet.api_url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            req = req.header("Herald-Signature", s);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let now = herald::model::now_ms() / 1000;
    let right = body(&recorded);
    let sign = herald::auth::signature::sign;
    for (what, signature) in [
        ("unsigned", None),
        (
            "signed with another secret",
            Some(sign(&"x".repeat(40), now, right.as_bytes())),
        ),
        (
            "stale",
            Some(sign(
                crate::harness::RECEIPT_SECRET,
                now - 600,
                right.as_bytes(),
            )),
        ),
        (
            "signed for another body",
            Some(sign(crate::harness::RECEIPT_SECRET, now, b"{}")),
        ),
    ] {
        let (status, answer) = post(signature, right.clone()).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: {answer}");
    }
    assert_eq!(sent().await.as_deref(), Some("sent"), "nothing changed");

    let wrong = body("sim-someone-else");
    let signature = sign(crate::harness::RECEIPT_SECRET, now, wrong.as_bytes());
    let (status, answer) = post(Some(signature), wrong).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcomes"]["mismatched"], 1, "{answer}");
    assert_eq!(
        sent().await.as_deref(),
        Some("sent"),
        "a mismatched receipt changes nothing"
    );
    let (_, report) = fleet.get("/v1/campaigns/signed").await;
    assert_eq!(
        count(&report, "mismatched_receipts"),
        1,
        "counted: {report}"
    );

    let signature = sign(crate::harness::RECEIPT_SECRET, now, right.as_bytes());
    let (status, answer) = post(Some(signature), right).await;
    assert_eq!(
        (status, &answer["outcomes"]["delivered"]),
        (200, &json!(1)),
        "{answer}"
    );
    assert_eq!(sent().await.as_deref(), Some("delivered"));
}

/// A receipt that arrives before the dispatcher has recorded the send (the provider answered
/// late) settles the slot when the send is recorded; the `delivered` lifecycle event must
/// still go out then, or herald-metrics counts fewer deliveries than the campaign report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receipt_that_beats_the_providers_answer_is_still_announced_as_delivered() {
    let mut sim = quiet_provider();
    // Every call delivered and its receipt posted at once, the answer 400 ms later.
    sim.late_answer_rate = 1.0;
    sim.late_answer_ms = 400;
    sim.receipt_delay_ms = 0;
    let fleet = Fleet::start(sim, 2).await;
    let (_, metrics) = fleet
        .start_metrics(&fleet.topics.metrics_group(), fleet.shutdown.child_token())
        .await;
    let n = 40;
    let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    fleet
        .put_customers(
            ids.iter()
                .map(|id| customer(id, &["email"], &daytime()))
                .collect(),
        )
        .await;
    let _stop = start_workers(&fleet, &[Channel::Email], 1).await;
    let (status, _) = fleet
        .post("/v1/campaigns", campaign("early", &["email"], 60_000, &ids))
        .await;
    assert_eq!(status, 202);
    let report = fleet.wait_campaign("early", Duration::from_secs(60)).await;
    assert_eq!(count(&report, "delivered"), n as u64, "{report}");
    assert_eq!(fleet.sim_stats().await.late_answers, n as u64);
    let delivered = fleet
        .metrics_delivered(&metrics, "early", n as u64, Duration::from_secs(10))
        .await;
    assert_eq!(delivered, n, "herald-metrics saw every delivery: {report}");
}
