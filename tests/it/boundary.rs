//! What a client on the network can do to herald-ingest, as the program runs: oversized and
//! non-JSON bodies, a client that never finishes its headers, and a deployment that copied an
//! example secret.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{free_port, quiet_provider, wait_until, Fleet};

const INGEST: &str = env!("CARGO_BIN_EXE_herald-ingest");

/// herald-ingest as a process of this fleet, ready; its address.
async fn ingest(fleet: &Fleet, extra: &[&str]) -> (crate::harness::ChildGuard, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--http-addr", addr.as_str()];
    args.extend_from_slice(extra);
    let child = fleet.spawn(INGEST, &args);
    let url = format!("http://{addr}");
    wait_until("herald-ingest", Duration::from_secs(20), || {
        let r = fleet.anon.get(format!("{url}/readyz")).send();
        async move { r.await.map(|r| r.status() == 200).unwrap_or(false) }
    })
    .await;
    (child, url)
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_non_json_bodies_are_refused_and_memory_stays_flat() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let (child, url) = ingest(&fleet, &[]).await;
    let requests = format!("{url}/v1/requests");

    let (status, body) = {
        let r = fleet
            .http
            .post(&requests)
            .header("content-type", "text/plain")
            .body(r#"{"to":"a@example.com","message":"m","type":"email"}"#)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    assert_eq!(status, 415, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("application/json"),
        "{body}"
    );

    // 2 MB of JSON, twenty times: each is refused as it arrives, none is held.
    let big = format!(
        r#"{{"to":"a@example.com","type":"email","message":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let before = resident_kib(child.id());
    for _ in 0..20 {
        let r = fleet
            .http
            .post(&requests)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 413, "{body}");
        assert!(body["error"].is_string(), "a JSON error: {body}");
    }
    let after = resident_kib(child.id());
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "40 MB of refused bodies grew herald-ingest from {before} KiB to {after} KiB"
    );
}

/// Starts an anonymous chunked upload to `path`: `bytes` of body, then it waits (a slow
/// provider, or someone posing as one). The connection, still open, or `None` once the
/// server answered and closed it.
async fn stalled_upload(addr: String, path: &str, bytes: usize) -> Option<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < bytes {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        stream.write_all(&frame).await.ok()?;
        sent += chunk.len();
    }
    Some(stream)
}

