//! herald-dispatch: sends the notifications of one channel. Run several per channel to scale.

/// One spawned task per notification: see the note on `mimalloc` in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    herald::program::main::<herald::dispatch::program::Program>()
}
