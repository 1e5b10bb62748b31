//! Who may read herald-metrics (security review, finding 12): a service key with
//! `stats:read` (Prometheus sends one as a bearer token), or a browser session opened on
//! `/login` with such a key. The probes and the document are public. Without a key file the
//! program serves everyone, which it allows only on a loopback address and when asked
//! (`--open-on-loopback`).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::session::{self, Sessions};
use crate::auth::{KeyStore, Scope};
use crate::http::ApiError;

/// The routes anyone may call: probes, the document, the login form.
const PUBLIC: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/docs",
    "/docs/openapi.json",
    "/login",
];

pub struct MetricsAccess {
    /// `None`: open (loopback only, by explicit choice).
    keys: Option<KeyStore>,
    sessions: Sessions,
}

impl MetricsAccess {
    pub fn with_keys(keys: KeyStore) -> anyhow::Result<MetricsAccess> {
        Ok(MetricsAccess {
            keys: Some(keys),
            sessions: Sessions::new()?,
        })
    }

    pub fn open() -> anyhow::Result<MetricsAccess> {
        Ok(MetricsAccess {
            keys: None,
            sessions: Sessions::new()?,
        })
    }

    /// Whether a route of this path needs a credential.
    pub fn is_public(route: &str) -> bool {
        PUBLIC.contains(&route)
    }

    /// Takes keys created or revoked since the file was last read.
    pub fn reload_keys(&self) {
        if let Some(keys) = &self.keys {
            keys.reload_and_report();
        }
    }

    fn admits(&self, req: &Request) -> bool {
        let Some(keys) = &self.keys else {
            return true;
        };
        if let Some(key) = crate::http::bearer(req.headers()) {
            return keys
                .authenticate(key)
                .is_some_and(|caller| caller.may(Scope::StatsRead));
        }
        let cookie = req
            .headers()
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(session::from_cookie_header);
        cookie.is_some_and(|token| {
            let now = crate::model::now_ms() / 1000;
            self.sessions
                .check(token, keys, Scope::StatsRead, now)
                .is_some()
        })
    }
}

/// In front of every route: public ones pass; the rest need a key or a session. A browser
/// asking for the dashboard without one is answered 401 with the login form.
pub async fn guard(State(access): State<Arc<MetricsAccess>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|r| r.as_str().to_string());
    let public = route.as_deref().is_none_or(MetricsAccess::is_public);
    if public || access.admits(&req) {
        return next.run(req).await;
    }
    if route.as_deref() == Some("/") {
        return (StatusCode::UNAUTHORIZED, login_form(None)).into_response();
    }
    ApiError::unauthorized(
        "missing or invalid credentials: send Authorization: Bearer <key with stats:read>, or log in at /login",
    )
    .into_response()
}

#[derive(Deserialize, ToSchema)]
pub struct Login {
    /// A service key with `stats:read`.
    key: String,
}

const LOGIN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Herald metrics: log in</title>
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto}input{width:100%;padding:.4rem}p.error{color:#b00020}</style></head>
<body><h1>Herald metrics</h1>__ERROR__
<form method="post" action="/login">
<label for="key">A service key with the <code>stats:read</code> scope</label>
<input id="key" name="key" type="password" autocomplete="off" required>
<p><button type="submit">Log in</button></p>
</form></body></html>"#;

fn login_form(error: Option<&str>) -> Html<String> {
    let error = error.map_or(String::new(), |e| format!("<p class=\"error\">{e}</p>"));
    Html(LOGIN_PAGE.replace("__ERROR__", &error))
}

/// The login form
///
/// A form (no JavaScript) that takes a service key with `stats:read` once and opens a
/// browser session for the dashboard.
#[utoipa::path(get, path = "/login", tag = "stats",
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
pub async fn login_page() -> Html<String> {
    login_form(None)
}

/// Log in
///
/// Opens a session (an HttpOnly cookie, 12 hours, ended by the key's revocation) and sends
/// the browser to the dashboard.
#[utoipa::path(post, path = "/login", tag = "stats",
    request_body(content = Login, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Logged in: to the dashboard"),
        (status = 401, description = "Not a key with stats:read", content_type = "text/html", body = String),
        (status = 400, description = "The body could not be read"),
        (status = 413, description = "Too large"),
        (status = 415, description = "Not a form"),
        (status = 422, description = "No `key` field")))]
pub async fn login(
    Extension(access): Extension<Arc<MetricsAccess>>,
    form: Result<Form<Login>, axum::extract::rejection::FormRejection>,
) -> Response {
    let login = match form {
        Ok(Form(login)) => login,
        Err(refused) => return refused.into_response(),
    };
    let Some(keys) = &access.keys else {
        return Redirect::to("/").into_response();
    };
    let opened = keys
        .authenticate_for_session(login.key.trim())
        .filter(|(caller, _)| caller.may(Scope::StatsRead));
    let Some((caller, hash)) = opened else {
        return (
            StatusCode::UNAUTHORIZED,
            login_form(Some("That is not an active key with the stats:read scope.")),
        )
            .into_response();
    };
    tracing::info!(key = %caller.name, "dashboard session opened");
    let token = access.sessions.open(&hash, crate::model::now_ms() / 1000);
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        session::COOKIE,
        session::LIFETIME.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}
