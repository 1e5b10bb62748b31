//! The SMTP adapter: e-mail through any SMTP server (a relay, SES, SendGrid, Postmark, a
//! local catcher), on lettre with its connection pool, STARTTLS or implicit TLS and AUTH,
//! all read from the usual SMTP URL (`smtp://host:2525`, `smtp://user:pass@host:587?tls=required`,
//! `smtps://host:465`).
//!
//! Replies: 2xx accepted; 421 and 450-452 (busy, greylisting, throttling) slow down through
//! the limiter; other 4xx transient; 550/551/553 (no such mailbox, relaying refused, bad
//! address) the address can never receive; other 5xx a rejection of this message. The
//! `Message-ID` is made from the idempotency key, so a resend after a crash carries the same
//! id and the server (or the reader) can tell it is the same message.

use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::setup::{env, AdapterSettings, ProvidersError, Setup};
use super::{AttemptError, AttemptFuture, Outgoing, Transport};
use crate::auth::UnsubscribeTokens;
use crate::config::ProvidersArgs;
use crate::model::Channel;
use crate::secret::Secret;

/// Where a promotional e-mail's unsubscribe link points, and how its token is signed.
#[derive(Clone)]
pub struct UnsubscribeLinks {
    /// Herald's public base URL; the link is `{base}/v1/unsubscribe/{token}`.
    pub base_url: String,
    pub tokens: UnsubscribeTokens,
    /// An address that also unsubscribes (the `mailto:` of `List-Unsubscribe`), if any.
    pub mailto: Option<String>,
}

/// The `smtp` adapter's settings in the providers file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The variable holding the SMTP URL (it may carry the password).
    pub url_env: Option<String>,
    /// The default sender (`HERALD_EMAIL_FROM` when absent).
    pub from: Option<String>,
    /// The subject of transactional e-mails (`HERALD_EMAIL_SUBJECT` when absent).
    pub subject: Option<String>,
}

impl AdapterSettings for SmtpConfig {
    const KIND: &'static str = "smtp";

    fn sends(channel: Channel) -> bool {
        channel == Channel::Email
    }

    fn build(&self, setup: &Setup) -> Result<Box<dyn Transport>, ProvidersError> {
        let flags = setup.flags;
        let url = match (&self.url_env, &flags.smtp_url) {
            (Some(var), Some(flag)) if var == "HERALD_SMTP_URL" => flag.clone(),
            (Some(var), _) => env(var)?,
            (None, _) => {
                return Err(setup
                    .invalid("an smtp provider needs url_env, the variable holding its SMTP URL"))
            }
        };
        setup.in_clear(url.expose(), false)?;
        let from =
            self.from
                .clone()
                .or(flags.email_from.clone())
                .ok_or(ProvidersError::Missing(
                    "a sender: HERALD_EMAIL_FROM or `from` in the providers file",
                ))?;
        Ok(Box::new(
            SmtpTransport::new(SmtpSettings {
                url,
                from,
                default_subject: self.subject.clone().unwrap_or(flags.email_subject.clone()),
                timeout: setup.timeout(),
                pool_size: setup.concurrency().min(u32::MAX as usize) as u32,
                unsubscribe: unsubscribe_links(flags)?,
            })
            .map_err(ProvidersError::adapter)?,
        ))
    }
}

/// Promotional e-mail must carry a working one-click unsubscribe link: without the public
/// URL and the signing secret the SMTP adapter does not start.
fn unsubscribe_links(flags: &ProvidersArgs) -> Result<UnsubscribeLinks, ProvidersError> {
    let base_url = flags.public_url.clone().ok_or(ProvidersError::Missing(
        "HERALD_PUBLIC_URL, the base of unsubscribe links",
    ))?;
    let secret = flags
        .unsubscribe_secret
        .as_ref()
        .ok_or(ProvidersError::Missing(
            "HERALD_UNSUBSCRIBE_SECRET, which signs unsubscribe links",
        ))?;
    Ok(UnsubscribeLinks {
        base_url,
        tokens: UnsubscribeTokens::new(secret)?,
        mailto: flags.unsubscribe_mailto.clone(),
    })
}

/// What the SMTP adapter needs.
pub struct SmtpSettings {
    /// The SMTP URL; a secret, since it may carry the password.
    pub url: Secret,
    /// The sender when a campaign names none.
    pub from: String,
    /// The subject of a transactional e-mail (a seed 001 request carries only a body).
    pub default_subject: String,
    pub timeout: Duration,
    /// Connections kept open to the server.
    pub pool_size: u32,
    pub unsubscribe: UnsubscribeLinks,
}

