//! A lock-free latency histogram with fixed buckets (1 ms up to 1 s, 10 ms up to 10 s,
//! 100 ms up to 2 min): enough to read p50/p99 of a pipeline without another dependency,
//! and mergeable across processes by summing bucket counts.

use std::sync::atomic::{AtomicU64, Ordering};

const FINE: u64 = 1_000;
const MEDIUM: u64 = 10_000;
const COARSE: u64 = 120_000;
const BUCKETS: usize = (FINE + (MEDIUM - FINE) / 10 + (COARSE - MEDIUM) / 100 + 1) as usize;

pub struct LatencyHistogram {
    counts: Box<[AtomicU64]>,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram").finish_non_exhaustive()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(ms: u64) -> usize {
    let i = if ms < FINE {
        ms
    } else if ms < MEDIUM {
        FINE + (ms - FINE) / 10
    } else if ms < COARSE {
        FINE + (MEDIUM - FINE) / 10 + (ms - MEDIUM) / 100
    } else {
        BUCKETS as u64 - 1
    };
    i as usize
}

/// The largest value a bucket holds, in ms (the last bucket holds everything above 2 min).
fn upper_of(i: usize) -> u64 {
    let i = i as u64;
    if i < FINE {
        i
    } else if i < FINE + (MEDIUM - FINE) / 10 {
        FINE + (i - FINE) * 10 + 9
    } else {
        MEDIUM + (i - FINE - (MEDIUM - FINE) / 10) * 100 + 99
    }
}

impl LatencyHistogram {
    pub fn record_ms(&self, ms: u64) {
        self.counts[bucket_of(ms)].fetch_add(1, Ordering::Relaxed);
    }

    /// Non-empty buckets as `(upper bound ms, count)`, for `/stats` and merging.
    pub fn snapshot(&self) -> Vec<(u64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then(|| (upper_of(i), n))
            })
            .collect()
    }
}

/// The `q` quantile (0..1) of merged `(upper bound ms, count)` buckets, sorted by bound.
pub fn quantile(buckets: &[(u64, u64)], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (upper, n) in buckets {
        seen += n;
        if seen >= rank {
            return Some(*upper);
        }
    }
    buckets.last().map(|b| b.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_right_buckets() {
        let h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record_ms(ms);
        }
        h.record_ms(2_345);
        h.record_ms(50_000);
        h.record_ms(999_999);
        let snap = h.snapshot();
        assert_eq!(quantile(&snap, 0.5), Some(52));
        assert_eq!(quantile(&snap, 0.97), Some(100));
        assert_eq!(quantile(&snap, 0.98), Some(2_349));
        assert_eq!(quantile(&snap, 0.99), Some(50_099));
        assert_eq!(quantile(&snap, 1.0), Some(upper_of(BUCKETS - 1)));
        assert!(snap.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
