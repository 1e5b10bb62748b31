//! A client-side rate limit that finds the provider's rate by itself.
//!
//! Calls are spaced evenly at the current rate (each caller reserves the next free slot, so
//! it works at any rate with any number of waiters). On a 429 every caller pauses until
//! `Retry-After` and the rate drops to just under what the provider actually accepted over
//! the last second; each success raises it a little. Against a provider that accepts N per
//! second this settles near N with only an occasional 429 as it probes upward.
//!
//! `governor` was considered, but its quota is fixed once built; this needs a rate that moves.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(1);

pub struct AdaptiveRateLimiter {
    state: Mutex<State>,
    min_rate: f64,
    max_rate: f64,
}

struct State {
    rate: f64,
    next_slot: Instant,
    paused_until: Instant,
    recent_successes: VecDeque<Instant>,
}

impl AdaptiveRateLimiter {
    pub fn new(initial_rate: f64, max_rate: f64) -> Self {
        let min_rate = 0.5;
        let max_rate = max_rate.max(min_rate);
        let now = Instant::now();
        AdaptiveRateLimiter {
            state: Mutex::new(State {
                rate: initial_rate.clamp(min_rate, max_rate),
                next_slot: now,
                paused_until: now,
                recent_successes: VecDeque::new(),
            }),
            min_rate,
            max_rate,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain numbers behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for this caller's turn.
    pub async fn acquire(&self) {
        let slot = {
            let mut s = self.lock();
            let now = Instant::now();
            let slot = now.max(s.next_slot).max(s.paused_until);
            s.next_slot = slot + Duration::from_secs_f64(1.0 / s.rate);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    pub fn on_success(&self) {
        let mut s = self.lock();
        let now = Instant::now();
        s.recent_successes.push_back(now);
        while s.recent_successes.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            s.recent_successes.pop_front();
        }
        let step = (s.rate * 0.002).max(0.05);
        s.rate = (s.rate + step).min(self.max_rate);
    }

    /// The provider said 429. Only the first 429 of a pause lowers the rate: the others were
    /// already in flight when it came.
    pub fn on_rate_limited(&self, retry_after: Duration) {
        let mut s = self.lock();
        let now = Instant::now();
        if s.paused_until > now {
            return;
        }
        while s.recent_successes.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            s.recent_successes.pop_front();
        }
        let accepted = s.recent_successes.len() as f64 / WINDOW.as_secs_f64();
        let target = if accepted > 0.0 { accepted * 0.95 } else { s.rate * 0.5 };
        s.rate = target.min(s.rate).clamp(self.min_rate, self.max_rate);
        s.paused_until = now + retry_after;
        s.next_slot = s.paused_until;
        tracing::debug!(rate = s.rate, ?retry_after, "provider rate limited us; slowing down");
    }

    pub fn current_rate(&self) -> f64 {
        self.lock().rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_at_the_rate() {
        let l = AdaptiveRateLimiter::new(10.0, 10.0);
        let start = Instant::now();
        for _ in 0..11 {
            l.acquire().await;
        }
        // 11 calls at 10/s: the first is immediate, the last at 1 s.
        assert_eq!(start.elapsed().as_millis(), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_everyone_and_drops_to_the_accepted_rate() {
        let l = AdaptiveRateLimiter::new(1000.0, 1000.0);
        for _ in 0..20 {
            l.on_success();
        }
        l.on_rate_limited(Duration::from_secs(2));
        assert!((l.current_rate() - 19.0).abs() < 0.01, "rate {}", l.current_rate());
        // Further 429s from calls already in flight change nothing.
        l.on_rate_limited(Duration::from_secs(2));
        assert!((l.current_rate() - 19.0).abs() < 0.01);
        let start = Instant::now();
        l.acquire().await;
        assert_eq!(start.elapsed().as_secs(), 2, "waited out Retry-After");
    }

    #[tokio::test(start_paused = true)]
    async fn successes_raise_the_rate_up_to_the_ceiling() {
        let l = AdaptiveRateLimiter::new(10.0, 12.0);
        for _ in 0..100 {
            l.on_success();
        }
        assert_eq!(l.current_rate(), 12.0);
    }
}
