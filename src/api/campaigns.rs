//! Campaigns of personalised offers (customers are in [`super::customers`], the providers'
//! receipts in [`super::receipts`]).
//!
//! - `POST /v1/campaigns` → 202 (stored, its batches queued for fan-out, or scheduled for
//!   its `send_at`), `GET /v1/campaigns/{id}`
//! - `POST /v1/campaigns/{id}/pause`, `/resume`, `/cancel` → 200 with the report; 409 when
//!   the action does not apply in the campaign's state

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, App, Ingest};
use crate::campaigns::control::{self, ControlError};
use crate::campaigns::LaunchError;
use crate::http::{or_not_found, parse_json, Body};
use crate::model::{
    now_ms, Campaign, CampaignAction, CampaignId, CampaignState, Channel, CustomerId,
    EmailTemplate, Language, Template, Topic, Translation, WhatsappCampaignTemplate,
    BUILT_IN_VARIABLES, OUTCOMES,
};
use crate::schema::{
    from_json, BodyErrors, IdTaken, NotFound, QueueDown, StateConflict, MAX_NAME_LEN,
};
use crate::store::StateChange;

/// Largest body for bulk routes: a million-customer audience is about 15 MB of JSON.
const MAX_AUDIENCE: usize = 5_000_000;
const MAX_TRANSLATIONS: usize = 32;

pub fn routes(limits: &crate::http::HttpLimits) -> OpenApiRouter<Arc<Ingest>> {
    let campaigns = OpenApiRouter::new()
        .routes(routes!(create_campaign))
        .layer(crate::http::body_limit(limits.campaign_body_limit_bytes));
    OpenApiRouter::new()
        .routes(routes!(get_campaign))
        .routes(routes!(pause_campaign))
        .routes(routes!(resume_campaign))
        .routes(routes!(cancel_campaign))
        .merge(campaigns)
}

/// A campaign of personalised offers.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCampaign {
    /// Posting the same id again resumes the campaign instead of starting another.
    #[serde(default)]
    id: Option<CampaignId>,
    #[schema(schema_with = crate::schema::name)]
    name: String,
    template: Template,
    #[serde(default)]
    email: Option<EmailTemplate>,
    #[serde(default)]
    whatsapp: Option<WhatsappCampaignTemplate>,
    /// The message in other languages, by language tag; chosen by the customer's `language`.
    #[serde(default)]
    #[schema(schema_with = translations_schema)]
    translations: BTreeMap<Language, Translation>,
    #[serde(default)]
    #[schema(schema_with = channels_schema)]
    channels: Vec<Channel>,
    #[serde(default)]
    #[schema(schema_with = timeouts_schema)]
    confirmation_timeout_ms: BTreeMap<Channel, u64>,
    #[serde(default)]
    #[schema(minimum = 0.0)]
    max_cost: Option<f64>,
    /// What the campaign is about, one of the configured topics (the rules' `[topics]`):
    /// customers' preferences and the frequency caps go by it. Absent: the configured
    /// campaign topic (`offers` by default).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "offers")]
    topic: Option<Topic>,
    /// When to start (RFC 3339, at most 7 days ahead); absent or past: at once.
    #[serde(default)]
    #[schema(format = DateTime, example = "2026-12-24T09:00:00Z")]
    send_at: Option<String>,
    /// After this (RFC 3339, ahead, and after `send_at`) nothing of the campaign is sent,
    /// fallbacks included: what is not sent by then ends `expired`.
    #[serde(default)]
    #[schema(format = DateTime, example = "2026-12-24T21:00:00Z")]
    expires_at: Option<String>,
    audience: Audience,
}

/// How far ahead a campaign may be scheduled: well inside the report's retention, which
/// counts from creation.
const MAX_SCHEDULE_AHEAD_MS: u64 = 7 * 24 * 3600 * 1000;

