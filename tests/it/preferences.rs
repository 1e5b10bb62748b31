//! Customers in control (issue 33): frequency caps across campaigns, topics withdrawn by
//! one-click, the preference page in a real headless Chromium, and the consent log of it all.

use std::collections::HashMap;
use std::time::Duration;

use herald::config::RulesArgs;
use herald::model::Channel;
use serde_json::{json, Value};

use crate::browser::Browser;
use crate::harness::{quiet_provider, Fleet};

/// The built-in rules with a cap of one promotion a day per customer (`defer`: a capped
/// customer waits for the next day), the caps' clock `offset_secs` ahead.
fn capped_rules(offset_secs: i64, defer: bool) -> RulesArgs {
    let text = format!(
        "{}\n[caps]\ndefer = {defer}\n[caps.promotions]\nper_day = 1\n",
        herald::campaigns::rules::DEFAULT_RULES
    );
    let path = std::env::temp_dir().join(format!("herald-caps-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    RulesArgs {
        rules: Some(path),
        caps_clock_offset_secs: offset_secs,
    }
}

fn push_customers(ids: &[String]) -> Vec<Value> {
    ids.iter()
        .map(|id| {
            json!({"id": id, "contacts": {"push": format!("tok-{id}"), "email": format!("{id}@x.example")},
                   "consent": {"push": true, "email": true}, "time_zone": "Europe/Madrid"})
        })
        .collect()
}

async fn post_campaign(fleet: &Fleet, id: &str, topic: &str, ids: &[String]) {
    let (status, body) = fleet
        .post(
            "/v1/campaigns",
            json!({"id": id, "name": id, "template": "Hi", "topic": topic, "channels": ["push"],
                   "confirmation_timeout_ms": {"push": 30000}, "audience": {"customer_ids": ids}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

async fn completed(fleet: &Fleet, id: &str) -> Value {
    let report = fleet.wait_campaign(id, Duration::from_secs(120)).await;
    assert_eq!(report["status"], "completed", "{report}");
    report
}

/// What each customer's slot of `campaign` ended as.
async fn endings(fleet: &Fleet, campaign: &str, ids: &[String]) -> HashMap<String, String> {
    fleet
        .slots(campaign, ids)
        .await
        .into_iter()
        .map(|(id, slot)| (id, slot.get("st").cloned().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_campaigns_at_once_reach_each_customer_once_under_a_cap_of_one_a_day() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let today = fleet.shutdown.child_token();
    // Two fan-outs in one group: the two campaigns' batches are fanned out side by side.
    fleet
        .start_fanout_with(capped_rules(0, false), today.clone())
        .await;
    fleet
        .start_fanout_with(capped_rules(0, false), today.clone())
        .await;
    let stop = fleet.shutdown.child_token();
    fleet.start_retry(stop.clone()).await;
    fleet.start_dispatcher(Channel::Push, stop.clone()).await;
    let ids: Vec<String> = (0..2000).map(|i| format!("c{i}")).collect();
    fleet.put_customers(push_customers(&ids)).await;

    tokio::join!(
        post_campaign(&fleet, "cap-a", "offers", &ids),
        post_campaign(&fleet, "cap-b", "loyalty-news", &ids)
    );
    let (a, b) = (
        completed(&fleet, "cap-a").await,
        completed(&fleet, "cap-b").await,
    );
    let count = |r: &Value, k: &str| r["counts"][k].as_u64().unwrap_or(0);
    assert_eq!(
        count(&a, "delivered") + count(&b, "delivered"),
        2000,
        "{a}\n{b}"
    );
    assert_eq!(count(&a, "capped") + count(&b, "capped"), 2000, "{a}\n{b}");
    assert_eq!(count(&a, "failed") + count(&b, "failed"), 0, "{a}\n{b}");
    let (ea, eb) = (
        endings(&fleet, "cap-a", &ids).await,
        endings(&fleet, "cap-b", &ids).await,
    );
    for id in &ids {
        let pair = (ea[id].as_str(), eb[id].as_str());
        assert!(
            pair == ("delivered", "capped") || pair == ("capped", "delivered"),
            "{id}: {pair:?}"
        );
    }
    // The provider's own count: 2000 pushes, none twice.
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.delivered, 2000, "{sim:?}");
    assert_eq!(sim.keys_delivered_twice, 0, "{sim:?}");

    // A transactional message (seed 001) to a capped customer's device still goes.
    let (status, body) = fleet
        .post(
            "/v1/requests",
            json!({"to": "tok-c0", "message": "Your order shipped", "type": "push"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let request = body["id"].as_str().unwrap().to_string();
    let (status, _) = fleet
        .post(&format!("/v1/requests/{request}/process"), json!({}))
        .await;
    assert!(status < 300, "{status}");
    let ended = fleet
        .wait_terminal(&[request], Duration::from_secs(30))
        .await;
    assert_eq!(ended.get("sent"), Some(&1), "{ended:?}");

    // The next day (the caps' clock a day on): the same customers may be reached again.
    today.cancel();
    fleet
        .start_fanout_with(capped_rules(24 * 3600, false), stop.clone())
        .await;
    post_campaign(&fleet, "cap-c", "offers", &ids).await;
    let c = completed(&fleet, "cap-c").await;
    assert_eq!(count(&c, "delivered"), 2000, "{c}");
    assert_eq!(count(&c, "capped"), 0, "{c}");
    assert_eq!(fleet.sim_stats().await.delivered, 2000 + 1 + 2000);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_capped_customer_deferred_to_their_next_day_is_reached_then_and_not_before() {
    // The caps' clock 15 s before midnight in Madrid: the customers' next day comes soon.
    let now = herald::model::now_ms();
    let midnight = herald::model::frequency::Windows::at("Europe/Madrid", now).next_day_ms;
    let offset = ((midnight - now) / 1000) as i64 - 15;
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let stop = fleet.shutdown.child_token();
    fleet
        .start_fanout_with(capped_rules(offset, true), stop.clone())
        .await;
    fleet
        .start_retry_with(capped_rules(offset, true), stop.clone())
        .await;
    fleet.start_dispatcher(Channel::Push, stop.clone()).await;
    let ids: Vec<String> = (0..20).map(|i| format!("d{i}")).collect();
    fleet.put_customers(push_customers(&ids)).await;

    post_campaign(&fleet, "today", "offers", &ids).await;
    completed(&fleet, "today").await;
    post_campaign(&fleet, "tomorrow", "offers", &ids).await;
    let deferred = |r: &Value| r["counts"]["deferred"].as_u64().unwrap_or(0);
    crate::harness::wait_until(
        "the second campaign deferred",
        Duration::from_secs(10),
        || async { deferred(&fleet.get("/v1/campaigns/tomorrow").await.1) == 20 },
    )
    .await;
    // Until the customers' midnight by the caps' clock, nothing of it reaches the provider.
    let caps_now = || herald::model::now_ms() as i64 + offset * 1000;
    assert!(
        caps_now() < midnight as i64 - 1000,
        "deferred well before midnight"
    );
    while caps_now() < midnight as i64 - 300 {
        assert_eq!(
            fleet.sim_stats().await.delivered,
            20,
            "a deferred push went early"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = completed(&fleet, "tomorrow").await;
    assert_eq!(report["counts"]["delivered"], 20, "{report}");
    assert_eq!(report["counts"].get("capped"), None, "{report}");
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.delivered, 40, "{sim:?}");
    stop.cancel();
}

/// The consent log's (source, actor, what, old, new), oldest first.
async fn consent_log(fleet: &Fleet, id: &str) -> Vec<[String; 5]> {
    let (status, log) = fleet.get(&format!("/v1/customers/{id}/consent-log")).await;
    assert_eq!(status, 200, "{log}");
    let mut changes: Vec<[String; 5]> = log["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            ["source", "actor", "what", "old", "new"]
                .map(|k| c[k].as_str().unwrap_or("").to_string())
        })
        .collect();
    changes.reverse();
    changes
}

fn change(source: &str, actor: &str, what: &str, old: &str, new: &str) -> [String; 5] {
    [source, actor, what, old, new].map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_withdrawn_by_one_click_or_on_the_page_stops_only_that_topic() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let stop = fleet.shutdown.child_token();
    fleet.start_fanout(stop.clone()).await;
    fleet.start_retry(stop.clone()).await;
    fleet.start_dispatcher(Channel::Push, stop.clone()).await;
    let ids: Vec<String> = ["ana", "bea"].map(String::from).to_vec();
    let mut customers = push_customers(&ids);
    customers[1]["language"] = json!("es");
    fleet.put_customers(customers).await;

    // Ana follows the one-click link of an `offers` campaign.
    post_campaign(&fleet, "offers-1", "offers", &ids).await;
    completed(&fleet, "offers-1").await;
    assert_eq!(fleet.one_click("offers-1", "ana").await, 200);
    let (_, prefs) = fleet.get("/v1/customers/ana/preferences").await;
    assert_eq!(prefs["topics"]["offers"]["push"], false, "{prefs}");
    assert_eq!(prefs["topics"]["loyalty-news"]["push"], true, "{prefs}");
    assert_eq!(prefs["promotions"], true, "{prefs}");

    // Bea unticks loyalty news on push on her page, in a real browser, in Spanish.
    let (status, link) = fleet.get("/v1/customers/bea/preferences/link").await;
    assert_eq!(status, 200, "{link}");
    let url = format!("{}{}", fleet.api_url, link["path"].as_str().unwrap());
    let page_url = url.clone();
    tokio::task::spawn_blocking(move || {
        let mut browser = Browser::open(&page_url);
        browser.wait_for("document.getElementById('save')", Duration::from_secs(20));
        assert_eq!(browser.eval("document.documentElement.lang"), json!("es"));
        assert_eq!(
            browser.eval("document.getElementById('save').textContent"),
            json!("Guardar")
        );
        assert_eq!(
            browser.eval("document.getElementById('loyalty-news.push').checked"),
            json!(true)
        );
        browser.eval("document.getElementById('loyalty-news.push').click()");
        browser.eval("document.getElementById('save').click()");
        browser.wait_for("document.getElementById('saved')", Duration::from_secs(20));
        assert_eq!(
            browser.eval("document.getElementById('loyalty-news.push').checked"),
            json!(false)
        );
        assert_eq!(
            browser.eval("document.getElementById('offers.push').checked"),
            json!(true)
        );
    })
    .await
    .unwrap();
    let (_, prefs) = fleet.get("/v1/customers/bea/preferences").await;
    assert_eq!(prefs["topics"]["loyalty-news"]["push"], false, "{prefs}");
    assert_eq!(prefs["topics"]["offers"]["push"], true, "{prefs}");
    // A forged link opens nothing.
    let forged = format!("{}0", url);
    assert_eq!(fleet.anon.get(&forged).send().await.unwrap().status(), 404);

    // The next campaigns follow: Ana gets loyalty news and no offers; Bea the reverse.
    let sent_before = fleet.sim_stats().await.delivered;
    post_campaign(&fleet, "offers-2", "offers", &ids).await;
    post_campaign(&fleet, "news-1", "loyalty-news", &ids).await;
    completed(&fleet, "offers-2").await;
    completed(&fleet, "news-1").await;
    let offers = endings(&fleet, "offers-2", &ids).await;
    let news = endings(&fleet, "news-1", &ids).await;
    assert_eq!(
        (offers["ana"].as_str(), offers["bea"].as_str()),
        ("failed", "delivered")
    );
    assert_eq!(
        (news["ana"].as_str(), news["bea"].as_str()),
        ("delivered", "failed")
    );
    assert_eq!(fleet.sim_stats().await.delivered, sent_before + 2);

    // Through the API, for a data-access request: every change, in order, with its source.
    let path = "/v1/customers/ana/preferences";
    let (status, body) = fleet
        .put(path, json!({"promotions": false, "topics": {"offers": {"push": false, "email": false, "sms": false, "whatsapp": false}}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["promotions"], false, "{body}");
    let (status, bad) = fleet
        .put(path, json!({"topics": {"gossip": {"push": false}}}))
        .await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["field"], "topics.gossip", "{bad}");
    let withdrawn = |c: &str| {
        change(
            "one-click",
            "link",
            &format!("topic:offers:{c}"),
            "subscribed",
            "unsubscribed",
        )
    };
    let given = |c: &str| {
        change(
            "api",
            "test-admin",
            &format!("consent:{c}"),
            "not given",
            "given",
        )
    };
    let mut ana = consent_log(&fleet, "ana").await;
    // One call's changes share a millisecond: compare them as sets.
    ana[..2].sort();
    ana[2..6].sort();
    let mut want = vec![given("email"), given("push")];
    let mut one_click: Vec<[String; 5]> =
        ["email", "push", "sms", "whatsapp"].map(withdrawn).to_vec();
    one_click.sort();
    want.extend(one_click);
    want.push(change(
        "api",
        "test-admin",
        "promotions",
        "subscribed",
        "unsubscribed",
    ));
    assert_eq!(ana, want);
    let mut bea = consent_log(&fleet, "bea").await;
    bea[..2].sort();
    assert_eq!(
        bea,
        vec![
            given("email"),
            given("push"),
            change(
                "preference-page",
                "link",
                "topic:loyalty-news:push",
                "subscribed",
                "unsubscribed"
            ),
        ]
    );
    stop.cancel();
}
