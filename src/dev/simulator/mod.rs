//! A simulated external provider (`herald-provider`) for the demo, tests and benchmarks.
//! It misbehaves on purpose: latency, 5xx errors, a fixed-window rate limit with 429 and
//! `Retry-After`, and calls that hang. By default it is *not* idempotent: it counts every
//! success per idempotency key, so a test can prove Herald never sent anything twice.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::LogFormat;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::{Channel, Receipt, ReceiptStatus};
use crate::provider::{API_KEY_HEADER, IDEMPOTENCY_KEY_HEADER};

mod receipts;
use receipts::{post_receipts, ReceiptCounts};

#[derive(Debug, Clone, clap::Args)]
pub struct SimulatorArgs {
    /// Address to listen on.
    #[arg(long, env = "HERALD_PROVIDER_ADDR", default_value = "127.0.0.1:3001")]
    pub addr: SocketAddr,

    /// The API key callers must send as `X-API-Key`.
    #[arg(long, env = "HERALD_PROVIDER_API_KEY", hide_env_values = true)]
    pub api_key: crate::config::Secret,

    /// Shortest simulated processing time, in milliseconds.
    #[arg(long, env = "HERALD_SIM_LATENCY_MIN_MS", default_value_t = 5)]
    pub latency_min_ms: u64,

    /// Longest simulated processing time, in milliseconds.
    #[arg(long, env = "HERALD_SIM_LATENCY_MAX_MS", default_value_t = 30)]
    pub latency_max_ms: u64,

    /// Share of calls (0..1) answered with a 5xx error.
    #[arg(long, env = "HERALD_SIM_ERROR_RATE", default_value_t = 0.0)]
    pub error_rate: f64,

    /// Share of calls (0..1) that hang (never delivered; answered 504 after `--hang-ms`).
    #[arg(long, env = "HERALD_SIM_HANG_RATE", default_value_t = 0.0)]
    pub hang_rate: f64,

    /// How long a hanging call hangs, in milliseconds.
    #[arg(long, env = "HERALD_SIM_HANG_MS", default_value_t = 30_000)]
    pub hang_ms: u64,

    /// Requests accepted per window; more get 429 with `Retry-After`. 0 means no limit.
    #[arg(long, env = "HERALD_SIM_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u64,

    /// Honour `Idempotency-Key` as real providers do: a key already delivered is answered
    /// with its first result and not delivered again (counted as `replayed`). Off by default,
    /// so that tests see every duplicate send.
    #[arg(long, env = "HERALD_SIM_IDEMPOTENT")]
    pub idempotent: bool,

    /// Length of the rate-limit window, in milliseconds.
    #[arg(long, env = "HERALD_SIM_RATE_WINDOW_MS", default_value_t = 1000)]
    pub rate_window_ms: u64,

    /// Where to post delivery receipts (Herald's `POST /v1/receipts`); none are sent without it.
    #[arg(long, env = "HERALD_SIM_RECEIPT_URL")]
    pub receipt_url: Option<String>,

    /// The secret receipts are signed with (`Herald-Signature`); Herald holds the same one in
    /// `HERALD_RECEIPT_SECRETS`. Unset: receipts go unsigned, which only an insecure-dev
    /// Herald accepts.
    #[arg(long, env = "HERALD_SIM_RECEIPT_SECRET", hide_env_values = true)]
    pub receipt_secret: Option<crate::config::Secret>,

    /// How long after accepting a message its receipt is posted, in milliseconds.
    #[arg(long, env = "HERALD_SIM_RECEIPT_DELAY_MS", default_value_t = 100)]
    pub receipt_delay_ms: u64,

    /// Share of receipts (0..1) never sent, as when a handset is off.
    #[arg(long, env = "HERALD_SIM_RECEIPT_LOSS_RATE", default_value_t = 0.0)]
    pub receipt_loss_rate: f64,

    /// Share of receipts (0..1) that report a failed delivery.
    #[arg(long, env = "HERALD_SIM_RECEIPT_FAILURE_RATE", default_value_t = 0.0)]
    pub receipt_failure_rate: f64,

    /// Channels whose receipts are never sent (comma-separated), to force fallbacks.
    #[arg(long, env = "HERALD_SIM_SILENT_CHANNELS", value_delimiter = ',')]
    pub silent_channels: Vec<Channel>,

    /// Share of calls (0..1) that are delivered (and their receipt scheduled) at once but
    /// answered only `--late-answer-ms` later: past a client's time-out, a message that did
    /// go out although the client never heard so.
    #[arg(long, env = "HERALD_SIM_LATE_ANSWER_RATE", default_value_t = 0.0)]
    pub late_answer_rate: f64,

