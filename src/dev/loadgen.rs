//! Load for the demo and the benchmarks: seed 001's requests created, processed and watched
//! until they end, synthetic customers, a campaign to all of them, and flash-promo
//! reservations. Used by `herald-dev`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use serde_json::{json, Value};

use crate::client::{ApiClient, ClientError};
use crate::model::{Channel, Location};

/// The result of one run: every request's final status, and how long it took.
#[derive(Debug, Default)]
pub struct Report {
    pub statuses: BTreeMap<String, u64>,
    pub submit_time: Duration,
    pub total_time: Duration,
    pub http_5xx: u64,
}

/// Creates and processes one request; returns its id.
pub async fn create_and_process(
    api: &ApiClient,
    to: &str,
    channel: Channel,
) -> Result<String, ClientError> {
    let created = api
        .post(
            "create",
            "/v1/requests",
            json!({"to": to, "message": "Your offer is waiting", "type": channel}),
        )
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_string();
    api.post("process", &format!("/v1/requests/{id}/process"), json!({}))
        .await?;
    Ok(id)
}

/// Sends `count` requests across `channels` with `concurrency` in flight, printing
/// progress, then waits up to `wait` for all of them to end.
pub async fn send_requests(
    api: &ApiClient,
    count: u64,
    channels: &[Channel],
    concurrency: usize,
    wait: Duration,
) -> Result<Report, ClientError> {
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress("submitted", count, done.clone());
    let results: Vec<Result<String, ClientError>> = stream::iter(0..count)
        .map(|i| {
            let channel = channels[(i as usize) % channels.len().max(1)];
            let done = done.clone();
            async move {
                let r =
                    create_and_process(api, &format!("customer-{i}@example.com"), channel).await;
                done.fetch_add(1, Ordering::Relaxed);
                r
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    progress.abort();
    let mut report = Report {
        submit_time: started.elapsed(),
        ..Report::default()
    };
    let mut ids = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(id) => ids.push(id),
            Err(ClientError::Refused { status, .. }) if status >= 500 => report.http_5xx += 1,
            Err(e) => return Err(e),
        }
    }
    eprintln!(
        "submitted {} requests in {:.1}s; waiting for them to end",
        ids.len(),
        report.submit_time.as_secs_f64()
    );
    report.statuses = wait_until_ended(api, &ids, concurrency, wait).await?;
    report.total_time = started.elapsed();
    Ok(report)
}

/// Polls statuses until every request is `sent` or `failed`, or `wait` passes.
pub async fn wait_until_ended(
    api: &ApiClient,
    ids: &[String],
    concurrency: usize,
    wait: Duration,
) -> Result<BTreeMap<String, u64>, ClientError> {
    let deadline = Instant::now() + wait;
    let mut pending: Vec<String> = ids.to_vec();
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let statuses: Vec<(String, Result<String, ClientError>)> = stream::iter(pending.clone())
            .map(|id| async move {
                let s = api.status(&id).await;
                (id, s)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut still = Vec::new();
        let mut open: BTreeMap<String, u64> = BTreeMap::new();
        for (id, s) in statuses {
            let s = s?;
            if s == "sent" || s == "failed" {
                *ended.entry(s).or_insert(0) += 1;
            } else {
                *open.entry(s).or_insert(0) += 1;
                still.push(id);
            }
        }
        pending = still;
        eprintln!("  {}", summary(&ended, &open));
        if pending.is_empty() || Instant::now() >= deadline {
            for (k, v) in open {
                *ended.entry(k).or_insert(0) += v;
            }
            return Ok(ended);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn summary(ended: &BTreeMap<String, u64>, open: &BTreeMap<String, u64>) -> String {
    let mut parts: Vec<String> = ended
        .iter()
        .chain(open.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    parts.sort();
    parts.join("  ")
}

fn spawn_progress(
    what: &'static str,
    total: u64,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = done.load(Ordering::Relaxed);
            let rate = n as f64 / start.elapsed().as_secs_f64();
            eprintln!("  {what} {n}/{total} ({rate:.0}/s)");
        }
    })
}

/// Stores `count` synthetic customers reachable on `channels`, 1000 per call.
/// Stores `count` synthetic customers `{prefix}0..`, each placed within `area` (centre
/// and radius in metres) when given.
pub async fn seed_customers(
    api: &ApiClient,
    prefix: &str,
    count: u64,
    channels: &[Channel],
    area: Option<(Location, f64)>,
    concurrency: usize,
) -> Result<(), ClientError> {
    let batches: Vec<(u64, u64)> = (0..count)
        .step_by(1000)
        .map(|start| (start, (start + 1000).min(count)))
        .collect();
    let done = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress("customers stored", count, done.clone());
    let results: Vec<Result<Value, ClientError>> = stream::iter(batches)
        .map(|(start, end)| {
            let customers: Vec<Value> = (start..end)
                .map(|i| {
                    let mut c = synthetic_customer(&format!("{prefix}{i}"), i, channels);
                    if let Some((centre, radius_m)) = area {
                        c["location"] = json!(spread(centre, radius_m, i));
                    }
                    c
                })
                .collect();
            let done = &done;
            async move {
                let r = api
                    .post(
                        "customers",
                        "/v1/customers/batch",
                        json!({ "customers": customers }),
                    )
                    .await;
                done.fetch_add(end - start, Ordering::Relaxed);
                r
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    progress.abort();
    eprintln!(
        "  customers stored: {}/{count}",
        done.load(Ordering::Relaxed)
    );
    results.into_iter().try_for_each(|r| r.map(|_| ()))
}

/// Posts a campaign to customers `{prefix}0..{prefix}{count-1}`; returns the API's answer.
pub async fn send_campaign(
    api: &ApiClient,
    id: &str,
    prefix: &str,
    count: u64,
    channels: &[Channel],
    timeout_ms: u64,
) -> Result<Value, ClientError> {
    let audience: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    let timeouts: serde_json::Map<String, Value> = channels
        .iter()
        .map(|c| (c.to_string(), json!(timeout_ms)))
        .collect();
    api.post(
        "campaign",
        "/v1/campaigns",
        json!({
            "id": id,
            "name": format!("{count}-customer offer"),
            "template": "Hi {{ name }}, today's offer: 20% off everything",
            "email": {
                "subject": "{{ name }}, 20% off today",
                "html": "<p>Hi <b>{{ name }}</b>,</p><p>today's offer: <b>20% off</b> everything.</p>",
            },
            "translations": {"es": {
                "template": "Hola {{ name }}, tu oferta de hoy: 20% en todo",
                "email": {
                    "subject": "{{ name }}, hoy un 20% de descuento",
                    "html": "<p>Hola <b>{{ name }}</b>,</p><p>tu oferta de hoy: <b>20%</b> en todo.</p>",
                },
            }},
            "channels": channels,
            "confirmation_timeout_ms": timeouts,
            "audience": {"customer_ids": audience},
        }),
    )
    .await
}

/// A customer reachable on `channels`; every other one reads Spanish, the rest English.
fn synthetic_customer(id: &str, i: u64, channels: &[Channel]) -> Value {
    let contacts: serde_json::Map<String, Value> = channels
        .iter()
        .map(|c| (c.to_string(), json!(format!("{id}@{c}.example"))))
        .collect();
    let consent: serde_json::Map<String, Value> = channels
        .iter()
        .map(|c| (c.to_string(), json!(true)))
        .collect();
    let language = if i.is_multiple_of(2) { "es" } else { "en" };
    json!({"id": id, "name": format!("Cliente {id}"), "contacts": contacts, "consent": consent,
           "time_zone": "Europe/Madrid", "language": language})
}

/// The `i`-th of many points spread evenly over a disc (a sunflower pattern), so seeded
/// customers fill a store's radius deterministically.
pub fn spread(centre: Location, radius_m: f64, i: u64) -> Location {
    const M_PER_DEG: f64 = 6_372_797.560_856 * std::f64::consts::PI / 180.0;
    let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
    let r = radius_m * (((i % 10_000) as f64 + 0.5) / 10_000.0).sqrt();
    let a = i as f64 * golden;
    Location {
        lat: centre.lat + r * a.cos() / M_PER_DEG,
        lon: centre.lon + r * a.sin() / (M_PER_DEG * centre.lat.to_radians().cos()),
    }
}

/// What [`bench_reserve`] measured.
pub struct ReserveRun {
    /// Each call's latency in milliseconds, sorted.
    pub latencies: Vec<f64>,
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// From the first call to the last answer: the tokens are minted before, not timed.
    pub elapsed: Duration,
}

/// Sends one reservation for each of `users` synthetic users (`{prefix}0..`) to a flash
/// promo, `concurrency` at a time, with tokens minted by `jwt` beforehand; returns the
/// latencies, how many of each status, and how long the calls took.
pub async fn bench_reserve(
    api: &str,
    promo: &str,
    jwt: &crate::auth::Jwt,
    prefix: &str,
    users: u64,
    concurrency: usize,
) -> Result<ReserveRun, ClientError> {
    let tokens: Vec<String> = (0..users)
        .map(|i| {
            jwt.mint(
                &format!("{prefix}{i}"),
                crate::auth::Role::User,
                Duration::from_secs(3600),
            )
            .unwrap_or_default()
        })
        .collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(|source| ClientError::Unreachable {
            url: api.to_string(),
            source,
        })?;
    let url = format!("{api}/api/flash-promos/{promo}/reserve/");
    let calls_started = Instant::now();
    let results: Vec<Result<(f64, u16), ClientError>> = stream::iter(tokens)
        .map(|token| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let started = Instant::now();
                let r = http
                    .post(&url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .map_err(|source| ClientError::Unreachable {
                        url: url.clone(),
                        source,
                    })?;
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                Ok((started.elapsed().as_secs_f64() * 1000.0, status))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = calls_started.elapsed();
    let mut latencies = Vec::with_capacity(results.len());
    let mut statuses = std::collections::BTreeMap::new();
    for r in results {
        let (ms, status) = r?;
        latencies.push(ms);
        *statuses.entry(status).or_insert(0) += 1;
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(ReserveRun {
        latencies,
        statuses,
        elapsed,
    })
}
