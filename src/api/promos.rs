//! Seed 002's flash-promo API, on its own paths (trailing slashes included):
//!
//! - `POST /api/flash-promos/` (admin) → 201 the promo; the same id again → 200 the stored one.
//! - `GET /api/flash-promos/active/` → promos whose window is open, with their stock.
//! - `GET /api/flash-promos/{id}/` → one promo, with stock and its notifications' figures.
//! - `POST /api/flash-promos/{id}/reserve/` (the caller, for themself) → 201 a unit held for
//!   the reservation time (60 s); again while held → 200 the same hold.
//! - `POST /api/flash-promos/{id}/purchase/` (the caller) → 201 bought with a live hold;
//!   again → 200 the same purchase. The purchase's sale event goes out through the promo's
//!   outbox (see [`crate::promos::outbox`]).
//! - `GET /api/users/segments/` → the caller's segments and the active promos that suit them
//!   (an admin may ask for `?user_id=`).
//!
//! Every call but the active list needs `Authorization: Bearer <JWT>` (checked by [`super::access`];
//! a service key with `promos:write` acts as an admin); reserve and purchase
//! are rate-limited per caller (429 with `Retry-After`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::rfc3339;
use super::{ApiError, App, Ingest};
use crate::auth::{CallerLimit, Claims, Jwt, Role};
use crate::http::parse_json;
use crate::http::{or_not_found, Body, Refusal};
use crate::model::commerce::{SaleEvent, SALE_COMPLETED};
use crate::model::{now_ms, Channel, CustomerId, PromoId, SaleId};
use crate::promos::{segment, FlashPromo, NewPromo, Product, SegmentCriteria, Shop, Window};
use crate::schema::{BodyErrors, BuyingErrors, NoJwtSecret, NotFound};
use crate::store::{PromoRecord, Purchase, Reservation};

/// How the flash-promo API authenticates, limits and holds.
pub struct PromoSettings {
    /// Shoppers' tokens (role `user`); `None`: no secret configured, so every authenticated
    /// route answers 503.
    pub jwt: Option<Jwt>,
    /// Admins' tokens (role `admin`), signed with a secret of their own: whoever can mint
    /// shoppers' tokens (a storefront's login) cannot mint admins'. `None`: admins use a
    /// service key with `promos:write`.
    pub admin_jwt: Option<Jwt>,
    pub limit: CallerLimit,
    /// How long a reservation holds a unit (seed 002: one minute).
    pub hold: Duration,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Promos read before: a promo never changes once created (its stock lives apart), so
    /// reserve and purchase need not read it from Redis each time.
    pub known: std::sync::Mutex<std::collections::HashMap<PromoId, Arc<FlashPromo>>>,
}

impl Default for PromoSettings {
    fn default() -> Self {
        PromoSettings {
            jwt: None,
            admin_jwt: None,
            limit: CallerLimit::new(5, 10),
            hold: Duration::from_secs(60),
            cors_origins: Vec::new(),
            known: Default::default(),
        }
    }
}

pub fn routes(settings: &PromoSettings) -> OpenApiRouter<Arc<Ingest>> {
    let router = OpenApiRouter::new()
        .routes(routes!(create_promo))
        .routes(routes!(active_promos))
        .routes(routes!(get_promo))
        .routes(routes!(reserve))
        .routes(routes!(purchase))
        .routes(routes!(user_segments));
    match cors(&settings.cors_origins) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        field: None,
    }
}

/// The caller as a buyer: their own customer id, within their rate limit.
fn buyer(app: &Ingest, claims: &Claims) -> Result<CustomerId, Refusal> {
    let user = CustomerId::parse(&claims.sub).ok_or_else(|| {
        Refusal::Api(error(
            StatusCode::FORBIDDEN,
            "the token's subject is not a customer id",
        ))
    })?;
    if let Err(wait) = app.promos.limit.check(user.as_str()) {
        return Err(Refusal::too_many("too many requests from this user", wait));
    }
    Ok(user)
}

/// A promo with its stock and the figures of its notifications.
#[derive(Serialize, ToSchema)]
struct PromoView {
    id: PromoId,
    store: Shop,
    product: Product,
    #[schema(schema_with = crate::schema::money)]
    price: Decimal,
    #[schema(schema_with = crate::schema::optional_money)]
    original_price: Option<Decimal>,
    units: u32,
    #[schema(schema_with = crate::schema::timestamp)]
    starts_at: String,
    #[schema(schema_with = crate::schema::timestamp)]
    ends_at: String,
    status: Window,
    segment: SegmentCriteria,
    stock: Stock,
    notifications: PromoNotifications,
}

#[derive(Serialize, ToSchema)]
struct Stock {
    available: u64,
    held: u64,
    sold: u64,
}

