//! `herald customers`: what a customer was sent, as support asks it.

use clap::Subcommand;

use crate::client::ApiClient;

#[derive(Subcommand, Debug)]
pub enum CustomersCommand {
    /// A customer's messages, newest first: each campaign's statuses with their times,
    /// channels and providers (what support is asked).
    Messages {
        /// The customer's id.
        id: String,
        /// How many messages (1-100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print the API's JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

pub async fn execute(command: CustomersCommand, api: &ApiClient) -> anyhow::Result<()> {
    match command {
        CustomersCommand::Messages { id, limit, json } => {
            let path = format!("/v1/customers/{id}/messages?limit={limit}");
            let page = api
                .call(reqwest::Method::GET, "messages", &path, None)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                print!("{}", messages_text(&page));
            }
            Ok(())
        }
    }
}

/// A page of messages as lines: one per message, then one per status.
fn messages_text(page: &serde_json::Value) -> String {
    let mut out = String::new();
    let messages = page["messages"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() {
        out.push_str("no messages kept for this customer\n");
    }
    for m in messages {
        out.push_str(&format!(
            "{}  {}  {} via {}  (started {})\n",
            m["campaign"].as_str().unwrap_or("?"),
            m["status"].as_str().unwrap_or("?"),
            m["channel"].as_str().unwrap_or("-"),
            m["provider"].as_str().unwrap_or("-"),
            m["started"].as_str().unwrap_or("?"),
        ));
        for e in m["events"].as_array().cloned().unwrap_or_default() {
            out.push_str(&format!(
                "    {}  {:<12} {:<9} {}\n",
                e["at"].as_str().unwrap_or("?"),
                e["status"].as_str().unwrap_or("?"),
                e["channel"].as_str().unwrap_or(""),
                e["detail"].as_str().unwrap_or(""),
            ));
        }
    }
    out
}
