//! Calls to the fleet's API and provider, and waits on what they answer.

use super::*;

impl Fleet {
    /// Stores customers through the API, 1000 per call.
    pub async fn put_customers(&self, customers: Vec<Value>) {
        for chunk in customers.chunks(1000) {
            let (status, body) = self
                .post("/v1/customers/batch", json!({ "customers": chunk }))
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }

    /// Polls a campaign until it is `completed` or `limit` passes; returns its last report.
    pub async fn wait_campaign(&self, id: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.assert_no_failures();
            let (status, report) = self.get(&format!("/v1/campaigns/{id}")).await;
            if (status == 200 && report["status"] == "completed")
                || tokio::time::Instant::now() > deadline
            {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Follows `customer`'s one-click unsubscribe link of `campaign` as a mailbox provider
    /// does (RFC 8058); answers the status.
    pub async fn one_click(&self, campaign: &str, customer: &str) -> u16 {
        let tokens = herald::auth::UnsubscribeTokens::new(&UNSUBSCRIBE_SECRET.into()).unwrap();
        let token = tokens.token(
            &herald::model::CampaignId::parse(campaign).unwrap(),
            &herald::model::CustomerId::parse(customer).unwrap(),
        );
        self.anon
            .post(format!("{}/v1/unsubscribe/{token}", self.api_url))
            .form(&[("List-Unsubscribe", "One-Click")])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A `PUT` with the admin key; answers the status and the body.
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// GETs any URL as JSON; `None` while it cannot be reached or does not answer JSON
    /// (a program still starting).
    pub async fn get_json(&self, url: &str) -> Option<Value> {
        self.http.get(url).send().await.ok()?.json().await.ok()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// One call to the API with the admin key: its status and its JSON body (null if none).
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{}", self.api_url, path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates and processes `n` requests; returns their ids and every HTTP status seen.
    pub async fn submit(&self, n: usize, channel: &str) -> (Vec<String>, Vec<u16>) {
        let mut ids = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(2 * n);
        for i in 0..n {
            let (s, body) = self
                .post("/v1/requests", json!({"to": format!("user{i}@example.com"), "message": "hello", "type": channel}))
                .await;
            statuses.push(s);
            let id = body["id"].as_str().expect("id").to_string();
            let (s, _) = self
                .post(&format!("/v1/requests/{id}/process"), json!({}))
                .await;
            statuses.push(s);
            ids.push(id);
        }
        (ids, statuses)
    }

    /// Polls until every id is `sent` or `failed`, or `limit` passes; returns counts by status.
    pub async fn wait_terminal(&self, ids: &[String], limit: Duration) -> HashMap<String, usize> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.assert_no_failures();
            let counts = self.status_counts(ids).await;
            let done = counts.get("sent").copied().unwrap_or(0)
                + counts.get("failed").copied().unwrap_or(0);
            if done == ids.len() || tokio::time::Instant::now() > deadline {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn status_counts(&self, ids: &[String]) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for id in ids {
            // Retried: a test may have just restarted Redis.
            let id = herald::model::RequestId(id.clone());
            let mut st = self.store.requests.request_status(&id).await;
            for _ in 0..10 {
                if st.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                st = self.store.requests.request_status(&id).await;
            }
            let st = st.expect("redis answers");
            *counts
                .entry(st.map(|s| s.to_string()).unwrap_or("missing".into()))
                .or_insert(0) += 1;
        }
        counts
    }

    pub async fn sim_stats(&self) -> SimStats {
        self.http
            .get(format!("{}/v1/stats", self.provider_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}
