//! A webhook endpoint of the shop's, as registered (see [`crate::outgoing`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// An endpoint's id: `ep_` and 26 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EndpointId(String);

impl EndpointId {
    pub fn generate() -> EndpointId {
        EndpointId(format!(
            "ep_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..26]
        ))
    }

    /// An id as a path carries it: `ep_` and lower-case letters and digits.
    pub fn parse(raw: &str) -> Option<EndpointId> {
        let rest = raw.strip_prefix("ep_")?;
        (!rest.is_empty()
            && rest.len() <= 32
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .then(|| EndpointId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registered endpoint, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: EndpointId,
    pub url: String,
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `whsec_` and the base64 of the key: shown once, when created.
    pub secret: String,
    pub created_ms: u64,
    /// Set when it failed for the whole retry period: nothing more is sent to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_ms: Option<u64>,
}

impl Endpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.disabled_ms.is_none() && self.events.iter().any(|e| e == event_type)
    }
}
