//! Auto-indexes, the stats-api's share (docs/OPERATIONS.md "Auto-indexes"; the rule itself is
//! `eventgate_core::db::auto_index`, run by the maintenance):
//! - [`FieldUsage::record`] counts, per topic, the payload fields a query filters by with equality,
//!   `_in` or a range, or sorts by — fields the topic does not declare indexed, of a type an expression
//!   index can serve. In memory, at most [`MAX_ENTRIES`] distinct (topic, field) pairs between two
//!   flushes (more are not counted, and counted as such); every `stats.field_usage_flush_ms` the counts
//!   are added to `field_usage` (on `stats.usage_database_url`, else the stats-api's own database).
//!   A sort by two keys or more led by a payload field counts too, as one entry under its usage key
//!   (`sort:source_app,-timestamp_start`, `eventgate_core::db::auto_index::sort_usage_key`: a `,` is in
//!   no candidate field's name), within the same bound.
//! - [`FieldUsage::mark_indexed`] treats the fields the maintenance auto-indexed (`auto_indexed_fields`,
//!   once their indexes are ready) as indexed, so the SQL compares the indexed expression; and the
//!   payload keys of a sort whose composite index is ready, so its `ORDER BY` is the index's. The set is
//!   read again every `stats.auto_index_refresh_ms` by a task of its own: a request only reads the set
//!   it finds, never waits for the database.
//!
//! The stats-api's one write. Its role is read-only by default (`default_transaction_read_only`), so the
//! flush opens a `READ WRITE` transaction; a read replica refuses that (and every write): then the counts
//! of that flush are dropped, the first refusal is logged as a warning (again only after a flush
//! succeeded), and every one is counted (`eventgate_stats_field_usage_flushes_total{outcome}`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Registry};

use eventgate_core::db::auto_index::sort_usage_key;
use eventgate_core::db::PgPool;
use eventgate_core::metrics::counter_vec;
use eventgate_core::query::{FieldDef, FieldSource, FilterOp, QueryPlan};

/// Distinct (topic, field) pairs counted between two flushes. Fields come from the topics' schemas, so
/// the real number is far lower; the bound keeps memory flat whatever the schemas hold.
pub const MAX_ENTRIES: usize = 1_000;

type Key = (String, String);

pub struct FieldUsage {
    counts: Mutex<HashMap<Key, i64>>,
    /// (topic, field) auto-indexed and ready, replaced whole by the refresh.
    auto_indexed: RwLock<Arc<HashSet<Key>>>,
    /// Whether the last failure was logged already (cleared by a successful flush).
    warned: AtomicBool,
    flushes: IntCounterVec,
    overflow: IntCounter,
}

impl FieldUsage {
    pub fn new(registry: &Registry) -> FieldUsage {
        let flushes = counter_vec(
            registry,
            "eventgate_stats_field_usage_flushes_total",
            "Writes of the counted field usage to field_usage, by outcome (ok, read_only: a replica refused it, failed)",
            &["outcome"],
        );
        for outcome in ["ok", "read_only", "failed"] {
            flushes.with_label_values(&[outcome]);
        }
        let overflow = IntCounter::new(
            "eventgate_stats_field_usage_overflow_total",
            "Field uses not counted because the in-memory table was full (stats-api field_usage::MAX_ENTRIES)",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(overflow.clone()))
            .expect("metric registered once");
        FieldUsage {
            counts: Mutex::new(HashMap::new()),
            auto_indexed: RwLock::new(Arc::new(HashSet::new())),
            warned: AtomicBool::new(false),
            flushes,
            overflow,
        }
    }

