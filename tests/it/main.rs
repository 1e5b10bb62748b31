//! Integration tests against the real Redis of the local stack and a real Kafka-protocol
//! broker (librdkafka's mock cluster, as `herald-broker` runs it). `scripts/test.sh` starts
//! Redis first.

mod harness;

mod api_access;
mod api_contract;
mod api_docs;
mod boundary;
mod broker_binary;
mod campaign_crash;
mod chaos;
mod cluster;
mod dead_letters;
mod decoders;
mod deploy;
mod dispatch_once;
mod email;
mod events;
mod fakes;
mod generated_client;
mod observability;
mod offers;
mod once_slot;
mod problems;
mod promos;
mod providers;
mod redis_restart;
mod resilience;
mod schemathesis;
mod slots;
mod transport;
mod windows;
