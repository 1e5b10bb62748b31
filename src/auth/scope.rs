//! What a service key lets its holder do: the scopes of the access table
//! ([`crate::api::access`]), written as `area:verb` in the key file.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::KeyError;

/// What a key lets its holder do. `admin` includes every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    RequestsWrite,
    RequestsRead,
    CustomersRead,
    CustomersWrite,
    CampaignsWrite,
    CampaignsRead,
    SalesWrite,
    EventsWrite,
    PromosWrite,
    StatsRead,
    BouncesWrite,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 12] = [
        Scope::RequestsWrite,
        Scope::RequestsRead,
        Scope::CustomersRead,
        Scope::CustomersWrite,
        Scope::CampaignsWrite,
        Scope::CampaignsRead,
        Scope::SalesWrite,
        Scope::EventsWrite,
        Scope::PromosWrite,
        Scope::StatsRead,
        Scope::BouncesWrite,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::RequestsWrite => "requests:write",
            Scope::RequestsRead => "requests:read",
            Scope::CustomersRead => "customers:read",
            Scope::CustomersWrite => "customers:write",
            Scope::CampaignsWrite => "campaigns:write",
            Scope::CampaignsRead => "campaigns:read",
            Scope::SalesWrite => "sales:write",
            Scope::EventsWrite => "events:write",
            Scope::PromosWrite => "promos:write",
            Scope::StatsRead => "stats:read",
            Scope::BouncesWrite => "bounces:write",
            Scope::Admin => "admin",
        }
    }

    /// Every scope's name, comma-separated: what an unknown scope's error lists.
    pub fn names() -> String {
        Scope::ALL.map(Scope::as_str).join(", ")
    }

    pub(super) fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| KeyError::UnknownScope(s.trim().chars().take(40).collect()))
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
