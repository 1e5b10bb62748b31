//! `herald-broker` as operators run it: topics created, address written, clean exit on SIGTERM.

use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

#[test]
fn broker_creates_every_topic_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("herald-broker-{}", uuid::Uuid::new_v4()));
    let addr_file = dir.join("broker.addr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald-broker"))
        .args(["--partitions", "3", "--namespace", "bt"])
        .arg("--address-file")
        .arg(&addr_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut addr = String::new();
    for _ in 0..100 {
        addr = std::fs::read_to_string(&addr_file).unwrap_or_default();
        if !addr.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(addr.starts_with("127.0.0.1:"), "address file: {addr:?}");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .unwrap();
    let meta = consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .unwrap();
    let mut topics: Vec<(String, usize)> = meta
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    topics.sort();
    let expected = herald::kafka::Topics::new("bt").all();
    assert_eq!(topics.len(), expected.len(), "{topics:?}");
    for name in expected {
        assert!(
            topics.contains(&(name.clone(), 3)),
            "{name} with 3 partitions in {topics:?}"
        );
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = crate::harness::wait_child(&mut child, Duration::from_secs(30));
    assert!(exit.success(), "exit on SIGTERM: {exit:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `--help` shows where each variable is set, never its value when that may hold a secret:
/// a Redis URL carries its password.
#[test]
fn help_never_prints_the_redis_password() {
    let mut showing_the_variable = 0;
    for bin in crate::deploy::BINARIES {
        let out = Command::new(bin)
            .arg("--help")
            .env("HERALD_REDIS_URL", "redis://:s3cret-pa55@127.0.0.1:6399")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{bin} --help");
        assert!(
            !text.contains("s3cret-pa55"),
            "{bin} printed the password: {text}"
        );
        showing_the_variable += usize::from(text.contains("HERALD_REDIS_URL"));
    }
    // Every program that reads Redis names the variable (so its value was not just absent).
    assert!(showing_the_variable >= 6, "{showing_the_variable}");
}

/// A provider key or SMTP login bound for another host without TLS is refused before any
/// call, naming the fix, and neither secret is echoed; this machine and listed hosts pass.
#[test]
fn credentials_without_tls_to_another_host_are_refused() {
    let check = |url: &str, smtp: Option<&str>, plaintext: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["providers", "check"])
            .env("HERALD_PROVIDER_URL", url)
            .env("HERALD_PROVIDER_API_KEY", "key-that-must-not-leak")
            .env("HERALD_PLAINTEXT_HOSTS", plaintext)
            .env("HERALD_EMAIL_FROM", "Shop <offers@shop.test>")
            .env("HERALD_PUBLIC_URL", "https://herald.shop.test")
            .env(
                "HERALD_UNSUBSCRIBE_SECRET",
                "an-unsubscribe-secret-of-32-bytes-or-more",
            );
        if let Some(smtp) = smtp {
            cmd.env("HERALD_SMTP_URL", smtp);
        }
        let out = cmd.output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains("key-that-must-not-leak") && !all.contains("pw-must-not-leak"),
            "{all}"
        );
        (out.status.success(), all)
    };
    let (ok, all) = check("http://sms-gateway.shop.test:3001", None, "");
    assert!(!ok, "{all}");
    assert!(
        all.contains("in clear") && all.contains("https://"),
        "{all}"
    );
    let (ok, all) = check(
        "http://127.0.0.1:3001",
        Some("smtp://u:pw-must-not-leak@relay.shop.test:587"),
        "",
    );
    assert!(!ok, "{all}");
    assert!(all.contains("tls=required"), "{all}");
    let (ok, all) = check(
        "http://127.0.0.1:3001",
        Some("smtp://u:pw-must-not-leak@relay.shop.test:587?tls=required"),
        "",
    );
    assert!(ok, "{all}");
    let (ok, all) = check("http://provider:3001", None, "provider");
    assert!(ok, "a listed host: {all}");
}

#[test]
fn every_binary_explains_itself() {
    for bin in [
        env!("CARGO_BIN_EXE_herald-ingest"),
        env!("CARGO_BIN_EXE_herald-dispatch"),
        env!("CARGO_BIN_EXE_herald-provider"),
        env!("CARGO_BIN_EXE_herald-broker"),
        env!("CARGO_BIN_EXE_herald"),
        env!("CARGO_BIN_EXE_herald-dev"),
    ] {
        let out = Command::new(bin).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{bin} --help");
        assert!(text.contains("Usage:"), "{bin}: {text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_herald-dispatch"))
        .args(["--channel", "fax"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fax"),
        "a bad channel is named"
    );
}

/// The operators' `herald` has no load generator, benchmark or local token: those are
/// `herald-dev`'s, which production builds without.
#[test]
fn the_development_commands_are_in_herald_dev_and_not_in_the_operators_cli() {
    let help = |bin: &str| {
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success(), "{bin} --help");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let operators = help(env!("CARGO_BIN_EXE_herald"));
    let dev = help(env!("CARGO_BIN_EXE_herald-dev"));
    for command in [
        "send-requests",
        "seed-customers",
        "send-campaign",
        "generate-events",
        "bench-reserve",
        "token",
        "produce-events",
        "broker-bench",
    ] {
        assert!(
            dev.contains(&format!("  {command} ")),
            "herald-dev lacks {command}: {dev}"
        );
        assert!(
            !operators.contains(&format!("  {command} ")),
            "herald has {command}: {operators}"
        );
    }
    for command in ["campaigns", "dlq", "lag", "keys", "providers", "webhooks"] {
        assert!(
            operators.contains(&format!("  {command} ")),
            "herald lacks {command}"
        );
    }
}
