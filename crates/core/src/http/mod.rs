//! HTTP glue shared by the services (feature `http`): the error envelope as an actix-web response, the
//! bearer header, the request telemetry middleware ([`RequestTelemetry`]: request id, one log line and
//! one span per request, HTTP metrics), the metrics and health responses, and the server set-up both
//! APIs share ([`server`]: [`ApiServer`]), and the gate of requests about a topic as extractors
//! ([`gate`]: [`TopicWriter`], [`TopicReader`], [`TopicProducer`]); `GET /token` ([`token`]).

mod gate;
pub mod openapi;
mod server;
mod token;

pub use gate::{TopicProducer, TopicReader, TopicWriter};
pub use server::{start_server, with_common_settings, ApiServer, ApiServerSettings};
pub use token::{configure_token, TokenProvider};

use std::future::{ready, Future, Ready};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures_util::future::LocalBoxFuture;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::error::ApiError;
use crate::health::{DependencyHealth, HealthReport};
use crate::metrics::HttpMetrics;

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.kind().retry_after_secs() {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        response.json(self.body())
    }
}

/// The raw `Authorization` header, if it is valid text.
pub fn authorization(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// `GET /metrics` body for a registry.
pub fn metrics_response(registry: &prometheus::Registry) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(crate::metrics::render(registry))
}

/// Turns actix's own extractor failures (bad JSON in a typed body, payload too large, bad path) into
/// the product's envelope instead of actix's plain-text errors.
pub fn json_error_handler(
    err: actix_web::error::JsonPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    use crate::error::ErrorKind;
    use actix_web::error::JsonPayloadError;
    let api = match &err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::new(ErrorKind::TooLarge, err.to_string()).with_field("body")
        }
        JsonPayloadError::ContentType => ApiError::new(
            ErrorKind::Validation,
            "Content-Type must be application/json",
        )
        .with_field("body"),
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::new(
            ErrorKind::Validation,
            format!("body does not have the expected shape: {e}"),
        )
        .with_field("body"),
        _ => ApiError::new(
            ErrorKind::Malformed,
            format!("body is not valid JSON: {err}"),
        )
        .with_field("body"),
    };
    api.into()
}

/// Reads a request body up to `limit` bytes; beyond it the request is a 413 in the envelope.
pub async fn read_body(
    mut payload: actix_web::web::Payload,
    limit: usize,
) -> Result<actix_web::web::Bytes, ApiError> {
    use crate::error::ErrorKind;
    use futures_util::StreamExt;
    let mut body = actix_web::web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::new(ErrorKind::Malformed, format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                ErrorKind::TooLarge,
                format!("body is larger than {limit} bytes"),
            )
            .with_field("body"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// 404 in the envelope for unknown routes.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        crate::error::ErrorKind::NotFound,
        "no such route",
    ))
}

/// The header carrying a request's id, in both directions.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served, in the request's extensions (`HttpRequest::extensions()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// A caller's request id is kept when it is 1–128 characters of `[A-Za-z0-9._:-]`: safe to echo in a
/// header and to write in a log line. Anything else is replaced by a fresh one.
pub fn valid_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The route label of a request: the pattern its path matches (`/topics/{topic}`), never the raw path,
/// so random paths cannot create new series. Looked up before routing, so the span has its final name.
fn route_label(request: &ServiceRequest) -> String {
    request
        .resource_map()
        .match_pattern(request.path())
        .unwrap_or_else(|| "unmatched".to_owned())
}

/// Methods outside the usual set share one label value, for the same reason.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Middleware every service wraps its app in (outermost). For each request it:
/// - takes the caller's `X-Request-ID` when valid, else makes one (a UUIDv7), stores it as a
///   [`RequestId`] extension and echoes it on the response;
/// - runs the request inside an `http.request` span carrying `request_id` (so every log line written
///   while serving it has the id), continuing the caller's trace when a `traceparent` header came in —
///   with the caller's sampling decision only for a request with a valid token (see [`trace_parent`]);
/// - writes one log line when the response is ready, with status, duration and the error if any (4xx
///   included; health and metrics probes at debug level);
/// - counts it in [`HttpMetrics`] by route pattern, method and status.
#[derive(Clone)]
pub struct RequestTelemetry {
    metrics: HttpMetrics,
}

impl RequestTelemetry {
    pub fn new(metrics: HttpMetrics) -> Self {
        RequestTelemetry { metrics }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequestTelemetry
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RequestTelemetryService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestTelemetryService {
            service: Rc::new(service),
            metrics: self.metrics.clone(),
        }))
    }
}

pub struct RequestTelemetryService<S> {
    service: Rc<S>,
    metrics: HttpMetrics,
}

