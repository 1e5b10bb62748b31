//! What Herald's HTTP servers share (the API, the dashboard): one error type whose body names
//! the offending field, so every 4xx tells the caller what to fix.
//!
//! Every 4xx/5xx of every program has one shape: RFC 9457 problem details
//! (`application/problem+json`): `type`, `title`, `status`, `detail`, plus `field` (what was
//! wrong, when one thing was) and `error` (the detail again: the `{"error", "field"}` shape
//! Herald's API has always answered, kept for the clients written against it).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// An API error: status plus a JSON body that names the offending field, if any.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn bad_json(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: None,
        }
    }
    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn not_found(what: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("{what} not found"),
            field: None,
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            field: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::unavailable("state store unavailable, try again")
    }
}

pub use crate::schema::PROBLEM_JSON;

/// An RFC 9457 problem: `type` is `about:blank` (the status says it all) with the status's
/// reason as `title`, except a field error, whose type names that kind of problem.
pub fn problem(status: StatusCode, detail: &str, field: Option<&str>) -> serde_json::Value {
    let kind = if field.is_some() && status == StatusCode::UNPROCESSABLE_ENTITY {
        "urn:herald:problem:invalid-field"
    } else {
        "about:blank"
    };
    let mut body = json!({
        "type": kind,
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "error": detail,
    });
    if let Some(field) = field {
        body["field"] = json!(field);
    }
    body
}

/// A problem as a response, with its media type.
pub fn problem_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, PROBLEM_JSON)],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = problem(self.status, &self.message, self.field.as_deref());
        problem_response(self.status, body)
    }
}

/// Why a call is not let through: an API error, or a caller over its rate (429 with
/// `Retry-After`). One shape for every limited caller: shoppers and service keys.
#[derive(Debug)]
pub enum Refusal {
    Api(ApiError),
    TooMany {
        message: &'static str,
        retry_after_s: u64,
    },
}

impl Refusal {
    /// Over the rate: retry after `wait`, rounded up to whole seconds (at least one).
    pub fn too_many(message: &'static str, wait: std::time::Duration) -> Refusal {
        Refusal::TooMany {
            message,
            retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Api(e.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Api(e) => e.into_response(),
            Refusal::TooMany {
                message,
                retry_after_s,
            } => {
                let mut body = problem(StatusCode::TOO_MANY_REQUESTS, message, None);
                body["retry_after_s"] = json!(retry_after_s);
                let mut response = problem_response(StatusCode::TOO_MANY_REQUESTS, body);
                if let Ok(v) = retry_after_s.to_string().parse() {
                    response
                        .headers_mut()
                        .insert(axum::http::header::RETRY_AFTER, v);
                }
                response
            }
        }
    }
}

/// The value, or a 404 naming `what`: an id that does not parse names nothing that exists,
/// so it is as unknown as a well-formed id with no record.
pub fn or_not_found<T>(value: Option<T>, what: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::not_found(what))
}

/// The limits every HTTP server of Herald runs with, so that a slow or greedy client cannot
/// hold it: how long a client may take to send its headers (slowloris), how long a request
/// may take in all, how many connections are served at once, and how big a body may be.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers, in ms; then it is closed.
    #[arg(long, env = "HERALD_HTTP_HEADER_TIMEOUT_MS", default_value_t = HttpLimits::default().header_timeout_ms)]
    pub header_timeout_ms: u64,

    /// How long a request may take, body and answer included, in ms; then 408.
    #[arg(long, env = "HERALD_HTTP_REQUEST_TIMEOUT_MS", default_value_t = HttpLimits::default().request_timeout_ms)]
    pub request_timeout_ms: u64,

    /// Connections served at once; more wait to be accepted.
    #[arg(long, env = "HERALD_HTTP_MAX_CONNECTIONS", default_value_t = HttpLimits::default().max_connections)]
    pub max_connections: usize,

    /// Largest body of a call, in bytes (413 beyond): every route but the bulk ones.
    #[arg(long, env = "HERALD_BODY_LIMIT_BYTES", default_value_t = HttpLimits::default().body_limit_bytes)]
    pub body_limit_bytes: usize,

    /// Largest body of the bulk routes (customers batch, user events), in bytes.
    #[arg(long, env = "HERALD_BULK_BODY_LIMIT_BYTES", default_value_t = HttpLimits::default().bulk_body_limit_bytes)]
    pub bulk_body_limit_bytes: usize,

    /// Largest body of `POST /v1/campaigns` (its audience is inline), in bytes.
    #[arg(long, env = "HERALD_CAMPAIGN_BODY_LIMIT_BYTES", default_value_t = HttpLimits::default().campaign_body_limit_bytes)]
    pub campaign_body_limit_bytes: usize,
}

