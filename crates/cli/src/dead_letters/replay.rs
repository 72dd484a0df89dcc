//! What a replay sends, decided without the network: the dead letter's raw message decoded as the writer
//! decodes it, its event checked against the topic's *current* schema as the ingest-api checks a new
//! one, and the Kafka record that carries it again — same envelope (id, producer, received-at), same key.
//! Anything that would only be parked again is refused here, with the reasons field by field.

use eventgate_core::catalogue::Catalogue;
use eventgate_core::envelope::{schema_version_in, Event};
use serde_json::Value;

use super::db::DeadLetterRow;

/// The record a replay produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub event_id: uuid::Uuid,
    pub producer: String,
    pub topic: String,
    /// The message key the ingest-api gives the event (the topic's `key_field` value, or the id).
    pub key: String,
    /// The envelope: the parked bytes as they were, or re-encoded when the topic's declared time zone
    /// rewrote a naive date-time of the payload (as the ingest-api would now).
    pub value: Vec<u8>,
}

/// Why a dead letter is not replayed.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Resolved already (`replayed` / `discarded`); `--force` replays it anyway.
    Resolved {
        resolution: String,
        when: String,
        by: String,
    },
    /// It can never be stored as it is, whatever the schema: the reason says why.
    Unreplayable(String),
    /// The event still fails the topic's current schema.
    Invalid { topic: String, errors: Vec<String> },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Resolved {
                resolution,
                when,
                by,
            } => write!(
                f,
                "{resolution} already ({when}, by {by}); --force replays it again (the event key \
                 stores it at most once)"
            ),
            Refusal::Unreplayable(why) => f.write_str(why),
            Refusal::Invalid { topic, errors } => {
                write!(f, "still refused by the current schema of {topic}:")?;
                for error in errors {
                    write!(f, "\n    {error}")?;
                }
                Ok(())
            }
        }
    }
}

/// The record to produce for `dead`, or why not. `id_field` is the ingest-api's `ingest.id_field`
/// (accepted on every topic, as at ingest).
pub fn prepare(
    dead: &DeadLetterRow,
    catalogue: &Catalogue,
    id_field: &str,
    force: bool,
) -> Result<Replay, Refusal> {
    if let (Some(resolution), false) = (&dead.resolution, force) {
        return Err(Refusal::Resolved {
            resolution: resolution.clone(),
            when: dead
                .resolved_at
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default(),
            by: dead.resolved_by.clone().unwrap_or_default(),
        });
    }
    match dead.reason.as_str() {
        "conflicting_duplicate" => {
            return Err(Refusal::Unreplayable(
                "a conflicting duplicate: its id is stored already with another payload, which \
                 stays; a replay would be parked again. Discard it, or send the event again with \
                 a new event_id"
                    .to_owned(),
            ))
        }
        "topic_mismatch" => {
            return Err(Refusal::Unreplayable(
                "a topic mismatch: the envelope names another topic than the one it was read \
                 from, and no replay moves an event between topics. Discard it"
                    .to_owned(),
            ))
        }
        _ => {}
    }
    let Some(raw) = dead.raw.as_deref() else {
        return Err(Refusal::Unreplayable(
            "the message had no value: there is nothing to replay".to_owned(),
        ));
    };
    // As the writer decodes a message: an envelope with an id, topic, timestamp, producer and payload.
    let mut event = Event::from_json_bytes(raw).map_err(|e| {
        Refusal::Unreplayable(format!(
            "the raw message is not an event envelope ({e}): no schema change makes it one"
        ))
    })?;
    let parked_topic = dead.topic.as_deref().unwrap_or_default();
    if event.topic != parked_topic {
        return Err(Refusal::Unreplayable(format!(
            "the envelope names topic {:?} but was parked for topic {parked_topic:?}",
            event.topic
        )));
    }
    if event.producer.is_empty() {
        return Err(Refusal::Unreplayable(
            "the envelope has no producer".to_owned(),
        ));
    }
    let Some(topic) = catalogue.get(&event.topic) else {
        return Err(Refusal::Unreplayable(format!(
            "topic {:?} is not in the catalogue (catalogue.topics_dir)",
            event.topic
        )));
    };
    if !event.payload.is_object() {
        return Err(invalid(&event.topic, "an event must be a JSON object"));
    }
    // As at ingest: naive date-times in the topic's declared zone first, then the schema.
    let rewritten = topic.normalise_naive_times(&mut event.payload);
    // The event keeps the schema version it was accepted under (absent in older messages: 1), and is
    // checked against that version as the topics directory defines it now.
    let version = schema_version_in(raw);
    let mut errors: Vec<String> = topic
        .validate_event_version(&event.payload, "", Some(id_field), version)
        .into_iter()
        .map(
            |error| match error.field.as_deref().filter(|f| !f.is_empty()) {
                Some(field) => format!("{field}: {}", error.message),
                None => error.message,
            },
        )
        .collect();
    if let Some(path) = nul_character_at(&event.payload, "") {
        errors.push(format!(
            "{}: must not contain the NUL character (\\u0000), which the event history \
             (PostgreSQL jsonb) cannot store",
            if path.is_empty() { "(event)" } else { &path }
        ));
    }
    if !errors.is_empty() {
        return Err(Refusal::Invalid {
            topic: event.topic.clone(),
            errors,
        });
    }
    let key = topic.message_key(&event.payload, &event.id);
    let value = if rewritten > 0 {
        event.to_json_bytes_versioned(version)
    } else {
        raw.to_vec()
    };
    Ok(Replay {
        event_id: event.id,
        producer: event.producer,
        topic: event.topic,
        key,
        value,
    })
}

