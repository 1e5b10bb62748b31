//! herald-events: sales become confirmation e-mails and loyalty points; user events become
//! per-user aggregates.

fn main() -> anyhow::Result<()> {
    herald::program::main::<herald::events::program::Program>()
}
