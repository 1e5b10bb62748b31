//! Customers' preferences: per topic and channel, and promotions at all.
//!
//! - `GET/PUT /v1/customers/{id}/preferences` (customers:read / customers:write): the
//!   shop's systems read and set them.
//! - `GET /v1/customers/{id}/preferences/link` (customers:read): the signed link to the
//!   customer's own page, for the shop's account pages and messages.
//! - `GET/POST /v1/preferences/{token}`: that page, a plain form (no JavaScript) in the
//!   customer's language; the signed token is the credential, a forged one is 404.
//!
//! Every change is appended to the consent log, with its source (`api`, `preference-page`,
//! `one-click`) and actor.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, App, Ingest};
use crate::auth::Caller;
use crate::http::{or_not_found, parse_json, Body};
use crate::model::{Channel, Customer, CustomerId, Preferences, Topic, TopicCatalog};
use crate::schema::{BodyErrors, NotFound};
use crate::store::ConsentChange;

pub fn routes() -> OpenApiRouter<Arc<Ingest>> {
    OpenApiRouter::new()
        .routes(routes!(get_preferences, put_preferences))
        .routes(routes!(preferences_link))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(preference_page, save_preference_page))
                .layer(crate::http::body_limit(MAX_FORM_BYTES)),
        )
}

/// The page's form: a few dozen boxes.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// What a customer hears about: every configured topic, every channel.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferenceView {
    /// `false`: no promotion at all, whatever its topic (transactional messages still come).
    #[serde(default = "yes")]
    pub promotions: bool,
    /// Per topic, per channel: `false` where the customer does not want it. On `PUT`, a
    /// topic or channel left out is `true`.
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"offers": {"email": true, "sms": false}}))]
    pub topics: BTreeMap<String, BTreeMap<Channel, bool>>,
}

fn yes() -> bool {
    true
}

fn view(p: &Preferences, catalog: &TopicCatalog) -> PreferenceView {
    PreferenceView {
        promotions: p.promotions,
        topics: catalog
            .names()
            .map(|t| {
                let row = Channel::ALL
                    .iter()
                    .map(|c| (*c, !p.refuses(t, *c)))
                    .collect();
                (t.to_string(), row)
            })
            .collect(),
    }
}

/// The preferences a `PUT` body asks for; 422 naming `topics.NAME` for an unknown topic.
fn from_view(v: PreferenceView, catalog: &TopicCatalog) -> Result<Preferences, ApiError> {
    let mut p = Preferences {
        promotions: v.promotions,
        ..Preferences::everything()
    };
    for (name, channels) in v.topics {
        let topic = Topic::parse(&name)
            .filter(|t| catalog.contains(t))
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("topics.{name}"),
                    format!(
                        "unknown topic; the configured topics are: {}",
                        catalog.listed()
                    ),
                )
            })?;
        for (channel, allowed) in channels {
            p.set(&topic, channel, allowed);
        }
    }
    Ok(p)
}

async fn known_customer(app: &Ingest, raw_id: &str) -> Result<(CustomerId, Customer), ApiError> {
    let id = or_not_found(CustomerId::parse(raw_id), "customer")?;
    let customer = or_not_found(app.stores.customers.customer(&id).await?, "customer")?;
    Ok((id, customer))
}

/// Applies `change` and appends what moved to the consent log; answers the preferences
/// after, and whether anything moved.
pub(super) async fn change_logged(
    app: &Ingest,
    id: &CustomerId,
    source: &str,
    actor: &str,
    change: impl Fn(&mut Preferences),
) -> Result<(Preferences, bool), ApiError> {
    let (before, after) = app.stores.customers.update_preferences(id, change).await?;
    let changes: Vec<ConsentChange> = before
        .changes_to(&after, &app.catalog)
        .into_iter()
        .map(|(what, old, new)| ConsentChange::now(source, actor, what, old, new))
        .collect();
    let moved = before != after;
    if !changes.is_empty() {
        tracing::info!(target: "herald::audit", customer = %id, source, changes = changes.len(), "preferences changed");
        app.stores
            .customers
            .log_consent(&[(id.clone(), changes)])
            .await?;
    }
    Ok((after, moved))
}