fn invalid(topic: &str, message: &str) -> Refusal {
    Refusal::Invalid {
        topic: topic.to_owned(),
        errors: vec![message.to_owned()],
    }
}

/// The path of the first string or key holding U+0000 (`jsonb` refuses it), `""` for the event itself.
fn nul_character_at(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(text) if text.contains('\0') => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_character_at(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                Some(child)
            } else {
                nul_character_at(item, &child)
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventgate_core::catalogue::Topic;
    use serde_json::json;

    const ID: &str = "0190a3b2-1c2d-7e3f-8a9b-0c1d2e3f4a5b";

    fn catalogue(max_length: u64) -> Catalogue {
        let schema = json!({
            "type": "object",
            "required": ["note"],
            "properties": {"note": {"type": "string", "maxLength": max_length}, "run": {"type": "string"}},
            "additionalProperties": false,
            "x-eventgate": {"key_field": "run"}
        });
        Catalogue::from_topics([Topic::from_schema("t.notes", schema).expect("schema")])
    }

    fn envelope(topic: &str, payload: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "id": ID, "topic": topic, "timestamp": "2025-01-15T10:00:00Z",
            "producer": "alice", "payload": payload
        }))
        .expect("JSON")
    }

    fn parked(reason: &str, raw: Option<Vec<u8>>) -> DeadLetterRow {
        DeadLetterRow {
            id: 7,
            topic: Some("t.notes".to_owned()),
            kafka_topic: "eventgate.t.notes".to_owned(),
            kafka_partition: 0,
            kafka_offset: 3,
            raw,
            reason: reason.to_owned(),
            error: "refused: index row size exceeds maximum".to_owned(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            event_id: Some(uuid::Uuid::parse_str(ID).expect("uuid")),
            producer: Some("alice".to_owned()),
            resolution: None,
            resolved_at: None,
            resolved_by: None,
            resolution_note: None,
        }
    }

    #[test]
    fn a_valid_event_is_replayed_as_it_was_parked_with_its_key() {
        let raw = envelope(
            "t.notes",
            json!({"note": "hi", "run": "r-1", "event_id": ID}),
        );
        let replay = prepare(
            &parked("refused", Some(raw.clone())),
            &catalogue(10),
            "event_id",
            false,
        )
        .expect("replayable");
        assert_eq!(replay.event_id.to_string(), ID);
        assert_eq!(replay.producer, "alice");
        assert_eq!(replay.key, "r-1", "the topic's key field, as at ingest");
        assert_eq!(replay.value, raw, "the parked bytes, unchanged");
    }

    #[test]
    fn an_event_the_current_schema_refuses_is_not_replayed_and_the_field_is_named() {
        let raw = envelope("t.notes", json!({"note": "far too long", "extra": 1}));
        let refusal = prepare(
            &parked("refused", Some(raw)),
            &catalogue(4),
            "event_id",
            false,
        )
        .expect_err("invalid");
        let text = refusal.to_string();
        assert!(
            text.starts_with("still refused by the current schema of t.notes:"),
            "{text}"
        );
        assert!(text.contains("\n    note: "), "{text}");
        assert!(text.contains("\n    extra: "), "{text}");
    }

    #[test]
    fn what_can_never_be_stored_is_refused_whatever_the_schema() {
        let catalogue = catalogue(100);
        let good = envelope("t.notes", json!({"note": "x"}));
        for (reason, raw, expected) in [
            (
                "conflicting_duplicate",
                Some(good.clone()),
                "conflicting duplicate",
            ),
            ("topic_mismatch", Some(good.clone()), "topic mismatch"),
            (
                "undecodable",
                Some(b"garbage".to_vec()),
                "not an event envelope",
            ),
            ("undecodable", None, "no value"),
            (
                "refused",
                Some(envelope("t.other", json!({"note": "x"}))),
                "names topic",
            ),
            (
                "refused",
                Some(envelope("t.notes", json!({"note": "a\u{0}b"}))),
                "note: must not contain the NUL",
            ),
        ] {
            let refusal =
                prepare(&parked(reason, raw), &catalogue, "event_id", true).expect_err(reason);
            assert!(
                refusal.to_string().contains(expected),
                "{reason}: {refusal}"
            );
        }
    }

    #[test]
    fn a_resolved_dead_letter_needs_force() {
        let mut dead = parked("refused", Some(envelope("t.notes", json!({"note": "x"}))));
        dead.resolution = Some("replayed".to_owned());
        dead.resolved_by = Some("ops".to_owned());
        dead.resolved_at = Some(time::OffsetDateTime::UNIX_EPOCH);
        let refusal = prepare(&dead, &catalogue(10), "event_id", false).expect_err("resolved");
        assert!(
            refusal
                .to_string()
                .starts_with("replayed already (1970-01-01T00:00:00Z, by ops)"),
            "{refusal}"
        );
        assert!(prepare(&dead, &catalogue(10), "event_id", true).is_ok());
    }
}
