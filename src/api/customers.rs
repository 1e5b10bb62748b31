//! Customers: the profiles campaigns reach.
//!
//! - `PUT /v1/customers/{id}`, `GET /v1/customers/{id}`
//! - `POST /v1/customers/batch`: up to 10,000 at once, every item checked before any is stored

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, App, Ingest};
use crate::auth::Caller;
use crate::http::{or_not_found, parse_json, Body};
use crate::model::is_known_time_zone;
use crate::model::{Channel, Customer, CustomerId};
use crate::schema::{from_json, BodyErrors, NotFound, MAX_ADDRESS_LEN, MAX_NAME_LEN};
use crate::store::ConsentChange;

const MAX_CUSTOMERS_PER_BATCH: usize = 10_000;

pub fn routes(limits: &crate::http::HttpLimits) -> OpenApiRouter<Arc<Ingest>> {
    let bulk = OpenApiRouter::new()
        .routes(routes!(put_customers))
        .layer(crate::http::body_limit(limits.bulk_body_limit_bytes));
    OpenApiRouter::new()
        .routes(routes!(put_customer, get_customer))
        .merge(bulk)
}

fn validate_customer(c: &Customer, prefix: &str) -> Result<(), ApiError> {
    let at = |f: &str| {
        if prefix.is_empty() {
            f.to_string()
        } else {
            format!("{prefix}.{f}")
        }
    };
    for (channel, address) in &c.contacts {
        if address.trim().is_empty() || address.len() > MAX_ADDRESS_LEN {
            return Err(ApiError::invalid(
                at(&format!("contacts.{channel}")),
                format!("contact must be 1-{MAX_ADDRESS_LEN} bytes"),
            ));
        }
    }
    if !is_known_time_zone(&c.time_zone) {
        return Err(ApiError::invalid(
            at("time_zone"),
            format!(
                "unknown time zone {:?}; use an IANA name such as Europe/Madrid",
                c.time_zone
            ),
        ));
    }
    if let Some((part, why)) = c.location.and_then(|loc| loc.invalid_part()) {
        return Err(ApiError::invalid(at(&format!("location.{part}")), why));
    }
    if c.name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
        return Err(ApiError::invalid(
            at("name"),
            format!("name is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    if !c.attributes_fit() {
        return Err(ApiError::invalid(
            at("attributes"),
            format!(
                "at most {} attributes, named in 1-{} bytes, of up to {} bytes each",
                Customer::MAX_ATTRIBUTES,
                Customer::MAX_ATTRIBUTE_NAME_LEN,
                Customer::MAX_ATTRIBUTE_LEN
            ),
        ));
    }
    Ok(())
}

fn customer_id(raw: &str) -> Result<CustomerId, ApiError> {
    CustomerId::parse(raw).ok_or_else(|| {
        ApiError::invalid(
            "id",
            "customer id must be 1-64 letters, digits, '-', '_' or '.'",
        )
    })
}

/// Store a customer
#[utoipa::path(put, path = "/v1/customers/{id}", tag = "customers", request_body = Customer,
    params(("id" = CustomerId, Path, description = "The customer's id")),
    responses((status = 200, description = "Stored", body = StoredCustomer), BodyErrors))]
async fn put_customer(
    State(app): App,
    Path(raw_id): Path<String>,
    caller: Option<Extension<Caller>>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let id = customer_id(&raw_id)?;
    let customer: Customer = parse_json(&body, "")?;
    validate_customer(&customer, "")?;
    let stored = [(id.clone(), customer.clone())];
    store_logging_consent(&app, &stored, &who(caller.as_ref())).await?;
    Ok(Json(StoredCustomer { id, customer }).into_response())
}

/// A customer with its id: what is stored, and an item of a batch.
#[derive(Serialize)]
pub(super) struct StoredCustomer {
    id: CustomerId,
    #[serde(flatten)]
    customer: Customer,
}

// `Customer`'s schema with the `id` among its properties (a flattened `allOf` could not
// say both "no other fields" and "an id too").
crate::schema::described!(StoredCustomer, {
    let mut schema =
        serde_json::to_value(<Customer as utoipa::PartialSchema>::schema()).unwrap_or_default();
    schema["properties"]["id"] = json!({"$ref": "#/components/schemas/CustomerId"});
    match schema["required"].as_array_mut() {
        Some(required) => required.push(json!("id")),
        None => schema["required"] = json!(["id"]),
    }
    from_json(schema)
});

/// A customer
#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers",
    params(("id" = CustomerId, Path, description = "The customer's id")),
    responses((status = 200, description = "The customer", body = StoredCustomer), NotFound))]
async fn get_customer(State(app): App, Path(raw_id): Path<String>) -> Result<Response, ApiError> {
    let id = or_not_found(CustomerId::parse(&raw_id), "customer")?;
    let customer = or_not_found(app.stores.customers.customer(&id).await?, "customer")?;
    Ok(Json(StoredCustomer { id, customer }).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CustomerBatch {
    #[serde(deserialize_with = "crate::http::at_most::<_, _, MAX_CUSTOMERS_PER_BATCH>")]
    #[schema(schema_with = batch_items_schema)]
    customers: Vec<Value>,
}

fn batch_items_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "type": "array",
        "maxItems": MAX_CUSTOMERS_PER_BATCH,
        "items": {"$ref": "#/components/schemas/StoredCustomer"},
    }))
}