/// The body limit of a route that names none.
const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The one place the defaults are written: the flags' defaults read them.
impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections: 2048,
            body_limit_bytes: DEFAULT_BODY_LIMIT,
            bulk_body_limit_bytes: 8 * 1024 * 1024,
            campaign_body_limit_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown`, then lets the requests under
/// way finish (for at most the request time-out). axum's own `serve` sets no header-read
/// time-out and no connection cap, so connections are driven by hyper directly.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: &HttpLimits,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let request_timeout = std::time::Duration::from_millis(limits.request_timeout_ms.max(1));
    let app = app.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        request_timeout,
    ));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_millis(
            limits.header_timeout_ms.max(1),
        ));
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // The caller's address, for the routes that answer by network (seed 001's opened ones).
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let connection = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away or times out ends its connection; nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(request_timeout) => {
            tracing::warn!("connections still open after the request time-out: closing them");
        }
    }
    Ok(())
}

/// A 415 for a body that is not JSON, before any handler reads it: a browser can send
/// `text/plain` across sites without asking first, JSON it cannot.
pub fn refuse_non_json(req: &axum::extract::Request) -> Option<Response> {
    (has_body(req) && !is_json(req.headers())).then(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be sent as Content-Type: application/json",
        )
        .into_response()
    })
}

fn has_body(req: &axum::extract::Request) -> bool {
    let headers = req.headers();
    headers.contains_key(axum::http::header::TRANSFER_ENCODING)
        || headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

/// The largest body a route takes, in bytes: set per route (group) with
/// `.layer(body_limit(n))`, read by [`Body`]; 1 MiB where no route says.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub fn body_limit(bytes: usize) -> axum::Extension<BodyLimit> {
    axum::Extension(BodyLimit(bytes))
}

/// How much of an oversized body is still read (and thrown away) so that the client, which
/// is still sending, gets its 413 rather than a reset connection. Beyond it, the 413 goes out
/// and the connection is closed.
const DRAIN_BEYOND_LIMIT: usize = 8 * 1024 * 1024;

/// A request's body, read within the route's [`BodyLimit`]: counted as it arrives, never kept
/// past the limit, and a JSON 413 beyond it.
pub struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _state: &S) -> Result<Self, ApiError> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT, |l| l.0);
        let (parts, body) = req.into_parts();
        read_limited(&parts.headers, body, limit, DRAIN_BEYOND_LIMIT, |_| Ok(()))
            .await
            .map(Body)
    }
}

/// The bearer credential of a request's `Authorization` header, if any (the scheme's case
/// as clients write it: `Bearer` or `bearer`).
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then_some(token)
}

/// Reads a request's whole `body` (its `headers` declare its length), keeping at most `limit`
/// bytes and asking `take` for each chunk kept (a memory budget; `Ok` when there is none).
/// Past the limit it reads on, throwing away, up to `drain` more bytes so that a client still
/// sending hears its 413; a declared length beyond that is refused before a byte is read. A
/// body that came in one piece is returned as it is, not copied.
pub(crate) async fn read_limited(
    headers: &axum::http::HeaderMap,
    mut body: axum::body::Body,
    limit: usize,
    drain: usize,
    mut take: impl FnMut(usize) -> Result<(), ApiError>,
) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt as _;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than this route takes ({limit} bytes; see HERALD_*BODY_LIMIT_BYTES)"
            ),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit + drain) {
        return Err(too_large());
    }
    let mut kept: Vec<axum::body::Bytes> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::bad_json("the body could not be read"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= limit {
            take(data.len())?;
            kept.push(data);
        } else if seen > limit + drain {
            break;
        } else {
            kept.clear();
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(match kept.len() {
        1 => kept.swap_remove(0),
        _ => kept.concat().into(),
    })
}

/// Deserializes a list of at most `N` items, refusing the `N+1`th as it is read: a body with a
/// million items fails after `N`, without building the million first.
/// Use: `#[serde(deserialize_with = "crate::http::at_most::<_, _, 10_000>")]`.
pub fn at_most<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct AtMost<T, const N: usize>(std::marker::PhantomData<T>);

    impl<'de, T: serde::Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for AtMost<T, N> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {N} items")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N).min(1024));
            while let Some(item) = seq.next_element()? {
                if items.len() == N {
                    return Err(serde::de::Error::custom(format!("at most {N} items")));
                }
                items.push(item);
            }
            Ok(items)
        }
    }

    d.deserialize_seq(AtMost::<T, N>(std::marker::PhantomData))
}

