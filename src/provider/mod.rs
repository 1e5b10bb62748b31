//! Talking to the providers that deliver, resiliently. Nothing outside this module makes a
//! call to a provider.
//!
//! A [`Provider`] is an adapter ([`Transport`]: one call, its answer classified) wrapped in
//! the [`Resilience`] every adapter shares (limiter, breaker, retries, concurrency cap).
//! Adapters: [`http`] (seed 001's `POST /v1/notify` contract), [`smtp`] (e-mail through any
//! SMTP server, on lettre), [`twilio`] (SMS, WhatsApp), [`whatsapp`] (Meta's Cloud API) and
//! [`fcm`] (push). Which channel uses which, and in what order ([`chain`]: failover), is
//! [`config`]: the providers file.

pub mod breaker;
pub mod chain;
pub mod cleartext;
pub mod config;
pub mod fcm;
pub mod http;
pub mod limiter;
pub mod resilient;
pub mod setup;
pub mod smtp;
pub mod twilio;
pub mod whatsapp;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use breaker::CircuitState;
pub use chain::{ChainOutcome, ProviderChain};
pub use config::{ProvidersConfig, ProvidersError};
pub use http::{API_KEY_HEADER, IDEMPOTENCY_KEY_HEADER};
pub use resilient::{ProviderStats, Resilience};

use crate::model::{CampaignId, CustomerId, EmailParts, Message, WhatsappTemplate};

/// One message on its way to a provider.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The idempotency key: the same for every attempt and every resend after a crash.
    pub key: &'a str,
    pub message: &'a Message,
    /// Subject, HTML part and sender, for e-mail (a push notification's title too).
    pub email: Option<&'a EmailParts>,
    /// The approved template a WhatsApp Cloud API message is sent as, rendered.
    pub whatsapp: Option<&'a WhatsappTemplate>,
    /// Set for promotions (campaign deliveries): the message carries an unsubscribe link.
    /// Transactional messages (seed 001 requests, sale confirmations) leave it `None`.
    pub promotion: Option<(&'a CampaignId, &'a CustomerId)>,
}

impl<'a> Outgoing<'a> {
    /// A transactional message: no e-mail parts, template or unsubscribe link.
    pub fn transactional(key: &'a str, message: &'a Message) -> Self {
        Outgoing {
            key,
            message,
            email: None,
            whatsapp: None,
            promotion: None,
        }
    }
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Delivered {
        provider_id: String,
    },
    /// Ended without success: a permanent rejection or retries exhausted.
    Failed {
        reason: String,
    },
    /// The address can never receive (an SMTP 5xx at RCPT, say): it is suppressed for
    /// promotions and the customer moves to the next channel now.
    Undeliverable {
        reason: String,
    },
    /// The provider could not be used (its circuit open, or retries used up on transient
    /// errors): another provider of the channel may take it. `maybe_sent` as below.
    Unavailable {
        reason: String,
        maybe_sent: bool,
    },
    /// No provider answered the last attempt, which may have gone out (a time-out or a broken
    /// connection after the request left), and no attempts are left: the channel's
    /// `uncertain_send` policy decides (ended `uncertain`, or on to the next channel).
    Uncertain {
        reason: String,
    },
    /// Gave up without an outcome (shutdown, the lease went to someone else, or the caller's
    /// policy forbade sending an uncertain send again): not this call's to record. `maybe_sent` when an earlier attempt ended without an answer (a time-out or a
    /// broken connection after the request left), so the provider may have accepted it.
    Abandoned {
        maybe_sent: bool,
    },
}

/// How one call to a provider ended, when it did not succeed.
#[derive(Debug)]
pub enum AttemptError {
    /// Slow down: the provider's rate limit (429, SMTP 421 "too many connections").
    RateLimited { retry_after: Duration },
    /// This message will not be accepted as it is: no point in retrying it.
    Rejected { reason: String },
    /// This address will never receive anything.
    Undeliverable { reason: String },
    /// Worth another try. `maybe_sent` when there was no answer to a request that may have
    /// arrived (a time-out, or the connection broke after it was made); `network` when the
    /// provider never answered at all.
    Transient {
        why: String,
        maybe_sent: bool,
        network: bool,
    },
}

impl AttemptError {
    /// The same error with the addresses and numbers its text quotes masked: reasons are
    /// logged and stored (docs/operations.md, "Security").
    pub fn redacted(self) -> Self {
        use crate::redact::personal_data;
        match self {
            AttemptError::Rejected { reason } => AttemptError::Rejected {
                reason: personal_data(&reason),
            },
            AttemptError::Undeliverable { reason } => AttemptError::Undeliverable {
                reason: personal_data(&reason),
            },
            AttemptError::Transient {
                why,
                maybe_sent,
                network,
            } => AttemptError::Transient {
                why: personal_data(&why),
                maybe_sent,
                network,
            },
            other => other,
        }
    }

