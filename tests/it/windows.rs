//! The crash windows of issue 18, each as the failure it would cause: leases released by a
//! scheduler that no longer holds them, and outboxes of promos that ended long ago.

use std::time::Duration;

use herald::model::{now_ms, CustomerId, PromoId};
use herald::store::PromoTask;

use crate::harness::{quiet_provider, Fleet};

/// A scheduler whose activation lease ran out must not end the lease of the scheduler that took
/// over: a third would then take it and activate the promo again. (On the main before this
/// change, finishing deleted the lease whoever held it.)
#[tokio::test]
async fn a_scheduler_that_lost_its_lease_neither_finishes_nor_frees_the_next_ones() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let store = &fleet.store;
    let id = open_promo(store, "lease-1", 1, 60_000).await;
    let now = now_ms();
    let lease = |ms| Duration::from_millis(ms);
    assert!(store
        .promos
        .claim_promo_task(&id, PromoTask::Activation, "a", lease(50))
        .await
        .unwrap());
    tokio::time::sleep(lease(120)).await;
    assert!(store
        .promos
        .claim_promo_task(&id, PromoTask::Activation, "b", lease(30_000))
        .await
        .unwrap());

    let finished = store
        .promos
        .finish_promo_activation(&id, "a", &[("activation", "done".into())])
        .await
        .unwrap();
    assert!(!finished, "a no longer holds the lease");
    assert!(
        !store
            .promos
            .claim_promo_task(&id, PromoTask::Activation, "c", lease(30_000))
            .await
            .unwrap(),
        "b's lease must still be held"
    );
    assert!(
        store.promos.due_promo_ids(now).await.unwrap().contains(&id),
        "still scheduled: b finishes it"
    );
    assert!(store
        .promos
        .finish_promo_activation(&id, "b", &[("activation", "done".into())])
        .await
        .unwrap());
    assert!(!store.promos.due_promo_ids(now).await.unwrap().contains(&id));
}

