//! herald-fanout: expands campaigns into one delivery per customer. Run several to scale.

fn main() -> anyhow::Result<()> {
    herald::program::main::<herald::campaigns::fanout::Program>()
}
