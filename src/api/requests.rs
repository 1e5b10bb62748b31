//! Seed 001's requests; the contract holds exactly: `POST /v1/requests` → 201 `{"id"}`,
//! `POST /v1/requests/{id}/process` → 202, `GET /v1/requests/{id}` → 200 `{"id","status"}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, App, Ingest};
use crate::http::{or_not_found, Body};
use crate::model::{Channel, Message, RequestId, RequestStatus};
use crate::publish::{publish_request, RECONCILE_AFTER};
use crate::schema::{BodyErrors, NotFound, QueueDown};
use crate::store::Publication;

pub fn routes() -> OpenApiRouter<Arc<Ingest>> {
    OpenApiRouter::new()
        .routes(routes!(create_request))
        .routes(routes!(process_request))
        .routes(routes!(get_request))
}

/// Parses the body by hand so that every error names the field it is about
/// (axum's `Json` extractor reports serde's text instead).
fn parse_message(body: &[u8]) -> Result<Message, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("body is not valid JSON: {e}"),
        field: None,
    })?;
    let obj = value.as_object().ok_or(ApiError {
        status: StatusCode::BAD_REQUEST,
        message: "body must be a JSON object".into(),
        field: None,
    })?;
    let text = |field: &'static str, max: usize| -> Result<String, ApiError> {
        match obj.get(field) {
            None | Some(Value::Null) => {
                Err(ApiError::invalid(field, format!("{field} is required")))
            }
            Some(Value::String(s)) if s.trim().is_empty() => Err(ApiError::invalid(
                field,
                format!("{field} must not be empty"),
            )),
            Some(Value::String(s)) if s.len() > max => Err(ApiError::invalid(
                field,
                format!("{field} is longer than {max} bytes"),
            )),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::invalid(
                field,
                format!("{field} must be a string"),
            )),
        }
    };
    let to = text("to", Message::MAX_TO_LEN)?;
    let message = text("message", Message::MAX_MESSAGE_LEN)?;
    let kind = text("type", 16)?;
    let channel = kind
        .parse::<Channel>()
        .ok()
        .filter(|c| Channel::REQUEST_TYPES.contains(c))
        .ok_or_else(|| {
            ApiError::invalid(
                "type",
                format!("type must be one of email, sms, push (got {kind:?})"),
            )
        })?;
    Ok(Message {
        to,
        message,
        channel,
    })
}

/// The id of a request.
#[derive(Serialize, ToSchema)]
struct RequestRef {
    id: RequestId,
}

/// A request and where it stands.
#[derive(Serialize, ToSchema)]
struct RequestState {
    id: RequestId,
    status: RequestStatus,
}

/// Create a notification request (seed 001)
#[utoipa::path(post, path = "/v1/requests", tag = "requests", request_body = Message,
    responses((status = 201, description = "Created", body = RequestRef), BodyErrors))]
async fn create_request(State(app): App, Body(body): Body) -> Result<Response, ApiError> {
    let msg = parse_message(&body)?;
    let id = RequestId::generate();
    app.stores.requests.create_request(&id, &msg).await?;
    tracing::debug!(id = %id, channel = %msg.channel, "request created");
    Ok((StatusCode::CREATED, Json(RequestRef { id })).into_response())
}

/// Queue a request for sending (idempotent)
#[utoipa::path(post, path = "/v1/requests/{id}/process", tag = "requests",
    params(("id" = String, Path, description = "The request's id")),
    responses((status = 202, description = "Queued", body = RequestRef), NotFound, QueueDown))]
#[tracing::instrument(name = "ingest.process", skip_all, fields(id = %raw_id))]
async fn process_request(
    State(app): App,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = or_not_found(RequestId::parse(&raw_id), "request")?;
    match app
        .stores
        .requests
        .mark_published(&id, RECONCILE_AFTER)
        .await?
    {
        Publication::Missing => return Err(ApiError::not_found("request")),
        Publication::AlreadyPublished => {}
        Publication::MustPublish(message) => {
            let channel = message.channel;
            if let Err(e) = publish_request(&app.producer, &app.topics, &id, message).await {
                tracing::error!(id = %id, error = %e, "publish failed");
                app.stores.requests.unmark_published(&id).await?;
                return Err(ApiError::unavailable("queue unavailable, try again"));
            }
            app.stores.requests.confirm_published(&id).await?;
            tracing::debug!(id = %id, %channel, "request queued");
        }
    }
    Ok((StatusCode::ACCEPTED, Json(RequestRef { id })).into_response())
}

/// A request's status
#[utoipa::path(get, path = "/v1/requests/{id}", tag = "requests",
    params(("id" = String, Path, description = "The request's id")),
    responses((status = 200, description = "Where it stands", body = RequestState), NotFound))]
async fn get_request(State(app): App, Path(raw_id): Path<String>) -> Result<Response, ApiError> {
    let id = or_not_found(RequestId::parse(&raw_id), "request")?;
    let status = or_not_found(app.stores.requests.request_status(&id).await?, "request")?;
    Ok(Json(RequestState { id, status }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> (StatusCode, Option<String>) {
        match parse_message(body.as_bytes()) {
            Ok(_) => (StatusCode::OK, None),
            Err(e) => (e.status, e.field),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (
                r#"{"to":"a","message":"m","type":"email"}"#,
                StatusCode::OK,
                None,
            ),
            (
                r#"{"to":"a","message":"m","type":"push"}"#,
                StatusCode::OK,
                None,
            ),
            (r#"{"to":"a","message":"m""#, StatusCode::BAD_REQUEST, None),
            (r#"[1,2]"#, StatusCode::BAD_REQUEST, None),
            (
                r#"{"message":"m","type":"email"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("to"),
            ),
            (
                r#"{"to":"a","type":"email"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("message"),
            ),
            (
                r#"{"to":"a","message":"m"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("type"),
            ),
            (
                r#"{"to":"a","message":"m","type":"fax"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("type"),
            ),
            (
                r#"{"to":"a","message":"m","type":"whatsapp"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("type"),
            ),
            (
                r#"{"to":5,"message":"m","type":"sms"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("to"),
            ),
            (
                r#"{"to":"  ","message":"m","type":"sms"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("to"),
            ),
        ];
        for (body, status, field) in cases {
            assert_eq!(field_of(body), (status, field.map(String::from)), "{body}");
        }
    }
}
