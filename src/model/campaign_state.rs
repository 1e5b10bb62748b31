//! Where an operator has put a campaign (scheduled, running, paused, cancelled), what an
//! operator may ask of it, and why the claim scripts hold its deliveries back.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why the claim scripts hold a campaign's deliveries back: what `halt` in a shard's counts
/// says, or its `exp` passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// Parked until `resume`.
    Paused,
    /// Ended `cancelled`.
    Cancelled,
    /// Ended `expired`: the campaign's `expires_at` passed.
    Expired,
}

impl Halt {
    /// The script's word for it, which is also the delivery's final status.
    pub fn as_str(self) -> &'static str {
        match self {
            Halt::Paused => "paused",
            Halt::Cancelled => "cancelled",
            Halt::Expired => "expired",
        }
    }

    pub fn from_script(word: &str) -> Option<Halt> {
        match word {
            "paused" => Some(Halt::Paused),
            "cancelled" => Some(Halt::Cancelled),
            "expired" => Some(Halt::Expired),
            _ => None,
        }
    }

    /// The lifecycle event of a delivery it ended; none for a parked one.
    pub fn ended(self) -> Option<crate::model::LifecycleKind> {
        match self {
            Halt::Paused => None,
            Halt::Cancelled => Some(crate::model::LifecycleKind::Cancelled),
            Halt::Expired => Some(crate::model::LifecycleKind::Expired),
        }
    }
}

/// The counts that end a recipient's delivery: a campaign is done when they add up to its
/// recipients.
pub const OUTCOMES: [&str; 6] = [
    "delivered",
    "failed",
    "uncertain",
    "cancelled",
    "expired",
    "capped",
];

/// Where an operator has put a campaign. Kept in its record (`state`) and, for the scripts
/// that claim deliveries, as `halt` in each shard's counts (see `store::lifecycle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Created with a `send_at` still ahead: nothing fanned out yet.
    Scheduled,
    Running,
    /// Fan-out and new claims stop; what was held back goes on at `resume`.
    Paused,
    /// Final: every delivery not yet sent ends `cancelled`.
    Cancelled,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Scheduled => "scheduled",
            CampaignState::Running => "running",
            CampaignState::Paused => "paused",
            CampaignState::Cancelled => "cancelled",
        }
    }

    /// The state a record holds; a record without one (written before states existed, or
    /// started at once) is running.
    pub fn from_record(raw: Option<&str>) -> CampaignState {
        match raw {
            Some("scheduled") => CampaignState::Scheduled,
            Some("paused") => CampaignState::Paused,
            Some("cancelled") => CampaignState::Cancelled,
            _ => CampaignState::Running,
        }
    }
}

impl std::fmt::Display for CampaignState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator asks of a running campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignAction {
    Pause,
    Resume,
    Cancel,
}

impl CampaignAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignAction::Pause => "pause",
            CampaignAction::Resume => "resume",
            CampaignAction::Cancel => "cancel",
        }
    }

    /// The state the action leads to from `from`, or `None` when it does not apply there.
    pub fn apply(self, from: CampaignState) -> Option<CampaignState> {
        use CampaignState::*;
        match (self, from) {
            (CampaignAction::Pause, Running) => Some(Paused),
            (CampaignAction::Resume, Paused) => Some(Running),
            (CampaignAction::Cancel, Scheduled | Running | Paused) => Some(Cancelled),
            _ => None,
        }
    }
}