/// Filled in when the window opens and the promo's campaign is made.
#[derive(Serialize, ToSchema)]
struct PromoNotifications {
    #[schema(schema_with = crate::schema::optional_timestamp)]
    activated_at: Option<String>,
    campaign: Option<String>,
    /// Customers near the store.
    near: Option<u64>,
    /// Of those, the ones the segment admits.
    segment: Option<u64>,
    /// Left out by the daily cap.
    capped: Option<u64>,
    notified: Option<u64>,
}

fn promo_view(p: &FlashPromo, rec: &PromoRecord, now: u64) -> PromoView {
    let a = &rec.activation;
    let figure = |k: &str| a.get(k).and_then(|v| v.parse::<u64>().ok());
    PromoView {
        id: p.id.clone(),
        store: p.store.clone(),
        product: p.product.clone(),
        price: p.price,
        original_price: p.original_price,
        units: p.units,
        starts_at: rfc3339(p.starts_ms),
        ends_at: rfc3339(p.ends_ms),
        status: p.window(now),
        segment: p.segment.clone(),
        stock: Stock {
            available: rec.stock.max(0) as u64,
            held: rec.holds,
            sold: rec.sold.max(0) as u64,
        },
        notifications: PromoNotifications {
            activated_at: figure("activated_ms").map(rfc3339),
            campaign: a.get("campaign").cloned(),
            near: figure("near"),
            segment: figure("segment"),
            capped: figure("capped"),
            notified: figure("audience"),
        },
    }
}

async fn load(app: &Ingest, raw_id: &str) -> Result<(FlashPromo, PromoRecord), ApiError> {
    let id = or_not_found(PromoId::parse(raw_id), "flash promo")?;
    let rec = or_not_found(app.stores.promos.promo(&id).await?, "flash promo")?;
    let promo = serde_json::from_str(&rec.json)
        .map_err(|e| ApiError::unavailable(format!("unreadable promo {id}: {e}")))?;
    Ok((promo, rec))
}

/// A promo's definition, from memory once read.
async fn definition(app: &Ingest, raw_id: &str) -> Result<Arc<FlashPromo>, ApiError> {
    let id = or_not_found(PromoId::parse(raw_id), "flash promo")?;
    let cached = app
        .promos
        .known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .cloned();
    if let Some(promo) = cached {
        return Ok(promo);
    }
    let promo = Arc::new(load(app, raw_id).await?.0);
    let mut known = app.promos.known.lock().unwrap_or_else(|e| e.into_inner());
    if known.len() >= 10_000 {
        known.clear();
    }
    known.insert(id, promo.clone());
    Ok(promo)
}

/// Refuses what the window no longer (or not yet) allows.
/// What reserve and purchase answer: a response, or why the call is refused.
type Refusable = Result<Response, Refusal>;

/// The buyer, the promo and now, for a reserve or a purchase: refused unless the caller is a
/// user and the promo's window is open.
async fn buying(
    app: &Ingest,
    claims: &Claims,
    raw_id: &str,
) -> Result<(CustomerId, Arc<FlashPromo>, u64), Refusal> {
    let user = buyer(app, claims)?;
    let promo = definition(app, raw_id).await?;
    let now = now_ms();
    open_window(&promo, now)?;
    Ok((user, promo, now))
}

fn open_window(p: &FlashPromo, now: u64) -> Result<(), ApiError> {
    match p.window(now) {
        Window::Active => Ok(()),
        Window::Scheduled => Err(error(
            StatusCode::CONFLICT,
            format!("flash promo {} opens at {}", p.id, rfc3339(p.starts_ms)),
        )),
        Window::Ended => Err(error(
            StatusCode::GONE,
            format!("flash promo {} ended at {}", p.id, rfc3339(p.ends_ms)),
        )),
    }
}

/// Create a flash promo (admin)
///
/// Rules no schema states: the promo ends in the future, after it starts.
#[utoipa::path(post, path = "/api/flash-promos/", tag = "flash promos", request_body = NewPromo,
    responses(
        (status = 201, description = "Created", body = PromoView),
        (status = 200, description = "This id exists: the stored promo", body = PromoView),
        BodyErrors, NoJwtSecret))]
