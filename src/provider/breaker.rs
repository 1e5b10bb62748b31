//! A circuit breaker in front of the provider: after enough consecutive failures it stops
//! calling for a cool-down, then lets one probe through. Its state is also what channel
//! rules read as "provider health".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

pub struct CircuitBreaker {
    inner: Mutex<Inner>,
    failure_threshold: u32,
    cooldown: Duration,
    opened_total: AtomicU64,
}

struct Inner {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    probe_in_flight: bool,
}

/// The circuit is open; try again after `retry_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub retry_in: Duration,
}

impl CircuitBreaker {
    pub fn new(failure_threshold: u32, cooldown: Duration) -> Self {
        CircuitBreaker {
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                open_until: None,
                probe_in_flight: false,
            }),
            failure_threshold: failure_threshold.max(1),
            cooldown,
            opened_total: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks to make a call.
    pub fn check(&self) -> Result<(), Open> {
        let mut s = self.lock();
        let Some(until) = s.open_until else {
            return Ok(());
        };
        let now = Instant::now();
        if now < until {
            return Err(Open {
                retry_in: until - now,
            });
        }
        if s.probe_in_flight {
            return Err(Open {
                retry_in: self.cooldown / 4,
            });
        }
        s.probe_in_flight = true;
        Ok(())
    }

    pub fn record_success(&self) {
        let mut s = self.lock();
        s.consecutive_failures = 0;
        s.open_until = None;
        s.probe_in_flight = false;
    }

    pub fn record_failure(&self) {
        let mut s = self.lock();
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        let probe_failed = s.probe_in_flight;
        s.probe_in_flight = false;
        if probe_failed
            || (s.open_until.is_none() && s.consecutive_failures >= self.failure_threshold)
        {
            s.open_until = Some(Instant::now() + self.cooldown);
            self.opened_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(failures = s.consecutive_failures, "provider circuit opened");
        }
    }

    /// A call that neither succeeded nor failed on the provider's side (e.g. a 429): if it
    /// was the probe, let another probe go.
    pub fn record_neutral(&self) {
        self.lock().probe_in_flight = false;
    }

    pub fn state(&self) -> CircuitState {
        let s = self.lock();
        match s.open_until {
            None => CircuitState::Closed,
            Some(until) if Instant::now() < until => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }

    pub fn times_opened(&self) -> u64 {
        self.opened_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_probes_once() {
        let b = CircuitBreaker::new(3, Duration::from_secs(1));
        for _ in 0..2 {
            b.record_failure();
        }
        assert!(b.check().is_ok(), "two failures do not open it");
        b.record_failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.check().is_err());
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.check().is_ok(), "one probe after the cool-down");
        assert!(b.check().is_err(), "but only one");
        b.record_success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.check().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let b = CircuitBreaker::new(1, Duration::from_secs(1));
        b.record_failure();
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.check().is_ok());
        b.record_failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.times_opened(), 2);
    }

    #[test]
    fn successes_reset_the_count() {
        let b = CircuitBreaker::new(2, Duration::from_secs(1));
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
