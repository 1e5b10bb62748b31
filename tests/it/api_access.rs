//! The trust boundary of herald-ingest, read from the API document it serves: every operation
//! answers 401 without credentials unless it is one of the deliberately public ones, 403 with
//! credentials that lack what it needs, and lets the right credentials through. A route added
//! to the code is in the document (tests/it/api_docs.rs), so it is called here too.

use std::time::Duration;

use herald::auth::{Jwt, Role, Scope};
use serde_json::{json, Value};

use crate::harness::{quiet_provider, Fleet, JWT_SECRET};

/// What the issue allows to be public, written here rather than read from the code under test.
/// Deliberately open: health, the document, the active promos, the unsubscribe link and the
/// preference page (their signed token is the credential; tests/it/email.rs and
/// tests/it/preferences.rs forge one).
const PUBLIC: [(&str, &str); 9] = [
    ("get", "/v1/unsubscribe/{token}"),
    ("post", "/v1/unsubscribe/{token}"),
    ("get", "/v1/preferences/{token}"),
    ("post", "/v1/preferences/{token}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/docs"),
    ("get", "/docs/openapi.json"),
    ("get", "/api/flash-promos/active/"),
];

/// Which credentials to present.
enum Credentials<'a> {
    None,
    Bearer(&'a str),
    Signed,
}

