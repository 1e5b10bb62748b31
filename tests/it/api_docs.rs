//! The API's OpenAPI document (`/docs/openapi.json`, `/docs`) describes every route the code
//! declares, and every path it describes answers (is not the router's "route not found").

use serde_json::Value;

use crate::harness::{quiet_provider, repo_file, Fleet};

/// Every path given to `.route("...")` in the API's sources.
fn declared_routes() -> Vec<String> {
    let mut routes = Vec::new();
    for entry in std::fs::read_dir(repo_file("src/api")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut rest = text.as_str();
            while let Some(i) = rest.find(".route(") {
                rest = &rest[i + ".route(".len()..];
                let quoted = rest.trim_start();
                if let Some(q) = quoted.strip_prefix('"') {
                    routes.push(q[..q.find('"').unwrap()].to_string());
                }
            }
        }
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_every_documented_path_answers() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let spec: Value = fleet
        .get_json(&format!("{}/docs/openapi.json", fleet.api_url))
        .await
        .expect("the OpenAPI document");
    let paths = spec["paths"].as_object().unwrap();
    let declared = declared_routes();
    assert!(declared.len() >= 20, "{declared:?}");
    for route in &declared {
        assert!(
            paths.contains_key(route),
            "{route} is served but not in the OpenAPI document (run docs/openapi.py)"
        );
    }
    for (path, methods) in paths {
        let url = format!("{}{}", fleet.api_url, path.replace("{id}", "x1"));
        for method in methods.as_object().unwrap().keys() {
            let req = match method.as_str() {
                "get" => fleet.http.get(&url),
                "post" => fleet.http.post(&url),
                "put" => fleet.http.put(&url),
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
