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
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, App, Ingest};
use crate::http::parse_json;
use crate::http::{or_not_found, Body, OneOrMany};
use crate::kafka;
use crate::model::commerce::{Invalid, MemberId, SaleEvent, UserEvent};
use crate::model::{now_ms, CustomerId, RequestId, SaleId};
use crate::schema::{from_json, BodyErrors, NotFound, QueueDown};
use crate::store::{ActivitySummary, LoyaltyAccount};

const MAX_EVENTS_PER_CALL: usize = 10_000;

pub fn routes(limits: &crate::http::HttpLimits) -> OpenApiRouter<Arc<Ingest>> {
    let bulk = OpenApiRouter::new()
        .routes(routes!(post_user_events))
        .layer(crate::http::body_limit(limits.bulk_body_limit_bytes));
    OpenApiRouter::new()
        .routes(routes!(post_sale))
        .routes(routes!(get_loyalty))
        .routes(routes!(get_activity))
        .merge(bulk)
}

fn invalid_at(prefix: &str, e: Invalid) -> ApiError {
    ApiError::invalid(format!("{prefix}{}", e.field), e.reason)
}

#[derive(Serialize, ToSchema)]
struct SaleAccepted {
    sale_id: SaleId,
    /// `accepted`
    status: &'static str,
    /// The request id of the confirmation e-mail.
    confirmation: RequestId,
    /// Whose points the sale credits: the customer id, or the e-mail address.
    loyalty_account: String,
}

/// A completed sale (seed 003): a confirmation e-mail and loyalty points follow
///
/// Rules no schema states: `timestamp` at most a day ahead of the server's clock.
#[utoipa::path(post, path = "/v1/sales", tag = "events", request_body = SaleEvent,
    responses((status = 202, description = "Accepted", body = SaleAccepted), BodyErrors, QueueDown))]
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
        Json(SaleAccepted {
            confirmation: sale.confirmation_id(),
            loyalty_account: sale.member().as_str().to_string(),
            sale_id: sale.sale_id,
            status: "accepted",
        }),
    )
        .into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UserEventBatch {
    #[serde(deserialize_with = "crate::http::at_most::<_, _, MAX_EVENTS_PER_CALL>")]
    #[schema(schema_with = events_schema)]
    events: Vec<UserEvent>,
}

impl crate::http::Batch for UserEventBatch {
    type Item = UserEvent;
    const LIST: &'static str = "events";
    fn into_items(self) -> Vec<UserEvent> {
        self.events
    }
}

pub(super) fn user_event_batch_schema() -> Vec<super::docs::Component> {
    super::docs::entry::<UserEventBatch>()
}

fn events_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "type": "array", "minItems": 1, "maxItems": MAX_EVENTS_PER_CALL,
        "items": {"$ref": "#/components/schemas/UserEvent"},
    }))
}

/// The body of `POST /v1/user-events`: one event, or many.
struct UserEventsBody;

// `OneUserEvent` (written by the document, `docs::with_conditional_rules`) is a `UserEvent`
// without an `events` member: a body that has one is read as a batch, whatever else it holds.
crate::schema::described!(
    UserEventsBody,
    utoipa::openapi::schema::Schema::OneOf(
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(utoipa::openapi::Ref::from_schema_name("OneUserEvent"))
            .item(utoipa::openapi::Ref::from_schema_name("UserEventBatch"))
            .build()
    )
);

#[derive(Serialize, ToSchema)]
struct EventsAccepted {
    accepted: usize,
}

/// User events (seed 004): one, or `{"events": [...]}` (up to 10,000)
///
/// Rules no schema states: each `timestamp` at most a day ahead of the server's clock.
#[utoipa::path(post, path = "/v1/user-events", tag = "events", request_body = UserEventsBody,
    responses((status = 202, description = "Accepted", body = EventsAccepted), BodyErrors, QueueDown))]
async fn post_user_events(State(app): App, Body(body): Body) -> Result<Response, ApiError> {
    let body = OneOrMany::<UserEvent>::parse::<UserEventBatch>(&body)?;
    if body.items.is_empty() {
        return Err(ApiError::invalid(
            "events",
            format!("1-{MAX_EVENTS_PER_CALL} events per call"),
        ));
    }
    let now = now_ms();
    let topic = app.topics.user_events();
    let mut records = Vec::with_capacity(body.items.len());
    for (i, event) in body.items.iter().enumerate() {
        let at = body.at(i);
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
        Json(EventsAccepted {
            accepted: records.len(),
        }),
    )
        .into_response())
}

/// Loyalty points of a customer id or e-mail address
#[utoipa::path(get, path = "/v1/customers/{id}/loyalty", tag = "events",
    params(("id" = String, Path, description = "Customer id or e-mail address")),
    responses((status = 200, description = "The account", body = LoyaltyAccount), NotFound))]
async fn get_loyalty(State(app): App, Path(raw_id): Path<String>) -> Result<Response, ApiError> {
    let member = or_not_found(MemberId::parse(&raw_id), "loyalty account")?;
    let account = or_not_found(app.stores.events.loyalty(&member).await?, "loyalty account")?;
    Ok(Json(account).into_response())
}

/// A user's aggregated events (seed 004)
#[utoipa::path(get, path = "/v1/customers/{id}/activity", tag = "events",
    params(("id" = String, Path, description = "The user's id")),
    responses((status = 200, description = "Aggregates", body = ActivitySummary), NotFound))]
async fn get_activity(State(app): App, Path(raw_id): Path<String>) -> Result<Response, ApiError> {
    let user = or_not_found(CustomerId::parse(&raw_id), "activity")?;
    let activity = or_not_found(app.stores.events.activity(&user).await?, "activity")?;
    Ok(Json(activity).into_response())
}
