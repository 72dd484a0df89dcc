//! Logs and traces shared by the services.
//!
//! - Logs: pretty lines for people, JSON lines for collectors (`telemetry.log_format`), filtered by
//!   `telemetry.log_filter` (`RUST_LOG` overrides it). A log line carries the fields of the spans it is in,
//!   so every line written while serving a request carries its `request_id`.
//! - Traces: `tracing` spans of the eventgate crates are exported over OTLP/HTTP when
//!   `telemetry.otlp_endpoint` is set (feature `otlp`); otherwise no trace is recorded at all. The W3C
//!   trace context crosses HTTP (`traceparent` request header) and Kafka (`traceparent` message header, see
//!   [`kafka_context`]), so one trace follows an event from the ingest request to the writer's insert.
//!
//! [`init`] returns a [`Telemetry`] guard; [`Telemetry::shutdown`] flushes the spans still buffered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, TelemetryConfig};

/// Set once spans are exported: the writer creates one span per traced event only then.
static TRACING_ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are recorded for export (an OTLP endpoint, or a test's exporter, is installed).
pub fn tracing_enabled() -> bool {
    TRACING_ENABLED.load(Ordering::Relaxed)
}

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] exports what is still buffered.
#[must_use = "call shutdown() before exiting, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the span exporter (bounded: the exporter's own timeout applies).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
                tracing::warn!(%error, "span exporter did not shut down cleanly");
            }
        }
    }
}

/// Installs the global subscriber for a service: logs per `config`, and traces exported over OTLP when
/// `config.otlp_endpoint` is set. `default_service` names the service when `config.service_name` is unset.
/// Safe to call more than once (tests): later calls are ignored.
pub fn init(config: &TelemetryConfig, default_service: &str) -> Telemetry {
    let provider = match &config.otlp_endpoint {
        Some(endpoint) if !endpoint.trim().is_empty() => {
            match otlp_provider(config, default_service, endpoint) {
                Ok(provider) => Some(provider),
                Err(error) => {
                    // Logging is not up yet; a broken exporter must not stop the service.
                    eprintln!("traces disabled: cannot create the OTLP exporter: {error}");
                    None
                }
            }
        }
        _ => None,
    };
    install(config, provider, std::io::stdout)
}

/// Like [`init`], with a tracer provider built by the caller (tests use an in-memory exporter).
pub fn init_with_provider(config: &TelemetryConfig, provider: SdkTracerProvider) -> Telemetry {
    install(config, Some(provider), std::io::stdout)
}

/// The sampler: `ratio` of new traces, the caller's decision for traces started upstream.
pub fn sampler(ratio: f64) -> Sampler {
    let root = if ratio >= 1.0 {
        Sampler::AlwaysOn
    } else if ratio <= 0.0 {
        Sampler::AlwaysOff
    } else {
        Sampler::TraceIdRatioBased(ratio)
    };
    Sampler::ParentBased(Box::new(root))
}

/// The `service.name` resource of a service's spans.
pub fn resource(config: &TelemetryConfig, default_service: &str) -> Resource {
    let name = config
        .service_name
        .clone()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| default_service.to_owned());
    Resource::builder()
        .with_service_name(name)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

#[cfg(feature = "otlp")]
fn otlp_provider(
    config: &TelemetryConfig,
    default_service: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let endpoint = endpoint.trim_end_matches('/');
    let url = if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|error| error.to_string())?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(config.sampling_ratio))
        .with_resource(resource(config, default_service))
        .build())
}

#[cfg(not(feature = "otlp"))]
fn otlp_provider(
    _config: &TelemetryConfig,
    _default_service: &str,
    _endpoint: &str,
) -> Result<SdkTracerProvider, String> {
    Err("this binary was built without the `otlp` feature".into())
}

/// The log filter: `RUST_LOG`, else the configured directives, else `info`.
fn log_filter(config: &TelemetryConfig) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The log layer, writing to `writer`. Public for tests that read the log lines back.
pub fn log_layer<S, W>(config: &TelemetryConfig, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match config.log_format {
        // Every span from the root down, so a line logged deep inside a request still has request_id;
        // the stock JSON formatter's lines, written without re-parsing span fields (`json_log`).
        LogFormat::Json => layer
            .fmt_fields(crate::json_log::SpanFieldsJson)
            .event_format(crate::json_log::JsonLines)
            .with_filter(log_filter(config))
            .boxed(),
        LogFormat::Pretty => layer.compact().with_filter(log_filter(config)).boxed(),
    }
}

fn install<W>(config: &TelemetryConfig, provider: Option<SdkTracerProvider>, writer: W) -> Telemetry
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // Traces follow the eventgate crates' spans whatever the log filter says: turning logs down to `warn`
    // must not cut the traces.
    let trace_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("eventgate"))
            .with_filter(Targets::new().with_target("eventgate", Level::INFO))
    });
    let installed = Registry::default()
        .with(log_layer(config, writer))
        .with(trace_layer)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        TRACING_ENABLED.store(true, Ordering::Relaxed);
    }
    Telemetry {
        provider: if installed { provider } else { None },
    }
}

/// W3C trace context in Kafka message headers (feature `kafka`): the ingest-api injects the context of
/// the request into every message it publishes; the writer extracts it to continue the trace.
#[cfg(feature = "kafka")]
pub mod kafka_context {
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry::Context;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use rdkafka::message::{Header, Headers, OwnedHeaders};

    struct HeaderWriter(Vec<(String, String)>);