/// A campaign's time (`send_at`, `expires_at`) in ms since the epoch: RFC 3339, at most 7
/// days ahead.
fn parse_time(field: &str, raw: &str, now: u64) -> Result<u64, ApiError> {
    let at = raw
        .parse::<jiff::Timestamp>()
        .map_err(|_| {
            ApiError::invalid(
                field,
                format!("{raw:?} is not a date and time (RFC 3339, e.g. 2026-12-24T09:00:00Z)"),
            )
        })?
        .as_millisecond();
    let at = u64::try_from(at).map_err(|_| ApiError::invalid(field, "before 1970"))?;
    if at > now + MAX_SCHEDULE_AHEAD_MS {
        return Err(ApiError::invalid(field, "at most 7 days ahead"));
    }
    Ok(at)
}

/// `send_at` and `expires_at`: an expiry must be ahead, and after the start.
fn campaign_times(
    send_at: Option<&str>,
    expires_at: Option<&str>,
    now: u64,
) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let send_at = send_at
        .map(|raw| parse_time("send_at", raw, now))
        .transpose()?;
    let expires = expires_at
        .map(|raw| parse_time("expires_at", raw, now))
        .transpose()?;
    if let Some(exp) = expires {
        if exp <= send_at.unwrap_or(now).max(now) {
            return Err(ApiError::invalid(
                "expires_at",
                "must be ahead, and after send_at",
            ));
        }
    }
    Ok((send_at, expires))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Audience {
    #[serde(deserialize_with = "crate::http::at_most::<_, _, MAX_AUDIENCE>")]
    #[schema(schema_with = audience_schema)]
    customer_ids: Vec<CustomerId>,
}

/// Shortest and longest time a channel may be given to confirm a delivery.
const MIN_CONFIRMATION_MS: u64 = 100;
const MAX_CONFIRMATION_MS: u64 = 7 * 24 * 3600 * 1000;

fn translations_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "type": "object",
        "maxProperties": MAX_TRANSLATIONS,
        "propertyNames": <Language as utoipa::PartialSchema>::schema(),
        "additionalProperties": {"$ref": "#/components/schemas/Translation"},
    }))
}

fn channels_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "type": "array", "uniqueItems": true,
        "items": {"$ref": "#/components/schemas/Channel"},
    }))
}

fn timeouts_schema() -> utoipa::openapi::schema::Schema {
    Channel::map_schema(json!({
        "type": "integer", "minimum": MIN_CONFIRMATION_MS, "maximum": MAX_CONFIRMATION_MS,
    }))
}

fn audience_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "type": "array", "minItems": 1, "maxItems": MAX_AUDIENCE,
        "items": {"$ref": "#/components/schemas/CustomerId"},
    }))
}

