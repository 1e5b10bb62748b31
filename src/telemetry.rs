//! Logs and traces. Logs: one line per event, text for people or JSON for log shippers,
//! filtered by `RUST_LOG` (default `info`). Traces: exported over OTLP/HTTP (JSON) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the W3C `traceparent` travels in Kafka message
//! headers so one notification's spans join up across programs.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders, OwnedMessage};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::model::LifecycleEvent;

/// Keeps the trace exporter alive; dropping it (or [`Telemetry::shutdown`]) flushes the
/// spans still buffered.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("trace export shutdown: {e}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Sets up logging, and tracing export when the OTLP endpoint variable is set.
pub fn init(service: &'static str, format: LogFormat) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    }
    .with_filter(filter);
    let provider = otlp_provider(service);
    EXPORTING.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    // Spans are exported whatever RUST_LOG says about log lines: quiet logs must not cut traces.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(LevelFilter::INFO)
    });
    // try_init: tests may call this more than once in one process.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Telemetry { provider }
}

/// Whether spans go anywhere: set by [`init`] when an OTLP endpoint is configured.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports traces. Per-message spans cost a registry entry and a few
/// allocations each (about 5% of a dispatcher's CPU); with no exporter nobody reads them, so
/// the hot paths make them only when this is true.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(not(feature = "otlp"))]
fn otlp_provider(_service: &'static str) -> Option<SdkTracerProvider> {
    if std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|e| !e.trim().is_empty()) {
        eprintln!("OTLP export disabled: this build has no `otlp` feature");
    }
    None
}

#[cfg(feature = "otlp")]
fn otlp_provider(service: &'static str) -> Option<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
    if endpoint.trim().is_empty() {
        return None;
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
        .build();
    match exporter {
        Ok(exporter) => Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service)
                        .build(),
                )
                .build(),
        ),
        Err(e) => {
            eprintln!("OTLP export disabled: {e}");
            None
        }
    }
}

const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The current span's W3C trace context (`traceparent`, `tracestate`); `None` when not
/// tracing.
fn current_context() -> Option<HashMap<String, String>> {
    if !exporting() {
        return None;
    }
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    Some(carrier)
}

/// The current span's W3C trace context as Kafka headers; `None` when not tracing.
pub fn trace_headers() -> Option<OwnedHeaders> {
    let carrier = current_context()?;
    let mut headers = OwnedHeaders::new();
    for name in TRACE_HEADERS {
        if let Some(v) = carrier.get(name) {
            headers = headers.insert(Header {
                key: name,
                value: Some(v.as_str()),
            });
        }
    }
    Some(headers)
}

/// Makes `span` a child of the trace the message's headers carry, if any.
fn continue_trace(msg: &OwnedMessage, span: &tracing::Span) {
    let Some(headers) = msg.headers() else { return };
    let mut carrier: HashMap<String, String> = HashMap::new();
    for h in headers.iter() {
        if TRACE_HEADERS.contains(&h.key) {
            if let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                carrier.insert(h.key.to_string(), v.to_string());
            }
        }
    }
    set_parent(span, &carrier);
}

/// Runs `work` in `span`, made a child of the trace `msg`'s headers carry: how a consumer
/// joins the trace of the message it handles.
pub async fn in_trace_of<F: std::future::Future>(
    msg: &OwnedMessage,
    span: impl FnOnce() -> tracing::Span,
    work: F,
) -> F::Output {
    use tracing::Instrument as _;
    if !exporting() {
        return work.await;
    }
    let span = span();
    continue_trace(msg, &span);
    work.instrument(span).await
}

/// Makes `span` a child of a stored W3C traceparent.
pub fn continue_traceparent(traceparent: &str, span: &tracing::Span) {
    let carrier = HashMap::from([(TRACE_HEADERS[0].to_string(), traceparent.to_string())]);
    set_parent(span, &carrier);
}

fn set_parent(span: &tracing::Span, carrier: &HashMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(carrier);
    let _ = span.set_parent(cx);
}

/// The current span's W3C traceparent, to store with state that outlives the message.
pub fn current_traceparent() -> Option<String> {
    current_context()?.remove(TRACE_HEADERS[0])
}

/// Records that the metrics aggregator counted a traced event, as a span of its trace.
pub fn follow_event(msg: &OwnedMessage, event: &LifecycleEvent) {
    let has_trace = msg
        .headers()
        .is_some_and(|h| h.iter().any(|h| h.key == TRACE_HEADERS[0]));
    if !has_trace {
        return;
    }
    let span = tracing::info_span!("metrics.count", id = %event.id, outcome = event.kind.outcome());
    continue_trace(msg, &span);
}
