//! `herald-dev`: the development tools' command line (load on the API, synthetic customers
//! and campaigns, business events, benchmarks, local tokens). Built only with the `dev`
//! feature; the operators' `herald` has none of it.

mod bench;
mod events;
mod load;
mod promos;

use clap::{Parser, Subcommand};

/// Load, synthetic data and benchmarks for a local Herald fleet (never production).
#[derive(Parser, Debug)]
#[command(name = "herald-dev", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    fleet: crate::cli::FleetArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    SendRequests(load::SendRequests),
    SeedCustomers(load::SeedCustomers),
    SendCampaign(load::SendCampaign),
    GenerateEvents(events::GenerateEvents),
    BenchReserve(promos::BenchReserve),
    Token(promos::Token),
    /// Publishes synthetic lifecycle events (sent, then delivered, per recipient) to a topic
    /// as fast as the broker takes them, for benchmarking `herald-metrics`.
    ProduceEvents(bench::ProduceEvents),
    /// Raw produce-then-consume throughput of a Kafka broker (for benchmarks).
    BrokerBench(bench::BrokerBench),
}

/// Runs one command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = cli.fleet.connect()?;
    match cli.command {
        Command::SendRequests(c) => c.execute(&api).await,
        Command::SeedCustomers(c) => c.execute(&api).await,
        Command::SendCampaign(c) => c.execute(&api).await,
        Command::GenerateEvents(c) => events::execute(c).await,
        Command::BenchReserve(c) => promos::execute(c, &cli.fleet.api).await,
        Command::Token(c) => c.execute(),
        Command::ProduceEvents(c) => c.execute().await,
        Command::BrokerBench(c) => c.execute().await,
    }
}
