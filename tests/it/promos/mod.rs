//! Issue 5: flash promos (seed 002). 500 buyers race for 10 units; lapsed holds give their
//! unit back; the segment is exactly the customers within 2 km (and those the behavioural
//! criteria admit); a customer in two promos on one day is notified once; roles, tokens,
//! the rate limit and the window are enforced.

use std::time::Duration;

use futures::future::join_all;
use herald::auth::{Jwt, Role};
use herald::model::{Channel, CustomerId, EventId};
use serde_json::{json, Value};

use crate::harness::{quiet_provider, wait_until, Fleet, JWT_ADMIN_SECRET, JWT_SECRET};

mod access;

const SOL: (f64, f64) = (40.4168, -3.7038);
/// Metres per degree of latitude on Redis GEO's sphere.
const M_PER_DEG: f64 = 6_372_797.560_856 * std::f64::consts::PI / 180.0;

fn token(role: Role, sub: &str) -> String {
    let secret = match role {
        Role::User => JWT_SECRET,
        Role::Admin => JWT_ADMIN_SECRET,
    };
    Jwt::new(secret)
        .unwrap()
        .mint(sub, role, Duration::from_secs(600))
        .unwrap()
}

fn at(minutes: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(minutes * 60)).to_string()
}

fn promo(id: &str, units: u32, store: (f64, f64)) -> Value {
    json!({
        "id": id,
        "store": {"id": "s1", "name": "Tienda Sol", "location": {"lat": store.0, "lon": store.1}},
        "product": {"id": "p1", "name": "Auriculares"},
        "price": "19.99", "original_price": "49.99", "units": units,
        "starts_at": at(-1), "ends_at": at(30),
    })
}

