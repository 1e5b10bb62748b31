//! The shop's webhook endpoints (admins only): where Herald posts the lifecycle events each
//! chose (see [`crate::outgoing`]).
//!
//! - `POST /v1/webhook-endpoints` → 201 with the signing secret, shown this once
//! - `GET /v1/webhook-endpoints`: every endpoint with its figures (no secret)
//! - `DELETE /v1/webhook-endpoints/{id}` → 204
//! - `POST /v1/webhook-endpoints/{id}/replay`: every kept event since a time, sent again

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, App, Ingest};
use crate::http::{or_not_found, parse_json, Body};
use crate::model::{now_ms, rfc3339};
use crate::outgoing::{event_types, new_secret, url_for_logs, Endpoint, EndpointId};
use crate::schema::{BodyErrors, NotFound};

/// The most endpoints a fleet may have: each one is a task and a queue per event.
const MAX_ENDPOINTS: usize = 50;
const MAX_URL_LEN: usize = 2048;

pub fn routes() -> OpenApiRouter<Arc<Ingest>> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(delete_endpoint))
        .routes(routes!(replay_endpoint))
}

/// A new endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    /// `https://` (plain http only to loopback where `HERALD_WEBHOOK_ALLOW_LOOPBACK` is set),
    /// to a public address unless `HERALD_WEBHOOK_ALLOW_NETWORKS` names its network.
    #[schema(max_length = 2048, example = "https://crm.shop.example/herald")]
    url: String,
    /// The event types to receive, e.g. `message.delivered`, `message.failed`,
    /// `customer.unsubscribed`, `webhook.endpoint_disabled`.
    #[schema(min_items = 1, max_items = 32)]
    events: Vec<String>,
    #[serde(default)]
    #[schema(max_length = 200)]
    description: Option<String>,
}

/// An endpoint as listed.
#[derive(Serialize, ToSchema)]
struct EndpointView {
    id: String,
    url: String,
    events: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    created_at: String,
    /// `enabled`, or `disabled` after failing for the whole retry period.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_at: Option<String>,
    /// `queued`, `delivered`, `failed_attempts`, `gave_up`, `failing_since` (ms).
    #[schema(value_type = Object)]
    figures: BTreeMap<String, u64>,
}

/// The answer to a creation: the only time the secret is shown.
#[derive(Serialize, ToSchema)]
struct CreatedEndpoint {
    id: String,
    url: String,
    events: Vec<String>,
    /// `whsec_...`: verify each call's `webhook-signature` with it (Standard Webhooks).
    secret: String,
}

fn view(e: &Endpoint, figures: BTreeMap<String, u64>) -> EndpointView {
    EndpointView {
        id: e.id.to_string(),
        url: e.url.clone(),
        events: e.events.clone(),
        description: e.description.clone(),
        created_at: rfc3339(e.created_ms),
        status: if e.disabled_ms.is_some() {
            "disabled"
        } else {
            "enabled"
        }
        .into(),
        disabled_at: e.disabled_ms.map(rfc3339),
        figures,
    }
}

fn validate(app: &Ingest, new: &NewEndpoint) -> Result<(), ApiError> {
    if new.url.len() > MAX_URL_LEN {
        return Err(ApiError::invalid(
            "url",
            format!("at most {MAX_URL_LEN} bytes"),
        ));
    }
    app.webhook_addresses
        .check_url(&new.url)
        .map_err(|e| ApiError::invalid("url", e.to_string()))?;
    let known = event_types();
    if new.events.is_empty() || new.events.len() > 32 {
        return Err(ApiError::invalid("events", "name 1-32 event types"));
    }
    if let Some((i, unknown)) = new
        .events
        .iter()
        .enumerate()
        .find(|(_, e)| !known.contains(e))
    {
        return Err(ApiError::invalid(
            format!("events[{i}]"),
            format!(
                "unknown event type {unknown:?}; one of {}",
                known.join(", ")
            ),
        ));
    }
    if new.description.as_ref().is_some_and(|d| d.len() > 200) {
        return Err(ApiError::invalid("description", "at most 200 bytes"));
    }
    Ok(())
}

