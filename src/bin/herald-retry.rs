//! herald-retry: moves deliveries that stayed silent to the next channel. Several may run.

fn main() -> anyhow::Result<()> {
    herald::program::main::<herald::schedulers::Program>()
}
