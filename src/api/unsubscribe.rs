//! Leaving promotions, and addresses that bounce.
//!
//! - `GET /v1/unsubscribe/{token}`: a small page asking to confirm (a GET changes nothing:
//!   mail scanners follow links).
//! - `POST /v1/unsubscribe/{token}`: RFC 8058 one-click unsubscribe, as mailbox providers send
//!   it (`List-Unsubscribe=One-Click`, form-encoded) and as the page's button does. Withdraws
//!   the campaign's topic on every channel at once (the customer's other topics are kept;
//!   the preference page offers "all promotions"), or, for a campaign no longer stored,
//!   promotional e-mail; idempotent; no login: the signed token is the credential, and a
//!   forged one is 404.
//! - `POST /v1/bounces`: a bounce reported later by the provider's webhook or an operator;
//!   a hard bounce suppresses the address as an SMTP 5xx does.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, App, Ingest};
use crate::http::parse_json;
use crate::http::Body;
use crate::kafka;
use crate::model::{CampaignId, Channel, CustomerId, LifecycleEvent, LifecycleKind, Topic};
use crate::schema::{from_json, BodyErrors, NotFound, MAX_ADDRESS_LEN};
use crate::store::ConsentChange;

const MAX_REASON_LEN: usize = 500;

pub fn routes() -> OpenApiRouter<Arc<Ingest>> {
    OpenApiRouter::new()
        .routes(routes!(confirm_page, unsubscribe))
        .routes(routes!(bounce))
}

fn forged() -> ApiError {
    ApiError::not_found("unsubscribe link")
}

/// The page a promotional e-mail's unsubscribe link opens (changes nothing)
#[utoipa::path(get, path = "/v1/unsubscribe/{token}", tag = "e-mail",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses((status = 200, description = "A confirmation page", content_type = "text/html", body = String), NotFound))]
async fn confirm_page(State(app): App, Path(token): Path<String>) -> Result<Response, ApiError> {
    let tokens = app.access.unsubscribe.as_ref().ok_or_else(forged)?;
    let (campaign, customer) = tokens.verify(&token).ok_or_else(forged)?;
    let what = match app.stores.campaigns.campaign(&campaign).await? {
        Some(c) => format!(
            "messages about \u{201c}{}\u{201d}",
            html_text(&app.catalog.label(&c.topic, None))
        ),
        None => "promotional e-mails".to_string(),
    };
    // Both tokens are hex and '-' only, so they are safe inside the page.
    let page = tokens.preferences_token(&customer);
    Ok(Html(format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Unsubscribe</title>\
         <body style=\"font-family:sans-serif;max-width:30em;margin:3em auto\">\
         <h1>Unsubscribe</h1><p>Stop receiving {what} from us? \
         Order and account messages will still arrive.</p>\
         <form method=\"post\" action=\"/v1/unsubscribe/{token}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form>\
         <p><a href=\"/v1/preferences/{page}\">Choose what you receive, or stop all promotions</a></p>\
         </body></html>"
    ))
    .into_response())
}

/// The campaign's topic, withdrawn on every channel; `true` if that changed anything.
async fn withdraw_topic(
    app: &Ingest,
    campaign: &CampaignId,
    customer: &CustomerId,
    topic: &Topic,
) -> Result<bool, ApiError> {
    let (_, first) = super::preferences::change_logged(app, customer, "one-click", "link", |p| {
        p.withdraw(topic)
    })
    .await?;
    if first {
        tracing::info!(target: "herald::audit", %campaign, %customer, %topic, "topic withdrawn by one-click");
        app.stores.customers.count_unsubscribe(campaign).await?;
    }
    Ok(first)
}

/// A link of a campaign no longer stored: promotional e-mail, as before topics existed.
async fn unsubscribe_email(
    app: &Ingest,
    campaign: &CampaignId,
    customer: &CustomerId,
) -> Result<bool, ApiError> {
    let first = app
        .stores
        .customers
        .unsubscribe(customer, Channel::Email, Some(campaign))
        .await?;
    if first {
        tracing::info!(target: "herald::audit", %campaign, %customer, "unsubscribed from promotional e-mail");
        let change = ConsentChange::now(
            "one-click",
            "link",
            "promotions:email".into(),
            "subscribed",
            &format!("unsubscribed (from campaign {campaign})"),
        );
        app.stores
            .customers
            .log_consent(&[(customer.clone(), vec![change])])
            .await?;
    }
    Ok(first)
}

