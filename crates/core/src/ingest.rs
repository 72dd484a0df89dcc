//! The rules of accepting events, applied by the ingest-api before anything is published:
//! a body is one JSON object or a non-empty array of them; each event must hold at most
//! `max_event_nodes` JSON values and satisfy its topic's schema; each accepted event gets its envelope
//! (id, received-at time, producer), and its Kafka record must fit in `max_event_bytes`. A refused event
//! of a batch refuses only itself. What the client is answered once the broker had its say: [`answer`].

use serde_json::{json, Value};
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
    /// Most JSON values in one event (counted on the raw bytes, before parsing).
    pub max_event_nodes: usize,
    /// Largest Kafka record (key + envelope) of one event.
    pub max_event_bytes: usize,
}

/// What a Kafka record may take besides an event's key and value, reserved when an event's size is
/// compared with the broker's limit: the record batch's header and the record's varints (≈ 100 bytes),
/// the trace-context headers (at most [`TRACE_HEADERS_MAX_BYTES`]; larger ones are not sent) and slack
/// for compression that does not pay off.
pub const RECORD_OVERHEAD_BYTES: usize = 8 * 1024;

/// The trace-context headers a record may carry (a caller's `tracestate` can be long); larger ones are
/// left off the record rather than let it outgrow [`RECORD_OVERHEAD_BYTES`].
pub const TRACE_HEADERS_MAX_BYTES: usize = 4 * 1024;

/// An accepted event as the broker will hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: Uuid,
    pub key: String,
    /// The envelope JSON.
    pub value: Vec<u8>,
}

/// The broker's answer for one published record.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Acknowledged,
    /// Not acknowledged: a `queue` error (transient: retry) or `too_large` (the broker's limit).
    Failed(ErrorDetail),
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
    /// The schema version each event was validated against, by the index of `outcomes` (that of a
    /// refused event is the version it was checked against, or the latest).
    pub schema_versions: Vec<u32>,
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
/// the whole request; schema violations are per event. Each event is validated against the latest
/// version of the topic's schema, or the one its `$schema` names ([`prepare_versioned`]).
pub fn prepare(
    body: &[u8],
    topic: &Topic,
    producer: &str,
    rules: &IngestRules,
    now: OffsetDateTime,
) -> Result<PreparedBody, ApiError> {
    prepare_versioned(body, topic, producer, rules, now, None)
}

/// The `Eventgate-Schema-Version` header's version: a number the topic has (a 400 naming the header
/// and listing the versions otherwise).
pub fn header_version(topic: &Topic, value: &[u8]) -> Result<u32, ApiError> {
    let field = crate::catalogue::SCHEMA_VERSION_HEADER;
    let text = std::str::from_utf8(value)
        .map_err(|_| ApiError::from(ErrorDetail::validation(field, "must be a version number")))?;
    let number = crate::catalogue::parse_version(&topic.name, &Value::String(text.trim().into()))
        .map_err(|reason| ApiError::from(ErrorDetail::validation(field, reason)))?;
    topic
        .select_version(Some(number))
        .map_err(|reason| ApiError::from(ErrorDetail::validation(field, reason)))
}

/// [`prepare`] with the version the request names for its events (the `Eventgate-Schema-Version`
/// header, see [`header_version`]): an event's own `$schema` member overrides it, and is removed from
/// the event before validation and storage. Without either, the latest version applies.
pub fn prepare_versioned(
    body: &[u8],
    topic: &Topic,
    producer: &str,
    rules: &IngestRules,
    now: OffsetDateTime,
    requested: Option<u32>,
) -> Result<PreparedBody, ApiError> {
    // Checked without building anything (IgnoredAny), so that the events can be split and their values
    // counted on the raw bytes, and no event beyond `max_event_nodes` is ever parsed into a tree.
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|e| {
        ApiError::new(ErrorKind::Malformed, format!("body is not valid JSON: {e}"))
            .with_field("body")
    })?;
    let (is_batch, items) = crate::limits::json_items(body);
    let is_object = items
        .first()
        .is_some_and(|item| body.get(item.range.start) == Some(&b'{'));
    if !is_batch && !is_object {
        return Err(ApiError::from(ErrorDetail::validation(
            "body",
            "body must be one JSON object (an event) or an array of them (a batch)",
        )));
    }
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
    let default_version = requested.unwrap_or_else(|| topic.latest_version());
    let (outcomes, schema_versions) = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let prefix = if is_batch {
                format!("[{index}].")
            } else {
                String::new()
            };
            if item.nodes > rules.max_event_nodes {
                return (
                    EventOutcome::Rejected(vec![crate::limits::too_many_nodes(
                        event_field(&prefix),
                        item.nodes,
                        rules.max_event_nodes,
                    )]),
                    default_version,
                );
            }
            match serde_json::from_slice::<Value>(&body[item.range]) {
                Ok(payload) => prepare_one(
                    payload,
                    topic,
                    producer,
                    rules,
                    now,
                    &prefix,
                    default_version,
                ),
                // Unreachable after the check of the whole body, but never a panic on outside data.
                Err(e) => (
                    EventOutcome::Rejected(vec![ErrorDetail::new(
                        ErrorKind::Malformed,
                        format!("event is not valid JSON: {e}"),
                    )
                    .with_field(event_field(&prefix))]),
                    default_version,
                ),
            }
        })
        .unzip();
    Ok(PreparedBody {
        is_batch,
        outcomes,
        schema_versions,
    })
}

