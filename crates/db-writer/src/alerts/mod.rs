//! Failure emails to the maintainers, in three parts:
//! - [`rules`]: when an email is due (throttling, grouping), and [`email_text`]: what it says. Pure: no
//!   SMTP, no database, no clock; unit-tested with explicit time.
//! - this module: the writer's handle ([`Alerts`]) and the **alert loop**, a background task that owns
//!   the rules. The writer hands it what happens (dead letters, database or broker down/up, a crash-loop
//!   notice) through a bounded channel with `try_send`, so nothing here ever waits in the event path.
//! - [`mailer`]: sends the emails the loop decides (lettre, async SMTP) one after the other, retrying a
//!   failed delivery with backoff; a mail server that is down is logged and retried, and costs the event
//!   path nothing.
//!
//! Every notice is logged whether or not emails are configured (`alerts.maintainers` empty: logs only).
//! Configuration: `[smtp]` and `[alerts]` in `eventgate_core::config`.

pub mod email_text;
mod mailer;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use eventgate_core::config::Config;

use crate::db::DeadLetter;
use crate::metrics::WriterMetrics;
use mailer::Outbox;
pub use rules::{AlertKind, AlertPolicy, Alerter, Notice, NoticeState};

/// Signals waiting for the alert loop; beyond it they are dropped (the loop is far faster than that).
const SIGNAL_QUEUE: usize = 1024;

enum Signal {
    DeadLetters {
        count: u64,
        examples: Vec<String>,
    },
    Down(AlertKind, String),
    Up(AlertKind),
    /// A notice decided elsewhere (the crash-loop check, throttled group-wide in the database).
    Notice(Notice),
}

/// The writer's handle on the alert loop. Cheap to clone; every method returns at once.
#[derive(Clone)]
pub struct Alerts {
    signals: mpsc::Sender<Signal>,
    policy: AlertPolicy,
}

/// The running alert loop and mailer, stopped by [`AlertTasks::stop`].
pub struct AlertTasks {
    stop: CancellationToken,
    alert_loop: JoinHandle<()>,
    mailer: Option<JoinHandle<()>>,
}

impl Alerts {
    /// Starts the alert loop (and the mailer when maintainers are configured). `source` names the
    /// reporter in every email; `metrics` counts the emails sent and failed. Fails on an invalid address
    /// or TLS set-up: better at start-up than at the first failure.
    pub fn start(
        config: &Config,
        source: String,
        metrics: Arc<WriterMetrics>,
    ) -> anyhow::Result<(Alerts, AlertTasks)> {
        let policy = AlertPolicy::from_config(&config.alerts);
        let (outbox, mailer) = if config.alerts.maintainers.is_empty() {
            tracing::info!("alerts.maintainers is empty: failures are logged, not emailed");
            (None, None)
        } else {
            let (outbox, mailer) =
                mailer::start(&config.smtp, &config.alerts.maintainers, metrics.clone())?;
            (Some(outbox), Some(mailer))
        };
        let (signals, signal_rx) = mpsc::channel(SIGNAL_QUEUE);
        let stop = CancellationToken::new();
        let alert_loop = tokio::spawn(alert_loop(
            Alerter::new(policy.clone()),
            signal_rx,
            Delivery {
                source,
                policy: policy.clone(),
                outbox,
                metrics,
            },
            stop.clone(),
        ));
        Ok((
            Alerts { signals, policy },
            AlertTasks {
                stop,
                alert_loop,
                mailer,
            },
        ))
    }

    pub fn policy(&self) -> &AlertPolicy {
        &self.policy
    }

    /// Messages parked in `dead_letters` (only the ones parked for the first time).
    pub fn dead_letters(&self, parked: &[DeadLetter]) {
        if parked.is_empty() {
            return;
        }
        let examples = parked
            .iter()
            .take(self.policy.max_examples)
            .map(describe_dead_letter)
            .collect();
        self.send(Signal::DeadLetters {
            count: parked.len() as u64,
            examples,
        });
    }

    pub fn down(&self, kind: AlertKind, detail: impl std::fmt::Display) {
        self.send(Signal::Down(kind, detail.to_string()));
    }

    pub fn up(&self, kind: AlertKind) {
        self.send(Signal::Up(kind));
    }

    pub fn notice(&self, notice: Notice) {
        self.send(Signal::Notice(notice));
    }

    fn send(&self, signal: Signal) {
        // Never wait: a full queue means the loop is stuck, and the events matter more than the email.
        if let Err(error) = self.signals.try_send(signal) {
            tracing::warn!(%error, "alert signal dropped");
        }
    }
}

impl AlertTasks {
    /// Sends what is gathered (a burst of dead letters waiting for its email) and gives the mailer until
    /// `grace` to deliver what is queued.
    pub async fn stop(self, grace: Duration) {
        self.stop.cancel();
        let _ = self.alert_loop.await;
        if let Some(mailer) = self.mailer {
            // The alert loop dropped the last sender: the mailer ends once its queue is delivered.
            if tokio::time::timeout(grace, mailer).await.is_err() {
                tracing::warn!("failure emails still queued at shutdown were not sent");
            }
        }
    }
}

fn describe_dead_letter(dead: &DeadLetter) -> String {
    format!(
        "topic {}, {} partition {} offset {}: {}",
        dead.topic.as_deref().unwrap_or("(unknown)"),
        dead.kafka_topic,
        dead.partition,
        dead.offset,
        dead.error
    )
}

