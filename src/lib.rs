//! Herald sends promotional and transactional notifications (e-mail, SMS, WhatsApp, push)
//! for an e-commerce company. Kafka carries the work and Redis holds the state; each program
//! in `src/bin` is a thin shell around one of these modules.
//!
//! In the order a notification lives:
//!
//! - [`api`]: accepted over HTTP by `herald-ingest`, validated and recorded, then published.
//! - [`kafka`]: topics, producers, consumers that commit only finished work, dead letters.
//! - [`dispatch`]: `herald-dispatch --channel C` claims each notification, sends it, records it.
//! - [`store`]: Redis; the claim with a lease is the one gate before a customer is contacted.
//! - [`provider`]: the resilient client of the external provider (limits, retries, breaker).
//! - [`model`]: the shared types: channels, ids, statuses, lifecycle events.
//!
//! - [`fanout`], [`rules`], [`retry`]: campaigns: the first channel per customer, and the
//!   fallback when a channel stays silent.
//! - [`metrics`]: `herald-metrics` counts lifecycle events once into Redis and shows them
//!   (dashboard, `/v1/stats`, Prometheus through [`prom`]).
//! - [`events`]: `herald-events`: sales become confirmation e-mails and loyalty points, user
//!   events become per-user aggregates, each once.
//!
//! Around them: [`config`] (flags and `HERALD_*` variables), [`telemetry`] (logs, OTLP traces
//! carried in Kafka headers), [`health`] (probes and `/metrics` for programs without an API),
//! [`shutdown`] (signals), [`broker`] (the local development Kafka broker),
//! [`simulator`] (a misbehaving provider for demos, tests and benchmarks) and [`loadgen`]
//! (drives the API for the CLI, the demo and benchmarks).

pub mod api;
pub mod auth;
pub mod campaigns;
pub mod cli;
pub mod config;
pub mod dev;
pub mod dispatch;
pub mod events;
pub mod health;
pub mod http;
pub mod kafka;
pub mod latency;
pub mod metrics;
pub mod model;
pub mod program;
pub mod prom;
pub mod promos;
pub mod provider;
pub mod schedulers;
pub mod shutdown;
pub mod store;
pub mod telemetry;
