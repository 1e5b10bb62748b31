//! herald: the operators' command line.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald::dev::loadgen::LoadGen;
use herald::model::Channel;

/// Operate a Herald fleet.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Base URL of herald-ingest.
    #[arg(
        long,
        global = true,
        env = "HERALD_API_URL",
        default_value = "http://127.0.0.1:5000"
    )]
    api: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Seed 001 requests.
    #[command(subcommand)]
    Requests(RequestsCommand),
    /// Customers.
    #[command(subcommand)]
    Customers(CustomersCommand),
    /// Campaigns of personalised offers (`herald campaign ...` works too).
    #[command(subcommand, alias = "campaign")]
    Campaigns(CampaignsCommand),
    /// Publishes synthetic lifecycle events (sent, then delivered, per recipient) to a topic
    /// as fast as the broker takes them, for benchmarking `herald-metrics`.
    ProduceEvents {
        /// Kafka bootstrap servers.
        #[arg(long, env = "HERALD_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        kafka_brokers: String,
        /// Topic (the fleet's is NAMESPACE.events).
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Campaigns to spread the recipients over.
        #[arg(long, default_value_t = 4)]
        campaigns: u64,
    },
    /// Mint a bearer token for the flash-promo API with the configured secret (for local
    /// use and tests; production tokens come from your identity provider).
    Token {
        #[arg(long, value_enum)]
        role: herald::auth::Role,
        /// The caller's id: a customer id for a user.
        #[arg(long)]
        sub: String,
        /// HS256 secret, the same herald-ingest has.
        #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
        jwt_secret: herald::config::Secret,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Sales and user events (seeds 003 and 004).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Flash promos (seed 002).
    #[command(subcommand)]
    Promos(PromosCommand),
    /// Kafka topics of the fleet.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// The dead-letter topic: what could not be handled, why, and replaying it.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Consumer lag of every group of the fleet, per partition.
    Lag {
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Raw produce-then-consume throughput of a Kafka broker (for benchmarks).
    BrokerBench {
        /// Kafka bootstrap servers.
        #[arg(long, env = "HERALD_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        kafka_brokers: String,
        /// Topic to fill (it should be otherwise unused).
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Message size in bytes.
        #[arg(long, default_value_t = 250)]
        size: usize,
    },
}

/// Where the fleet's Kafka is and which namespace its topics use.
#[derive(clap::Args, Debug)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "HERALD_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// Prefix of the fleet's topic names.
    #[arg(long, env = "HERALD_NAMESPACE", default_value = "herald")]
    namespace: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DeadLetterTopic {
    Fleet,
    UserEvents,
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// List dead letters (oldest first) with their reason and where they came from.
    List {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Which dead-letter topic: the fleet's (`herald.dlq`: notifications, campaigns,
        /// sales) or the user events' (`herald.user-events.dlq`).
        #[arg(long, value_enum, default_value_t = DeadLetterTopic::Fleet)]
        topic: DeadLetterTopic,
        /// Only those whose reason contains this text.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Replay dead letters once their cause is fixed: a message goes back to its source
    /// topic; a customer fan-out could not reach is fanned out again. Anything already
    /// delivered is not sent twice (the campaign slot or request claim decides).
    Replay {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Which dead-letter topic: the fleet's (`herald.dlq`: notifications, campaigns,
        /// sales) or the user events' (`herald.user-events.dlq`).
        #[arg(long, value_enum, default_value_t = DeadLetterTopic::Fleet)]
        topic: DeadLetterTopic,
        /// Redis URL (to reopen unreachable customers' campaign slots).
        #[arg(
            long,
            env = "HERALD_REDIS_URL",
            default_value = "redis://127.0.0.1:6399"
        )]
        redis_url: String,
        /// Only those whose reason contains this text.
        #[arg(long)]
        reason: Option<String>,
        /// Show what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
enum PromosCommand {
    /// Reserve latency: USERS synthetic users (`PREFIX0..`) each reserve a unit of PROMO,
    /// CONCURRENCY at a time; prints p50/p99/max and the statuses (for benchmarks).
    BenchReserve {
        #[arg(long)]
        promo: String,
        #[arg(long, default_value_t = 20_000)]
        users: u64,
        #[arg(long, default_value_t = 2000)]
        concurrency: usize,
        #[arg(long, default_value = "rb")]
        prefix: String,
        /// HS256 secret, the same herald-ingest has.
        #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
        jwt_secret: herald::config::Secret,
    },
}

#[derive(Subcommand, Debug)]
enum EventsCommand {
    /// Publish realistic user events and sales straight to the topics at RATE per second
    /// for DURATION seconds: shoppers click, view, add to cart and buy (each purchase is
    /// also a sale), with a share of invalid events and of copies, as the consumers must
    /// expect. Prints what was published (`--json` for scripts).
    Generate {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Events per second (0: as fast as the broker takes them).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Stop after this many events even if time is left.
        #[arg(long)]
        count: Option<u64>,
        /// Shoppers `PREFIX0..PREFIX{USERS-1}` (the same ids as `herald customers seed`).
        #[arg(long, default_value_t = 10_000)]
        users: u64,
        #[arg(long, default_value = "cust")]
        prefix: String,
        /// Share of invalid events (0-1).
        #[arg(long, default_value_t = 0.01)]
        invalid_ratio: f64,
        /// Share of events published twice (0-1).
        #[arg(long, default_value_t = 0.01)]
        duplicate_ratio: f64,
        /// Random seed (the same seed draws the same shoppers and mistakes).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TopicsCommand {
    /// Create every topic of the fleet through the Kafka admin API (existing ones are kept).
    /// Partitions bound how many instances of one consumer group can work at once.
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long, env = "HERALD_TOPIC_PARTITIONS", default_value_t = 12)]
        partitions: i32,
        #[arg(long, env = "HERALD_TOPIC_REPLICATION", default_value_t = 1)]
        replication: i32,
    },
}

