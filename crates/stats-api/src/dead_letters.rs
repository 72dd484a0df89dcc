//! `GET /stats/{topic}/dead-letters`: the messages of a topic the writers could never store, newest
//! first, keyset-paginated by `(created_at, id)` with a signed cursor.
//!
//! Same checks as queries, in the same order: token (401) → topic exists (404) → may read the topic
//! (403). Parameters: `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]), `cursor` (the
//! `pagination.cursor` of the previous page) and `reason` (one of [`REASONS`], or several
//! comma-separated); anything else is a 400. A page also ends before `limit`
//! when the next row would take the answer past `stats.max_page_bytes` (then `has_more` and a cursor).

use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use time::OffsetDateTime;

use eventgate_core::error::{ApiError, ErrorDetail};
use eventgate_core::http::TopicReader;
use eventgate_core::query::CursorKey;

use crate::db::dead_letters::DeadLetterRow;
use crate::AppState;

pub const DEFAULT_LIMIT: i64 = 20;
/// Raw messages can be up to a Kafka message each (1 MB by default): pages stay small.
pub const MAX_LIMIT: i64 = 100;
/// Why a message is parked (`dead_letters.reason`, written by the db-writer).
pub const REASONS: [&str; 4] = [
    "undecodable",
    "topic_mismatch",
    "refused",
    "conflicting_duplicate",
];
/// Cursors of this listing are signed for this purpose only: a query cursor is not accepted here.
const CURSOR_PURPOSE: &str = "dead-letters";

/// The position after the last row of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    pub created_at_micros: i64,
    pub id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub limit: i64,
    pub after: Option<After>,
    /// Only dead letters with one of these reasons (`None`: all).
    pub reasons: Option<Vec<String>>,
    /// Only resolved (`true`) or unresolved (`false`) ones (`None`: both).
    pub resolved: Option<bool>,
}

/// Reads `limit` and `cursor`; every problem is reported at once, each naming its parameter.
pub fn parse_listing(
    pairs: &[(String, String)],
    topic: &str,
    key: &CursorKey,
) -> Result<Listing, ApiError> {
    let mut errors = Vec::new();
    let mut listing = Listing {
        limit: DEFAULT_LIMIT,
        after: None,
        reasons: None,
        resolved: None,
    };
    for (name, value) in pairs {
        match name.as_str() {
            "limit" => match value.parse::<i64>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => listing.limit = limit,
                _ => errors.push(ErrorDetail::validation(
                    "limit",
                    format!("limit must be an integer from 1 to {MAX_LIMIT}"),
                )),
            },
            "cursor" if value.is_empty() => {}
            "cursor" => match decode_cursor(value, topic, key) {
                Some(after) => listing.after = Some(after),
                None => errors.push(ErrorDetail::validation(
                    "cursor",
                    "invalid cursor: pass the `pagination.cursor` of the previous page of this topic unchanged",
                )),
            },
            "reason" => {
                let reasons: Vec<String> = value.split(',').map(|r| r.trim().to_owned()).collect();
                match reasons.iter().find(|r| !REASONS.contains(&r.as_str())) {
                    Some(unknown) => errors.push(ErrorDetail::validation(
                        "reason",
                        format!(
                            "unknown reason {:?}; a dead letter's reason is one of {}",
                            eventgate_core::query::value::shorten(unknown, 100),
                            REASONS.join(", ")
                        ),
                    )),
                    None => listing.reasons = Some(reasons),
                }
            }
            "resolved" => match value.as_str() {
                "true" => listing.resolved = Some(true),
                "false" => listing.resolved = Some(false),
                _ => errors.push(ErrorDetail::validation(
                    "resolved",
                    "resolved must be true (replayed or discarded) or false (not yet)",
                )),
            },
            other => errors.push(ErrorDetail::validation(
                other,
                format!(
                    "unknown parameter {other:?}; dead letters take `limit`, `cursor`, `reason` and \
                     `resolved`"
                ),
            )),
        }
    }
    if errors.is_empty() {
        Ok(listing)
    } else {
        Err(ApiError::from_details(errors))
    }
}

