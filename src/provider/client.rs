//! The one way Herald calls the external provider: time-out per call, bounded retries with
//! jittered exponential back-off on 5xx and network errors, `Retry-After` honoured on 429
//! through the adaptive limiter, a concurrency cap, and a circuit breaker. Every call carries
//! the notification's idempotency key.
//!
//! Retries are hand-written rather than taken from `backon`/`backoff`: the loop has to
//! interleave the limiter, the breaker, lease renewal and cancellation, which is where those
//! crates stop helping.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::shutdown::sleep_unless_cancelled;

use super::breaker::{CircuitBreaker, CircuitState};
use super::limiter::AdaptiveRateLimiter;
use crate::config::{ProviderArgs, Secret};
use crate::model::Message;

pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
pub const API_KEY_HEADER: &str = "X-API-Key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Delivered {
        provider_id: String,
    },
    /// Ended without success: a permanent rejection or retries exhausted.
    Failed {
        reason: String,
    },
    /// Gave up without an outcome (shutdown, or the lease went to someone else): not ours to
    /// record. `maybe_sent` when an earlier attempt ended without an answer (a time-out or a
    /// broken connection after the request left), so the provider may have accepted it.
    Abandoned {
        maybe_sent: bool,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// 429s are waited out, not counted as attempts, but not forever.
    pub max_rate_limited: u32,
}

impl RetryPolicy {
    /// Full jitter: a uniform wait in [0, min(max, base * 2^attempt)].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base_backoff.saturating_mul(1u32 << attempt.min(16));
        let cap = exp.min(self.max_backoff);
        let millis = cap.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

/// Counters an operator (and the tests) read.
#[derive(Debug, Default, serde::Serialize)]
pub struct ProviderStats {
    pub calls: AtomicU64,
    pub delivered: AtomicU64,
    pub server_errors: AtomicU64,
    pub network_errors: AtomicU64,
    pub rate_limited: AtomicU64,
    pub rejected: AtomicU64,
}

enum AttemptError {
    RateLimited {
        retry_after: Duration,
    },
    Rejected {
        status: StatusCode,
        body: String,
    },
    /// Worth another try. `maybe_sent` when there was no answer to a request that may have
    /// arrived (a time-out, or the connection broke after it was made).
    Transient {
        why: String,
        maybe_sent: bool,
    },
}

pub struct ProviderClient {
    http: reqwest::Client,
    notify_url: String,
    api_key: Secret,
    limiter: AdaptiveRateLimiter,
    breaker: CircuitBreaker,
    concurrency: Arc<Semaphore>,
    policy: RetryPolicy,
    pub stats: ProviderStats,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("cannot build the provider's HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A rate that is not a positive number would stall or break the limiter.
    #[error("--{0} must be a positive number, not {1}")]
    Rate(&'static str, f64),
    #[error("HERALD_PROVIDER_API_KEY is empty: set the key your provider gave you")]
    EmptyKey,
}

impl ProviderClient {
    pub fn new(args: &ProviderArgs) -> Result<Self, ClientBuildError> {
        for (flag, rate) in [
            ("provider-rate", args.provider_rate),
            ("provider-max-rate", args.provider_max_rate),
        ] {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ClientBuildError::Rate(flag, rate));
            }
        }
        if args.provider_api_key.expose().trim().is_empty() {
            return Err(ClientBuildError::EmptyKey);
        }
        let http = reqwest::Client::builder()
            // A redirect would carry X-API-Key to wherever it points: a provider that moves
            // is configured anew, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(args.timeout())
            .connect_timeout(args.timeout().min(Duration::from_secs(2)))
            .pool_max_idle_per_host(args.provider_concurrency)
            .tcp_nodelay(true)
            .build()?;
        Ok(ProviderClient {
            http,
            notify_url: format!("{}/v1/notify", args.provider_url.trim_end_matches('/')),
            api_key: args.provider_api_key.clone(),
            limiter: AdaptiveRateLimiter::new(args.provider_rate, args.provider_max_rate),
            breaker: CircuitBreaker::new(
                args.provider_breaker_failures,
                Duration::from_millis(args.provider_breaker_cooldown_ms),
            ),
            concurrency: Arc::new(Semaphore::new(args.provider_concurrency.max(1))),
            policy: RetryPolicy {
                max_attempts: args.provider_max_attempts.max(1),
                base_backoff: Duration::from_millis(args.provider_backoff_ms),
                max_backoff: Duration::from_millis(args.provider_backoff_max_ms),
                max_rate_limited: 30,
            },
            stats: ProviderStats::default(),
        })
    }

    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state()
    }

    pub fn current_rate(&self) -> f64 {
        self.limiter.current_rate()
    }

