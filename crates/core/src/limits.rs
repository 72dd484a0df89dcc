//! Bounds on what one request body may cost, checked on the raw bytes before anything is parsed.
//!
//! The body size is bounded where it is read (`http::read_body`, `ingest.max_body_bytes`,
//! `limits.query_max_body_bytes`); this module bounds the nesting depth, so a small body of ten thousand
//! `[` cannot make the parser, the schema validator or the database recurse deeply. serde_json stops at
//! 128 levels by itself; the configured limit is lower and gives a clear answer.

use crate::error::{ApiError, ErrorDetail, ErrorKind};

/// The deepest nesting of objects and arrays in a JSON text: `1` is `{}` or `[]`, `0` a scalar. Strings
/// (with their escapes) are skipped, so brackets inside them do not count. Invalid JSON gives some
/// number; the parser reports it as invalid afterwards.
pub fn json_depth(bytes: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Whether the first non-blank byte opens an array (a batch of events).
fn is_array(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[')
}

/// Refuses (400 `validation`, field `body`) a body nested deeper than `max_depth`. With `batch_allowed`
/// (the ingest body), the outer array of a batch does not count: one event may nest as deep alone as in a
/// batch.
pub fn check_json_depth(
    bytes: &[u8],
    max_depth: usize,
    batch_allowed: bool,
) -> Result<(), ApiError> {
    let allowance = usize::from(batch_allowed && is_array(bytes));
    let depth = json_depth(bytes);
    if depth > max_depth + allowance {
        return Err(ErrorDetail::validation(
            "body",
            format!(
                "JSON nested {} levels deep, at most {max_depth} allowed",
                depth - allowance
            ),
        )
        .into());
    }
    Ok(())
}

/// 408 `timeout`: the client did not send the whole body within `limits.body_timeout_ms`.
pub fn body_timeout(limit: std::time::Duration) -> ApiError {
    ApiError::new(
        ErrorKind::Timeout,
        format!(
            "the request body did not arrive within {} ms",
            limit.as_millis()
        ),
    )
    .with_field("body")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_containers_not_strings() {
        assert_eq!(json_depth(b"5"), 0);
        assert_eq!(json_depth(b"{}"), 1);
        assert_eq!(json_depth(br#"{"a": [1, {"b": []}]}"#), 4);
        assert_eq!(json_depth(br#"{"a": "[[[[{{{{"}"#), 1);
        assert_eq!(json_depth(br#"{"a": "\"[[[", "b": [[]]}"#), 3);
        assert_eq!(json_depth(br#"["\\", [[]]]"#), 3);
        assert_eq!(json_depth(b"]]]]["), 1);
    }

    #[test]
    fn deep_bodies_are_refused_and_batches_get_one_level() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_json_depth(nested(32).as_bytes(), 32, false).is_ok());
        let error = check_json_depth(nested(33).as_bytes(), 32, false).unwrap_err();
        assert_eq!(error.status(), 400);
        assert_eq!(error.details[0].field.as_deref(), Some("body"));
        assert!(check_json_depth(nested(33).as_bytes(), 32, true).is_ok());
        assert!(check_json_depth(nested(34).as_bytes(), 32, true).is_err());
        let object = format!(
            "{}{}",
            "{\"a\":".repeat(33),
            "1".to_owned() + &"}".repeat(33)
        );
        assert!(check_json_depth(object.as_bytes(), 32, true).is_err());
        assert!(check_json_depth(nested(100_000).as_bytes(), 32, true).is_err());
    }
}