/// Whether a JSON object body has a top-level `field`, read without keeping anything (the
/// "one or many" bodies: `{...}` or `{"events": [...]}`).
pub fn has_field(body: &[u8], field: &'static str) -> Result<bool, ApiError> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    struct Finds(&'static str);
    impl<'de> Visitor<'de> for Finds {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut found = false;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                found |= key == self.0;
                map.next_value::<IgnoredAny>()?;
            }
            Ok(found)
        }
    }
    serde_json::Deserializer::from_slice(body)
        .deserialize_map(Finds(field))
        .map_err(|e| ApiError::bad_json(format!("body is not a valid JSON object: {e}")))
}

/// The list form of a "one or many" body, `{"LIST": [...]}`: a struct with that one field,
/// read with [`at_most`] so that an over-long list is refused as it is read.
pub trait Batch: serde::de::DeserializeOwned {
    type Item: serde::de::DeserializeOwned;
    /// The list's field.
    const LIST: &'static str;
    fn into_items(self) -> Vec<Self::Item>;
}

/// A "one or many" body: one item (`{...}`), or its [`Batch`] (a body with the list's field
/// is read as the list, whatever else it holds).
pub struct OneOrMany<T> {
    pub items: Vec<T>,
    /// The list's field when the body was a list.
    list: Option<&'static str>,
}

impl<T: serde::de::DeserializeOwned> OneOrMany<T> {
    /// Reads `body`, naming the offending field on a 422 (`events[3].user_id`).
    pub fn parse<B: Batch<Item = T>>(body: &[u8]) -> Result<Self, ApiError> {
        Ok(if has_field(body, B::LIST)? {
            OneOrMany {
                items: parse_json::<B>(body, "")?.into_items(),
                list: Some(B::LIST),
            }
        } else {
            OneOrMany {
                items: vec![parse_json::<T>(body, "")?],
                list: None,
            }
        })
    }

    /// How item `i`'s fields are named in an error: `events[3].` in a list, nothing alone.
    pub fn at(&self, i: usize) -> String {
        self.list
            .map(|list| format!("{list}[{i}]."))
            .unwrap_or_default()
    }
}

/// Deserializes a JSON body, naming the offending field (`audience.customer_ids[3]`) on a 422.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    prefix: &str,
) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.classify() != serde_json::error::Category::Data {
            return ApiError::bad_json(format!("body is not valid JSON: {inner}"));
        }
        let text = inner.to_string();
        // serde reports a missing field at its parent; name the field itself.
        let missing = text
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next());
        let mut field = match (path.as_str(), missing) {
            (".", Some(m)) => m.to_string(),
            (".", None) => "body".to_string(),
            (p, Some(m)) => format!("{p}.{m}"),
            (p, None) => p.to_string(),
        };
        if !prefix.is_empty() {
            field = format!("{prefix}.{field}");
        }
        ApiError::invalid(field, text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Batch {
        #[serde(deserialize_with = "at_most::<_, _, 3>")]
        items: Vec<u32>,
    }

    #[test]
    fn a_list_longer_than_its_cap_is_refused_while_it_is_read() {
        assert_eq!(
            serde_json::from_str::<Batch>(r#"{"items":[1,2,3]}"#)
                .unwrap()
                .items,
            vec![1, 2, 3]
        );
        let refused = serde_json::from_str::<Batch>(r#"{"items":[1,2,3,4,"not even read"]}"#)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("at most 3 items"), "{refused}");
    }

    #[test]
    fn a_top_level_field_is_found_without_keeping_the_body() {
        assert!(has_field(br#"{"a":1,"events":[{"x":{"y":2}}]}"#, "events").unwrap());
        assert!(!has_field(br#"{"a":{"events":1}}"#, "events").unwrap());
        assert!(has_field(b"[1]", "events").is_err());
        assert!(has_field(b"{", "events").is_err());
    }
}