    /// Sends `msg` until it is delivered, permanently rejected, or out of attempts.
    /// `before_attempt` runs right before each call; if it answers `false` (the caller lost
    /// its claim) nothing more is sent.
    pub async fn send<F, Fut>(
        &self,
        idempotency_key: &str,
        msg: &Message,
        cancel: &CancellationToken,
        mut before_attempt: F,
    ) -> SendOutcome
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut failures = 0u32;
        let mut rate_limited = 0u32;
        let mut last_error: String;
        let mut maybe_sent = false;
        let abandoned = |maybe_sent| SendOutcome::Abandoned { maybe_sent };
        loop {
            if let Err(open) = self.breaker.check() {
                failures += 1;
                last_error = "provider circuit open".into();
                if failures >= self.policy.max_attempts {
                    break;
                }
                let wait = open.retry_in.max(self.policy.backoff(failures));
                if !sleep_unless_cancelled(wait, cancel).await {
                    return abandoned(maybe_sent);
                }
                continue;
            }
            if !self.wait_for_slot(cancel).await {
                return abandoned(maybe_sent);
            }
            let renewing = tokio::time::Instant::now();
            if !before_attempt().await {
                self.breaker.record_neutral();
                return abandoned(maybe_sent);
            }
            // A slow renewal (Redis down) makes the reserved slot stale; callers that all
            // waited on Redis would otherwise call the provider in one burst when it returns.
            if renewing.elapsed() > Duration::from_millis(250) && !self.wait_for_slot(cancel).await
            {
                return abandoned(maybe_sent);
            }
            match self.attempt(idempotency_key, msg).await {
                Ok(provider_id) => {
                    self.breaker.record_success();
                    self.limiter.on_admitted();
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    return SendOutcome::Delivered { provider_id };
                }
                Err(AttemptError::RateLimited { retry_after }) => {
                    self.breaker.record_neutral();
                    self.limiter.on_rate_limited(retry_after);
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    rate_limited += 1;
                    last_error = "provider rate limit (429)".into();
                    if rate_limited > self.policy.max_rate_limited {
                        break;
                    }
                }
                Err(AttemptError::Rejected { status, body }) => {
                    self.breaker.record_neutral();
                    self.limiter.on_admitted();
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    return SendOutcome::Failed {
                        reason: format!("provider rejected: {status} {body}"),
                    };
                }
                Err(AttemptError::Transient {
                    why,
                    maybe_sent: no_answer,
                }) => {
                    maybe_sent |= no_answer;
                    self.breaker.record_failure();
                    // A 5xx or a time-out still used up one of the provider's admissions.
                    self.limiter.on_admitted();
                    failures += 1;
                    last_error = why;
                    if failures >= self.policy.max_attempts {
                        break;
                    }
                    if !sleep_unless_cancelled(self.policy.backoff(failures), cancel).await {
                        return abandoned(maybe_sent);
                    }
                }
            }
        }
        SendOutcome::Failed {
            reason: format!("gave up after {failures} failed attempts: {last_error}"),
        }
    }

    /// Waits for a rate-limit slot; `false` if cancelled first.
    async fn wait_for_slot(&self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            _ = cancel.cancelled() => {
                self.breaker.record_neutral();
                false
            }
            _ = self.limiter.acquire() => true,
        }
    }

    async fn attempt(&self, idempotency_key: &str, msg: &Message) -> Result<String, AttemptError> {
        let _permit = self
            .concurrency
            .acquire()
            .await
            .map_err(|_| AttemptError::Transient {
                why: "client shutting down".into(),
                maybe_sent: false,
            })?;
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .post(&self.notify_url)
            .header(API_KEY_HEADER, self.api_key.expose())
            .header(IDEMPOTENCY_KEY_HEADER, idempotency_key)
            .json(msg)
            .send()
            .await
            .map_err(|e| {
                self.stats.network_errors.fetch_add(1, Ordering::Relaxed);
                AttemptError::Transient {
                    why: describe_reqwest_error(&e),
                    maybe_sent: !e.is_connect(),
                }
            })?;
        let status = response.status();
        if status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let id = body
                .get("provider_id")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            return Ok(id.to_string());
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after =
                parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
            return Err(AttemptError::RateLimited { retry_after });
        }
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
            return Err(AttemptError::Transient {
                why: format!("provider answered {status}"),
                maybe_sent: false,
            });
        }
        let body = response.text().await.unwrap_or_default();
        Err(AttemptError::Rejected {
            status,
            body: body.chars().take(200).collect(),
        })
    }
}

fn describe_reqwest_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "provider call timed out".into()
    } else if e.is_connect() {
        "cannot connect to provider".into()
    } else {
        format!("provider call failed: {e}")
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from APIs; it falls back to 1 s).
pub fn parse_retry_after(value: Option<&reqwest::header::HeaderValue>) -> Duration {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(300.0)))
        .unwrap_or(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn args(rate: f64, max_rate: f64) -> ProviderArgs {
        ProviderArgs {
            provider_url: "http://127.0.0.1:1".into(),
            provider_api_key: "k".into(),
            provider_timeout_ms: 1000,
            provider_max_attempts: 1,
            provider_backoff_ms: 1,
            provider_backoff_max_ms: 1,
            provider_concurrency: 1,
            provider_rate: rate,
            provider_max_rate: max_rate,
            provider_breaker_failures: 1,
            provider_breaker_cooldown_ms: 1,
        }
    }

    #[test]
    fn a_rate_that_is_not_a_positive_number_is_refused_at_start() {
        assert!(ProviderClient::new(&args(500.0, 1000.0)).is_ok());
        let mut keyless = args(500.0, 1000.0);
        keyless.provider_api_key = " ".into();
        assert!(matches!(
            ProviderClient::new(&keyless),
            Err(ClientBuildError::EmptyKey)
        ));
        for (rate, max) in [
            (f64::NAN, 10.0),
            (-1.0, 10.0),
            (0.0, 10.0),
            (5.0, f64::INFINITY),
        ] {
            let refused = ProviderClient::new(&args(rate, max)).err();
            assert!(
                matches!(refused, Some(ClientBuildError::Rate(..))),
                "{rate} {max}: {refused:?}"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_defaults_to_one() {
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static("3"))),
            Duration::from_secs(3)
        );
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static("0.5"))),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static("soon"))),
            Duration::from_secs(1)
        );
        assert_eq!(parse_retry_after(None), Duration::from_secs(1));
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_rate_limited: 1,
        };
        for attempt in 0..20 {
            assert!(p.backoff(attempt) <= Duration::from_millis(1000));
        }
        let max_seen_early = (0..200).map(|_| p.backoff(0)).max().unwrap();
        assert!(max_seen_early <= Duration::from_millis(100));
    }
}
