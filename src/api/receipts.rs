//! Delivery receipts: `POST /v1/receipts`, what a provider calls back with, one receipt or
//! `{"receipts": [...]}`, signed (see [`crate::auth::signature`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, App, Ingest};
use crate::http::{Body, OneOrMany};
use crate::model::{now_ms, Receipt};
use crate::schema::{from_json, BodyErrors};

const MAX_RECEIPTS_PER_CALL: usize = 10_000;

pub fn routes(limits: &crate::http::HttpLimits) -> OpenApiRouter<Arc<Ingest>> {
    OpenApiRouter::new()
        .routes(routes!(receipts))
        .layer(crate::http::body_limit(limits.bulk_body_limit_bytes))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ManyReceipts {
    #[serde(deserialize_with = "crate::http::at_most::<_, _, MAX_RECEIPTS_PER_CALL>")]
    #[schema(schema_with = receipts_schema)]
    receipts: Vec<Receipt>,
}

impl crate::http::Batch for ManyReceipts {
    type Item = Receipt;
    const LIST: &'static str = "receipts";
    fn into_items(self) -> Vec<Receipt> {
        self.receipts
    }
}

pub(super) fn many_receipts_schema() -> Vec<super::docs::Component> {
    super::docs::entry::<ManyReceipts>()
}

fn receipts_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "type": "array", "maxItems": MAX_RECEIPTS_PER_CALL,
        "items": {"$ref": "#/components/schemas/Receipt"},
    }))
}

/// The body of `POST /v1/receipts`: one receipt, or many.
struct ReceiptsBody;

crate::schema::described!(
    ReceiptsBody,
    utoipa::openapi::schema::Schema::OneOf(
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(utoipa::openapi::Ref::from_schema_name("Receipt"))
            .item(utoipa::openapi::Ref::from_schema_name("ManyReceipts"))
            .build()
    )
);

#[derive(Serialize, ToSchema)]
struct ReceiptsApplied {
    received: usize,
    /// Receipts by what they did (`delivered`, `late`, `unknown`...).
    #[schema(value_type = BTreeMap<String, u64>)]
    outcomes: BTreeMap<&'static str, u64>,
}

/// Delivery receipts from a provider: one, or `{"receipts": [...]}`
///
/// Applies provider receipts. Keys that are not Herald delivery keys are counted `unknown`;
/// a receipt for a delivery that already moved on is `late` and changes nothing.
#[utoipa::path(post, path = "/v1/receipts", tag = "campaigns", request_body = ReceiptsBody,
    responses((status = 200, description = "Applied", body = ReceiptsApplied), BodyErrors))]
#[tracing::instrument(name = "ingest.receipts", skip_all)]
async fn receipts(
    State(app): App,
    headers: axum::http::HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    verify_signature(&app, &headers, &body)?;
    let body = OneOrMany::<Receipt>::parse::<ManyReceipts>(&body)?;
    if let Some((i, field)) = body
        .items
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.oversized_field().map(|field| (i, field)))
    {
        return Err(ApiError::invalid(
            format!("{}{field}", body.at(i)),
            format!(
                "longer than this field takes (key {}, reason {}, provider_id {} bytes)",
                Receipt::MAX_KEY_LEN,
                Receipt::MAX_REASON_LEN,
                Receipt::MAX_PROVIDER_ID_LEN
            ),
        ));
    }
    let tally = crate::campaigns::receipts::apply(
        &app.stores.slots,
        &app.events_producer,
        &app.topics,
        &body.items,
    )
    .await?;
    Ok(Json(ReceiptsApplied {
        received: body.items.len(),
        outcomes: tally,
    })
    .into_response())
}

/// Refuses a receipt call that no configured provider signed, recently (see
/// [`crate::auth::signature`]); with no secrets (`--insecure-dev`) every call passes.
fn verify_signature(
    app: &Ingest,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let Some(secrets) = app.access.receipts.as_ref() else {
        return Ok(());
    };
    let header = headers
        .get(crate::auth::signature::HEADER)
        .and_then(|h| h.to_str().ok());
    secrets
        .verify(header, body, now_ms() / 1000)
        .map(|_provider| ())
        .map_err(|e| {
            tracing::warn!(error = %e, "receipt call refused");
            ApiError::unauthorized(e.to_string())
        })
}
