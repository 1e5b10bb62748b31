//! `herald-metrics`' HTTP side: the dashboard (`/`), JSON stats (`/v1/stats`,
//! `/v1/stats/campaigns/{id}`), Prometheus (`/metrics`) and the probes.

use std::collections::BTreeMap;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::MetricsAccess;
use super::{Aggregator, Counts, LATENCY_BUCKETS_MS};
use crate::http::{or_not_found, ApiError};
use crate::model::{now_ms, CampaignId, CampaignState};
use crate::openapi::{self, Document};
use crate::prom::{self, Family, Value as PromValue};
use crate::schema::{NotFound, NotReady, StoreDown};
use crate::stats::Counters;

/// Campaigns the overview (and Prometheus) shows: the most recently active.
const RECENT_CAMPAIGNS: usize = 20;

const DASHBOARD: &str = include_str!("dashboard.html");

/// Every route, and its OpenAPI document (`/docs/openapi.json`): see [`crate::openapi`].
pub fn router(agg: Arc<Aggregator>, access: Arc<MetricsAccess>) -> Router {
    let (routes, document) = documented_routes().split_for_parts();
    routes
        .fallback(|| async { ApiError::not_found("route") })
        .layer(Extension(document_of(document)))
        .layer(Extension(access.clone()))
        .layer(axum::middleware::from_fn_with_state(
            access,
            super::access::guard,
        ))
        .with_state(agg)
}

/// The document served and printed: one title and description for both.
fn document_of(api: utoipa::openapi::OpenApi) -> Arc<Document> {
    keyed_document(
        api,
        "Herald metrics (herald-metrics)",
        "The live dashboard, its JSON figures and Prometheus metrics, counted from herald.events. \
         Every route but the probes, this document and /login takes a service key with \
         stats:read (or a session opened at /login).",
        MetricsAccess::is_public,
        "/",
    )
}

/// A document whose operations take a service key, but those `public` says (herald-metrics);
/// the page at `login_page` answers a caller without one with an HTML login form.
fn keyed_document(
    api: utoipa::openapi::OpenApi,
    title: &str,
    description: &str,
    public: fn(&str) -> bool,
    login_page: &str,
) -> Arc<Document> {
    let mut doc = openapi::finish(api, title, description);
    doc["components"]["securitySchemes"] = json!({
        "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "Herald service key (hk_...)",
                   "description": "A key with the stats:read scope; a browser logs in once at /login instead."},
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, operations) in paths.iter_mut() {
            let keyed = !public(path);
            for op in operations
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                if keyed && path == login_page {
                    op["security"] = json!([{"apiKey": []}]);
                    op["responses"]["401"] = json!({
                        "description": "No key or session: the login form",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    });
                } else if keyed {
                    op["security"] = json!([{"apiKey": []}]);
                    op["responses"]["401"] = openapi::error_response("No key with stats:read");
                } else {
                    op["security"] = json!([]);
                }
            }
        }
    }
    Document::new(doc)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    agg: Arc<Aggregator>,
    access: Arc<MetricsAccess>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "metrics dashboard listening");
    crate::http::serve(
        listener,
        router(agg, access),
        &crate::http::HttpLimits::default(),
        shutdown,
    )
    .await
}

fn documented_routes() -> OpenApiRouter<Arc<Aggregator>> {
    OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(stats))
        .routes(routes!(campaign_stats))
        .routes(routes!(metrics))
        .routes(routes!(crate::health::alive))
        .routes(routes!(ready))
        .routes(routes!(super::access::login_page, super::access::login))
        .merge(openapi::routes())
}

/// herald-metrics' OpenAPI document, as served.
pub fn openapi_json() -> String {
    let (_, document) = documented_routes().split_for_parts();
    document_of(document).json().to_string()
}

/// One campaign as the dashboard shows it.
#[derive(Debug, Serialize, ToSchema)]
struct CampaignView {
    id: CampaignId,
    /// Where the operator has put it: scheduled, running, paused or cancelled.
    state: CampaignState,
    recipients: u64,
    finished: u64,
    /// `finished / recipients`, 0 to 1.
    progress: f64,
    complete: bool,
    counts: Counts,
}

/// Rates per second, shaped like [`Counts`].
#[derive(Debug, Default, Serialize)]
struct Rates {
    outcomes: BTreeMap<String, f64>,
    channels: BTreeMap<String, BTreeMap<String, f64>>,
}