#[derive(Serialize, ToSchema)]
struct CustomersStored {
    stored: usize,
}

/// Store up to 10,000 customers
///
/// `{"customers": [{"id": ..., ...profile}]}`: every item is checked before any is stored.
#[utoipa::path(post, path = "/v1/customers/batch", tag = "customers", request_body = CustomerBatch,
    responses((status = 200, description = "Stored", body = CustomersStored), BodyErrors))]
async fn put_customers(
    State(app): App,
    caller: Option<Extension<Caller>>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let batch: CustomerBatch = parse_json(&body, "")?;
    if batch.customers.len() > MAX_CUSTOMERS_PER_BATCH {
        return Err(ApiError::invalid(
            "customers",
            format!("at most {MAX_CUSTOMERS_PER_BATCH} customers per call"),
        ));
    }
    let mut parsed = Vec::with_capacity(batch.customers.len());
    for (i, mut raw) in batch.customers.into_iter().enumerate() {
        let at = format!("customers[{i}]");
        let id = raw
            .as_object_mut()
            .and_then(|o| o.remove("id"))
            .and_then(|v| v.as_str().and_then(CustomerId::parse))
            .ok_or_else(|| {
                ApiError::invalid(format!("{at}.id"), "a valid customer id is required")
            })?;
        let bytes =
            serde_json::to_vec(&raw).map_err(|e| ApiError::invalid(at.clone(), e.to_string()))?;
        let customer: Customer = parse_json(&bytes, &at)?;
        validate_customer(&customer, &at)?;
        parsed.push((id, customer));
    }
    store_logging_consent(&app, &parsed, &who(caller.as_ref())).await?;
    Ok(Json(CustomersStored {
        stored: parsed.len(),
    })
    .into_response())
}

/// Who made a change, for the consent log: the key's name.
pub(super) fn who(caller: Option<&Extension<Caller>>) -> String {
    caller.map_or("unknown".into(), |c| c.name.to_string())
}

/// Stores profiles, appending each change of a channel's consent to the customer's consent
/// log (read before, written after the profiles are stored).
async fn store_logging_consent(
    app: &Ingest,
    customers: &[(CustomerId, Customer)],
    actor: &str,
) -> Result<(), ApiError> {
    let ids: Vec<CustomerId> = customers.iter().map(|(id, _)| id.clone()).collect();
    let before = app.stores.customers.customers(&ids).await?;
    app.stores.customers.put_customers(customers).await?;
    let changes: Vec<(CustomerId, Vec<ConsentChange>)> = customers
        .iter()
        .zip(before)
        .map(|((id, new), old)| (id.clone(), consent_changes(old.as_ref(), new, actor)))
        .collect();
    app.stores.customers.log_consent(&changes).await?;
    Ok(())
}

/// The consent flags that differ between a stored profile and its new version.
fn consent_changes(old: Option<&Customer>, new: &Customer, actor: &str) -> Vec<ConsentChange> {
    Channel::ALL
        .iter()
        .filter_map(|channel| {
            let was = old.and_then(|o| o.consent.get(channel).copied());
            let now = new.consent.get(channel).copied();
            if was.unwrap_or(false) == now.unwrap_or(false) {
                return None;
            }
            // Only two values change: consent given, or not (never given, or withdrawn).
            let (old, new) = if now.unwrap_or(false) {
                ("not given", "given")
            } else {
                ("given", "withdrawn")
            };
            Some(ConsentChange::now(
                "api",
                actor,
                format!("consent:{channel}"),
                old,
                new,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_errors_name_the_field() {
        let bad_zone: Customer = serde_json::from_str(r#"{"time_zone":"Mars/Base"}"#).unwrap();
        assert_eq!(
            validate_customer(&bad_zone, "")
                .unwrap_err()
                .field
                .as_deref(),
            Some("time_zone")
        );
        let bad_lat: Customer = serde_json::from_str(r#"{"location":{"lat":91,"lon":0}}"#).unwrap();
        assert_eq!(
            validate_customer(&bad_lat, "customers[2]")
                .unwrap_err()
                .field
                .as_deref(),
            Some("customers[2].location.lat")
        );
        let unknown_channel = parse_json::<Customer>(br#"{"contacts":{"fax":"1"}}"#, "");
        assert!(unknown_channel
            .err()
            .and_then(|e| e.field)
            .is_some_and(|f| f.starts_with("contacts")));
        let empty: Customer = serde_json::from_str(r#"{"contacts":{"sms":" "}}"#).unwrap();
        assert_eq!(
            validate_customer(&empty, "").unwrap_err().field.as_deref(),
            Some("contacts.sms")
        );
    }
}
