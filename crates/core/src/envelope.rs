//! The event envelope: an accepted event plus what the gateway adds to it.
//!
//! The same JSON shape travels through Kafka (ingest-api → db-writer), is stored as a row of the `events`
//! table, and is returned by the stats-api:
//! `{"id": "...", "topic": "...", "timestamp": "2025-01-15T10:30:00Z", "producer": "alice", "payload": {...},
//! "schema_version": 2}`.
//!
//! `schema_version` is the version of the topic's schema the event was validated against; it travels
//! beside [`Event`] (written by [`Event::to_json_bytes_versioned`], read by [`schema_version_in`]), so
//! that every place building an `Event` need not know about it. A message without it (written before
//! versions were recorded) is version [`DEFAULT_SCHEMA_VERSION`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UUIDv7 minted at ingest, unless the producer supplied its own id. With `topic` and `producer` it
    /// is the idempotency key: unique per (topic, producer), not across producers.
    pub id: Uuid,
    pub topic: String,
    /// When the gateway received the event (the envelope's `timestamp` field).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The `sub` of the token that sent the event.
    pub producer: String,
    /// The event as the producer sent it, validated against the topic's schema.
    pub payload: serde_json::Value,
}

/// The envelope member naming the schema version the event was validated against.
pub const SCHEMA_VERSION_FIELD: &str = "schema_version";

/// The version of an event whose envelope names none: queued by an ingest-api from before versions
/// were recorded, when every topic had one version.
pub const DEFAULT_SCHEMA_VERSION: u32 = 1;

/// The envelope as it is queued: the event and its schema version.
#[derive(Serialize)]
struct Versioned<'a> {
    #[serde(flatten)]
    event: &'a Event,
    schema_version: u32,
}

/// The schema version an envelope's JSON names ([`DEFAULT_SCHEMA_VERSION`] when it names none or is
/// no envelope): read without building the payload.
pub fn schema_version_in(bytes: &[u8]) -> u32 {
    #[derive(Deserialize)]
    struct Only {
        schema_version: Option<u32>,
    }
    serde_json::from_slice::<Only>(bytes)
        .ok()
        .and_then(|only| only.schema_version)
        .unwrap_or(DEFAULT_SCHEMA_VERSION)
}

impl Event {
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings, a uuid, a timestamp and a Value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The envelope as the ingest-api queues it: [`Event::to_json_bytes`] with `schema_version`.
    pub fn to_json_bytes_versioned(&self, schema_version: u32) -> Vec<u8> {
        // As above: nothing here can fail to serialise.
        serde_json::to_vec(&Versioned {
            event: self,
            schema_version,
        })
        .unwrap_or_default()
    }

    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let event = Event {
            id: Uuid::now_v7(),
            topic: "audit.logs".into(),
            timestamp: OffsetDateTime::from_unix_timestamp(1_736_937_000).unwrap(),
            producer: "alice".into(),
            payload: serde_json::json!({"event_name": "login", "description": "ok"}),
        };
        let bytes = event.to_json_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains("\"timestamp\":\"2025-01-15T10:30:00Z\""),
            "{text}"
        );
        assert_eq!(Event::from_json_bytes(&bytes).unwrap(), event);
        assert_eq!(schema_version_in(&bytes), DEFAULT_SCHEMA_VERSION);

        let versioned = event.to_json_bytes_versioned(3);
        let text = String::from_utf8(versioned.clone()).unwrap();
        assert!(text.ends_with(",\"schema_version\":3}"), "{text}");
        assert_eq!(schema_version_in(&versioned), 3);
        // Readers that know nothing of versions still read the event.
        assert_eq!(Event::from_json_bytes(&versioned).unwrap(), event);
    }
}
