//! Security review, finding 6 (Redis part): each program as its own Redis user, from the file
//! `herald redis-acl` writes. The whole fleet (ingest, fan-out, dispatchers, retry's
//! fallback, events, metrics) does its work as those users with no command refused, and each
//! user is refused what Herald never needs.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use herald::model::Channel;
use herald::store::acl::Program;
use serde_json::json;

use crate::harness::{
    email_push_customer, fresh_ns, quiet_provider, wait_until, ChildGuard, Fleet,
};

const ADMIN_PASSWORD: &str = "test-admin-password-not-a-herald-user";

/// A Redis that loads the ACL file of namespace `ns`, plus a test-only `admin` user to look
/// at its ACL LOG.
struct AclRedis {
    port: u16,
    passwords: HashMap<&'static str, String>,
    _server: ChildGuard,
    dir: std::path::PathBuf,
}

impl AclRedis {
    async fn start(ns: &str) -> AclRedis {
        let dir = std::env::temp_dir().join(format!("herald-acl-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        let passwords: HashMap<&'static str, String> = Program::ALL
            .iter()
            .map(|p| (p.password_var(), uuid::Uuid::new_v4().simple().to_string()))
            .collect();
        let file = dir.join("users.acl");
        let made = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["redis-acl", "--namespace", ns, "--out"])
            .arg(&file)
            .envs(&passwords)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let text = std::fs::read_to_string(&file).unwrap();
        for pw in passwords.values() {
            assert!(!text.contains(pw.as_str()), "the file holds no password");
        }
        std::fs::write(
            &file,
            format!("{text}user admin on >{ADMIN_PASSWORD} ~* &* +@all\n"),
        )
        .unwrap();
        let port = crate::harness::free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--aclfile")
            .arg(&file)
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        let server = ChildGuard(Some(child));
        wait_until(
            "redis-server to listen",
            Duration::from_secs(10),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await;
        AclRedis {
            port,
            passwords,
            _server: server,
            dir,
        }
    }

    fn url(&self, program: Program) -> String {
        format!(
            "redis://{}:{}@127.0.0.1:{}",
            program.user(),
            self.passwords[program.password_var()],
            self.port
        )
    }

    async fn connect(&self, url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn admin(&self) -> redis::aio::MultiplexedConnection {
        self.connect(&format!(
            "redis://admin:{ADMIN_PASSWORD}@127.0.0.1:{}",
            self.port
        ))
        .await
    }

    /// What Redis refused since it started: (user, command or key).
    async fn refusals(&self) -> Vec<String> {
        let log: Vec<redis::Value> = redis::cmd("ACL")
            .arg("LOG")
            .query_async(&mut self.admin().await)
            .await
            .unwrap();
        log.iter().map(|entry| format!("{entry:?}")).collect()
    }
}

impl Drop for AclRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_program_works_as_its_own_redis_user_and_none_is_refused() {
    let ns = fresh_ns();
    let redis = AclRedis::start(&ns).await;
    // Push stays silent: retry must fall each recipient back to e-mail.
    let mut sim = quiet_provider();
    sim.silent_channels = vec![Channel::Push];
    let fleet = Fleet::start_named(sim, 1, &redis.url(Program::Ingest), ns.clone()).await;
    let as_user = |p: Program| redis.url(p);
    let metrics_addr = format!("127.0.0.1:{}", crate::harness::free_port());
    let programs: Vec<(&str, Vec<&str>, Program)> = vec![
        (env!("CARGO_BIN_EXE_herald-fanout"), vec![], Program::Fanout),
        (env!("CARGO_BIN_EXE_herald-retry"), vec![], Program::Retry),
        (env!("CARGO_BIN_EXE_herald-events"), vec![], Program::Events),
        (
            env!("CARGO_BIN_EXE_herald-dispatch"),
            vec!["--channel", "email"],
            Program::Dispatch,
        ),
        (
            env!("CARGO_BIN_EXE_herald-dispatch"),
            vec!["--channel", "push"],
            Program::Dispatch,
        ),
        (
            env!("CARGO_BIN_EXE_herald-metrics"),
            vec!["--http-addr", &metrics_addr],
            Program::Metrics,
        ),
    ];
    let urls: Vec<String> = programs.iter().map(|(_, _, p)| as_user(*p)).collect();
    let _children: Vec<ChildGuard> = programs
        .iter()
        .zip(&urls)
        .map(|((bin, args, _), url)| fleet.spawn_with(bin, args, &[("HERALD_REDIS_URL", url)]))
        .collect();

    let ids: Vec<String> = (0..20).map(|i| format!("acl{i}")).collect();
    fleet
        .put_customers(ids.iter().map(|id| email_push_customer(id)).collect())
        .await;
    let (status, body) = fleet
        .post(
            "/v1/campaigns",
            json!({"id": "acl", "name": "acl", "template": "offer for {{id}}",
                   "channels": ["push", "email"],
                   "confirmation_timeout_ms": {"push": 1000, "email": 5000},
                   "audience": {"customer_ids": ids}}),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let (requests, statuses) = fleet.submit(3, "email").await;
    assert!(statuses.iter().all(|s| *s < 300), "{statuses:?}");
    let (status, body) = fleet
        .post(
            "/v1/sales",
            json!({"event_type": "sale_completed", "sale_id": "acl-1", "product_id": 7,
                   "product_name": "Manzana", "quantity": 1, "total": "19.99",
                   "customer_email": "ana@shop.test", "customer_id": "ana", "timestamp": "2026-11-20T10:30:00"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    let report = fleet.wait_campaign("acl", Duration::from_secs(90)).await;
    assert_eq!(report["counts"]["delivered:email"], 20, "{report}");
    let mut transactional = requests.clone();
    transactional.push("sale-acl-1".into());
    let ended = fleet
        .wait_terminal(&transactional, Duration::from_secs(60))
        .await;
    assert_eq!(ended.get("sent"), Some(&4), "{ended:?}");
    wait_until(
        "the sale's loyalty credit",
        Duration::from_secs(30),
        || async {
            let (_, account) = fleet.get("/v1/customers/ana/loyalty").await;
            account["points"] == 19
        },
    )
    .await;
    let sim = fleet.sim_stats().await;
    assert_eq!(
        (sim.delivered, sim.keys_delivered_twice),
        (44, 0),
        "the provider's own count: 20 silent pushes, 20 e-mail fallbacks, 3 requests, 1 sale: {sim:?}"
    );
    let delivered = fleet
        .metrics_delivered(
            &format!("http://{metrics_addr}"),
            "acl",
            20,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(delivered, 20, "herald-metrics counted as herald-metrics");
    let stats = fleet
        .get_json(&format!("http://{metrics_addr}/v1/stats"))
        .await
        .unwrap_or_default();
    assert_eq!(
        stats["totals"]["outcomes"]["delivered"], 20,
        "the dashboard's totals, read as herald-metrics: {stats}"
    );

    assert_eq!(
        redis.refusals().await,
        Vec::<String>::new(),
        "no program was refused a command or a key"
    );
    fleet.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refuses_callers_without_a_user_and_herald_users_what_herald_never_does() {
    let ns = fresh_ns();
    let redis = AclRedis::start(&ns).await;

    let anonymous = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    let refused = match anonymous {
        Err(e) => e.to_string(),
        Ok(mut c) => redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .expect_err("a caller without a user is refused")
            .to_string(),
    };
    assert!(refused.contains("NOAUTH"), "{refused}");

    let wrong = format!(
        "redis://{}:not-its-password@127.0.0.1:{}",
        Program::Ingest.user(),
        redis.port
    );
    assert!(
        redis::Client::open(wrong)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .is_err(),
        "a wrong password is refused"
    );

    for program in Program::ALL {
        let mut c = redis.connect(&redis.url(program)).await;
        let own_key = if program == Program::Metrics {
            format!("{ns}:{{metrics}}:totals")
        } else {
            format!("{ns}:customer:x")
        };
        let _: () = redis::cmd("HGETALL")
            .arg(&own_key)
            .query_async::<redis::Value>(&mut c)
            .await
            .map(|_| ())
            .unwrap_or_else(|e| panic!("{program} reads {own_key}: {e}"));
        let refused: [&[&str]; 8] = [
            &["FLUSHALL"],
            &["CONFIG", "GET", "*"],
            &["KEYS", "*"],
            &["SCRIPT", "FLUSH"],
            &["CLIENT", "LIST"],
            &["SHUTDOWN", "NOSAVE"],
            &["GET", "another-fleet:customer:x"],
            &["ACL", "LIST"],
        ];
        for words in refused {
            let mut cmd = redis::cmd(words[0]);
            cmd.arg(&words[1..]);
            let err = cmd
                .query_async::<redis::Value>(&mut c)
                .await
                .expect_err(&format!("{program} is refused {words:?}"));
            assert!(err.to_string().contains("NOPERM"), "{program}: {err}");
        }
    }

    let mut metrics = redis.connect(&redis.url(Program::Metrics)).await;
    let err = redis::cmd("HGETALL")
        .arg(format!("{ns}:customer:x"))
        .query_async::<redis::Value>(&mut metrics)
        .await
        .expect_err("herald-metrics reads no customer");
    assert!(err.to_string().contains("NOPERM"), "{err}");
}
