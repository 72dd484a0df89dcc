//! Auto-indexes: expression indexes for the payload fields analysts actually filter and sort by, chosen
//! by the maintenance ([`super::partitions`]) from what the stats-api counted (`field_usage`).
//!
//! The rule, per topic, at each run ([`decide`]):
//! - a field counts if it is a payload field of an indexable type (what [`super::indexed_expression`]
//!   would index) that the topic does not declare indexed; declared fields are never auto-indexed;
//! - a field that has no auto-index gets one when its uses within `storage.auto_index_window` reach
//!   `storage.auto_index_min_uses`;
//! - at most `storage.auto_index_max_per_topic` per topic: the ones made already first (an index is
//!   not dropped because another field became a little more popular: each build reads the whole topic),
//!   then the most used;
//! - an auto-index is dropped once its field was not used for a whole window (or it became declared,
//!   or left the schema, or the limit went down).
//!
//! Sorts by two keys or more whose first is a payload field (`sort=source_app,-timestamp_start`) are
//! counted and chosen the same way, in the same slots: the stats-api records them under
//! [`sort_usage_key`] (`sort:source_app,-timestamp_start`: a `,` is never in a candidate field's name),
//! and their index is a composite `(topic, <key>, …, id)` ordered exactly as the page query's `ORDER BY`
//! ([`sort_index_definition`]), `<leaf>_s<hash of the definition>` on each leaf.
//!
//! The chosen fields are recorded in `auto_indexed_fields`; their expressions join the topic's declared
//! ones for the run, so the indexes are the same `<leaf>_f<hash>` a declaration would build (declaring
//! the field later keeps the index) and are built, kept and dropped by the same step. Once a run has
//! built them on every partition of the topic, `ready_at` is set, and the stats-api (which re-reads the
//! table every `stats.auto_index_refresh_ms`) compares the indexed expression in its queries.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Client;

use super::partitions::{MaintenanceReport, StoragePolicy, TopicStorage};
use crate::query::{FieldDef, FieldSource, SortKey};

/// What starts the `field` of a sort's usage (`field_usage`, `auto_indexed_fields`).
pub const SORT_KEY_PREFIX: &str = "sort:";

/// Whether a sort key could be a column of a sort index: `id`, `timestamp`, or a payload field an
/// expression index could serve (declared indexed or not).
fn sortable(field: &FieldDef) -> bool {
    match field.source {
        FieldSource::Id | FieldSource::Timestamp => true,
        FieldSource::Payload(_) => super::indexed_expression(&FieldDef {
            indexed: true,
            ..field.clone()
        })
        .is_some(),
        FieldSource::Producer | FieldSource::Items { .. } => false,
    }
}

/// The usage key of a query's order (`plan.sort`, ending with its `id` tie-breaker) when a composite
/// index could serve it: two keys or more (the tie-breaker the planner appends not counted), the first
/// a payload field, every one sortable. `sort:` then the keys as the query language writes them, the
/// appended `id` left out and, when the first key is descending, every direction reversed (a backward
/// scan of the one index serves both): `sort:source_app,-timestamp_start`.
pub fn sort_usage_key(sort: &[SortKey]) -> Option<String> {
    let mut keys = sort;
    if let [before @ .., previous, last] = sort {
        if last.field.source == FieldSource::Id && last.descending == previous.descending {
            keys = &sort[..before.len() + 1];
        }
    }
    let first = keys.first()?;
    if keys.len() < 2
        || !matches!(first.field.source, FieldSource::Payload(_))
        || !keys.iter().all(|k| sortable(&k.field))
    {
        return None;
    }
    let flip = first.descending;
    let written: Vec<String> = keys
        .iter()
        .map(|k| {
            let dash = if k.descending != flip { "-" } else { "" };
            format!("{dash}{}", k.field.name)
        })
        .collect();
    Some(format!("{SORT_KEY_PREFIX}{}", written.join(",")))
}

