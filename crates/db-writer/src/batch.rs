//! A batch of Kafka messages on its way to Postgres, and the offsets it will commit once written.
//!
//! A batch is closed by count (`writer.batch_size`), by bytes (`writer.max_batch_bytes`: the messages'
//! keys and values as read) or by time (`writer.batch_timeout_ms`, in the writer's loop): what a batch
//! holds in memory is about the bytes of its messages, since payloads stay the text they arrived as
//! ([`crate::envelope`]).

use std::collections::BTreeMap;

use rdkafka::message::{BorrowedMessage, Message};

use crate::db::{DeadLetter, DeadLetterReason};
use crate::envelope::{Envelope, KafkaCoordinates};
use crate::rebalance::Ownership;

/// One consumed message, decoded or not.
#[derive(Debug)]
pub struct Consumed {
    pub kafka_topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The epoch of its partition's assignment when it was read ([`crate::rebalance`]): its offset is
    /// committed only while the partition is still owned under it.
    pub epoch: u64,
    /// The message's size as read: its key and value.
    pub bytes: usize,
    pub decoded: Result<Envelope, DeadLetter>,
}

impl Consumed {
    /// Decodes a message read under the assignment `epoch`. One that is not an envelope the ingest-api
    /// could have made is a dead letter from the start: no retry will ever make it one. The writer
    /// trusts no body: an envelope naming another topic than the Kafka topic it was read from would
    /// let anyone who can produce to one topic store events in another.
    pub fn from_message(message: &BorrowedMessage<'_>, topic_prefix: &str, epoch: u64) -> Consumed {
        let value = message.payload();
        let bytes = value.map_or(0, <[u8]>::len) + message.key().map_or(0, <[u8]>::len);
        Consumed::from_parts(
            KafkaCoordinates {
                kafka_topic: message.topic().to_owned(),
                kafka_partition: message.partition(),
                kafka_offset: message.offset(),
            },
            value.map(<[u8]>::to_vec),
            bytes,
            topic_prefix,
            epoch,
        )
    }

    /// [`Consumed::from_message`] from the message's parts: where it was read, its value, its size.
    pub fn from_parts(
        origin: KafkaCoordinates,
        value: Option<Vec<u8>>,
        bytes: usize,
        topic_prefix: &str,
        epoch: u64,
    ) -> Consumed {
        let (kafka_topic, partition, offset) = (
            origin.kafka_topic.clone(),
            origin.kafka_partition,
            origin.kafka_offset,
        );
        let decoded =
            decode(origin, value, topic_prefix).map_err(|(raw, reason, error)| DeadLetter {
                topic: kafka_topic.strip_prefix(topic_prefix).map(str::to_owned),
                kafka_topic: kafka_topic.clone(),
                partition,
                offset,
                raw,
                reason,
                error,
                // A topic mismatch is another topic's envelope, an undecodable message no event.
                event: None,
            });
        Consumed {
            kafka_topic,
            partition,
            offset,
            epoch,
            bytes,
            decoded,
        }
    }
}

/// The event a message holds, or why it is no event (the dead letter's reason), with its bytes.
fn decode(
    origin: KafkaCoordinates,
    raw: Option<Vec<u8>>,
    topic_prefix: &str,
) -> Result<Envelope, (Option<Vec<u8>>, DeadLetterReason, String)> {
    let undecodable = DeadLetterReason::Undecodable;
    let Some(raw) = raw else {
        return Err((None, undecodable, "message has no payload".to_owned()));
    };
    let kafka_topic = origin.kafka_topic.clone();
    let event = Envelope::decode(raw, origin).map_err(|(raw, error)| {
        let error = format!("message is not a valid event envelope: {error}");
        (Some(raw), undecodable, error)
    })?;
    if kafka_topic.strip_prefix(topic_prefix) != Some(event.topic.as_str()) {
        let error = format!(
            "topic_mismatch: the envelope names topic {:?} but was read from Kafka topic {kafka_topic:?}",
            event.topic
        );
        return Err((
            Some(event.raw().to_vec()),
            DeadLetterReason::TopicMismatch,
            error,
        ));
    }
    if event.producer.is_empty() {
        let error = "message is not a valid event envelope: no producer".to_owned();
        return Err((Some(event.raw().to_vec()), undecodable, error));
    }
    Ok(event)
}

#[derive(Debug, Default)]
pub struct Batch {
    pub messages: Vec<Consumed>,
    pub started: Option<tokio::time::Instant>,
    /// The bytes of its messages ([`Consumed::bytes`]).
    pub bytes: usize,
}