fn validate_campaign(c: &NewCampaign) -> Result<(), ApiError> {
    if c.name.trim().is_empty() || c.name.len() > MAX_NAME_LEN {
        return Err(ApiError::invalid(
            "name",
            format!("name must be 1-{MAX_NAME_LEN} bytes"),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = c.channels.iter().find(|ch| !seen.insert(**ch)) {
        return Err(ApiError::invalid(
            "channels",
            format!("{dup} is listed twice"),
        ));
    }
    for (channel, ms) in &c.confirmation_timeout_ms {
        if !(MIN_CONFIRMATION_MS..=MAX_CONFIRMATION_MS).contains(ms) {
            return Err(ApiError::invalid(
                format!("confirmation_timeout_ms.{channel}"),
                "time-out must be between 100 ms and 7 days",
            ));
        }
    }
    if c.max_cost.is_some_and(|m| !(m.is_finite() && m >= 0.0)) {
        return Err(ApiError::invalid(
            "max_cost",
            "max_cost must be a number >= 0",
        ));
    }
    let n = c.audience.customer_ids.len();
    if n == 0 || n > MAX_AUDIENCE {
        return Err(ApiError::invalid(
            "audience.customer_ids",
            format!("audience must have 1-{MAX_AUDIENCE} customers"),
        ));
    }
    Ok(())
}

/// Every template of the campaign: a name no profile has and that is not built in, a
/// rendering error, or a sender that is not an address the policy allows is refused here,
/// naming the place, rather than found once per customer.
fn check_templates(
    c: &Campaign,
    known: &BTreeSet<String>,
    policy: &super::SenderPolicy,
) -> Result<(), ApiError> {
    if c.translations.len() > MAX_TRANSLATIONS {
        return Err(ApiError::invalid(
            "translations",
            format!("at most {MAX_TRANSLATIONS} languages"),
        ));
    }
    if let Some(w) = &c.whatsapp {
        if !w.name_is_valid() {
            return Err(ApiError::invalid(
                "whatsapp.name",
                "a template name as Meta's manager writes it: lower-case letters, digits and '_'",
            ));
        }
        if w.parameters.len() > WhatsappCampaignTemplate::MAX_PARAMETERS {
            return Err(ApiError::invalid(
                "whatsapp.parameters",
                format!(
                    "at most {} parameters",
                    WhatsappCampaignTemplate::MAX_PARAMETERS
                ),
            ));
        }
    }
    for (at, template) in c.templates() {
        if let Some(name) = template.unknown_variable(known) {
            return Err(ApiError::invalid(
                at,
                format!(
                    "unknown variable {name:?}: no customer has such an attribute, and it is not one of {}",
                    BUILT_IN_VARIABLES.join(", ")
                ),
            ));
        }
        template
            .trial_render()
            .map_err(|e| ApiError::invalid(at, e.to_string()))?;
    }
    let senders = c.email.iter().map(|e| ("email.from".to_string(), e)).chain(
        c.translations
            .iter()
            .filter_map(|(l, t)| Some((format!("translations.{l}.email.from"), t.email.as_ref()?))),
    );
    for (at, email) in senders {
        if let Some(from) = &email.from {
            policy
                .check(from)
                .map_err(|why| ApiError::invalid(at, why.to_string()))?;
        }
    }
    Ok(())
}

/// Stores the campaign and queues its batches; 202 with the id. Posting the same `id`
/// again stores nothing new and re-queues the batches (fan-out skips finished ones), so a
/// client that lost the answer can retry without any customer hearing twice.
#[derive(Serialize, ToSchema)]
struct CampaignQueued {
    id: CampaignId,
    recipients: u64,
    batches: u64,
}

/// Send a campaign of personalised offers (the same id again resumes)
///
/// Rules no schema states: a template names only attributes some customer has (or the
/// built-in ones) and renders; `email.from` is a mailbox on a domain the server allows
/// (`HERALD_EMAIL_SENDER_DOMAINS`).
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", request_body = NewCampaign,
    responses(
        (status = 202, description = "Queued", body = CampaignQueued),
        (status = 200, description = "Already there: resumed", body = CampaignQueued),
        BodyErrors,
        IdTaken,
        QueueDown))]
#[tracing::instrument(name = "ingest.campaign", skip_all)]
async fn create_campaign(State(app): App, Body(body): Body) -> Result<Response, ApiError> {
    let new: NewCampaign = parse_json(&body, "")?;
    validate_campaign(&new)?;
    let mut seen = HashSet::with_capacity(new.audience.customer_ids.len());
    let audience: Vec<CustomerId> = new
        .audience
        .customer_ids
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect();
    let now = now_ms();
    let (send_at_ms, expires_at_ms) =
        campaign_times(new.send_at.as_deref(), new.expires_at.as_deref(), now)?;
    let topic = super::checked_topic(&app.catalog, new.topic, &app.catalog.campaign_default)?;
    let known = app.stores.customers.attribute_names().await?;
    let campaign = Campaign {
        id: new.id.unwrap_or_else(CampaignId::generate),
        name: new.name,
        template: new.template,
        email: new.email,
        whatsapp: new.whatsapp,
        translations: new.translations,
        channels: new.channels,
        confirmation_timeout_ms: new.confirmation_timeout_ms,
        max_cost: new.max_cost,
        topic,
        recipients: audience.len() as u64,
        created_ms: now,
        send_at_ms,
        expires_at_ms,
    };
    check_templates(&campaign, &known, &app.senders)?;
    let launched = crate::campaigns::launch(
        &app.stores.campaigns,
        &app.producer,
        &app.topics,
        campaign,
        &audience,
    )
    .await
    .map_err(|e| match e {
        LaunchError::Store(e) => ApiError::from(e),
        LaunchError::NotQueued => {
            ApiError::unavailable("queue unavailable; post the same campaign id again to resume")
        }
        LaunchError::Conflict => ApiError::conflict(
            "id",
            "a different campaign (definition or audience) already has this id",
        ),
        LaunchError::InProgress => ApiError::unavailable(
            "this campaign is being stored by another call; post it again shortly",
        ),
    })?;
    let (campaign, batches) = (launched.campaign, launched.batches);
    let status = if launched.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(CampaignQueued {
            id: campaign.id,
            recipients: campaign.recipients,
            batches: batches as u64,
        }),
    )
        .into_response())
}

