//! The rules of accepting events, applied by the ingest-api before anything is published:
//! a body is one JSON object or a non-empty array of them; each event must satisfy its topic's schema;
//! each accepted event gets its envelope (id, received-at time, producer).

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::catalogue::Topic;
use crate::envelope::Event;
use crate::error::{ApiError, ErrorDetail, ErrorKind};

/// How the ingest-api should treat a body, independent of the topic.
#[derive(Debug, Clone)]
pub struct IngestRules {
    /// The payload field that may carry a producer-chosen event id (a UUID).
    pub id_field: String,
    pub max_batch_events: usize,
}

/// The outcome for one event of a request, in request order.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    Accepted(Event),
    Rejected(Vec<ErrorDetail>),
}

/// What a body turned into: whether it was a batch, and each event's outcome.
#[derive(Debug, Clone)]
pub struct PreparedBody {
    pub is_batch: bool,
    pub outcomes: Vec<EventOutcome>,
}

impl PreparedBody {
    pub fn accepted(&self) -> impl Iterator<Item = &Event> {
        self.outcomes.iter().filter_map(|o| match o {
            EventOutcome::Accepted(event) => Some(event),
            EventOutcome::Rejected(_) => None,
        })
    }

    pub fn rejected_count(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, EventOutcome::Rejected(_)))
            .count()
    }

    /// When nothing at all can be accepted the request is a plain 400 carrying every event's errors.
    pub fn all_rejected_error(&self) -> Option<ApiError> {
        if self
            .outcomes
            .iter()
            .any(|o| matches!(o, EventOutcome::Accepted(_)))
        {
            return None;
        }
        let details: Vec<ErrorDetail> = self
            .outcomes
            .iter()
            .flat_map(|o| match o {
                EventOutcome::Rejected(details) => details.clone(),
                EventOutcome::Accepted(_) => Vec::new(),
            })
            .collect();
        Some(ApiError::from_details(details))
    }
}

/// Parses a request body (raw bytes) into events of `topic`, validating each one.
/// A body that is not JSON, not an object or array, an empty array, or too large a batch is an error for
/// the whole request; schema violations are per event.
pub fn prepare(
    body: &[u8],
    topic: &Topic,
    producer: &str,
    rules: &IngestRules,
    now: OffsetDateTime,
) -> Result<PreparedBody, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(ErrorKind::Malformed, format!("body is not valid JSON: {e}"))
            .with_field("body")
    })?;
    let (is_batch, items) = match value {
        Value::Array(items) => (true, items),
        object @ Value::Object(_) => (false, vec![object]),
        _ => {
            return Err(ApiError::from(ErrorDetail::validation(
                "body",
                "body must be one JSON object (an event) or an array of them (a batch)",
            )))
        }
    };
    if is_batch && items.is_empty() {
        return Err(ApiError::from(ErrorDetail::validation(
            "body",
            "a batch must hold at least one event",
        )));
    }
    if items.len() > rules.max_batch_events {
        return Err(ApiError::from(ErrorDetail::validation(
            "body",
            format!(
                "a batch may hold at most {} events, this one holds {}",
                rules.max_batch_events,
                items.len()
            ),
        )));
    }
    // Received-at is stored with microsecond precision; truncate now so what we answer equals what we store.
    let now = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now);
    let outcomes = items
        .into_iter()
        .enumerate()
        .map(|(index, payload)| {
            let prefix = if is_batch {
                format!("[{index}].")
            } else {
                String::new()
            };
            prepare_one(payload, topic, producer, rules, now, &prefix)
        })
        .collect();
    Ok(PreparedBody { is_batch, outcomes })
}

fn prepare_one(
    payload: Value,
    topic: &Topic,
    producer: &str,
    rules: &IngestRules,
    now: OffsetDateTime,
    prefix: &str,
) -> EventOutcome {
    if !payload.is_object() {
        let field = if prefix.is_empty() {
            "body".to_owned()
        } else {
            prefix.trim_end_matches('.').to_owned()
        };
        return EventOutcome::Rejected(vec![ErrorDetail::validation(
            field,
            "an event must be a JSON object",
        )]);
    }
    let mut errors = topic.validate(&payload, prefix);
    if let Some(pointer) = nul_character_at(&payload, &mut String::new()) {
        errors.push(ErrorDetail::validation(
            crate::catalogue::field_name(prefix, &pointer),
            "must not contain the NUL character (\\u0000), which the event history (PostgreSQL jsonb) cannot store",
        ));
    }
    let id = match payload.get(&rules.id_field) {
        None | Some(Value::Null) => Some(Uuid::now_v7()),
        Some(Value::String(text)) => match Uuid::parse_str(text) {
            Ok(id) => Some(id),
            Err(_) => {
                errors.push(ErrorDetail::validation(
                    format!("{prefix}{}", rules.id_field),
                    "must be a UUID",
                ));
                None
            }
        },
        Some(_) => {
            errors.push(ErrorDetail::validation(
                format!("{prefix}{}", rules.id_field),
                "must be a UUID string",
            ));
            None
        }
    };
    match id {
        Some(id) if errors.is_empty() => EventOutcome::Accepted(Event {
            id,
            topic: topic.name.clone(),
            timestamp: now,
            producer: producer.to_owned(),
            payload,
        }),
        _ => {
            // The validator may report the id field too; keep one entry per field and message.
            errors.dedup();
            EventOutcome::Rejected(errors)
        }
    }
}

