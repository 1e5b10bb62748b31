//! `herald-ingest`: the public HTTP API. It validates, records request state in Redis and
//! publishes work to Kafka; it never calls the provider, so it answers in milliseconds
//! whatever the provider is doing.
//!
//! One module per group of routes: seed 001's requests in [`requests`], campaigns, receipts,
//! customers, events, flash promos, unsubscribe links and providers' webhooks; who may call
//! what in [`access`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use rdkafka::producer::{FutureProducer, Producer};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::kafka::Topics;
use crate::schema::NotReady;
use crate::store::{
    CampaignStore, CustomerStore, EventStore, PromoStore, Redis, RequestStore, SlotStore,
    WebhookStore,
};

pub use crate::http::ApiError;

/// The state every handler is given.
type App = State<Arc<Ingest>>;

pub mod access;
mod anonymous;
mod campaigns;
mod customers;
pub(crate) mod docs;
mod events;
mod history;
mod preferences;
pub mod program;
mod promos;
mod receipts;
mod requests;
mod senders;
mod unsubscribe;
mod webhook_endpoints;
mod webhooks;

pub use access::AccessSettings;
pub use promos::PromoSettings;
pub use senders::SenderPolicy;
pub use webhooks::WebhookSecrets;

/// The domain stores herald-ingest works with, all over one Redis.
#[derive(Clone)]
pub struct IngestStores {
    /// Redis itself, for `/readyz`.
    pub redis: Redis,
    pub requests: RequestStore,
    pub campaigns: CampaignStore,
    pub slots: SlotStore,
    pub customers: CustomerStore,
    pub promos: PromoStore,
    pub events: EventStore,
    pub webhooks: WebhookStore,
}

impl IngestStores {
    pub fn new(redis: &Redis) -> Self {
        IngestStores {
            redis: redis.clone(),
            requests: RequestStore::new(redis),
            campaigns: CampaignStore::new(redis),
            slots: SlotStore::new(redis),
            customers: CustomerStore::new(redis),
            promos: PromoStore::new(redis),
            events: EventStore::new(redis),
            webhooks: WebhookStore::new(redis),
        }
    }
}

pub struct Ingest {
    pub stores: IngestStores,
    /// For work a caller waits on (seed 001 requests, campaigns, shop events): reports a
    /// message failed after the publish time-out, so the caller hears 503 in seconds.
    pub producer: FutureProducer,
    /// For lifecycle events (receipts, unsubscribes): nobody waits on them, and a broker lost
    /// with SIGKILL holds acks=all writes until its partitions' leaders drop it from their
    /// in-sync sets (replica.lag.time.max.ms, 30 s by default), longer than the publish
    /// time-out; on that producer these events were dropped and herald-metrics under-counted.
    pub events_producer: FutureProducer,
    pub topics: Topics,
    /// Authentication, rate limit, hold time and CORS of the flash-promo API.
    pub promos: PromoSettings,
    /// Service keys, receipt secrets and what is open: see [`access`].
    pub access: access::AccessSettings,
    /// Time-outs, connection cap and body limits of the server.
    pub http: crate::http::HttpLimits,
    /// `/readyz`'s last answer.
    pub readiness: Readiness,
    /// Who a campaign may send e-mail as.
    pub senders: SenderPolicy,
    /// Which URLs webhook endpoints may have.
    pub webhook_addresses: crate::outgoing::address::AddressPolicy,
    /// The topics campaigns, promos and preferences may name (the rules' `[topics]`).
    pub catalog: crate::model::TopicCatalog,
}

/// The topic a campaign or promo names, or `default` when it names none; 422 naming
/// `topic` for one the configuration does not list.
pub fn checked_topic(
    catalog: &crate::model::TopicCatalog,
    given: Option<crate::model::Topic>,
    default: &crate::model::Topic,
) -> Result<crate::model::Topic, ApiError> {
    match given {
        None => Ok(default.clone()),
        Some(t) if catalog.contains(&t) => Ok(t),
        Some(t) => Err(ApiError::invalid(
            "topic",
            format!(
                "unknown topic {t:?}; the configured topics are: {}",
                catalog.listed()
            ),
        )),
    }
}

