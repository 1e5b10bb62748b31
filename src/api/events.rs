//! Sales and user events in, aggregates out (seeds 003 and 004):
//!
//! - `POST /v1/sales`: seed 003's `sale_completed` event → 202, published to `herald.sales`.
//! - `POST /v1/user-events`: one event, or `{"events": [...]}` (up to 10,000) → 202,
//!   published to `herald.user-events` keyed by user.
//! - `GET /v1/customers/{id}/loyalty`: points of a customer id or e-mail address.
//! - `GET /v1/customers/{id}/activity`: the user's aggregates.
//!
//! Producers may also publish to the topics directly; `herald-events` checks again.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::offers::parse_json;
use super::{ApiError, App, Ingest};
use crate::http::{or_not_found, Body};
use crate::kafka;
use crate::model::commerce::{Invalid, MemberId, SaleEvent, UserEvent};
use crate::model::{now_ms, CustomerId};

const MAX_EVENTS_PER_CALL: usize = 10_000;
pub fn routes(limits: &crate::http::HttpLimits) -> Router<Arc<Ingest>> {
    Router::new()
        .route("/v1/sales", post(post_sale))
        .route(
            "/v1/user-events",
            post(post_user_events).layer(crate::http::body_limit(limits.bulk_body_limit_bytes)),
        )
        .route("/v1/customers/{id}/loyalty", get(get_loyalty))
        .route("/v1/customers/{id}/activity", get(get_activity))
}

fn invalid_at(prefix: &str, e: Invalid) -> ApiError {
    ApiError::invalid(format!("{prefix}{}", e.field), e.reason)
}

async fn post_sale(State(app): App, Body(body): Body) -> Result<Response, ApiError> {
    let sale: SaleEvent = parse_json(&body, "")?;
    sale.validate(now_ms()).map_err(|e| invalid_at("", e))?;
    let payload = serde_json::to_vec(&sale).map_err(|e| ApiError::unavailable(e.to_string()))?;
    kafka::publish(
        &app.producer,
        &app.topics.sales(),
        sale.sale_id.as_str(),
        &payload,
        None,
    )
    .await
    .map_err(|e| ApiError::unavailable(format!("cannot queue the sale: {e}")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "sale_id": sale.sale_id,
            "status": "accepted",
            "confirmation": sale.confirmation_id(),
            "loyalty_account": sale.member().as_str(),
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEventBatch {
    #[serde(deserialize_with = "crate::http::at_most::<_, _, MAX_EVENTS_PER_CALL>")]
    events: Vec<UserEvent>,
}

async fn post_user_events(State(app): App, Body(body): Body) -> Result<Response, ApiError> {
    let (events, prefix) = if crate::http::has_field(&body, "events")? {
        let batch: UserEventBatch = parse_json(&body, "")?;
        (batch.events, "events")
    } else {
        (vec![parse_json::<UserEvent>(&body, "")?], "")
    };
    if events.is_empty() || events.len() > MAX_EVENTS_PER_CALL {
        return Err(ApiError::invalid(
            "events",
            format!("1-{MAX_EVENTS_PER_CALL} events per call"),
        ));
    }
    let now = now_ms();
    let topic = app.topics.user_events();
    let mut records = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let at = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}[{i}].")
        };
        event.validate(now).map_err(|e| invalid_at(&at, e))?;
        let payload =
            serde_json::to_vec(event).map_err(|e| ApiError::unavailable(e.to_string()))?;
        records.push((topic.clone(), event.user_id.to_string(), payload));
    }
    let failed = kafka::publish_all(&app.producer, &records).await;
    if failed > 0 {
        // Some went: the caller sends them all again, and each event_id counts once.
        return Err(ApiError::unavailable(format!(
            "{failed} of {} events could not be queued; send them again",
            records.len()
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": records.len()})),
    )
        .into_response())
}

async fn get_loyalty(State(app): App, Path(raw_id): Path<String>) -> Result<Response, ApiError> {
    let member = or_not_found(MemberId::parse(&raw_id), "loyalty account")?;
    let account = or_not_found(app.store.loyalty(&member).await?, "loyalty account")?;
    Ok(Json(account).into_response())
}

async fn get_activity(State(app): App, Path(raw_id): Path<String>) -> Result<Response, ApiError> {
    let user = or_not_found(CustomerId::parse(&raw_id), "activity")?;
    let activity = or_not_found(app.store.activity(&user).await?, "activity")?;
    Ok(Json(activity).into_response())
}