/// When a batch is full: `batch_size` messages or `max_bytes` of them, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl BatchLimits {
    pub fn of(config: &eventgate_core::config::WriterConfig) -> BatchLimits {
        BatchLimits {
            max_messages: config.batch_size,
            max_bytes: config.max_batch_bytes,
        }
    }
}

impl Batch {
    pub fn push(&mut self, consumed: Consumed) {
        if self.messages.is_empty() {
            self.started = Some(tokio::time::Instant::now());
        }
        self.bytes += consumed.bytes;
        self.messages.push(consumed);
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// No more messages go in: it holds `max_messages`, or `max_bytes` of messages (a message larger
    /// than that is a batch of its own, since it closes the batch it enters).
    pub fn is_full(&self, limits: BatchLimits) -> bool {
        self.messages.len() >= limits.max_messages || self.bytes >= limits.max_bytes
    }

    pub fn clear(&mut self) {
        self.messages.clear();
        self.started = None;
        self.bytes = 0;
    }

    /// Drops the messages of partitions no longer owned under the epoch they were read in (revoked since):
    /// their next owner reads them again. Returns how many were dropped.
    pub fn retain_owned(&mut self, ownership: &Ownership) -> usize {
        let before = self.messages.len();
        self.messages
            .retain(|m| ownership.epoch(&m.kafka_topic, m.partition) == Some(m.epoch));
        self.bytes = self.messages.iter().map(|m| m.bytes).sum();
        if self.messages.is_empty() {
            self.started = None;
        }
        before - self.messages.len()
    }

    /// The offsets to commit once the batch is written, and the partitions left out.
    ///
    /// Committed: for each partition still owned under the epoch its messages were read in, one past
    /// the highest of those offsets (the batch is written, so every row up to it is stored). Left out:
    /// partitions revoked since, or revoked and assigned again — their next reader starts from the last
    /// committed offset, and committing for them would be a stale commit.
    pub fn offsets_to_commit(&self, ownership: &Ownership) -> CommitPlan {
        let mut plan = CommitPlan::default();
        for message in &self.messages {
            let key = (message.kafka_topic.clone(), message.partition);
            if ownership.epoch(&message.kafka_topic, message.partition) == Some(message.epoch) {
                let next = plan.offsets.entry(key).or_insert(0);
                *next = (*next).max(message.offset + 1);
            } else {
                plan.abandoned.insert(key);
            }
        }
        plan
    }
}

/// What a written batch commits ([`Batch::offsets_to_commit`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CommitPlan {
    /// (Kafka topic, partition) → the next offset to read.
    pub offsets: BTreeMap<(String, i32), i64>,
    /// Partitions of the batch this member no longer owns as it did when it read them.
    pub abandoned: std::collections::BTreeSet<(String, i32)>,
}

#[cfg(test)]
mod tests {
    use rdkafka::TopicPartitionList;

    use super::*;

    fn consumed(partition: i32, offset: i64, epoch: u64) -> Consumed {
        sized(partition, offset, epoch, 0)
    }

    fn sized(partition: i32, offset: i64, epoch: u64, bytes: usize) -> Consumed {
        Consumed {
            kafka_topic: "t".to_owned(),
            partition,
            offset,
            epoch,
            bytes,
            decoded: Err(DeadLetter {
                topic: None,
                kafka_topic: "t".to_owned(),
                partition,
                offset,
                raw: None,
                reason: DeadLetterReason::Undecodable,
                error: "test".to_owned(),
                event: None,
            }),
        }
    }

    fn origin(kafka_topic: &str) -> KafkaCoordinates {
        KafkaCoordinates {
            kafka_topic: kafka_topic.to_owned(),
            kafka_partition: 0,
            kafka_offset: 1,
        }
    }

    fn decode(
        kafka_topic: &str,
        raw: Option<&[u8]>,
        prefix: &str,
    ) -> Result<Envelope, (Option<Vec<u8>>, DeadLetterReason, String)> {
        super::decode(origin(kafka_topic), raw.map(<[u8]>::to_vec), prefix)
    }

    #[test]
    fn a_batch_closes_by_count_or_by_bytes() {
        let limits = BatchLimits {
            max_messages: 3,
            max_bytes: 1000,
        };
        let mut batch = Batch::default();
        batch.push(sized(0, 0, 1, 10));
        batch.push(sized(0, 1, 1, 10));
        assert!(!batch.is_full(limits));
        batch.push(sized(0, 2, 1, 10));
        assert!(batch.is_full(limits), "three messages");

        let mut batch = Batch::default();
        batch.push(sized(0, 0, 1, 600));
        assert!(!batch.is_full(limits));
        batch.push(sized(0, 1, 1, 400));
        assert_eq!(batch.bytes, 1000);
        assert!(batch.is_full(limits), "1000 bytes in two messages");
        batch.clear();
        assert_eq!(batch.bytes, 0);

        batch.push(sized(0, 0, 1, 5000));
        assert!(
            batch.is_full(limits),
            "a message over the limit is a batch of its own"
        );
    }

