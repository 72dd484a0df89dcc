//! Bounds on what one request body may cost, checked on the raw bytes before anything is parsed.
//!
//! The body size is bounded where it is read (`http::read_body`, `ingest.max_body_bytes`,
//! `limits.query_max_body_bytes`); this module bounds the nesting depth, so a small body of ten thousand
//! `[` cannot make the parser, the schema validator or the database recurse deeply. serde_json stops at
//! 128 levels by itself; the configured limit is lower and gives a clear answer. It also splits an
//! ingest body into its events and counts each event's JSON values ([`json_items`]), so an event of a
//! hundred thousand `0,` is refused before it becomes a tree ten times its size in memory.

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

/// One value of a JSON text, as [`json_items`] finds it: where its bytes are and how many JSON values
/// (objects, arrays, strings, numbers, literals; object keys not counted) it holds, itself included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonItem {
    pub range: std::ops::Range<usize>,
    pub nodes: usize,
}

/// The events of an ingest body, on its raw bytes: the elements of a top-level array (a batch), or the
/// whole text as one item. `bytes` must be valid JSON (check it first, e.g. with
/// `serde::de::IgnoredAny`): the scan trusts it. Each item's node count is
/// `1 + its commas + its non-empty containers` (every comma adds one element or member, every non-empty
/// container its first), so no stack and no allocation beyond the list is needed.
pub fn json_items(bytes: &[u8]) -> (bool, Vec<JsonItem>) {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    if bytes.get(start) != Some(&b'[') {
        let end = trim_end(bytes, bytes.len());
        let nodes = json_nodes(&bytes[start..end]);
        return (
            false,
            vec![JsonItem {
                range: start..end,
                nodes,
            }],
        );
    }
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut item_start: Option<usize> = None;
    for (at, &byte) in bytes.iter().enumerate().skip(start + 1) {
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
        if item_start.is_none() && !byte.is_ascii_whitespace() && byte != b']' && byte != b',' {
            item_start = Some(at);
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b']' if depth == 0 => {
                push_item(bytes, &mut items, item_start.take(), at);
                break;
            }
            b']' => depth -= 1,
            b',' if depth == 0 => push_item(bytes, &mut items, item_start.take(), at),
            _ => {}
        }
    }
    (true, items)
}

fn push_item(bytes: &[u8], items: &mut Vec<JsonItem>, start: Option<usize>, end: usize) {
    if let Some(start) = start {
        let end = trim_end(bytes, end);
        items.push(JsonItem {
            range: start..end,
            nodes: json_nodes(&bytes[start..end]),
        });
    }
}

fn trim_end(bytes: &[u8], mut end: usize) -> usize {
    while end > 0 && bytes[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    end
}

/// How many JSON values one valid JSON text holds, itself included (see [`json_items`]).
pub fn json_nodes(bytes: &[u8]) -> usize {
    let mut nodes = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    // Set after `{` or `[`: the next significant byte tells whether the container is empty.
    let mut opened = false;
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
        if byte.is_ascii_whitespace() {
            continue;
        }
        if opened {
            opened = false;
            if byte != b'}' && byte != b']' {
                nodes += 1;
            }
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => opened = true,
            b',' => nodes += 1,
            _ => {}
        }
    }
    nodes
}

/// 413 `too_large` for one event holding more JSON values than `max_nodes`; `field` names the event
/// (`body`, or `[3]` in a batch).
pub fn too_many_nodes(field: String, nodes: usize, max_nodes: usize) -> ErrorDetail {
    ErrorDetail::new(
        ErrorKind::TooLarge,
        format!("the event holds {nodes} JSON values, at most {max_nodes} allowed (ingest.max_event_nodes)"),
    )
    .with_field(field)
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
    fn nodes_count_values_not_keys_or_strings() {
        assert_eq!(json_nodes(b"5"), 1);
        assert_eq!(json_nodes(b"{}"), 1);
        assert_eq!(json_nodes(b"[ ]"), 1);
        assert_eq!(json_nodes(br#"{"a": [0, 0, 0]}"#), 5);
        assert_eq!(
            json_nodes(br#"{"a": {"b": [], "c": {}}, "d": "x,y,[{"}"#),
            5
        );
        assert_eq!(json_nodes(br#"["\\", "\",[", [[]]]"#), 5);
        let bomb = format!("{{\"data\":{{\"a\":[{}0]}}}}", "0,".repeat(99_999));
        assert_eq!(json_nodes(bomb.as_bytes()), 100_003);
    }

    #[test]
    fn items_are_the_events_of_a_batch_with_their_nodes() {
        let body = br#" [ {"a": [1, 2]} , {"b": "],[,"}, 7,[] ] "#;
        let (batch, items) = json_items(body);
        assert!(batch);
        let texts: Vec<&str> = items
            .iter()
            .map(|item| std::str::from_utf8(&body[item.range.clone()]).unwrap())
            .collect();
        assert_eq!(
            texts,
            vec![r#"{"a": [1, 2]}"#, r#"{"b": "],[,"}"#, "7", "[]"]
        );
        let nodes: Vec<usize> = items.iter().map(|item| item.nodes).collect();
        assert_eq!(nodes, vec![4, 2, 1, 1]);
        let (batch, items) = json_items(b" [ ] ");
        assert!(batch);
        assert!(items.is_empty());
        let (batch, items) = json_items(b"\n {\"a\": [1]}\n");
        assert!(!batch);
        assert_eq!(
            items,
            vec![JsonItem {
                range: 2..12,
                nodes: 3
            }]
        );
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
