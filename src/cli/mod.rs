//! The operators' command line, `herald`: one module per command group, each with its
//! arguments and an `execute`. The binary only parses and calls [`run`]. Load generators,
//! benchmarks and local tokens are `herald-dev`'s ([`crate::dev::cli`]), not here.

mod campaigns;
mod customers;
pub mod dlq;
mod groups;
mod kafka;
mod keys;
mod providers;
mod redis_acl;
mod requests;
mod webhooks;

use clap::{Parser, Subcommand};

use crate::client::ApiClient;

/// Operate a Herald fleet.
#[derive(Parser, Debug)]
#[command(name = "herald", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    fleet: FleetArgs,

    #[command(subcommand)]
    command: Command,
}

/// What every command line of Herald's needs to reach the fleet: the API with its key, and
/// Kafka's security settings.
#[derive(clap::Args, Debug)]
pub struct FleetArgs {
    /// Base URL of herald-ingest.
    #[arg(
        long,
        global = true,
        env = "HERALD_API_URL",
        default_value = "http://127.0.0.1:5000"
    )]
    pub api: String,

    /// The service API key the commands that call herald-ingest present.
    #[arg(long, global = true, env = "HERALD_API_KEY", hide_env_values = true)]
    api_key: Option<crate::config::Secret>,

    #[command(flatten)]
    kafka_security: crate::kafka_security::KafkaSecurity,
}

impl FleetArgs {
    /// Installs Kafka's security settings and returns the API's client.
    pub fn connect(&self) -> anyhow::Result<ApiClient> {
        crate::kafka_security::install(&self.kafka_security)?;
        Ok(ApiClient::new(&self.api).with_key(self.api_key.as_ref().map(|k| k.expose()))?)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Seed 001 requests.
    #[command(subcommand)]
    Requests(requests::RequestsCommand),
    /// Customers.
    #[command(subcommand)]
    Customers(customers::CustomersCommand),
    /// Campaigns of personalised offers (`herald campaign ...` works too).
    #[command(subcommand, alias = "campaign")]
    Campaigns(campaigns::CampaignsCommand),
    /// Service API keys: create, revoke, list (the file herald-ingest reads).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The providers each channel sends through: `herald providers check` validates the
    /// providers file and its secrets without sending anything.
    #[command(subcommand)]
    Providers(providers::ProvidersCommand),
    /// Kafka topics of the fleet.
    #[command(subcommand)]
    Topics(kafka::TopicsCommand),
    /// The dead-letter topic: what could not be handled, why, and replaying it.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Consumer lag of every group of the fleet, per partition.
    Lag(kafka::Lag),
    /// Consumer groups: list, describe, and reset one to replay or skip work.
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// Prints a program's OpenAPI document (the one it serves at /docs/openapi.json), for
    /// client generators; no server needed.
    Openapi(Openapi),
    /// Redis's ACL file: one user per program, each limited to Herald's commands and keys.
    RedisAcl(redis_acl::RedisAcl),
    /// The shop's outgoing webhook endpoints: add, list, remove, replay (admin key).
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
}

#[derive(clap::Args, Debug)]
pub struct Openapi {
    /// Whose document: herald-ingest's API or herald-metrics' dashboard.
    #[arg(long, value_parser = ["ingest", "metrics"], default_value = "ingest")]
    program: String,
}

/// Where the fleet's Kafka is and which namespace its topics use.
#[derive(clap::Args, Debug)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "HERALD_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Prefix of the fleet's topic names.
    #[arg(long, env = "HERALD_NAMESPACE", default_value = "herald")]
    pub namespace: String,
}

impl KafkaArgs {
    pub fn topics(&self) -> crate::kafka::Topics {
        crate::kafka::Topics::new(&self.namespace)
    }
}

/// Runs one command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = cli.fleet.connect()?;
    match cli.command {
        Command::Requests(c) => requests::execute(c, &api).await,
        Command::Customers(c) => customers::execute(c, &api).await,
        Command::Campaigns(c) => campaigns::execute(c, &api).await,
        Command::Webhooks(c) => webhooks::execute(c, &api).await,
        Command::Keys(c) => keys::execute(c),
        Command::Providers(c) => providers::execute(c).await,
        Command::Topics(c) => kafka::execute(c).await,
        Command::Dlq(c) => dlq::execute(c).await,
        Command::Lag(c) => c.execute().await,
        Command::Groups(c) => groups::execute(c).await,
        Command::RedisAcl(c) => c.execute(),
        Command::Openapi(c) => {
            let doc = match c.program.as_str() {
                "metrics" => crate::metrics::openapi_json(),
                _ => crate::api::openapi_json(),
            };
            println!("{doc}");
            Ok(())
        }
    }
}
