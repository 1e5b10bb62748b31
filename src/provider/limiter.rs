//! A client-side rate limit that finds the provider's rate by itself.
//!
//! Calls are spaced evenly at the current rate: each caller reserves the next free slot, so
//! it works at any rate with any number of waiters. On a 429 everyone pauses until
//! `Retry-After`, callers that had reserved a slot before the 429 reserve again, and the rate
//! drops to just under what the provider admitted over the last second (by 5 % at least and
//! by half at most). After a 429 the rate holds for a while, then creeps up again to probe.
//! Against a provider that admits N calls per second it settles just under N, with a 429
//! only now and then.
//!
//! `governor` was considered, but its quota is fixed once built; this needs a rate that moves.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(1);
/// No probing upward for this long after a 429.
const HOLD_AFTER_LIMIT: Duration = Duration::from_secs(5);

pub struct AdaptiveRateLimiter {
    state: Mutex<State>,
    min_rate: f64,
    max_rate: f64,
}

struct State {
    rate: f64,
    next_slot: Instant,
    paused_until: Instant,
    hold_until: Instant,
    /// Bumped by every 429 that pauses; a waiter whose reservation predates it reserves again.
    epoch: u64,
    admitted: VecDeque<Instant>,
}

impl State {
    fn forget_old(&mut self, now: Instant) {
        while self
            .admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            self.admitted.pop_front();
        }
    }
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
                hold_until: now,
                epoch: 0,
                admitted: VecDeque::new(),
            }),
            min_rate,
            max_rate,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain numbers behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reserve(&self) -> (Instant, u64) {
        let mut s = self.lock();
        let slot = Instant::now().max(s.next_slot).max(s.paused_until);
        s.next_slot = slot + Duration::from_secs_f64(1.0 / s.rate);
        (slot, s.epoch)
    }

    /// Whether a caller arriving now would not wait (nothing reserved ahead, no pause).
    pub fn free_now(&self) -> bool {
        let s = self.lock();
        Instant::now() >= s.next_slot.max(s.paused_until)
    }

    /// Waits for this caller's turn.
    pub async fn acquire(&self) {
        let (mut slot, mut epoch) = self.reserve();
        loop {
            tokio::time::sleep_until(slot).await;
            if self.lock().epoch == epoch {
                return;
            }
            (slot, epoch) = self.reserve();
        }
    }

    /// The provider admitted a call (any answer but 429), whatever it then answered.
    pub fn on_admitted(&self) {
        let mut s = self.lock();
        let now = Instant::now();
        s.admitted.push_back(now);
        s.forget_old(now);
        if now >= s.hold_until {
            let step = (s.rate * 0.001).max(0.01);
            s.rate = (s.rate + step).min(self.max_rate);
        }
    }

    /// The provider said 429. Only the first 429 of a pause lowers the rate: the others were
    /// already in flight when it came.
    pub fn on_rate_limited(&self, retry_after: Duration) {
        let mut s = self.lock();
        let now = Instant::now();
        if s.paused_until > now {
            return;
        }
        s.forget_old(now);
        let admitted = s.admitted.len() as f64 / WINDOW.as_secs_f64();
        let target = (admitted * 0.95).clamp(s.rate * 0.5, s.rate * 0.95);
        s.rate = target.clamp(self.min_rate, self.max_rate);
        s.paused_until = now + retry_after;
        s.hold_until = s.paused_until + HOLD_AFTER_LIMIT;
        s.next_slot = s.paused_until;
        s.epoch += 1;
        tracing::debug!(
            rate = s.rate,
            ?retry_after,
            "provider rate limited us; slowing down"
        );
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
        let l = AdaptiveRateLimiter::new(30.0, 1000.0);
        for _ in 0..20 {
            l.on_admitted();
        }
        l.on_rate_limited(Duration::from_secs(2));
        assert!(
            (l.current_rate() - 19.0).abs() < 0.01,
            "rate {}",
            l.current_rate()
        );
        // Further 429s from calls already in flight change nothing.
        l.on_rate_limited(Duration::from_secs(2));
        assert!((l.current_rate() - 19.0).abs() < 0.01);
        let start = Instant::now();
        l.acquire().await;
        assert_eq!(start.elapsed().as_secs(), 2, "waited out Retry-After");
    }

    #[tokio::test(start_paused = true)]
    async fn one_429_never_drops_the_rate_by_more_than_half() {
        let l = AdaptiveRateLimiter::new(1000.0, 1000.0);
        l.on_admitted();
        l.on_rate_limited(Duration::from_secs(1));
        assert_eq!(l.current_rate(), 500.0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_booked_before_a_429_wait_out_the_pause() {
        let l = std::sync::Arc::new(AdaptiveRateLimiter::new(10.0, 10.0));
        l.acquire().await;
        // This waiter books the slot at 100 ms...
        let waiter = tokio::spawn({
            let l = l.clone();
            async move {
                let start = Instant::now();
                l.acquire().await;
                start.elapsed()
            }
        });
        tokio::task::yield_now().await;
        // ...then a 429 says wait 3 s.
        l.on_rate_limited(Duration::from_secs(3));
        let waited = waiter.await.unwrap();
        assert!(waited >= Duration::from_secs(3), "waited only {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn admitted_calls_raise_the_rate_up_to_the_ceiling_but_not_right_after_a_429() {
        let l = AdaptiveRateLimiter::new(10.0, 12.0);
        for _ in 0..300 {
            l.on_admitted();
        }
        assert_eq!(l.current_rate(), 12.0);
        l.on_rate_limited(Duration::from_millis(10));
        let after = l.current_rate();
        for _ in 0..100 {
            l.on_admitted();
        }
        assert_eq!(l.current_rate(), after, "holds after a 429");
        tokio::time::advance(HOLD_AFTER_LIMIT + Duration::from_millis(20)).await;
        l.on_admitted();
        assert!(l.current_rate() > after, "probes upward again later");
    }
}