    /// How late a late answer comes, in milliseconds.
    #[arg(long, env = "HERALD_SIM_LATE_ANSWER_MS", default_value_t = 5_000)]
    pub late_answer_ms: u64,
}

/// What the simulator has seen; served at `GET /v1/stats`.
#[derive(Debug, Default, Serialize, serde::Deserialize, Clone, PartialEq, Eq)]
pub struct SimStats {
    pub calls: u64,
    /// When the latest call came (ms since the epoch; 0: none yet).
    #[serde(default)]
    pub last_call_ms: u64,
    pub delivered: u64,
    pub errors: u64,
    pub rate_limited: u64,
    pub hung: u64,
    /// Calls delivered but answered `--late-answer-ms` late.
    #[serde(default)]
    pub late_answers: u64,
    pub unauthorized: u64,
    pub invalid: u64,
    pub distinct_keys: u64,
    /// Idempotency keys that were delivered more than once: must stay 0.
    pub keys_delivered_twice: u64,
    pub max_deliveries_per_key: u64,
    /// Calls answered from an earlier delivery of the same key (`--idempotent` only).
    pub replayed: u64,
    /// Deliveries beyond the first of a key: the messages a customer got twice.
    pub extra_deliveries: u64,
    /// Campaign recipients (`campaign:customer`, from `campaign:customer:channel` keys)
    /// delivered more than once over all channels.
    pub recipients_reached_twice: u64,
    /// Up to 1000 keys delivered more than once, with how often, for a test to account for.
    #[serde(default)]
    pub repeated_keys: Vec<(String, u64)>,
    pub receipts_posted: u64,
    /// Receipts deliberately never sent (loss rate, silent channels).
    pub receipts_withheld: u64,
    pub receipts_failed: u64,
    /// Receipts that could not be posted (Herald unreachable after retries).
    pub receipts_undeliverable: u64,
}

struct Sim {
    args: SimulatorArgs,
    calls: AtomicU64,
    last_call_ms: AtomicU64,
    errors: AtomicU64,
    rate_limited: AtomicU64,
    hung: AtomicU64,
    late_answers: AtomicU64,
    unauthorized: AtomicU64,
    invalid: AtomicU64,
    replayed: AtomicU64,
    deliveries: Mutex<HashMap<String, u64>>,
    window: Mutex<(Instant, u64)>,
    receipts: Option<tokio::sync::mpsc::UnboundedSender<(Instant, Receipt)>>,
    receipt_counts: Arc<ReceiptCounts>,
}

/// Runs the simulator until `shutdown` is cancelled.
pub async fn run(args: SimulatorArgs, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "simulated provider listening");
    serve(listener, args, shutdown).await
}

/// Serves on a listener the caller bound (tests bind port 0).
pub async fn serve(
    listener: tokio::net::TcpListener,
    args: SimulatorArgs,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let receipt_counts = Arc::new(ReceiptCounts::default());
    let receipts = args.receipt_url.clone().map(|url| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(post_receipts(
            args.receipt_secret.clone(),
            rx,
            url,
            receipt_counts.clone(),
            shutdown.clone(),
        ));
        tx
    });
    let sim = Arc::new(Sim {
        receipts,
        receipt_counts,
        args,
        calls: AtomicU64::new(0),
        last_call_ms: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        hung: AtomicU64::new(0),
        late_answers: AtomicU64::new(0),
        unauthorized: AtomicU64::new(0),
        invalid: AtomicU64::new(0),
        replayed: AtomicU64::new(0),
        deliveries: Mutex::new(HashMap::new()),
        window: Mutex::new((Instant::now(), 0)),
    });
    let app = Router::new()
        .route("/v1/notify", post(notify))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/v1/keys/{key}", get(key_deliveries))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .with_state(sim);
    crate::http::serve(listener, app, &crate::http::HttpLimits::default(), shutdown).await
}

