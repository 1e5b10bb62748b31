//! Every error of every program has one shape: RFC 9457 problem details
//! (`application/problem+json` with `type`, `title`, `status`, `detail`), plus `field` when
//! one field was wrong and `error` (the detail, as Herald's API always answered).

use serde_json::{json, Value};

use crate::harness::{quiet_provider, Fleet};

async fn problem_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let media = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(media, "application/problem+json", "status {status}");
    let body: Value = r.json().await.expect("a JSON body");
    for member in ["type", "title", "detail", "error"] {
        assert!(body[member].is_string(), "{member} in {body}");
    }
    assert_eq!(body["status"], status, "{body}");
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_of_every_program_is_a_problem_document() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let api = &fleet.api_url;
    let keyed = &fleet.http;

    // 422 naming the field.
    let r = keyed
        .post(format!("{api}/v1/requests"))
        .json(&json!({"to": "", "message": "hi", "type": "email"}))
        .send()
        .await
        .unwrap();
    let (status, body) = problem_of(r).await;
    assert_eq!(status, 422);
    assert_eq!(body["type"], "urn:herald:problem:invalid-field");
    assert_eq!(body["field"], "to");
    // 400, 401, 404, 413, 415.
    let not_json = keyed
        .post(format!("{api}/v1/requests"))
        .header("content-type", "application/json")
        .body("{")
        .send();
    assert_eq!(problem_of(not_json.await.unwrap()).await.0, 400);
    let anonymous = fleet.anon.get(format!("{api}/v1/requests/x")).send();
    assert_eq!(problem_of(anonymous.await.unwrap()).await.0, 401);
    let unknown = keyed.get(format!("{api}/v1/requests/no-such-id")).send();
    let (_, body) = problem_of(unknown.await.unwrap()).await;
    assert_eq!(
        (body["type"].as_str(), body["title"].as_str()),
        (Some("about:blank"), Some("Not Found"))
    );
    let huge = keyed
        .post(format!("{api}/v1/requests"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send();
    assert_eq!(problem_of(huge.await.unwrap()).await.0, 413);
    let form = keyed
        .post(format!("{api}/v1/requests"))
        .header("content-type", "text/plain")
        .body("to=x")
        .send();
    assert_eq!(problem_of(form.await.unwrap()).await.0, 415);

    // herald-metrics: an unknown campaign.
    let (_, metrics) = fleet
        .start_metrics("problems", fleet.shutdown.child_token())
        .await;
    let r = fleet
        .http
        .get(format!("{metrics}/v1/stats/campaigns/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem_of(r).await.0, 404);
}