async fn call(
    fleet: &Fleet,
    method: &str,
    path: &str,
    credentials: Credentials<'_>,
) -> (u16, String) {
    let url = format!("{}{}", fleet.api_url, path.replace("{id}", "x1"));
    let body = json!({}).to_string();
    let mut req = match method {
        "get" => fleet.anon.get(&url),
        "put" => fleet.anon.put(&url),
        "post" => fleet.anon.post(&url),
        "delete" => fleet.anon.delete(&url),
        other => panic!("unexpected method {other} in the document"),
    };
    if method != "get" {
        req = req
            .header("content-type", "application/json")
            .body(body.clone());
    }
    match credentials {
        Credentials::None => {}
        Credentials::Bearer(token) => req = req.bearer_auth(token),
        Credentials::Signed => {
            let signature = crate::harness::receipt_signature(body.as_bytes());
            req = req.header(herald::auth::signature::HEADER, signature);
        }
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// A scope other than `scope`, for a key that must be refused.
fn another_scope(scope: Scope) -> Scope {
    if scope == Scope::StatsRead {
        Scope::RequestsRead
    } else {
        Scope::StatsRead
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_needs_the_credentials_its_document_names() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let spec: Value = fleet
        .get_json(&format!("{}/docs/openapi.json", fleet.api_url))
        .await
        .expect("the OpenAPI document");
    let shopper = Jwt::new(JWT_SECRET)
        .unwrap()
        .mint("u1", Role::User, Duration::from_secs(600))
        .unwrap();
    let mut keys = std::collections::HashMap::new();
    let mut key_for = |scope: Scope| -> String {
        keys.entry(scope)
            .or_insert_with(|| fleet.key(&scope.as_str().replace(':', "-"), &[scope]))
            .clone()
    };
    let mut checked = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, op) in operations.as_object().unwrap() {
            let what = format!("{method} {path}");
            let public = PUBLIC.contains(&(method.as_str(), path.as_str()));
            let (status, body) = call(&fleet, method, path, Credentials::None).await;
            if public {
                assert!(
                    status != 401 && status != 403,
                    "{what} is public: {status} {body}"
                );
                assert_eq!(op["security"], json!([]), "{what}: documented as public");
                continue;
            }
            assert_eq!(status, 401, "{what} without credentials: {body}");
            let error: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert!(
                error["error"].is_string(),
                "{what}: a JSON error, got {body}"
            );
            assert!(op["responses"]["401"].is_object(), "{what}: 401 documented");

            let schemes: Vec<&str> = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{what}: no security in the document"))
                .iter()
                .filter_map(|req| req.as_object()?.keys().next().map(String::as_str))
                .collect();
            let scope = op["x-herald-scope"]
                .as_str()
                .map(|s| s.parse::<Scope>().unwrap());
            if schemes.contains(&"providerSignature") {
                let some_key = key_for(Scope::Admin);
                let (status, body) =
                    call(&fleet, method, path, Credentials::Bearer(&some_key)).await;
                assert_eq!(
                    status, 401,
                    "{what}: a key is no provider signature: {body}"
                );
            }
            if schemes.contains(&"receiptSignature") {
                let some_key = key_for(Scope::Admin);
                let (status, body) =
                    call(&fleet, method, path, Credentials::Bearer(&some_key)).await;
                assert_eq!(status, 401, "{what}: a key is no signature: {body}");
                let (status, body) = call(&fleet, method, path, Credentials::Signed).await;
                assert!(
                    status != 401 && status != 403,
                    "{what} signed: {status} {body}"
                );
            }
            if let (true, Some(scope)) = (schemes.contains(&"apiKey"), scope) {
                let lacking = key_for(another_scope(scope));
                let (status, body) =
                    call(&fleet, method, path, Credentials::Bearer(&lacking)).await;
                assert_eq!(status, 403, "{what} with a key without {scope}: {body}");
                let holding = key_for(scope);
                let (status, body) =
                    call(&fleet, method, path, Credentials::Bearer(&holding)).await;
                assert!(
                    status != 401 && status != 403,
                    "{what} with {scope}: {status} {body}"
                );
            }
            if schemes == ["shopperToken"] {
                let key = key_for(Scope::Admin);
                let (status, body) = call(&fleet, method, path, Credentials::Bearer(&key)).await;
                assert_eq!(status, 403, "{what} acts for a shopper, not a key: {body}");
            }
            if schemes.contains(&"shopperToken") {
                let (status, body) =
                    call(&fleet, method, path, Credentials::Bearer(&shopper)).await;
                assert_ne!(status, 401, "{what} with a shopper's token: {body}");
            }
            assert!(!schemes.is_empty(), "{what}: documented as needing nothing");
            checked += 1;
        }
    }
    assert!(checked >= 18, "only {checked} guarded operations checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_working_and_customer_reads_need_their_scope() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let key = fleet.key("shop", &[Scope::RequestsWrite, Scope::RequestsRead]);
    let url = format!("{}/v1/requests", fleet.api_url);
    let body = json!({"to": "a@example.com", "message": "hi", "type": "email"});
    let r = fleet
        .anon
        .post(&url)
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = fleet
        .anon
        .get(format!("{}/v1/customers/c1", fleet.api_url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "customer data needs customers:read");

    herald::auth::keys::revoke(&fleet.keys_file, "shop").unwrap();
    crate::harness::wait_until("the revocation to take", Duration::from_secs(10), || {
        let req = fleet.anon.post(&url).bearer_auth(&key).json(&body).send();
        async move { req.await.map(|r| r.status() == 401).unwrap_or(false) }
    })
    .await;
}

/// Finding 12 of the security review: herald-metrics answered anyone. Now its dashboard,
/// stats and `/metrics` take a key with `stats:read` (Prometheus sends it as a bearer token)
/// or a session opened at `/login`; the probes stay public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_metrics_answers_only_a_stats_key_or_a_session_opened_with_one() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let (_, metrics) = fleet
        .start_metrics(&format!("{}-auth", fleet.ns), fleet.shutdown.child_token())
        .await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let stats_key = fleet.key("grafana", &[Scope::StatsRead]);
    let other_key = fleet.key("shop-x", &[Scope::RequestsWrite]);
    for path in ["/v1/stats", "/metrics", "/v1/stats/campaigns/c1"] {
        let url = format!("{metrics}{path}");
        let anonymous = no_redirects.get(&url).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{path} without a key");
        let other = no_redirects
            .get(&url)
            .bearer_auth(&other_key)
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 401, "{path} with a key lacking stats:read");
        let allowed = no_redirects
            .get(&url)
            .bearer_auth(&stats_key)
            .send()
            .await
            .unwrap();
        assert_ne!(allowed.status(), 401, "{path} with a stats:read key");
    }
    for path in ["/healthz", "/readyz", "/docs/openapi.json", "/login"] {
        let r = no_redirects
            .get(format!("{metrics}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} is public");
    }
    // A browser: shown the form, logs in with the key once, then reads with its cookie.
    let r = no_redirects
        .get(format!("{metrics}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("action=\"/login\""));
    let wrong = no_redirects
        .post(format!("{metrics}/login"))
        .form(&[("key", other_key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let login = no_redirects
        .post(format!("{metrics}/login"))
        .form(&[("key", stats_key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && !cookie.contains(&stats_key),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let page = no_redirects
        .get(format!("{metrics}/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    // Revoking the key ends the session.
    herald::auth::keys::revoke(&fleet.keys_file, "grafana").unwrap();
    crate::harness::wait_until("the session to end", Duration::from_secs(5), || {
        let r = no_redirects
            .get(format!("{metrics}/v1/stats"))
            .header("cookie", &session)
            .send();
        async move { r.await.map(|r| r.status() == 401).unwrap_or(false) }
    })
    .await;
}
