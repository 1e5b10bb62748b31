//! herald-metrics: counts lifecycle events into Redis and shows them live.

fn main() -> anyhow::Result<()> {
    herald::program::main::<herald::metrics::program::Program>()
}
