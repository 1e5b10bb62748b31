//! What support asks: which messages a customer got, on which channel, when.
//!
//! - `GET /v1/customers/{id}/messages`: the customer's messages, newest first, paged
//! - `GET /v1/campaigns/{id}/recipients/{customer}`: one recipient of a campaign, the once-
//!   slot's present state beside the history of its events
//! - `GET /v1/customers/{id}/consent-log`: every change of the customer's consent, newest
//!   first, paged (a data-access request)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, App, Ingest};
use crate::http::or_not_found;
use crate::model::{CampaignId, CustomerId};
use crate::schema::{BadPage, NotFound};
use crate::store::{ConsentPage, HistoryPage, MessageHistory};

/// Messages a page holds by default, and at most.
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

pub fn routes() -> OpenApiRouter<Arc<Ingest>> {
    OpenApiRouter::new()
        .routes(routes!(customer_messages))
        .routes(routes!(campaign_recipient))
        .routes(routes!(consent_log))
}

/// The page asked for (read by hand from the query, so that a bad value is answered in
/// JSON naming it).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct PageQuery {
    /// Messages started before this point (ms since the epoch): the `next` of the previous
    /// page.
    #[param(minimum = 0, maximum = 253_402_300_799_999_u64)]
    before: Option<u64>,
    /// At most this many messages (1-100, default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u64>,
}

/// A whole-number query parameter within `range`; `None` when absent. `within` says what
/// the range is, when the number falls outside it.
fn whole(
    q: &HashMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
    within: &str,
) -> Result<Option<u64>, ApiError> {
    let Some(raw) = q.get(name) else {
        return Ok(None);
    };
    let n = raw
        .parse::<u64>()
        .map_err(|_| ApiError::invalid(name, format!("{raw:?} is not a whole number")))?;
    if !range.contains(&n) {
        return Err(ApiError::invalid(name, within));
    }
    Ok(Some(n))
}

/// A page's size: `limit`, 1-100, 20 when absent.
fn limit_of(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    let limit = whole(q, "limit", 1..=MAX_PAGE as u64, "limit must be 1-100")?;
    Ok(limit.map_or(DEFAULT_PAGE, |n| n as usize))
}

/// The largest `before`: the last millisecond of year 9999.
const LATEST_BEFORE: u64 = 253_402_300_799_999;

/// A customer's messages, newest first
///
/// Built from the lifecycle events: each message (a campaign's or a flash promo's delivery)
/// with every status and its time, the channel and provider, and why an attempt failed or
/// moved on. Kept for `HERALD_HISTORY_RETENTION_DAYS` after the customer's latest event, the
/// newest `HERALD_HISTORY_MESSAGES` per customer. Seed 001's requests name an address, not a
/// customer, and are not in it.
#[utoipa::path(get, path = "/v1/customers/{id}/messages", tag = "customers",
    params(("id" = String, Path, description = "The customer's id"), PageQuery),
    responses((status = 200, description = "A page of messages", body = HistoryPage),
        BadPage, NotFound))]
async fn customer_messages(
    State(app): App,
    Path(raw_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = or_not_found(CustomerId::parse(&raw_id), "customer")?;
    let limit = limit_of(&q)?;
    let before = whole(
        &q,
        "before",
        0..=LATEST_BEFORE,
        "before is a time in ms, up to year 9999",
    )?;
    Ok(Json(
        app.stores
            .events
            .customer_history(&id, before, limit)
            .await?,
    )
    .into_response())
}

/// One recipient of a campaign: where its delivery stands now, and its history.
#[derive(Serialize, ToSchema)]
struct Recipient {
    campaign: CampaignId,
    customer: CustomerId,
    /// The once-slot now: `status`, `channel`, `tried` (channels in order), `attempt`,
    /// `provider`, `reason` (of a failure).
    #[schema(value_type = Object)]
    now: BTreeMap<&'static str, String>,
    /// Every event, oldest first; absent when none was kept (or it expired).
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<MessageHistory>,
}

/// The once-slot's fields a recipient's state is told by, with their names in the answer.
const SLOT_FIELDS: [(&str, &str); 6] = [
    ("st", "status"),
    ("ch", "channel"),
    ("tr", "tried"),
    ("a", "attempt"),
    ("prov", "provider"),
    ("why", "reason"),
];

/// One recipient of a campaign
#[utoipa::path(get, path = "/v1/campaigns/{id}/recipients/{customer}", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id"),
        ("customer" = String, Path, description = "The customer's id")),
    responses((status = 200, description = "The recipient", body = Recipient), NotFound))]
async fn campaign_recipient(
    State(app): App,
    Path((raw_campaign, raw_customer)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let campaign = or_not_found(CampaignId::parse(&raw_campaign), "campaign")?;
    let customer = or_not_found(CustomerId::parse(&raw_customer), "recipient")?;
    or_not_found(app.stores.campaigns.campaign(&campaign).await?, "campaign")?;
    let slot = app.stores.slots.slot(&campaign, &customer).await?;
    let history = app
        .stores
        .events
        .message_history(&customer, &campaign)
        .await?;
    if slot.is_empty() && history.is_none() {
        return Err(ApiError::not_found("recipient"));
    }
    let now = SLOT_FIELDS
        .iter()
        .filter_map(|(field, name)| {
            let v = slot.get(*field).filter(|v| !v.is_empty())?;
            Some((*name, v.clone()))
        })
        .collect();
    Ok(Json(Recipient {
        campaign,
        customer,
        now,
        history,
    })
    .into_response())
}

/// A page of the consent log asked for.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct LogQuery {
    /// Changes to skip: the `next` of the previous page.
    #[param(minimum = 0, maximum = 100_000)]
    offset: Option<u64>,
    /// At most this many changes (1-100, default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u64>,
}

/// Every change of a customer's consent, newest first
///
/// Each change of consent or suppression, with its time, source (`api`, `one-click`,
/// `sms-stop`, `whatsapp-stop`, `bounce`), actor (a key's name, `link`, `customer reply`)
/// and old and new value: the customer's own, and those of the addresses the profile has
/// now (a STOP reply or a bounce names an address). Kept two years after the latest change.
#[utoipa::path(get, path = "/v1/customers/{id}/consent-log", tag = "customers",
    params(("id" = String, Path, description = "The customer's id"), LogQuery),
    responses((status = 200, description = "A page of changes", body = ConsentPage),
        BadPage, NotFound))]
async fn consent_log(
    State(app): App,
    Path(raw_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = or_not_found(CustomerId::parse(&raw_id), "customer")?;
    let limit = limit_of(&q)?;
    let offset = whole(&q, "offset", 0..=100_000, "offset must be 0-100000")?.unwrap_or(0);
    Ok(Json(
        app.stores
            .customers
            .consent_log(&id, offset as usize, limit)
            .await?,
    )
    .into_response())
}
