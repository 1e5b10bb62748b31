//! The simulator's webhooks: the receipts of accepted messages, posted back to Herald's
//! `POST /v1/receipts` after the configured delay, in batches, signed when a secret is set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::{Receipt, ReceiptStatus};

/// What became of the receipts, for the simulator's stats.
#[derive(Default)]
pub(super) struct ReceiptCounts {
    pub(super) posted: AtomicU64,
    pub(super) withheld: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) undeliverable: AtomicU64,
}

/// Receipt posts under way at once: a real provider's webhooks arrive concurrently, so one
/// slow answer does not hold back every receipt due after it.
const CONCURRENT_RECEIPT_POSTS: usize = 4;

/// Posts due receipts in batches (up to 1000 per call, as real providers' webhooks batch),
/// several at once, retrying a failed post a few times before counting its receipts
/// undeliverable. On shutdown the posts under way finish.
pub(super) async fn post_receipts(
    secret: Option<crate::config::Secret>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(Instant, Receipt)>,
    url: String,
    counts: Arc<ReceiptCounts>,
    shutdown: CancellationToken,
) {
    let poster = Arc::new(ReceiptPoster {
        client: reqwest::Client::new(),
        url,
        secret,
        counts,
    });
    let posts = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_RECEIPT_POSTS));
    let under_way = tokio_util::task::TaskTracker::new();
    let mut queue: std::collections::VecDeque<(Instant, Receipt)> = Default::default();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            item = rx.recv() => match item {
                Some(item) => { queue.push_back(item); continue; }
                None => break,
            },
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        // The delay is the same for all, so the queue is in due order.
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let mut batch = Vec::new();
            while batch.len() < 1000 && queue.front().is_some_and(|(due, _)| *due <= now) {
                if let Some((_, r)) = queue.pop_front() {
                    batch.push(r);
                }
            }
            let Ok(permit) = posts.clone().acquire_owned().await else {
                break;
            };
            let poster = poster.clone();
            under_way.spawn(async move {
                poster.post(batch).await;
                drop(permit);
            });
        }
    }
    under_way.close();
    under_way.wait().await;
}

/// Where and how the simulator posts receipts, and what it counts of them.
struct ReceiptPoster {
    client: reqwest::Client,
    url: String,
    secret: Option<crate::config::Secret>,
    counts: Arc<ReceiptCounts>,
}

impl ReceiptPoster {
    /// One batch, signed when a secret is set, tried up to three times.
    async fn post(&self, batch: Vec<Receipt>) {
        let failed = batch
            .iter()
            .filter(|r| r.status == ReceiptStatus::Failed)
            .count() as u64;
        let body = json!({ "receipts": batch }).to_string();
        let mut posted = false;
        for attempt in 0..3u64 {
            let mut post = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .timeout(Duration::from_secs(10));
            if let Some(secret) = &self.secret {
                let now = crate::model::now_ms() / 1000;
                let signature = crate::auth::signature::sign(secret.expose(), now, body.as_bytes());
                post = post.header(crate::auth::signature::HEADER, signature);
            }
            match post.body(body.clone()).send().await {
                Ok(resp) if resp.status().is_success() => {
                    posted = true;
                    break;
                }
                Ok(resp) => tracing::warn!(status = %resp.status(), "receipt post refused"),
                Err(e) => tracing::warn!(error = %e, "receipt post failed"),
            }
            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
        }
        let n = batch.len() as u64;
        if posted {
            self.counts.posted.fetch_add(n, Ordering::Relaxed);
            self.counts.failed.fetch_add(failed, Ordering::Relaxed);
        } else {
            self.counts.undeliverable.fetch_add(n, Ordering::Relaxed);
        }
    }
}
