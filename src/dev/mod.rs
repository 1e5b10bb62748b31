//! What the demo, the tests and the benchmarks use, never the production path: a local
//! Kafka-protocol broker, a misbehaving provider, an API load generator and a generator of
//! business events.

pub mod broker;
pub mod cli;
pub mod generate;
pub mod kafka_bench;
pub mod loadgen;
pub mod simulator;
