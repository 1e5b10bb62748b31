//! Herald sends promotional and transactional notifications (e-mail, SMS, WhatsApp, push)
//! for an e-commerce company. Kafka carries the work and Redis holds the state; each program
//! in `src/bin` only calls [`program::main`] with a program's set-up from this library.
//!
//! In the order a notification lives:
//!
//! - [`api`]: accepted over HTTP by `herald-ingest`, validated and recorded, then published.
//! - [`campaigns`]: a campaign is launched, fanned out to one delivery per customer on the
//!   channel its [`campaigns::rules`] choose, confirmed by [`campaigns::receipts`] or moved
//!   to the next channel by [`campaigns::retry`]; an operator schedules, pauses, resumes or
//!   cancels it through [`campaigns::control`].
//! - [`kafka`]: topics, producers, the one consumer loop that commits only finished work,
//!   dead letters, lag.
//! - [`publish`]: a seed 001 request's notification published to Kafka, and republished by
//!   herald-retry when its first publish was never acknowledged.
//! - [`dispatch`]: `herald-dispatch --channel C` claims each notification, sends it, records
//!   it: [`dispatch::request`] for seed 001 requests, [`dispatch::delivery`] for campaigns.
//! - [`store`]: Redis, one file per kind of state; the once-slot ([`store`]`::slots`) is the
//!   one gate before a customer is contacted.
//! - [`provider`]: the resilient client of the external provider (limits, retries, breaker).
//! - [`metrics`]: `herald-metrics` counts lifecycle events once into Redis and shows them
//!   (dashboard, `/v1/stats`, Prometheus through [`prom`]).
//! - [`promos`]: flash promos (seed 002): reservations, segments, activation as a campaign.
//! - [`events`]: `herald-events`: sales become confirmation e-mails and loyalty points, user
//!   events become per-user aggregates, lifecycle events each customer's message history and
//!   the shop's outgoing webhooks, each once.
//! - [`outgoing`]: outgoing webhooks: endpoints, Standard Webhooks signatures, the sender
//!   that retries each endpoint on its own, and which addresses may be called.
//! - [`schedulers`]: `herald-retry`, the schedulers that work from Redis (fallbacks, promo
//!   windows).
//! - [`model`]: the shared types: channels, ids, campaigns, lifecycle events, business events.
//!
//! Around them: [`program`] (what every program shares: connections, health, the exit
//! sequence), [`config`] (flags and `HERALD_*` variables), [`telemetry`] (logs, OTLP traces
//! carried in Kafka headers), [`health`] (probes and `/metrics` for programs without an API),
//! [`http`] (the error body, limits and time-outs every HTTP server shares), [`auth`] (service
//! keys and scopes, shoppers' JWTs, signed receipts, the secret checks), [`secret`],
//! [`shutdown`] (signals), [`coalesce`] (calls made apart sent as one batch), [`cli`] (the
//! `herald` command) and [`dev`] (the local broker, the simulated provider, load and event
//! generators: demo, tests and benchmarks, not the production path).

pub mod api;
pub mod auth;
pub mod campaigns;
pub mod cli;
pub mod client;
pub mod coalesce;
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
pub mod dispatch;
pub mod events;
pub mod health;
pub mod http;
pub mod kafka;
pub mod kafka_security;
pub mod latency;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod outgoing;
pub mod program;
pub mod prom;
pub mod promos;
pub mod provider;
pub mod publish;
pub mod redact;
pub mod replace_file;
pub mod schedulers;
pub mod schema;
pub mod secret;
pub mod shutdown;
pub mod stats;
pub mod store;
pub mod telemetry;
