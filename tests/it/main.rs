//! Integration tests against the real Redis and the real Apache Kafka of the local stack
//! (`scripts/stack.sh up`); `kafka_cluster` against the three-broker cluster of
//! `scripts/kafka-cluster.sh`. `scripts/test.sh` starts them first.

// Helpers shared by the tests may unwrap, as the tests do.
#![allow(clippy::unwrap_used)]

mod browser;
mod harness;

mod api_access;
mod api_contract;
mod api_docs;
mod boundary;
mod broker_binary;
mod campaign_control;
mod campaign_crash;
mod chaos;
mod cluster;
mod consent_log;
mod dead_letters;
mod decoders;
mod deploy;
mod dispatch_once;
mod email;
mod events;
mod fakes;
mod generated_client;
mod history;
mod kafka_cluster;
mod kafka_groups;
mod kafka_sasl;
mod observability;
mod offers;
mod once_slot;
mod outgoing_webhooks;
mod preferences;
mod problems;
mod promos;
mod providers;
mod redis_acl;
mod redis_restart;
mod resilience;
mod schemathesis;
mod slots;
mod transport;
mod uncertain;
mod windows;
