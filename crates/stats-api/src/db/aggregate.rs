//! Running an aggregate, and the time zone names the database knows.

use std::collections::HashMap;

use futures_util::{pin_mut, TryStreamExt};
use tokio::sync::OnceCell;

use eventgate_core::db::PgPool;
use eventgate_core::query::aggregate::{AggregatePlan, AggregateResult};

use super::aggregate_sql::{aggregate_sql, decode, AggregateRow};
use super::{SqlParts, StoreError};

/// Runs the plan's statement (bounded by the pool's statement timeout, like queries). The groups are
/// read as Postgres sends them until their text would pass `max_bytes` (at least one group): a group
/// key can be a long free-text value. Whether groups were left out shows in the answer as `has_more`
/// (the number of groups in all, `total.groups`, comes with every row). Returns the result and whether
/// the budget cut it.
pub async fn fetch_aggregate(
    pool: &PgPool,
    topic: &str,
    plan: &AggregatePlan,
    max_bytes: usize,
) -> Result<(AggregateResult, bool), StoreError> {
    let parts = aggregate_sql(topic, plan).map_err(|reason| {
        StoreError::Decode(format!("aggregate cannot be translated: {reason}"))
    })?;
    let (rows, cut) = load_rows_within(pool, &parts, max_bytes).await?;
    Ok((decode(plan, rows).map_err(StoreError::Decode)?, cut))
}

/// Runs an aggregate statement and returns its rows undecoded (tests compare them with the reference).
pub async fn load_rows(pool: &PgPool, parts: &SqlParts) -> Result<Vec<AggregateRow>, StoreError> {
    Ok(load_rows_within(pool, parts, usize::MAX).await?.0)
}

/// The rows of an aggregate statement until the groups' text passes `max_bytes`: the totals row (the
/// statement's first) and at least one group always come. `true` when rows were left unread.
async fn load_rows_within(
    pool: &PgPool,
    parts: &SqlParts,
    max_bytes: usize,
) -> Result<(Vec<AggregateRow>, bool), StoreError> {
    let conn = pool.get().await?;
    let stream = conn.query_typed_raw(&parts.sql, parts.params()).await?;
    pin_mut!(stream);
    let mut rows = Vec::new();
    let mut groups = 0;
    let mut bytes = 0usize;
    while let Some(row) = stream.try_next().await? {
        let row = AggregateRow::from_row(&row).map_err(|e| StoreError::Decode(e.to_string()))?;
        if !row.is_total {
            bytes = bytes.saturating_add(answer_bytes(&row));
            if groups > 0 && bytes > max_bytes {
                return Ok((rows, true));
            }
            groups += 1;
        }
        rows.push(row);
    }
    Ok((rows, false))
}

/// About what a group takes in the answer: its cells' text, quoted, with a field name each.
fn answer_bytes(row: &AggregateRow) -> usize {
    row.cells
        .iter()
        .map(|cell| cell.as_ref().map_or(4, String::len) + 24)
        .sum::<usize>()
        + 40
}

/// The database's time zone names, lower-cased, to their own spelling. The names are those of the
/// server's tz database (what `date_trunc` will interpret), the same on every connection: loaded once per
/// process, on first use; a failed load is retried by the next request.
static TIME_ZONES: OnceCell<HashMap<String, String>> = OnceCell::const_new();

/// The database's spelling of a time zone name (matched case-insensitively), `None` when it knows no
/// such zone.
pub async fn time_zone_spelling(pool: &PgPool, name: &str) -> Result<Option<String>, StoreError> {
    let zones = TIME_ZONES
        .get_or_try_init(|| async {
            let conn = pool.get().await?;
            let rows = conn
                .query("SELECT name FROM pg_timezone_names", &[])
                .await?;
            let mut zones = HashMap::with_capacity(rows.len());
            for row in rows {
                let name: String = row.try_get(0)?;
                zones.insert(name.to_ascii_lowercase(), name);
            }
            Ok::<_, StoreError>(zones)
        })
        .await?;
    Ok(zones.get(&name.to_ascii_lowercase()).cloned())
}
