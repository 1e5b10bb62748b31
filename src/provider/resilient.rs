//! What every adapter gets around its calls: a time-out per call (the adapter's), bounded
//! retries with jittered exponential back-off on transient errors, `Retry-After` honoured
//! through the adaptive limiter, a concurrency cap, and a circuit breaker.
//!
//! Retries are hand-written rather than taken from `backon`/`backoff`: the loop has to
//! interleave the limiter, the breaker, lease renewal and cancellation, which is where those
//! crates stop helping.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::breaker::{CircuitBreaker, CircuitState};
use super::limiter::AdaptiveRateLimiter;
use super::{AttemptError, Outgoing, SendOutcome, Transport};
use crate::config::ProviderArgs;
use crate::shutdown::sleep_unless_cancelled;

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
    /// Addresses the provider said can never receive.
    pub undeliverable: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum ResilienceError {
    /// A rate that is not a positive number would stall or break the limiter.
    #[error("--{0} must be a positive number, not {1}")]
    Rate(&'static str, f64),
}

/// The limiter, breaker, concurrency cap and retry policy of one provider.
pub struct Resilience {
    /// Herald's own bound on one call, whatever the adapter's library does (lettre's covers
    /// only connecting: a relay silent after DATA was waited for without end).
    call_timeout: Duration,
    limiter: AdaptiveRateLimiter,
    breaker: CircuitBreaker,
    concurrency: Arc<Semaphore>,
    policy: RetryPolicy,
    pub stats: ProviderStats,
}

impl Resilience {
    pub fn new(args: &ProviderArgs) -> Result<Self, ResilienceError> {
        for (flag, rate) in [
            ("provider-rate", args.provider_rate),
            ("provider-max-rate", args.provider_max_rate),
        ] {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ResilienceError::Rate(flag, rate));
            }
        }
        Ok(Resilience {
            // A little past the adapter's own time-out, so that an adapter which bounds its
            // call answers first with its own reason.
            call_timeout: Duration::from_millis(args.provider_timeout_ms.max(1))
                + Duration::from_millis(250),
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

    /// Whether a call made now would start at once: circuit closed, no wait for the rate
    /// limit, a free concurrency permit. A hint (others may take the turn first).
    pub fn free_now(&self) -> bool {
        self.breaker.state() == CircuitState::Closed
            && self.limiter.free_now()
            && self.concurrency.available_permits() > 0
    }

    /// Sends `out` through `transport` until it is accepted, permanently refused, or out of
    /// attempts (then [`SendOutcome::Unavailable`]). `before_attempt` runs right before each
    /// call, told whether an earlier attempt may have reached the provider (it timed out or
    /// broke after the request left: an uncertain send); if it answers `false` (the caller
    /// lost its claim, or its policy forbids sending an uncertain send again) nothing more is
    /// sent. With `has_fallback` (another provider can take it) an open circuit is given up on
    /// at once instead of waited out.
    pub async fn send<F, Fut>(
        &self,
        transport: &dyn Transport,
        out: &Outgoing<'_>,
        cancel: &CancellationToken,
        has_fallback: bool,
        mut before_attempt: F,
    ) -> SendOutcome
    where
        F: FnMut(bool) -> Fut,
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
                if has_fallback || failures >= self.policy.max_attempts {
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
            // The permit before the gate: between `before_attempt` (the renewal that checks
            // pause, cancel and expiry) and the call, nothing may wait.
            let Some(permit) = self.call_permit(cancel).await else {
                return abandoned(maybe_sent);
            };
            let renewing = tokio::time::Instant::now();
            if !before_attempt(maybe_sent).await {
                self.breaker.record_neutral();
                return abandoned(maybe_sent);
            }
            // A slow renewal (Redis down) makes the reserved slot stale; callers that all
            // waited on Redis would otherwise call the provider in one burst when it returns.
            if renewing.elapsed() > Duration::from_millis(250) && !self.wait_for_slot(cancel).await
            {
                return abandoned(maybe_sent);
            }
            let answer = self.attempt(transport, out).await;
            drop(permit); // not held through a back-off
            match answer {
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
                    last_error = "provider rate limit".into();
                    if rate_limited > self.policy.max_rate_limited {
                        break;
                    }
                }
                Err(AttemptError::Rejected { reason }) => {
                    self.breaker.record_neutral();
                    self.limiter.on_admitted();
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    return SendOutcome::Failed { reason };
                }
                Err(AttemptError::Undeliverable { reason }) => {
                    self.breaker.record_neutral();
                    self.limiter.on_admitted();
                    self.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
                    return SendOutcome::Undeliverable { reason };
                }
                Err(AttemptError::Transient {
                    why,
                    maybe_sent: no_answer,
                    network,
                }) => {
                    let counter = if network {
                        &self.stats.network_errors
                    } else {
                        &self.stats.server_errors
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
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
        SendOutcome::Unavailable {
            reason: format!("gave up after {failures} failed attempts: {last_error}"),
            maybe_sent,
        }
    }

    async fn attempt(
        &self,
        transport: &dyn Transport,
        out: &Outgoing<'_>,
    ) -> Result<String, AttemptError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.call_timeout, transport.attempt(out)).await {
            Ok(answer) => answer.map_err(AttemptError::redacted),
            // The request may have left: whatever was under way may have been accepted.
            Err(_) => Err(AttemptError::Transient {
                why: format!("no answer within {} ms", self.call_timeout.as_millis()),
                maybe_sent: true,
                network: true,
            }),
        }
    }

    /// Waits for one of the provider's concurrent calls; `None` if cancelled first.
    async fn call_permit(
        &self,
        cancel: &CancellationToken,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed, so an error cannot come; treated as cancelled.
        self.unless_cancelled(self.concurrency.acquire(), cancel)
            .await?
            .ok()
    }

    /// Waits for a rate-limit slot; `false` if cancelled first.
    async fn wait_for_slot(&self, cancel: &CancellationToken) -> bool {
        self.unless_cancelled(self.limiter.acquire(), cancel)
            .await
            .is_some()
    }

    /// Waits for `wait`; `None` if cancelled first, which counts for nothing on the breaker.
    async fn unless_cancelled<T>(
        &self,
        wait: impl Future<Output = T>,
        cancel: &CancellationToken,
    ) -> Option<T> {
        let done = cancel.run_until_cancelled(wait).await;
        if done.is_none() {
            self.breaker.record_neutral();
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Answers only when `open` is notified, and says when a call came in.
    struct Gated {
        entered: tokio::sync::Notify,
        open: tokio::sync::Notify,
    }

    impl Transport for Gated {
        fn attempt<'a>(&'a self, _out: &'a Outgoing<'a>) -> super::super::AttemptFuture<'a> {
            Box::pin(async move {
                self.entered.notify_one();
                self.open.notified().await;
                Ok("id".to_string())
            })
        }
    }

    /// The gate (`before_attempt`: the lease renewal that checks pause, cancel and expiry)
    /// must be the last thing before the call: a send that passed it and then waited for a
    /// concurrency permit would call the provider after an expiry it was checked against.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_send_passes_its_gate_while_it_still_waits_for_a_concurrency_permit() {
        use std::sync::atomic::AtomicBool;
        let resilience =
            Arc::new(Resilience::new(&ProviderArgs::for_tests(100_000.0, 100_000.0)).unwrap());
        let transport = Arc::new(Gated {
            entered: tokio::sync::Notify::new(),
            open: tokio::sync::Notify::new(),
        });
        let message = crate::model::Message {
            to: "+34600000000".into(),
            message: "hi".into(),
            channel: crate::model::Channel::Sms,
        };
        let send = |gate: Arc<AtomicBool>| {
            let (resilience, transport, message) =
                (resilience.clone(), transport.clone(), message.clone());
            tokio::spawn(async move {
                let out = Outgoing::transactional("c:u:sms", &message);
                let cancel = CancellationToken::new();
                resilience
                    .send(&*transport, &out, &cancel, false, |_| {
                        gate.store(true, Ordering::SeqCst);
                        async { true }
                    })
                    .await
            })
        };
        let first_gate = Arc::new(AtomicBool::new(false));
        let first = send(first_gate.clone());
        transport.entered.notified().await;
        // The only permit is the first call's, under way.
        let second_gate = Arc::new(AtomicBool::new(false));
        let second = send(second_gate.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !second_gate.load(Ordering::SeqCst),
            "the second send passed its gate before it could call"
        );
        transport.open.notify_one();
        assert!(matches!(
            first.await.unwrap(),
            SendOutcome::Delivered { .. }
        ));
        transport.entered.notified().await;
        assert!(second_gate.load(Ordering::SeqCst));
        transport.open.notify_one();
        assert!(matches!(
            second.await.unwrap(),
            SendOutcome::Delivered { .. }
        ));
    }
}