async fn create_promo(
    State(app): App,
    Extension(claims): Extension<Claims>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    if claims.role != Role::Admin {
        return Err(error(
            StatusCode::FORBIDDEN,
            "only an admin creates flash promos",
        ));
    }
    let new: NewPromo = parse_json(&body, "")?;
    let now = now_ms();
    let mut promo = new
        .validate(now)
        .map_err(|e| ApiError::invalid(e.field, e.reason))?;
    promo.topic = Some(super::checked_topic(
        &app.catalog,
        promo.topic.take(),
        &app.catalog.flash_promos,
    )?);
    let stored = serde_json::to_string(&promo).map_err(|e| ApiError::unavailable(e.to_string()))?;
    let existing = app
        .stores
        .promos
        .create_promo(
            &promo.id,
            &stored,
            promo.units,
            promo.starts_ms,
            promo.ends_ms,
        )
        .await?;
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        tracing::info!(promo = %promo.id, units = promo.units, starts_ms = promo.starts_ms, "flash promo created");
        StatusCode::CREATED
    };
    let (promo, rec) = load(&app, promo.id.as_str()).await?;
    Ok((status, Json(promo_view(&promo, &rec, now))).into_response())
}

#[derive(Serialize, ToSchema)]
struct ActivePromos {
    count: usize,
    promos: Vec<PromoView>,
}

/// Promos whose window is open
#[utoipa::path(get, path = "/api/flash-promos/active/", tag = "flash promos",
    responses((status = 200, description = "Active promos", body = ActivePromos)))]
async fn active_promos(State(app): App) -> Result<Response, ApiError> {
    let now = now_ms();
    let mut active = Vec::new();
    for id in app.stores.promos.current_promo_ids(now).await? {
        if let Ok((promo, rec)) = load(&app, id.as_str()).await {
            if promo.window(now) == Window::Active {
                active.push(promo_view(&promo, &rec, now));
            }
        }
    }
    Ok(Json(ActivePromos {
        count: active.len(),
        promos: active,
    })
    .into_response())
}

/// One promo with its stock and notification figures
#[utoipa::path(get, path = "/api/flash-promos/{id}/", tag = "flash promos",
    params(("id" = String, Path, description = "The promo's id")),
    responses((status = 200, description = "The promo", body = PromoView), NotFound, NoJwtSecret))]
async fn get_promo(State(app): App, Path(raw_id): Path<String>) -> Result<Response, ApiError> {
    let (promo, rec) = load(&app, &raw_id).await?;
    Ok(Json(promo_view(&promo, &rec, now_ms())).into_response())
}

/// A unit held for its buyer.
#[derive(Serialize, ToSchema)]
struct Hold {
    promo_id: PromoId,
    user_id: CustomerId,
    /// `reserved`
    status: &'static str,
    #[schema(schema_with = crate::schema::timestamp)]
    expires_at: String,
    expires_in_ms: u64,
    units_left: u64,
}

/// Hold one unit for the caller (60 s)
#[utoipa::path(post, path = "/api/flash-promos/{id}/reserve/", tag = "flash promos",
    params(("id" = String, Path, description = "The promo's id")),
    responses(
        (status = 201, description = "Held", body = Hold),
        (status = 200, description = "Already held by the caller: the same hold", body = Hold),
        BuyingErrors))]
async fn reserve(
    State(app): App,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
) -> Refusable {
    let (user, promo, _opened_at) = buying(&app, &claims, &id).await?;
    let user = &user;
    let held = |status: StatusCode, until_ms: u64, expires_in_ms: u64, left: u64| {
        let hold = Hold {
            promo_id: promo.id.clone(),
            user_id: user.clone(),
            status: "reserved",
            expires_at: rfc3339(until_ms),
            expires_in_ms,
            units_left: left,
        };
        (status, Json(hold)).into_response()
    };
    match app
        .stores
        .promos
        .reserve_unit(&promo.id, user, app.promos.hold)
        .await?
    {
        Reservation::Reserved {
            until_ms,
            expires_in_ms,
            units_left,
        } => Ok(held(
            StatusCode::CREATED,
            until_ms,
            expires_in_ms,
            units_left,
        )),
        Reservation::AlreadyHeld {
            until_ms,
            expires_in_ms,
            units_left,
        } => Ok(held(StatusCode::OK, until_ms, expires_in_ms, units_left)),
        Reservation::SoldOut => Err(error(StatusCode::CONFLICT, "sold out").into()),
        Reservation::AlreadyBought => {
            Err(error(StatusCode::CONFLICT, "already purchased by this user").into())
        }
        Reservation::Missing => Err(ApiError::not_found("flash promo").into()),
    }
}

/// A unit bought.
#[derive(Serialize, ToSchema)]
struct Bought {
    promo_id: PromoId,
    user_id: CustomerId,
    /// `purchased`
    status: &'static str,
    #[schema(schema_with = crate::schema::money)]
    price: Decimal,
    /// The sale its confirmation e-mail and loyalty points come from.
    sale_id: Option<SaleId>,
}

/// Buy the unit the caller holds
#[utoipa::path(post, path = "/api/flash-promos/{id}/purchase/", tag = "flash promos",
    params(("id" = String, Path, description = "The promo's id")),
    responses(
        (status = 201, description = "Bought", body = Bought),
        (status = 200, description = "Bought before: the same purchase", body = Bought),
        BuyingErrors))]
