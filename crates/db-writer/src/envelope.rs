//! An event envelope as the writer holds it between Kafka and Postgres: the message's bytes as read,
//! and the envelope's fields parsed from them — except the payload, which stays the JSON text it
//! arrived as (the byte range of `payload` in the message) and goes to Postgres as that text.
//!
//! Why not `eventgate_core::envelope::Event`: its payload is a `serde_json::Value`, and a tree of
//! small values takes many times the bytes of its text (1 MB of `[0,0,0,…]` is ≈ 17 MB as a `Value`).
//! The writer never looks inside a payload, so it keeps only the text, and a batch takes about the bytes
//! of its messages (`writer.max_batch_bytes`). Parsing still checks that the whole message is JSON.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

/// Where a message was read from: (Kafka topic, partition, offset), unique in `dead_letters`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KafkaCoordinates {
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

/// A decoded event envelope (the shape `eventgate_core::envelope::Event` serialises to).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The producer's event id (or the one minted at ingest); unique per (topic, producer).
    pub id: Uuid,
    pub topic: String,
    /// The envelope's `timestamp`: when the ingest-api received the event.
    pub received_at: OffsetDateTime,
    pub producer: String,
    /// The version of the topic's schema the event was validated against: the envelope's
    /// `schema_version`, 1 when it has none (queued by an ingest-api from before versions were
    /// recorded). Postgres' `smallint`.
    pub schema_version: i16,
    /// Where the message was read from.
    pub origin: KafkaCoordinates,
    /// The message value as read from Kafka, kept whole: a dead letter parks these bytes.
    raw: Vec<u8>,
    /// The payload's JSON text within `raw`.
    payload: Range<usize>,
}

/// The envelope's JSON, borrowing from the message: strings without escapes and the payload text are
/// not copied while parsing.
#[derive(Deserialize)]
struct Wire<'a> {
    id: Uuid,
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    #[serde(borrow)]
    producer: Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a RawValue,
    /// A number the `smallint` column holds, or the envelope is refused as undecodable.
    #[serde(default = "default_schema_version")]
    schema_version: i16,
}

fn default_schema_version() -> i16 {
    // DEFAULT_SCHEMA_VERSION is 1: fits.
    i16::try_from(eventgate_core::envelope::DEFAULT_SCHEMA_VERSION).unwrap_or(1)
}

impl Envelope {
    /// Parses a message value. On failure the bytes come back with the reason, for the dead letter.
    pub fn decode(
        raw: Vec<u8>,
        origin: KafkaCoordinates,
    ) -> Result<Envelope, (Vec<u8>, serde_json::Error)> {
        let (id, topic, received_at, producer, schema_version, payload) =
            match serde_json::from_slice::<Wire<'_>>(&raw) {
                Ok(wire) => {
                    // A borrowed `RawValue` is a slice of `raw`: its position is the payload's range.
                    let text = wire.payload.get();
                    let start = (text.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
                    let payload = start..start.saturating_add(text.len());
                    if raw.get(payload.clone()) != Some(text.as_bytes()) {
                        let error = <serde_json::Error as serde::de::Error>::custom(
                            "the payload is not a slice of the message",
                        );
                        return Err((raw, error));
                    }
                    (
                        wire.id,
                        wire.topic.into_owned(),
                        wire.timestamp,
                        wire.producer.into_owned(),
                        wire.schema_version,
                        payload,
                    )
                }
                Err(error) => return Err((raw, error)),
            };
        Ok(Envelope {
            id,
            topic,
            received_at,
            producer,
            schema_version,
            origin,
            raw,
            payload,
        })
    }

    /// The payload's JSON text, exactly as it came in the message.
    pub fn payload_json(&self) -> &[u8] {
        self.raw.get(self.payload.clone()).unwrap_or(b"null")
    }

    /// The whole message value as read.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> KafkaCoordinates {
        KafkaCoordinates {
            kafka_topic: "eventgate.audit.logs".to_owned(),
            kafka_partition: 0,
            kafka_offset: 7,
        }
    }

    #[test]
    fn reads_what_the_ingest_api_writes_and_keeps_the_payload_text() {
        let event = eventgate_core::envelope::Event {
            id: Uuid::now_v7(),
            topic: "audit.logs".to_owned(),
            timestamp: OffsetDateTime::from_unix_timestamp(1_736_937_000).expect("time"),
            producer: "al\"ice".to_owned(),
            payload: serde_json::json!({"a": [0, 0, 0], "s": "x\ny", "n": 1.50}),
        };
        let bytes = event.to_json_bytes();
        let decoded = Envelope::decode(bytes.clone(), origin()).expect("decodes");
        assert_eq!(decoded.id, event.id);
        assert_eq!(decoded.topic, "audit.logs");
        assert_eq!(decoded.producer, "al\"ice", "escaped strings are unescaped");
        assert_eq!(decoded.received_at, event.timestamp);
        assert_eq!(
            decoded.schema_version, 1,
            "an envelope without a version is version 1"
        );
        assert_eq!(decoded.raw(), &bytes[..]);
        let payload: serde_json::Value =
            serde_json::from_slice(decoded.payload_json()).expect("payload is JSON");
        assert_eq!(payload, event.payload);
        assert_eq!(
            std::str::from_utf8(decoded.payload_json()).expect("UTF-8"),
            serde_json::to_string(&event.payload).expect("JSON"),
            "the payload text is passed through, not rebuilt"
        );
    }

    #[test]
    fn the_schema_version_is_read_beside_the_payload_text() {
        let event = eventgate_core::envelope::Event {
            id: Uuid::now_v7(),
            topic: "audit.logs".to_owned(),
            timestamp: OffsetDateTime::from_unix_timestamp(1_736_937_000).expect("time"),
            producer: "alice".to_owned(),
            payload: serde_json::json!({"b": [1, 2]}),
        };
        let decoded =
            Envelope::decode(event.to_json_bytes_versioned(2), origin()).expect("decodes");
        assert_eq!(decoded.schema_version, 2);
        assert_eq!(decoded.payload_json(), br#"{"b":[1,2]}"#);
        // A version the column cannot hold is no envelope.
        let too_large = event.to_json_bytes_versioned(70_000);
        assert!(Envelope::decode(too_large, origin()).is_err());
    }

    #[test]
    fn a_payload_with_spaces_is_taken_as_written() {
        let raw = br#"{ "payload" : { "b" : [1, 2] } , "id":"0190a3b2-1c2d-7e3f-8a9b-0c1d2e3f4a5b",
            "topic":"t","timestamp":"2025-01-15T10:00:00Z","producer":"p"}"#
            .to_vec();
        let decoded = Envelope::decode(raw, origin()).expect("decodes");
        assert_eq!(decoded.payload_json(), br#"{ "b" : [1, 2] }"#);
    }

    #[test]
    fn what_is_no_envelope_comes_back_with_its_bytes() {
        for raw in [
            &b"garbage"[..],
            br#"{"id":"0190a3b2-1c2d-7e3f-8a9b-0c1d2e3f4a5b","topic":"t","timestamp":"2025-01-15T10:00:00Z","producer":"p"}"#,
            br#"{"id":"x","topic":"t","timestamp":"2025-01-15T10:00:00Z","producer":"p","payload":{}}"#,
            br#"{"id":"0190a3b2-1c2d-7e3f-8a9b-0c1d2e3f4a5b","topic":"t","timestamp":"2025-01-15T10:00:00Z","producer":"p","payload":{"a":}}"#,
        ] {
            let (bytes, _) = Envelope::decode(raw.to_vec(), origin()).expect_err("not an envelope");
            assert_eq!(bytes, raw);
        }
    }
}