#[derive(Subcommand, Debug)]
enum CustomersCommand {
    /// Store COUNT synthetic customers `PREFIX0..`, reachable on CHANNELS.
    Seed {
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "cust")]
        prefix: String,
        #[arg(long, value_delimiter = ',', default_value = "email,push")]
        channels: Vec<Channel>,
        /// Batches of 1000 in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Place the customers around this point (`LAT,LON`), for flash-promo segments.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
        near: Option<Vec<f64>>,
        /// Radius of `--near`, in metres.
        #[arg(long, default_value_t = 1900.0)]
        radius_m: f64,
    },
}

#[derive(Subcommand, Debug)]
enum CampaignsCommand {
    /// Send a campaign to the synthetic customers `PREFIX0..PREFIX{COUNT-1}` and watch it.
    Send {
        /// Campaign id (posting the same id again resumes, never duplicates).
        #[arg(long)]
        id: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "cust")]
        prefix: String,
        /// Channel order.
        #[arg(long, value_delimiter = ',', default_value = "email,push")]
        channels: Vec<Channel>,
        /// Receipt time-out per channel before falling back, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// Stop watching after this many seconds.
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
        /// Print the final report as JSON instead of a table (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Show a campaign's progress and counts.
    Show { id: String },
    /// Follow a campaign with a progress bar (rate, ETA) until it ends, then a summary table.
    Watch {
        id: String,
        /// Stop watching after this many seconds.
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
    },
}

#[derive(Subcommand, Debug)]
enum RequestsCommand {
    /// Create and process COUNT requests, show progress, and wait until every one ends.
    Send {
        /// How many requests.
        #[arg(long, default_value_t = 300)]
        count: u64,
        /// Channels to spread them over (comma separated).
        #[arg(long, value_delimiter = ',', default_value = "email,sms,push")]
        channels: Vec<Channel>,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Give up waiting for outcomes after this many seconds.
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
    },
    /// Show one request's status.
    Show { id: String },
}