/// A campaign's progress and counts
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id")),
    responses((status = 200, description = "Report", body = CampaignReport), NotFound))]
async fn get_campaign(State(app): App, Path(raw_id): Path<String>) -> Result<Response, ApiError> {
    let id = or_not_found(CampaignId::parse(&raw_id), "campaign")?;
    Ok(Json(report_of(&app, &id).await?).into_response())
}

async fn report_of(app: &Ingest, id: &CampaignId) -> Result<CampaignReport, ApiError> {
    let campaign = or_not_found(app.stores.campaigns.campaign(id).await?, "campaign")?;
    let state = app
        .stores
        .campaigns
        .campaign_state(id)
        .await?
        .unwrap_or(CampaignState::Running);
    let counts = app.stores.campaigns.campaign_counts(id).await?;
    Ok(campaign_report(&campaign, state, &counts))
}

/// Pause a campaign: fan-out and new sends stop within seconds
///
/// Calls already under way finish; every delivery not yet claimed is held back until
/// `resume`. Only a running campaign can be paused.
#[utoipa::path(post, path = "/v1/campaigns/{id}/pause", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id")),
    responses((status = 200, description = "Paused", body = CampaignReport), NotFound, StateConflict, QueueDown))]
async fn pause_campaign(State(app): App, Path(raw_id): Path<String>) -> Result<Response, ApiError> {
    operate(&app, &raw_id, CampaignAction::Pause).await
}

/// Resume a paused campaign where it stopped
///
/// What was held back is sent, each customer still once.
#[utoipa::path(post, path = "/v1/campaigns/{id}/resume", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id")),
    responses((status = 200, description = "Running again", body = CampaignReport), NotFound, StateConflict, QueueDown))]
async fn resume_campaign(
    State(app): App,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    operate(&app, &raw_id, CampaignAction::Resume).await
}

/// Cancel a campaign for good
///
/// No provider call starts after the answer; every delivery not yet sent ends `cancelled`
/// (counted). A scheduled, running or paused campaign can be cancelled.
#[utoipa::path(post, path = "/v1/campaigns/{id}/cancel", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id")),
    responses((status = 200, description = "Cancelled", body = CampaignReport), NotFound, StateConflict, QueueDown))]
async fn cancel_campaign(
    State(app): App,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    operate(&app, &raw_id, CampaignAction::Cancel).await
}

async fn operate(app: &Ingest, raw_id: &str, action: CampaignAction) -> Result<Response, ApiError> {
    let id = or_not_found(CampaignId::parse(raw_id), "campaign")?;
    let change = control::operate(&app.stores.campaigns, &app.producer, &app.topics, &id, action)
        .await
        .map_err(|e| match e {
            ControlError::Store(e) => ApiError::from(e),
            // The state changed; herald-retry queues what the broker refused.
            ControlError::NotQueued(_) => ApiError::unavailable(
                "the state changed, but the queue is unavailable: the held-back batches follow within seconds",
            ),
        })?;
    match change {
        StateChange::Unknown => Err(ApiError::not_found("campaign")),
        StateChange::Refused(state) => Err(ApiError::conflict(
            "state",
            format!("the campaign is {state}: it cannot {}", action.as_str()),
        )),
        StateChange::Changed { .. } => Ok(Json(report_of(app, &id).await?).into_response()),
    }
}