impl<S, B> Service<ServiceRequest> for RequestTelemetryService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let request_id = request
            .headers()
            .get(&REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|value| valid_request_id(value))
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        request
            .extensions_mut()
            .insert(RequestId(request_id.clone()));
        let route = route_label(&request);
        let method = method_label(request.method());
        let probe = route.starts_with("/health") || route == "/metrics";
        let span = tracing::info_span!(
            "http.request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = Empty,
            request_id = %request_id,
            http.method = method,
            http.route = %route,
            http.path = %request.path(),
            http.status_code = Empty,
            trace_id = Empty,
            enduser.id = Empty,
            eventgate.topic = Empty,
            eventgate.events = Empty,
        );
        if crate::telemetry::tracing_enabled() {
            match trace_parent(&request) {
                // Only fails when the span is disabled; then there is no trace to continue anyway.
                RemoteParent::Continue(parent) => drop(span.set_parent(parent)),
                RemoteParent::Link(caller) => span.add_link(caller),
                RemoteParent::None => {}
            }
            let trace_id = span.context().span().span_context().trace_id();
            if trace_id != opentelemetry::trace::TraceId::INVALID {
                span.record("trace_id", tracing::field::display(trace_id));
            }
        }
        let response = self.service.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = response.instrument(span.clone()).await;
            // Handlers' and extractors' errors arrive as responses (with the error attached); an `Err`
            // only comes from an inner middleware, and actix answers it after this layer.
            let (status, error) = match &result {
                Ok(response) => (
                    response.status().as_u16(),
                    response.response().error().map(ToString::to_string),
                ),
                Err(error) => (
                    error.as_response_error().status_code().as_u16(),
                    Some(error.to_string()),
                ),
            };
            let elapsed = started.elapsed();
            metrics.observe(&route, method, status, elapsed.as_secs_f64());
            span.record("http.status_code", status);
            if status >= 500 {
                span.record("otel.status_code", "ERROR");
            }
            span.in_scope(|| log_request(status, elapsed, error.as_deref(), probe));
            let mut response = result?;
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Ok(response)
        })
    }
}

/// What a request's `traceparent` does to its span.
enum RemoteParent {
    /// The caller's trace is continued, with its sampling decision.
    Continue(opentelemetry::Context),
    /// A new trace, sampled by our own ratio, linked to the caller's.
    Link(opentelemetry::trace::SpanContext),
    None,
}

/// The caller's trace context, taken as the parent only when it cannot force recording: a `sampled`
/// flag is the caller's to set, so an anonymous client could make every request of a flood be recorded
/// and exported whatever `telemetry.sampling_ratio` says. A sampled parent is continued only for a
/// request whose token verifies (the verdict is cached, so the gate's check that follows is a lookup);
/// otherwise the request starts a trace of its own, sampled by our ratio on a trace id we chose, and
/// keeps the caller's as a link. An unsampled parent is always continued: it can only record less.
fn trace_parent(request: &ServiceRequest) -> RemoteParent {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let caller = parent.span().span_context().clone();
    if !caller.is_valid() {
        return RemoteParent::None;
    }
    if !caller.is_sampled() {
        return RemoteParent::Continue(parent);
    }
    let authenticated = request
        .app_data::<actix_web::web::Data<crate::gate::Gatekeeping>>()
        .is_some_and(|gate| {
            let authorization = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            gate.verifier.authenticate(authorization).is_ok()
        });
    if authenticated {
        RemoteParent::Continue(parent)
    } else {
        RemoteParent::Link(caller)
    }
}

/// Adds who made the request and which topic it is about to the request's span (the `http.request` span
/// of [`RequestTelemetry`]), so the one line logged per request, and its trace, carry them. Call it from
/// a handler once the token is verified; what a refused request got that far is logged with it too.
pub fn record_request_subject(user: &str, topic: &str) {
    let span = tracing::Span::current();
    span.record("enduser.id", user);
    span.record("eventgate.topic", topic);
}

/// Adds the number of events a write published to the request's span (see [`record_request_subject`]).
pub fn record_request_events(events: usize) {
    tracing::Span::current().record("eventgate.events", events);
}

/// The one line per request. Server errors are warnings (503: a dependency is down) or errors (500: a
/// bug); client errors and successes are information; probes are debug, so they do not drown the rest.
fn log_request(status: u16, elapsed: Duration, error: Option<&str>, probe: bool) {
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    match (status, error) {
        (500.., Some(error)) if status != 503 => {
            tracing::error!(
                http.status_code = status,
                duration_ms,
                error,
                "request failed"
            )
        }
        (500.., error) => {
            tracing::warn!(
                http.status_code = status,
                duration_ms,
                error,
                "request failed"
            )
        }
        (_, Some(error)) => {
            tracing::info!(
                http.status_code = status,
                duration_ms,
                error,
                "request refused"
            )
        }
        _ if probe => tracing::debug!(http.status_code = status, duration_ms, "request served"),
        _ => tracing::info!(http.status_code = status, duration_ms, "request served"),
    }
}