/// The field that names a whole event: `body`, or `[3]` in a batch (`prefix` is `""` or `"[3]."`).
fn event_field(prefix: &str) -> String {
    if prefix.is_empty() {
        "body".to_owned()
    } else {
        prefix.trim_end_matches('.').to_owned()
    }
}

impl PreparedBody {
    /// Encodes every accepted event into its Kafka record, in order. An event whose record (key +
    /// envelope) is larger than `max_event_bytes` is refused here (413 `too_large` naming the limit):
    /// its outcome becomes a rejection, and it gets no record.
    pub fn records(&mut self, topic: &Topic, max_event_bytes: usize) -> Vec<Record> {
        let is_batch = self.is_batch;
        let mut records = Vec::new();
        for (index, outcome) in self.outcomes.iter_mut().enumerate() {
            let EventOutcome::Accepted(event) = outcome else {
                continue;
            };
            let key = topic.message_key(&event.payload, &event.id);
            let version = self
                .schema_versions
                .get(index)
                .copied()
                .unwrap_or_else(|| topic.latest_version());
            let value = event.to_json_bytes_versioned(version);
            let size = key.len() + value.len();
            if size > max_event_bytes {
                let field = if is_batch {
                    format!("[{index}]")
                } else {
                    "body".to_owned()
                };
                *outcome = EventOutcome::Rejected(vec![ErrorDetail::new(
                    ErrorKind::TooLarge,
                    format!(
                        "the event takes {size} bytes as queued (its envelope — payload, id, topic, \
                         timestamp, producer — and its key), at most {max_event_bytes} allowed \
                         (ingest.max_event_bytes)"
                    ),
                )
                .with_field(field)]);
                continue;
            }
            records.push(Record {
                id: event.id,
                key,
                value,
            });
        }
        records
    }
}

/// A successful answer to a write: its status (202, or 207 when some events were not accepted), its
/// body, and the `Retry-After` seconds when some of them may be retried.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after_secs: Option<u32>,
}

