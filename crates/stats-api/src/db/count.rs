//! The total of a query (`count`, `Prefer: count=…`, and the `page` form): how many events match its
//! filters (restrictions included, the cursor and the page not), counted exactly (`count(*)`) or
//! estimated by the planner (`EXPLAIN`'s row estimate of the same `WHERE`).
//!
//! An exact count reads every matching row, so it is bounded like every statement by the statement
//! timeout (`stats.statement_timeout_ms`); when it runs out, the answer is the planner's estimate,
//! marked as not exact (`total_exact: false`), rather than an error: the page itself was fine.

use eventgate_core::db::PgPool;
use eventgate_core::query::{CountMode, QueryPlan};
use serde_json::Value;

use super::query_sql::{Bind, SqlBuilder, SqlParts};
use super::StoreError;

/// `estimated` counts exactly when the planner expects at most this many rows (cheap enough to read),
/// and answers the estimate beyond (PostgREST's `estimated`).
pub const EXACT_BELOW: u64 = 10_000;

/// A query's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Total {
    pub total: u64,
    /// Counted (`count(*)`) rather than estimated.
    pub exact: bool,
    /// An exact count was asked for and ran out of the statement timeout: `total` is the estimate.
    pub timed_out: bool,
}

/// `WHERE topic = $1 AND <filters>`: the page query's conditions without the cursor.
fn matching(b: &mut SqlBuilder, topic: &str, plan: &QueryPlan) {
    b.push(" FROM events WHERE topic = ");
    b.bind(Bind::Text(topic.to_owned()), "::text");
    for filter in &plan.filters {
        b.push(" AND ");
        b.filter(filter);
    }
}

/// `SELECT count(*) FROM events WHERE …`.
pub fn count_sql(topic: &str, plan: &QueryPlan) -> SqlParts {
    let mut b = SqlBuilder::default();
    b.push("SELECT count(*)");
    matching(&mut b, topic, plan);
    b.finish()
}

/// `EXPLAIN (FORMAT JSON) SELECT 1 FROM events WHERE …`: the planner's row estimate, nothing read.
pub fn estimate_sql(topic: &str, plan: &QueryPlan) -> SqlParts {
    let mut b = SqlBuilder::default();
    b.push("EXPLAIN (FORMAT JSON) SELECT 1");
    matching(&mut b, topic, plan);
    b.finish()
}

/// The total of `plan`'s query as `mode` asks.
pub async fn total(
    pool: &PgPool,
    topic: &str,
    plan: &QueryPlan,
    mode: CountMode,
) -> Result<Total, StoreError> {
    let estimated = |total| Total {
        total,
        exact: false,
        timed_out: false,
    };
    match mode {
        CountMode::Planned => Ok(estimated(estimate(pool, topic, plan).await?)),
        CountMode::Estimated => {
            let guess = estimate(pool, topic, plan).await?;
            if guess > EXACT_BELOW {
                return Ok(estimated(guess));
            }
            exact_or_estimate(pool, topic, plan).await
        }
        CountMode::Exact => exact_or_estimate(pool, topic, plan).await,
    }
}

async fn exact_or_estimate(
    pool: &PgPool,
    topic: &str,
    plan: &QueryPlan,
) -> Result<Total, StoreError> {
    match exact(pool, topic, plan).await {
        Ok(total) => Ok(Total {
            total,
            exact: true,
            timed_out: false,
        }),
        Err(StoreError::Timeout(error)) => {
            tracing::info!(topic, %error, "the exact count ran out of the statement timeout; answering the estimate");
            Ok(Total {
                total: estimate(pool, topic, plan).await?,
                exact: false,
                timed_out: true,
            })
        }
        Err(other) => Err(other),
    }
}

async fn exact(pool: &PgPool, topic: &str, plan: &QueryPlan) -> Result<u64, StoreError> {
    let rows = super::query(pool, &count_sql(topic, plan)).await?;
    let count: i64 = rows
        .first()
        .ok_or_else(|| StoreError::Decode("count(*) returned no row".into()))?
        .try_get(0)
        .map_err(|e| StoreError::Decode(e.to_string()))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

async fn estimate(pool: &PgPool, topic: &str, plan: &QueryPlan) -> Result<u64, StoreError> {
    let rows = super::query(pool, &estimate_sql(topic, plan)).await?;
    let explained: Value = rows
        .first()
        .ok_or_else(|| StoreError::Decode("EXPLAIN returned no row".into()))?
        .try_get(0)
        .map_err(|e| StoreError::Decode(e.to_string()))?;
    plan_rows(&explained)
        .ok_or_else(|| StoreError::Decode(format!("no row estimate in {explained}")))
}

/// `[{"Plan": {"Plan Rows": n, …}}]` → n.
fn plan_rows(explained: &Value) -> Option<u64> {
    let rows = explained.get(0)?.get("Plan")?.get("Plan Rows")?;
    rows.as_u64()
        .or_else(|| rows.as_f64().map(|r| r.max(0.0).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_estimate_is_read_from_the_plans_top_node() {
        assert_eq!(
            plan_rows(&json!([{"Plan": {"Node Type": "Aggregate", "Plan Rows": 1234}}])),
            Some(1234)
        );
        assert_eq!(plan_rows(&json!([{"Plan": {"Plan Rows": 12.6}}])), Some(13));
        assert_eq!(plan_rows(&json!([{}])), None);
    }
}
