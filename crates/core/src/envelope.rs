//! The event envelope: an accepted event plus what the gateway adds to it.
//!
//! The same JSON shape travels through Kafka (ingest-api → db-writer), is stored as a row of the `events`
//! table, and is returned by the stats-api:
//! `{"id": "...", "topic": "...", "timestamp": "2025-01-15T10:30:00Z", "producer": "alice", "payload": {...}}`.

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

impl Event {
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings, a uuid, a timestamp and a Value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
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
    }
}