/// The answer to a write once the broker had its say. `deliveries` are those of the accepted events,
/// in order (see [`PreparedBody::records`]).
///
/// - every event acknowledged → 202 with the ids;
/// - some acknowledged → 207: `ids` holds the acknowledged ones, `results` every event's outcome by
///   `index` (`statusCode` 202 with its `id`; 400/413 with `errors` for a refused one, never published;
///   503 with its `id` and `errors` for one the broker did not acknowledge), and `Retry-After` when one
///   may be retried (resend it with its `id` as the event id: it is stored once);
/// - none acknowledged → an error: 503 `queue` (with `Retry-After`) when a retry may help, else every
///   event's errors (400, 413).
pub fn answer(prepared: &PreparedBody, deliveries: &[Delivery]) -> Result<Answer, ApiError> {
    let field = |index: usize| {
        if prepared.is_batch {
            format!("[{index}]")
        } else {
            "body".to_owned()
        }
    };
    let mut deliveries = deliveries.iter();
    let mut ids = Vec::new();
    let mut results = Vec::with_capacity(prepared.outcomes.len());
    // Every failure, with its field; the transient ones first: they decide the status.
    let mut transient = Vec::new();
    let mut permanent = Vec::new();
    for (index, outcome) in prepared.outcomes.iter().enumerate() {
        match outcome {
            EventOutcome::Rejected(errors) => {
                let status = errors.first().map_or(400, |e| e.kind.status());
                permanent.extend(errors.iter().cloned());
                results.push(json!({"index": index, "statusCode": status, "errors": errors}));
            }
            EventOutcome::Accepted(event) => match deliveries.next() {
                Some(Delivery::Acknowledged) => {
                    ids.push(event.id.to_string());
                    results.push(json!({"index": index, "statusCode": 202, "id": event.id}));
                }
                Some(Delivery::Failed(error)) => {
                    let error = error.clone().with_field(field(index));
                    results.push(json!({
                        "index": index,
                        "statusCode": error.kind.status(),
                        "id": event.id,
                        "errors": [&error],
                    }));
                    if error.kind.retry_after_secs().is_some() {
                        transient.push(error);
                    } else {
                        permanent.push(error);
                    }
                }
                // A caller's bug (fewer deliveries than records); the event's fate is unknown.
                None => {
                    let error = ErrorDetail::new(
                        ErrorKind::Internal,
                        "the event's delivery was not reported",
                    )
                    .with_field(field(index));
                    results.push(json!({
                        "index": index,
                        "statusCode": 500,
                        "id": event.id,
                        "errors": [&error],
                    }));
                    permanent.push(error);
                }
            },
        }
    }
    if ids.is_empty() {
        if let Some(first) = transient.first() {
            let mut details = vec![ErrorDetail::new(
                ErrorKind::Queue,
                format!("{}; nothing was accepted, retry later", first.message),
            )];
            details.extend(permanent);
            return Err(ApiError::from_details(details));
        }
        if permanent.is_empty() {
            permanent.push(ErrorDetail::new(ErrorKind::Internal, "no event to answer"));
        }
        return Err(ApiError::from_details(permanent));
    }
    if ids.len() == prepared.outcomes.len() {
        return Ok(Answer {
            status: 202,
            body: json!({"success": true, "statusCode": 202, "ids": ids}),
            retry_after_secs: None,
        });
    }
    Ok(Answer {
        status: 207,
        body: json!({"success": false, "statusCode": 207, "ids": ids, "results": results}),
        retry_after_secs: transient
            .iter()
            .filter_map(|e| e.kind.retry_after_secs())
            .max(),
    })
}

