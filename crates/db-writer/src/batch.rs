//! A batch of Kafka messages on its way to Postgres, and the offsets it will commit once written.

use std::collections::BTreeMap;

use rdkafka::message::{BorrowedMessage, Message};

use eventgate_core::envelope::Event;

use crate::db::DeadLetter;

/// One consumed message, decoded or not.
#[derive(Debug)]
pub struct Consumed {
    pub kafka_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub decoded: Result<Event, DeadLetter>,
}

impl Consumed {
    /// Decodes a message. One that is not a valid envelope is a dead letter from the start: no retry
    /// will ever make it decodable.
    pub fn from_message(message: &BorrowedMessage<'_>, topic_prefix: &str) -> Consumed {
        let kafka_topic = message.topic().to_owned();
        let partition = message.partition();
        let offset = message.offset();
        let raw = message.payload();
        let decoded = match raw.map(Event::from_json_bytes) {
            Some(Ok(event)) => Ok(event),
            failure => Err(DeadLetter {
                topic: kafka_topic.strip_prefix(topic_prefix).map(str::to_owned),
                kafka_topic: kafka_topic.clone(),
                partition,
                offset,
                raw: raw.map(<[u8]>::to_vec),
                error: match failure {
                    Some(Err(error)) => format!("message is not a valid event envelope: {error}"),
                    _ => "message has no payload".to_owned(),
                },
            }),
        };
        Consumed {
            kafka_topic,
            partition,
            offset,
            decoded,
        }
    }
}

#[derive(Debug, Default)]
pub struct Batch {
    pub messages: Vec<Consumed>,
    pub started: Option<tokio::time::Instant>,
}

impl Batch {
    pub fn push(&mut self, consumed: Consumed) {
        if self.messages.is_empty() {
            self.started = Some(tokio::time::Instant::now());
        }
        self.messages.push(consumed);
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn clear(&mut self) {
        self.messages.clear();
        self.started = None;
    }

    /// The offsets to commit once the batch is written: for each partition, one past the highest offset.
    pub fn next_offsets(&self) -> BTreeMap<(String, i32), i64> {
        let mut offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for message in &self.messages {
            let next = offsets
                .entry((message.kafka_topic.clone(), message.partition))
                .or_insert(0);
            *next = (*next).max(message.offset + 1);
        }
        offsets
    }
}
