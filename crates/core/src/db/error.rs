//! Why a database statement failed, decided by the SQLSTATE the server sent (or the absence of one:
//! the connection itself failed). Message texts are never matched: they follow the server's
//! `lc_messages` and are translated on a non-English server.

use tokio_postgres::error::SqlState;

/// What a failure means for whoever ran the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The server gave up on the statement: `statement_timeout` or a cancel (57014), `lock_timeout`
    /// (55P03). Retrying later may succeed; for an analyst's query it means "narrow it".
    Timeout,
    /// No usable connection: the server is down, restarting, out of connection slots or shutting down
    /// (class 08, 57P01–57P03, class 53), the connection broke, or the pool waited in vain.
    Unavailable,
    /// Two transactions collided (serialization failure 40001, deadlock 40P01): retry.
    Conflict,
    /// An id stored already (23505): the writer's cue to skip stored ids.
    UniqueViolation,
    /// The data of the statement was refused: a data exception (class 22), another integrity
    /// constraint (class 23), a value beyond a limit of the server (54000). Retrying the same rows fails
    /// again.
    RefusedData,
    /// Anything else: a missing privilege, a bug in generated SQL, … Not the data's fault.
    Other,
}

impl Cause {
    /// The cause of a `tokio_postgres` error.
    pub fn of(error: &tokio_postgres::Error) -> Cause {
        match error.code() {
            Some(code) => Cause::of_sqlstate(code),
            // No SQLSTATE: the error is about the connection (closed, I/O, TLS), not the statement.
            None => Cause::Unavailable,
        }
    }

    /// The cause of a SQLSTATE.
    pub fn of_sqlstate(code: &SqlState) -> Cause {
        let text = code.code();
        if *code == SqlState::QUERY_CANCELED || *code == SqlState::LOCK_NOT_AVAILABLE {
            Cause::Timeout
        } else if *code == SqlState::UNIQUE_VIOLATION {
            Cause::UniqueViolation
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            Cause::Conflict
        } else if text.starts_with("08")
            || text.starts_with("53")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
        {
            Cause::Unavailable
        } else if text.starts_with("22")
            || text.starts_with("23")
            || *code == SqlState::PROGRAM_LIMIT_EXCEEDED
        {
            Cause::RefusedData
        } else {
            Cause::Other
        }
    }
}

/// A failed database operation: no connection from the pool, or a statement the server refused.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database connection: {0}")]
    Pool(#[from] bb8::RunError<tokio_postgres::Error>),
    #[error("{0}")]
    Statement(#[from] tokio_postgres::Error),
    /// The URL's TLS settings cannot be used (a bad `sslmode`, a missing `sslrootcert` file, …).
    #[error("database URL: {0}")]
    Tls(super::tls::TlsError),
    /// A connection that opened could not be set up for diesel.
    #[error("setting up the connection: {0}")]
    Setup(diesel::ConnectionError),
}

impl DbError {
    pub fn cause(&self) -> Cause {
        match self {
            DbError::Pool(bb8::RunError::TimedOut) => Cause::Unavailable,
            // A configuration problem: no retry makes it work.
            DbError::Tls(_) => Cause::Other,
            DbError::Setup(_) => Cause::Unavailable,
            DbError::Pool(bb8::RunError::User(error)) | DbError::Statement(error) => {
                match Cause::of(error) {
                    // Failing to open a connection is an outage whatever the server said (a wrong
                    // password is one too, for whoever waits on it).
                    Cause::Other | Cause::RefusedData if matches!(self, DbError::Pool(_)) => {
                        Cause::Unavailable
                    }
                    cause => cause,
                }
            }
        }
    }

    /// The SQLSTATE, when the server sent one (for logs).
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Pool(bb8::RunError::User(error)) | DbError::Statement(error) => {
                error.code().map(SqlState::code)
            }
            DbError::Pool(bb8::RunError::TimedOut) | DbError::Tls(_) | DbError::Setup(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_follow_the_sqlstate_classes() {
        let cases = [
            ("57014", Cause::Timeout),
            ("55P03", Cause::Timeout),
            ("23505", Cause::UniqueViolation),
            ("40001", Cause::Conflict),
            ("40P01", Cause::Conflict),
            ("08006", Cause::Unavailable),
            ("57P01", Cause::Unavailable),
            ("57P03", Cause::Unavailable),
            ("53300", Cause::Unavailable),
            ("22P05", Cause::RefusedData),
            ("22021", Cause::RefusedData),
            ("23502", Cause::RefusedData),
            ("23514", Cause::RefusedData),
            ("54000", Cause::RefusedData),
            ("42501", Cause::Other),
            ("42601", Cause::Other),
            ("25006", Cause::Other),
        ];
        for (code, cause) in cases {
            assert_eq!(
                Cause::of_sqlstate(&SqlState::from_code(code)),
                cause,
                "{code}"
            );
        }
    }

    #[test]
    fn a_pool_that_waited_in_vain_is_an_outage() {
        assert_eq!(
            DbError::Pool(bb8::RunError::TimedOut).cause(),
            Cause::Unavailable
        );
        assert_eq!(DbError::Pool(bb8::RunError::TimedOut).sqlstate(), None);
    }
}
