//! The docker-compose deployment as far as a machine without a Docker engine can check it:
//! the file is valid (Debian's docker-compose validates offline), every `HERALD_*` variable
//! it sets is one some program accepts, and every program answers `--help`.

use std::process::Command;
use std::time::Duration;

pub(crate) const BINARIES: [&str; 9] = [
    env!("CARGO_BIN_EXE_herald"),
    env!("CARGO_BIN_EXE_herald-ingest"),
    env!("CARGO_BIN_EXE_herald-dispatch"),
    env!("CARGO_BIN_EXE_herald-fanout"),
    env!("CARGO_BIN_EXE_herald-retry"),
    env!("CARGO_BIN_EXE_herald-metrics"),
    env!("CARGO_BIN_EXE_herald-events"),
    env!("CARGO_BIN_EXE_herald-provider"),
    env!("CARGO_BIN_EXE_herald-broker"),
];

fn compose_file() -> String {
    crate::harness::repo_file("compose/docker-compose.yml")
        .display()
        .to_string()
}

/// The secrets compose/.env must hold: compose refuses to start without any of them.
const SECRETS: [&str; 14] = [
    "HERALD_PROVIDER_API_KEY",
    "HERALD_KAFKA_PASSWORD",
    "HERALD_KAFKA_ADMIN_PASSWORD",
    "HERALD_UNSUBSCRIBE_SECRET",
    "HERALD_REDIS_PASSWORD_INGEST",
    "HERALD_REDIS_PASSWORD_FANOUT",
    "HERALD_REDIS_PASSWORD_DISPATCH",
    "HERALD_REDIS_PASSWORD_RETRY",
    "HERALD_REDIS_PASSWORD_EVENTS",
    "HERALD_REDIS_PASSWORD_METRICS",
    "HERALD_REDIS_PASSWORD_OPERATOR",
    "HERALD_RECEIPT_SECRET",
    "HERALD_JWT_SECRET",
    "GRAFANA_ADMIN_PASSWORD",
];

/// `docker-compose config` with these secrets set: its status, and what it printed.
fn compose_config(secrets: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("docker-compose");
    cmd.args(["-f", &compose_file(), "config"]);
    for name in SECRETS {
        cmd.env_remove(name);
    }
    for name in secrets {
        cmd.env(name, "a-value-from-compose-env");
    }
    let out = cmd
        .output()
        .expect("docker-compose (Debian's package) is installed by scripts/test.sh");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_compose_file_is_valid() {
    let (ok, text) = compose_config(&SECRETS);
    assert!(ok, "docker-compose config: {text}");
}

#[test]
fn compose_needs_every_secret_and_publishes_on_loopback_only() {
    for missing in SECRETS {
        let others: Vec<&str> = SECRETS.into_iter().filter(|s| *s != missing).collect();
        let (ok, text) = compose_config(&others);
        assert!(
            !ok && text.contains(missing),
            "starts without {missing}: {text}"
        );
    }
    let (_, text) = compose_config(&SECRETS);
    let published: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("- ") && l.ends_with("/tcp"))
        .collect();
    assert!(published.len() >= 4, "{text}");
    for port in published {
        assert!(
            port.starts_with("- 127.0.0.1:"),
            "published beyond loopback: {port}"
        );
    }
    // YAML folds long commands: compare with the whitespace collapsed.
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("--maxmemory-policy noeviction") && flat.contains("--aclfile"));
    assert!(
        !flat.contains("--requirepass"),
        "one password for all of Redis"
    );
    assert!(!text.contains("GF_SECURITY_ADMIN_PASSWORD: admin"));
    let example =
        std::fs::read_to_string(crate::harness::repo_file("compose/.env.example")).unwrap();
    for name in SECRETS {
        assert!(
            example.lines().any(|l| l == format!("{name}=")),
            ".env.example must leave {name} empty"
        );
    }
}

