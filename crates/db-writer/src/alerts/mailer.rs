//! The SMTP side of failure emails (lettre, async): one transport configured at start-up, and a task
//! that sends the emails the alert loop queues, one after the other, retrying a failed delivery with
//! backoff (`smtp.retry_initial_ms` doubling, `smtp.max_attempts` in all) and giving up at once on a
//! permanent refusal (5xx).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use eventgate_core::config::{SmtpConfig, SmtpTls};

use super::AlertKind;
use crate::metrics::WriterMetrics;

/// Emails waiting for the mailer; throttling keeps this tiny in practice.
const MAIL_QUEUE: usize = 64;
/// Longest pause between two delivery attempts of one email.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// Where the alert loop hands its emails: the mailer task's queue, with From and To filled in.
pub(super) struct Outbox {
    queue: mpsc::Sender<(AlertKind, Message)>,
    template: MessageTemplate,
}

impl Outbox {
    /// Queues one email without waiting; an error says why it was not queued.
    pub(super) fn send(
        &self,
        kind: AlertKind,
        subject: String,
        body: String,
    ) -> anyhow::Result<()> {
        let message = self
            .template
            .message(subject, body)
            .context("cannot build the failure email")?;
        self.queue
            .try_send((kind, message))
            .context("mail queue full")
    }
}

/// Checks the addresses and the TLS set-up, and starts the mailer task, which ends once every
/// [`Outbox`] is dropped and its queue is delivered. Counts each email sent or given up on in `metrics`.
pub(super) fn start(
    smtp: &SmtpConfig,
    maintainers: &[String],
    metrics: Arc<WriterMetrics>,
) -> anyhow::Result<(Outbox, JoinHandle<()>)> {
    let mailer = Mailer::new(smtp, maintainers)?;
    let (queue, queued) = mpsc::channel(MAIL_QUEUE);
    let outbox = Outbox {
        queue,
        template: mailer.template.clone(),
    };
    let retry = RetryPolicy {
        initial: Duration::from_millis(smtp.retry_initial_ms),
        max_attempts: smtp.max_attempts.max(1),
    };
    Ok((outbox, tokio::spawn(mailer.run(queued, retry, metrics))))
}

/// From and To of every failure email.
#[derive(Clone)]
struct MessageTemplate {
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl MessageTemplate {
    fn message(&self, subject: String, body: String) -> anyhow::Result<Message> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        Ok(builder.body(body)?)
    }
}

struct RetryPolicy {
    initial: Duration,
    max_attempts: u32,
}

/// The SMTP side: one transport, configured once.
struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    template: MessageTemplate,
}

impl Mailer {
    fn new(smtp: &SmtpConfig, maintainers: &[String]) -> anyhow::Result<Mailer> {
        let from: Mailbox = smtp
            .from
            .parse()
            .with_context(|| format!("smtp.from {:?} is not an email address", smtp.from))?;
        let to = maintainers
            .iter()
            .map(|address| {
                address.parse::<Mailbox>().with_context(|| {
                    format!("alerts.maintainers: {address:?} is not an email address")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Mailer {
            transport: transport(smtp)?,
            template: MessageTemplate { from, to },
        })
    }

    async fn run(
        self,
        mut queue: mpsc::Receiver<(AlertKind, Message)>,
        retry: RetryPolicy,
        metrics: Arc<WriterMetrics>,
    ) {
        while let Some((kind, message)) = queue.recv().await {
            let sent = self.deliver(message, &retry).await;
            metrics.email(kind.as_str(), sent);
        }
    }

    /// Whether the message went out, after retries.
    async fn deliver(&self, message: Message, retry: &RetryPolicy) -> bool {
        let mut delay = retry.initial;
        for attempt in 1..=retry.max_attempts {
            match self.transport.send(message.clone()).await {
                Ok(_) => {
                    tracing::info!(attempt, "failure email sent");
                    return true;
                }
                // 5xx: the server refuses this message for good (unknown recipient, relay denied).
                Err(error) if error.is_permanent() => {
                    tracing::error!(%error, "failure email refused by the mail server; not retried");
                    return false;
                }
                Err(error) if attempt < retry.max_attempts => {
                    tracing::warn!(%error, attempt, retry.in_ms = delay.as_millis() as u64, "failure email not sent; will retry");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(error) => {
                    tracing::error!(%error, attempt, "failure email not sent; giving up");
                }
            }
        }
        false
    }
}

fn transport(smtp: &SmtpConfig) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let builder = match smtp.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
            .context("smtp: STARTTLS set-up")?,
        SmtpTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).context("smtp: TLS set-up")?
        }
    };
    let mut builder = builder
        .port(smtp.port)
        .timeout(Some(Duration::from_millis(smtp.timeout_ms)));
    if let Some(username) = &smtp.username {
        let password = smtp
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        builder = builder.credentials(Credentials::new(username.expose().to_owned(), password));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventgate_core::config::Secret;

    // The connection pool of a transport lives on the runtime.
    #[tokio::test]
    async fn every_tls_mode_builds_a_transport() {
        let mut smtp = SmtpConfig {
            host: "smtp.example.com".into(),
            username: Some(Secret::new("user")),
            password: Some(Secret::new("pass")),
            ..SmtpConfig::default()
        };
        for tls in [SmtpTls::None, SmtpTls::Starttls, SmtpTls::Tls] {
            smtp.tls = tls;
            transport(&smtp).expect("transport");
        }
    }
}