    /// Counts the fields of `plan` an expression index could serve. Call it before
    /// [`FieldUsage::mark_indexed`], which makes auto-indexed fields look declared.
    pub fn record(&self, topic: &str, plan: &QueryPlan) {
        let filtered = plan
            .filters
            .iter()
            .filter(|f| {
                matches!(
                    f.op,
                    FilterOp::Eq(_)
                        | FilterOp::In { .. }
                        | FilterOp::Gt(_)
                        | FilterOp::Gte(_)
                        | FilterOp::Lt(_)
                        | FilterOp::Lte(_)
                        | FilterOp::Between(..)
                )
            })
            .map(|f| &f.field);
        let sorted = plan.sort.iter().map(|k| &k.field);
        let sort_key = sort_usage_key(&plan.sort);
        let mut fields: Vec<&str> = filtered
            .chain(sorted)
            .filter(|f| indexable(f))
            .map(|f| f.name.as_str())
            .chain(sort_key.as_deref())
            .collect();
        // One use per query and field, however often it appears in it.
        fields.sort_unstable();
        fields.dedup();
        if fields.is_empty() {
            return;
        }
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        for field in fields {
            let key = (topic.to_owned(), field.to_owned());
            if let Some(n) = counts.get_mut(&key) {
                *n += 1;
            } else if counts.len() < MAX_ENTRIES {
                counts.insert(key, 1);
            } else {
                self.overflow.inc();
            }
        }
    }

    /// Marks the auto-indexed fields of `plan` indexed: the SQL then compares their index expression.
    pub fn mark_indexed(&self, topic: &str, plan: &mut QueryPlan) {
        let Ok(set) = self.auto_indexed.read().map(|s| Arc::clone(&s)) else {
            return;
        };
        if set.is_empty() {
            return;
        }
        // A sort whose composite index is ready: its keys are written as the index's expressions.
        if let Some(key) = sort_usage_key(&plan.sort) {
            if set.contains(&(topic.to_owned(), key)) {
                for sort in &mut plan.sort {
                    if matches!(sort.field.source, FieldSource::Payload(_)) {
                        sort.field.indexed = true;
                    }
                }
            }
        }
        let fields = plan
            .filters
            .iter_mut()
            .map(|f| &mut f.field)
            .chain(plan.sort.iter_mut().map(|k| &mut k.field));
        for field in fields {
            if indexable(field) && set.contains(&(topic.to_owned(), field.name.clone())) {
                field.indexed = true;
            }
        }
    }

    /// The counts so far, taken out.
    fn take(&self) -> HashMap<Key, i64> {
        self.counts
            .lock()
            .map(|mut counts| std::mem::take(&mut *counts))
            .unwrap_or_default()
    }

    /// Adds the counts to `field_usage` in the current hour.
    pub async fn flush(&self, pool: &PgPool) {
        let counts = self.take();
        if counts.is_empty() {
            return;
        }
        match write_usage(pool, counts).await {
            Ok(()) => {
                self.flushes.with_label_values(&["ok"]).inc();
                self.warned.store(false, Ordering::Relaxed);
            }
            Err(error) => {
                let read_only = is_read_only(&error);
                self.flushes
                    .with_label_values(&[if read_only { "read_only" } else { "failed" }])
                    .inc();
                if !self.warned.swap(true, Ordering::Relaxed) {
                    if read_only {
                        tracing::warn!(
                            %error,
                            "field usage not recorded: the database is read-only (a replica?); set \
                             stats.usage_database_url to the primary for auto-indexes (logged once)"
                        );
                    } else {
                        tracing::warn!(%error, "field usage not recorded (logged once until a flush succeeds)");
                    }
                }
            }
        }
    }

    /// Reads the ready auto-indexed fields; on failure the set in use stays.
    pub async fn refresh(&self, pool: &PgPool) {
        match read_auto_indexed(pool).await {
            Ok(set) => {
                if let Ok(mut current) = self.auto_indexed.write() {
                    *current = Arc::new(set);
                }
            }
            Err(error) => tracing::debug!(%error, "auto-indexed fields not read again"),
        }
    }

    /// Flushes every `flush_every` on `usage_pool` and refreshes every `refresh_every` on `pool`, each
    /// on a task of its own, for as long as the runtime runs.
    pub fn spawn(
        self: &Arc<Self>,
        pool: PgPool,
        usage_pool: PgPool,
        flush_every: Duration,
        refresh_every: Duration,
    ) {
        let usage = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(flush_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                usage.flush(&usage_pool).await;
            }
        });
        let usage = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(refresh_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                usage.refresh(&pool).await;
            }
        });
    }
}

