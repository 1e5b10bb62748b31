//! herald-broker: an in-memory Kafka-protocol broker for local runs and tests.

fn main() -> anyhow::Result<()> {
    herald::program::main::<herald::dev::broker::Program>()
}
