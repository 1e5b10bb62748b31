//! The local development broker: librdkafka's in-process mock cluster, which speaks the real
//! Kafka protocol (consumer groups and offset commits included) but keeps everything in memory.
//!
//! Two limits to remember: it keeps only about 5 MiB per partition (older messages are
//! dropped, so producers of bulk work must not run far ahead of consumers), and it has no
//! CreateTopics API, so topics are created here at start. Deployments use Apache Kafka.

use std::ffi::{CStr, CString};

use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot create the mock cluster's client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("librdkafka refused to create the mock cluster")]
    Create,
    #[error("cannot create topic {topic}: {code}")]
    Topic { topic: String, code: String },
    #[error("invalid topic name {0:?}")]
    TopicName(String),
}

/// A running mock cluster; dropped, it stops.
pub struct MockBroker {
    cluster: *mut rdsys::rd_kafka_mock_cluster_t,
    // The cluster lives inside this client's handle; it must outlive `cluster`.
    _client: BaseProducer,
    bootstrap: String,
}

// SAFETY: librdkafka's mock cluster runs on its own thread and its API is thread-safe; the
// pointer is only destroyed in Drop.
unsafe impl Send for MockBroker {}
unsafe impl Sync for MockBroker {}

impl MockBroker {
    /// Starts a cluster of `brokers` brokers listening on 127.0.0.1 (ports chosen by the OS).
    pub fn start(brokers: i32) -> Result<Self, BrokerError> {
        let client: BaseProducer = ClientConfig::new().set("log_level", "3").create()?;
        // SAFETY: the handle is valid for as long as `client`, which MockBroker owns.
        let cluster = unsafe {
            rdsys::rd_kafka_mock_cluster_new(client.client().native_ptr(), brokers.max(1))
        };
        if cluster.is_null() {
            return Err(BrokerError::Create);
        }
        // SAFETY: cluster is non-null; the returned string is owned by the cluster.
        let bootstrap = unsafe { CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(cluster)) }
            .to_string_lossy()
            .into_owned();
        // The default 3 s wait before a new group's first rebalance makes every consumer
        // start slowly; a development broker has no reason to wait.
        // SAFETY: cluster is valid.
        unsafe { rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 100) };
        // Keep the client used only to host the cluster quiet.
        client.flush(std::time::Duration::from_millis(0)).ok();
        Ok(MockBroker {
            cluster,
            _client: client,
            bootstrap,
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), BrokerError> {
        let name = CString::new(topic).map_err(|_| BrokerError::TopicName(topic.to_string()))?;
        // SAFETY: cluster is valid; name outlives the call.
        let err = unsafe {
            rdsys::rd_kafka_mock_topic_create(self.cluster, name.as_ptr(), partitions, 1)
        };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(BrokerError::Topic {
                topic: topic.to_string(),
                code: format!("{err:?}"),
            });
        }
        Ok(())
    }
}

impl Drop for MockBroker {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_mock_cluster_new and destroyed exactly once, before the client.
        unsafe { rdsys::rd_kafka_mock_cluster_destroy(self.cluster) };
    }
}

/// Runs librdkafka's mock Kafka cluster on 127.0.0.1 with Herald's topics created.
/// In memory only, about 5 MiB kept per partition: for development and tests, not production
/// (compose/ runs Apache Kafka).
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "herald-broker", version)]
pub struct Args {
    /// Partitions per topic; the most dispatchers of one channel that can share work.
    #[arg(long, env = "HERALD_BROKER_PARTITIONS", default_value_t = 8)]
    pub partitions: i32,

    /// Topic namespace (topics are `<namespace>.notify.email`, ...).
    #[arg(long, env = "HERALD_NAMESPACE", default_value = "herald")]
    pub namespace: String,

    /// File the bootstrap address is written to.
    #[arg(
        long,
        env = "HERALD_BROKER_ADDRESS_FILE",
        default_value = ".herald/broker.addr"
    )]
    pub address_file: std::path::PathBuf,
}

/// The `herald-broker` program: the mock cluster with the fleet's topics.
pub struct Program {
    broker: MockBroker,
    args: Args,
}

impl crate::program::Program for Program {
    type Args = Args;

    async fn from_args(args: &Args) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let broker = MockBroker::start(1).context("starting the mock cluster")?;
        for topic in crate::kafka::Topics::new(&args.namespace).all() {
            broker.create_topic(&topic, args.partitions)?;
        }
        Ok(Program {
            broker,
            args: args.clone(),
        })
    }

    /// Writes the address file and serves until `shutdown`.
    async fn run(self, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
        serve(self.broker, self.args, shutdown).await
    }
}

async fn serve(
    broker: MockBroker,
    args: Args,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let file = &args.address_file;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(file, broker.bootstrap_servers())
        .with_context(|| format!("writing {}", file.display()))?;
    println!("HERALD_KAFKA_BROKERS={}", broker.bootstrap_servers());
    tracing::info!(
        bootstrap = broker.bootstrap_servers(),
        partitions = args.partitions,
        "herald-broker ready"
    );
    shutdown.cancelled().await;
    drop(broker);
    Ok(())
}
