//! herald-dispatch: sends the notifications of one channel. Run several per channel to scale.

fn main() -> anyhow::Result<()> {
    herald::program::main::<herald::dispatch::program::Program>()
}