/// The cursor carries the topic, so a cursor of one topic cannot walk another.
pub fn encode_cursor(after: After, topic: &str, key: &CursorKey) -> String {
    key.sign_json(
        CURSOR_PURPOSE,
        &json!({"topic": topic, "c": after.created_at_micros, "i": after.id}),
    )
}

fn decode_cursor(token: &str, topic: &str, key: &CursorKey) -> Option<After> {
    let body = key.verify_json(CURSOR_PURPOSE, token).ok()?;
    if body.get("topic").and_then(Value::as_str) != Some(topic) {
        return None;
    }
    Some(After {
        created_at_micros: body.get("c").and_then(Value::as_i64)?,
        id: body.get("i").and_then(Value::as_i64)?,
    })
}

/// The listing's view of a row: its JSON.
trait Listed {
    fn to_json(&self) -> Value;
}

impl Listed for DeadLetterRow {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "topic": self.topic,
            "kafka_topic": self.kafka_topic,
            "partition": self.kafka_partition,
            "offset": self.kafka_offset,
            "reason": self.reason,
            "error": self.error,
            "created_at": self.created_at
                .format(&time::format_description::well_known::Rfc3339)
                .ok(),
            // The exact bytes, and for convenience the text when they are UTF-8 (usually JSON).
            "raw_base64": self.raw.as_deref().map(|raw| STANDARD.encode(raw)),
            "raw": self.raw.as_deref().and_then(|raw| std::str::from_utf8(raw).ok()),
            "resolution": self.resolution,
            "resolved_at": self.resolved_at.and_then(|at| {
                at.format(&time::format_description::well_known::Rfc3339).ok()
            }),
            "resolved_by": self.resolved_by,
        })
    }
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn from_micros(micros: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()
}

