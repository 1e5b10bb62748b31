//! One notification's spans share a trace, from ingest to dispatch and through a fallback, as
//! a real OTLP receiver gets them.

use super::*;

/// A minimal OTLP/HTTP (JSON) receiver: keeps every span's (service, name, trace id).
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<(String, String, String)>>>) {
    use axum::routing::post;
    let spans: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let keep = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                    let service = rs["resource"]["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["key"] == "service.name")
                        .and_then(|a| a["value"]["stringValue"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        for s in ss["spans"].as_array().into_iter().flatten() {
                            keep.lock().unwrap().push((
                                service.clone(),
                                s["name"].as_str().unwrap_or_default().to_string(),
                                s["traceId"].as_str().unwrap_or_default().to_string(),
                            ));
                        }
                    }
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

/// Herald programs run as real processes that export spans to an OTLP receiver.
struct TracedPrograms {
    env: HashMap<&'static str, String>,
    children: Vec<ChildGuard>,
    spans: Arc<Mutex<Vec<(String, String, String)>>>,
    api: String,
}

impl TracedPrograms {
    /// Starts a receiver and `herald-ingest`, waiting until it is ready.
    async fn start(fleet: &Fleet) -> TracedPrograms {
        let (otlp, spans) = otlp_receiver().await;
        let mut env = HashMap::from(fleet.access_env());
        env.extend([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_string()),
            ("HERALD_KAFKA_BROKERS", fleet.brokers().to_string()),
            ("HERALD_REDIS_URL", crate::harness::redis_url()),
            ("HERALD_NAMESPACE", fleet.ns.clone()),
            ("HERALD_PROVIDER_URL", fleet.provider_url.clone()),
            ("HERALD_PROVIDER_API_KEY", API_KEY.to_string()),
            ("RUST_LOG", "warn".to_string()),
        ]);
        let port = crate::harness::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut programs = TracedPrograms {
            env,
            children: Vec::new(),
            spans,
            api: format!("http://{addr}"),
        };
        programs.spawn(env!("CARGO_BIN_EXE_herald-ingest"), &["--http-addr", &addr]);
        let api = programs.api.clone();
        wait_until("herald-ingest", Duration::from_secs(20), || {
            let r = fleet.http.get(format!("{api}/readyz")).send();
            async move { r.await.map(|r| r.status() == 200).unwrap_or(false) }
        })
        .await;
        programs
    }

    fn spawn(&mut self, bin: &str, args: &[&str]) {
        self.children.push(ChildGuard(Some(
            Command::new(bin)
                .args(args)
                .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )));
    }

    /// SIGTERM to every program (each flushes its spans on the way out); the spans seen.
    async fn stop(mut self) -> Vec<(String, String, String)> {
        for child in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.children {
            child.wait_exit(Duration::from_secs(30)).await;
        }
        let spans = self.spans.lock().unwrap().clone();
        spans
    }
}

fn trace_of(spans: &[(String, String, String)], service: &str, name: &str) -> String {
    spans
        .iter()
        .find(|(s, n, _)| s == service && n == name)
        .map(|(_, _, t)| t.clone())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| panic!("no {name} span from {service} in {spans:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_notification_is_one_trace_from_ingest_to_dispatch() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let mut programs = TracedPrograms::start(&fleet).await;
    programs.spawn(
        env!("CARGO_BIN_EXE_herald-dispatch"),
        &["--channel", "email"],
    );
    let api = programs.api.clone();
    let created: Value = fleet
        .http
        .post(format!("{api}/v1/requests"))
        .json(&json!({"to": "a@b.example", "message": "hola", "type": "email"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let r = fleet
        .http
        .post(format!("{api}/v1/requests/{id}/process"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_until(
        "the request to be sent",
        Duration::from_secs(30),
        || async {
            fleet
                .get_json(&format!("{api}/v1/requests/{id}"))
                .await
                .is_some_and(|v| v["status"] == "sent")
        },
    )
    .await;
    let spans = programs.stop().await;
    let ingest = trace_of(&spans, "herald-ingest", "ingest.process");
    let dispatch = trace_of(&spans, "herald-dispatch", "dispatch.handle");
    assert_eq!(
        ingest, dispatch,
        "ingest and dispatch spans share the trace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_campaign_delivery_and_its_fallback_are_one_trace() {
    let mut sim = quiet_provider();
    sim.silent_channels = vec![Channel::Email];
    let fleet = Fleet::start(sim, 1).await;
    let mut programs = TracedPrograms::start(&fleet).await;
    for args in [vec!["--channel", "email"], vec!["--channel", "push"]] {
        programs.spawn(env!("CARGO_BIN_EXE_herald-dispatch"), &args);
    }
    programs.spawn(env!("CARGO_BIN_EXE_herald-fanout"), &[]);
    programs.spawn(env!("CARGO_BIN_EXE_herald-retry"), &[]);
    let metrics_port = crate::harness::free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    programs.spawn(
        env!("CARGO_BIN_EXE_herald-metrics"),
        &["--http-addr", &metrics],
    );
    let api = programs.api.clone();
    let r = fleet
        .http
        .post(format!("{api}/v1/customers/batch"))
        .json(&json!({"customers": [email_push_customer("tr-1")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = fleet
        .http
        .post(format!("{api}/v1/campaigns"))
        .json(&json!({"id": "trace1", "name": "t", "template": "Hola {{name}}", "channels": ["email", "push"],
                      "confirmation_timeout_ms": {"email": 1000, "push": 5000}, "audience": {"customer_ids": ["tr-1"]}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    wait_until(
        "the campaign to complete through push",
        Duration::from_secs(60),
        || async {
            fleet
                .get_json(&format!("{api}/v1/campaigns/trace1"))
                .await
                .is_some_and(|v| v["status"] == "completed" && v["counts"]["delivered:push"] == 1)
        },
    )
    .await;
    wait_until(
        "herald-metrics to count the push delivery",
        Duration::from_secs(30),
        || async {
            fleet
                .get_json(&format!("http://{metrics}/v1/stats/campaigns/trace1"))
                .await
                .is_some_and(|v| v["counts"]["channels"]["push"]["delivered"] == 1)
        },
    )
    .await;
    let spans = programs.stop().await;
    let trace = trace_of(&spans, "herald-ingest", "ingest.campaign");
    assert!(
        spans
            .iter()
            .any(|(s, n, t)| s == "herald-metrics" && n == "metrics.count" && *t == trace),
        "herald-metrics counted the events in the same trace: {spans:?}"
    );
    assert_eq!(trace_of(&spans, "herald-fanout", "fanout.batch"), trace);
    assert_eq!(
        trace_of(&spans, "herald-retry", "retry.overdue"),
        trace,
        "the fallback joins the trace"
    );
    let dispatches = spans
        .iter()
        .filter(|(s, n, t)| s == "herald-dispatch" && n == "dispatch.handle" && *t == trace)
        .count();
    assert!(
        dispatches >= 2,
        "the e-mail attempt and the push fallback: {spans:?}"
    );
}
