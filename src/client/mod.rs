//! The HTTP client of herald-ingest's API that the operators' CLI and the development tools
//! share: one base URL, the service key presented with every call, and the refusal with its
//! body when the API says no.

mod report;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use report::campaign_summary;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the API at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the API answered {status} to {what}: {body}")]
    Refused {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("the API key (HERALD_API_KEY) holds characters a header cannot carry")]
    BadKey,
    #[error("cannot build an HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// An HTTP client that presents `key` (a service API key) with every call; a request's own
/// `Authorization` wins over it.
pub fn keyed_client(key: &str) -> Result<reqwest::Client, ClientError> {
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| ClientError::BadKey)?;
    value.set_sensitive(true);
    let headers = reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .map_err(ClientError::Client)
}

/// herald-ingest at one base URL.
pub struct ApiClient {
    http: reqwest::Client,
    api: String,
}

impl ApiClient {
    pub fn new(api: &str) -> Self {
        ApiClient {
            http: reqwest::Client::new(),
            api: api.trim_end_matches('/').to_string(),
        }
    }

    /// Presents `key` (a service API key) with every call.
    pub fn with_key(mut self, key: Option<&str>) -> Result<Self, ClientError> {
        if let Some(key) = key.filter(|k| !k.is_empty()) {
            self.http = keyed_client(key)?;
        }
        Ok(self)
    }

    /// POSTs `body` to `path`: the JSON answer, or the refusal.
    pub async fn post(
        &self,
        what: &'static str,
        path: &str,
        body: Value,
    ) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, what, path, Some(body))
            .await
    }

    /// Any call of the API: the JSON answer (`null` for none), or the refusal with its body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        what: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.api);
        let mut req = self.http.request(method, &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { url, source })?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status >= 300 {
            return Err(ClientError::Refused {
                what,
                status,
                body: body.to_string(),
            });
        }
        Ok(body)
    }

    /// GETs `path`: the status code and the JSON body (`null` when there is none).
    pub async fn get(&self, path: &str) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{path}", self.api);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { url, source })?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    pub async fn status(&self, id: &str) -> Result<String, ClientError> {
        let (_, body) = self.get(&format!("/v1/requests/{id}")).await?;
        Ok(body["status"].as_str().unwrap_or("unknown").to_string())
    }

    pub async fn campaign(&self, id: &str) -> Result<Value, ClientError> {
        let (status, body) = self.get(&format!("/v1/campaigns/{id}")).await?;
        if status != 200 {
            return Err(ClientError::Refused {
                what: "campaign",
                status,
                body: body.to_string(),
            });
        }
        Ok(body)
    }

    /// Pauses, resumes or cancels a campaign (`action`: its route's last part); the report.
    pub async fn campaign_action(
        &self,
        id: &str,
        action: &'static str,
    ) -> Result<Value, ClientError> {
        self.post(action, &format!("/v1/campaigns/{id}/{action}"), json!({}))
            .await
    }

    /// Follows a campaign until it completes (or `limit` passes): a progress bar with rate
    /// and ETA on a terminal, a line a second otherwise (logs, CI). Returns the last report.
    pub async fn watch_campaign(&self, id: &str, limit: Duration) -> Result<Value, ClientError> {
        use std::io::IsTerminal as _;
        let started = Instant::now();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {human_pos}/{human_len} {per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        loop {
            let report = self.campaign(id).await?;
            let p = &report["progress"];
            let (done, total) = (
                p["outcomes"].as_u64().unwrap_or(0),
                report["recipients"].as_u64().unwrap_or(0),
            );
            let status = report["status"].as_str().unwrap_or("?").to_string();
            match &bar {
                Some(bar) => {
                    bar.set_length(total);
                    bar.set_position(done);
                    bar.set_message(format!("{status}, fanned out {}", p["fanned_out"]));
                }
                None => {
                    let secs = started.elapsed().as_secs_f64();
                    let rate = done as f64 / secs.max(0.001);
                    let eta = if rate > 0.0 && total > done {
                        format!("{:.0}s", (total - done) as f64 / rate)
                    } else {
                        "-".into()
                    };
                    eprintln!(
                        "  [{secs:>5.1}s] {status} fanned out {}/{total}  finished {done} ({}%)  {rate:.0}/s  ETA {eta}",
                        p["fanned_out"], p["percent"],
                    );
                }
            }
            if status == "completed" || status == "cancelled" || started.elapsed() > limit {
                if let Some(bar) = bar {
                    bar.finish_with_message(status);
                }
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