#[derive(Debug, thiserror::Error)]
pub enum SmtpSetupError {
    #[error("the SMTP URL is not usable ({0}); expected smtp://host:port, smtp://user:password@host:587?tls=required or smtps://host:465")]
    Url(String),
    #[error("the e-mail sender {0:?} is not an address (HERALD_EMAIL_FROM or the providers file's `from`)")]
    From(String),
    #[error("the unsubscribe base URL {0:?} must be an http(s) URL (HERALD_PUBLIC_URL)")]
    PublicUrl(String),
}

pub struct SmtpTransport {
    mailer: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    default_subject: String,
    unsubscribe: UnsubscribeLinks,
}

impl SmtpTransport {
    pub fn new(settings: SmtpSettings) -> Result<Self, SmtpSetupError> {
        // lettre's error would repeat the URL, password and all: say only what kind it is.
        let mailer = AsyncSmtpTransport::<Tokio1Executor>::from_url(settings.url.expose())
            .map_err(|e| SmtpSetupError::Url(kind_of(&e)))?
            .timeout(Some(settings.timeout))
            .pool_config(PoolConfig::new().max_size(settings.pool_size.max(1)))
            .build();
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|_| SmtpSetupError::From(settings.from.clone()))?;
        let base = &settings.unsubscribe.base_url;
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(SmtpSetupError::PublicUrl(base.clone()));
        }
        Ok(SmtpTransport {
            mailer,
            from,
            default_subject: settings.default_subject,
            unsubscribe: settings.unsubscribe,
        })
    }

    /// The MIME message for `out`; `Err` when it cannot be made (a bad address).
    pub fn message(&self, out: &Outgoing<'_>) -> Result<Message, AttemptError> {
        let to: Mailbox =
            out.message
                .to
                .trim()
                .parse()
                .map_err(|_| AttemptError::Undeliverable {
                    reason: "not an e-mail address".into(),
                })?;
        let email = out.email;
        let from = match email.and_then(|e| e.from.as_deref()) {
            Some(f) => f.parse().map_err(|_| AttemptError::Rejected {
                reason: format!("the campaign's sender {f:?} is not an address"),
            })?,
            None => self.from.clone(),
        };
        let subject = email.map_or(self.default_subject.as_str(), |e| e.subject.as_str());
        let builder = Message::builder()
            .message_id(Some(message_id(out.key, &from)))
            .from(from)
            .to(to)
            .subject(subject)
            .date_now();
        let text = out.message.message.clone();
        let built = match email.and_then(|e| e.html.clone()) {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(text, html)),
            None => builder.singlepart(SinglePart::plain(text)),
        };
        let mut message = built.map_err(|e| AttemptError::Rejected {
            reason: format!("cannot build the e-mail: {e}"),
        })?;
        if let Some((campaign, customer)) = out.promotion {
            let links = &self.unsubscribe;
            let url = format!(
                "{}/v1/unsubscribe/{}",
                links.base_url.trim_end_matches('/'),
                links.tokens.token(campaign, customer)
            );
            let value = match &links.mailto {
                Some(m) => format!("<{url}>, <mailto:{m}?subject=unsubscribe>"),
                None => format!("<{url}>"),
            };
            let headers = message.headers_mut();
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                value,
            ));
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".into(),
            ));
        }
        Ok(message)
    }

    async fn call(&self, out: &Outgoing<'_>) -> Result<String, AttemptError> {
        let message = self.message(out)?;
        let id = message_id(out.key, &self.from);
        match self.mailer.send(message).await {
            Ok(_) => Ok(id.trim_matches(['<', '>']).to_string()),
            Err(e) => Err(classify(&e)),
        }
    }
}

impl Transport for SmtpTransport {
    fn attempt<'a>(&'a self, out: &'a Outgoing<'a>) -> AttemptFuture<'a> {
        Box::pin(self.call(out))
    }

    fn confirms_on_accept(&self) -> bool {
        true
    }
}

/// `<key@domain>`, the key's `:` and `.` written as `/` and `=` so it stays a valid
/// dot-atom whatever the ids hold (`.` may start an id; `/` and `=` never appear in one).
pub fn message_id(key: &str, from: &Mailbox) -> String {
    let left: String = key
        .chars()
        .map(|c| match c {
            ':' => '/',
            '.' => '=',
            c => c,
        })
        .collect();
    format!("<{left}@{}>", from.email.domain())
}