/// The dead letters of the fleet, optionally only those whose reason contains `reason`.
async fn read_dead_letters(
    kafka: &KafkaArgs,
    which: DeadLetterTopic,
    reason: Option<&str>,
) -> anyhow::Result<Vec<herald::dlq::DeadLetter>> {
    let topics = herald::kafka::Topics::new(&kafka.namespace);
    let topic = match which {
        DeadLetterTopic::Fleet => topics.dlq(),
        DeadLetterTopic::UserEvents => topics.user_events_dlq(),
    };
    let brokers = kafka.kafka_brokers.clone();
    let letters = tokio::task::spawn_blocking(move || herald::dlq::read_all(&brokers, &topic))
        .await?
        .context("reading the dead-letter topic")?;
    Ok(letters
        .into_iter()
        .filter(|l| reason.map_or(true, |r| l.reason.contains(r)))
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let load = LoadGen::new(&cli.api);
    match cli.command {
        Command::Requests(RequestsCommand::Send {
            count,
            channels,
            concurrency,
            wait_secs,
        }) => {
            let report = load
                .run(
                    count,
                    &channels,
                    concurrency,
                    Duration::from_secs(wait_secs),
                )
                .await
                .context("sending requests")?;
            println!(
                "final status counts ({:.1}s in all):",
                report.total_time.as_secs_f64()
            );
            for (status, n) in &report.statuses {
                println!("  {status:<11} {n}");
            }
            if report.http_5xx > 0 {
                println!("  HTTP 5xx    {}", report.http_5xx);
            }
        }
        Command::Requests(RequestsCommand::Show { id }) => {
            println!("{id}: {}", load.status(&id).await?);
        }
        Command::Customers(CustomersCommand::Seed {
            count,
            prefix,
            channels,
            concurrency,
            near,
            radius_m,
        }) => {
            let area = near.filter(|n| n.len() == 2).map(|n| {
                (
                    herald::model::Location {
                        lat: n[0],
                        lon: n[1],
                    },
                    radius_m,
                )
            });
            load.seed_customers(&prefix, count, &channels, area, concurrency)
                .await
                .context("storing customers")?;
        }
        Command::Campaigns(CampaignsCommand::Send {
            id,
            count,
            prefix,
            channels,
            timeout_ms,
            wait_secs,
            json,
        }) => {
            let created = load
                .send_campaign(&id, &prefix, count, &channels, timeout_ms)
                .await
                .context("creating the campaign")?;
            eprintln!("campaign accepted: {created}");
            let report = load
                .watch_campaign(&id, Duration::from_secs(wait_secs))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", herald::dev::loadgen::campaign_summary(&report));
            }
        }
        Command::Campaigns(CampaignsCommand::Watch { id, wait_secs }) => {
            let report = load
                .watch_campaign(&id, Duration::from_secs(wait_secs))
                .await?;
            print!("{}", herald::dev::loadgen::campaign_summary(&report));
        }
        Command::Campaigns(CampaignsCommand::Show { id }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&load.campaign(&id).await?)?
            );
        }
        Command::Topics(TopicsCommand::Create {
            kafka,
            partitions,
            replication,
        }) => {
            let topics = herald::kafka::Topics::new(&kafka.namespace);
            let (created, existing) = herald::kafka::create_topics(
                &kafka.kafka_brokers,
                &topics,
                partitions,
                replication,
            )
            .await
            .with_context(|| format!("creating topics on {}", kafka.kafka_brokers))?;
            for t in &created {
                println!("created  {t} ({partitions} partitions)");
            }
            for t in &existing {
                println!("exists   {t}");
            }
        }
        Command::Dlq(DlqCommand::List {
            kafka,
            topic,
            reason,
        }) => {
            for l in read_dead_letters(&kafka, topic, reason.as_deref()).await? {
                let from = l
                    .source_topic
                    .clone()
                    .or(l.origin.clone())
                    .unwrap_or_else(|| "?".into());
                println!(
                    "{}:{:<8} {:<24} key={:<30} reason: {}",
                    l.partition, l.offset, from, l.key, l.reason
                );
            }
        }
        Command::Dlq(DlqCommand::Replay {
            kafka,
            topic,
            redis_url,
            reason,
            dry_run,
        }) => {
            let letters = read_dead_letters(&kafka, topic, reason.as_deref()).await?;
            let topics = herald::kafka::Topics::new(&kafka.namespace);
            let store = herald::store::Store::connect(&redis_url, &kafka.namespace)
                .await
                .with_context(|| format!("connecting to Redis at {redis_url}"))?;
            let producer = herald::kafka::producer(&kafka.kafka_brokers)?;
            let (mut done, mut skipped) = (0, 0);
            for l in &letters {
                let action = herald::dlq::plan(l);
                let what = match &action {
                    herald::dlq::Replay::Republish { topic } => format!("republish to {topic}"),
                    herald::dlq::Replay::FanOutAgain { campaign, customer } => {
                        format!("fan out {customer} of campaign {campaign} again")
                    }
                    herald::dlq::Replay::Skip(why) => format!("skip: {why}"),
                };
                if dry_run {
                    println!("{}:{} would {what}", l.partition, l.offset);
                    continue;
                }
                if herald::dlq::replay(l, &action, &store, &producer, &topics).await? {
                    done += 1;
                    println!("{}:{} {what}", l.partition, l.offset);
                } else {
                    skipped += 1;
                    println!("{}:{} nothing to do ({what})", l.partition, l.offset);
                }
            }
            if !dry_run {
                println!(
                    "replayed {done}, left {skipped} of {} dead letters",
                    letters.len()
                );
            }
        }
        Command::Lag { kafka } => {
            let topics = herald::kafka::Topics::new(&kafka.namespace);
            let brokers = kafka.kafka_brokers.clone();
            let rows = tokio::task::spawn_blocking(move || {
                let probe = herald::kafka::LagProbe::new(&brokers);
                herald::kafka::fleet_groups(&topics)
                    .into_iter()
                    .map(|(group, topic)| {
                        let lags = probe.partition_lags(&group, &topic);
                        (group, topic, lags)
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
            println!(
                "{:<28} {:<28} {:>9} {:>12} {:>12} {:>10}",
                "group", "topic", "partition", "committed", "newest", "lag"
            );
            for (group, topic, lags) in rows {
                let lags = lags.with_context(|| format!("reading {group} on {topic}"))?;
                for l in lags {
                    let committed = l.committed.map(|c| c.to_string()).unwrap_or("-".into());
                    println!(
                        "{group:<28} {topic:<28} {:>9} {committed:>12} {:>12} {:>10}",
                        l.partition, l.high, l.lag
                    );
                }
            }
        }
        Command::Promos(PromosCommand::BenchReserve {
            promo,
            users,
            concurrency,
            prefix,
            jwt_secret,
        }) => {
            let jwt = herald::auth::Jwt::new(jwt_secret.expose())?;
            let started = std::time::Instant::now();
            let (lat, statuses) = herald::dev::loadgen::bench_reserve(
                &cli.api,
                &promo,
                &jwt,
                &prefix,
                users,
                concurrency,
            )
            .await?;
            let secs = started.elapsed().as_secs_f64();
            let q = |p: f64| {
                lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
                    .copied()
                    .unwrap_or(0.0)
            };
            println!("reserve_requests {}", lat.len());
            println!("reserve_per_sec {:.0}", lat.len() as f64 / secs);
            println!("reserve_p50_ms {:.2}", q(0.5));
            println!("reserve_p99_ms {:.2}", q(0.99));
            println!("reserve_max_ms {:.2}", lat.last().copied().unwrap_or(0.0));
            for (status, n) in statuses {
                println!("reserve_status_{status} {n}");
            }
        }
        Command::Token {
            role,
            sub,
            jwt_secret,
            ttl_secs,
        } => {
            let jwt = herald::auth::Jwt::new(jwt_secret.expose())?;
            println!("{}", jwt.mint(&sub, role, Duration::from_secs(ttl_secs))?);
        }
        Command::Events(EventsCommand::Generate {
            kafka,
            rate,
            duration,
            count,
            users,
            prefix,
            invalid_ratio,
            duplicate_ratio,
            seed,
            json,
        }) => {
            for (name, ratio) in [("invalid", invalid_ratio), ("duplicate", duplicate_ratio)] {
                if !(0.0..=1.0).contains(&ratio) {
                    anyhow::bail!("--{name}-ratio must be between 0 and 1, not {ratio}");
                }
            }
            let config = herald::dev::generate::GenerateConfig {
                rate,
                duration: Duration::from_secs(duration),
                max_events: count,
                users: users.max(1),
                user_prefix: prefix,
                invalid_ratio,
                duplicate_ratio,
                seed,
            };
            let report = generate_events(kafka, config).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "published {} records in {:.1}s ({:.0}/s): {} user events, {} sales, {} invalid user events, {} invalid sales, {} copies",
                    report.published, report.elapsed_s, report.published_per_sec, report.user_events,
                    report.sales, report.invalid_user_events, report.invalid_sales,
                    report.duplicate_user_events + report.duplicate_sales
                );
            }
        }
        Command::ProduceEvents {
            kafka_brokers,
            topic,
            count,
            campaigns,
        } => {
            let rate = tokio::task::spawn_blocking(move || {
                herald::dev::loadgen::produce_lifecycle_events(
                    &kafka_brokers,
                    &topic,
                    count,
                    campaigns,
                )
            })
            .await??;
            println!("events_produced_per_sec {rate:.0}");
        }
        Command::BrokerBench {
            kafka_brokers,
            topic,
            count,
            size,
        } => {
            let (produced, consumed) = tokio::task::spawn_blocking(move || {
                herald::dev::loadgen::broker_throughput(&kafka_brokers, &topic, count, size)
            })
            .await??;
            println!("broker_produce_per_sec {produced:.0}");
            println!("broker_consume_per_sec {consumed:.0}");
        }
    }
    Ok(())
}