/// A purchase whose sale event could not be published while its promo ran is published
/// however long ago the promo ended; a drainer that lost its lease trims nothing. (On the main
/// before this change, only promos that ended within the hour were drained, and the trim
/// deleted the lease whoever held it.)
#[tokio::test]
async fn an_old_promos_outbox_is_still_published_and_only_its_lease_holder_trims_it() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let store = &fleet.store;
    let id = PromoId::parse("ended-long-ago").unwrap();
    let buyer = CustomerId::parse("b1").unwrap();
    let hour = 3600 * 1000;
    let then = now_ms() - 3 * hour;
    store
        .promos
        .create_promo(&id, "{}", 5, then, then + hour)
        .await
        .unwrap();
    store
        .promos
        .reserve_unit(&id, &buyer, Duration::from_secs(60))
        .await
        .unwrap();
    let sale = r#"{"event_type":"sale_completed","sale_id":"fp-ended-long-ago-b1"}"#;
    store
        .promos
        .purchase_unit(&id, &buyer, Some(sale))
        .await
        .unwrap();

    // A drainer whose lease ran out trims nothing.
    assert!(store
        .promos
        .claim_promo_task(
            &id,
            PromoTask::OutboxDrain,
            "slow",
            Duration::from_millis(50)
        )
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(store
        .promos
        .claim_promo_task(
            &id,
            PromoTask::OutboxDrain,
            "next",
            Duration::from_millis(50)
        )
        .await
        .unwrap());
    assert!(!store.promos.trim_outbox(&id, "slow", 1).await.unwrap());
    assert_eq!(
        store.promos.outbox(&id, 10).await.unwrap().len(),
        1,
        "nothing trimmed"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;

    let producer = herald::kafka::producer(fleet.brokers()).unwrap();
    let published = herald::promos::outbox::publish_outboxes(
        &store.promos,
        &producer,
        &fleet.topics,
        "drainer",
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(
        published, 1,
        "the promo ended two hours ago; its sale still goes out"
    );
    assert!(store.promos.outbox(&id, 10).await.unwrap().is_empty());
    assert!(store.promos.promos_with_outbox().await.unwrap().is_empty());
    let sales = fleet
        .read_topic(&fleet.topics.sales(), 1, Duration::from_secs(10))
        .await;
    assert_eq!(sales.len(), 1);
}

/// herald-ingest marks a request published, then dies before Kafka has it: herald-retry's
/// reconciler publishes it and it is sent, once. (On the main before this change it stayed
/// `queued` for ever, and every later `/process` answered 202 "already published".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_marked_but_never_published_is_sent_by_the_reconciler() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let (s, created) = fleet
        .post(
            "/v1/requests",
            serde_json::json!({"to": "a@example.com", "message": "hi", "type": "email"}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let raw = created["id"].as_str().unwrap().to_string();
    let id = herald::model::RequestId::parse(&raw).unwrap();
    // What `/process` does first; the process dies before its publish.
    let marked = fleet
        .store
        .requests
        .mark_published(&id, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(marked, herald::store::Publication::MustPublish(_)));
    let (s, _) = fleet
        .post(
            &format!("/v1/requests/{raw}/process"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 202, "a later /process finds it marked");

    let stop = fleet.shutdown.child_token();
    fleet
        .start_dispatcher(herald::model::Channel::Email, stop.clone())
        .await;
    fleet.start_retry(stop).await;
    let ids = vec![raw.clone()];
    let ended = fleet.wait_terminal(&ids, Duration::from_secs(20)).await;
    assert_eq!(ended.get("sent"), Some(&1), "{ended:?}");
    let sim = fleet.sim_stats().await;
    assert_eq!((sim.delivered, sim.keys_delivered_twice), (1, 0), "{sim:?}");
}

/// A hold is stamped and lapses by Redis' clock, not by the clock of the API host that took
/// it: instances whose clocks disagree still agree on every hold. (On the main before this
/// change the caller passed its own `now`.)
#[tokio::test]
async fn holds_run_on_redis_clock() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let store = &fleet.store;
    let id = open_promo(store, "clock", 1, 60_000).await;
    let buyer = CustomerId::parse("c1").unwrap();
    let client = redis::Client::open(fleet.redis_url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    let redis_now = secs * 1000 + micros / 1000;
    let reserved = store
        .promos
        .reserve_unit(&id, &buyer, Duration::from_millis(300))
        .await
        .unwrap();
    let herald::store::Reservation::Reserved {
        until_ms,
        expires_in_ms,
        ..
    } = reserved
    else {
        panic!("{reserved:?}");
    };
    assert!(
        until_ms >= redis_now + 300 && until_ms < redis_now + 1300,
        "stamped by Redis' clock: {until_ms} vs {redis_now}"
    );
    assert!(expires_in_ms <= 300 && expires_in_ms > 0, "{expires_in_ms}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let late = store.promos.purchase_unit(&id, &buyer, None).await.unwrap();
    assert_eq!(
        late,
        herald::store::Purchase::NoHold,
        "lapsed by Redis' clock"
    );
}

/// A delivery published but never claimed (its dispatchers lag) is republished after a wait
/// that doubles each time, not at every claim lease: under a lag of minutes the topic does not
/// fill with copies. (On the main before this change it came back every lease, 30 s.)
#[tokio::test]
async fn an_unclaimed_delivery_is_republished_ever_less_often() {
    use herald::store::RepublishWait;
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let store = &fleet.store;
    let campaign = herald::model::CampaignId::parse("lagging").unwrap();
    let customer = CustomerId::parse("c1").unwrap();
    assert!(store
        .slots
        .defer_first(
            &campaign,
            &customer,
            herald::model::Channel::Email,
            now_ms()
        )
        .await
        .unwrap());
    let lease = Duration::from_millis(100);
    let wait = RepublishWait {
        first: Duration::from_millis(300),
        longest: Duration::from_secs(60),
    };
    let claim = || {
        store
            .slots
            .claim_overdue(&campaign, "retry", 10, lease, wait)
    };
    let mut republished_at = Vec::new();
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1_500) {
        let due = claim().await.unwrap();
        if let Some(o) = due.first() {
            assert_eq!(o.status, "queued");
            republished_at.push(started.elapsed().as_millis());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Due at 0, then 300 ms later, then 600 ms after that (900): three in 1.5 s. Every lease
    // (100 ms) would be about fifteen.
    assert_eq!(republished_at.len(), 3, "{republished_at:?}");
    let gaps: Vec<u128> = republished_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[1] >= gaps[0] * 3 / 2, "the wait grows: {gaps:?}");
}

/// A promo `id` with `units`, opened a second ago, ending `ends_in_ms` from now.
async fn open_promo(
    store: &crate::harness::TestStores,
    id: &str,
    units: u32,
    ends_in_ms: u64,
) -> PromoId {
    let id = PromoId::parse(id).unwrap();
    let now = now_ms();
    store
        .promos
        .create_promo(&id, "{}", units, now - 1000, now + ends_in_ms)
        .await
        .unwrap();
    id
}

/// A store of a namespace of its own, keeping campaigns' reports `report_secs` and their
/// working sets `working_secs`; its namespace.
async fn store_with_retention(
    report_secs: u64,
    working_secs: u64,
) -> (crate::harness::TestStores, String) {
    let ns = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let redis = herald::store::Redis::connect(&crate::harness::redis_url(), &ns)
        .await
        .unwrap()
        .with_retention(herald::store::Retention {
            report: Duration::from_secs(report_secs),
            working: Duration::from_secs(working_secs),
        });
    let store = crate::harness::TestStores::over(redis);
    (store, ns)
}

/// The keys of the local stack's Redis matching `pattern` (a scan also expires what is due).
async fn keys_matching(pattern: &str) -> Vec<String> {
    let client = redis::Client::open(crate::harness::redis_url().as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// A finished campaign's keys go: the working sets after the working retention, the report
/// after the report's. (On the main before this change the batch marks and the pending set
/// had no expiry at all, and nothing was shortened when a campaign finished.)
#[tokio::test]
async fn a_finished_campaigns_keys_expire_after_their_retention() {
    use herald::model::{Campaign, CampaignId, Template};
    // The report's retention is well above the working one: under a loaded CI the steps
    // before the first look took long enough for a 4 s report to be gone already.
    let (store, ns) = store_with_retention(10, 2).await;
    let id = CampaignId::parse("kept-briefly").unwrap();
    let audience: Vec<CustomerId> = ["a", "b"]
        .iter()
        .filter_map(|c| CustomerId::parse(c))
        .collect();
    let campaign = Campaign {
        id: id.clone(),
        name: "n".into(),
        template: Template::try_from("hi".to_string()).unwrap(),
        email: None,
        whatsapp: None,
        translations: Default::default(),
        channels: Vec::new(),
        confirmation_timeout_ms: Default::default(),
        max_cost: None,
        recipients: 2,
        created_ms: now_ms(),
        send_at_ms: None,
        topic: herald::model::Topic::offers(),
        expires_at_ms: None,
    };
    store
        .campaigns
        .create_campaign(&campaign, &audience)
        .await
        .unwrap();
    store.campaigns.mark_batch_done(&id, 0, 2).await.unwrap();
    for customer in &audience {
        store
            .slots
            .fail_unreachable(&id, customer, "no_channel", "no channel")
            .await
            .unwrap();
    }
    assert!(store.campaigns.retire_if_finished(&id).await.unwrap());

    let pattern = format!("{ns}:*{{kept-briefly}}*");
    let keys_left = || keys_matching(&pattern);
    let before = keys_left().await;
    assert!(
        before.len() >= 4,
        "record, audience, batches, slots: {before:?}"
    );
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let working_gone = keys_left().await;
    assert_eq!(
        working_gone,
        vec![format!("{ns}:campaign:{{kept-briefly}}")],
        "only the report is left after the working retention"
    );
    crate::harness::wait_until(
        "the report's retention",
        Duration::from_secs(15),
        || async { keys_left().await.is_empty() },
    )
    .await;
}

/// A promo's keys (record, holds, buyers, outbox) go at its end plus the report retention.
/// (On the main before this change they lived for ever.)
#[tokio::test]
async fn a_promos_keys_expire_after_its_end_and_the_retention() {
    let (store, ns) = store_with_retention(2, 1).await;
    let id = open_promo(&store, "short-lived", 3, 500).await;
    let buyer = CustomerId::parse("b1").unwrap();
    store
        .promos
        .reserve_unit(&id, &buyer, Duration::from_secs(60))
        .await
        .unwrap();
    store
        .promos
        .purchase_unit(&id, &buyer, Some("{}"))
        .await
        .unwrap();
    let pattern = format!("{ns}:promo:{{short-lived}}*");
    let keys = || keys_matching(&pattern);
    // The hold went with the purchase.
    assert_eq!(
        keys().await.len(),
        3,
        "record, buyers, outbox: {:?}",
        keys().await
    );
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert!(keys().await.is_empty(), "{:?}", keys().await);
}
