//! Failover between the providers of one channel: the same message, with the same
//! idempotency key, goes to the next provider at once when one is unavailable (its circuit
//! open, or its retries used up on transient errors), before the channel's receipt time-out
//! and the channel fallback come into play.
//!
//! A provider that may have accepted the message (a time-out after the request left) is not
//! failed over from: the next provider would send it a second time. That send ends `failed`
//! and the channel's fallback takes it, as it did with one provider.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{CircuitState, Outgoing, Provider, SendOutcome};

/// The providers of one channel, in order of preference.
pub struct ProviderChain {
    providers: Vec<Provider>,
    /// Weights for the first choice (a cost split); all equal when none are given.
    weights: Vec<u32>,
    /// Sends that moved on to the next provider.
    pub failovers: AtomicU64,
}

/// What the chain's send ended with, and which provider it was.
#[derive(Debug)]
pub struct ChainOutcome {
    pub outcome: SendOutcome,
    /// The provider that gave the outcome (the one that accepted, for a delivery).
    pub provider: usize,
}

impl ProviderChain {
    /// `weights`: one per provider, or empty for "in order".
    pub fn new(providers: Vec<Provider>, weights: Vec<u32>) -> Self {
        assert!(!providers.is_empty(), "a channel has at least one provider");
        ProviderChain {
            providers,
            weights,
            failovers: AtomicU64::new(0),
        }
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    pub fn provider(&self, i: usize) -> &Provider {
        &self.providers[i.min(self.providers.len() - 1)]
    }

    /// The channel is down only when every provider's circuit is open.
    /// Whether a send started now would reach a provider at once, whichever the chain
    /// picks: every provider free (see [`super::resilient::Resilience::free_now`]).
    pub fn free_now(&self) -> bool {
        self.providers.iter().all(Provider::free_now)
    }

    pub fn all_open(&self) -> bool {
        self.providers
            .iter()
            .all(|p| p.circuit_state() == CircuitState::Open)
    }

    /// The order to try: a weighted first choice (or the first), then the rest in order;
    /// providers whose circuit is open go last, so they are tried only when nothing else is left.
    fn order(&self) -> Vec<usize> {
        let n = self.providers.len();
        let first = self.weighted_first();
        let mut order: Vec<usize> = std::iter::once(first)
            .chain((0..n).filter(|i| *i != first))
            .collect();
        order.sort_by_key(|i| self.providers[*i].circuit_state() == CircuitState::Open);
        order
    }

    fn weighted_first(&self) -> usize {
        let total: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
        if self.weights.len() != self.providers.len() || total == 0 {
            return 0;
        }
        let mut pick = rand::rng().random_range(0..total);
        for (i, w) in self.weights.iter().enumerate() {
            if pick < u64::from(*w) {
                return i;
            }
            pick -= u64::from(*w);
        }
        0
    }

    /// Sends through the first provider that takes it (see the module's comment).
    pub async fn send<F, Fut>(
        &self,
        out: &Outgoing<'_>,
        cancel: &CancellationToken,
        mut before_attempt: F,
    ) -> ChainOutcome
    where
        F: FnMut(bool) -> Fut,
        Fut: Future<Output = bool>,
    {
        let order = self.order();
        let (&last, earlier) = order
            .split_last()
            .expect("a chain has at least one provider");
        for &i in earlier {
            match self.providers[i]
                .send(out, cancel, true, &mut before_attempt)
                .await
            {
                SendOutcome::Unavailable {
                    reason,
                    maybe_sent: false,
                } => {
                    self.failovers.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(provider = %self.providers[i].name, %reason, "failing over to the next provider");
                }
                outcome => return ChainOutcome::of(outcome, i),
            }
        }
        let outcome = self.providers[last]
            .send(out, cancel, false, &mut before_attempt)
            .await;
        ChainOutcome::of(outcome, last)
    }
}

impl ChainOutcome {
    /// What provider `i` answered; a provider given up on ends the send `failed`, since no
    /// other provider will take it, unless its last attempt may have gone out: `uncertain`.
    fn of(outcome: SendOutcome, provider: usize) -> Self {
        let outcome = match outcome {
            SendOutcome::Unavailable {
                reason,
                maybe_sent: true,
            } => SendOutcome::Uncertain { reason },
            SendOutcome::Unavailable { reason, .. } => SendOutcome::Failed { reason },
            other => other,
        };
        ChainOutcome { outcome, provider }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderArgs;
    use crate::model::{Channel, Message};
    use crate::provider::{AttemptError, AttemptFuture, Resilience, Transport};

    /// Answers every call the same way.
    struct Always {
        accept: bool,
        maybe_sent: bool,
        calls: AtomicU64,
    }

    impl Transport for Always {
        fn attempt<'a>(&'a self, _: &'a Outgoing<'a>) -> AttemptFuture<'a> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let (accept, maybe_sent) = (self.accept, self.maybe_sent);
            Box::pin(async move {
                if accept {
                    Ok("id".to_string())
                } else {
                    Err(AttemptError::Transient {
                        why: "503".into(),
                        maybe_sent,
                        network: false,
                    })
                }
            })
        }
    }

