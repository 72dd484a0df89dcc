//! HTTP glue shared by the ingest-api and the stats-api (feature `http`): the error envelope as an
//! actix-web response, the bearer header, the metrics and liveness handlers.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};

use crate::error::ApiError;

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