/// Finding 1 of the security review: receipts were read up to 8 MiB (and 8 MiB more drained)
/// before their signature was checked, by anyone, with no bound on all of them together; 64
/// such uploads held about 100 MiB on c3557ba. Now one budget (16 MiB by default) holds every
/// unproven caller's body, and a receipt call is at most 2 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_anonymous_uploads_at_once_hold_no_more_than_the_shared_budget() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let (child, url) = ingest(&fleet, &[]).await;
    let addr = url.trim_start_matches("http://").to_string();

    // An 8 MiB receipt call says so in its length: refused before a byte of it is read.
    let answer = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = "POST /v1/receipts HTTP/1.1\r\nHost: herald\r\n\
                    Content-Type: application/json\r\nContent-Length: 8388608\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0; 512];
        let n = stream.read(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer[..n]).to_string()
    };
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let before = resident_kib(child.id());
    let uploads =
        (0..64).map(|_| tokio::spawn(stalled_upload(addr.clone(), "/v1/receipts", 1536 * 1024)));
    let mut open = Vec::new();
    for upload in uploads {
        open.push(upload.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = resident_kib(child.id());
    let held = open.iter().filter(|s| s.is_some()).count();
    drop(open);
    let grew_mib = during.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 40,
        "64 stalled anonymous uploads of 1.5 MiB grew herald-ingest by {grew_mib} MiB \
         (budget 16 MiB; {held} connections still open)"
    );

    // The budget comes back: a signed receipt call is still answered.
    let mut answered = false;
    for _ in 0..50 {
        let r = fleet
            .anon
            .post(format!("{url}/v1/receipts"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        if r.status() == 401 {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered,
        "an unsigned receipt call was not answered 401 after the uploads ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_closed() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let (_child, url) = ingest(&fleet, &["--header-timeout-ms", "500"]).await;
    let addr = url.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Half a request, then nothing: a slowloris client.
        stream
            .write_all(b"POST /v1/requests HTTP/1.1\r\nHost: herald\r\nX-Slow: ")
            .unwrap();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(
        closed_after < Duration::from_secs(5),
        "the connection was held for {closed_after:?} (header time-out 500 ms)"
    );
    assert!(
        closed_after >= Duration::from_millis(400),
        "closed at once: {closed_after:?}"
    );
}

#[test]
fn a_program_started_with_an_example_secret_refuses_to_start() {
    let keys = std::env::temp_dir().join(format!("herald-example-{}.toml", std::process::id()));
    herald::auth::keys::create(&keys, "ops", &[herald::auth::Scope::Admin]).unwrap();
    let example = "change-me-to-a-long-random-secret";
    for (variable, value) in [
        ("HERALD_JWT_SECRET", example.to_string()),
        ("HERALD_RECEIPT_SECRETS", format!("sim={example}")),
        ("HERALD_JWT_SECRET", "tiny-7x9q".to_string()),
    ] {
        let out = std::process::Command::new(INGEST)
            .args(["--http-addr", "127.0.0.1:0"])
            .env("HERALD_API_KEYS_FILE", &keys)
            .env("HERALD_RECEIPT_SECRETS", format!("sim={}", "ab".repeat(32)))
            .env(variable, &value)
            .env("HERALD_KAFKA_BROKERS", "127.0.0.1:1")
            .env("HERALD_REDIS_URL", "redis://127.0.0.1:1")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{variable}={value} started");
        assert!(
            stderr.contains(variable) && stderr.contains("openssl rand -hex 32"),
            "{variable}: {stderr}"
        );
        assert!(!stderr.contains(&value), "the secret is echoed: {stderr}");
    }
    let _ = std::fs::remove_file(keys);
}

/// Finding 3: `HERALD_PUBLIC_ROUTES=requests` opened a relay that sends any text to any
/// address, to anyone. Now it needs the networks named, answers only them, each address
/// within its own rate, and everyone else still needs a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opened_seed_routes_answer_only_the_named_networks_each_within_its_rate() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let request = serde_json::json!({"to": "a@example.com", "message": "m", "type": "email"});
    // A caller with no credentials: the status it hears.
    let anonymous_post = |url: &str| {
        let r = fleet
            .anon
            .post(format!("{url}/v1/requests"))
            .json(&request)
            .send();
        async move { r.await.unwrap().status().as_u16() }
    };

    // Opened without naming who may call: the program refuses to start, and says why.
    let out = std::process::Command::new(INGEST)
        .args(["--http-addr", "127.0.0.1:0"])
        .envs(fleet.access_env())
        .env("HERALD_PUBLIC_ROUTES", "requests")
        .env("HERALD_KAFKA_BROKERS", "127.0.0.1:1")
        .env("HERALD_REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("HERALD_PUBLIC_NETWORKS"),
        "{stderr}"
    );

    // Opened to another network: a caller from 127.0.0.1 still needs a key.
    let (_other, url) = ingest(
        &fleet,
        &[
            "--public-routes",
            "requests",
            "--public-networks",
            "10.0.0.0/8",
        ],
    )
    .await;
    assert_eq!(anonymous_post(&url).await, 401);

    // Opened to loopback, two calls at once and one a second: the third at once is 429.
    let (_open, url) = ingest(
        &fleet,
        &[
            "--public-routes",
            "requests",
            "--public-networks",
            "127.0.0.0/8",
            "--public-rate-per-sec",
            "1",
            "--public-burst",
            "2",
        ],
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(anonymous_post(&url).await);
    }
    assert_eq!(statuses, [201, 201, 429]);
    // A caller with a key is not counted against its address.
    let (status, body) = {
        let r = fleet
            .http
            .post(format!("{url}/v1/requests"))
            .json(&request)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert_eq!(status, 201, "{body}");
}