/// The definition of the index of a sort's usage key, `(topic, <key> [DESC], …, id [DESC])`: the page
/// query's `ORDER BY` (`ASC` is `NULLS LAST`, `DESC` `NULLS FIRST`, Postgres' defaults and the query's),
/// the `id` tie-breaker with the last key's direction. `None` when a key is not sortable in `columns`
/// ([`TopicStorage::sort_columns`]).
pub fn sort_index_definition(columns: &BTreeMap<String, String>, key: &str) -> Option<String> {
    let spec = key.strip_prefix(SORT_KEY_PREFIX)?;
    let mut parts: Vec<(bool, &String, &str)> = Vec::new();
    for entry in spec.split(',') {
        let (descending, name) = match entry.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, entry),
        };
        parts.push((descending, columns.get(name)?, name));
    }
    let first = parts.first()?;
    if parts.len() < 2 || first.2 == "id" || first.2 == "timestamp" {
        return None;
    }
    if !parts.iter().any(|p| p.2 == "id") {
        let descending = parts.last().is_some_and(|p| p.0);
        parts.push((descending, columns.get("id")?, "id"));
    }
    let columns: Vec<String> = parts
        .iter()
        .map(|(descending, column, _)| {
            format!("{column}{}", if *descending { " DESC" } else { "" })
        })
        .collect();
    Some(format!("(topic, {})", columns.join(", ")))
}

impl TopicStorage {
    /// What an auto-index of `field` (a field's name or a sort's usage key) would be made of: the
    /// field's expression, or the sort index's definition; `None` when it gets none.
    pub(crate) fn auto_candidate(&self, field: &str) -> Option<String> {
        if field.starts_with(SORT_KEY_PREFIX) {
            sort_index_definition(&self.sort_columns, field)
        } else {
            self.auto_candidates.get(field).cloned()
        }
    }
}
use super::DbError;

/// One field's use within the window, as `eventgate maintain --json` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldUse {
    pub topic: String,
    pub field: String,
    /// Uses within `storage.auto_index_window`.
    pub uses: i64,
    /// The start of the last hour it was used in (Unix seconds).
    pub last_used: i64,
    pub auto_indexed: bool,
}

/// A field's uses in the window, summed over the hours.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Usage {
    pub topic: String,
    pub field: String,
    pub uses: i64,
    pub last_used: OffsetDateTime,
}

/// A row of `auto_indexed_fields`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chosen {
    pub topic: String,
    pub field: String,
    pub last_used: OffsetDateTime,
}

/// What a run changes in `auto_indexed_fields`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Decision {
    /// Kept, with their last use (refreshed from the usage).
    pub keep: Vec<Chosen>,
    pub add: Vec<Chosen>,
    /// `(topic, field)`.
    pub remove: Vec<(String, String)>,
}

impl Decision {
    /// Topic → field → expression of every auto-index after the run.
    fn expressions(&self, policy: &StoragePolicy) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for chosen in self.keep.iter().chain(&self.add) {
            let expression = policy
                .topics
                .get(&chosen.topic)
                .and_then(|t| t.auto_candidate(&chosen.field));
            if let Some(expression) = expression {
                out.entry(chosen.topic.clone())
                    .or_default()
                    .insert(chosen.field.clone(), expression);
            }
        }
        out
    }
}

/// The rule of the module docs, on the usage of the window (older hours already left out) and the
/// auto-indexes made so far. Pure: `now` and everything else are arguments.
pub(crate) fn decide(
    policy: &StoragePolicy,
    now: OffsetDateTime,
    usage: &[Usage],
    existing: &[Chosen],
) -> Decision {
    let since = now - policy.auto_index_window.duration();
    let uses: BTreeMap<(&str, &str), &Usage> = usage
        .iter()
        .map(|u| ((u.topic.as_str(), u.field.as_str()), u))
        .collect();
    let mut decision = Decision::default();
    let made: BTreeSet<(&str, &str)> = existing
        .iter()
        .map(|c| (c.topic.as_str(), c.field.as_str()))
        .collect();
    // Most used first, then by name (a stable order for equal counts).
    let by_use = |a: &(i64, &str), b: &(i64, &str)| b.0.cmp(&a.0).then(a.1.cmp(b.1));
    for (name, topic) in &policy.topics {
        let slots = policy.auto_index_max_per_topic as usize;
        // Made before, still a candidate and used within the window.
        let mut kept: Vec<(i64, &str, OffsetDateTime)> = existing
            .iter()
            .filter(|c| &c.topic == name && topic.auto_candidate(&c.field).is_some())
            .filter_map(|c| {
                let used = uses.get(&(name.as_str(), c.field.as_str()));
                let last = used.map_or(c.last_used, |u| u.last_used.max(c.last_used));
                (last >= since).then(|| (used.map_or(0, |u| u.uses), c.field.as_str(), last))
            })
            .collect();
        kept.sort_by(|a, b| by_use(&(a.0, a.1), &(b.0, b.1)));
        kept.truncate(slots);
        let mut added: Vec<(i64, &str, OffsetDateTime)> = usage
            .iter()
            .filter(|u| &u.topic == name && topic.auto_candidate(&u.field).is_some())
            .filter(|u| u.uses >= 0 && u.uses.unsigned_abs() >= policy.auto_index_min_uses)
            .filter(|u| !made.contains(&(name.as_str(), u.field.as_str())))
            .map(|u| (u.uses, u.field.as_str(), u.last_used))
            .collect();
        added.sort_by(|a, b| by_use(&(a.0, a.1), &(b.0, b.1)));
        added.truncate(slots.saturating_sub(kept.len()));
        let chosen = |(_, field, last_used): (i64, &str, OffsetDateTime)| Chosen {
            topic: name.clone(),
            field: field.to_owned(),
            last_used,
        };
        decision.keep.extend(kept.into_iter().map(chosen));
        decision.add.extend(added.into_iter().map(chosen));
    }
    let after: BTreeSet<(&str, &str)> = decision
        .keep
        .iter()
        .map(|c| (c.topic.as_str(), c.field.as_str()))
        .collect();
    decision.remove = existing
        .iter()
        .filter(|c| !after.contains(&(c.topic.as_str(), c.field.as_str())))
        .map(|c| (c.topic.clone(), c.field.clone()))
        .collect();
    decision
}