async fn notify(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    sim.calls.fetch_add(1, Ordering::Relaxed);
    sim.last_call_ms
        .fetch_max(crate::model::now_ms(), Ordering::Relaxed);
    if headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok()) != Some(sim.args.api_key.expose())
    {
        sim.unauthorized.fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::UNAUTHORIZED, "missing or wrong X-API-Key");
    }
    let channel = match validate_body(&body) {
        Ok(channel) => channel,
        Err(field) => {
            sim.invalid.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("invalid field: {field}"),
            );
        }
    };
    if let Some(retry_after) = sim.over_rate_limit() {
        sim.rate_limited.fetch_add(1, Ordering::Relaxed);
        let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            Json(json!({"error": "rate limited"})),
        )
            .into_response();
    }
    let (fail, hang, latency) = {
        let mut rng = rand::rng();
        let latency = rng.random_range(
            sim.args.latency_min_ms..=sim.args.latency_max_ms.max(sim.args.latency_min_ms),
        );
        (
            rng.random_bool(sim.args.error_rate.clamp(0.0, 1.0)),
            rng.random_bool(sim.args.hang_rate.clamp(0.0, 1.0)),
            latency,
        )
    };
    if hang {
        sim.hung.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(sim.args.hang_ms)).await;
        return error(StatusCode::GATEWAY_TIMEOUT, "hung");
    }
    tokio::time::sleep(Duration::from_millis(latency)).await;
    if fail {
        sim.errors.fetch_add(1, Ordering::Relaxed);
        let status = if rand::rng().random_bool(0.5) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return error(status, "simulated provider failure");
    }
    let key = headers
        .get(IDEMPOTENCY_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    {
        let mut deliveries = sim.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        let count = deliveries.entry(key.clone()).or_insert(0);
        if sim.args.idempotent && *count > 0 {
            sim.replayed.fetch_add(1, Ordering::Relaxed);
        } else {
            *count += 1;
            if *count == 1 {
                sim.schedule_receipt(&key, channel);
            }
        }
    }
    if rand::rng().random_bool(sim.args.late_answer_rate.clamp(0.0, 1.0)) {
        sim.late_answers.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(sim.args.late_answer_ms)).await;
    }
    Json(Accepted {
        status: "delivered",
        provider_id: provider_id(&key),
    })
    .into_response()
}

/// The answer to an accepted message (a struct, not a `json!` map built per call).
#[derive(Serialize)]
struct Accepted {
    status: &'static str,
    provider_id: String,
}

/// The id the simulator gives a message: derived from its key, so a replay answers with the
/// same id, and its receipt names it.
fn provider_id(key: &str) -> String {
    format!("sim-{key}")
}

impl Sim {
    /// Queues the receipt of a first delivery, unless this one is to stay silent.
    fn schedule_receipt(&self, key: &str, channel: Option<Channel>) {
        let Some(tx) = &self.receipts else { return };
        let mut rng = rand::rng();
        let silent = channel.is_some_and(|c| self.args.silent_channels.contains(&c));
        if silent || rng.random_bool(self.args.receipt_loss_rate.clamp(0.0, 1.0)) {
            self.receipt_counts.withheld.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let failed = rng.random_bool(self.args.receipt_failure_rate.clamp(0.0, 1.0));
        let receipt = Receipt {
            key: key.to_string(),
            status: if failed {
                ReceiptStatus::Failed
            } else {
                ReceiptStatus::Delivered
            },
            reason: failed.then(|| "simulated: handset unreachable".to_string()),
            provider_id: Some(provider_id(key)),
        };
        let due = Instant::now() + Duration::from_millis(self.args.receipt_delay_ms);
        let _ = tx.send((due, receipt));
    }

    /// Fixed-window limit; returns how long until the window resets when over it.
    fn over_rate_limit(&self) -> Option<Duration> {
        if self.args.rate_limit == 0 {
            return None;
        }
        let window = Duration::from_millis(self.args.rate_window_ms.max(1));
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(w.0) >= window {
            *w = (now, 0);
        }
        if w.1 >= self.args.rate_limit {
            return Some(window.saturating_sub(now.duration_since(w.0)));
        }
        w.1 += 1;
        None
    }

    fn stats(&self) -> SimStats {
        let deliveries = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        SimStats {
            calls: self.calls.load(Ordering::Relaxed),
            last_call_ms: self.last_call_ms.load(Ordering::Relaxed),
            delivered: deliveries.values().sum(),
            errors: self.errors.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            hung: self.hung.load(Ordering::Relaxed),
            late_answers: self.late_answers.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            distinct_keys: deliveries.len() as u64,
            keys_delivered_twice: deliveries.values().filter(|n| **n > 1).count() as u64,
            max_deliveries_per_key: deliveries.values().copied().max().unwrap_or(0),
            replayed: self.replayed.load(Ordering::Relaxed),
            extra_deliveries: deliveries.values().map(|n| n.saturating_sub(1)).sum(),
            recipients_reached_twice: reached_twice(&deliveries),
            repeated_keys: deliveries
                .iter()
                .filter(|(_, n)| **n > 1)
                .take(1000)
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
            receipts_posted: self.receipt_counts.posted.load(Ordering::Relaxed),
            receipts_withheld: self.receipt_counts.withheld.load(Ordering::Relaxed),
            receipts_failed: self.receipt_counts.failed.load(Ordering::Relaxed),
            receipts_undeliverable: self.receipt_counts.undeliverable.load(Ordering::Relaxed),
        }
    }
}

/// Recipients delivered more than once, whatever the channel: keys `campaign:customer:channel`
/// grouped by what precedes the channel (other keys are their own group).
fn reached_twice(deliveries: &HashMap<String, u64>) -> u64 {
    let mut per_recipient: HashMap<&str, u64> = HashMap::new();
    for (key, n) in deliveries {
        let recipient = key.rsplit_once(':').map_or(key.as_str(), |(r, _)| r);
        *per_recipient.entry(recipient).or_default() += n;
    }
    per_recipient.values().filter(|n| **n > 1).count() as u64
}

/// The fields of a seed 001 message the simulator checks; the rest is ignored. Read into
/// borrowed text where it can be (a `Value` tree per call was most of the handler's
/// allocations); a field that is present but not a string names itself, as before.
#[derive(serde::Deserialize)]
struct Checked<'a> {
    #[serde(borrow, default)]
    to: Option<FieldText<'a>>,
    #[serde(borrow, default)]
    message: Option<FieldText<'a>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<FieldText<'a>>,
}