/// Dead letters are raw messages no field restriction can filter: only an unrestricted reader of the
/// topic may list them.
#[utoipa::path(
    get,
    path = "/stats/{topic}/dead-letters",
    tag = "dead letters",
    summary = "The messages of a topic the writers could never store",
    description = "Newest first, keyset-paginated; only for readers without field restrictions (raw \
        messages cannot be filtered).",
    params(
        ("topic" = String, Path, description = "The topic's name."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Rows per page \
            (default 20)."),
        ("cursor" = Option<String>, Query, description = "The `pagination.cursor` of the previous page."),
        ("reason" = Option<String>, Query, description = "Only these reasons, comma-separated \
            (`undecodable`, `topic_mismatch`, `refused`, `conflicting_duplicate`)."),
        ("resolved" = Option<bool>, Query, description = "Only those replayed or discarded with \
            `eventgate dead-letters` (`true`), or only those not yet (`false`); both by default."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of dead letters.", body = crate::openapi::DeadLetterPage),
        (status = 400, response = eventgate_core::http::openapi::BadRequest),
        (status = 401, response = eventgate_core::http::openapi::Unauthorized),
        (status = 403, response = eventgate_core::http::openapi::Forbidden),
        (status = 404, response = eventgate_core::http::openapi::NotFound),
        (status = 429, response = eventgate_core::http::openapi::TooManyRequests),
        (status = 503, response = eventgate_core::http::openapi::Unavailable),
    ),
)]
pub async fn list(
    reader: TopicReader,
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reader.require_unrestricted()?;
    let topic = &reader.topic;
    let pairs = crate::routes::query_pairs(&request)?;
    let listing = parse_listing(&pairs, &topic.name, &state.cursor_key)?;
    let after = listing
        .after
        .and_then(|a| Some((from_micros(a.created_at_micros)?, a.id)));
    let slot = state.slot(&reader.principal.user)?;
    let page = crate::db::dead_letters::fetch(
        &state.pool,
        &topic.name,
        listing.reasons.as_deref(),
        listing.resolved,
        after,
        listing.limit,
        br#"{"success":true,"statusCode":200,"data":["#.to_vec(),
        state.answers.max_page_bytes,
        |out, index, row| {
            if index > 0 {
                out.push(b',');
            }
            crate::routes::write_json(out, &row.to_json());
        },
    )
    .await
    .map_err(|e| state.store_error(e))?;
    drop(slot);
    if page.cut_by_bytes {
        state.metrics.limit_hit("page_bytes");
    }
    let cursor = match (page.has_more, page.last) {
        (true, Some((created_at, id))) => Some(encode_cursor(
            After {
                created_at_micros: micros(created_at),
                id,
            },
            &topic.name,
            &state.cursor_key,
        )),
        _ => None,
    };
    let mut body = page.body;
    body.extend_from_slice(b"],\"pagination\":");
    crate::routes::write_json(
        &mut body,
        &json!({"cursor": cursor, "has_more": page.has_more, "limit": listing.limit}),
    );
    body.push(b'}');
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CursorKey {
        CursorKey::new(b"a-test-cursor-secret-of-enough-length")
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_and_limits() {
        let listing = parse_listing(&[], "audit.logs", &key()).expect("defaults");
        assert_eq!(
            listing,
            Listing {
                limit: DEFAULT_LIMIT,
                after: None,
                reasons: None,
                resolved: None,
            }
        );
        let listing = parse_listing(&pairs(&[("resolved", "false")]), "audit.logs", &key())
            .expect("unresolved only");
        assert_eq!(listing.resolved, Some(false));
        let error = parse_listing(&pairs(&[("resolved", "yes")]), "audit.logs", &key())
            .expect_err("not a boolean");
        assert_eq!(error.details[0].field.as_deref(), Some("resolved"));
        let listing = parse_listing(
            &pairs(&[("reason", "refused,conflicting_duplicate")]),
            "audit.logs",
            &key(),
        )
        .expect("reasons");
        assert_eq!(
            listing.reasons,
            Some(vec![
                "refused".to_owned(),
                "conflicting_duplicate".to_owned()
            ])
        );
        let error = parse_listing(&pairs(&[("reason", "refused,oops")]), "audit.logs", &key())
            .expect_err("unknown reason");
        assert_eq!(error.details[0].field.as_deref(), Some("reason"));
        assert!(error.details[0].message.contains("conflicting_duplicate"));
        let listing = parse_listing(
            &pairs(&[("limit", "100"), ("cursor", "")]),
            "audit.logs",
            &key(),
        )
        .expect("max");
        assert_eq!(listing.limit, 100);
        let error = parse_listing(
            &pairs(&[("limit", "0"), ("limit", "x"), ("sort", "id")]),
            "audit.logs",
            &key(),
        )
        .expect_err("refused");
        let fields: Vec<_> = error
            .details
            .iter()
            .map(|d| d.field.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(fields, vec!["limit", "limit", "sort"]);
        assert_eq!(error.status(), 400);
    }

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_topic() {
        let after = After {
            created_at_micros: 1_736_937_000_123_456,
            id: 42,
        };
        let token = encode_cursor(after, "audit.logs", &key());
        let listing = parse_listing(&pairs(&[("cursor", &token)]), "audit.logs", &key())
            .expect("valid cursor");
        assert_eq!(listing.after, Some(after));

        let error = parse_listing(&pairs(&[("cursor", &token)]), "web.events", &key())
            .expect_err("another topic's cursor");
        assert_eq!(error.details[0].field.as_deref(), Some("cursor"));
        assert!(parse_listing(&pairs(&[("cursor", "garbage")]), "audit.logs", &key()).is_err());
    }

    #[test]
    fn micros_survive_the_round_trip() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_736_937_000_123_456_000).expect("t");
        assert_eq!(from_micros(micros(t)), Some(t));
    }
}