/// One event: its outcome and the schema version it was validated against (`version` unless its own
/// `$schema` names another).
fn prepare_one(
    mut payload: Value,
    topic: &Topic,
    producer: &str,
    rules: &IngestRules,
    now: OffsetDateTime,
    prefix: &str,
    version: u32,
) -> (EventOutcome, u32) {
    let Some(members) = payload.as_object_mut() else {
        return (
            EventOutcome::Rejected(vec![ErrorDetail::validation(
                event_field(prefix),
                "an event must be a JSON object",
            )]),
            version,
        );
    };
    // The version the event names belongs to the envelope, not the payload: removed before the schema
    // sees the event, and never stored in it.
    let version = match members.remove(crate::catalogue::SCHEMA_MEMBER) {
        None => version,
        Some(named) => {
            match crate::catalogue::parse_version(&topic.name, &named)
                .and_then(|n| topic.select_version(Some(n)))
            {
                Ok(n) => n,
                Err(reason) => {
                    return (
                        EventOutcome::Rejected(vec![ErrorDetail::validation(
                            format!("{prefix}{}", crate::catalogue::SCHEMA_MEMBER),
                            reason,
                        )]),
                        version,
                    )
                }
            }
        }
    };
    // Before validation: the schema checks, and the history stores, the normalised date-times.
    topic.normalise_naive_times_version(&mut payload, version);
    let mut errors = topic.validate_event_version(&payload, prefix, Some(&rules.id_field), version);
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
    let outcome = match id {
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
    };
    (outcome, version)
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
            max_event_nodes: 100,
            max_event_bytes: 1024,
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

    /// the-eye's documented event, verbatim (its README, "Send event"): a naive `timestamp` that the
    /// shipped `web.events` reads in UTC and stores as RFC 3339.
    const THE_EYE_EVENT: &str = r#"{
        "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
        "category": "click",
        "name": "pageview",
        "data": {
            "host": "www.consumeraffairs.com",
            "path": "/"
        },
        "timestamp": "2021-01-01 09:15:29.243860"
    }"#;

    fn shipped_topic(name: &str) -> Topic {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../../config/topics/{name}.json"));
        let schema = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        Topic::from_schema(name, schema).unwrap()
    }

    #[test]
    fn the_eyes_naive_timestamp_is_accepted_and_stored_normalised() {
        let topic = shipped_topic("web.events");
        let prepared = prepare(THE_EYE_EVENT.as_bytes(), &topic, "eye", &rules(), now()).unwrap();
        let event = prepared
            .accepted()
            .next()
            .unwrap_or_else(|| panic!("refused: {:?}", prepared.all_rejected_error()));
        assert_eq!(event.payload["timestamp"], "2021-01-01T09:15:29.243860Z");
        assert_eq!(event.payload["data"]["host"], "www.consumeraffairs.com");
        // In a batch too, and a naive time that does not exist is refused by the schema, named.
        let batch = format!(
            "[{THE_EYE_EVENT}, {}]",
            THE_EYE_EVENT.replace("2021-01-01 09:15:29", "2021-02-30 09:15:29")
        );
        let prepared = prepare(batch.as_bytes(), &topic, "eye", &rules(), now()).unwrap();
        assert_eq!(prepared.accepted().count(), 1);
        match &prepared.outcomes[1] {
            EventOutcome::Rejected(details) => {
                assert_eq!(details[0].field.as_deref(), Some("[1].timestamp"))
            }
            other => panic!("{other:?}"),
        }
        // A topic that declares no zone still refuses it.
        let strict = Topic::from_schema(
            "strict",
            json!({"properties": {"timestamp": {"type": "string", "format": "date-time"}}}),
        )
        .unwrap();
        let prepared = prepare(THE_EYE_EVENT.as_bytes(), &strict, "eye", &rules(), now()).unwrap();
        let err = prepared.all_rejected_error().expect("refused");
        assert_eq!(err.details[0].field.as_deref(), Some("timestamp"));
    }

    #[test]
    fn a_missing_required_property_is_named_by_its_own_path() {
        let topic = shipped_topic("audit.logs");
        let prepared =
            prepare(br#"{"event_name": "login"}"#, &topic, "a", &rules(), now()).unwrap();
        let err = prepared.all_rejected_error().expect("refused");
        assert_eq!(err.details[0].field.as_deref(), Some("description"));
        let prepared = prepare(
            br#"[{"event_name": "a", "description": "d"}, {"event_name": "b"}]"#,
            &topic,
            "a",
            &rules(),
            now(),
        )
        .unwrap();
        match &prepared.outcomes[1] {
            EventOutcome::Rejected(details) => {
                assert_eq!(details[0].field.as_deref(), Some("[1].description"))
            }
            other => panic!("{other:?}"),
        }
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
    fn an_event_with_too_many_values_is_refused_before_parsing() {
        let bomb = format!(r#"{{"event_name": "x", "a": [{}0]}}"#, "0,".repeat(200));
        let single = prepare(bomb.as_bytes(), &topic(), "a", &rules(), now())
            .unwrap()
            .all_rejected_error()
            .unwrap();
        assert_eq!(single.status(), 413);
        assert_eq!(single.details[0].field.as_deref(), Some("body"));
        assert!(
            single.details[0].message.contains("at most 100"),
            "{single:?}"
        );
        let batch = format!(r#"[{{"event_name": "ok"}}, {bomb}]"#);
        let prepared = prepare(batch.as_bytes(), &topic(), "a", &rules(), now()).unwrap();
        assert_eq!(prepared.accepted().count(), 1);
        match &prepared.outcomes[1] {
            EventOutcome::Rejected(details) => {
                assert_eq!(details[0].kind, ErrorKind::TooLarge);
                assert_eq!(details[0].field.as_deref(), Some("[1]"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_event_larger_than_the_limit_as_queued_gets_no_record() {
        let big = "x".repeat(900);
        let body =
            format!(r#"[{{"event_name": "a"}}, {{"event_name": "{big}"}}, {{"event_name": "c"}}]"#);
        let mut prepared = prepare(body.as_bytes(), &topic(), "alice", &rules(), now()).unwrap();
        let records = prepared.records(&topic(), 1024);
        assert_eq!(records.len(), 2);
        for record in &records {
            // The key (the id, no key field) and the envelope are what the limit measures.
            assert_eq!(record.key, record.id.to_string());
            let event = Event::from_json_bytes(&record.value).unwrap();
            assert_eq!(event.id, record.id);
        }
        match &prepared.outcomes[1] {
            EventOutcome::Rejected(details) => {
                assert_eq!(details[0].kind, ErrorKind::TooLarge);
                assert_eq!(details[0].field.as_deref(), Some("[1]"));
                assert!(details[0].message.contains("at most 1024"), "{details:?}");
            }
            other => panic!("{other:?}"),
        }
        // The envelope counts: an event of 900 bytes alone fits, its envelope does not.
        let single = format!(r#"{{"event_name": "{}"}}"#, "y".repeat(880));
        assert!(single.len() < 1024);
        let mut prepared = prepare(single.as_bytes(), &topic(), "alice", &rules(), now()).unwrap();
        assert!(prepared.records(&topic(), 1024).is_empty());
        let error = answer(&prepared, &[]).unwrap_err();
        assert_eq!(error.status(), 413);
        assert_eq!(error.details[0].field.as_deref(), Some("body"));
    }

    #[test]
    fn the_answer_says_what_the_broker_acknowledged() {
        let body = br#"[{"event_name": "a"}, {"event_name": 5}, {"event_name": "c"}]"#;
        let prepared = prepare(body, &topic(), "a", &rules(), now()).unwrap();
        let ids: Vec<String> = prepared.accepted().map(|e| e.id.to_string()).collect();
        let queue = || Delivery::Failed(ErrorDetail::new(ErrorKind::Queue, "timed out"));

        // One acknowledged, one not: 207, the failed one with its id and a Retry-After.
        let partial = answer(&prepared, &[Delivery::Acknowledged, queue()]).unwrap();
        assert_eq!(partial.status, 207);
        assert_eq!(partial.retry_after_secs, Some(5));
        assert_eq!(partial.body["ids"], json!([ids[0]]));
        let results = &partial.body["results"];
        assert_eq!(results[0]["statusCode"], 202);
        assert_eq!(results[1]["statusCode"], 400);
        assert!(results[1]["id"].is_null(), "never published: {results}");
        assert_eq!(results[2]["statusCode"], 503);
        assert_eq!(results[2]["id"], json!(ids[1]));
        assert_eq!(results[2]["errors"][0]["type"], "queue");
        assert_eq!(results[2]["errors"][0]["field"], "[2]");

        // Invalid ones only refused: 207 without Retry-After.
        let refused = answer(&prepared, &[Delivery::Acknowledged, Delivery::Acknowledged]).unwrap();
        assert_eq!((refused.status, refused.retry_after_secs), (207, None));
        assert_eq!(refused.body["ids"], json!(ids));

        // None acknowledged: 503, naming the invalid event too.
        let none = answer(&prepared, &[queue(), queue()]).unwrap_err();
        assert_eq!(none.status(), 503);
        assert!(none.details[0].message.contains("nothing was accepted"));
        assert_eq!(none.details[1].field.as_deref(), Some("[1].event_name"));

        // Too large at the broker, nothing else: 413, no retry.
        let too_large = || Delivery::Failed(ErrorDetail::new(ErrorKind::TooLarge, "too large"));
        let none = answer(&prepared, &[too_large(), too_large()]).unwrap_err();
        assert_eq!(
            none.status(),
            413,
            "the errors in request order, the first decides"
        );
        assert!(none
            .details
            .iter()
            .any(|d| d.field.as_deref() == Some("[2]")));

        // Everything acknowledged: 202.
        let body = br#"[{"event_name": "a"}, {"event_name": "b"}]"#;
        let prepared = prepare(body, &topic(), "a", &rules(), now()).unwrap();
        let all = answer(&prepared, &[Delivery::Acknowledged, Delivery::Acknowledged]).unwrap();
        assert_eq!(all.status, 202);
        assert_eq!(all.body["success"], true);
        assert_eq!(all.body["ids"].as_array().unwrap().len(), 2);
    }

    /// `logs` in two versions: version 2 requires `customer_id` (under `none`, so it loads).
    fn versioned_topic() -> Topic {
        let v1 = json!({"type": "object", "required": ["name"],
                        "properties": {"name": {"type": "string"}}});
        let v2 = json!({"type": "object", "required": ["name", "customer_id"],
                        "x-eventgate": {"compatibility": "none"},
                        "properties": {"name": {"type": "string"},
                                       "customer_id": {"type": "integer"}}});
        Topic::from_versions("logs", vec![v1, v2]).expect("versions load")
    }

    /// Batches of up to ten events.
    fn wide() -> IngestRules {
        IngestRules {
            max_batch_events: 10,
            ..rules()
        }
    }

    fn version_errors(prepared: &PreparedBody, index: usize) -> Vec<String> {
        match &prepared.outcomes[index] {
            EventOutcome::Accepted(_) => Vec::new(),
            EventOutcome::Rejected(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field.as_deref().unwrap_or(""), e.message))
                .collect(),
        }
    }

    #[test]
    fn an_event_is_validated_against_the_version_it_names_else_the_latest() {
        let topic = versioned_topic();
        let body = br#"[
            {"name": "a"},
            {"name": "b", "$schema": 1},
            {"name": "c", "$schema": "1"},
            {"name": "d", "$schema": "logs/1"},
            {"name": "e", "customer_id": 4, "$schema": 2}
        ]"#;
        let prepared = prepare(body, &topic, "p", &wide(), now()).expect("prepared");
        assert_eq!(prepared.schema_versions, [2, 1, 1, 1, 2]);
        // The latest requires customer_id; version 1 does not.
        assert_eq!(
            version_errors(&prepared, 0),
            ["[0].customer_id: \"customer_id\" is a required property"]
        );
        for index in 1..5 {
            assert!(version_errors(&prepared, index).is_empty(), "{index}");
        }
        // `$schema` is the envelope's: never stored in the payload.
        for event in prepared.accepted() {
            assert!(
                event.payload.get("$schema").is_none(),
                "{:?}",
                event.payload
            );
        }

        // The header names the version of every event; an event's own `$schema` overrides it.
        let body = br#"[{"name": "a"}, {"name": "b", "customer_id": 1, "$schema": 2}]"#;
        let mut prepared =
            prepare_versioned(body, &topic, "p", &wide(), now(), Some(1)).expect("prepared");
        assert_eq!(prepared.schema_versions, [1, 2]);
        assert_eq!(prepared.rejected_count(), 0);
        let records = prepared.records(&topic, 1 << 20);
        let versions: Vec<u32> = records
            .iter()
            .map(|r| crate::envelope::schema_version_in(&r.value))
            .collect();
        assert_eq!(versions, [1, 2], "the version travels in the envelope");
    }

    #[test]
    fn an_unknown_or_malformed_version_is_refused_naming_the_field() {
        let topic = versioned_topic();
        let body = br#"[{"name": "a", "$schema": 3}, {"name": "a", "$schema": "other/1"},
                        {"name": "a", "$schema": "01"}, {"name": "a", "$schema": 1.5},
                        {"name": "a", "$schema": 1}]"#;
        let prepared = prepare(body, &topic, "p", &wide(), now()).expect("prepared");
        assert_eq!(
            version_errors(&prepared, 0),
            ["[0].$schema: topic \"logs\" has no schema version 3; its versions are 1, 2"]
        );
        assert!(
            version_errors(&prepared, 1)[0].starts_with("[1].$schema: names the topic \"other\""),
            "{:?}",
            version_errors(&prepared, 1)
        );
        assert!(
            version_errors(&prepared, 2)[0].starts_with("[2].$schema: must be a version number")
        );
        assert!(
            version_errors(&prepared, 3)[0].starts_with("[3].$schema: must be a version number")
        );
        assert!(version_errors(&prepared, 4).is_empty());

        let single = prepare(
            br#"{"name": "a", "$schema": 9}"#,
            &topic,
            "p",
            &rules(),
            now(),
        )
        .expect("prepared");
        assert_eq!(
            version_errors(&single, 0),
            ["$schema: topic \"logs\" has no schema version 9; its versions are 1, 2"]
        );

        // The header: a whole-request error naming it.
        assert_eq!(header_version(&topic, b" 2 ").expect("known"), 2);
        assert_eq!(header_version(&topic, b"logs/1").expect("known"), 1);
        for bad in [&b"3"[..], b"x", b"0", b"\xff"] {
            let error = header_version(&topic, bad).expect_err("refused");
            let body = error.body().to_string();
            assert!(body.contains("Eventgate-Schema-Version"), "{body}");
        }
        let error = header_version(&topic, b"3").expect_err("unknown");
        let body = error.body().to_string();
        assert!(body.contains("its versions are 1, 2"), "{body}");
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
