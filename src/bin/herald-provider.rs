//! herald-provider: a simulated external notification provider with fault injection.

fn main() -> anyhow::Result<()> {
    herald::program::main::<herald::dev::simulator::Program>()
}