/// Where decided notices go: the log always, the mailer when configured.
struct Delivery {
    source: String,
    policy: AlertPolicy,
    outbox: Option<Outbox>,
    metrics: Arc<WriterMetrics>,
}

impl Delivery {
    fn deliver(&self, notice: &Notice) {
        let subject = notice.subject();
        match notice.state {
            NoticeState::Recovered => {
                tracing::info!(alert.kind = notice.kind.as_str(), %subject, "failure cleared")
            }
            _ => tracing::warn!(
                alert.kind = notice.kind.as_str(),
                alert.count = notice.count,
                %subject,
                "failure alert"
            ),
        }
        let Some(outbox) = &self.outbox else {
            return;
        };
        let body = notice.body(&self.source, &self.policy);
        if let Err(error) = outbox.send(notice.kind, subject, body) {
            self.metrics.email(notice.kind.as_str(), false);
            tracing::error!(error = %format_args!("{error:#}"), alert.kind = notice.kind.as_str(), "failure email dropped");
        }
    }
}

async fn alert_loop(
    mut alerter: Alerter,
    mut signals: mpsc::Receiver<Signal>,
    delivery: Delivery,
    stop: CancellationToken,
) {
    loop {
        let due = alerter.next_due();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_until_wall(due) => {}
            signal = signals.recv() => match signal {
                Some(signal) => apply(&mut alerter, signal, &delivery),
                None => break,
            },
        }
        for notice in alerter.poll(OffsetDateTime::now_utc()) {
            delivery.deliver(&notice);
        }
    }
    // Signals already queued still count, and a burst gathered for its first email goes out now rather
    // than never.
    while let Ok(signal) = signals.try_recv() {
        apply(&mut alerter, signal, &delivery);
    }
    for notice in alerter.flush(OffsetDateTime::now_utc()) {
        delivery.deliver(&notice);
    }
}

fn apply(alerter: &mut Alerter, signal: Signal, delivery: &Delivery) {
    let now = OffsetDateTime::now_utc();
    match signal {
        Signal::DeadLetters { count, examples } => {
            alerter.record(AlertKind::DeadLetters, count, examples, now)
        }
        Signal::Down(kind, detail) => alerter.down(kind, detail, now),
        Signal::Up(kind) => alerter.up(kind, now),
        Signal::Notice(notice) => delivery.deliver(&notice),
    }
}

async fn sleep_until_wall(due: Option<OffsetDateTime>) {
    match due {
        Some(due) => {
            let wait = due - OffsetDateTime::now_utc();
            tokio::time::sleep(wait.try_into().unwrap_or(Duration::ZERO)).await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventgate_core::config::SmtpTls;
    use eventgate_test_support::SmtpSink;

    fn config(sink: &SmtpSink) -> Config {
        let mut config = Config::default();
        config.smtp.host = "127.0.0.1".into();
        config.smtp.port = sink.port;
        config.smtp.tls = SmtpTls::None;
        config.smtp.from = "eventgate <alerts@eventgate.test>".into();
        config.smtp.retry_initial_ms = 20;
        config.alerts.maintainers = vec!["ops@example.test".into(), "oncall@example.test".into()];
        config.alerts.group_wait_ms = 50;
        config.alerts.window_ms = 60_000;
        config
    }

    fn parked(offset: i64) -> DeadLetter {
        DeadLetter {
            topic: Some("audit.logs".into()),
            kafka_topic: "eventgate.audit.logs".into(),
            partition: 1,
            offset,
            raw: Some(b"not json".to_vec()),
            reason: crate::db::DeadLetterReason::Undecodable,
            error: "message is not a valid event envelope".into(),
            event: None,
        }
    }

    #[tokio::test]
    async fn a_failing_mail_server_is_retried_and_the_email_arrives() {
        let sink = SmtpSink::start();
        sink.fail_next(2);
        let metrics = Arc::new(WriterMetrics::new());
        let (alerts, tasks) =
            Alerts::start(&config(&sink), "db-writer test".into(), metrics.clone())
                .expect("alerts start");
        alerts.dead_letters(&[parked(7), parked(8)]);
        let mails = sink
            .wait_for(1, Duration::from_secs(20))
            .await
            .expect("the email arrives after two refusals");
        assert_eq!(mails.len(), 1);
        let mail = &mails[0];
        assert_eq!(mail.from, "alerts@eventgate.test");
        assert_eq!(mail.to, vec!["ops@example.test", "oncall@example.test"]);
        assert_eq!(
            mail.subject().as_deref(),
            Some("[eventgate] ALERT: 2 messages parked in dead_letters")
        );
        assert!(
            mail.body()
                .contains("topic audit.logs, eventgate.audit.logs partition 1 offset 7"),
            "{}",
            mail.data
        );
        tasks.stop(Duration::from_secs(5)).await;
        let sent = metrics
            .emails_sent
            .with_label_values(&["dead_letters"])
            .get();
        let failed = metrics
            .emails_failed
            .with_label_values(&["dead_letters"])
            .get();
        assert_eq!((sent, failed), (1, 0));
    }

    #[test]
    fn bad_addresses_are_refused_at_start_up() {
        let mut config = Config::default();
        config.alerts.maintainers = vec!["not an address".into()];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let error = runtime
            .block_on(async {
                Alerts::start(&config, "x".into(), Arc::new(WriterMetrics::new())).map(|_| ())
            })
            .expect_err("refused");
        assert!(error.to_string().contains("alerts.maintainers"), "{error}");
    }
}