/// The run's auto-indexes: reads the usage of the window (deleting older hours), decides, records the
/// decision in `auto_indexed_fields`, and returns the policy with their expressions added to their
/// topics' (what the index step then builds, keeps and drops) and the usage for the run's summary.
pub(crate) async fn choose(
    client: &Client,
    policy: &StoragePolicy,
    now: OffsetDateTime,
    report: &mut MaintenanceReport,
) -> Result<(StoragePolicy, Vec<FieldUse>), DbError> {
    let since = now - policy.auto_index_window.duration();
    client
        .execute("DELETE FROM field_usage WHERE hour < $1", &[&since])
        .await?;
    let usage: Vec<Usage> = client
        .query(
            "SELECT topic, field, sum(uses)::bigint, max(hour) FROM field_usage GROUP BY 1, 2",
            &[],
        )
        .await?
        .iter()
        .map(|row| Usage {
            topic: row.get(0),
            field: row.get(1),
            uses: row.get(2),
            last_used: row.get(3),
        })
        .collect();
    let existing: Vec<Chosen> = client
        .query(
            "SELECT topic, field, last_used FROM auto_indexed_fields",
            &[],
        )
        .await?
        .iter()
        .map(|row| Chosen {
            topic: row.get(0),
            field: row.get(1),
            last_used: row.get(2),
        })
        .collect();
    let decision = decide(policy, now, &usage, &existing);
    client.batch_execute("BEGIN").await?;
    let recorded = record(client, &decision, now).await;
    match recorded {
        Ok(()) => client.batch_execute("COMMIT").await?,
        Err(error) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(error);
        }
    }
    report.auto_indexes_chosen.extend(
        decision
            .add
            .iter()
            .map(|c| format!("{} {}", c.topic, c.field)),
    );
    report.auto_indexes_dropped.extend(
        decision
            .remove
            .iter()
            .map(|(topic, field)| format!("{topic} {field}")),
    );
    let expressions = decision.expressions(policy);
    let mut effective = policy.clone();
    for (topic, fields) in &expressions {
        if let Some(storage) = effective.topics.get_mut(topic) {
            for (field, expression) in fields {
                if field.starts_with(SORT_KEY_PREFIX) {
                    storage.sort_indexes.push(expression.clone());
                } else {
                    storage.field_expressions.push(expression.clone());
                }
            }
            storage.field_expressions.sort();
            storage.field_expressions.dedup();
            storage.sort_indexes.sort();
            storage.sort_indexes.dedup();
        }
    }
    let mut field_usage: Vec<FieldUse> = usage
        .iter()
        .map(|u| FieldUse {
            topic: u.topic.clone(),
            field: u.field.clone(),
            uses: u.uses,
            last_used: u.last_used.unix_timestamp(),
            auto_indexed: expressions
                .get(&u.topic)
                .is_some_and(|f| f.contains_key(&u.field)),
        })
        .collect();
    field_usage.sort_by(|a, b| b.uses.cmp(&a.uses).then(a.topic.cmp(&b.topic)));
    Ok((effective, field_usage))
}

