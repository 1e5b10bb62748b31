//! Schemathesis (PyPI, installed by scripts/test.sh into the test venv) against a running
//! herald-ingest: every operation of the served document, every check, a fixed seed and a
//! bounded number of examples. Any server error, any response the document does not
//! describe, any input the document calls invalid that the server accepts, fails the run;
//! so does an operation added without a schema (every one must be tested).

use crate::harness::{quiet_provider, Fleet};

/// The schemathesis of the test venv (`scripts/test.sh` installs it), or of HERALD_SCHEMATHESIS.
fn schemathesis() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("HERALD_SCHEMATHESIS") {
        return path.into();
    }
    crate::harness::venv_tool("schemathesis")
}

/// Runs Schemathesis on the fleet's API with `extra` arguments; its output, and whether it
/// found nothing.
async fn run(fleet: &Fleet, extra: &[&str]) -> (bool, String) {
    run_on(fleet, &fleet.api_url, extra).await
}

async fn run_on(fleet: &Fleet, base: &str, extra: &[&str]) -> (bool, String) {
    let bin = schemathesis();
    let api = base.to_string();
    let key = fleet.admin_key.clone();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/schemathesis/schemathesis.toml"
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["--config-file", config])
            .args(["run", &format!("{api}/docs/openapi.json")])
            .args(["--url", &api])
            // Every check ("a schema-valid input was refused" included) is chosen in the
            // config file, which excepts the few rules no schema can state per operation.
            .args(["--max-examples", "12", "--seed", "7"])
            .args(["--workers", "2", "--request-timeout", "10"])
            .args(["--header", &format!("Authorization: Bearer {key}")])
            .args(&extra)
            .env("NO_COLOR", "1")
            // Its cache of crashes goes in the working directory: not the checkout's.
            .current_dir(std::env::temp_dir())
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    (out.status.success(), text)
}

/// The figure after `label` in Schemathesis' summary (`Selected: 22/29` gives 22).
fn figure(text: &str, label: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
    let n = line.trim_start()[label.len()..].trim().split('/').next()?;
    n.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_nothing_on_any_operation_of_the_api() {
    let fleet = Fleet::start(quiet_provider(), 2).await;
    // Signed by a provider or a link, which Schemathesis cannot make: their refusals are
    // tested in tests/it/providers.rs, email.rs and api_access.rs. The customers batch and
    // promo creation run on their own below: Schemathesis 4.32.5's coverage phase fails on
    // them now and then with an internal "Inconsistent results" error raised while it
    // generates cases (a tool bug, not an answer of ours; seen once in 5 runs on promos).
    // No examples phase anywhere: the document has no examples, and an operation whose
    // examples phase was skipped was now and then counted "skipped", not "tested" (CI).
    let (ok, text) = run(
        &fleet,
        &[
            "--exclude-path-regex",
            "^(/v1/(receipts|webhooks/.*|unsubscribe/.*|customers/batch)|/api/flash-promos/)$",
            "--phases",
            "coverage,fuzzing,stateful",
        ],
    )
    .await;
    assert!(ok, "schemathesis found failures:\n{text}");
    // Every selected operation was tested (none skipped for want of a schema).
    let (selected, tested) = (figure(&text, "Selected:"), figure(&text, "Tested:"));
    assert!(
        selected.is_some_and(|n| n >= 20) && selected == tested,
        "selected {selected:?}, tested {tested:?}:\n{text}"
    );
    let (ok, text) = run(
        &fleet,
        &[
            "--include-path",
            "/v1/customers/batch",
            "--include-path",
            "/api/flash-promos/",
            "--phases",
            "fuzzing",
        ],
    )
    .await;
    assert!(
        ok,
        "schemathesis found failures on the customers batch or promo creation:\n{text}"
    );
    // Both are selected; Hypothesis sometimes generates nothing in time for the batch's
    // large bodies and Schemathesis counts that operation skipped (not failed).
    assert_eq!(figure(&text, "Selected:"), Some(2), "{text}");
    assert!(figure(&text, "Tested:").is_some_and(|n| n >= 1), "{text}");

    // herald-metrics: its dashboard, stats and probes, from its own document.
    let (_, metrics) = fleet
        .start_metrics(&format!("{}-st", fleet.ns), fleet.shutdown.child_token())
        .await;
    let (ok, text) = run_on(&fleet, &metrics, &["--phases", "coverage,fuzzing,stateful"]).await;
    assert!(ok, "schemathesis found failures on herald-metrics:\n{text}");
    assert!(figure(&text, "Tested:").is_some_and(|n| n >= 6), "{text}");
}
