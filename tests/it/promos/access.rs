//! Who may call the flash-promo API, how often, and inside which window.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_tokens_limits_and_the_window_are_enforced() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let body = promo("guarded", 100, SOL);
    let (s, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/",
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/",
        Some("not-a-jwt"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, 401);
    // Signed with another secret, and (finding 9) an admin's role under the shoppers'
    // secret: whoever mints shoppers' tokens cannot mint an admin's.
    for (secret, what) in [
        (
            "some-other-secret-of-at-least-32-bytes",
            "signed with another secret",
        ),
        (JWT_SECRET, "an admin token under the shoppers' secret"),
    ] {
        let token = Jwt::new(secret)
            .unwrap()
            .mint("ops", Role::Admin, Duration::from_secs(60))
            .unwrap();
        let (s, answer) = call(
            &fleet,
            "POST",
            "/api/flash-promos/",
            Some(&token),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, 401, "{what}: {answer}");
    }
    let (s, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/",
        Some(&token(Role::User, "u1")),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, 403, "only an admin creates promos");
    let admin = token(Role::Admin, "ops");
    for (field, value) in [
        ("ends_at", json!(at(-2))),
        ("price", json!(19.999)),
        ("units", json!(0)),
    ] {
        let mut b = body.clone();
        b[field] = value;
        let (s, err) = call(&fleet, "POST", "/api/flash-promos/", Some(&admin), Some(b)).await;
        assert_eq!((s, err["field"].as_str()), (422, Some(field)), "{err}");
    }
    create(&fleet, body).await;
    let (s, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/",
        Some(&admin),
        Some(promo("guarded", 100, SOL)),
    )
    .await;
    assert_eq!(s, 200, "the same id again is the stored promo");

    // The active list is public and shows it.
    let (_, active) = call(&fleet, "GET", "/api/flash-promos/active/", None, None).await;
    assert!(
        active["promos"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "guarded"),
        "{active}"
    );

    // Reserve without a token, then over the per-user limit (5/s, burst 10).
    let (s, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/guarded/reserve/",
        None,
        None,
    )
    .await;
    assert_eq!(s, 401);
    // 40 at once from one user: over any schedule of the bucket (10 at once, 5 a second).
    let t = token(Role::User, "eager");
    let url = format!("{}/api/flash-promos/guarded/reserve/", fleet.api_url);
    let answers = join_all((0..40).map(|_| {
        let req = fleet.http.post(&url).bearer_auth(&t);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        }
    }))
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        answers.iter().all(|(s, retry)| *s != 429 || *retry),
        "a 429 says when to retry"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "one hold, however many calls: {statuses:?}"
    );

    // Not yet open, and closed.
    let mut later = promo("later", 5, SOL);
    later["starts_at"] = json!(at(10));
    create(&fleet, later).await;
    let (s, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/later/reserve/",
        Some(&token(Role::User, "u2")),
        None,
    )
    .await;
    assert_eq!(s, 409);
    let mut brief = promo("brief", 5, SOL);
    let ends = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(4);
    brief["ends_at"] = json!(ends.to_string());
    create(&fleet, brief).await;
    let u3 = token(Role::User, "u3");
    let (s, _) = call(
        &fleet,
        "POST",
        "/api/flash-promos/brief/reserve/",
        Some(&u3),
        None,
    )
    .await;
    assert_eq!(s, 201);
    let left = ends.duration_since(jiff::Timestamp::now());
    tokio::time::sleep(Duration::from_millis(left.as_millis().max(0) as u64 + 300)).await;
    let (s, err) = call(
        &fleet,
        "POST",
        "/api/flash-promos/brief/purchase/",
        Some(&u3),
        None,
    )
    .await;
    assert_eq!(s, 410, "closed: {err}");
    assert!(err["error"].as_str().unwrap().contains("ended"), "{err}");

    // CORS: an API configured with an origin answers its preflight, and no other's.
    let cors_api = std::sync::Arc::new(herald::api::Ingest {
        stores: herald::api::IngestStores::new(&fleet.store.redis),
        producer: herald::kafka::producer(fleet.brokers()).unwrap(),
        events_producer: herald::kafka::producer(fleet.brokers()).unwrap(),
        topics: fleet.topics.clone(),
        promos: herald::api::PromoSettings {
            jwt: Some(Jwt::new(JWT_SECRET).unwrap()),
            admin_jwt: None,
            cors_origins: vec!["https://shop.example".into()],
            ..herald::api::PromoSettings::default()
        },
        access: herald::api::AccessSettings::insecure(),
        http: herald::http::HttpLimits::default(),
        readiness: Default::default(),
        senders: Default::default(),
        webhook_addresses: Default::default(),
        catalog: herald::campaigns::rules::Rules::load(None)
            .unwrap()
            .topics()
            .clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/api/flash-promos/guarded/reserve/",
        listener.local_addr().unwrap()
    );
    tokio::spawn(herald::api::serve(
        listener,
        cors_api,
        fleet.shutdown.child_token(),
    ));
    for (origin, allowed) in [
        ("https://shop.example", true),
        ("https://evil.example", false),
    ] {
        let r = fleet
            .http
            .request(reqwest::Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
            .await
            .unwrap();
        let header = r
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            header.as_deref() == Some(origin),
            allowed,
            "{origin}: {header:?}"
        );
    }
}