/// The JSON pointer of the first string or object key holding U+0000, which PostgreSQL's `jsonb` refuses:
/// accepted, such an event could never be written and would end as a dead letter.
fn nul_character_at(value: &Value, pointer: &mut String) -> Option<String> {
    fn descend(pointer: &mut String, segment: &str, child: &Value) -> Option<String> {
        let len = pointer.len();
        pointer.push('/');
        pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
        let found = nul_character_at(child, pointer);
        pointer.truncate(len);
        found
    }
    match value {
        Value::String(text) if text.contains('\0') => Some(pointer.clone()),
        Value::Object(fields) => fields.iter().find_map(|(key, child)| {
            if key.contains('\0') {
                let mut at = pointer.clone();
                at.push('/');
                at.push_str(&key.replace('\0', "\\u0000"));
                return Some(at);
            }
            descend(pointer, key, child)
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, child)| descend(pointer, &index.to_string(), child)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topic() -> Topic {
        Topic::from_schema(
            "audit.logs",
            json!({"type": "object", "required": ["event_name"], "properties": {"event_name": {"type": "string"}}}),
        )
        .unwrap()
    }

    fn rules() -> IngestRules {
        IngestRules {
            id_field: "event_id".into(),
            max_batch_events: 3,
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(1_736_937_000_123_456_789).unwrap()
    }

    #[test]
    fn single_event_gets_an_envelope() {
        let body = prepare(
            br#"{"event_name": "login"}"#,
            &topic(),
            "alice",
            &rules(),
            now(),
        )
        .unwrap();
        assert!(!body.is_batch);
        let event = body.accepted().next().unwrap();
        assert_eq!(event.producer, "alice");
        assert_eq!(event.topic, "audit.logs");
        assert_eq!(event.id.get_version_num(), 7);
        assert_eq!(
            event.timestamp.nanosecond(),
            123_456_000,
            "truncated to microseconds"
        );
    }

    #[test]
    fn producer_supplied_id_is_kept_or_rejected() {
        let id = Uuid::now_v7();
        let body = format!(r#"{{"event_name": "x", "event_id": "{id}"}}"#);
        let prepared = prepare(body.as_bytes(), &topic(), "a", &rules(), now()).unwrap();
        assert_eq!(prepared.accepted().next().unwrap().id, id);

        let prepared = prepare(
            br#"{"event_name": "x", "event_id": "nope"}"#,
            &topic(),
            "a",
            &rules(),
            now(),
        )
        .unwrap();
        let err = prepared.all_rejected_error().unwrap();
        assert_eq!(err.details[0].field.as_deref(), Some("event_id"));
    }

    #[test]
    fn batch_outcomes_are_per_event() {
        let prepared = prepare(
            br#"[{"event_name": "a"}, {"event_name": 5}, 7]"#,
            &topic(),
            "a",
            &rules(),
            now(),
        )
        .unwrap();
        assert!(prepared.is_batch);
        assert_eq!(prepared.accepted().count(), 1);
        assert_eq!(prepared.rejected_count(), 2);
        match &prepared.outcomes[1] {
            EventOutcome::Rejected(details) => {
                assert_eq!(details[0].field.as_deref(), Some("[1].event_name"))
            }
            other => panic!("{other:?}"),
        }
        match &prepared.outcomes[2] {
            EventOutcome::Rejected(details) => assert_eq!(details[0].field.as_deref(), Some("[2]")),
            other => panic!("{other:?}"),
        }
        assert!(prepared.all_rejected_error().is_none());
    }

    #[test]
    fn a_nul_character_anywhere_is_refused_and_named() {
        let prepared = prepare(
            br#"[{"event_name": "a\u0000b"}, {"event_name": "ok", "tags": [{"x": "y"}, {"x": "\u0000"}]}, {"event_name": "ok", "k\u0000": 1}, {"event_name": "fine"}]"#,
            &topic(),
            "a",
            &IngestRules {
                max_batch_events: 10,
                ..rules()
            },
            now(),
        )
        .unwrap();
        let fields: Vec<Option<&str>> = prepared.outcomes[..3]
            .iter()
            .map(|outcome| match outcome {
                EventOutcome::Rejected(details) => details[0].field.as_deref(),
                EventOutcome::Accepted(_) => None,
            })
            .collect();
        assert_eq!(
            fields,
            vec![
                Some("[0].event_name"),
                Some("[1].tags[1].x"),
                Some("[2].k\\u0000")
            ]
        );
        assert_eq!(prepared.accepted().count(), 1);
        let single = prepare(
            br#"{"event_name": "\u0000"}"#,
            &topic(),
            "a",
            &rules(),
            now(),
        )
        .unwrap()
        .all_rejected_error()
        .unwrap();
        assert_eq!(single.status(), 400);
        assert!(single.details[0].message.contains("NUL"), "{single:?}");
    }

    #[test]
    fn whole_body_errors() {
        let malformed = prepare(b"{not json", &topic(), "a", &rules(), now()).unwrap_err();
        assert_eq!(malformed.status(), 400);
        assert_eq!(malformed.kind(), ErrorKind::Malformed);
        assert_eq!(
            prepare(b"[]", &topic(), "a", &rules(), now())
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            prepare(b"42", &topic(), "a", &rules(), now())
                .unwrap_err()
                .status(),
            400
        );
        let too_many =
            br#"[{"event_name":"a"},{"event_name":"a"},{"event_name":"a"},{"event_name":"a"}]"#;
        assert_eq!(
            prepare(too_many, &topic(), "a", &rules(), now())
                .unwrap_err()
                .status(),
            400
        );
    }
}
