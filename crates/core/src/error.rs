//! The one error envelope of the product, shared by the ingest-api and the stats-api.
//!
//! Every failure a client sees has the shape
//! `{"success":false,"statusCode":N,"errors":[{"type":"validation","message":"...","field":"jobs[0].status"}]}`.
//! Domain code returns [`ApiError`]; the HTTP crates only turn it into a response, so the mapping from a
//! kind of failure to a status code lives here and nowhere else.

use serde::Serialize;

/// What went wrong, as the `type` of one error entry. Each kind maps to exactly one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The body or query does not follow the rules (schema, query language): 400.
    Validation,
    /// The request could not be parsed as JSON at all: 400.
    Malformed,
    /// No usable bearer token: 401.
    Auth,
    /// Authenticated, but not allowed to do this to this topic: 403.
    Permission,
    /// The topic (or route) does not exist: 404.
    NotFound,
    /// The body is larger than the configured limit: 413.
    TooLarge,
    /// The client did not send its request (head or body) within the configured time: 408.
    Timeout,
    /// The client sends too fast: 429 with Retry-After.
    RateLimit,
    /// The broker did not acknowledge in time; nothing was accepted: 503 with Retry-After.
    Queue,
    /// The database is unreachable or the statement timed out: 503 with Retry-After.
    Database,
    /// The token could be signed by a key of the identity provider's JWKS, which cannot be fetched
    /// (not yet, or not for longer than `auth.jwks_max_stale_secs`): 503 with Retry-After.
    AuthUnavailable,
    /// A bug or an unexpected failure on our side: 500.
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::Validation | ErrorKind::Malformed => 400,
            ErrorKind::Auth => 401,
            ErrorKind::Permission => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::TooLarge => 413,
            ErrorKind::Timeout => 408,
            ErrorKind::RateLimit => 429,
            // 503 rather than 500: the failure is transient and the client should retry later.
            ErrorKind::Queue | ErrorKind::Database | ErrorKind::AuthUnavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// Seconds a client should wait before retrying, for the kinds where retrying helps.
    pub fn retry_after_secs(self) -> Option<u32> {
        match self {
            ErrorKind::RateLimit => Some(1),
            ErrorKind::Queue | ErrorKind::Database => Some(5),
            // The JWKS is fetched again at most every `auth.jwks_min_refetch_secs` (30 s by default).
            ErrorKind::AuthUnavailable => Some(30),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Validation => "validation",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Auth => "auth",
            ErrorKind::Permission => "permission",
            ErrorKind::NotFound => "not_found",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Timeout => "timeout",
            ErrorKind::RateLimit => "rate_limit",
            ErrorKind::Queue => "queue",
            ErrorKind::Database => "database",
            ErrorKind::AuthUnavailable => "auth_unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// One entry of the `errors` array.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: ErrorKind,
    pub message: String,
    /// The JSON path or query field the problem is about, when there is one.
    #[cfg_attr(feature = "http", schema(example = "jobs[0].status"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorDetail {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorDetail {
            kind,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Shorthand for the most common entry: a validation problem about one field.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorDetail::new(ErrorKind::Validation, message).with_field(field)
    }
}

/// A failed request: one status, one or more details. The status is that of the first detail's kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.summary())]
pub struct ApiError {
    pub details: Vec<ErrorDetail>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            details: vec![ErrorDetail::new(kind, message)],
        }
    }

    pub fn from_details(details: Vec<ErrorDetail>) -> Self {
        debug_assert!(!details.is_empty(), "an ApiError needs at least one detail");
        ApiError { details }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        if let Some(first) = self.details.first_mut() {
            first.field = Some(field.into());
        }
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.details.first().map_or(ErrorKind::Internal, |d| d.kind)
    }

    pub fn status(&self) -> u16 {
        self.kind().status()
    }

    pub fn summary(&self) -> String {
        self.details
            .iter()
            .map(|d| d.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The JSON body of the error envelope.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "success": false,
            "statusCode": self.status(),
            "errors": self.details,
        })
    }
}

impl From<ErrorDetail> for ApiError {
    fn from(detail: ErrorDetail) -> Self {
        ApiError {
            details: vec![detail],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_names_field_and_status() {
        let err = ApiError::from(ErrorDetail::validation(
            "jobs[0].status",
            "is not one of the allowed values",
        ));
        let body = err.body();
        assert_eq!(body["statusCode"], 400);
        assert_eq!(body["success"], false);
        assert_eq!(body["errors"][0]["type"], "validation");
        assert_eq!(body["errors"][0]["field"], "jobs[0].status");
    }

    #[test]
    fn transient_failures_ask_for_a_retry() {
        assert_eq!(ErrorKind::Queue.status(), 503);
        assert!(ErrorKind::Queue.retry_after_secs().is_some());
        assert!(ErrorKind::Validation.retry_after_secs().is_none());
    }
}
