//! herald-ingest: the public HTTP API (seed 001 requests) in front of Kafka and Redis.

fn main() -> anyhow::Result<()> {
    herald::program::main::<herald::api::program::Program>()
}
