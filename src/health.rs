//! Liveness, readiness and stats over HTTP for the programs with no API of their own
//! (dispatchers, fan-out, retry), so an orchestrator can probe them, Prometheus can scrape
//! them and an operator can peek in.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Answers `Ok` when the program can do its work, or why not.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;
/// A JSON snapshot of the program's counters.
pub type StatsFn = Arc<dyn Fn() -> Value + Send + Sync>;
/// The program's Prometheus metrics, read at scrape time.
pub type MetricsFn = Arc<dyn Fn() -> Vec<crate::prom::Family> + Send + Sync>;

/// What a program shows on its health address.
pub struct Probes {
    pub ready: ReadyCheck,
    pub stats: StatsFn,
    pub metrics: MetricsFn,
}

impl Probes {
    /// Ready while Redis answers; `/stats` and `/metrics` read from `program`.
    pub fn of<T: Send + Sync + 'static>(
        redis: &crate::store::Redis,
        program: &Arc<T>,
        stats: fn(&T) -> Value,
        metrics: fn(&T) -> Vec<crate::prom::Family>,
    ) -> Probes {
        let (for_stats, for_metrics) = (program.clone(), program.clone());
        Probes {
            ready: redis_ready(redis.clone()),
            stats: Arc::new(move || stats(&for_stats)),
            metrics: Arc::new(move || metrics(&for_metrics)),
        }
    }
}

/// `/healthz`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Alive {
    /// `ok`
    status: &'static str,
}

/// Alive: the process answers
///
/// Every program's `/healthz` (herald-ingest, herald-metrics and the probes below).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "ok", body = Alive)))]
pub async fn alive() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

/// Serves `/healthz` (alive), `/readyz`, `/stats` and `/metrics` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    probes: Probes,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Probes {
        ready,
        stats,
        metrics,
    } = probes;
    let app = Router::new()
        .route("/healthz", get(alive))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => {
                            (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
                        }
                        Err(why) => not_ready(&why),
                    }
                }
            }),
        )
        .route("/stats", get(move || std::future::ready(Json(stats()))))
        .route(
            "/metrics",
            get(move || {
                std::future::ready(
                    (
                        [(axum::http::header::CONTENT_TYPE, crate::prom::CONTENT_TYPE)],
                        crate::prom::render(metrics()),
                    )
                        .into_response(),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "health endpoints listening");
    crate::http::serve(listener, app, &crate::http::HttpLimits::default(), shutdown).await
}

/// Serves the probes in the background when an address is configured.
pub fn spawn(addr: Option<SocketAddr>, probes: Probes, shutdown: CancellationToken) {
    let Some(addr) = addr else { return };
    let server = serve(addr, probes, shutdown);
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(%addr, error = %e, "health endpoints failed");
        }
    });
}

/// Ready when Redis answers: the programs that only move state need nothing else.
pub fn redis_ready(redis: crate::store::Redis) -> ReadyCheck {
    Arc::new(move || {
        let redis = redis.clone();
        Box::pin(async move { redis.ping().await.map_err(|e| e.to_string()) })
    })
}

/// A readiness probe's 503: a problem like every other error, the reason in `detail`.
pub fn not_ready(why: &str) -> axum::response::Response {
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let mut body = crate::http::problem(status, &format!("not ready: {why}"), None);
    body["reason"] = json!(why);
    crate::http::problem_response(status, body)
}
