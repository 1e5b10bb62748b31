//! `herald providers check`: reads the providers file (or the environment's defaults),
//! validates it, resolves every secret it names and builds each adapter, and says which
//! providers each channel uses, in order, without sending anything or printing a secret.

use clap::Subcommand;

use crate::config::{ProviderArgs, ProvidersArgs};
use crate::model::Channel;
use crate::provider::ProvidersConfig;

#[derive(Subcommand, Debug)]
pub enum ProvidersCommand {
    /// Validate the providers configuration as a dispatcher would read it.
    Check {
        #[command(flatten)]
        providers: ProvidersArgs,
        #[command(flatten)]
        defaults: ProviderArgs,
    },
}

pub async fn execute(command: ProvidersCommand) -> anyhow::Result<()> {
    let ProvidersCommand::Check {
        providers,
        defaults,
    } = command;
    let config = ProvidersConfig::load(&providers)?;
    let source = match &providers.providers {
        Some(path) => format!("providers file {}", path.display()),
        None => "built-in default (no HERALD_PROVIDERS)".to_string(),
    };
    println!("{source}");
    println!(
        "{:<10} {:<4} {:<16} {:<10} status",
        "channel", "#", "provider", "adapter"
    );
    let mut broken = 0;
    for channel in Channel::ALL {
        let listed: Vec<_> = config
            .summary()
            .into_iter()
            .filter(|(c, _, _)| *c == channel)
            .collect();
        // Built as the dispatcher builds it: secrets resolved, keys parsed, URLs checked.
        let built = config.build_chain(channel, &defaults);
        let status = match &built {
            Ok(_) => "ok".to_string(),
            Err(e) => {
                broken += 1;
                format!("ERROR: {e}")
            }
        };
        for (i, (_, name, adapter)) in listed.iter().enumerate() {
            let shown = if i == 0 { status.as_str() } else { "" };
            println!(
                "{:<10} {:<4} {:<16} {:<10} {shown}",
                channel.as_str(),
                i + 1,
                name,
                adapter
            );
        }
        if listed.is_empty() {
            println!(
                "{:<10} {:<4} {:<16} {:<10} {status}",
                channel.as_str(),
                1,
                "http",
                "http"
            );
        }
    }
    if broken > 0 {
        anyhow::bail!("{broken} channel(s) cannot start their providers");
    }
    println!("every channel's providers can start; nothing was sent");
    Ok(())
}
