//! Campaigns: one offer to many customers, each reached once, on the best channel, with a
//! fallback when a channel stays silent. In the order a campaign lives:
//!
//! - [`launch`] (here): the definition and audience are stored and the batches queued on
//!   `herald.campaigns`; the API and flash-promo activation both start campaigns this way.
//! - [`fanout`]: `herald-fanout` turns each batch into one delivery per customer, on the
//!   first channel the [`rules`] allow, rendered by [`render`].
//! - `dispatch` (its own module) claims the customer's once-slot and sends.
//! - [`receipts`]: what the provider confirms moves the slot to `delivered` (or on).
//! - [`retry`]: `herald-retry` moves what stayed silent to the next channel.
//! - [`control`]: an operator's start at `send_at`, pause, resume and cancel.
//! - [`cache`]: definitions held in memory by the workers.

pub mod cache;
pub mod caps;
pub mod control;
pub mod fanout;
pub mod quiet;
pub mod receipts;
pub mod render;
pub mod retry;
pub mod rules;
pub mod topics;

use rdkafka::producer::FutureProducer;

use crate::kafka::Topics;
use crate::model::{Campaign, CampaignBatch, CampaignId, CampaignState, CustomerId};
use crate::store::{
    CampaignCreation, CampaignStore, CustomerStore, HealthStore, Redis, SlotStore, StoreError,
    BATCH_SIZE,
};

pub use cache::CampaignCache;

/// A campaign stored and queued.
#[derive(Debug, Clone)]
pub struct Launched {
    /// The campaign as stored: the first definition if this id existed already.
    pub campaign: Campaign,
    /// `false` when the id existed already (a client's retry): nothing new was stored.
    pub created: bool,
    pub batches: usize,
}

/// The domain stores a campaign worker (herald-fanout, herald-retry) works with.
#[derive(Clone)]
pub struct CampaignStores {
    pub campaigns: CampaignStore,
    pub slots: SlotStore,
    pub customers: CustomerStore,
    /// Which channels are unhealthy, to choose around them.
    pub health: HealthStore,
}

impl CampaignStores {
    pub fn new(redis: &Redis) -> Self {
        CampaignStores {
            campaigns: CampaignStore::new(redis),
            slots: SlotStore::new(redis),
            customers: CustomerStore::new(redis),
            health: HealthStore::new(redis),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Some batches were not acknowledged by Kafka; launching the same id again resumes.
    #[error("campaign batches not queued")]
    NotQueued,
    /// Another campaign (another definition or audience) already has this id.
    #[error("a different campaign has this id")]
    Conflict,
    /// The same campaign is being stored by another call; launching again shortly resumes.
    #[error("the campaign is being stored by another call")]
    InProgress,
}

/// Stores a campaign and its audience (once per id) and queues its batches for fan-out.
/// Launching the same campaign again stores nothing new and queues the batches again:
/// fan-out drops the batches it has done, so a caller may retry until it succeeds. The same
/// id with another definition or audience is refused.
pub async fn launch(
    store: &CampaignStore,
    producer: &FutureProducer,
    topics: &Topics,
    campaign: Campaign,
    audience: &[CustomerId],
) -> Result<Launched, LaunchError> {
    let (campaign, created) = match store.create_campaign(&campaign, audience).await? {
        CampaignCreation::Created => (campaign, true),
        CampaignCreation::Exists(existing) => (*existing, false),
        CampaignCreation::Conflict => return Err(LaunchError::Conflict),
        CampaignCreation::InProgress => return Err(LaunchError::InProgress),
    };
    let batches = (campaign.recipients as usize).div_ceil(BATCH_SIZE);
    // A campaign still scheduled is started by herald-retry at its time, once; one that is
    // paused or cancelled has its batches queued by `control`.
    match store.campaign_state(&campaign.id).await? {
        Some(CampaignState::Running) | None => {}
        Some(state) => {
            tracing::info!(campaign = %campaign.id, %state, "campaign stored; not queued now");
            return Ok(Launched {
                campaign,
                created,
                batches,
            });
        }
    }
    let all: Vec<u32> = (0..batches as u32).collect();
    if queue_batches(producer, topics, &campaign.id, &all).await > 0 {
        tracing::error!(campaign = %campaign.id, "campaign batches not queued");
        return Err(LaunchError::NotQueued);
    }
    tracing::info!(campaign = %campaign.id, recipients = campaign.recipients, batches, "campaign queued");
    Ok(Launched {
        campaign,
        created,
        batches,
    })
}

/// Queues batches of a campaign for fan-out, keyed per batch so they spread over
/// partitions and fan-out workers; returns how many the broker refused.
async fn queue_batches(
    producer: &FutureProducer,
    topics: &Topics,
    id: &CampaignId,
    batches: &[u32],
) -> usize {
    let topic = topics.campaigns();
    let records: Vec<(String, String, Vec<u8>)> = batches
        .iter()
        .map(|&b| {
            let batch = CampaignBatch {
                campaign: id.clone(),
                batch: b,
                customers: Vec::new(),
            };
            (
                topic.clone(),
                format!("{id}:{b}"),
                serde_json::to_vec(&batch).unwrap_or_default(),
            )
        })
        .collect();
    crate::kafka::publish_all(producer, &records).await
}
