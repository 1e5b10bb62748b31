//! Seed 001's HTTP contract, exactly.

use std::collections::HashMap;
use std::time::Duration;

use herald::model::Channel;
use serde_json::json;

use crate::harness::{quiet_provider, Fleet};

#[tokio::test]
async fn create_process_and_read_a_request() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let (status, body) = fleet
        .post(
            "/v1/requests",
            json!({"to": "a@example.com", "message": "hi", "type": "email"}),
        )
        .await;
    assert_eq!(status, 201);
    let obj = body.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["id"]);
    let id = body["id"].as_str().unwrap().to_string();

    let (status, body) = fleet.get(&format!("/v1/requests/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"id": id, "status": "queued"}));

    let (status, _) = fleet
        .post(&format!("/v1/requests/{id}/process"), json!({}))
        .await;
    assert_eq!(status, 202);
    // A second /process is accepted but queues nothing more.
    let (status, _) = fleet
        .post(&format!("/v1/requests/{id}/process"), json!({}))
        .await;
    assert_eq!(status, 202);
    let queued = fleet
        .read_topic(
            &fleet.topics.notify(Channel::Email),
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(queued.len(), 1, "processing twice must publish once");
}

#[tokio::test]
async fn bad_input_is_rejected_with_the_field_named() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let cases = [
        (json!({"message": "m", "type": "email"}), 422, Some("to")),
        (json!({"to": "a", "type": "email"}), 422, Some("message")),
        (json!({"to": "a", "message": "m"}), 422, Some("type")),
        (
            json!({"to": "a", "message": "m", "type": "pigeon"}),
            422,
            Some("type"),
        ),
        (
            json!({"to": 7, "message": "m", "type": "sms"}),
            422,
            Some("to"),
        ),
        (json!(["not", "an", "object"]), 400, None),
    ];
    for (body, want_status, want_field) in cases {
        let (status, err) = fleet.post("/v1/requests", body.clone()).await;
        assert_eq!(status, want_status, "{body}");
        assert!(err["error"].is_string(), "error message for {body}");
        assert_eq!(err["field"].as_str(), want_field, "{body}");
    }
    let raw = fleet
        .http
        .post(format!("{}/v1/requests", fleet.api_url))
        .header("content-type", "application/json")
        .body("{\"to\": \"a\",")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let err: serde_json::Value = raw.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("JSON"));
}

#[tokio::test]
async fn unknown_ids_are_404_with_a_json_error() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    for (status, body) in [
        fleet.get("/v1/requests/does-not-exist").await,
        fleet
            .post("/v1/requests/does-not-exist/process", json!({}))
            .await,
        fleet.get("/v1/requests/..%2F..%2Fetc").await,
    ] {
        assert_eq!(status, 404);
        assert!(body["error"].is_string());
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    assert_eq!(fleet.get("/healthz").await.0, 200);
    let (status, body) = fleet.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redis"], "ok");
    assert_eq!(body["kafka"], "ok");
}

#[tokio::test]
async fn the_api_answers_while_the_provider_hangs() {
    let mut sim = quiet_provider();
    sim.hang_rate = 1.0;
    let fleet = Fleet::start(sim, 2).await;
    let _dispatcher = fleet
        .start_dispatcher(Channel::Sms, fleet.shutdown.child_token())
        .await;
    let (ids, statuses) = fleet.submit(30, "sms").await;
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 202),
        "{statuses:?}"
    );
    // Read as a client reads them: the dispatcher has taken them (`processing`), none
    // ended, and the API answers at once while every provider call hangs.
    crate::harness::wait_until("requests processing", Duration::from_secs(20), || async {
        let seen = http_statuses(&fleet, &ids).await;
        seen.get("processing").copied().unwrap_or(0) == ids.len()
    })
    .await;
    let seen = http_statuses(&fleet, &ids).await;
    let started = std::time::Instant::now();
    let (status, body) = fleet.get(&format!("/v1/requests/{}", ids[0])).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("processing")),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the API answered slowly"
    );
    assert_eq!(seen.get("sent"), None, "{seen:?}");
}

/// Statuses as `GET /v1/requests/{id}` reports them.
async fn http_statuses(fleet: &Fleet, ids: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for id in ids {
        let (_, body) = fleet.get(&format!("/v1/requests/{id}")).await;
        let status = body["status"].as_str().unwrap_or("?").to_string();
        *counts.entry(status).or_insert(0) += 1;
    }
    counts
}

/// A request the provider refuses (here: a wrong API key, a 401) ends `failed`, and a client
/// reading `GET /v1/requests/{id}` sees exactly that.
#[tokio::test]
async fn a_refused_request_reads_failed_over_http() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let mut wrong_key = fleet.provider_args();
    wrong_key.provider_api_key = Some("not-the-key".into());
    fleet
        .start_dispatcher_with(Channel::Email, fleet.shutdown.child_token(), wrong_key)
        .await;
    let (ids, _) = fleet.submit(5, "email").await;
    crate::harness::wait_until("requests failed", Duration::from_secs(30), || async {
        http_statuses(&fleet, &ids).await.get("failed").copied() == Some(ids.len())
    })
    .await;
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.delivered, 0, "{sim:?}");
    assert!(sim.unauthorized >= 5, "{sim:?}");
}
