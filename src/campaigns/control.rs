//! An operator's control of a campaign once it is launched: a start at `send_at`, pause,
//! resume and cancel. The API and the CLI call [`operate`]; `herald-retry` starts what is
//! due ([`start_due`]) and completes what a crash cut short ([`reconcile`]).
//!
//! How each part of the fleet holds back (see `store::lifecycle` for the keys):
//! - fan-out reads the state before each batch: a paused campaign's batch is parked, a
//!   cancelled one's customers end `cancelled` without a message;
//! - a dispatcher's claim parks a paused campaign's delivery in the pending set (`queued`,
//!   due at once) or ends a cancelled one's, atomically with the claim: after the change is
//!   acknowledged, no new provider call starts;
//! - herald-retry leaves a paused campaign's pending entries alone, and ends a cancelled
//!   one's as they come due.
//!
//! Resume takes the parked batches back to `herald.campaigns`; the parked deliveries come
//! due in herald-retry, which publishes them again. Cancel does the same, so that fan-out
//! and the claims end each remaining delivery `cancelled` exactly once.

use std::time::Duration;

use rdkafka::producer::FutureProducer;

use super::queue_batches;
use crate::kafka::{self, Topics};
use crate::model::{
    CampaignAction, CampaignId, CampaignState, Channel, Halt, LifecycleEvent, LifecycleKind,
    RequestId,
};
use crate::store::{CampaignStore, StateChange, StoreError, BATCH_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state changed, but batches it needs queued again were refused by the broker;
    /// `herald-retry` queues them within seconds.
    #[error("{0} batches not queued yet")]
    NotQueued(usize),
}

/// Applies an operator's action and queues what it releases: the parked batches on resume;
/// on cancel those and, for a campaign that never started, all its batches (fan-out ends
/// each customer `cancelled`), and every unpublished delivery waiting in its pending sets.
pub async fn operate(
    store: &CampaignStore,
    producer: &FutureProducer,
    topics: &Topics,
    id: &CampaignId,
    action: CampaignAction,
) -> Result<StateChange, ControlError> {
    let change = store.change_campaign_state(id, action).await?;
    let StateChange::Changed { from, to } = change else {
        return Ok(change);
    };
    tracing::info!(campaign = %id, %from, %to, action = action.as_str(), "campaign state changed");
    if to == CampaignState::Cancelled {
        let waiting = store.cancel_queued(id, Halt::Cancelled).await?;
        emit_ended(producer, topics, id, "pending", Halt::Cancelled, waiting).await;
        if from == CampaignState::Scheduled {
            store.unschedule(id).await?;
            queue_all(store, producer, topics, id).await?;
        }
    }
    if matches!(to, CampaignState::Running | CampaignState::Cancelled) {
        requeue_parked(store, producer, topics, id).await?;
    }
    Ok(change)
}

/// Queues a paused campaign's parked batches again; the number queued.
pub async fn requeue_parked(
    store: &CampaignStore,
    producer: &FutureProducer,
    topics: &Topics,
    id: &CampaignId,
) -> Result<usize, ControlError> {
    let parked = store.parked_batches(id).await?;
    if parked.is_empty() {
        return Ok(0);
    }
    let refused = queue_batches(producer, topics, id, &parked).await;
    if refused > 0 {
        return Err(ControlError::NotQueued(refused));
    }
    store.unpark_batches(id, &parked).await?;
    Ok(parked.len())
}

async fn queue_all(
    store: &CampaignStore,
    producer: &FutureProducer,
    topics: &Topics,
    id: &CampaignId,
) -> Result<(), ControlError> {
    let Some(campaign) = store.campaign(id).await? else {
        return Ok(());
    };
    let batches: Vec<u32> =
        (0..(campaign.recipients as usize).div_ceil(BATCH_SIZE) as u32).collect();
    match queue_batches(producer, topics, id, &batches).await {
        0 => Ok(()),
        refused => Err(ControlError::NotQueued(refused)),
    }
}

/// Starts the scheduled campaigns whose `send_at` has come: each claimed by one herald-retry
/// (for `lease`), its batches queued, then marked running. A start cut short after its
/// batches were queued is queued again after the lease; fan-out skips the batches done.
pub async fn start_due(
    store: &CampaignStore,
    producer: &FutureProducer,
    topics: &Topics,
    lease: Duration,
) -> Result<usize, ControlError> {
    let mut started = 0;
    for id in store.claim_due_starts(16, lease).await? {
        match store.campaign_state(&id).await? {
            Some(CampaignState::Scheduled) => {}
            // Cancelled meanwhile (or gone): nothing to start.
            _ => {
                store.unschedule(&id).await?;
                continue;
            }
        }
        queue_all(store, producer, topics, &id).await?;
        if store.mark_started(&id).await? {
            tracing::info!(campaign = %id, "scheduled campaign started");
            started += 1;
        }
    }
    Ok(started)
}

/// Completes a state change a crash cut short: the halts written into every shard, the
/// parked batches of a running or cancelled campaign queued again, and (with `sweep`, as
/// it scans the campaign's pending sets) a cancelled or expired campaign's waiting
/// deliveries ended.
pub async fn reconcile(
    store: &CampaignStore,
    producer: &FutureProducer,
    topics: &Topics,
    id: &CampaignId,
    expires_at_ms: Option<u64>,
    sweep: bool,
) -> Result<(), ControlError> {
    let Some(state) = store.campaign_state(id).await? else {
        return Ok(());
    };
    store.apply_halts(id, state).await?;
    let expired = expires_at_ms.is_some_and(|exp| crate::model::now_ms() >= exp);
    let ending = match state {
        CampaignState::Cancelled => Some(Halt::Cancelled),
        _ if expired => Some(Halt::Expired),
        _ => None,
    };
    if let Some(ending) = ending.filter(|_| sweep) {
        // Deferred or parked deliveries would otherwise wait out their time to end.
        let waiting = store.cancel_queued(id, ending).await?;
        emit_ended(producer, topics, id, "pending", ending, waiting).await;
    }
    if matches!(state, CampaignState::Running | CampaignState::Cancelled) {
        requeue_parked(store, producer, topics, id).await?;
    }
    Ok(())
}

/// One event (`cancelled` or `expired`) standing for `count` deliveries that ended so
/// outside a claim.
pub(super) async fn emit_ended(
    producer: &FutureProducer,
    topics: &Topics,
    id: &CampaignId,
    what: &str,
    ending: Halt,
    count: u64,
) {
    if let Some(kind) = ending.ended() {
        emit_count(producer, topics, id, what, kind, count).await;
    }
}

/// One event of `kind` standing for `count` deliveries of the campaign (none for 0).
pub(super) async fn emit_count(
    producer: &FutureProducer,
    topics: &Topics,
    id: &CampaignId,
    what: &str,
    kind: LifecycleKind,
    count: u64,
) {
    if count == 0 {
        return;
    }
    let event = LifecycleEvent {
        campaign: Some(id.clone()),
        channel: None,
        count: Some(count),
        ..LifecycleEvent::new(
            kind,
            &RequestId(format!("{id}:{what}:{}", uuid::Uuid::now_v7())),
            Channel::Email,
            None,
        )
    };
    kafka::emit_event(producer, &topics.events(), &event).await;
}
