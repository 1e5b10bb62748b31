//! Claiming a piece of work, the same for both kinds (seed 001 requests and campaign
//! deliveries): try the claim until the work is ours, another owner's live lease waited out,
//! Redis outages retried, a corrupt record ended with its reason.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::shutdown::sleep_unless_cancelled;
use crate::store::StoreError;

/// The answer to one call of a batch (a claim, a mark). None came (the batch's task is
/// gone): a failure like any other Redis failure, retried by the caller.
pub(super) fn answered<T>(
    answer: Option<Result<T, StoreError>>,
    what: &str,
) -> Result<T, StoreError> {
    answer.unwrap_or_else(|| Err(StoreError::Batch(format!("no answer to the {what}"))))
}

/// A name for one handling of one message, unique across processes and restarts: the
/// holder of a once-slot. One random instance id per process (pids repeat: every container's
/// process is pid 1) and a counter, rather than a random id per message.
pub(super) fn next_owner() -> String {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static HANDLINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let instance = INSTANCE
        .get_or_init(|| format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    format!("{instance}-{}", HANDLINGS.fetch_add(1, Ordering::Relaxed))
}

/// One try at a claim, for either kind of work.
pub(super) enum Step<T> {
    Claimed,
    /// Another owner's lease is live until `retry_in` from now.
    Held(Duration),
    /// Nothing to send: a duplicate, or no such record (what the claim said).
    Settled(T),
}

/// Why a claim ended without the work being ours.
pub(super) enum Stop<T> {
    /// Shutdown came first: hand the message back.
    Cancelled,
    /// Nothing to send: a duplicate, or no such record (what the claim said).
    Settled(T),
    /// The record cannot be read: retrying will not mend it, so the message is dead-lettered
    /// with this reason rather than holding its partition for ever.
    Corrupt(String),
}

/// How often a claim held by another owner is tried again. Waiting out the whole lease (30 s
/// by default) kept a copy that arrived while its original was in flight, and every offset
/// after it, waiting that long after the original had long finished.
const HELD_RECHECK: Duration = Duration::from_millis(500);

/// Claims until the work is ours (`Ok`) or it [`Stop`]s. Another owner's live lease is waited
/// out, since its holder may have died, checking every [`HELD_RECHECK`] whether it finished;
/// the offset stays open meanwhile.
pub(super) async fn claim_until<T, F, Fut>(
    cancel: &CancellationToken,
    mut claim: F,
) -> Result<(), Stop<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Step<T>, StoreError>>,
{
    loop {
        let step = match retry_unless_corrupt(cancel, &mut claim).await {
            Err(StopRetrying::Cancelled) => return Err(Stop::Cancelled),
            Err(StopRetrying::Corrupt(e)) => return Err(Stop::Corrupt(e.to_string())),
            Ok(step) => step,
        };
        match step {
            Step::Claimed => return Ok(()),
            Step::Settled(what) => return Err(Stop::Settled(what)),
            Step::Held(retry_in) => {
                let wait = retry_in.min(HELD_RECHECK) + Duration::from_millis(50);
                if !sleep_unless_cancelled(wait, cancel).await {
                    return Err(Stop::Cancelled);
                }
            }
        }
    }
}

/// Why [`retry_unless_corrupt`] gave up.
enum StopRetrying {
    Cancelled,
    Corrupt(StoreError),
}

/// Retries a Redis operation while Redis is unreachable; a corrupt record is not retried.
async fn retry_unless_corrupt<T, F, Fut>(
    cancel: &CancellationToken,
    op: &mut F,
) -> Result<T, StopRetrying>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut wait = Duration::from_millis(50);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e @ StoreError::Corrupt { .. }) => return Err(StopRetrying::Corrupt(e)),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "redis operation failed");
                if !sleep_unless_cancelled(wait, cancel).await {
                    return Err(StopRetrying::Cancelled);
                }
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Retries a Redis operation while Redis is unreachable; `None` if cancelled first, or if the
/// record is corrupt (logged: retrying cannot mend it).
pub(super) async fn retry_store<T, F, Fut>(cancel: &CancellationToken, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    match retry_unless_corrupt(cancel, &mut op).await {
        Ok(v) => Some(v),
        Err(StopRetrying::Cancelled) => None,
        Err(StopRetrying::Corrupt(e)) => {
            tracing::error!(error = %e, "corrupt record; not retried");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corrupt() -> StoreError {
        StoreError::Corrupt {
            key: "herald:req:r-1".into(),
            what: "status \"bogus\"".into(),
        }
    }

    /// Before, a corrupt record was retried for ever, holding its partition.
    #[tokio::test]
    async fn a_corrupt_record_ends_the_claim_with_its_reason_instead_of_retrying() {
        let cancel = CancellationToken::new();
        let mut calls = 0;
        let claim = claim_until::<(), _, _>(&cancel, || {
            calls += 1;
            async { Err(corrupt()) }
        });
        let stopped = tokio::time::timeout(Duration::from_secs(5), claim)
            .await
            .expect("a corrupt record is not retried");
        match stopped {
            Err(Stop::Corrupt(reason)) => assert!(reason.contains("bogus"), "{reason}"),
            _ => panic!("expected Stop::Corrupt"),
        }
        assert_eq!(calls, 1);
        assert!(retry_store(&cancel, || async { Err::<(), _>(corrupt()) })
            .await
            .is_none());
    }

    /// A copy that finds its original in flight under a 30 s lease is settled as soon as the
    /// original is, not when the lease would have run out.
    #[tokio::test]
    async fn a_claim_held_by_a_live_owner_is_checked_again_before_the_lease_ends() {
        let cancel = CancellationToken::new();
        let mut calls = 0;
        let claim = claim_until::<&str, _, _>(&cancel, || {
            calls += 1;
            let step = if calls == 1 {
                Step::Held(Duration::from_secs(30))
            } else {
                Step::Settled("sent")
            };
            async move { Ok(step) }
        });
        let stopped = tokio::time::timeout(Duration::from_secs(5), claim)
            .await
            .expect("checked again within seconds, not after the 30 s lease");
        assert!(matches!(stopped, Err(Stop::Settled("sent"))));
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_retried_until_it_answers() {
        let cancel = CancellationToken::new();
        let mut calls = 0;
        let answered = retry_store(&cancel, || {
            calls += 1;
            let fail = calls < 3;
            async move {
                if fail {
                    Err(StoreError::Timeout(Duration::from_millis(1)))
                } else {
                    Ok(7)
                }
            }
        })
        .await;
        assert_eq!((answered, calls), (Some(7), 3));
    }
}
