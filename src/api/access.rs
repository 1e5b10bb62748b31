//! Who may call which route of herald-ingest: one table ([`access`]) read by one middleware
//! ([`guard`]) in front of every route, so a handler never decides for itself and a route
//! missing from the table is admin-only rather than open.
//!
//! - Service keys (`Authorization: Bearer hk_...`) with scopes, for machine callers; rate
//!   limited per key; every read of customer data is logged with the key's name.
//! - Shoppers' JWTs on the flash-promo routes, as before; a key with `promos:write` stands in
//!   for an admin there.
//! - `/v1/receipts` is proven by the provider's signature of the body (checked by the handler,
//!   which holds the raw body), not by a key: providers post receipts, they hold no key.
//! - `HERALD_PUBLIC_ROUTES=requests` opens seed 001's three routes to callers without
//!   credentials, for a client of the seed's exact contract; nothing else can be opened.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{anonymous, ApiError, Ingest};
use crate::auth::signature::ReceiptSecrets;
use crate::auth::{ApiKey, Caller, CallerLimit, Claims, KeyStore, Role, Scope, UnsubscribeTokens};
use crate::http::Refusal;

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, readiness, the API document, the list of active promos.
    Public,
    /// A service key with this scope (or `admin`).
    Key(Scope),
    /// Seed 001's routes: a key with this scope, or nobody at all when they are opened.
    Requests(Scope),
    /// A shopper's JWT; a key with the scope, if one is given, acts as an admin.
    Shopper(Option<Scope>),
    /// A provider's signature of the body (`Herald-Signature`).
    Signed,
    /// A provider's own webhook signature (Twilio, Meta), checked by the handler; the body
    /// is whatever the provider sends (Twilio: form-encoded).
    Webhook,
    /// A signed link: the token in the path is the credential (one-click unsubscribe, which
    /// mailbox providers post form-encoded, with no login).
    Link,
}

/// The one table of who may call what. A route not named here needs `admin`.
pub fn access(method: &Method, route: &str) -> Access {
    use Access::*;
    match (method.as_str(), route) {
        (_, "/healthz" | "/readyz" | "/docs" | "/docs/openapi.json") => Public,
        // A CORS preflight carries no credentials; the call that follows it does. Only the
        // flash-promo API answers browsers of other origins: elsewhere OPTIONS is an admin's.
        ("OPTIONS", r) if r.starts_with("/api/") => Public,
        ("GET", "/api/flash-promos/active/") => Public,
        ("POST", "/v1/requests" | "/v1/requests/{id}/process") => Requests(Scope::RequestsWrite),
        ("GET", "/v1/requests/{id}") => Requests(Scope::RequestsRead),
        ("GET", "/v1/customers/{id}" | "/v1/customers/{id}/loyalty")
        | (
            "GET",
            "/v1/customers/{id}/activity"
            | "/v1/customers/{id}/messages"
            | "/v1/customers/{id}/consent-log",
        ) => Key(Scope::CustomersRead),
        ("GET", "/v1/customers/{id}/preferences" | "/v1/customers/{id}/preferences/link") => {
            Key(Scope::CustomersRead)
        }
        ("PUT", "/v1/customers/{id}" | "/v1/customers/{id}/preferences")
        | ("POST", "/v1/customers/batch") => Key(Scope::CustomersWrite),
        ("POST", "/v1/campaigns")
        | (
            "POST",
            "/v1/campaigns/{id}/pause" | "/v1/campaigns/{id}/resume" | "/v1/campaigns/{id}/cancel",
        ) => Key(Scope::CampaignsWrite),
        ("GET", "/v1/campaigns/{id}" | "/v1/campaigns/{id}/recipients/{customer}") => {
            Key(Scope::CampaignsRead)
        }
        ("POST", "/v1/receipts") => Signed,
        ("GET" | "POST", "/v1/unsubscribe/{token}" | "/v1/preferences/{token}") => Link,
        ("POST", "/v1/webhooks/twilio" | "/v1/webhooks/whatsapp") => Webhook,
        // Meta's handshake proves itself with the verify token, checked by the handler.
        ("GET", "/v1/webhooks/whatsapp") => Webhook,
        ("POST", "/v1/bounces") => Key(Scope::BouncesWrite),
        ("POST", "/v1/sales") => Key(Scope::SalesWrite),
        ("POST", "/v1/user-events") => Key(Scope::EventsWrite),
        ("GET", "/metrics") => Key(Scope::StatsRead),
        ("POST", "/api/flash-promos/") | ("GET", "/api/flash-promos/{id}/") => {
            Shopper(Some(Scope::PromosWrite))
        }
        ("GET", "/api/users/segments/") => Shopper(Some(Scope::PromosWrite)),
        ("POST", "/api/flash-promos/{id}/reserve/" | "/api/flash-promos/{id}/purchase/") => {
            Shopper(None)
        }
        _ => Key(Scope::Admin),
    }
}