fn rates_view(fields: BTreeMap<String, f64>) -> Rates {
    let mut rates = Rates::default();
    for (field, r) in fields {
        if let Some((outcome, channel)) = field.split_once(':') {
            *rates.outcomes.entry(outcome.to_string()).or_default() += r;
            *rates
                .channels
                .entry(channel.to_string())
                .or_default()
                .entry(outcome.to_string())
                .or_default() += r;
        }
    }
    rates
}

async fn campaign_view(agg: &Aggregator, id: CampaignId) -> Result<CampaignView, ApiError> {
    let fields = agg.store.metrics_campaign(&id).await?;
    let recipients = agg
        .campaign_store
        .campaign_counts(&id)
        .await?
        .get("recipients")
        .copied()
        .unwrap_or(0);
    let state = agg
        .campaign_store
        .campaign_state(&id)
        .await?
        .unwrap_or(CampaignState::Running);
    let counts = Counts::from_fields(&fields);
    let finished = counts.finished();
    Ok(CampaignView {
        id,
        state,
        recipients,
        finished,
        progress: if recipients == 0 {
            0.0
        } else {
            (finished as f64 / recipients as f64).min(1.0)
        },
        complete: recipients > 0 && finished >= recipients,
        counts,
    })
}

async fn overview(agg: &Aggregator) -> Result<Value, ApiError> {
    let totals = Counts::from_fields(&agg.store.metrics_totals().await?);
    let mut campaigns = Vec::new();
    for id in agg.store.metrics_recent_campaigns(RECENT_CAMPAIGNS).await? {
        campaigns.push(campaign_view(agg, id).await?);
    }
    Ok(json!({
        "updated_at_ms": now_ms(),
        "totals": totals,
        "rates_per_sec": rates_view(agg.rates()),
        "campaigns": campaigns,
        "aggregator": &agg.stats,
        "providers": providers_view(agg.health_store.provider_reports().await?),
    }))
}

/// Dispatchers' reports summed per channel and provider: calls by status, the worst circuit
/// among the instances heard from in the last 10 s, whether any is still reporting.
fn providers_view(reports: Vec<(String, Value)>) -> Value {
    let now = now_ms();
    let mut rows: std::collections::BTreeMap<(String, u64, String), Value> = Default::default();
    for (_, r) in reports {
        let channel = r["channel"].as_str().unwrap_or("?").to_string();
        let name = r["provider"].as_str().unwrap_or("?").to_string();
        let order = r["order"].as_u64().unwrap_or(0);
        let live = now.saturating_sub(r["at_ms"].as_u64().unwrap_or(0)) < 10_000;
        let row = rows.entry((channel.clone(), order, name.clone())).or_insert_with(|| {
            json!({"channel": channel, "provider": name, "adapter": r["adapter"], "order": order,
                   "circuit": "closed", "live": false, "calls": {}, "channel_failovers": 0})
        });
        for (k, v) in r["calls"].as_object().into_iter().flatten() {
            let sum = row["calls"][k].as_u64().unwrap_or(0) + v.as_u64().unwrap_or(0);
            row["calls"][k] = json!(sum);
        }
        let failovers = row["channel_failovers"].as_u64().unwrap_or(0)
            + r["channel_failovers"].as_u64().unwrap_or(0);
        row["channel_failovers"] = json!(failovers);
        if live {
            row["live"] = json!(true);
            let rank = |c: &str| match c {
                "open" => 2,
                "half_open" => 1,
                _ => 0,
            };
            let theirs = r["circuit"].as_str().unwrap_or("closed");
            if rank(theirs) > rank(row["circuit"].as_str().unwrap_or("closed")) {
                row["circuit"] = json!(theirs);
            }
        }
    }
    Value::Array(rows.into_values().collect())
}

/// The dashboard's figures: totals, rates, recent campaigns, providers
#[utoipa::path(get, path = "/v1/stats", tag = "stats",
    responses((status = 200, description = "updated_at_ms, totals, rates_per_sec, campaigns, aggregator, providers", body = Object),
        StoreDown))]
async fn stats(State(agg): State<Arc<Aggregator>>) -> Result<Json<Value>, ApiError> {
    overview(&agg).await.map(Json)
}

/// One campaign's counts as herald.events tells them
#[utoipa::path(get, path = "/v1/stats/campaigns/{id}", tag = "stats",
    params(("id" = String, Path, description = "The campaign's id")),
    responses((status = 200, description = "The campaign", body = CampaignView), NotFound,
        StoreDown))]
