//! A whole fleet for one test: topics of its own on the local stack's Apache Kafka
//! (`HERALD_KAFKA_BROKERS`, which `scripts/stack.sh up` writes) and the real Redis of the stack,
//! both under a namespace of its own, the simulated provider, the ingest API and dispatchers.
//! Tests run in parallel without seeing each other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herald::campaigns::fanout::{self, FanOut};
use herald::campaigns::retry::Retrier;
use herald::config::ProvidersArgs;
use herald::config::{CommonArgs, HealthArgs, LogFormat, ProviderArgs, RulesArgs};
use herald::dev::simulator::{self, SimStats, SimulatorArgs};
use herald::dispatch::{self, Dispatcher};
use herald::events::{BatchConfig, Consume, RoleStats};
use herald::kafka::{self, Topics};
use herald::metrics::{self, Aggregator};
use herald::model::Channel;
use herald::program::Program as _;
use herald::store::{
    CampaignStore, CustomerStore, EventStore, MetricsStore, PromoStore, Redis, RequestStore,
    SlotStore, StoreError, WebhookStore,
};
use rdkafka::consumer::Consumer;
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

mod calls;
mod messages;
mod process;
mod programs;
pub use process::*;

pub const API_KEY: &str = "test-key-123";

/// A file of this repository, found at run time: cargo sets `CARGO_MANIFEST_DIR` for the test
/// process, whereas `env!` would bake in the path of whichever clone built the binary first
/// (CI shares one target directory between clones).
pub fn repo_file(relative: &str) -> std::path::PathBuf {
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    root.join(relative)
}

/// The JWT secret of every test fleet's API (`Fleet::token` mints with it).
pub const JWT_SECRET: &str = "test-jwt-secret-of-at-least-32-bytes";
/// Admins' tokens have a secret of their own.
pub const JWT_ADMIN_SECRET: &str = "test-admin-jwt-secret-at-least-32-bytes";

/// The secret the simulated provider signs receipts with, and the fleet's API verifies.
pub const RECEIPT_SECRET: &str = "sim-receipt-secret-0123456789abcdef0123";

/// The secret that signs and checks every fleet's unsubscribe links.
pub const UNSUBSCRIBE_SECRET: &str = "test-unsubscribe-secret-0123456789abcdef";

/// The `Herald-Signature` the simulated provider would put on `body` now.
pub fn receipt_signature(body: &[u8]) -> String {
    herald::auth::signature::sign(RECEIPT_SECRET, herald::model::now_ms() / 1000, body)
}

/// Twilio's auth token and Meta's app secret and verify token, as the fleets' fake
/// providers sign their webhooks with them.
pub const TWILIO_AUTH_TOKEN: &str = "test-twilio-auth-token-0123456789abcdef";
pub const WHATSAPP_APP_SECRET: &str = "test-meta-app-secret-0123456789abcdef";
pub const WHATSAPP_VERIFY_TOKEN: &str = "test-meta-verify-token";

/// The access settings of every fleet's API: a key file of the fleet's own (as an operator
/// makes it, with `herald keys create`), the simulator's receipt secret and the fake
/// providers' webhook secrets; `public_url` is where the API listens.
pub fn access_args(
    keys_file: &std::path::Path,
    public_url: &str,
) -> herald::api::program::AccessArgs {
    herald::api::program::AccessArgs {
        public_url: Some(public_url.to_string()),
        twilio_auth_token: Some(TWILIO_AUTH_TOKEN.into()),
        whatsapp_app_secret: Some(WHATSAPP_APP_SECRET.into()),
        whatsapp_verify_token: Some(WHATSAPP_VERIFY_TOKEN.into()),
        api_keys_file: Some(keys_file.to_path_buf()),
        receipt_secrets: Some(format!("sim={RECEIPT_SECRET}").as_str().into()),
        unsubscribe_secret: Some(UNSUBSCRIBE_SECRET.into()),
        public_routes: Vec::new(),
        public_networks: Vec::new(),
        public_rate_per_sec: 20,
        public_burst: 40,
        anonymous_body_budget_bytes: herald::api::access::DEFAULT_ANONYMOUS_BODY_BUDGET,
        receipt_body_limit_bytes: herald::api::access::DEFAULT_RECEIPT_BODY_LIMIT,
        key_rate_per_sec: 100_000,
        key_burst: 100_000,
        insecure_dev: false,
    }
}