/// What an SMTP error means for the message.
fn classify(e: &lettre::transport::smtp::Error) -> AttemptError {
    if let Some(code) = e.status() {
        let code = u16::from(code);
        let why = format!("SMTP server answered {code}: {}", first_line(e));
        return match code {
            421 | 450..=452 => AttemptError::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            400..=499 => AttemptError::answered(why),
            550 | 551 | 553 => AttemptError::Undeliverable { reason: why },
            _ => AttemptError::Rejected { reason: why },
        };
    }
    let refused = io_kind(e) == Some(std::io::ErrorKind::ConnectionRefused);
    AttemptError::Transient {
        why: if e.is_timeout() {
            "SMTP call timed out".into()
        } else if refused {
            "cannot connect to the SMTP server".into()
        } else {
            format!("SMTP call failed: {}", kind_of(e))
        },
        // After a time-out or a broken connection the server may have taken the message.
        maybe_sent: !refused,
        network: true,
    }
}

fn io_kind(e: &lettre::transport::smtp::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = err.source();
    }
    None
}

/// The first line of lettre's message, which for a reply is the server's text.
fn first_line(e: &lettre::transport::smtp::Error) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

/// The kind of a set-up or network error without anything it quotes (URLs, credentials).
fn kind_of(e: &lettre::transport::smtp::Error) -> String {
    if e.is_tls() {
        "TLS error".into()
    } else if e.is_timeout() {
        "time-out".into()
    } else if e.is_client() {
        "invalid settings".into()
    } else {
        match io_kind(e) {
            Some(kind) => kind.to_string(),
            None => "connection error".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CampaignId, Channel, CustomerId, EmailParts, Message as Msg};

    fn transport() -> SmtpTransport {
        SmtpTransport::new(SmtpSettings {
            url: "smtp://127.0.0.1:2525".into(),
            from: "Shop <offers@shop.test>".into(),
            default_subject: "Notification".into(),
            timeout: Duration::from_secs(1),
            pool_size: 1,
            unsubscribe: UnsubscribeLinks {
                base_url: "https://herald.shop.test".into(),
                tokens: UnsubscribeTokens::new(&"k".repeat(40).as_str().into()).unwrap(),
                mailto: Some("unsubscribe@shop.test".into()),
            },
        })
        .unwrap()
    }

    fn formatted(t: &SmtpTransport, out: &Outgoing<'_>) -> String {
        String::from_utf8(
            t.message(out)
                .map_err(|e| format!("{e:?}"))
                .unwrap()
                .formatted(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_promotion_has_both_parts_a_stable_id_and_one_click_unsubscribe() {
        let t = transport();
        let msg = Msg {
            to: "ana@example.test".into(),
            message: "Hola Ana".into(),
            channel: Channel::Email,
        };
        let email = EmailParts {
            subject: "¡Oferta para ti, Ana!".into(),
            html: Some("<p>Hola Ana</p>".into()),
            from: None,
        };
        let (c, u) = (
            CampaignId::parse("spring").unwrap(),
            CustomerId::parse("c.1").unwrap(),
        );
        let out = Outgoing {
            key: "spring:c.1:email",
            message: &msg,
            email: Some(&email),
            whatsapp: None,
            promotion: Some((&c, &u)),
        };
        let text = formatted(&t, &out);
        assert!(
            text.contains("Message-ID: <spring/c=1/email@shop.test>"),
            "{text}"
        );
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(text.contains("text/html"), "{text}");
        // A UTF-8 subject is encoded (RFC 2047), never sent raw.
        assert!(text.contains("Subject: =?utf-8?"), "{text}");
        assert!(text.contains("List-Unsubscribe: <https://herald.shop.test/v1/unsubscribe/"));
        assert!(text.contains("mailto:unsubscribe@shop.test"));
        assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));

        let transactional = Outgoing {
            promotion: None,
            email: None,
            ..out
        };
        let text = formatted(&t, &transactional);
        assert!(!text.contains("List-Unsubscribe"), "{text}");
        assert!(text.contains("Subject: Notification"), "{text}");
    }

    #[tokio::test]
    async fn a_bad_address_is_undeliverable_and_a_bad_url_refused_without_echoing_it() {
        let t = transport();
        let msg = Msg {
            to: "not an address".into(),
            message: "x".into(),
            channel: Channel::Email,
        };
        let out = Outgoing {
            key: "k",
            message: &msg,
            email: None,
            whatsapp: None,
            promotion: None,
        };
        assert!(matches!(
            t.message(&out),
            Err(AttemptError::Undeliverable { .. })
        ));
        let refused = SmtpTransport::new(SmtpSettings {
            url: "smtpx://user:hunter2-password@host".into(),
            ..settings_of(&t)
        });
        let Err(e) = refused else {
            panic!("a bad scheme is refused")
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    fn settings_of(t: &SmtpTransport) -> SmtpSettings {
        SmtpSettings {
            url: "smtp://127.0.0.1:2525".into(),
            from: t.from.to_string(),
            default_subject: t.default_subject.clone(),
            timeout: Duration::from_secs(1),
            pool_size: 1,
            unsubscribe: t.unsubscribe.clone(),
        }
    }
}
