//! The seed 001 adapter: `POST {url}/v1/notify` with the message as JSON, `X-API-Key` and
//! the notification's `Idempotency-Key`. 2xx accepted (its `provider_id`), 429 slow down,
//! 5xx/408/network transient, any other 4xx a rejection of this message.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::StatusCode;

use super::setup::{env, AdapterSettings, ProvidersError, Setup};
use super::{AttemptError, AttemptFuture, Outgoing, Transport};
use crate::config::ProviderArgs;
use crate::model::Channel;

pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// `X-API-Key` (header names are case-insensitive; `from_static` takes them lower-case).
pub const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

#[derive(Debug, thiserror::Error)]
pub enum HttpAdapterError {
    #[error("cannot build the provider's HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("HERALD_PROVIDER_API_KEY is empty: set the key your provider gave you")]
    EmptyKey,
    #[error("HERALD_PROVIDER_API_KEY must be printable text (it is sent as an HTTP header)")]
    KeyNotText,
    #[error("the provider URL {0:?} is not a valid URL")]
    Url(String),
}

/// The `http` adapter's settings in the providers file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The provider's base URL (the flags' `HERALD_PROVIDER_URL` when absent).
    pub url: Option<String>,
    /// The variable holding the base URL instead of `url`.
    pub url_env: Option<String>,
    /// The variable holding the API key (the flags' `HERALD_PROVIDER_API_KEY` when absent).
    pub api_key_env: Option<String>,
}

impl AdapterSettings for HttpConfig {
    const KIND: &'static str = "http";

    /// Seed 001's contract carries any channel.
    fn sends(_: Channel) -> bool {
        true
    }

    fn build(&self, setup: &Setup) -> Result<Box<dyn Transport>, ProvidersError> {
        let mut args = setup.args.clone();
        if let Some(url) = &self.url {
            args.provider_url = url.clone();
        } else if let Some(var) = &self.url_env {
            args.provider_url = env(var)?.expose().to_string();
        }
        if let Some(var) = &self.api_key_env {
            args.provider_api_key = Some(env(var)?);
        }
        setup.in_clear(&args.provider_url, true)?;
        Ok(Box::new(
            HttpTransport::new(&args).map_err(ProvidersError::adapter)?,
        ))
    }
}

/// The seed 001 HTTP contract. The URL and the key's header are built once: parsed and
/// validated per call, they were a share of every send.
pub struct HttpTransport {
    http: reqwest::Client,
    notify_url: reqwest::Url,
    api_key: HeaderValue,
}

/// What an accepting provider answers; anything else in its body is ignored.
#[derive(serde::Deserialize, Default)]
struct Accepted {
    #[serde(default)]
    provider_id: String,
}

impl HttpTransport {
    pub fn new(args: &ProviderArgs) -> Result<Self, HttpAdapterError> {
        let api_key = args
            .provider_api_key
            .clone()
            .filter(|k| !k.expose().trim().is_empty())
            .ok_or(HttpAdapterError::EmptyKey)?;
        let http = api_client(args.timeout(), args.provider_concurrency)?;
        let notify_url = format!("{}/v1/notify", args.provider_url.trim_end_matches('/'));
        let notify_url =
            reqwest::Url::parse(&notify_url).map_err(|_| HttpAdapterError::Url(notify_url))?;
        let mut api_key =
            HeaderValue::from_str(api_key.expose()).map_err(|_| HttpAdapterError::KeyNotText)?;
        // Kept out of debug output and of HTTP/2 header compression tables.
        api_key.set_sensitive(true);
        Ok(HttpTransport {
            http,
            notify_url,
            api_key,
        })
    }

    async fn call(&self, out: &Outgoing<'_>) -> Result<String, AttemptError> {
        let response = self
            .http
            .post(self.notify_url.clone())
            .header(API_KEY_HEADER, self.api_key.clone())
            .header(IDEMPOTENCY_KEY_HEADER, out.key)
            .json(out.message)
            .send()
            .await
            .map_err(|e| AttemptError::Transient {
                why: describe_reqwest_error(&e),
                maybe_sent: !e.is_connect(),
                network: true,
            })?;
        let status = response.status();
        if status.is_success() {
            let body: Accepted = super::bounded_json(response).await.unwrap_or_default();
            return Ok(body.provider_id);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after =
                parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
            return Err(AttemptError::RateLimited { retry_after });
        }
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            return Err(AttemptError::answered(format!(
                "provider answered {status}"
            )));
        }
        let body = super::bounded_body(response).await.unwrap_or_default();
        let body: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        Err(AttemptError::Rejected {
            reason: format!("provider rejected: {status} {body}"),
        })
    }
}

impl Transport for HttpTransport {
    fn attempt<'a>(&'a self, out: &'a Outgoing<'a>) -> AttemptFuture<'a> {
        Box::pin(self.call(out))
    }
}

/// The HTTP client every API adapter uses: no redirects (one would carry the credentials to
/// wherever it points; a provider that moves is configured anew), a time-out per call, a
/// short connect time-out, and a keep-alive pool sized to the concurrency.
pub fn api_client(timeout: Duration, concurrency: usize) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
}

/// A call to `provider` that got no answer: transient, and possibly received unless the
/// connection was never made.
pub fn unanswered(provider: &str, e: &reqwest::Error) -> AttemptError {
    AttemptError::Transient {
        why: if e.is_timeout() {
            format!("{provider} call timed out")
        } else {
            format!("cannot reach {provider}")
        },
        maybe_sent: !e.is_connect(),
        network: true,
    }
}

fn describe_reqwest_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "provider call timed out".into()
    } else if e.is_connect() {
        "cannot connect to provider".into()
    } else {
        format!("provider call failed: {e}")
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from APIs; it falls back to 1 s).
pub fn parse_retry_after(value: Option<&reqwest::header::HeaderValue>) -> Duration {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(300.0)))
        .unwrap_or(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Resilience;

    fn args(rate: f64, max_rate: f64) -> ProviderArgs {
        ProviderArgs::for_tests(rate, max_rate)
    }

    #[test]
    fn a_missing_key_or_a_rate_that_is_not_a_positive_number_is_refused_at_start() {
        assert!(HttpTransport::new(&args(500.0, 1000.0)).is_ok());
        for key in [None, Some(" ".into())] {
            let mut keyless = args(500.0, 1000.0);
            keyless.provider_api_key = key;
            assert!(matches!(
                HttpTransport::new(&keyless),
                Err(HttpAdapterError::EmptyKey)
            ));
        }
        for (rate, max) in [
            (f64::NAN, 10.0),
            (-1.0, 10.0),
            (0.0, 10.0),
            (5.0, f64::INFINITY),
        ] {
            assert!(Resilience::new(&args(rate, max)).is_err(), "{rate} {max}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_defaults_to_one() {
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static("3"))),
            Duration::from_secs(3)
        );
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static("0.5"))),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static("soon"))),
            Duration::from_secs(1)
        );
        assert_eq!(parse_retry_after(None), Duration::from_secs(1));
    }
}
