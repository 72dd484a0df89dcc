//! Running an aggregate, and the time zone names the database knows.

use std::collections::HashMap;

use tokio::sync::OnceCell;

use eventgate_core::db::PgPool;
use eventgate_core::query::aggregate::{AggregatePlan, AggregateResult};

use super::aggregate_sql::{aggregate_sql, decode, AggregateRow};
use super::{SqlParts, StoreError};

/// Runs the plan's statement (bounded by the pool's statement timeout, like queries).
pub async fn fetch_aggregate(
    pool: &PgPool,
    topic: &str,
    plan: &AggregatePlan,
) -> Result<AggregateResult, StoreError> {
    let parts = aggregate_sql(topic, plan).map_err(|reason| {
        StoreError::Decode(format!("aggregate cannot be translated: {reason}"))
    })?;
    let rows = load_rows(pool, &parts).await?;
    decode(plan, rows).map_err(StoreError::Decode)
}

/// Runs an aggregate statement and returns its rows undecoded (tests compare them with the reference).
pub async fn load_rows(pool: &PgPool, parts: &SqlParts) -> Result<Vec<AggregateRow>, StoreError> {
    super::query(pool, parts)
        .await?
        .iter()
        .map(|row| AggregateRow::from_row(row).map_err(|e| StoreError::Decode(e.to_string())))
        .collect()
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