/// A customer's preferences
#[utoipa::path(get, path = "/v1/customers/{id}/preferences", tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses((status = 200, description = "Per topic and channel", body = PreferenceView), NotFound))]
async fn get_preferences(
    State(app): App,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    let (id, _) = known_customer(&app, &raw_id).await?;
    let p = app.stores.customers.preferences(&id).await?;
    Ok(Json(view(&p, &app.catalog)).into_response())
}

/// Sets a customer's preferences
///
/// Replaces them: a topic or channel left out is wanted. Each change is appended to the
/// consent log (source `api`, actor the key's name). Applied by the next fan-out, fallback
/// and flash promo; transactional messages never read them.
#[utoipa::path(put, path = "/v1/customers/{id}/preferences", tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = PreferenceView,
    responses((status = 200, description = "Stored", body = PreferenceView), BodyErrors, NotFound))]
async fn put_preferences(
    State(app): App,
    Path(raw_id): Path<String>,
    caller: Option<Extension<Caller>>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let (id, _) = known_customer(&app, &raw_id).await?;
    let wanted = from_view(parse_json(&body, "")?, &app.catalog)?;
    let actor = super::customers::who(caller.as_ref());
    let (after, _) = change_logged(&app, &id, "api", &actor, |p| *p = wanted.clone()).await?;
    Ok(Json(view(&after, &app.catalog)).into_response())
}

#[derive(Serialize, ToSchema)]
struct PreferenceLink {
    /// The page's path, signed for this customer.
    path: String,
    /// The full link, when HERALD_PUBLIC_URL is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

/// The signed link to a customer's preference page
#[utoipa::path(get, path = "/v1/customers/{id}/preferences/link", tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses((status = 200, description = "The link", body = PreferenceLink), NotFound,
        (status = 503, description = "HERALD_UNSUBSCRIBE_SECRET is not set: no link can be signed")))]
async fn preferences_link(
    State(app): App,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    let (id, _) = known_customer(&app, &raw_id).await?;
    let tokens = app.access.unsubscribe.as_ref().ok_or_else(|| {
        ApiError::unavailable("HERALD_UNSUBSCRIBE_SECRET is not set: links cannot be signed")
    })?;
    let path = format!("/v1/preferences/{}", tokens.preferences_token(&id));
    let url = app
        .access
        .webhooks
        .public_url
        .as_ref()
        .map(|base| format!("{}{path}", base.trim_end_matches('/')));
    Ok(Json(PreferenceLink { path, url }).into_response())
}

fn forged() -> ApiError {
    ApiError::not_found("preference link")
}

async fn page_customer(app: &Ingest, token: &str) -> Result<(CustomerId, Customer), ApiError> {
    let tokens = app.access.unsubscribe.as_ref().ok_or_else(forged)?;
    let id = tokens.verify_preferences(token).ok_or_else(forged)?;
    let customer = app
        .stores
        .customers
        .customer(&id)
        .await?
        .ok_or_else(forged)?;
    Ok((id, customer))
}

/// A customer's preference page (a signed link; changes nothing)
#[utoipa::path(get, path = "/v1/preferences/{token}", tag = "customers",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), NotFound))]
async fn preference_page(State(app): App, Path(token): Path<String>) -> Result<Response, ApiError> {
    let (id, customer) = page_customer(&app, &token).await?;
    let p = app.stores.customers.preferences(&id).await?;
    render(&app.catalog, &customer, &p, &token, false)
}

