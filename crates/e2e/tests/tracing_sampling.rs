//! A caller's `traceparent` cannot force recording unless the caller is authenticated: with a sampling
//! ratio of 0, requests without a valid token are not exported whatever their `sampled` flag says, while
//! an authenticated request's sampled trace is continued. A test binary of its own: the tracing
//! subscriber (with the ratio-0 sampler) is global to the process.

use std::time::Duration;

use eventgate_core::config::TelemetryConfig;
use eventgate_e2e::System;
use eventgate_test_support::{token, wait_until};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn spans(exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    exporter.get_finished_spans().expect("finished spans")
}

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-00f067aa0ba902b7-01")
}

/// Sends a request with a sampled `traceparent` of `trace`; returns the status.
async fn send(system: &System, method: &str, url: String, jwt: Option<&str>, trace: &str) -> u16 {
    let mut request = match method {
        "GET" => system.http.get(url),
        _ => system
            .http
            .post(url)
            .json(&json!({"event_name": "traced", "description": "sampling", "customer_id": 1})),
    };
    if let Some(jwt) = jwt {
        request = request.bearer_auth(jwt);
    }
    let response = request
        .header("traceparent", traceparent(trace))
        .send()
        .await
        .expect("the service answers");
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_traceparent_does_not_force_sampling() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        // Record no trace of our own: only a continued, sampled one can be exported.
        .with_sampler(eventgate_core::telemetry::sampler(0.0))
        .build();
    let _telemetry =
        eventgate_core::telemetry::init_with_provider(&TelemetryConfig::default(), provider);
    assert!(eventgate_core::telemetry::tracing_enabled());
    let system = System::start(0).await;
    let write = format!("{}/topics/audit.logs", system.ingest_url);

    let anonymous = [
        // No token at all.
        (
            "POST",
            write.clone(),
            None,
            "11111111111111111111111111111111",
            401,
        ),
        // A token that does not verify.
        (
            "POST",
            write.clone(),
            Some("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkZXYifQ.c2ln"),
            "22222222222222222222222222222222",
            401,
        ),
        // A route that needs no token.
        (
            "GET",
            format!("{}/health/live", system.ingest_url),
            None,
            "33333333333333333333333333333333",
            200,
        ),
        (
            "GET",
            format!("{}/stats/audit.logs", system.stats_url),
            None,
            "44444444444444444444444444444444",
            401,
        ),
    ];
    for (method, url, jwt, trace, expected) in &anonymous {
        assert_eq!(
            send(&system, method, url.clone(), *jwt, trace).await,
            *expected,
            "{method} {url}"
        );
    }
    // Authenticated without a traceparent: our ratio (0) decides, nothing is recorded.
    let response = system
        .http
        .post(&write)
        .bearer_auth(token("dev"))
        .json(&json!({"event_name": "traced", "description": "unsampled", "customer_id": 1}))
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(response.status(), 202);

    // Authenticated with a sampled traceparent: the caller's trace is continued and exported.
    let caller = "55555555555555555555555555555555";
    let dev = token("dev");
    assert_eq!(
        send(&system, "POST", write.clone(), Some(&dev), caller).await,
        202
    );
    let expected = TraceId::from_hex(caller).expect("trace id");
    wait_until("the authenticated request's span", WAIT, || async {
        spans(&exporter)
            .iter()
            .any(|span| span.span_context.trace_id() == expected && span.name.starts_with("POST "))
    })
    .await
    .expect("the caller's sampled trace is continued");
    let request = spans(&exporter)
        .into_iter()
        .find(|span| span.span_context.trace_id() == expected && span.name.starts_with("POST "))
        .expect("request span");
    assert_eq!(
        request.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").expect("span id")
    );

    // The spans of the anonymous requests ended before that one: had they been sampled, the simple
    // exporter would hold them by now. Only the authenticated trace is there.
    let exported = spans(&exporter);
    let traces: std::collections::BTreeSet<String> = exported
        .iter()
        .map(|span| span.span_context.trace_id().to_string())
        .collect();
    assert_eq!(
        traces,
        std::collections::BTreeSet::from([caller.to_owned()]),
        "spans: {:?}",
        exported
            .iter()
            .map(|s| format!("{} {}", s.name, s.span_context.trace_id()))
            .collect::<Vec<_>>()
    );
}