/// How herald-ingest authenticates its callers.
pub struct AccessSettings {
    /// The service keys; `None` only with `--insecure-dev`, where every key route is open.
    pub keys: Option<KeyStore>,
    /// Seed 001's routes open to callers without credentials (`HERALD_PUBLIC_ROUTES=requests`).
    pub public_requests: bool,
    /// Calls per key.
    pub limit: CallerLimit,
    /// The providers' receipt secrets; `None` only with `--insecure-dev` (receipts unsigned).
    pub receipts: Option<ReceiptSecrets>,
    /// Checks one-click unsubscribe links; `None` when not configured (every link is 404).
    pub unsubscribe: Option<UnsubscribeTokens>,
    /// Checks providers' status webhooks (Twilio, Meta).
    pub webhooks: super::WebhookSecrets,
    /// Who may call seed 001's opened routes, and how often.
    pub open_requests: Option<super::anonymous::OpenRequests>,
    /// The memory bodies of callers not yet proven may hold at once.
    pub anonymous_bodies: super::anonymous::BodyBudget,
    /// The largest receipts call (`HERALD_RECEIPT_BODY_LIMIT_BYTES`), read before its
    /// signature is checked.
    pub receipt_body_limit: usize,
}

impl AccessSettings {
    /// Everything open: for unit tests and `--insecure-dev` only.
    pub fn insecure() -> AccessSettings {
        AccessSettings {
            keys: None,
            public_requests: false,
            limit: CallerLimit::new(100_000, 100_000),
            receipts: None,
            unsubscribe: None,
            webhooks: Default::default(),
            open_requests: None,
            anonymous_bodies: super::anonymous::BodyBudget::new(DEFAULT_ANONYMOUS_BODY_BUDGET),
            receipt_body_limit: DEFAULT_RECEIPT_BODY_LIMIT,
        }
    }
}

/// 10,000 receipts of about 150 bytes each, with room.
pub const DEFAULT_RECEIPT_BODY_LIMIT: usize = 2 * 1024 * 1024;
/// What all unproven callers' bodies may hold at once: eight full receipt calls.
pub const DEFAULT_ANONYMOUS_BODY_BUDGET: usize = 16 * 1024 * 1024;

/// The bearer credential of a request, if any.
fn bearer(req: &Request) -> Option<&str> {
    crate::http::bearer(req.headers())
}

