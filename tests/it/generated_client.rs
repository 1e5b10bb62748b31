//! A client generated from the served OpenAPI document by openapi-python-client (PyPI, in the
//! test venv), driving seed 001's request flow and a campaign (tests/client/drive.py): what a
//! team that integrates by generating a client gets.

use std::time::Duration;

use herald::model::Channel;

use crate::harness::{quiet_provider, venv_tool, Fleet};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_generated_from_the_document_drives_requests_and_a_campaign() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    let stop = fleet.shutdown.child_token();
    fleet.start_fanout(stop.clone()).await;
    fleet.start_retry(stop.clone()).await;
    fleet.start_dispatcher(Channel::Email, stop).await;

    let dir = std::env::temp_dir().join(format!("herald-client-{}", fleet.ns));
    std::fs::create_dir_all(&dir).unwrap();
    let doc = fleet
        .get_json(&format!("{}/docs/openapi.json", fleet.api_url))
        .await
        .expect("the served document");
    let doc_path = dir.join("openapi.json");
    std::fs::write(&doc_path, doc.to_string()).unwrap();

    let (api, key) = (fleet.api_url.clone(), fleet.admin_key.clone());
    let out = tokio::task::spawn_blocking(move || {
        let generated = std::process::Command::new(venv_tool("openapi-python-client"))
            .args(["generate", "--meta", "none", "--overwrite", "--path"])
            .arg(&doc_path)
            .arg("--output-path")
            .arg(dir.join("herald_client"))
            .output()
            .expect("openapi-python-client runs");
        assert!(
            generated.status.success(),
            "generation failed: {generated:?}"
        );
        std::process::Command::new(venv_tool("python"))
            .arg(crate::harness::repo_file("tests/client/drive.py"))
            .args([&api, &key])
            .env("PYTHONPATH", &dir)
            .output()
            .expect("the driver runs")
    });
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .expect("the generated client finishes")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(out.status.success(), "the generated client failed:\n{text}");
    assert!(
        text.contains("campaign generated-client: completed, 20 delivered"),
        "{text}"
    );
}