/// Every program's `--help`, concatenated.
fn all_help() -> String {
    let mut help = String::new();
    for bin in BINARIES {
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success(), "{bin} --help failed");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains("Usage:"), "{bin} --help: {text}");
        help.push_str(&text);
    }
    let subcommands: [&[&str]; 4] = [
        &["topics", "create"],
        &["campaigns", "watch"],
        &["providers", "check"],
        &["redis-acl"],
    ];
    for sub in subcommands {
        let out = Command::new(BINARIES[0])
            .args(sub)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "herald {sub:?} --help failed");
        help.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    help
}

#[test]
fn every_program_answers_help_and_accepts_what_compose_sets() {
    let help = all_help();
    let compose = std::fs::read_to_string(compose_file()).unwrap();
    // Keys of `environment:` maps (`    HERALD_X: value`), not `${...}` substitutions.
    let set: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim_start().split_once(':').map(|(k, _)| k))
        .filter(|k| k.starts_with("HERALD_"))
        .collect();
    assert!(set.len() >= 10, "compose sets Herald's variables: {set:?}");
    for var in set {
        assert!(
            help.contains(&format!("[env: {var}")),
            "compose sets {var}, which no program's --help lists"
        );
    }
}

/// `herald providers check` says which providers each channel uses, names a missing
/// variable, and never prints a secret's value.
#[test]
fn providers_check_lists_each_channel_and_never_prints_a_secret() {
    let dir = std::env::temp_dir().join(format!("herald-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("providers.toml");
    std::fs::write(
        &file,
        "[[sms]]\nadapter = \"twilio\"\nname = \"twilio\"\naccount_sid = \"AC1\"\nauth_token_env = \"CHECK_TWILIO_TOKEN\"\nfrom = \"+15005550006\"\n\
         [[sms]]\nadapter = \"http\"\nname = \"backup\"\nurl = \"http://127.0.0.1:3001\"\n\
         [push]\nadapter = \"fcm\"\ncredentials_env = \"CHECK_FCM_KEY\"\n",
    )
    .unwrap();
    let run = |fcm: Option<&str>| {
        let mut cmd = Command::new(BINARIES[0]);
        cmd.args(["providers", "check", "--providers"])
            .arg(&file)
            .env("HERALD_PROVIDER_API_KEY", "provider-key-value")
            .env("HERALD_PUBLIC_URL", "https://herald.example")
            .env("CHECK_TWILIO_TOKEN", "twilio-token-value")
            .env_remove("CHECK_FCM_KEY");
        if let Some(path) = fcm {
            cmd.env("CHECK_FCM_KEY", path);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = run(None);
    assert!(!ok, "{text}");
    assert!(text.contains("CHECK_FCM_KEY"), "{text}");
    assert!(text.contains("twilio") && text.contains("backup"), "{text}");
    for secret in ["provider-key-value", "twilio-token-value"] {
        assert!(!text.contains(secret), "printed a secret: {text}");
    }
    let (ok, text) = run(Some("/nonexistent/key.json"));
    assert!(
        !ok && text.contains("cannot read the FCM service-account key"),
        "{text}"
    );
}

/// `(host directory, container directory)` of a read-only volume of the resolved compose
/// file whose container side holds `container_file`.
fn mounted_directory_holding(config: &str, container_file: &str) -> Option<(String, String)> {
    config.lines().map(str::trim).find_map(|line| {
        let volume = line.strip_prefix("- ")?.strip_suffix(":ro")?;
        let (host, inside) = volume.split_once(':')?;
        let inner = container_file.strip_prefix(inside)?.strip_prefix('/')?;
        (!inner.contains('/')).then(|| (host.to_string(), inside.to_string()))
    })
}

/// Finding 2 of the security review: the key file was a single-file mount (a compose secret),
/// which keeps showing the old file after `herald keys revoke` renames a new one into place,
/// so a revoked key worked until the container was recreated. Now compose mounts the
/// directory; this runs herald-ingest with that layout (the host directory a temporary one)
/// and revokes with the `herald` CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_in_the_compose_layout_is_refused_within_two_seconds() {
    let (_, config) = compose_config(&SECRETS);
    let keys_file = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("HERALD_API_KEYS_FILE: "))
        .expect("compose sets HERALD_API_KEYS_FILE")
        .to_string();
    let (host, inside) = mounted_directory_holding(&config, &keys_file)
        .unwrap_or_else(|| panic!("no directory volume holds {keys_file}:\n{config}"));
    assert!(host.ends_with("compose/secrets/keys"), "{host}");
    assert!(
        !config.contains("/run/secrets/api_keys"),
        "the key file is still a secret"
    );

    // The same layout on this machine: the host directory is a temporary one.
    let fleet = crate::harness::Fleet::start(crate::harness::quiet_provider(), 1).await;
    let dir = std::env::temp_dir().join(format!("herald-compose-keys-{}", fleet.ns));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(keys_file.strip_prefix(&format!("{inside}/")).unwrap());
    let herald = |args: &[&str]| {
        let out = Command::new(BINARIES[0])
            .args(args)
            .arg("--file")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_string()
    };
    let key = herald(&[
        "keys",
        "create",
        "--name",
        "shop",
        "--scopes",
        "requests:read",
    ]);
    let addr = format!("127.0.0.1:{}", crate::harness::free_port());
    let mut ingest = Command::new(env!("CARGO_BIN_EXE_herald-ingest"));
    ingest
        .args(["--http-addr", &addr])
        .envs(fleet.access_env())
        .env("HERALD_API_KEYS_FILE", &file)
        .env("HERALD_KAFKA_BROKERS", fleet.brokers())
        .env("HERALD_REDIS_URL", &fleet.redis_url)
        .env("HERALD_NAMESPACE", &fleet.ns)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _child = crate::harness::ChildGuard(Some(ingest.spawn().unwrap()));
    let url = format!("http://{addr}/v1/requests/none");
    let status = || {
        let r = fleet.anon.get(&url).bearer_auth(&key).send();
        async move { r.await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    crate::harness::wait_until("herald-ingest", Duration::from_secs(20), || async {
        status().await == 404
    })
    .await;

    herald(&["keys", "revoke", "--name", "shop"]);
    let revoked = std::time::Instant::now();
    while status().await != 401 {
        assert!(
            revoked.elapsed() < Duration::from_secs(2),
            "the revoked key still worked 2 s later"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The resolved compose file (`docker-compose config`) as JSON, read by Python's yaml.
fn compose_json(extra_env: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = Command::new("docker-compose");
    cmd.args(["-f", &compose_file(), "config"]);
    for name in SECRETS {
        cmd.env(name, "a-value-from-compose-env");
    }
    cmd.envs(extra_env.iter().copied());
    let out = cmd.output().expect("docker-compose");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    python.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let json = python.wait_with_output().unwrap();
    serde_json::from_slice(&json.stdout).expect("the resolved compose file as JSON")
}

fn networks_of(config: &serde_json::Value, service: &str) -> Vec<String> {
    config["services"][service]["networks"]
        .as_object()
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default()
}

/// Finding 6 (its network part): compose trusted one flat network, gave the provider's key
/// to every program and opened every port with one bind address.
#[test]
fn compose_keeps_kafka_and_redis_on_an_internal_network_and_secrets_where_used() {
    let config = compose_json(&[]);
    assert_eq!(
        config["networks"]["data"]["internal"], true,
        "{}",
        config["networks"]
    );
    let services = config["services"].as_object().unwrap();
    for store in ["kafka", "redis"] {
        assert_eq!(networks_of(&config, store), ["data"], "{store}");
    }
    for (name, service) in services {
        let on_data = networks_of(&config, name).contains(&"data".to_string());
        let herald = service["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("herald:"));
        let store = name == "kafka" || name == "redis";
        // redis-acl only writes a file: no network at all.
        let networked_herald = herald && name != "provider" && name != "redis-acl";
        assert_eq!(
            on_data,
            networked_herald || store,
            "{name} on data: {on_data}"
        );
        let holds_key = service["environment"]
            .as_object()
            .is_some_and(|env| env.contains_key("HERALD_PROVIDER_API_KEY"));
        let needs_key = name.starts_with("dispatch-") || name == "provider";
        assert_eq!(
            holds_key, needs_key,
            "{name} holds the provider's key: {holds_key}"
        );
    }
    // Opening the API opens only the API.
    let config = compose_json(&[("HERALD_API_BIND_ADDR", "0.0.0.0")]);
    for (name, service) in config["services"].as_object().unwrap() {
        for port in service["ports"].as_array().into_iter().flatten() {
            // docker-compose 1.29 writes `127.0.0.1:5000:5000/tcp`.
            let host_ip = port
                .as_str()
                .and_then(|p| p.split(':').next())
                .unwrap_or("");
            let open = host_ip == "0.0.0.0";
            assert_eq!(open, name == "ingest", "{name} published on {host_ip}");
        }
    }
}

/// Finding 6: each program reaches Redis as its own user, with its own password variable.
#[test]
fn each_compose_program_reaches_redis_as_its_own_user() {
    let (ok, text) = compose_config(&SECRETS);
    assert!(ok, "{text}");
    let services = text.split("\nservices:\n").nth(1).unwrap_or_default();
    let mut users = Vec::new();
    let mut service = "";
    for line in services.lines() {
        if line.starts_with("  ") && !line.starts_with("   ") && line.ends_with(':') {
            service = line.trim().trim_end_matches(':');
        }
        if let Some(url) = line.trim().strip_prefix("HERALD_REDIS_URL: ") {
            let program = service.split('-').next().unwrap_or_default();
            assert!(
                url.starts_with(&format!("redis://herald-{program}:")),
                "{service} reaches Redis as {url}"
            );
            users.push(program.to_string());
        }
    }
    users.sort();
    users.dedup();
    assert_eq!(
        users,
        ["dispatch", "events", "fanout", "ingest", "metrics", "retry"],
        "{text}"
    );
    let raw = std::fs::read_to_string(compose_file()).unwrap();
    for line in raw.lines().filter(|l| l.contains("HERALD_REDIS_URL: ")) {
        let user = line.split("redis://herald-").nth(1).unwrap_or_default();
        let user = user.split(':').next().unwrap_or_default();
        let var = format!("${{HERALD_REDIS_PASSWORD_{}:?", user.to_uppercase());
        assert!(line.contains(&var), "{line} must use {var}");
    }
}

/// The production image (the Dockerfile's last, default stage, what the Helm chart runs)
/// carries only what the build without the `dev` feature makes: Herald's programs and the
/// operators' CLI, never a development tool. Compose's simulated provider comes from the
/// `dev` stage.
#[test]
fn the_production_image_ships_no_development_tool() {
    let dockerfile = std::fs::read_to_string(crate::harness::repo_file("Dockerfile")).unwrap();
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap_or_default();
    assert!(
        last_stage.starts_with("runtime AS production"),
        "{last_stage}"
    );
    let copies: Vec<&str> = last_stage
        .lines()
        .filter(|l| l.starts_with("COPY --from=build"))
        .collect();
    assert_eq!(copies, ["COPY --from=build /out/prod/ /usr/local/bin/"]);
    let prod_build = dockerfile
        .split("RUN ")
        .find(|step| step.contains("/out/prod/"))
        .unwrap_or_default();
    assert!(
        prod_build.contains(
            "cargo build --release --locked --no-default-features --features otlp --bins"
        ),
        "{prod_build}"
    );
    let cargo = std::fs::read_to_string(crate::harness::repo_file("Cargo.toml")).unwrap();
    let manifest: toml::Table = cargo.parse().unwrap();
    let needs_dev = |name: &str| {
        manifest["bin"].as_array().unwrap().iter().any(|b| {
            b["name"].as_str() == Some(name)
                && b["required-features"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f.as_str() == Some("dev")))
        })
    };
    for tool in ["herald-dev", "herald-provider", "herald-broker"] {
        assert!(needs_dev(tool), "{tool} must need the dev feature");
    }
    let (_, text) = compose_config(&SECRETS);
    let provider = text.split("\n  provider:\n").nth(1).unwrap_or_default();
    assert!(provider.contains("target: dev"), "{provider}");
}