async fn purchase(
    State(app): App,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
) -> Refusable {
    let (user, promo, now) = buying(&app, &claims, &id).await?;
    let user = &user;
    let sale = sale_id(&promo.id, user);
    let event = sale_event(&app, &promo, user, sale.as_ref(), now).await?;
    let status = match app
        .stores
        .promos
        .purchase_unit(&promo.id, user, event.as_deref())
        .await?
    {
        Purchase::Purchased => StatusCode::CREATED,
        Purchase::AlreadyPurchased => StatusCode::OK,
        Purchase::NoHold => {
            return Err(error(
                StatusCode::CONFLICT,
                "no live reservation by this user: reserve first (a hold lasts one minute)",
            )
            .into())
        }
    };
    let bought = Bought {
        promo_id: promo.id.clone(),
        user_id: user.clone(),
        status: "purchased",
        price: promo.price,
        sale_id: sale,
    };
    Ok((status, Json(bought)).into_response())
}

/// The sale a promo purchase is, one per (promo, user).
fn sale_id(promo: &PromoId, user: &CustomerId) -> Option<SaleId> {
    SaleId::parse(&format!("fp-{promo}-{user}"))
}

/// The purchase as seed 003's `sale_completed`, so that the buyer gets the confirmation
/// e-mail and loyalty points like any sale. The purchase script queues it in the promo's
/// outbox with the purchase itself, and `herald-retry` publishes it. `None` for a buyer
/// with no e-mail address (or ids too long for a sale id).
async fn sale_event(
    app: &Ingest,
    promo: &FlashPromo,
    user: &CustomerId,
    sale: Option<&SaleId>,
    now: u64,
) -> Result<Option<String>, ApiError> {
    let Some(sale_id) = sale else {
        tracing::warn!(promo = %promo.id, user = %user, "ids too long for a sale id; no sale event");
        return Ok(None);
    };
    let Some(customer_email) = app
        .stores
        .customers
        .customer(user)
        .await?
        .and_then(|c| c.contacts.get(&Channel::Email).cloned())
    else {
        return Ok(None);
    };
    let event = SaleEvent {
        event_type: SALE_COMPLETED.into(),
        sale_id: sale_id.clone(),
        product_id: promo.product.id.clone(),
        product_name: promo.product.name.clone(),
        quantity: 1,
        total: promo.price,
        customer_email,
        customer_id: Some(user.clone()),
        timestamp: rfc3339(now),
    };
    serde_json::to_string(&event)
        .map(Some)
        .map_err(|e| ApiError::unavailable(e.to_string()))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SegmentsQuery {
    /// Admins only: another user.
    user_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct UserSegments {
    user_id: CustomerId,
    segments: Vec<String>,
    /// Whether the profile has a location (geographic promos need one).
    located: bool,
    /// Active promos that suit the user.
    promos: Vec<PromoId>,
}

/// The caller's segments and the active promos that suit them
#[utoipa::path(get, path = "/api/users/segments/", tag = "flash promos", params(SegmentsQuery),
    responses((status = 200, description = "Segments", body = UserSegments), NotFound, NoJwtSecret))]
async fn user_segments(
    State(app): App,
    Extension(claims): Extension<Claims>,
    Query(q): Query<SegmentsQuery>,
) -> Result<Response, ApiError> {
    let raw = match (&q.user_id, claims.role) {
        (Some(other), Role::Admin) => other.clone(),
        (Some(other), Role::User) if *other != claims.sub => {
            return Err(error(
                StatusCode::FORBIDDEN,
                "a user may only see their own segments",
            ))
        }
        _ => claims.sub.clone(),
    };
    let user = or_not_found(CustomerId::parse(&raw), "customer")?;
    let customer = or_not_found(app.stores.customers.customer(&user).await?, "customer")?;
    let activity = app.stores.events.activity(&user).await?;
    let now = now_ms();
    let mut promos = Vec::new();
    for id in app.stores.promos.current_promo_ids(now).await? {
        let Ok((promo, _)) = load(&app, id.as_str()).await else {
            continue;
        };
        let near = customer.location.is_some_and(|loc| {
            segment::distance_m(loc, promo.store.location) <= promo.segment.radius_m
        });
        if promo.window(now) == Window::Active
            && near
            && promo.segment.admits(&customer, activity.as_ref())
        {
            promos.push(promo.id);
        }
    }
    Ok(Json(UserSegments {
        segments: segment::labels(activity.as_ref()),
        located: customer.location.is_some(),
        user_id: user,
        promos,
    })
    .into_response())
}