/// Every route, and the OpenAPI document of the same routes: a route is added with its
/// handler's `#[utoipa::path]`, so none can be served undocumented (or the reverse).
pub fn router(ingest: Arc<Ingest>) -> Router {
    let requests = HttpCounts::default();
    let tally = requests.clone();
    let (routes, document) = documented_routes(&ingest.http, &ingest.promos).split_for_parts();
    routes
        .fallback(|| async { ApiError::not_found("route") })
        .layer(Extension(docs::Document::ingest(document, &ingest.catalog)))
        .layer(Extension(requests))
        .layer(crate::http::body_limit(ingest.http.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(
            ingest.clone(),
            access::guard,
        ))
        .with_state(ingest)
        .layer(axum::middleware::from_fn(move |req, next| {
            count_request(tally.clone(), req, next)
        }))
}

fn documented_routes(
    http: &crate::http::HttpLimits,
    promos: &PromoSettings,
) -> OpenApiRouter<Arc<Ingest>> {
    OpenApiRouter::with_openapi(docs::referenced(&[
        docs::entry::<crate::model::Translation>,
        docs::entry::<crate::model::Receipt>,
        receipts::many_receipts_schema,
        docs::entry::<crate::model::commerce::UserEvent>,
        events::user_event_batch_schema,
    ]))
    .merge(requests::routes())
    .merge(customers::routes(http))
    .merge(campaigns::routes(http))
    .merge(history::routes())
    .merge(receipts::routes(http))
    .merge(events::routes(http))
    .merge(promos::routes(promos))
    .merge(unsubscribe::routes())
    .merge(preferences::routes())
    .merge(webhooks::routes())
    .merge(webhook_endpoints::routes())
    .merge(docs::routes())
    .routes(routes!(crate::health::alive))
    .routes(routes!(ready))
    .routes(routes!(http_metrics))
}

/// herald-ingest's OpenAPI document, as it serves it at `/docs/openapi.json` (`herald
/// openapi` prints it, for client generators that work offline), with the topics of the
/// built-in rules.
pub fn openapi_json() -> String {
    let limits = crate::http::HttpLimits::default();
    let (_, document) = documented_routes(&limits, &PromoSettings::default()).split_for_parts();
    let topics = crate::campaigns::rules::Rules::load(None)
        .map(|r| r.topics().clone())
        .unwrap_or_else(|e| unreachable!("the built-in rules hold: {e}"));
    docs::Document::ingest(document, &topics).json().to_string()
}

/// Prometheus metrics (requests by route and status)
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text exposition", content_type = crate::prom::CONTENT_TYPE, body = String)))]
async fn http_metrics(Extension(counts): Extension<HttpCounts>) -> Response {
    counts.exposition()
}

/// Requests answered, by route and status, for `/metrics`.
#[derive(Clone, Default)]
struct HttpCounts(Arc<std::sync::Mutex<std::collections::BTreeMap<(String, u16), u64>>>);

impl HttpCounts {
    fn exposition(&self) -> Response {
        let mut family = crate::prom::Family::new(
            "herald_http_requests",
            "Requests herald-ingest answered, by route and status.",
        );
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for ((route, status), n) in counts {
            family.push(
                &[("route", &route), ("status", &status.to_string())],
                crate::prom::Value::Counter(n as f64),
            );
        }
        (
            [(axum::http::header::CONTENT_TYPE, crate::prom::CONTENT_TYPE)],
            crate::prom::render(vec![family]),
        )
            .into_response()
    }
}

async fn count_request(
    counts: HttpCounts,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // The route pattern, not the path: ids in paths would make a series per request.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    let key = (route, response.status().as_u16());
    *counts
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default() += 1;
    response
}

/// Serves the API on `addr` until `shutdown` is cancelled, then flushes the producer.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let producer = ingest.producer.clone();
    let limits = ingest.http.clone();
    crate::http::serve(listener, router(ingest), &limits, shutdown).await?;
    // Handlers await their acks, so this only catches stragglers.
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    Ok(())
}

/// Ready: Redis answers and the Kafka cluster's metadata can be fetched
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Object), NotReady))]
async fn ready(State(app): App) -> Response {
    let (redis, kafka) = app.readiness.check(|| probe_readiness(&app)).await;
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    if redis && kafka {
        return Json(json!({"status": "ready", "redis": "ok", "kafka": "ok"})).into_response();
    }
    // Public route: which dependency is down, never its error (addresses, user names); the
    // error is in the log.
    crate::health::not_ready(&format!("redis: {}; kafka: {}", word(redis), word(kafka)))
}

/// Asks Redis and Kafka now; logs what failed. Whether each answered.
async fn probe_readiness(app: &Ingest) -> (bool, bool) {
    let redis = app.stores.redis.ping().await.map_err(|e| e.to_string());
    let producer = app.producer.clone();
    let kafka = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, Duration::from_secs(2))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = &redis {
        tracing::warn!(error = %e, "not ready: redis");
    }
    if let Err(e) = &kafka {
        tracing::warn!(error = %e, "not ready: kafka");
    }
    (redis.is_ok(), kafka.is_ok())
}

/// The last readiness answer, reused for a second: `/readyz` is public, and each probe costs
/// a Redis call and a Kafka metadata request, which anonymous callers must not multiply.
#[derive(Default)]
pub struct Readiness {
    last: tokio::sync::Mutex<Option<(std::time::Instant, (bool, bool))>>,
}

impl Readiness {
    const FRESH: Duration = Duration::from_secs(1);

    /// The cached answer if it is younger than a second, else `probe`'s (one probe at a time:
    /// callers arriving meanwhile wait for it and share it).
    async fn check<F, Fut>(&self, probe: F) -> (bool, bool)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = (bool, bool)>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = *last {
            if at.elapsed() < Self::FRESH {
                return answer;
            }
        }
        let answer = probe().await;
        *last = Some((std::time::Instant::now(), answer));
        answer
    }
}

pub use crate::model::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_is_probed_at_most_once_a_second() {
        let readiness = Readiness::default();
        let probes = std::sync::atomic::AtomicU32::new(0);
        let probe = || async {
            probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (true, false)
        };
        for _ in 0..50 {
            assert_eq!(readiness.check(probe).await, (true, false));
        }
        assert_eq!(probes.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