/// A payload field an expression index could serve that the topic does not declare indexed (an
/// auto-indexed one counts: its uses keep its index).
fn indexable(field: &FieldDef) -> bool {
    if field.indexed || !matches!(field.source, FieldSource::Payload(_)) {
        return false;
    }
    let declared_like = FieldDef {
        indexed: true,
        ..field.clone()
    };
    eventgate_core::db::indexed_expression(&declared_like).is_some()
}

#[derive(Debug, thiserror::Error)]
enum FlushError {
    #[error("no connection: {0}")]
    Pool(String),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// A replica refuses a read-write transaction (0A000 during recovery) or a write in a read-only one
/// (25006).
fn is_read_only(error: &FlushError) -> bool {
    use tokio_postgres::error::SqlState;
    match error {
        FlushError::Db(e) => {
            e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)
                || e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
        }
        FlushError::Pool(_) => false,
    }
}

const ADD_USAGE: &str = "INSERT INTO field_usage (topic, field, hour, uses) \
     SELECT t, f, date_trunc('hour', now(), 'UTC'), n \
     FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(t, f, n) \
     ON CONFLICT (topic, field, hour) DO UPDATE SET uses = field_usage.uses + EXCLUDED.uses";

async fn write_usage(pool: &PgPool, counts: HashMap<Key, i64>) -> Result<(), FlushError> {
    let conn = pool
        .get()
        .await
        .map_err(|e| FlushError::Pool(e.to_string()))?;
    let mut topics = Vec::with_capacity(counts.len());
    let mut fields = Vec::with_capacity(counts.len());
    let mut uses = Vec::with_capacity(counts.len());
    // In key order, so two instances' flushes lock the rows in the same order (no deadlock).
    let mut sorted: Vec<(Key, i64)> = counts.into_iter().collect();
    sorted.sort_unstable();
    for ((topic, field), n) in sorted {
        topics.push(topic);
        fields.push(field);
        uses.push(n);
    }
    // The role's sessions are read-only by default: this transaction alone may write.
    conn.batch_execute("BEGIN READ WRITE").await?;
    let written = conn.execute(ADD_USAGE, &[&topics, &fields, &uses]).await;
    match written {
        Ok(_) => {
            conn.batch_execute("COMMIT").await?;
            Ok(())
        }
        Err(error) => {
            let _ = conn.batch_execute("ROLLBACK").await;
            Err(error.into())
        }
    }
}