/// A key file of its own for a fleet, with one admin key: the file's path and the key.
pub fn admin_key_file(ns: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("herald-it-{ns}"));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let file = dir.join("keys.toml");
    let key = herald::auth::keys::create(&file, "test-admin", &[herald::auth::Scope::Admin])
        .expect("an admin key");
    (file, key.expose().to_string())
}

/// The flags of a program of the fleet in namespace `ns`.
fn common_args(
    brokers: &str,
    redis_url: &str,
    ns: &str,
    campaign_shards: Option<u16>,
) -> CommonArgs {
    CommonArgs {
        kafka_brokers: brokers.to_string(),
        redis_url: redis_url.to_string(),
        redis_cluster: false,
        campaign_shards,
        namespace: ns.to_string(),
        log_format: LogFormat::Text,
        kafka_security: Default::default(),
        campaign_retention_secs: 30 * 24 * 3600,
        working_retention_secs: 8 * 24 * 3600,
    }
}

/// The Apache Kafka the fleets use: the local stack's unless `HERALD_KAFKA_BROKERS` says else.
pub fn kafka_brokers() -> String {
    std::env::var("HERALD_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// How a fleet's topics are replicated: `HERALD_TEST_TOPIC_REPLICATION` (3 on the three-broker
/// cluster, with `min.insync.replicas` 2), else one copy.
pub fn topic_settings(partitions: i32) -> herald::kafka::TopicSettings {
    let replication: i32 = std::env::var("HERALD_TEST_TOPIC_REPLICATION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    herald::kafka::TopicSettings {
        partitions,
        replication,
        min_insync_replicas: (replication > 1).then_some(replication - 1),
    }
}

/// A customer reachable by e-mail and push, who consented to both.
pub fn email_push_customer(id: &str) -> Value {
    json!({"id": id, "name": format!("Name {id}"),
           "contacts": {"email": format!("{id}@x.example"), "push": format!("tok-{id}")},
           "consent": {"email": true, "push": true}, "time_zone": "Etc/GMT-1"})
}

/// A namespace of its own for one test's fleet.
pub fn fresh_ns() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub fn redis_url() -> String {
    std::env::var("HERALD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6399".into())
}

/// Runs one command on the Redis the tests use, one server or the cluster (routed by its
/// key there).
pub async fn redis_query<T: redis::FromRedisValue>(cmd: &redis::Cmd) -> T {
    let url = redis_url();
    let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
    let cluster = nodes.len() > 1 || std::env::var("HERALD_REDIS_CLUSTER").as_deref() == Ok("1");
    if cluster {
        let client = redis::cluster::ClusterClient::new(nodes).unwrap();
        let mut c = client.get_async_connection().await.unwrap();
        cmd.query_async(&mut c).await.unwrap()
    } else {
        let client = redis::Client::open(nodes[0]).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut c).await.unwrap()
    }
}

/// Simulator settings with no faults; tests switch on what they need.
pub fn quiet_provider() -> SimulatorArgs {
    SimulatorArgs {
        addr: "127.0.0.1:0".parse().unwrap(),
        api_key: API_KEY.into(),
        latency_min_ms: 1,
        latency_max_ms: 5,
        error_rate: 0.0,
        hang_rate: 0.0,
        hang_ms: 30_000,
        rate_limit: 0,
        idempotent: false,
        rate_window_ms: 1000,
        // The harness points receipts at the fleet's own API.
        receipt_url: None,
        receipt_secret: Some(RECEIPT_SECRET.into()),
        receipt_delay_ms: 20,
        receipt_loss_rate: 0.0,
        receipt_failure_rate: 0.0,
        silent_channels: Vec::new(),
        late_answer_rate: 0.0,
        late_answer_ms: 5_000,
    }
}

/// Every domain store over one Redis: a test reads and plants state in any of them, where a
/// program is handed only those it uses.
#[derive(Clone)]
pub struct TestStores {
    pub redis: Redis,
    pub slots: SlotStore,
    pub requests: RequestStore,
    pub campaigns: CampaignStore,
    pub customers: CustomerStore,
    pub promos: PromoStore,
    pub events: EventStore,
    pub metrics: MetricsStore,
    pub webhooks: WebhookStore,
}

impl TestStores {
    pub async fn connect(redis_url: &str, ns: &str) -> Result<TestStores, StoreError> {
        Ok(TestStores::over(Redis::connect(redis_url, ns).await?))
    }

    pub fn over(redis: Redis) -> TestStores {
        TestStores {
            slots: SlotStore::new(&redis),
            requests: RequestStore::new(&redis),
            campaigns: CampaignStore::new(&redis),
            customers: CustomerStore::new(&redis),
            promos: PromoStore::new(&redis),
            events: EventStore::new(&redis),
            metrics: MetricsStore::new(&redis),
            webhooks: WebhookStore::new(&redis),
            redis,
        }
    }
}

impl std::ops::Deref for TestStores {
    type Target = Redis;
    fn deref(&self) -> &Redis {
        &self.redis
    }
}

pub struct Fleet {
    pub ns: String,
    pub topics: Topics,
    /// The Kafka bootstrap servers the fleet's topics live on.
    pub kafka_brokers: String,
    /// Every domain store over the fleet's Redis, for tests that look at state directly.
    pub store: TestStores,
    /// The Redis this fleet's programs use (the local stack's unless a test brings its own).
    pub redis_url: String,
    pub campaign_shards: Option<u16>,
    pub provider_url: String,
    pub api_url: String,
    /// Sends the fleet's admin key with every request.
    pub http: reqwest::Client,
    /// Sends no credentials.
    pub anon: reqwest::Client,
    /// The fleet's key file and its admin key.
    pub keys_file: std::path::PathBuf,
    pub admin_key: String,
    pub shutdown: CancellationToken,
    /// What the fleet's background tasks failed with: the waits below fail at once with it
    /// rather than at their time-out.
    failures: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Fleet {
    pub async fn start(sim: SimulatorArgs, partitions: i32) -> Fleet {
        Fleet::start_with_redis(sim, partitions, &redis_url()).await
    }

    pub async fn start_with_redis(sim: SimulatorArgs, partitions: i32, redis_url: &str) -> Fleet {
        Fleet::start_inner(sim, partitions, redis_url, None, fresh_ns()).await
    }

    /// A fleet in namespace `ns` (one a test prepared its Redis for).
    pub async fn start_named(
        sim: SimulatorArgs,
        partitions: i32,
        redis_url: &str,
        ns: String,
    ) -> Fleet {
        Fleet::start_inner(sim, partitions, redis_url, None, ns).await
    }

    /// A fleet whose new campaigns get `shards` shards.
    pub async fn start_sharded(sim: SimulatorArgs, partitions: i32, shards: u16) -> Fleet {
        Fleet::start_inner(sim, partitions, &redis_url(), Some(shards), fresh_ns()).await
    }

    async fn start_inner(
        sim: SimulatorArgs,
        partitions: i32,
        redis_url: &str,
        campaign_shards: Option<u16>,
        ns: String,
    ) -> Fleet {
        let _ = herald::telemetry::init("herald-test", herald::config::LogFormat::Text);
        let topics = Topics::new(&ns);
        let kafka_brokers = kafka_brokers();
        herald::kafka::create_topics(&kafka_brokers, &topics, topic_settings(partitions))
            .await
            .expect("the fleet's topics on the local stack's Kafka (scripts/stack.sh up)");
        let store = TestStores::connect(redis_url, &ns)
            .await
            .expect("redis of the local stack (scripts/stack.sh up)");
        let shutdown = CancellationToken::new();
        let (keys_file, admin_key) = admin_key_file(&ns);

        // A port chosen first, so the API knows the public URL providers sign webhooks for.
        let api_port = free_port();
        let public_url = format!("http://127.0.0.1:{api_port}");
        let common = common_args(&kafka_brokers, redis_url, &ns, campaign_shards);
        let ingest = herald::api::program::Program::from_args(&herald::api::program::Args {
            common,
            http_addr: format!("127.0.0.1:{api_port}").parse().unwrap(),
            request_ttl_secs: 3600,
            publish_timeout_ms: 5000,
            jwt_secret: Some(JWT_SECRET.into()),
            jwt_admin_secret: Some(JWT_ADMIN_SECRET.into()),
            user_rate_per_sec: 5,
            user_burst: 10,
            reservation_secs: 2,
            cors_origins: Vec::new(),
            email_sender_domains: vec!["shop.test".into()],
            jwt_policy: Default::default(),
            webhook_addresses: herald::outgoing::address::AddressArgs {
                webhook_allow_loopback: true,
                webhook_allow_networks: Vec::new(),
            },
            access: access_args(&keys_file, &public_url),
            rules: RulesArgs::default(),
            http: herald::http::HttpLimits::default(),
        })
        .await
        .expect("herald-ingest set-up");
        let api_url = format!("http://{}", ingest.local_addr().unwrap());
        let mut sim = sim;
        sim.receipt_url = Some(format!("{api_url}/v1/receipts"));
        let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let provider_url = format!("http://{}", sim_listener.local_addr().unwrap());
        let failures: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let simulated = simulator::serve(sim_listener, sim, shutdown.clone());
        spawn_checked(&failures, "the simulated provider", async move {
            simulated.await.map_err(anyhow::Error::from)
        });

        spawn_checked(&failures, "herald-ingest", ingest.run(shutdown.clone()));

        Fleet {
            ns,
            topics,
            kafka_brokers,
            store,
            redis_url: redis_url.to_string(),
            campaign_shards,
            provider_url,
            api_url,
            http: herald::client::keyed_client(&admin_key).expect("a client with the key"),
            anon: reqwest::Client::new(),
            keys_file,
            admin_key,
            shutdown,
            failures,
        }
    }

    /// Runs one of Herald's programs as a process on this fleet's broker, Redis, namespace
    /// and provider, with short leases; it is killed when the guard drops.
    pub fn spawn(&self, bin: &str, args: &[&str]) -> ChildGuard {
        self.spawn_with(bin, args, &[])
    }

    /// [`Fleet::spawn`] with some variables set otherwise (e.g. its own Redis user's URL).
    pub fn spawn_with(&self, bin: &str, args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
        let child = std::process::Command::new(bin)
            .args(args)
            .env("HERALD_KAFKA_BROKERS", self.brokers())
            .env("HERALD_REDIS_URL", &self.redis_url)
            .env("HERALD_NAMESPACE", &self.ns)
            .env("HERALD_PROVIDER_URL", &self.provider_url)
            .env("HERALD_PROVIDER_API_KEY", API_KEY)
            .envs(self.access_env())
            .env("HERALD_LEASE_MS", "3000")
            .env("HERALD_RETRY_POLL_MS", "100")
            .env("HERALD_RETRY_CLAIM_LEASE_MS", "2000")
            .env("HERALD_RETRY_WATCH_MS", "4000")
            .env("RUST_LOG", "error")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        ChildGuard(Some(child))
    }

    /// The variables that give a program this fleet's keys and receipt secret.
    pub fn access_env(&self) -> [(&'static str, String); 5] {
        [
            ("HERALD_UNSUBSCRIBE_SECRET", UNSUBSCRIBE_SECRET.to_string()),
            ("HERALD_API_KEYS_FILE", self.keys_file.display().to_string()),
            ("HERALD_API_KEY", self.admin_key.clone()),
            ("HERALD_RECEIPT_SECRETS", format!("sim={RECEIPT_SECRET}")),
            ("HERALD_SIM_RECEIPT_SECRET", RECEIPT_SECRET.to_string()),
        ]
    }

    /// POSTs receipts signed as the simulated provider signs them.
    pub async fn post_receipts(&self, body: Value) -> (u16, Value) {
        let body = body.to_string();
        let signature = receipt_signature(body.as_bytes());
        let r = self
            .http
            .post(format!("{}/v1/receipts", self.api_url))
            .header("content-type", "application/json")
            .header(herald::auth::signature::HEADER, signature)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A new key of this fleet with `scopes`, as `herald keys create` makes it.
    pub fn key(&self, name: &str, scopes: &[herald::auth::Scope]) -> String {
        herald::auth::keys::create(&self.keys_file, name, scopes)
            .expect("a key")
            .expose()
            .to_string()
    }

    /// The status a new key with `scopes` gets for `method path` (no body), once ingest has
    /// read the key file again (within a second or two; 401 until then).
    pub async fn status_with_new_key(
        &self,
        scopes: &[herald::auth::Scope],
        method: reqwest::Method,
        path: &str,
    ) -> u16 {
        let key = self.key(&format!("k{}", uuid::Uuid::new_v4().simple()), scopes);
        let mut status = 401;
        for _ in 0..50 {
            status = reqwest::Client::new()
                .request(method.clone(), format!("{}{path}", self.api_url))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if status != 401 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        status
    }

    /// Waits, by asking the group coordinator (DescribeGroups), until consumer group `group`
    /// is `Stable` with `members` members; panics with what it last saw after `limit`.
    pub async fn wait_group_members(&self, group: &str, members: usize, limit: Duration) {
        let brokers = self.brokers().to_string();
        let wanted = group.to_string();
        let last = tokio::task::spawn_blocking(move || {
            let client: rdkafka::consumer::BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .expect("an admin client");
            let deadline = std::time::Instant::now() + limit;
            let mut last = String::from("no answer");
            while std::time::Instant::now() < deadline {
                if let Ok(list) = client.fetch_group_list(Some(&wanted), Duration::from_secs(5)) {
                    if let Some(g) = list.groups().first() {
                        last = format!("state {}, {} members", g.state(), g.members().len());
                        if g.state() == "Stable" && g.members().len() == members {
                            return None;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Some(last)
        })
        .await
        .expect("the group probe");
        if let Some(last) = last {
            panic!(
                "group {group} never became Stable with {members} members within {limit:?}: {last}"
            );
        }
    }

    /// herald-metrics' (at `metrics`) count of `campaign`'s `delivered` outcomes once it
    /// reaches `want`, or the last one read when `limit` passes (`Null` if none).
    pub async fn metrics_delivered(
        &self,
        metrics: &str,
        campaign: &str,
        want: u64,
        limit: Duration,
    ) -> Value {
        let url = format!("{metrics}/v1/stats/campaigns/{campaign}");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let stats = self.get_json(&url).await.unwrap_or_default();
            let delivered = stats["counts"]["outcomes"]["delivered"].clone();
            if delivered == want || tokio::time::Instant::now() > deadline {
                return delivered;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn brokers(&self) -> &str {
        &self.kafka_brokers
    }

    pub fn provider_args(&self) -> ProviderArgs {
        ProviderArgs {
            provider_url: self.provider_url.clone(),
            provider_api_key: Some(API_KEY.into()),
            // Generous, as in production: a call slowed by a loaded CI machine must not be
            // retried (and delivered twice by the counting simulator) for being slow.
            provider_timeout_ms: 5000,
            provider_max_attempts: 6,
            provider_backoff_ms: 50,
            provider_backoff_max_ms: 1000,
            provider_concurrency: 64,
            provider_rate: 500.0,
            provider_max_rate: 100_000.0,
            provider_breaker_failures: 10,
            provider_breaker_cooldown_ms: 500,
        }
    }

    /// Fails the test with what a background task of this fleet failed with, if any.
    pub fn assert_no_failures(&self) {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            failures.is_empty(),
            "a background task failed: {failures:?}"
        );
    }

    /// The flags every program of this fleet takes.
    pub fn common(&self) -> CommonArgs {
        common_args(
            self.brokers(),
            &self.redis_url,
            &self.ns,
            self.campaign_shards,
        )
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
