//! One trace follows an event from the ingest request through Kafka (`traceparent` message header) to
//! the writer's insert, recorded by an in-memory exporter. A test binary of its own: the tracing
//! subscriber is global to the process.

use std::time::Duration;

use eventgate_core::config::TelemetryConfig;
use eventgate_e2e::System;
use eventgate_test_support::{token, wait_until};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry::Value as OtelValue;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a OtelValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn spans(exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    exporter.get_finished_spans().expect("finished spans")
}

/// Posts one event, returns the response's request id.
async fn post(system: &System, traceparent: Option<&str>) -> String {
    let mut request = system
        .http
        .post(format!("{}/topics/audit.logs", system.ingest_url))
        .bearer_auth(token("dev"))
        .json(&json!({"event_name": "traced", "description": "one trace", "customer_id": 1}));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("ingest answers");
    assert_eq!(response.status(), 202);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("request id")
        .to_owned();
    let _: Value = response.json().await.expect("json");
    request_id
}

/// Waits for the writer's insert span of `trace_id` and returns (request span, publish span, insert).
async fn trace_of(
    exporter: &InMemorySpanExporter,
    request_id: &str,
) -> (SpanData, SpanData, SpanData) {
    let request_span = || {
        spans(exporter).into_iter().find(|span| {
            attribute(span, "request_id").map(|v| v.as_str()) == Some(request_id.into())
        })
    };
    wait_until("the request span", WAIT, || async {
        request_span().is_some()
    })
    .await
    .expect("the request span is exported");
    let request = request_span().expect("request span");
    let trace_id = request.span_context.trace_id();
    let insert = || {
        spans(exporter).into_iter().find(|span| {
            span.name.starts_with("insert ") && span.span_context.trace_id() == trace_id
        })
    };
    wait_until(
        "the writer's insert span in the same trace",
        WAIT,
        || async { insert().is_some() },
    )
    .await
    .unwrap_or_else(|e| {
        let names: Vec<_> = spans(exporter)
            .iter()
            .map(|s| format!("{} {}", s.name, s.span_context.trace_id()))
            .collect();
        panic!("{e:#}; spans: {names:?}")
    });
    let publish = spans(exporter)
        .into_iter()
        .find(|span| span.name.starts_with("publish ") && span.span_context.trace_id() == trace_id)
        .expect("publish span in the trace");
    (request, publish, insert().expect("insert span"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_ingest_request_to_the_writers_insert() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let _telemetry =
        eventgate_core::telemetry::init_with_provider(&TelemetryConfig::default(), provider);
    assert!(eventgate_core::telemetry::tracing_enabled());
    let system = System::start(1).await;

    // A trace started at ingest: request → publish (in the request) → insert (in the writer, through
    // the message header).
    let request_id = post(&system, None).await;
    let (request, publish, insert) = trace_of(&exporter, &request_id).await;
    assert_eq!(request.name, "POST /topics/{topic}");
    assert_eq!(request.parent_span_id, SpanId::INVALID, "a root span");
    assert_eq!(publish.parent_span_id, request.span_context.span_id());
    assert_eq!(insert.parent_span_id, publish.span_context.span_id());
    assert!(
        insert.parent_span_is_remote,
        "the parent came through Kafka"
    );
    let kafka_topic = system.config.kafka.kafka_topic("audit.logs");
    assert_eq!(
        attribute(&insert, "kafka.topic").map(|v| v.as_str()),
        Some(kafka_topic.as_str().into())
    );

    // A trace started by the caller (`traceparent` header) is continued, not replaced.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let request_id = post(
        &system,
        Some(&format!("00-{caller_trace}-00f067aa0ba902b7-01")),
    )
    .await;
    let (request, _, insert) = trace_of(&exporter, &request_id).await;
    let expected = TraceId::from_hex(caller_trace).expect("trace id");
    assert_eq!(request.span_context.trace_id(), expected);
    assert_eq!(insert.span_context.trace_id(), expected);
    assert_eq!(
        request.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").expect("span id")
    );
}