    #[test]
    fn a_message_is_sized_by_its_key_and_value() {
        let value = br#"{"not": "an envelope"}"#.to_vec();
        let consumed = Consumed::from_parts(
            origin("eventgate.t"),
            Some(value.clone()),
            30,
            "eventgate.",
            1,
        );
        assert_eq!(consumed.bytes, 30);
        let dead = consumed.decoded.expect_err("not an envelope");
        assert_eq!(
            dead.raw.as_deref(),
            Some(&value[..]),
            "the raw message is kept"
        );
        assert_eq!(dead.reason, DeadLetterReason::Undecodable);
        assert_eq!(dead.topic.as_deref(), Some("t"));
    }

    fn assigned(partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition("t", *partition);
        }
        list
    }

    #[test]
    fn an_envelope_is_stored_only_from_its_own_topic() {
        let envelope = serde_json::json!({
            "id": "0190a3b2-1c2d-7e3f-8a9b-0c1d2e3f4a5b",
            "topic": "audit.logs",
            "timestamp": "2025-01-15T10:00:00Z",
            "producer": "alice",
            "payload": {"event_name": "login"}
        });
        let bytes = serde_json::to_vec(&envelope).expect("JSON");
        let event =
            decode("eventgate.audit.logs", Some(&bytes), "eventgate.").expect("its own topic");
        assert_eq!(event.topic, "audit.logs");

        let (raw, reason, error) = decode("eventgate.web.events", Some(&bytes), "eventgate.")
            .expect_err("another topic's envelope");
        assert_eq!(reason, DeadLetterReason::TopicMismatch);
        assert_eq!(raw.as_deref(), Some(&bytes[..]));
        assert!(error.starts_with("topic_mismatch"), "{error}");
        assert!(
            error.contains("audit.logs") && error.contains("eventgate.web.events"),
            "{error}"
        );

        let (_, _, error) =
            decode("audit.logs", Some(&bytes), "eventgate.").expect_err("outside the prefix");
        assert!(error.starts_with("topic_mismatch"), "{error}");

        let mut anonymous = envelope.clone();
        anonymous["producer"] = serde_json::json!("");
        let bytes = serde_json::to_vec(&anonymous).expect("JSON");
        assert!(decode("eventgate.audit.logs", Some(&bytes), "eventgate.").is_err());
        assert!(decode("eventgate.audit.logs", None, "eventgate.").is_err());
        assert!(decode("eventgate.audit.logs", Some(b"garbage"), "eventgate.").is_err());
    }

    #[test]
    fn a_revoked_partition_is_neither_committed_nor_kept() {
        let mut ownership = Ownership::default();
        ownership.assign(&assigned(&[0, 1, 2]));
        let epoch = |p| ownership.epoch("t", p).expect("owned");
        let mut batch = Batch::default();
        for (partition, offset) in [(0, 10), (1, 20), (0, 11), (2, 5), (1, 21)] {
            batch.push(consumed(partition, offset, epoch(partition)));
        }
        let all = batch.offsets_to_commit(&ownership);
        assert_eq!(
            all.offsets.into_iter().collect::<Vec<_>>(),
            vec![
                (("t".to_owned(), 0), 12),
                (("t".to_owned(), 1), 22),
                (("t".to_owned(), 2), 6)
            ]
        );
        assert!(all.abandoned.is_empty());

        // Partition 1 moves to another member; partition 2 is lost and comes back (a new epoch).
        ownership.revoke(&assigned(&[1, 2]));
        ownership.assign(&assigned(&[2]));
        let plan = batch.offsets_to_commit(&ownership);
        assert_eq!(
            plan.offsets.into_iter().collect::<Vec<_>>(),
            vec![(("t".to_owned(), 0), 12)],
            "only the partition owned throughout"
        );
        assert_eq!(
            plan.abandoned.into_iter().collect::<Vec<_>>(),
            vec![("t".to_owned(), 1), ("t".to_owned(), 2)]
        );

        assert_eq!(batch.retain_owned(&ownership), 3);
        assert_eq!(batch.len(), 2);
        assert!(batch.messages.iter().all(|m| m.partition == 0));
        ownership.revoke(&assigned(&[0]));
        assert_eq!(batch.retain_owned(&ownership), 2);
        assert!(batch.is_empty() && batch.started.is_none());
    }
}
