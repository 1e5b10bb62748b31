//! Finding 6 of the security review (its Kafka part): compose ran Kafka in PLAINTEXT without
//! authentication, so any container could queue work for the dispatchers. compose's broker
//! now wants SASL; this runs the programs against such a broker (`scripts/kafka-sasl.sh`,
//! started by scripts/test.sh in a phase of its own): without credentials, or with a wrong
//! password, nothing is created; with them, a seed 001 request goes through ingest, Kafka
//! and a dispatcher to the provider.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::{free_port, quiet_provider, wait_until, ChildGuard, Fleet};

struct Sasl {
    brokers: String,
    username: String,
    password: String,
}

fn sasl() -> Sasl {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name}: run this test as scripts/test.sh does, after scripts/kafka-sasl.sh up")
        })
    };
    Sasl {
        brokers: var("HERALD_TEST_SASL_BROKERS"),
        username: var("HERALD_TEST_SASL_USERNAME"),
        password: var("HERALD_TEST_SASL_PASSWORD"),
    }
}

/// A program of `fleet` on the SASL broker, with these credentials (`None`: none at all).
fn on_sasl(fleet: &Fleet, bin: &str, sasl: &Sasl, password: Option<&str>) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("HERALD_KAFKA_BROKERS", &sasl.brokers)
        .env("HERALD_REDIS_URL", &fleet.redis_url)
        .env("HERALD_NAMESPACE", format!("{}-sasl", fleet.ns))
        .env("HERALD_PROVIDER_URL", &fleet.provider_url)
        .env("HERALD_PROVIDER_API_KEY", crate::harness::API_KEY)
        .envs(fleet.access_env())
        .env("RUST_LOG", "error");
    if let Some(password) = password {
        cmd.env("HERALD_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
            .env("HERALD_KAFKA_SASL_MECHANISM", "PLAIN")
            .env("HERALD_KAFKA_SASL_USERNAME", &sasl.username)
            .env("HERALD_KAFKA_SASL_PASSWORD", password);
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_programs_with_the_sasl_credentials_reach_the_broker() {
    let sasl = sasl();
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let herald = env!("CARGO_BIN_EXE_herald");
    let create = |password: Option<&str>| {
        let mut cmd = on_sasl(&fleet, herald, &sasl, password);
        cmd.args(["topics", "create", "--partitions", "1"]);
        cmd.output().unwrap()
    };
    for (who, password) in [
        ("no credentials", None),
        ("a wrong password", Some("not-the-password")),
    ] {
        let out = create(password);
        assert!(
            !out.status.success(),
            "topics were created with {who}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = create(Some(&sasl.password));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A request through ingest, the SASL broker and a dispatcher.
    let addr = format!("127.0.0.1:{}", free_port());
    let ingest = on_sasl(
        &fleet,
        env!("CARGO_BIN_EXE_herald-ingest"),
        &sasl,
        Some(&sasl.password),
    )
    .args(["--http-addr", &addr])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let _ingest = ChildGuard(Some(ingest));
    let dispatch = on_sasl(
        &fleet,
        env!("CARGO_BIN_EXE_herald-dispatch"),
        &sasl,
        Some(&sasl.password),
    )
    .args(["--channel", "email"])
    .env("HERALD_HEALTH_ADDR", format!("127.0.0.1:{}", free_port()))
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let _dispatch = ChildGuard(Some(dispatch));
    let api = format!("http://{addr}");
    wait_until(
        "herald-ingest on the SASL broker",
        Duration::from_secs(30),
        || {
            let r = fleet.anon.get(format!("{api}/readyz")).send();
            async move { r.await.map(|r| r.status() == 200).unwrap_or(false) }
        },
    )
    .await;
    let created = fleet
        .http
        .post(format!("{api}/v1/requests"))
        .json(&json!({"to": "sasl@example.com", "message": "hi", "type": "email"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let processed = fleet
        .http
        .post(format!("{api}/v1/requests/{id}/process"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(processed.status(), 202);
    wait_until(
        "the request to be sent through the SASL broker",
        Duration::from_secs(60),
        || {
            let r = fleet.http.get(format!("{api}/v1/requests/{id}")).send();
            async move {
                match r.await {
                    Ok(r) => r
                        .json::<serde_json::Value>()
                        .await
                        .is_ok_and(|v| v["status"] == "sent" || v["status"] == "delivered"),
                    Err(_) => false,
                }
            }
        },
    )
    .await;
}