async fn campaign_stats(
    State(agg): State<Arc<Aggregator>>,
    Path(raw): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    let id = or_not_found(CampaignId::parse(&raw), "campaign")?;
    let view = campaign_view(&agg, id).await?;
    if view.recipients == 0 && view.counts.outcomes.is_empty() {
        return Err(ApiError::not_found("campaign"));
    }
    Ok(Json(view))
}

/// The live dashboard
///
/// The page with the current numbers already in it, so it shows them before its first poll.
#[utoipa::path(get, path = "/", tag = "stats",
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
async fn dashboard(State(agg): State<Arc<Aggregator>>) -> Response {
    let initial = overview(&agg)
        .await
        .map(|v| v.to_string())
        .unwrap_or_else(|_| "null".into());
    // `</` cannot end the script element early once escaped.
    let initial = initial.replace("</", "<\\/");
    Html(DASHBOARD.replace("/*INITIAL_STATS*/null", &initial)).into_response()
}

/// Ready: Redis answers
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Object), NotReady))]
async fn ready(State(agg): State<Arc<Aggregator>>) -> Response {
    match agg.store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => crate::health::not_ready(&e.to_string()),
    }
}

/// Prometheus metrics
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text exposition", content_type = crate::prom::CONTENT_TYPE, body = String),
        StoreDown))]
async fn metrics(State(agg): State<Arc<Aggregator>>) -> Result<Response, ApiError> {
    let mut families = fleet_families(&Counts::from_fields(&agg.store.metrics_totals().await?));
    let mut per_campaign = Family::new(
        "herald_campaign_notifications",
        "Notifications of a recent campaign by channel and outcome, counted from herald.events.",
    );
    let mut progress = Family::new(
        "herald_campaign_progress_ratio",
        "Share of a recent campaign's recipients whose notification reached an end.",
    );
    for id in agg.store.metrics_recent_campaigns(RECENT_CAMPAIGNS).await? {
        let view = campaign_view(&agg, id).await?;
        for (channel, outcomes) in &view.counts.channels {
            for (outcome, n) in outcomes {
                per_campaign.push(
                    &[
                        ("campaign", view.id.as_str()),
                        ("channel", channel),
                        ("outcome", outcome),
                    ],
                    PromValue::Counter(*n as f64),
                );
            }
        }
        progress.push(
            &[("campaign", view.id.as_str())],
            PromValue::Gauge(view.progress),
        );
    }
    families.extend([per_campaign, progress]);
    families.extend(aggregator_families(&agg));
    Ok((
        [(header::CONTENT_TYPE, prom::CONTENT_TYPE)],
        prom::render(families),
    )
        .into_response())
}

/// The fleet-wide counters and the receipt-latency histogram.
fn fleet_families(totals: &Counts) -> Vec<Family> {
    let mut notifications = Family::new(
        "herald_notifications",
        "Notifications by channel and outcome (accepted, sent, delivered, undelivered, fallback, failed, deduplicated, dead_lettered, uncertain), counted from herald.events.",
    );
    for (channel, outcomes) in &totals.channels {
        for (outcome, n) in outcomes {
            notifications.push(
                &[("channel", channel), ("outcome", outcome)],
                PromValue::Counter(*n as f64),
            );
        }
    }
    let mut latency = Family::new(
        "herald_receipt_latency_seconds",
        "Time from the provider accepting a send to its delivery receipt.",
    );
    for (channel, l) in &totals.latency_ms {
        let bounds = LATENCY_BUCKETS_MS
            .iter()
            .map(|ms| *ms as f64 / 1000.0)
            .chain([f64::MAX]);
        let buckets = bounds
            .zip(l.buckets.iter().copied().chain(std::iter::repeat(0)))
            .collect();
        latency.push(
            &[("channel", channel)],
            PromValue::Histogram {
                sum: l.sum_ms as f64 / 1000.0,
                count: l.count,
                buckets,
            },
        );
    }
    vec![notifications, latency]
}

fn aggregator_families(agg: &Aggregator) -> Vec<Family> {
    let s = &agg.stats;
    let events = s.family(&[]);
    vec![
        events,
        prom::counter(
            "herald_metrics_flush_errors",
            "Flushes to Redis that failed and were retried.",
            s.flush_errors.load(Ordering::Relaxed),
        ),
        crate::kafka::lag_family(
            &agg.topics.metrics_group(),
            &agg.topics.events(),
            &s.consumer_lag,
        ),
    ]
}
