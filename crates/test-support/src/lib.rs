//! eventgate-test-support: the harness the service crates and the end-to-end tests share.
//!
//! - [`stack()`]: a PostgreSQL cluster and a tansu (Kafka-protocol) broker for the tests of this process.
//!   Under `make test` both are started once by `scripts/test.sh` and found through `EVENTGATE_TEST_*`
//!   variables; otherwise the first call starts private ones in `target/test-stack/<pid>` (through
//!   `scripts/stack.sh`), stopped by a watchdog when the process exits. [`private_stack()`] always starts
//!   a stack of its own, for tests that stop and restart servers; [`private_stack_with`] with the
//!   broker's data in PostgreSQL ([`BrokerStorage`]), so that it survives a broker restart.
//! - [`Stack::fresh_database`]: a new database cloned from the migrated template `eventgate_template`.
//! - [`test_keys`], [`token`], [`token_with`]: an RS256 key pair and JWTs signed with it.
//! - [`SmtpSink`]: an SMTP server that records every message it receives.
//! - [`ServiceProcess`]: a service binary run as operators run it, to signal or kill it for real;
//!   [`get_json`], [`metric`]: what its HTTP side answers.
//! - [`assert_exactly_once`], [`assert_rollups_match`], [`wait_until_stored`], [`accepted_ids`]: every event answered 202 is
//!   stored exactly once.
//! - [`SecureBroker`]: a tansu of its own with SASL required and/or behind a TLS proxy (stunnel), with
//!   certificates made by the test, for the Kafka security tests.
//! - [`free_port`], [`wait_until`]: small helpers.

mod exactly_once;
mod keys;
mod process;
mod secure_broker;
mod smtp;
mod stack;

use std::future::Future;
use std::time::{Duration, Instant};

pub use exactly_once::{
    accepted_ids, assert_exactly_once, assert_rollups_match, wait_until_stored,
};
pub use keys::{test_keys, token, token_with, TestKeys};
pub use process::{get_json, metric, ServiceProcess};
pub use secure_broker::{SecureBroker, SecureBrokerOptions, TestPki, CLIENT_KEY_PASSWORD};
pub use smtp::{ReceivedMail, SmtpSink};
pub use stack::{
    private_stack, private_stack_with, stack, BrokerStorage, Stack, TestDatabase, TEMPLATE_DATABASE,
};

/// A TCP port free on 127.0.0.1 at the time of the call (the OS picks it; nothing keeps it reserved).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// Polls `f` every 50 ms until it returns `true`; fails with a message naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn wait_until_polls_until_true_and_times_out() {
        let calls = AtomicU32::new(0);
        wait_until("third call", Duration::from_secs(5), || async {
            calls.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let err = wait_until("never", Duration::from_millis(120), || async { false })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("waiting for never"), "{err}");
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