fn html_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The form mailbox providers post (RFC 8058).
#[derive(ToSchema)]
#[allow(dead_code)]
struct OneClick {
    #[schema(rename = "List-Unsubscribe", schema_with = one_click_schema)]
    list_unsubscribe: String,
}

fn one_click_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({"type": "string", "enum": ["One-Click"]}))
}

/// One-click unsubscribe (RFC 8058)
///
/// Withdraws consent to promotional e-mail; idempotent; the signed token is the credential.
#[utoipa::path(post, path = "/v1/unsubscribe/{token}", tag = "e-mail",
    params(("token" = String, Path, description = "The signed token of the link")),
    request_body(content = OneClick, content_type = "application/x-www-form-urlencoded", description = "Optional"),
    responses((status = 200, description = "Unsubscribed", content_type = "text/html", body = String), NotFound))]
async fn unsubscribe(State(app): App, Path(token): Path<String>) -> Result<Response, ApiError> {
    let tokens = app.access.unsubscribe.as_ref().ok_or_else(forged)?;
    let (campaign, customer) = tokens.verify(&token).ok_or_else(forged)?;
    let first = match app.stores.campaigns.campaign(&campaign).await? {
        Some(c) => withdraw_topic(&app, &campaign, &customer, &c.topic).await?,
        None => unsubscribe_email(&app, &campaign, &customer).await?,
    };
    if first {
        let event = LifecycleEvent::for_delivery(
            LifecycleKind::Unsubscribed,
            &campaign,
            &customer,
            Channel::Email,
            None,
        );
        kafka::emit_event(&app.events_producer, &app.topics.events(), &event).await;
    }
    Ok(Html(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Unsubscribed</title>\
         <body style=\"font-family:sans-serif;max-width:30em;margin:3em auto\">\
         <h1>You are unsubscribed</h1><p>You will not receive these messages from us \
         any more. Order and account messages will still arrive.</p></body></html>",
    )
    .into_response())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum BounceKind {
    /// The address does not exist or refuses for good: suppressed.
    Hard,
    /// Mailbox full, temporarily unavailable: recorded, not suppressed.
    Soft,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewBounce {
    #[schema(schema_with = crate::schema::address)]
    address: String,
    kind: BounceKind,
    #[serde(default)]
    #[schema(schema_with = reason_schema)]
    reason: Option<String>,
    #[serde(default = "email")]
    channel: Channel,
}

fn reason_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({"type": ["string", "null"], "maxLength": MAX_REASON_LEN}))
}

#[derive(Serialize, ToSchema)]
struct BounceRecorded {
    address: String,
    channel: Channel,
    /// Whether promotions to the address stop (a hard bounce).
    suppressed: bool,
}

fn email() -> Channel {
    Channel::Email
}

/// A bounce reported later (the provider's webhook, an operator)
///
/// A hard bounce suppresses the address for promotions.
#[utoipa::path(post, path = "/v1/bounces", tag = "e-mail", request_body = NewBounce,
    responses((status = 200, description = "Recorded", body = BounceRecorded), BodyErrors))]
async fn bounce(
    State(app): App,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let b: NewBounce = parse_json(&body, "")?;
    let address = b.address.trim();
    if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
        return Err(ApiError::invalid(
            "address",
            format!("address must be 1-{MAX_ADDRESS_LEN} bytes"),
        ));
    }
    let reason = b.reason.unwrap_or_else(|| "bounce reported".into());
    if reason.len() > MAX_REASON_LEN {
        return Err(ApiError::invalid(
            "reason",
            format!("reason must be at most {MAX_REASON_LEN} bytes"),
        ));
    }
    let suppressed = match b.kind {
        BounceKind::Hard => {
            let why = format!("hard bounce: {reason}");
            if app
                .stores
                .customers
                .mark_undeliverable(b.channel, address, &why)
                .await?
            {
                let actor = caller.map_or("unknown".into(), |c| c.name.to_string());
                let change = ConsentChange::now(
                    "bounce",
                    &actor,
                    format!("address:{}", b.channel),
                    "deliverable",
                    &format!("undeliverable ({why})"),
                );
                app.stores
                    .customers
                    .log_address_consent(b.channel, address, change)
                    .await?;
            }
            true
        }
        BounceKind::Soft => false,
    };
    tracing::info!(target: "herald::audit", channel = %b.channel, kind = ?b.kind, suppressed, "bounce reported");
    let recorded = BounceRecorded {
        address: address.to_string(),
        channel: b.channel,
        suppressed,
    };
    Ok((StatusCode::OK, Json(recorded)).into_response())
}