async fn call(
    fleet: &Fleet,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{}", fleet.api_url, path);
    // A shopper's call carries the shopper's token only, not the fleet's admin key.
    let mut req = match method {
        "GET" => fleet.anon.get(url),
        _ => fleet.anon.post(url),
    };
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn create(fleet: &Fleet, body: Value) -> Value {
    let admin = token(Role::Admin, "ops");
    let (status, created) = call(
        fleet,
        "POST",
        "/api/flash-promos/",
        Some(&admin),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_buyers_for_ten_units_make_ten_sales_and_lapsed_holds_return() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    create(&fleet, promo("race", 10, SOL)).await;
    let buyers: Vec<String> = (0..500).map(|i| format!("b{i}")).collect();
    let outcomes = join_all(buyers.iter().map(|b| {
        let fleet = &fleet;
        async move {
            let t = token(Role::User, b);
            let (reserved, _) = call(
                fleet,
                "POST",
                "/api/flash-promos/race/reserve/",
                Some(&t),
                None,
            )
            .await;
            let (bought, body) = call(
                fleet,
                "POST",
                "/api/flash-promos/race/purchase/",
                Some(&t),
                None,
            )
            .await;
            (reserved, bought, body)
        }
    }))
    .await;
    let count = |f: &dyn Fn(&(u16, u16, Value)) -> bool| outcomes.iter().filter(|o| f(o)).count();
    assert_eq!(count(&|o| o.0 == 201), 10, "ten holds");
    assert_eq!(count(&|o| o.0 == 409), 490, "the rest sold out");
    assert_eq!(count(&|o| o.1 == 201), 10, "ten purchases");
    assert_eq!(count(&|o| o.0 == 201 && o.1 == 201), 10, "by the holders");
    let admin = token(Role::Admin, "ops");
    let (_, state) = call(&fleet, "GET", "/api/flash-promos/race/", Some(&admin), None).await;
    assert_eq!(
        state["stock"],
        json!({"available": 0, "held": 0, "sold": 10}),
        "{state}"
    );

    // A purchase is idempotent per (promo, user), and a buyer cannot hold a second unit.
    let winner = outcomes.iter().position(|o| o.1 == 201).unwrap();
    let t = token(Role::User, &buyers[winner]);
    let (again, body) = call(
        &fleet,
        "POST",
        "/api/flash-promos/race/purchase/",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(
        (again, body["status"].as_str()),
        (200, Some("purchased")),
        "{body}"
    );
    let (held, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/race/reserve/",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(held, 409);
    let (_, state) = call(&fleet, "GET", "/api/flash-promos/race/", Some(&admin), None).await;
    assert_eq!(state["stock"]["sold"], 10);

    // Holds lapse (2 s in tests) and give their units back.
    create(&fleet, promo("lapse", 3, SOL)).await;
    for u in ["h1", "h2", "h3"] {
        let (s, _) = call(
            &fleet,
            "POST",
            "/api/flash-promos/lapse/reserve/",
            Some(&token(Role::User, u)),
            None,
        )
        .await;
        assert_eq!(s, 201);
    }
    let late = token(Role::User, "h4");
    let (s, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/lapse/reserve/",
        Some(&late),
        None,
    )
    .await;
    assert_eq!(s, 409, "sold out while held");
    let (s, body) = call(
        &fleet,
        "POST",
        "/api/flash-promos/lapse/reserve/",
        Some(&token(Role::User, "h1")),
        None,
    )
    .await;
    assert_eq!(
        (s, body["status"].as_str()),
        (200, Some("reserved")),
        "the same hold, not a second unit"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (s, body) = call(
        &fleet,
        "POST",
        "/api/flash-promos/lapse/purchase/",
        Some(&token(Role::User, "h2")),
        None,
    )
    .await;
    assert_eq!(s, 409, "a lapsed hold cannot buy: {body}");
    let (s, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/lapse/reserve/",
        Some(&late),
        None,
    )
    .await;
    assert_eq!(s, 201, "a lapsed unit is back in stock");
    let (s, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/lapse/purchase/",
        Some(&late),
        None,
    )
    .await;
    assert_eq!(s, 201);
    let (_, state) = call(
        &fleet,
        "GET",
        "/api/flash-promos/lapse/",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(
        state["stock"],
        json!({"available": 2, "held": 0, "sold": 1}),
        "{state}"
    );
}

/// A customer `metres` north of `from`, reachable by e-mail.
fn placed(id: &str, from: (f64, f64), metres: f64) -> Value {
    json!({"id": id, "name": id, "contacts": {"email": format!("{id}@example.com")},
           "consent": {"email": true}, "time_zone": "Etc/GMT",
           "location": {"lat": from.0 + metres / M_PER_DEG, "lon": from.1}})
}

async fn activate(fleet: &Fleet) -> Vec<herald::promos::Activation> {
    let producer = herald::kafka::producer(fleet.brokers()).unwrap();
    herald::promos::activate_due(
        &herald::promos::PromoStores::new(&fleet.store.redis),
        &producer,
        &fleet.topics,
        "test",
        herald::model::now_ms(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_segment_is_who_is_within_two_km_and_a_second_promo_that_day_is_capped() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let distances = [100.0, 500.0, 1500.0, 1990.0, 2010.0, 2500.0, 5000.0];
    fleet
        .put_customers(
            distances
                .iter()
                .map(|d| placed(&format!("g{d}"), SOL, *d))
                .collect(),
        )
        .await;
    create(&fleet, promo("near1", 5, SOL)).await;
    let done = activate(&fleet).await;
    assert_eq!(done.len(), 1, "{done:?}");
    let a = &done[0];
    assert_eq!(
        (a.near, a.segment, a.capped, a.audience),
        (4, 4, 0, 4),
        "{a:?}"
    );
    assert!(activate(&fleet).await.is_empty(), "activated once");

    // The campaign goes out through fan-out and the e-mail dispatcher to exactly those four.
    let stop = fleet.shutdown.child_token();
    fleet.start_fanout(stop.clone()).await;
    fleet.start_dispatcher(Channel::Email, stop.clone()).await;
    wait_until("four promo e-mails", Duration::from_secs(30), || async {
        fleet.sim_stats().await.calls >= 4
    })
    .await;
    let (_, report) = fleet.get("/v1/campaigns/promo-near1").await;
    assert_eq!(report["recipients"], 4, "{report}");

    // A second promo the same day reaches the same four: all capped, nobody notified again.
    create(&fleet, promo("near2", 5, SOL)).await;
    let done = activate(&fleet).await;
    let b = &done[0];
    assert_eq!((b.near, b.capped, b.audience), (4, 4, 0), "{b:?}");
    let groups = [fleet.fanout_group(), fleet.dispatch_group(Channel::Email)];
    fleet.wait_caught_up(&groups, Duration::from_secs(60)).await;
    let sim = fleet.sim_stats().await;
    assert_eq!((sim.calls, sim.keys_delivered_twice), (4, 0), "{sim:?}");
    let admin = token(Role::Admin, "ops");
    let (_, state) = call(
        &fleet,
        "GET",
        "/api/flash-promos/near2/",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(state["notifications"]["capped"], 4, "{state}");
    assert_eq!(state["notifications"]["notified"], 0, "{state}");

    // Each user sees the promos that suit them.
    let (s, seg) = call(
        &fleet,
        "GET",
        "/api/users/segments/",
        Some(&token(Role::User, "g100")),
        None,
    )
    .await;
    assert_eq!(s, 200, "{seg}");
    assert_eq!(seg["promos"], json!(["near1", "near2"]), "{seg}");
    let (_, far) = call(
        &fleet,
        "GET",
        "/api/users/segments/",
        Some(&token(Role::User, "g2500")),
        None,
    )
    .await;
    assert_eq!(far["promos"], json!([]), "{far}");
    let (s, _) = call(
        &fleet,
        "GET",
        "/api/users/segments/?user_id=g100",
        Some(&token(Role::User, "g2500")),
        None,
    )
    .await;
    assert_eq!(s, 403, "a user sees only their own");
    let (s, _) = call(
        &fleet,
        "GET",
        "/api/users/segments/?user_id=g100",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, 200);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_criteria_narrow_the_segment() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let shop = (41.3874, 2.1686);
    fleet
        .put_customers(vec![
            placed("k1", shop, 100.0),
            placed("k2", shop, 200.0),
            placed("k3", shop, 300.0),
        ])
        .await;
    // k1 bought twice, k3 once in shoes, k2 only looked.
    let activity = |id: &str, user: &str, action, cents| herald::model::commerce::Activity {
        event_id: EventId::parse(id).unwrap(),
        user_id: CustomerId::parse(user).unwrap(),
        action,
        category: Some("shoes".into()),
        amount_cents: cents,
        at_ms: herald::model::now_ms(),
    };
    use herald::model::commerce::UserAction::{Purchase, View};
    fleet
        .store
        .events
        .apply_activity(
            &[
                activity("e1", "k1", Purchase, 1000),
                activity("e2", "k1", Purchase, 2000),
                activity("e3", "k2", View, 0),
                activity("e4", "k3", Purchase, 500),
            ],
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let mut body = promo("buyers", 5, shop);
    body["segment"] = json!({"radius_m": 1000, "min_purchases": 1, "categories": ["Shoes"]});
    create(&fleet, body).await;
    let done = activate(&fleet).await;
    assert_eq!((done[0].near, done[0].segment), (3, 2), "{done:?}");
    let audience = fleet
        .store
        .campaigns
        .campaign(&herald::model::CampaignId::parse("promo-buyers").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(audience.recipients, 2);
    let mut spenders = promo("spenders", 5, shop);
    spenders["segment"] = json!({"min_spent": "20.00"});
    create(&fleet, spenders).await;
    let done = activate(&fleet).await;
    assert_eq!(done[0].segment, 1, "only k1 spent 20: {done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_becomes_one_sale_event_through_the_outbox() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    fleet.put_customers(vec![placed("buyer1", SOL, 10.0)]).await;
    create(&fleet, promo("sold", 2, SOL)).await;
    let t = token(Role::User, "buyer1");
    let (s, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/sold/reserve/",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(s, 201);
    for want in [201, 200] {
        let (s, body) = call(
            &fleet,
            "POST",
            "/api/flash-promos/sold/purchase/",
            Some(&t),
            None,
        )
        .await;
        assert_eq!(s, want, "{body}");
    }
    let producer = herald::kafka::producer(fleet.brokers()).unwrap();
    let drain = || {
        herald::promos::outbox::publish_outboxes(
            &fleet.store.promos,
            &producer,
            &fleet.topics,
            "t",
            herald::model::now_ms(),
        )
    };
    assert_eq!(drain().await.unwrap(), 1, "one purchase, one sale event");
    assert_eq!(drain().await.unwrap(), 0, "published once, then trimmed");
    let sales = fleet
        .read_topic(&fleet.topics.sales(), 1, Duration::from_secs(10))
        .await;
    assert_eq!(sales.len(), 1);
    use rdkafka::message::Message as _;
    let sale: herald::model::commerce::SaleEvent =
        serde_json::from_slice(sales[0].payload().unwrap()).unwrap();
    assert!(sale.validate(herald::model::now_ms()).is_ok(), "{sale:?}");
    assert_eq!(
        (
            sale.sale_id.as_str(),
            sale.total.to_string().as_str(),
            sale.customer_email.as_str()
        ),
        ("fp-sold-buyer1", "19.99", "buyer1@example.com")
    );
}

/// As deployed, with no flag, a reservation holds its unit for seed 002's sixty seconds
/// (the other tests shorten it to two): the API says so in `expires_at` and `expires_in_ms`.
#[tokio::test]
async fn a_reservation_holds_its_unit_for_sixty_seconds_by_default() {
    use clap::Parser as _;
    use herald::program::Program as _;
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let mut args = herald::api::program::Args::try_parse_from(["herald-ingest"]).unwrap();
    assert_eq!(args.reservation_secs, 60);
    args.common = fleet.common();
    args.http_addr = "127.0.0.1:0".parse().unwrap();
    args.jwt_secret = Some(JWT_SECRET.into());
    args.access = crate::harness::access_args(&fleet.keys_file, &fleet.api_url);
    let deployed = herald::api::program::Program::from_args(&args)
        .await
        .unwrap();
    let url = format!("http://{}", deployed.local_addr().unwrap());
    tokio::spawn(deployed.run(fleet.shutdown.child_token()));

    create(&fleet, promo("minute", 5, SOL)).await;
    let before = jiff::Timestamp::now();
    let reply = fleet
        .http
        .post(format!("{url}/api/flash-promos/minute/reserve/"))
        .bearer_auth(token(Role::User, "m1"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 201);
    let body: Value = reply.json().await.unwrap();
    let left = body["expires_in_ms"].as_u64().unwrap();
    assert!((59_000..=60_000).contains(&left), "{body}");
    let expires: jiff::Timestamp = body["expires_at"].as_str().unwrap().parse().unwrap();
    let held = expires.duration_since(before).as_secs_f64();
    assert!((59.0..=61.0).contains(&held), "held {held} s: {body}");
}

/// A promo whose activation is recorded but which is on the schedule again (its scheduler
/// stopped between the two, or the same promo was posted again) is only taken off the
/// schedule: never activated a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promo_activated_but_still_scheduled_is_not_activated_again() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    fleet
        .put_customers(vec![placed("again1", SOL, 300.0)])
        .await;
    let body = promo("again", 5, SOL);
    create(&fleet, body.clone()).await;
    let first = activate(&fleet).await;
    assert_eq!(first.len(), 1, "{first:?}");

    // Posting the same promo again puts it back on the schedule (the create is idempotent).
    let admin = token(Role::Admin, "ops");
    let (status, again) = call(
        &fleet,
        "POST",
        "/api/flash-promos/",
        Some(&admin),
        Some(body),
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {again}");
    let id = herald::model::PromoId::parse("again").unwrap();
    assert_eq!(
        fleet
            .store
            .promos
            .due_promo_ids(herald::model::now_ms())
            .await
            .unwrap(),
        vec![id.clone()],
        "scheduled again"
    );

    assert!(activate(&fleet).await.is_empty(), "activated a second time");
    assert!(fleet
        .store
        .promos
        .due_promo_ids(herald::model::now_ms())
        .await
        .unwrap()
        .is_empty());
    let record = fleet.store.promos.promo(&id).await.unwrap().unwrap();
    assert_eq!(
        record.activation.get("activation").map(String::as_str),
        Some("done")
    );
}
