//! `herald webhooks`: the shop's outgoing webhook endpoints (admin key).

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use crate::client::ApiClient;

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Register an endpoint; prints its id and its signing secret (shown this once).
    Add {
        /// `https://...` (http only to loopback where the server allows it).
        #[arg(long)]
        url: String,
        /// Event types, comma-separated: message.sent, message.delivered, message.failed,
        /// message.fallback, message.cancelled, customer.unsubscribed...
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Every endpoint with its status and figures (never the secrets).
    List,
    /// Delete an endpoint and what is queued for it.
    Remove {
        /// The endpoint's id (`ep_...`).
        id: String,
    },
    /// Send an endpoint's kept events since a time again (and enable it if it was disabled).
    Replay {
        /// The endpoint's id (`ep_...`).
        id: String,
        /// RFC 3339, e.g. 2026-12-05T08:00:00Z.
        #[arg(long)]
        since: String,
    },
}

pub async fn execute(command: WebhooksCommand, api: &ApiClient) -> anyhow::Result<()> {
    const PATH: &str = "/v1/webhook-endpoints";
    let answer = match command {
        WebhooksCommand::Add {
            url,
            events,
            description,
        } => {
            let body = json!({"url": url, "events": events, "description": description});
            let created = api.call(Method::POST, "endpoint", PATH, Some(body)).await?;
            eprintln!("keep the secret: it is not shown again");
            created
        }
        WebhooksCommand::List => api.call(Method::GET, "endpoints", PATH, None).await?,
        WebhooksCommand::Remove { id } => {
            api.call(Method::DELETE, "endpoint", &format!("{PATH}/{id}"), None)
                .await?;
            json!({"deleted": id})
        }
        WebhooksCommand::Replay { id, since } => {
            let path = format!("{PATH}/{id}/replay");
            api.call(Method::POST, "replay", &path, Some(json!({"since": since})))
                .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