/// The middleware: refuses a body that is not JSON, then decides from the matched route; a
/// shopper's [`Claims`] go to the handler as a request extension.
pub async fn guard(State(app): State<Arc<Ingest>>, mut req: Request, next: Next) -> Response {
    // One middleware for both checks: each layer of `from_fn` costs a boxed future per call.
    // A MatchedPath shares its text: cloning it allocates nothing.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let needed = route.as_ref().map(|r| access(req.method(), r.as_str()));
    if !matches!(needed, Some(Access::Link | Access::Webhook)) {
        if let Some(refused) = crate::http::refuse_non_json(&req) {
            return refused;
        }
    }
    // No route matched: the fallback answers 404 and reveals nothing.
    let (Some(route), Some(needed)) = (route, needed) else {
        return next.run(req).await;
    };
    let unproven_limit = match admit(&app, &mut req, needed, route.as_str()) {
        Ok(Admitted::Proven) => return next.run(req).await,
        Ok(Admitted::Unproven { body_limit }) => body_limit,
        Err(refusal) => return refusal.into_response(),
    };
    // Read here, within the shared budget, which the body holds until it is answered.
    match anonymous::read_within_budget(req, unproven_limit, &app.access.anonymous_bodies).await {
        Ok((req, _budget)) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

/// How a caller was let in.
enum Admitted {
    /// With a credential, or to a route that takes no body.
    Proven,
    /// Before any credential is checked (the body is the proof, or there is none): its body
    /// is read within the shared budget of unproven callers, at most `body_limit` bytes.
    Unproven { body_limit: usize },
}

fn admit(
    app: &Ingest,
    req: &mut Request,
    needed: Access,
    route: &str,
) -> Result<Admitted, Refusal> {
    match needed {
        Access::Public => Ok(Admitted::Proven),
        Access::Signed => Ok(Admitted::Unproven {
            body_limit: app.access.receipt_body_limit,
        }),
        Access::Link | Access::Webhook => Ok(Admitted::Unproven {
            body_limit: anonymous::WEBHOOK_BODY_LIMIT,
        }),
        Access::Requests(_) if app.access.public_requests && bearer(req).is_none() => {
            if let Some(open) = &app.access.open_requests {
                open.admit(req)?;
            }
            Ok(Admitted::Unproven {
                body_limit: app.http.body_limit_bytes,
            })
        }
        Access::Requests(scope) | Access::Key(scope) => {
            let caller = service_caller(app, bearer(req), scope)?;
            audit(&caller, scope, req.method(), route, req.uri().path());
            // Handlers that record who did something (the consent log) read it.
            req.extensions_mut().insert(caller);
            Ok(Admitted::Proven)
        }
        Access::Shopper(key_scope) => {
            let claims = shopper(app, bearer(req), key_scope, route)?;
            req.extensions_mut().insert(claims);
            Ok(Admitted::Proven)
        }
    }
}

/// The caller behind a service key that holds `scope`, within its rate.
fn service_caller(app: &Ingest, credential: Option<&str>, scope: Scope) -> Result<Caller, Refusal> {
    let Some(keys) = app.access.keys.as_ref() else {
        static INSECURE: std::sync::OnceLock<Caller> = std::sync::OnceLock::new();
        return Ok(INSECURE
            .get_or_init(|| Caller::new("insecure-dev", &[Scope::Admin]))
            .clone());
    };
    let credential = credential.ok_or_else(|| {
        ApiError::unauthorized("missing credentials: send Authorization: Bearer <API key>")
    })?;
    let caller = match keys.authenticate(credential) {
        Some(caller) => caller,
        None if is_shopper_token(app, credential) => {
            return Err(ApiError::forbidden(
                "this route takes a service API key, not a shopper token",
            )
            .into())
        }
        None => return Err(ApiError::unauthorized("invalid API key").into()),
    };
    if !caller.may(scope) {
        return Err(ApiError::forbidden(format!("this key lacks the scope {scope}")).into());
    }
    within_rate(&app.access.limit, &caller.name)?;
    Ok(caller)
}

fn is_shopper_token(app: &Ingest, credential: &str) -> bool {
    !ApiKey::looks_like(credential) && verify_token(app, credential).is_ok()
}

/// The claims of a shopper's token (role `user`, `HERALD_JWT_SECRET`) or an admin's (role
/// `admin`, `HERALD_JWT_ADMIN_SECRET`); an admin's role under the shoppers' secret is refused.
fn verify_token(app: &Ingest, credential: &str) -> Result<Claims, ApiError> {
    let settings = &app.promos;
    let signers = [
        (settings.jwt.as_ref(), Role::User),
        (settings.admin_jwt.as_ref(), Role::Admin),
    ];
    let mut why = None;
    for (jwt, role) in signers {
        let Some(jwt) = jwt else { continue };
        match jwt.verify(credential) {
            Ok(claims) if claims.role == role => return Ok(claims),
            Ok(_) => {
                return Err(ApiError::unauthorized(match role {
                    Role::User => "an admin token must be signed with the admins' secret (HERALD_JWT_ADMIN_SECRET)",
                    Role::Admin => "a shopper's token must be signed with the shoppers' secret (HERALD_JWT_SECRET)",
                }))
            }
            Err(e) => {
                why.get_or_insert_with(|| e.to_string());
            }
        }
    }
    match why {
        Some(why) => Err(ApiError::unauthorized(why)),
        None => Err(ApiError::unavailable(
            "authentication is not configured (set HERALD_JWT_SECRET)",
        )),
    }
}

/// A shopper's claims, or an admin's made from a key that holds `key_scope`.
fn shopper(
    app: &Ingest,
    credential: Option<&str>,
    key_scope: Option<Scope>,
    route: &str,
) -> Result<Claims, Refusal> {
    let credential = credential.ok_or_else(|| {
        ApiError::unauthorized("missing bearer token (Authorization: Bearer ...)")
    })?;
    if ApiKey::looks_like(credential) {
        let Some(scope) = key_scope else {
            return Err(ApiError::forbidden(format!(
                "{route} acts for a shopper: it takes the shopper's token, not an API key"
            ))
            .into());
        };
        let caller = service_caller(app, Some(credential), scope)?;
        let now = crate::model::now_ms() / 1000;
        return Ok(Claims {
            sub: format!("key:{}", caller.name),
            role: Role::Admin,
            iat: now,
            exp: now,
            iss: None,
            aud: None,
        });
    }
    verify_token(app, credential).map_err(Refusal::from)
}

fn within_rate(limit: &CallerLimit, name: &std::sync::Arc<str>) -> Result<(), Refusal> {
    limit
        .check_shared(name)
        .map_err(|wait| Refusal::too_many("this key's call rate is exceeded, retry later", wait))
}

/// Reads of customer data are logged with the key's name (never the key), the route and the
/// path with any address or number in it masked, for audits.
fn audit(caller: &Caller, scope: Scope, method: &Method, route: &str, path: &str) {
    if scope == Scope::CustomersRead {
        let path = crate::redact::personal_data(path);
        tracing::info!(target: "herald::audit", key = %caller.name, %method, route, path, "customer data read");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_not_in_the_table_needs_admin() {
        assert_eq!(
            access(&Method::DELETE, "/v1/requests/{id}"),
            Access::Key(Scope::Admin)
        );
        assert_eq!(
            access(&Method::GET, "/v1/new-thing"),
            Access::Key(Scope::Admin)
        );
        assert_eq!(access(&Method::GET, "/healthz"), Access::Public);
        assert_eq!(access(&Method::POST, "/v1/receipts"), Access::Signed);
        // Finding 12's trap: a preflight is public only where browsers of other origins call.
        assert_eq!(
            access(&Method::OPTIONS, "/api/flash-promos/{id}/reserve/"),
            Access::Public
        );
        assert_eq!(
            access(&Method::OPTIONS, "/v1/new-thing"),
            Access::Key(Scope::Admin)
        );
    }
}