/// Saves the preference page's form
///
/// Form-encoded, as the page's button posts it: `promotions=on` and `TOPIC.CHANNEL=on` for
/// each box ticked; a box not ticked is a no. Each change is appended to the consent log
/// (source `preference-page`, actor `link`).
#[utoipa::path(post, path = "/v1/preferences/{token}", tag = "customers",
    params(("token" = String, Path, description = "The signed token of the link")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Saved; the page again", content_type = "text/html", body = String), NotFound))]
async fn save_preference_page(
    State(app): App,
    Path(token): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let (id, customer) = page_customer(&app, &token).await?;
    let ticked: Vec<String> = form_urlencoded::parse(&body)
        .filter(|(_, v)| v == "on")
        .map(|(k, _)| k.into_owned())
        .take(1000)
        .collect();
    let shown = shown_channels(&customer);
    let catalog = &app.catalog;
    let (after, _) = change_logged(&app, &id, "preference-page", "link", |p| {
        p.promotions = ticked.iter().any(|k| k == "promotions");
        for topic in catalog.names() {
            for channel in &shown {
                let name = format!("{topic}.{channel}");
                p.set(topic, *channel, ticked.contains(&name));
            }
        }
    })
    .await?;
    render(catalog, &customer, &after, &token, true)
}

/// The channels the page offers: those the customer can be reached on (all, if none yet).
fn shown_channels(customer: &Customer) -> Vec<Channel> {
    let reachable: Vec<Channel> = customer.contacts.keys().copied().collect();
    if reachable.is_empty() {
        Channel::ALL.to_vec()
    } else {
        reachable
    }
}

const PAGE: &str = include_str!("pages/preferences.html");

fn words(spanish: bool) -> BTreeMap<&'static str, &'static str> {
    let pairs: [(&str, &str, &str); 10] = [
        (
            "title",
            "Your e-mail and message preferences",
            "Tus preferencias de mensajes",
        ),
        (
            "intro",
            "Choose what you hear about from us, and where.",
            "Elige de qué te hablamos y por dónde.",
        ),
        (
            "all",
            "Promotions at all (untick to receive none)",
            "Recibir promociones (desmarca para no recibir ninguna)",
        ),
        ("save", "Save", "Guardar"),
        (
            "saved",
            "Saved. Your choices apply to the next messages.",
            "Guardado. Tus preferencias se aplican a los próximos mensajes.",
        ),
        (
            "transactional",
            "Order and account messages always arrive.",
            "Los mensajes de pedidos y de tu cuenta llegan siempre.",
        ),
        ("email", "E-mail", "Correo"),
        ("sms", "SMS", "SMS"),
        ("whatsapp", "WhatsApp", "WhatsApp"),
        ("push", "Push", "Push"),
    ];
    pairs
        .into_iter()
        .map(|(k, en, es)| (k, if spanish { es } else { en }))
        .collect()
}

fn render(
    catalog: &TopicCatalog,
    customer: &Customer,
    p: &Preferences,
    token: &str,
    saved: bool,
) -> Result<Response, ApiError> {
    let language = customer.language.as_ref();
    let spanish = language.is_some_and(|l| l.as_str().split('-').next() == Some("es"));
    let channels = shown_channels(customer);
    let topics: Vec<minijinja::Value> = catalog
        .names()
        .map(|t| {
            let cells: Vec<minijinja::Value> = channels
                .iter()
                .map(|c| {
                    minijinja::context! {
                        name => format!("{t}.{c}"),
                        channel => c.as_str(),
                        on => !p.refuses(t, *c),
                    }
                })
                .collect();
            minijinja::context! { label => catalog.label(t, language), cells => cells }
        })
        .collect();
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    let html = env
        .template_from_named_str("preferences.html", PAGE)
        .and_then(|t| {
            t.render(minijinja::context! {
                lang => if spanish { "es" } else { "en" },
                t => words(spanish),
                saved,
                promotions => p.promotions,
                token,
                channels => channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                topics,
            })
        })
        .map_err(|e| ApiError::unavailable(format!("preference page: {e}")))?;
    Ok(Html(html).into_response())
}