async fn record(client: &Client, decision: &Decision, now: OffsetDateTime) -> Result<(), DbError> {
    for (topic, field) in &decision.remove {
        client
            .execute(
                "DELETE FROM auto_indexed_fields WHERE topic = $1 AND field = $2",
                &[topic, field],
            )
            .await?;
    }
    for chosen in &decision.keep {
        client
            .execute(
                "UPDATE auto_indexed_fields SET last_used = greatest(last_used, $3) \
                 WHERE topic = $1 AND field = $2",
                &[&chosen.topic, &chosen.field, &chosen.last_used],
            )
            .await?;
    }
    for chosen in &decision.add {
        client
            .execute(
                "INSERT INTO auto_indexed_fields (topic, field, chosen_at, last_used) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (topic, field) DO NOTHING",
                &[&chosen.topic, &chosen.field, &now, &chosen.last_used],
            )
            .await?;
    }
    Ok(())
}

/// After the index step succeeded: every chosen field's index exists and is valid on every partition
/// of its topic, so the stats-api may compare the indexed expression.
pub(crate) async fn mark_ready(client: &Client, now: OffsetDateTime) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE auto_indexed_fields SET ready_at = $1 WHERE ready_at IS NULL",
            &[&now],
        )
        .await?;
    Ok(())
}

