//! `herald keys`: service API keys in the key file herald-ingest reads
//! (`HERALD_API_KEYS_FILE`). A key is printed once, when created, alone on the last line of
//! standard output, so a script can capture it: `KEY=$(herald keys create ... | tail -1)`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::auth::{keys, Scope};

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key with scopes; the key is printed once, on the last line.
    Create {
        /// Who holds it (letters, digits, '-', '_', '.'): logged with its calls.
        #[arg(long)]
        name: String,
        /// Comma-separated: requests:write, requests:read, customers:read, customers:write,
        /// campaigns:write, campaigns:read, sales:write, events:write, promos:write,
        /// stats:read, bounces:write, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<Scope>,
        #[command(flatten)]
        file: KeyFile,
    },
    /// Revoke the active key with this name (a running herald-ingest stops taking it within
    /// seconds).
    Revoke {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        file: KeyFile,
    },
    /// The keys of the file: names, scopes, when created, whether revoked (never a key).
    List {
        #[command(flatten)]
        file: KeyFile,
    },
}

#[derive(clap::Args, Debug)]
pub struct KeyFile {
    /// The key file (created if missing).
    #[arg(long = "file", env = "HERALD_API_KEYS_FILE")]
    path: PathBuf,
}

pub fn execute(c: KeysCommand) -> anyhow::Result<()> {
    match c {
        KeysCommand::Create { name, scopes, file } => {
            let key = keys::create(&file.path, &name, &scopes)
                .with_context(|| format!("creating key {name:?}"))?;
            let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            println!(
                "created key {name:?} with scopes {} in {}; it is shown once, below:",
                scopes.join(","),
                file.path.display()
            );
            println!("{}", key.expose());
        }
        KeysCommand::Revoke { name, file } => {
            keys::revoke(&file.path, &name).with_context(|| format!("revoking key {name:?}"))?;
            println!("revoked key {name:?}");
        }
        KeysCommand::List { file } => {
            for k in keys::list(&file.path)? {
                let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                let state = if k.revoked { "revoked" } else { "active" };
                println!("{}\t{}\t{}\t{state}", k.name, scopes.join(","), k.created);
            }
        }
    }
    Ok(())
}
