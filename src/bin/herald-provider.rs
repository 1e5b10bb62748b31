//! herald-provider: a simulated external notification provider with fault injection.

// The simulator is part of every benchmark it serves: glibc's allocator was 17% of its CPU
// (`perf`, 200k campaign), mimalloc's is a few percent. It is a test tool, so its memory
// kept in reserve does not matter.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    herald::program::main::<herald::dev::simulator::Program>()
}
