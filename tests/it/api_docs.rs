//! The OpenAPI documents (`/docs/openapi.json`, `/docs`) of herald-ingest and herald-metrics:
//! made from the handlers, so no route is served undocumented; valid OpenAPI
//! (openapi-spec-validator); every path they describe answers.

use serde_json::Value;

use crate::harness::{quiet_provider, repo_file, venv_tool, Fleet};

/// `.route("...")` calls in the servers' sources: a route added that way would be served
/// without being in the document (routes are added with `routes!(handler)`, which reads the
/// handler's `#[utoipa::path]`).
fn undocumented_routes() -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["src/api", "src/metrics"] {
        for entry in std::fs::read_dir(repo_file(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains(".route(\"") {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

/// Checks a served document with openapi-spec-validator (PyPI, in the test venv).
fn validate(doc: &Value, name: &str) {
    let tool = venv_tool("openapi-spec-validator");
    let file = std::env::temp_dir().join(format!("herald-{name}-{}.json", std::process::id()));
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = std::process::Command::new(tool)
        .arg(&file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name}'s document is not valid OpenAPI:\n{text}"
    );
}

/// Calls every operation of a document with no body: none may be the router's "not found".
async fn every_path_answers(fleet: &Fleet, base: &str, spec: &Value) {
    for (path, methods) in spec["paths"].as_object().unwrap() {
        let url = format!(
            "{base}{}",
            path.replace("{id}", "x1").replace("{token}", "x1")
        );
        for method in methods.as_object().unwrap().keys() {
            let req = match method.as_str() {
                "get" => fleet.http.get(&url),
                "post" => fleet.http.post(&url),
                "put" => fleet.http.put(&url),
                "delete" => fleet.http.delete(&url),
                other => panic!("unexpected method {other}"),
            };
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            assert!(
                status != 405 && !body.contains("route not found"),
                "{method} {path}: {status} {body}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_every_documented_path_answers() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let spec: Value = fleet
        .get_json(&format!("{}/docs/openapi.json", fleet.api_url))
        .await
        .expect("the OpenAPI document");
    assert_eq!(undocumented_routes(), Vec::<String>::new());
    assert!(spec["paths"].as_object().unwrap().len() >= 24);
    validate(&spec, "ingest");
    every_path_answers(&fleet, &fleet.api_url, &spec).await;

    let (_, metrics) = fleet
        .start_metrics(&format!("{}-docs", fleet.ns), fleet.shutdown.child_token())
        .await;
    let metrics_spec: Value = fleet
        .get_json(&format!("{metrics}/docs/openapi.json"))
        .await
        .expect("herald-metrics' document");
    assert!(metrics_spec["paths"]
        .get("/v1/stats/campaigns/{id}")
        .is_some());
    validate(&metrics_spec, "metrics");
    every_path_answers(&fleet, &metrics, &metrics_spec).await;

    let page = fleet
        .http
        .get(format!("{}/docs", fleet.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Herald API") && html.contains("/api/flash-promos/{id}/reserve/"));
}