async fn read_auto_indexed(pool: &PgPool) -> Result<HashSet<Key>, FlushError> {
    let conn = pool
        .get()
        .await
        .map_err(|e| FlushError::Pool(e.to_string()))?;
    let rows = conn
        .query(
            "SELECT topic, field FROM auto_indexed_fields WHERE ready_at IS NOT NULL",
            &[],
        )
        .await?;
    let mut set = HashSet::with_capacity(rows.len());
    for row in rows {
        set.insert((row.try_get(0)?, row.try_get(1)?));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventgate_core::query::{plan, CursorKey, FieldCatalogue, QueryLimits, QueryRequest};
    use serde_json::json;

    fn fields() -> FieldCatalogue {
        let mut fields = FieldCatalogue::from_schema(&json!({
            "type": "object",
            "properties": {
                "tenant": {"type": "string"}, "app": {"type": "string"}, "n": {"type": "integer"},
                "when": {"type": "string", "format": "date-time"},
                "jobs": {"type": "array", "items": {"type": "object", "properties": {"s": {"type": "string"}}}}
            }
        }));
        fields.mark_indexed(&["app".to_owned()]).expect("indexable");
        fields
    }

    fn plan_of(request: serde_json::Value) -> QueryPlan {
        let request = QueryRequest::from_json(&request).expect("request");
        plan(
            "t",
            &request,
            &fields(),
            &QueryLimits::default(),
            &CursorKey::new(b"a-key-of-the-tests"),
        )
        .expect("plan")
    }

    #[test]
    fn only_undeclared_indexable_fields_filtered_or_sorted_by_are_counted() {
        let usage = FieldUsage::new(&Registry::new());
        usage.record(
            "t",
            &plan_of(json!({
                "filter": {"tenant": "a", "app": "x", "n_gte": 3, "when_gte": "2026-01-01",
                           "jobs[].s": "ok", "producer": "p", "tenant_contains": "z"},
                "sort": ["n", "-timestamp"]
            })),
        );
        usage.record("t", &plan_of(json!({"filter": {"tenant_ne": "a"}})));
        let mut counted: Vec<(Key, i64)> = usage.take().into_iter().collect();
        counted.sort();
        assert_eq!(
            counted,
            [
                (("t".to_owned(), "n".to_owned()), 1),
                (("t".to_owned(), "sort:n,-timestamp".to_owned()), 1),
                (("t".to_owned(), "tenant".to_owned()), 1)
            ]
        );
    }

    #[test]
    fn sorts_by_two_keys_led_by_a_payload_field_are_counted_and_marked_once_indexed() {
        let usage = FieldUsage::new(&Registry::new());
        // `app` is declared: the sort counts all the same; `n` counts as a field too.
        usage.record("t", &plan_of(json!({"sort": ["app", "-n"]})));
        usage.record("t", &plan_of(json!({"sort": ["-app", "n", "id"]})));
        usage.record("t", &plan_of(json!({"sort": ["-timestamp", "app"]})));
        usage.record("t", &plan_of(json!({"sort": ["app"]})));
        let mut counted: Vec<(Key, i64)> = usage.take().into_iter().collect();
        counted.sort();
        assert_eq!(
            counted,
            [
                (("t".to_owned(), "n".to_owned()), 2),
                (("t".to_owned(), "sort:app,-n".to_owned()), 2)
            ]
        );
        if let Ok(mut set) = usage.auto_indexed.write() {
            *set = Arc::new(HashSet::from([("t".to_owned(), "sort:app,-n".to_owned())]));
        }
        let mut plan = plan_of(json!({"sort": ["app", "-n"], "filter": {"n": 1}}));
        usage.mark_indexed("t", &mut plan);
        let indexed: Vec<bool> = plan.sort.iter().map(|k| k.field.indexed).collect();
        assert_eq!(indexed, [true, true, false], "the payload keys, not the id");
        assert!(!plan.filters[0].field.indexed, "a filter on n is not");
    }

    #[test]
    fn the_table_is_bounded() {
        let usage = FieldUsage::new(&Registry::new());
        let plan = plan_of(json!({"filter": {"tenant": "a"}}));
        for i in 0..MAX_ENTRIES + 5 {
            usage.record(&format!("t{i}"), &plan);
        }
        assert_eq!(usage.take().len(), MAX_ENTRIES);
        assert_eq!(usage.overflow.get(), 5);
    }

    #[test]
    fn auto_indexed_fields_are_marked_indexed() {
        let usage = FieldUsage::new(&Registry::new());
        if let Ok(mut set) = usage.auto_indexed.write() {
            *set = Arc::new(HashSet::from([("t".to_owned(), "tenant".to_owned())]));
        }
        let mut plan = plan_of(json!({"filter": {"tenant": "a", "n": 1}}));
        usage.mark_indexed("t", &mut plan);
        let indexed: Vec<(&str, bool)> = plan
            .filters
            .iter()
            .map(|f| (f.field.name.as_str(), f.field.indexed))
            .collect();
        assert_eq!(indexed, [("n", false), ("tenant", true)]);
        // Another topic's field of that name is not.
        let mut plan = plan_of(json!({"filter": {"tenant": "a"}}));
        usage.mark_indexed("u", &mut plan);
        assert!(!plan.filters[0].field.indexed);
    }
}
