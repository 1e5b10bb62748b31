//! Group commit: calls made apart (one per message handled at once) go out together as one
//! call, and each caller gets its own answer back.
//!
//! A batch leaves as soon as a call comes and a batch may start; whatever arrives while
//! `in_flight` batches are under way waits and leaves with the next one. So a lone call is
//! not delayed, and under load the batches grow by themselves to what the round trip lets
//! pile up: no timer, no size to tune per load.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

type Call<Req, Resp> = (Req, oneshot::Sender<Resp>);

pub struct Coalescer<Req, Resp> {
    calls: mpsc::UnboundedSender<Call<Req, Resp>>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Coalescer<Req, Resp> {
    /// Starts the collecting task (on the current Tokio runtime). `run` answers a batch, one
    /// answer per call in order; a caller whose answer is missing gets `None`. The task ends
    /// when the coalescer is dropped.
    pub fn spawn<F, Fut>(max_batch: usize, in_flight: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let (calls, mut incoming) = mpsc::unbounded_channel::<Call<Req, Resp>>();
        let batches = Arc::new(Semaphore::new(in_flight.max(1)));
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            loop {
                let Ok(permit) = batches.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = incoming.recv().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match incoming.try_recv() {
                        Ok(call) => batch.push(call),
                        Err(_) => break,
                    }
                }
                let (requests, callers): (Vec<Req>, Vec<oneshot::Sender<Resp>>) =
                    batch.into_iter().unzip();
                let answers = run(requests);
                tokio::spawn(async move {
                    for (caller, answer) in callers.into_iter().zip(answers.await) {
                        // A caller that gave up waiting has nothing to be told.
                        let _ = caller.send(answer);
                    }
                    drop(permit);
                });
            }
        });
        Coalescer { calls }
    }

    /// Sends `request` with the next batch and waits for its answer; `None` if the batch
    /// gave none (or the coalescer's task is gone).
    pub async fn call(&self, request: Req) -> Option<Resp> {
        let (answer, answered) = oneshot::channel();
        self.calls.send((request, answer)).ok()?;
        answered.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test]
    async fn calls_made_while_a_batch_is_under_way_leave_together_and_each_gets_its_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let doubler = Arc::new(Coalescer::spawn(64, 1, move |batch: Vec<u32>| {
            seen.lock().unwrap().push(batch.len());
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                batch.into_iter().map(|n| n * 2).collect::<Vec<_>>()
            }
        }));
        let calls: Vec<_> = (0..100u32)
            .map(|n| {
                let c = doubler.clone();
                tokio::spawn(async move { (n, c.call(n).await) })
            })
            .collect();
        for call in calls {
            let (n, answer) = call.await.unwrap();
            assert_eq!(answer, Some(n * 2));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.iter().all(|&s| s <= 64), "{sizes:?}");
        assert!(sizes.len() < 10, "the calls were not batched: {sizes:?}");
    }

    #[tokio::test]
    async fn a_caller_left_without_an_answer_gets_none_instead_of_waiting_for_ever() {
        let silent = Coalescer::spawn(8, 1, |_: Vec<u32>| async { Vec::<u32>::new() });
        let answer = tokio::time::timeout(Duration::from_secs(5), silent.call(1)).await;
        assert_eq!(answer.expect("the caller is told"), None);
    }
}