/// A JSON value kept as text when it is a string (borrowed unless it has escapes).
enum FieldText<'a> {
    Text(std::borrow::Cow<'a, str>),
    NotText,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for FieldText<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw<'a> {
            Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
            Other(serde::de::IgnoredAny),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Text(t) => FieldText::Text(t),
            Raw::Other(_) => FieldText::NotText,
        })
    }
}

impl FieldText<'_> {
    fn non_empty(field: &Option<Self>) -> Option<&str> {
        match field {
            Some(FieldText::Text(t)) if !t.is_empty() => Some(t),
            _ => None,
        }
    }
}

fn validate_body(body: &[u8]) -> Result<Option<Channel>, &'static str> {
    let v: Checked = serde_json::from_slice(body).map_err(|_| "body")?;
    FieldText::non_empty(&v.to).ok_or("to")?;
    FieldText::non_empty(&v.message).ok_or("message")?;
    let kind = FieldText::non_empty(&v.kind).ok_or("type")?;
    Ok(kind.parse().ok())
}

async fn stats(State(sim): State<Arc<Sim>>) -> Json<SimStats> {
    Json(sim.stats())
}

/// The same counts for Prometheus (`herald_simulator_total{what}`), so a dashboard can
/// set what Herald says it sent beside what the provider saw.
async fn metrics(State(sim): State<Arc<Sim>>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let family = crate::prom::counters_from(
        "herald_simulator",
        "What the simulated provider saw, by kind (calls, delivered, errors, rate_limited...).",
        "what",
        &sim.stats(),
        &[],
    );
    (
        [(axum::http::header::CONTENT_TYPE, crate::prom::CONTENT_TYPE)],
        crate::prom::render(vec![family]),
    )
        .into_response()
}

async fn key_deliveries(
    State(sim): State<Arc<Sim>>,
    Path(key): Path<String>,
) -> Json<serde_json::Value> {
    let n = sim
        .deliveries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .copied()
        .unwrap_or(0);
    Json(json!({"key": key, "deliveries": n}))
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"error": msg}))).into_response()
}

/// A stand-in for the external provider (`POST /v1/notify` with `X-API-Key`) that can be
/// slow, fail, rate-limit and hang on demand; `GET /v1/stats` tells what it saw.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "herald-provider", version)]
pub struct Args {
    #[command(flatten)]
    pub sim: SimulatorArgs,

    /// Log format.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The `herald-provider` program.
pub struct Program(SimulatorArgs);

impl crate::program::Program for Program {
    type Args = Args;

    async fn from_args(args: &Args) -> anyhow::Result<Self> {
        Ok(Program(args.sim.clone()))
    }

    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        Ok(run(self.0, shutdown).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_checked_field_by_field_and_the_first_bad_one_is_named() {
        let ok = br#"{"to":"a@b.example","message":"hi","type":"email","extra":[1,{"x":2}]}"#;
        assert_eq!(validate_body(ok), Ok(Some(Channel::Email)));
        let escaped = br#"{"to":"a\u0040b.example","message":"h\"i","type":"sms"}"#;
        assert_eq!(validate_body(escaped), Ok(Some(Channel::Sms)));
        assert_eq!(
            validate_body(br#"{"to":"x","message":"m","type":"pigeon"}"#),
            Ok(None)
        );
        for (body, field) in [
            (&br#"{"message":"m","type":"email"}"#[..], "to"),
            (br#"{"to":"","message":"m","type":"email"}"#, "to"),
            (br#"{"to":"x","message":7,"type":"email"}"#, "message"),
            (br#"{"to":"x","message":"m","type":null}"#, "type"),
            (br#"{"to":"x","message":"m"}"#, "type"),
            (br#"not json"#, "body"),
        ] {
            assert_eq!(
                validate_body(body),
                Err(field),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