/// Where a campaign stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Waiting for its `send_at`.
    Scheduled,
    FanningOut,
    Running,
    Paused,
    /// Cancelled; what was under way is still ending.
    Cancelling,
    /// Cancelled, and every recipient has an outcome.
    Cancelled,
    Completed,
}

#[derive(Serialize, ToSchema)]
pub struct CampaignProgress {
    batches: u64,
    batches_done: u64,
    fanned_out: u64,
    outcomes: u64,
    percent: f64,
}

/// `GET /v1/campaigns/{id}`.
#[derive(Serialize, ToSchema)]
pub struct CampaignReport {
    id: CampaignId,
    name: String,
    status: CampaignStatus,
    /// Where the operator has put it.
    state: CampaignState,
    /// When it starts (or started), if it was scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    send_at: Option<String>,
    /// When what is not sent by then ends `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    recipients: u64,
    created_ms: u64,
    channels: Vec<Channel>,
    progress: CampaignProgress,
    /// Deliveries by outcome (`delivered`, `failed:no_channel`, `sent:email`...).
    counts: BTreeMap<String, u64>,
}

/// Progress and counts by outcome; `delivered + failed + uncertain + cancelled + expired`
/// reaches `recipients` when done.
pub fn campaign_report(
    c: &Campaign,
    state: CampaignState,
    counts: &BTreeMap<String, u64>,
) -> CampaignReport {
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    let outcomes: u64 = OUTCOMES.iter().map(|k| get(k)).sum();
    let done = outcomes >= c.recipients;
    let status = match state {
        CampaignState::Scheduled => CampaignStatus::Scheduled,
        CampaignState::Cancelled if done => CampaignStatus::Cancelled,
        CampaignState::Cancelled => CampaignStatus::Cancelling,
        _ if done => CampaignStatus::Completed,
        CampaignState::Paused => CampaignStatus::Paused,
        _ if get("batches_done") < get("batches") => CampaignStatus::FanningOut,
        _ => CampaignStatus::Running,
    };
    let percent = if c.recipients == 0 {
        100.0
    } else {
        (outcomes as f64 * 1000.0 / c.recipients as f64).round() / 10.0
    };
    CampaignReport {
        id: c.id.clone(),
        name: c.name.clone(),
        status,
        state,
        send_at: c.send_at_ms.map(crate::api::rfc3339),
        expires_at: c.expires_at_ms.map(crate::api::rfc3339),
        recipients: c.recipients,
        created_ms: c.created_ms,
        channels: c.channels.clone(),
        progress: CampaignProgress {
            batches: get("batches"),
            batches_done: get("batches_done"),
            fanned_out: get("fanned_out"),
            outcomes,
            percent,
        },
        counts: counts.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    fn field_of<T: DeserializeOwned>(body: &str) -> Option<String> {
        parse_json::<T>(body.as_bytes(), "")
            .err()
            .and_then(|e| e.field)
    }

    #[test]
    fn campaign_errors_name_the_field() {
        let ok = r#"{"name":"n","template":"hi {{name}}","audience":{"customer_ids":["a"]}}"#;
        assert!(parse_json::<NewCampaign>(ok.as_bytes(), "").is_ok());
        assert_eq!(
            field_of::<NewCampaign>(r#"{"template":"t","audience":{"customer_ids":["a"]}}"#)
                .as_deref(),
            Some("name")
        );
        assert_eq!(
            field_of::<NewCampaign>(r#"{"name":"n","template":"t","channels":["fax"],"audience":{"customer_ids":["a"]}}"#).as_deref(),
            Some("channels[0]")
        );
        assert_eq!(
            field_of::<NewCampaign>(
                r#"{"name":"n","template":"t","audience":{"customer_ids":["a","b:c"]}}"#
            )
            .as_deref(),
            Some("audience.customer_ids[1]")
        );
        assert_eq!(
            field_of::<NewCampaign>(
                r#"{"name":"n","template":"hi {{","audience":{"customer_ids":["a"]}}"#
            )
            .as_deref(),
            Some("template")
        );
    }
}
