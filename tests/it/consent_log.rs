//! The consent log (issue 33): every change of consent and suppression, from each source,
//! in order, read back as a data-access request would.

use serde_json::json;

use crate::fakes::post_twilio_webhook;
use crate::harness::{quiet_provider, Fleet, TWILIO_AUTH_TOKEN};

#[tokio::test]
async fn every_change_of_consent_is_logged_in_order_with_its_source_and_actor() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let profile = |email: bool, sms: bool| {
        json!({"name": "Ana", "contacts": {"email": "ana@shop.test", "sms": "+34600000001"},
               "consent": {"email": email, "sms": sms}, "time_zone": "Europe/Madrid"})
    };
    let put = |body| {
        fleet
            .http
            .put(format!("{}/v1/customers/ana", fleet.api_url))
            .json(&body)
            .send()
    };
    assert_eq!(put(profile(true, false)).await.unwrap().status(), 200);
    // The same profile again changes nothing, so logs nothing.
    assert_eq!(put(profile(true, false)).await.unwrap().status(), 200);
    assert_eq!(put(profile(false, true)).await.unwrap().status(), 200);

    // One-click from a promotion's link.
    assert_eq!(fleet.one_click("spring", "ana").await, 200);
    // A hard bounce of the mailbox, and a BAJA reply from the number.
    let (status, body) = fleet
        .post(
            "/v1/bounces",
            json!({"address": "Ana@Shop.test", "channel": "email", "kind": "hard", "reason": "550 no such user"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let stop = vec![
        ("From".to_string(), "+34600000001".to_string()),
        ("Body".to_string(), " baja ".to_string()),
        ("MessageSid".to_string(), "SM1".to_string()),
    ];
    let url = format!("{}/v1/webhooks/twilio", fleet.api_url);
    assert_eq!(
        post_twilio_webhook(url, stop, TWILIO_AUTH_TOKEN.into()).await,
        200
    );

    let (status, log) = fleet.get("/v1/customers/ana/consent-log").await;
    assert_eq!(status, 200, "{log}");
    let seen: Vec<(String, String, String, String, String)> = log["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let f = |k: &str| c[k].as_str().unwrap_or("").to_string();
            (f("source"), f("actor"), f("what"), f("old"), f("new"))
        })
        .collect();
    let s = |v: &str| v.to_string();
    let newest_first = [
        (
            s("sms-stop"),
            s("customer reply"),
            s("promotions:sms"),
            s("subscribed"),
            s("STOP"),
        ),
        (
            s("bounce"),
            s("test-admin"),
            s("address:email"),
            s("deliverable"),
            s("undeliverable (hard bounce: 550 no such user)"),
        ),
        (
            s("one-click"),
            s("link"),
            s("promotions:email"),
            s("subscribed"),
            s("unsubscribed (from campaign spring)"),
        ),
        (
            s("api"),
            s("test-admin"),
            s("consent:email"),
            s("given"),
            s("withdrawn"),
        ),
        (
            s("api"),
            s("test-admin"),
            s("consent:sms"),
            s("not given"),
            s("given"),
        ),
        (
            s("api"),
            s("test-admin"),
            s("consent:email"),
            s("not given"),
            s("given"),
        ),
    ];
    // Changes of one call share its millisecond: compare those as sets.
    assert_eq!(seen.len(), newest_first.len(), "{log}");
    assert_eq!(seen[..3], newest_first[..3], "{log}");
    let mut middle = seen[3..5].to_vec();
    middle.sort();
    let mut wanted = newest_first[3..5].to_vec();
    wanted.sort();
    assert_eq!(middle, wanted, "{log}");
    assert_eq!(seen[5], newest_first[5], "{log}");
    assert!(log["changes"][0]["at"].as_str().unwrap().ends_with('Z'));

    // Paged: two at a time.
    let (_, first) = fleet.get("/v1/customers/ana/consent-log?limit=2").await;
    assert_eq!(first["changes"].as_array().unwrap().len(), 2);
    assert_eq!(first["next"], 2);
    let (_, last) = fleet
        .get("/v1/customers/ana/consent-log?limit=4&offset=2")
        .await;
    assert_eq!(last["changes"].as_array().unwrap().len(), 4);
    assert!(last.get("next").is_none(), "{last}");
}