/// Topic → auto-indexed fields, every topic of the policy listed (for the `eventgate_auto_indexes`
/// gauge, which then shows 0 rather than nothing).
pub(crate) fn per_topic(
    policy: &StoragePolicy,
    usage: &[FieldUse],
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = policy
        .topics
        .keys()
        .map(|topic| (topic.clone(), Vec::new()))
        .collect();
    for u in usage.iter().filter(|u| u.auto_indexed) {
        out.entry(u.topic.clone())
            .or_default()
            .push(u.field.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Catalogue, Topic};
    use crate::config::StorageConfig;
    use serde_json::json;
    use time::Duration;

    fn policy(max: u32) -> StoragePolicy {
        let topic = Topic::from_schema(
            "t",
            json!({
                "type": "object",
                "properties": {
                    "a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "boolean"},
                    "declared": {"type": "string"}, "when": {"type": "string", "format": "date-time"},
                    "obj": {"type": "object"}
                },
                "x-eventgate": {"indexed_fields": ["declared"]}
            }),
        )
        .expect("topic");
        let storage = StorageConfig {
            auto_index_max_per_topic: max,
            auto_index_min_uses: 10,
            ..StorageConfig::default()
        };
        StoragePolicy::new(&Catalogue::from_topics([topic]), &storage)
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
    }

    fn used(field: &str, uses: i64, hours_ago: i64) -> Usage {
        Usage {
            topic: "t".into(),
            field: field.into(),
            uses,
            last_used: now() - Duration::hours(hours_ago),
        }
    }

    fn made(field: &str, days_ago: i64) -> Chosen {
        Chosen {
            topic: "t".into(),
            field: field.into(),
            last_used: now() - Duration::days(days_ago),
        }
    }

    fn fields(chosen: &[Chosen]) -> Vec<&str> {
        chosen.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn only_undeclared_indexable_payload_fields_are_candidates() {
        let policy = policy(3);
        let candidates: Vec<&String> = policy.topics["t"].auto_candidates.keys().collect();
        assert_eq!(candidates, ["a", "b", "c"]);
    }

    #[test]
    fn the_most_used_fields_over_the_threshold_get_one_up_to_the_limit() {
        let usage = [
            used("a", 50, 1),
            used("b", 500, 1),
            used("c", 9, 1),
            used("declared", 10_000, 1),
            used("when", 10_000, 1),
        ];
        let decision = decide(&policy(3), now(), &usage, &[]);
        assert_eq!(
            fields(&decision.add),
            ["b", "a"],
            "c is under the threshold"
        );
        let decision = decide(&policy(1), now(), &usage, &[]);
        assert_eq!(fields(&decision.add), ["b"]);
        let decision = decide(&policy(0), now(), &usage, &[]);
        assert!(decision.add.is_empty());
    }

    #[test]
    fn made_ones_stay_while_used_and_go_after_a_whole_unused_window() {
        let usage = [used("b", 1_000, 1), used("a", 2, 1)];
        // `a` was used (under the threshold): kept; `c` not for 8 days: dropped; `b` takes its slot.
        let existing = [made("a", 2), made("c", 8)];
        let decision = decide(&policy(2), now(), &usage, &existing);
        assert_eq!(fields(&decision.keep), ["a"]);
        assert_eq!(fields(&decision.add), ["b"]);
        assert_eq!(decision.remove, [("t".to_owned(), "c".to_owned())]);
        // Made ones keep their slot against a more used newcomer.
        let decision = decide(&policy(1), now(), &usage, &[made("a", 0)]);
        assert_eq!(fields(&decision.keep), ["a"]);
        assert!(decision.add.is_empty());
        // Declared meanwhile, or no longer in the schema: the row goes (a declared index stays).
        let existing = [made("declared", 0), made("gone", 0)];
        let decision = decide(&policy(3), now(), &[], &existing);
        assert_eq!(decision.remove.len(), 2);
        // 0 turns them off: every one goes.
        let decision = decide(&policy(0), now(), &usage, &[made("a", 0)]);
        assert_eq!(decision.remove.len(), 1);
    }

    #[test]
    fn sorts_by_two_keys_get_a_composite_index_ordered_as_the_query_in_the_same_slots() {
        use crate::db::typed_value::LiteralPaths;
        use crate::query::FieldType;
        let policy = policy(2);
        let topic = &policy.topics["t"];
        let a = LiteralPaths::typed_value(FieldType::String, &["a".to_owned()]).expect("a");
        let b = LiteralPaths::typed_value(FieldType::Integer, &["b".to_owned()]).expect("b");
        let d = LiteralPaths::typed_value(FieldType::String, &["declared".to_owned()]).expect("d");
        assert_eq!(
            topic.auto_candidate("sort:a,-b"),
            Some(format!("(topic, {a}, {b} DESC, id DESC)"))
        );
        assert_eq!(
            topic.auto_candidate("sort:declared,timestamp,id"),
            Some(format!("(topic, {d}, received_at, id)"))
        );
        for none in [
            "sort:a",
            "sort:timestamp,a",
            "sort:a,when",
            "sort:a,obj",
            "a,-b",
            "sort:a,,b",
        ] {
            assert_eq!(topic.auto_candidate(none), None, "{none}");
        }
        let usage = [
            used("sort:a,-b", 500, 1),
            used("b", 100, 1),
            used("c", 50, 1),
        ];
        let decision = decide(&policy, now(), &usage, &[]);
        assert_eq!(fields(&decision.add), ["sort:a,-b", "b"]);
        // Unused for a whole window: dropped like a field's.
        let decision = decide(&policy, now(), &[], &[made("sort:a,-b", 8)]);
        assert_eq!(decision.remove, [("t".to_owned(), "sort:a,-b".to_owned())]);
    }

    #[test]
    fn a_sort_is_counted_under_one_key_whichever_way_it_is_written() {
        use crate::query::{plan, CursorKey, QueryLimits, QueryRequest};
        let catalogue = Catalogue::from_topics([Topic::from_schema(
            "t",
            json!({"type": "object", "properties": {
                "a": {"type": "string"}, "b": {"type": "integer"},
                "when": {"type": "string", "format": "date-time"}}}),
        )
        .expect("topic")]);
        let fields = &catalogue.get("t").expect("t").fields;
        let key_of = |sort: serde_json::Value| {
            let request = QueryRequest::from_json(&json!({ "sort": sort })).expect("request");
            let plan = plan(
                "t",
                &request,
                fields,
                &QueryLimits::default(),
                &CursorKey::new(b"k"),
            )
            .expect("plan");
            sort_usage_key(&plan.sort)
        };
        let expected = Some("sort:a,-b".to_owned());
        assert_eq!(key_of(json!(["a", "-b"])), expected);
        assert_eq!(key_of(json!(["a", "-b", "-id"])), expected);
        assert_eq!(
            key_of(json!(["-a", "b"])),
            expected,
            "the same index, backwards"
        );
        assert_eq!(
            key_of(json!(["a", "-b", "id"])),
            Some("sort:a,-b,id".to_owned())
        );
        assert_eq!(
            key_of(json!(["a", "-timestamp"])),
            Some("sort:a,-timestamp".to_owned())
        );
        for none in [
            json!(["a"]),
            json!(["-timestamp", "a"]),
            json!(["a", "when"]),
            json!(["a", "producer"]),
        ] {
            assert_eq!(key_of(none.clone()), None, "{none}");
        }
    }
}
