//! What failed in the writer's database work, and what the writer does about it. The decision is taken
//! on the failure's cause, which `eventgate_core::db` reads from the SQLSTATE (never from the message,
//! which follows the server's language): a poison row and an outage must never be confused, or a batch
//! is either dropped or retried forever.

use eventgate_core::db::{Cause, DbError};

/// A database operation of the writer that failed.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("writing a batch of {events} events and {dead_letters} dead letters: {error}")]
    WriteBatch {
        events: usize,
        dead_letters: usize,
        error: DbError,
    },
    #[error("recording this writer's start in writer_runs: {0}")]
    RecordStart(DbError),
    #[error("recording that this writer is alive: {0}")]
    Heartbeat(DbError),
    #[error("recording this writer's clean stop: {0}")]
    RecordCleanStop(DbError),
    #[error("checking the group for a crash loop: {0}")]
    CrashLoopCheck(DbError),
}

/// What the write path does about a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// An id of the batch is stored already (a redelivery after a crash or a rebalance, a producer
    /// retry): write the batch again, skipping the stored ids.
    SkipStoredIds,
    /// The database refuses data of the batch and will refuse it again (a constraint, a NUL character
    /// `jsonb` cannot store, a value beyond a limit): find the refused rows one by one, park them as dead
    /// letters, write the rest.
    IsolateRefusedRows,
    /// The database cannot take the batch now (down, restarting, a timeout, a collision with another
    /// transaction, or anything that is not the data's fault, such as a missing privilege): keep the
    /// batch, commit no offset, retry with backoff and report the outage.
    RetryLater,
}

impl Remedy {
    pub fn for_cause(cause: Cause) -> Remedy {
        match cause {
            Cause::UniqueViolation => Remedy::SkipStoredIds,
            Cause::RefusedData => Remedy::IsolateRefusedRows,
            Cause::Timeout | Cause::Unavailable | Cause::Conflict | Cause::Other => {
                Remedy::RetryLater
            }
        }
    }
}

impl WriterError {
    pub fn write_batch(
        events: usize,
        dead_letters: usize,
        error: impl Into<DbError>,
    ) -> WriterError {
        WriterError::WriteBatch {
            events,
            dead_letters,
            error: error.into(),
        }
    }

    pub fn db_error(&self) -> &DbError {
        match self {
            WriterError::WriteBatch { error, .. }
            | WriterError::RecordStart(error)
            | WriterError::Heartbeat(error)
            | WriterError::RecordCleanStop(error)
            | WriterError::CrashLoopCheck(error) => error,
        }
    }

    pub fn cause(&self) -> Cause {
        self.db_error().cause()
    }

    pub fn remedy(&self) -> Remedy {
        Remedy::for_cause(self.cause())
    }

    /// The server's own words when it refused a statement (what a dead letter records), else the
    /// whole error.
    pub fn refusal(&self) -> String {
        match self.db_error() {
            DbError::Statement(error) => match error.as_db_error() {
                Some(refused) => refused.message().to_owned(),
                None => error.to_string(),
            },
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_data_s_fault_parks_rows_and_only_a_stored_id_skips() {
        let cases = [
            (Cause::UniqueViolation, Remedy::SkipStoredIds),
            (Cause::RefusedData, Remedy::IsolateRefusedRows),
            (Cause::Timeout, Remedy::RetryLater),
            (Cause::Unavailable, Remedy::RetryLater),
            (Cause::Conflict, Remedy::RetryLater),
            (Cause::Other, Remedy::RetryLater),
        ];
        for (cause, remedy) in cases {
            assert_eq!(Remedy::for_cause(cause), remedy, "{cause:?}");
        }
    }

    #[tokio::test]
    async fn a_pool_that_gives_no_connection_keeps_the_batch() {
        // Nothing listens on port 1: the pool waits in vain.
        let mut settings = eventgate_core::db::pool::PoolSettings::new(1);
        settings.connection_timeout = std::time::Duration::from_millis(200);
        let pool =
            eventgate_core::db::build_pool("postgres://writer@127.0.0.1:1/eventgate", &settings)
                .expect("a well-formed URL");
        let refused = pool.get().await.expect_err("no server");
        let error = WriterError::write_batch(10, 1, refused);
        assert_eq!(error.cause(), Cause::Unavailable);
        assert_eq!(error.remedy(), Remedy::RetryLater);
        assert!(
            error.to_string().starts_with(
                "writing a batch of 10 events and 1 dead letters: no database connection"
            ),
            "{error}"
        );
    }
}