/// `GET /health/live`: the process serves HTTP.
pub fn liveness_response(service: &str) -> HttpResponse {
    health_response(&HealthReport::live(service))
}

/// A health report as a response: 200 when `ok`, 503 otherwise; never cached.
pub fn health_response(report: &HealthReport) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(report.status_code).unwrap_or(StatusCode::OK))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(report)
}

/// Runs one readiness check, bounded by `timeout` (a probe must answer even when a dependency hangs).
pub async fn check_dependency<F, E>(timeout: Duration, check: F) -> DependencyHealth
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, check).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(Ok(())) => DependencyHealth::ok(latency_ms),
        Ok(Err(error)) => DependencyHealth::unreachable(latency_ms, error.to_string()),
        Err(_) => DependencyHealth::unreachable(
            latency_ms,
            format!("no answer within {} ms", timeout.as_millis()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::{web, App};

    use super::*;
    use crate::config::{LogFormat, TelemetryConfig};
    use crate::json_log::tests::Lines;

    #[test]
    fn request_ids_are_checked() {
        assert!(valid_request_id("0190a3b2-1c2d-7e3f-8a9b-0c1d2e3f4a5b"));
        assert!(valid_request_id("lb:abc.123_x"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id("line\nbreak"));
        assert!(!valid_request_id(&"a".repeat(129)));
    }

    async fn handler_that_logs() -> HttpResponse {
        tracing::info!("inside the handler");
        record_request_subject("alice", "audit.logs");
        record_request_events(3);
        HttpResponse::Ok().finish()
    }

    async fn refusing_handler() -> Result<HttpResponse, ApiError> {
        Err(ApiError::new(crate::error::ErrorKind::Auth, "no token"))
    }

    #[actix_web::test]
    async fn every_request_gets_an_id_a_log_line_and_a_count() {
        use tracing_subscriber::layer::SubscriberExt;
        let lines = Lines::default();
        let writer = lines.clone();
        let config = TelemetryConfig {
            log_format: LogFormat::Json,
            log_filter: "debug".into(),
            ..TelemetryConfig::default()
        };
        let subscriber = tracing_subscriber::registry()
            .with(crate::telemetry::log_layer(&config, move || writer.clone()));
        let _default = tracing::subscriber::set_default(subscriber);

        let registry = prometheus::Registry::new();
        let metrics = HttpMetrics::new(&registry);
        let app = init_service(
            App::new()
                .wrap(RequestTelemetry::new(metrics))
                .route("/things/{id}", web::get().to(handler_that_logs))
                .route("/secret/{id}", web::get().to(refusing_handler)),
        )
        .await;

        let kept = TestRequest::get()
            .uri("/things/1")
            .insert_header(("x-request-id", "caller-id-1"))
            .to_request();
        let response = call_service(&app, kept).await;
        assert_eq!(
            response.headers().get("x-request-id").unwrap(),
            "caller-id-1"
        );

        let replaced = TestRequest::get()
            .uri("/secret/2")
            .insert_header(("x-request-id", "bad id"))
            .to_request();
        let response = call_service(&app, replaced).await;
        assert_eq!(response.status(), 401);
        let generated = response
            .headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

        let logs = lines.parsed();
        let request_id = |line: &serde_json::Value| line["spans"][0]["request_id"].clone();
        let inside: Vec<_> = logs
            .iter()
            .filter(|l| l["message"] == "inside the handler")
            .collect();
        assert_eq!(inside.len(), 1);
        assert_eq!(request_id(inside[0]), "caller-id-1");
        let finished: Vec<_> = logs
            .iter()
            .filter(|l| l["message"] == "request served" || l["message"] == "request refused")
            .collect();
        assert_eq!(finished.len(), 2, "{logs:?}");
        assert_eq!(finished[0]["http.status_code"], 200);
        assert_eq!(request_id(finished[0]), "caller-id-1");
        // What the handler recorded is on the request's one line.
        assert_eq!(finished[0]["spans"][0]["enduser.id"], "alice");
        assert_eq!(finished[0]["spans"][0]["eventgate.topic"], "audit.logs");
        assert_eq!(finished[0]["spans"][0]["eventgate.events"], 3);
        assert!(finished[1]["spans"][0].get("enduser.id").is_none());
        assert_eq!(finished[1]["http.status_code"], 401);
        assert_eq!(finished[1]["error"], "no token");
        assert_eq!(request_id(finished[1]), generated.as_str());
        assert_eq!(finished[1]["spans"][0]["http.route"], "/secret/{id}");

        let text = crate::metrics::render(&registry);
        assert!(text.contains(
            r#"eventgate_http_requests_total{method="GET",route="/secret/{id}",status="401"} 1"#
        ));
        assert!(text.contains(
            r#"eventgate_http_requests_total{method="GET",route="/things/{id}",status="200"} 1"#
        ));
    }
}