    /// The provider answered that it cannot take the message now (a 5xx, a transient 4xx):
    /// another try may succeed, and this one was not taken.
    pub fn answered(why: impl Into<String>) -> Self {
        AttemptError::Transient {
            why: why.into(),
            maybe_sent: false,
            network: false,
        }
    }

    /// The provider said yes but its answer could not be read (no message id): it may hold
    /// the message, so a retry may send it twice.
    pub fn unreadable_acceptance(why: impl Into<String>) -> Self {
        AttemptError::Transient {
            why: why.into(),
            maybe_sent: true,
            network: false,
        }
    }
}

/// A provider's error as a reason: `PROVIDER STATUS CODE: MESSAGE`, the message cut to 200
/// characters (reasons are stored and logged).
pub fn error_reason(
    provider: &str,
    status: impl std::fmt::Display,
    code: impl std::fmt::Display,
    message: &str,
) -> String {
    let message: String = message.chars().take(200).collect();
    format!("{provider} {status} {code}: {message}")
}

pub type AttemptFuture<'a> =
    Pin<Box<dyn Future<Output = Result<String, AttemptError>> + Send + 'a>>;

/// One adapter: a single call to its provider, its answer classified. Retries, rate and
/// breaker are the [`Resilience`] around it, the same for every adapter.
pub trait Transport: Send + Sync {
    /// One call; `Ok` with the provider's id for the message.
    fn attempt<'a>(&'a self, out: &'a Outgoing<'a>) -> AttemptFuture<'a>;

    /// Whether acceptance is all the confirmation there will be (SMTP: a 250 is the last
    /// word until a bounce), so the delivery is confirmed at once instead of awaiting a
    /// receipt.
    fn confirms_on_accept(&self) -> bool {
        false
    }
}

/// A named provider: its adapter and its resilience.
pub struct Provider {
    pub name: String,
    /// The adapter's kind: `http`, `smtp`.
    pub adapter: &'static str,
    transport: Box<dyn Transport>,
    resilience: Resilience,
}

impl Provider {
    pub fn new(
        name: impl Into<String>,
        adapter: &'static str,
        transport: Box<dyn Transport>,
        resilience: Resilience,
    ) -> Self {
        Provider {
            name: name.into(),
            adapter,
            transport,
            resilience,
        }
    }

    /// Sends until accepted, refused, or out of attempts (see [`Resilience::send`]).
    pub async fn send<F, Fut>(
        &self,
        out: &Outgoing<'_>,
        cancel: &CancellationToken,
        has_fallback: bool,
        before_attempt: F,
    ) -> SendOutcome
    where
        F: FnMut(bool) -> Fut,
        Fut: Future<Output = bool>,
    {
        self.resilience
            .send(
                self.transport.as_ref(),
                out,
                cancel,
                has_fallback,
                before_attempt,
            )
            .await
    }

    pub fn confirms_on_accept(&self) -> bool {
        self.transport.confirms_on_accept()
    }

    pub fn circuit_state(&self) -> CircuitState {
        self.resilience.circuit_state()
    }

    pub fn current_rate(&self) -> f64 {
        self.resilience.current_rate()
    }

    /// See [`Resilience::free_now`].
    pub fn free_now(&self) -> bool {
        self.resilience.free_now()
    }

    pub fn stats(&self) -> &ProviderStats {
        &self.resilience.stats
    }
}

/// The most of a provider's answer Herald reads: its message id or its error fits in far
/// less; a provider (or whatever answers at its URL) cannot make Herald hold more.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A provider's answer body, cut at [`MAX_ANSWER_BYTES`] (`None` if it could not be read).
pub(crate) async fn bounded_body(mut response: reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ANSWER_BYTES {
            break;
        }
    }
    Some(body)
}

/// A provider's JSON answer, read within [`MAX_ANSWER_BYTES`]; `None` when unreadable,
/// malformed or longer than that.
pub(crate) async fn bounded_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Option<T> {
    serde_json::from_slice(&bounded_body(response).await?).ok()
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    /// A provider (or anything at its URL) answering 10 MiB: Herald reads 64 KiB of it.
    #[tokio::test]
    async fn a_huge_answer_is_read_only_up_to_the_cap() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = s.read(&mut request);
            let head = "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 10485760\r\n\r\n";
            let _ = s.write_all(head.as_bytes());
            let chunk = vec![b'x'; 65_536];
            for _ in 0..160 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let response = reqwest::get(format!("http://{addr}/")).await.unwrap();
        let body = bounded_body(response).await.unwrap();
        assert_eq!(body.len(), MAX_ANSWER_BYTES);
    }
}
