//! What can go wrong, and the exit code each failure ends the program with (docs/CLI.md, "Exit codes").

use std::fmt;

use serde::Deserialize;

/// Every command's error: its message (already readable, never a JSON dump) and its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The API refused the request or some events (exit 1).
    Refused(String),
    /// Bad arguments, configuration or input (exit 2).
    Usage(String),
    /// The service could not be reached or did not answer well, retries exhausted (exit 3).
    Unreachable(String),
    /// The token was refused (401) or lacks the right (403) (exit 3).
    Auth(String),
    /// Whoever read the output went away (`eventgate query … | head`): not an error (exit 0, silent).
    Closed,
}

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(_) => EXIT_REFUSED,
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Unreachable(_) | Failure::Auth(_) => EXIT_UNREACHABLE,
            Failure::Closed => 0,
        }
    }

    /// A failed write to the output.
    pub fn from_output(error: std::io::Error) -> Failure {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::Closed
        } else {
            Failure::Usage(format!("cannot write the output: {error}"))
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(m)
            | Failure::Usage(m)
            | Failure::Unreachable(m)
            | Failure::Auth(m) => f.write_str(m),
            Failure::Closed => f.write_str("the output was closed"),
        }
    }
}

impl std::error::Error for Failure {}

/// One entry of the API's error envelope (`{"type", "message", "field"}`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct ErrorDetail {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field.as_deref().filter(|field| !field.is_empty()) {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// An answer that was not a success: its status and the envelope's errors.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub errors: Vec<ErrorDetail>,
    pub request_id: Option<String>,
    pub retry_after: Option<std::time::Duration>,
}

/// The envelope every failure of both services has.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    errors: Vec<ErrorDetail>,
}

impl ApiError {
    /// From a failed answer's parts; a body that is not the envelope (a proxy's HTML page) becomes one
    /// error holding the start of its text.
    pub fn from_parts(
        status: u16,
        body: &[u8],
        request_id: Option<String>,
        retry_after: Option<std::time::Duration>,
    ) -> ApiError {
        let errors = match serde_json::from_slice::<Envelope>(body) {
            Ok(envelope) if !envelope.errors.is_empty() => envelope.errors,
            _ => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("HTTP {status} without a body")
                } else {
                    let mut short: String = text.chars().take(200).collect();
                    if short.len() < text.len() {
                        short.push('…');
                    }
                    format!("HTTP {status}: {short}")
                };
                vec![ErrorDetail {
                    kind: String::new(),
                    message,
                    field: None,
                }]
            }
        };
        ApiError {
            status,
            errors,
            request_id,
            retry_after,
        }
    }

    /// The messages, one per line and indented, as a person reads them.
    pub fn lines(&self) -> String {
        let mut text = String::new();
        for error in &self.errors {
            text.push_str("\n  ");
            text.push_str(&error.to_string());
        }
        if self.status >= 500 {
            if let Some(id) = &self.request_id {
                text.push_str(&format!(
                    "\n  (request id {id}: quote it when reporting this)"
                ));
            }
        }
        text
    }

    /// The failure a command ends with when `what` ("the query") got this answer.
    pub fn into_failure(self, service: &str, what: &str) -> Failure {
        let message = format!(
            "{service} refused {what} ({}):{}",
            self.status,
            self.lines()
        );
        match self.status {
            401 | 403 => Failure::Auth(message),
            s if s >= 500 || s == 429 || s == 408 => Failure::Unreachable(format!(
                "{service} could not answer {what} ({}):{}",
                self.status,
                self.lines()
            )),
            _ => Failure::Refused(message),
        }
    }
}

/// A transport failure (no answer at all), as a sentence.
pub fn describe_transport(service: &str, url: &str, error: &reqwest::Error) -> String {
    // The innermost cause says what happened ("Connection refused"); the layers above repeat the URL.
    let mut cause = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    let url = url.split('?').next().unwrap_or(url);
    if error.is_timeout() {
        format!("{service} at {url} did not answer in time ({cause})")
    } else if error.is_connect() {
        format!("cannot reach {service} at {url} ({cause})")
    } else {
        format!("{service} at {url}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_becomes_field_level_lines() {
        let body = br#"{"success":false,"statusCode":400,"errors":[
            {"type":"validation","field":"run_idd","message":"unknown field `run_idd`"},
            {"type":"validation","field":"limit","message":"must be at most 1000"}]}"#;
        let error = ApiError::from_parts(400, body, None, None);
        assert_eq!(
            error.lines(),
            "\n  run_idd: unknown field `run_idd`\n  limit: must be at most 1000"
        );
        let failure = error.into_failure("the stats-api", "the query");
        assert_eq!(failure.exit_code(), EXIT_REFUSED);
        assert!(failure
            .to_string()
            .starts_with("the stats-api refused the query (400):"));
    }

    #[test]
    fn a_body_that_is_not_the_envelope_is_shown_briefly() {
        let error = ApiError::from_parts(502, b"<html>bad gateway</html>", Some("r1".into()), None);
        assert_eq!(
            error.errors[0].message,
            "HTTP 502: <html>bad gateway</html>"
        );
        assert!(error.lines().contains("request id r1"));
        let failure = error.into_failure("the ingest-api", "the batch");
        assert_eq!(failure.exit_code(), EXIT_UNREACHABLE);
    }

    #[test]
    fn auth_failures_exit_3() {
        let error = ApiError::from_parts(
            401,
            br#"{"errors":[{"type":"auth","message":"token expired"}]}"#,
            None,
            None,
        );
        assert_eq!(error.into_failure("x", "y").exit_code(), EXIT_UNREACHABLE);
    }
}
