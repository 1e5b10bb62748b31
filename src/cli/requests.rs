//! `herald requests`: seed 001 requests from the command line.

use clap::Subcommand;

use crate::client::ApiClient;

#[derive(Subcommand, Debug)]
pub enum RequestsCommand {
    /// Show one request's status.
    Show { id: String },
}

pub async fn execute(command: RequestsCommand, api: &ApiClient) -> anyhow::Result<()> {
    let RequestsCommand::Show { id } = command;
    println!("{id}: {}", api.status(&id).await?);
    Ok(())
}