/// Runs the generator on a blocking thread with a progress bar on a terminal (a line every
/// few seconds otherwise).
async fn generate_events(
    kafka: KafkaArgs,
    config: herald::dev::generate::GenerateConfig,
) -> anyhow::Result<herald::dev::generate::GenerateReport> {
    use std::io::IsTerminal as _;
    let topics = herald::kafka::Topics::new(&kafka.namespace);
    let planned = match (config.rate, config.max_events) {
        (0, Some(n)) => n,
        (0, None) => 0,
        (rate, max) => (rate * config.duration.as_secs()).min(max.unwrap_or(u64::MAX)),
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(planned);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {human_pos}/{human_len} records {per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let shown = bar.clone();
    let mut last_line = std::time::Instant::now();
    let report = tokio::task::spawn_blocking(move || {
        herald::dev::generate::generate(&kafka.kafka_brokers, &topics, config, |r| match &shown {
            Some(bar) => {
                bar.set_position(r.published);
                bar.set_message(format!(
                    "{} sales, {} invalid",
                    r.sales,
                    r.invalid_user_events + r.invalid_sales
                ));
            }
            None if last_line.elapsed() >= Duration::from_secs(2) => {
                last_line = std::time::Instant::now();
                eprintln!(
                    "  [{:>5.1}s] published {} ({} user events, {} sales, {} invalid, {} copies)",
                    r.elapsed_s,
                    r.published,
                    r.user_events,
                    r.sales,
                    r.invalid_user_events + r.invalid_sales,
                    r.duplicate_user_events + r.duplicate_sales
                );
            }
            None => {}
        })
    })
    .await??;
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(report)
}