    impl Injector for HeaderWriter {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }

    struct HeaderReader<'a, H: Headers>(&'a H);

    impl<H: Headers> Extractor for HeaderReader<'_, H> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|header| header.key.eq_ignore_ascii_case(key))
                .and_then(|header| header.value)
                .and_then(|value| std::str::from_utf8(value).ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|header| header.key).collect()
        }
    }

    /// Adds `traceparent` (and `tracestate`) for `cx` to `headers`; unchanged when `cx` has no span.
    pub fn inject(headers: OwnedHeaders, cx: &Context) -> OwnedHeaders {
        if !cx.span().span_context().is_valid() {
            return headers;
        }
        let mut writer = HeaderWriter(Vec::new());
        TraceContextPropagator::new().inject_context(cx, &mut writer);
        writer.0.iter().fold(headers, |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_str()),
            })
        })
    }

    /// The sampled remote context a message carries, if any: the parent of the spans that handle it.
    pub fn extract<H: Headers>(headers: Option<&H>) -> Option<Context> {
        let headers = headers?;
        let cx = TraceContextPropagator::new().extract(&HeaderReader(headers));
        let span_context = cx.span().span_context().clone();
        (span_context.is_valid() && span_context.is_sampled()).then_some(cx)
    }

    /// The trace contexts of the messages of a batch being collected, so that writing the batch can
    /// open one span per traced event, each in the trace of the request that published it (a batch
    /// mixes events of many traces, so one batch span could only belong to one of them).
    #[derive(Debug, Default)]
    pub struct BatchTraces {
        parents: Vec<(Context, String, i32, i64)>,
    }

    impl BatchTraces {
        /// Remembers the message's trace context, when it has a sampled one and traces are exported.
        pub fn push<M: rdkafka::Message>(&mut self, message: &M) {
            if !super::tracing_enabled() {
                return;
            }
            if let Some(cx) = extract(message.headers()) {
                self.parents.push((
                    cx,
                    message.topic().to_owned(),
                    message.partition(),
                    message.offset(),
                ));
            }
        }

        /// Opens one `eventgate.writer.insert` span per remembered message and forgets them: the spans
        /// end when the returned guards are dropped, after the batch is written and committed.
        pub fn open_insert_spans(&mut self, batch_size: usize) -> Vec<tracing::Span> {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            self.parents
                .drain(..)
                .map(|(cx, topic, partition, offset)| {
                    let span = tracing::info_span!(
                        parent: None,
                        "eventgate.writer.insert",
                        otel.name = %format_args!("insert {topic}"),
                        otel.kind = "consumer",
                        kafka.topic = %topic,
                        kafka.partition = partition,
                        kafka.offset = offset,
                        batch.size = batch_size,
                    );
                    // Only fails when the span is disabled; there is nothing to attach then.
                    let _ = span.set_parent(cx);
                    span
                })
                .collect()
        }

        pub fn len(&self) -> usize {
            self.parents.len()
        }

        pub fn is_empty(&self) -> bool {
            self.parents.is_empty()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

        fn remote(flags: TraceFlags) -> Context {
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                flags,
                true,
                TraceState::default(),
            ))
        }

        #[test]
        fn trace_context_crosses_message_headers() {
            let headers = inject(OwnedHeaders::new(), &remote(TraceFlags::SAMPLED));
            let traceparent = headers
                .iter()
                .find(|h| h.key == "traceparent")
                .and_then(|h| h.value)
                .unwrap();
            assert_eq!(
                traceparent,
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            );
            let cx = extract(Some(&headers)).unwrap();
            assert_eq!(
                cx.span().span_context().trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
        }

        #[test]
        fn no_context_no_header_and_unsampled_is_ignored() {
            let headers = inject(OwnedHeaders::new(), &Context::new());
            assert_eq!(headers.count(), 0);
            assert!(extract(Some(&headers)).is_none());
            assert!(extract::<OwnedHeaders>(None).is_none());
            // An unsampled context still travels (downstream keeps the decision), but opens no span.
            let unsampled = inject(OwnedHeaders::new(), &remote(TraceFlags::default()));
            assert!(unsampled
                .iter()
                .any(|h| h.key == "traceparent" && h.value.is_some_and(|v| v.ends_with(b"-00"))));
            assert!(extract(Some(&unsampled)).is_none());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_respects_bounds() {
        assert!(matches!(sampler(1.0), Sampler::ParentBased(_)));
        assert!(format!("{:?}", sampler(2.0)).contains("AlwaysOn"));
        assert!(format!("{:?}", sampler(0.0)).contains("AlwaysOff"));
        assert!(format!("{:?}", sampler(0.25)).contains("TraceIdRatioBased(0.25)"));
    }

    #[test]
    fn service_name_defaults_to_the_binary() {
        let config = TelemetryConfig::default();
        let default = resource(&config, "eventgate-ingest-api");
        let name = default.get(&opentelemetry::Key::new("service.name"));
        assert_eq!(
            name.map(|v| v.to_string()).as_deref(),
            Some("eventgate-ingest-api")
        );
        let named = TelemetryConfig {
            service_name: Some("ingest-eu".into()),
            ..TelemetryConfig::default()
        };
        let renamed = resource(&named, "eventgate-ingest-api");
        let name = renamed.get(&opentelemetry::Key::new("service.name"));
        assert_eq!(name.map(|v| v.to_string()).as_deref(), Some("ingest-eu"));
    }
}
