//! The writer's side of the consumer group's rebalances.
//!
//! The group uses the cooperative-sticky assignor: a rebalance revokes only the partitions that move,
//! and the writer keeps consuming and writing the others throughout.
//!
//! **A revoked partition's messages in hand are abandoned, never committed.** The revocation is not held
//! up to finish the writes in progress: the messages of revoked partitions still being collected are
//! dropped, the batches already being written are written to the end (a transaction is not torn
//! down halfway), and none of their offsets of a revoked partition is committed. The next owner reads
//! those messages again from the last committed offset, and the unique event key makes the second
//! write a no-op (`ON CONFLICT (id, topic, producer) DO NOTHING`). Why not finish and commit before letting the partition go:
//! librdkafka runs the revocation callback inside `recv()`, on the task that drives the writes, so
//! waiting there for them cannot work, and deferring the revocation would hold up the whole group's
//! rebalance for as long as a write takes — in the case that matters most, a database outage, for
//! nothing, since the write cannot finish anyway. Abandoning costs at most the batches in hand of the
//! partitions that move, read and written again once.
//!
//! **No stale commit.** Each assignment of a partition gets a new epoch; every consumed message carries
//! the epoch of its partition when it was read, and a batch commits a partition's offset only while
//! the partition is still owned under that epoch. A partition revoked (or lost, when the member was
//! ejected) and assigned again in the meantime is read again from its committed offset, so the earlier
//! batch's offsets are not committed for it either. Commits and rebalance callbacks both run on the
//! writer's task (callbacks only inside `recv()`, commits between two polls), so no revocation can slip
//! in between the check and the commit. A committed offset therefore never runs ahead of stored rows,
//! and no commit is issued for a partition this member does not own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::TopicPartitionList;

use crate::metrics::WriterMetrics;

/// The partitions this member owns and since which assignment, shared by the rebalance callbacks and
/// the writer's loop.
#[derive(Debug, Default)]
pub struct Ownership {
    /// Kafka topic → partition → the epoch of the partition's current assignment, for each owned one.
    owned: HashMap<String, HashMap<i32, u64>>,
    next_epoch: u64,
    /// Revocations seen so far; the loop drops revoked partitions' messages when it changes.
    revocations: u64,
    /// Whether the writer paused its partitions (a write is stalled): partitions assigned meanwhile are
    /// paused too, so they deliver nothing the writer has no room for.
    paused: bool,
}

impl Ownership {
    /// The epoch of the partition's current assignment; `None` when this member does not own it.
    pub fn epoch(&self, topic: &str, partition: i32) -> Option<u64> {
        self.owned.get(topic)?.get(&partition).copied()
    }

    pub fn revocations(&self) -> u64 {
        self.revocations
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub(crate) fn assign(&mut self, partitions: &TopicPartitionList) {
        for element in partitions.elements() {
            self.next_epoch += 1;
            self.owned
                .entry(element.topic().to_owned())
                .or_default()
                .insert(element.partition(), self.next_epoch);
        }
    }

    pub(crate) fn revoke(&mut self, partitions: &TopicPartitionList) {
        for element in partitions.elements() {
            if let Some(partitions) = self.owned.get_mut(element.topic()) {
                partitions.remove(&element.partition());
            }
        }
        self.revocations += 1;
    }
}

/// A handle on [`Ownership`]; the lock is only ever held for a lookup or an update, never across an
/// await.
#[derive(Debug, Clone, Default)]
pub struct SharedOwnership(Arc<Mutex<Ownership>>);

impl SharedOwnership {
    pub fn lock(&self) -> MutexGuard<'_, Ownership> {
        // Poisoned only if an update panicked half-way; the map is still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hooks into librdkafka's rebalance events: keeps [`Ownership`] true, pauses partitions assigned while
/// the writer is paused, logs, and keeps the assignment gauge right.
pub struct WriterContext {
    pub(crate) metrics: Arc<WriterMetrics>,
    pub(crate) ownership: SharedOwnership,
}

impl ClientContext for WriterContext {
    /// librdkafka's statistics (every `telemetry.kafka_stats_interval_ms`): the consumer lag gauges.
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.metrics.record_statistics(&statistics);
    }
}

impl ConsumerContext for WriterContext {
    /// Before librdkafka hands the partitions over or takes them: from here on, the loop neither commits
    /// nor keeps messages of a revoked partition.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => self.ownership.lock().assign(partitions),
            Rebalance::Revoke(partitions) => {
                self.ownership.lock().revoke(partitions);
                tracing::info!(
                    kafka.partitions = %partition_names(partitions),
                    // Lost: the member was ejected (session or poll interval exceeded), the partitions
                    // may belong to another member already.
                    lost = consumer.assignment_lost(),
                    "partitions revoked; their messages in hand are left to the next owner"
                );
            }
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                if self.ownership.lock().paused {
                    if let Err(error) = consumer.pause(partitions) {
                        tracing::warn!(%error, "cannot pause newly assigned partitions");
                    }
                }
                // The cooperative protocol's second round often assigns nothing new.
                if partitions.count() > 0 {
                    tracing::info!(
                        kafka.partitions = %partition_names(partitions),
                        "partitions assigned"
                    );
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
        // The cooperative protocol hands over increments: the whole assignment is librdkafka's.
        let owned = consumer
            .assignment()
            .map_or(0, |assignment| assignment.count());
        self.metrics.assigned_partitions.set(owned as i64);
    }
}

/// `topic[partition]` of each partition of the list, for the logs.
fn partition_names(partitions: &TopicPartitionList) -> String {
    partitions
        .elements()
        .iter()
        .map(|element| format!("{}[{}]", element.topic(), element.partition()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(partitions: &[(&str, i32)]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        list
    }

    #[test]
    fn each_assignment_of_a_partition_has_a_new_epoch_and_a_revocation_ends_it() {
        let mut ownership = Ownership::default();
        ownership.assign(&list(&[("t", 0), ("t", 1)]));
        let first = ownership.epoch("t", 0).expect("owned");
        assert!(ownership.epoch("t", 1).is_some());
        assert_eq!(ownership.epoch("t", 2), None);

        ownership.revoke(&list(&[("t", 0)]));
        assert_eq!(ownership.epoch("t", 0), None);
        assert!(ownership.epoch("t", 1).is_some(), "only the revoked one");
        assert_eq!(ownership.revocations(), 1);

        ownership.assign(&list(&[("t", 0)]));
        let again = ownership.epoch("t", 0).expect("owned again");
        assert_ne!(first, again, "assigned again: a new epoch");
    }
}
