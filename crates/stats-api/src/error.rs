//! Where a store failure becomes an HTTP answer: the one place that chooses the status of each cause.

use eventgate_core::error::{ApiError, ErrorKind};

use crate::db::StoreError;

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            // The database protecting itself: 503 with Retry-After, like an outage.
            StoreError::Timeout(_) => ApiError::new(
                ErrorKind::Database,
                "the query took longer than the configured statement timeout; narrow it or retry later",
            ),
            // Fail fast: the pool is shared by every analyst, a request does not queue behind a
            // burst of expensive statements for longer than `stats.pool_wait_ms`.
            StoreError::Busy(_) => ApiError::new(
                ErrorKind::Database,
                "every database connection of the stats-api is busy with other statements; retry later",
            ),
            StoreError::Unavailable(error) => {
                tracing::warn!(%error, sqlstate = error.sqlstate(), "the event store is unavailable");
                ApiError::new(
                    ErrorKind::Database,
                    "the event store is unavailable, retry later",
                )
            }
            // A statement we generated failed, or its rows do not decode: our bug. 500, logged, with no
            // SQL in the answer.
            StoreError::Failed(error) => {
                tracing::error!(%error, sqlstate = error.sqlstate(), "query failed");
                ApiError::new(ErrorKind::Internal, "the query failed unexpectedly")
            }
            StoreError::Decode(reason) => {
                tracing::error!(%reason, "query rows do not decode");
                ApiError::new(ErrorKind::Internal, "the query failed unexpectedly")
            }
        }
    }
}