    fn provider(name: &str, accept: bool, maybe_sent: bool) -> Provider {
        let mut args = ProviderArgs::for_tests(100_000.0, 100_000.0);
        args.provider_max_attempts = 2;
        args.provider_breaker_failures = 100;
        let transport = Always {
            accept,
            maybe_sent,
            calls: AtomicU64::new(0),
        };
        Provider::new(
            name,
            "test",
            Box::new(transport),
            Resilience::new(&args).unwrap(),
        )
    }

    async fn send(chain: &ProviderChain) -> ChainOutcome {
        send_asking(chain, |_| true).await
    }

    /// Sends one SMS through `chain`; `allow` answers each `before_attempt`.
    async fn send_asking(
        chain: &ProviderChain,
        mut allow: impl FnMut(bool) -> bool,
    ) -> ChainOutcome {
        let message = Message {
            to: "+34600000000".into(),
            message: "hi".into(),
            channel: Channel::Sms,
        };
        let out = Outgoing::transactional("c:u:sms", &message);
        chain
            .send(&out, &CancellationToken::new(), |after_uncertain| {
                let go = allow(after_uncertain);
                async move { go }
            })
            .await
    }

    #[tokio::test]
    async fn a_failing_provider_hands_the_message_to_the_next() {
        let chain = ProviderChain::new(
            vec![provider("a", false, false), provider("b", true, false)],
            vec![],
        );
        let sent = send(&chain).await;
        assert_eq!(sent.provider, 1);
        assert!(
            matches!(sent.outcome, SendOutcome::Delivered { .. }),
            "{:?}",
            sent.outcome
        );
        assert_eq!(chain.failovers.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_call_that_may_have_arrived_is_not_sent_again_elsewhere() {
        let chain = ProviderChain::new(
            vec![provider("a", false, true), provider("b", true, false)],
            vec![],
        );
        let sent = send(&chain).await;
        assert_eq!(sent.provider, 0);
        assert!(
            matches!(sent.outcome, SendOutcome::Uncertain { .. }),
            "{:?}",
            sent.outcome
        );
        assert_eq!(chain.failovers.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn the_attempt_after_one_that_may_have_arrived_is_the_callers_to_allow() {
        let chain = ProviderChain::new(vec![provider("a", false, true)], vec![]);
        let asked = std::sync::Mutex::new(Vec::new());
        let sent = send_asking(&chain, |after_uncertain| {
            asked.lock().unwrap().push(after_uncertain);
            !after_uncertain
        })
        .await;
        assert_eq!(*asked.lock().unwrap(), vec![false, true]);
        assert!(
            matches!(sent.outcome, SendOutcome::Abandoned { maybe_sent: true }),
            "{:?}",
            sent.outcome
        );
        assert_eq!(
            chain.providers[0]
                .resilience
                .stats
                .calls
                .load(Ordering::Relaxed),
            1
        );
    }

    /// Refuses every call quoting the number, as Twilio's 21211 does.
    struct QuotesTheNumber;

    impl Transport for QuotesTheNumber {
        fn attempt<'a>(&'a self, out: &'a Outgoing<'a>) -> AttemptFuture<'a> {
            let reason = format!(
                "The 'To' number {} is not a valid phone number",
                out.message.to
            );
            Box::pin(async move { Err(AttemptError::Rejected { reason }) })
        }
    }

    #[tokio::test]
    async fn a_refusal_quoting_the_number_is_kept_without_it() {
        let args = ProviderArgs::for_tests(100_000.0, 100_000.0);
        let quoting = Provider::new(
            "twilio",
            "twilio",
            Box::new(QuotesTheNumber),
            Resilience::new(&args).unwrap(),
        );
        let chain = ProviderChain::new(vec![quoting], vec![]);
        match send(&chain).await.outcome {
            SendOutcome::Failed { reason } => {
                assert!(!reason.contains("600000000"), "{reason}");
                assert!(reason.contains("not a valid phone number"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn weights_split_the_first_tries() {
        let chain = ProviderChain::new(
            vec![provider("a", true, false), provider("b", true, false)],
            vec![9, 1],
        );
        let first_a = (0..2000).filter(|_| chain.order()[0] == 0).count();
        assert!(
            (1650..=1950).contains(&first_a),
            "{first_a} of 2000 first tries on a"
        );
        let even = ProviderChain::new(
            vec![provider("a", true, false), provider("b", true, false)],
            vec![],
        );
        assert!((0..100).all(|_| even.order() == vec![0, 1]));
    }
}