/// Register a webhook endpoint
///
/// Each lifecycle event of the chosen types is posted to the URL, signed as the Standard
/// Webhooks specification says (`webhook-id`, `webhook-timestamp`, `webhook-signature`:
/// HMAC-SHA256 with the secret answered here, once). A call that fails is retried with
/// back-off for `HERALD_WEBHOOK_RETRY_HOURS`; an endpoint failing that long is disabled.
#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks", request_body = NewEndpoint,
    responses((status = 201, description = "Registered; the secret is shown this once", body = CreatedEndpoint),
        BodyErrors))]
async fn create_endpoint(State(app): App, Body(body): Body) -> Result<Response, ApiError> {
    let new: NewEndpoint = parse_json(&body, "")?;
    validate(&app, &new)?;
    if app.stores.webhooks.endpoints().await?.len() >= MAX_ENDPOINTS {
        return Err(ApiError::invalid(
            "url",
            format!("at most {MAX_ENDPOINTS} endpoints; delete one first"),
        ));
    }
    let mut events = new.events;
    events.sort();
    events.dedup();
    let endpoint = Endpoint {
        id: EndpointId::generate(),
        url: new.url,
        events,
        description: new.description,
        secret: new_secret(),
        created_ms: now_ms(),
        disabled_ms: None,
    };
    app.stores.webhooks.put_endpoint(&endpoint).await?;
    let url = url_for_logs(&endpoint.url);
    tracing::info!(endpoint = %endpoint.id, %url, "webhook endpoint registered");
    let created = CreatedEndpoint {
        id: endpoint.id.to_string(),
        url: endpoint.url,
        events: endpoint.events,
        secret: endpoint.secret,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[derive(Serialize, ToSchema)]
struct EndpointList {
    endpoints: Vec<EndpointView>,
}

/// The webhook endpoints, with their figures
#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks",
    responses((status = 200, description = "Every endpoint (secrets are never shown again)", body = EndpointList)))]
async fn list_endpoints(State(app): App) -> Result<Response, ApiError> {
    let mut endpoints = Vec::new();
    for e in app.stores.webhooks.endpoints().await? {
        let figures = app.stores.webhooks.endpoint_state(&e.id).await?;
        endpoints.push(view(&e, figures));
    }
    endpoints.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    Ok(Json(EndpointList { endpoints }).into_response())
}

/// Delete a webhook endpoint and what is queued for it
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted"), NotFound))]
async fn delete_endpoint(State(app): App, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = or_not_found(EndpointId::parse(&raw), "endpoint")?;
    if !app.stores.webhooks.delete_endpoint(&id).await? {
        return Err(ApiError::not_found("endpoint"));
    }
    tracing::info!(endpoint = %id, "webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// From when to send again.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Replay {
    /// RFC 3339; events are kept `HERALD_WEBHOOK_KEEP_HOURS`.
    #[schema(format = DateTime)]
    since: String,
}

#[derive(Serialize, ToSchema)]
struct Replayed {
    /// Messages due again.
    queued: u64,
}

/// Send an endpoint's events since a time again
///
/// Every kept event since `since` is posted again (same `webhook-id`, so a receiver that
/// keeps ids drops what it has). A disabled endpoint is enabled again.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/replay", tag = "webhooks", request_body = Replay,
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 202, description = "Queued", body = Replayed), BodyErrors, NotFound))]
async fn replay_endpoint(
    State(app): App,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let id = or_not_found(EndpointId::parse(&raw), "endpoint")?;
    let replay: Replay = parse_json(&body, "")?;
    let since = replay
        .since
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| u64::try_from(t.as_millisecond()).ok())
        .ok_or_else(|| ApiError::invalid("since", "an RFC 3339 time, e.g. 2026-12-05T08:00:00Z"))?;
    let mut endpoint = or_not_found(app.stores.webhooks.endpoint(&id).await?, "endpoint")?;
    if endpoint.disabled_ms.take().is_some() {
        app.stores.webhooks.put_endpoint(&endpoint).await?;
    }
    let queued = app.stores.webhooks.replay_outgoing(&id, since).await?;
    Ok((StatusCode::ACCEPTED, Json(Replayed { queued })).into_response())
}
