//! A real SMTP server (RFC 5321, no TLS, no AUTH) on 127.0.0.1 that records every message it accepts.
//!
//! It runs on plain threads, so it works from any test, async or not, and outlives no test: dropping the
//! [`SmtpSink`] stops it. Supported: EHLO/HELO, MAIL, RCPT, DATA (with dot-unstuffing), RSET, NOOP, VRFY,
//! QUIT. [`SmtpSink::fail_next`] makes the next transactions fail with a temporary error (451), to test
//! retries.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HOSTNAME: &str = "eventgate-test-smtp";
const MAX_LINE: usize = 64 * 1024;
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// Envelope sender (`MAIL FROM`), without the angle brackets; empty for the null sender.
    pub from: String,
    /// Envelope recipients (`RCPT TO`), in order, without the angle brackets.
    pub to: Vec<String>,
    /// The message as sent after `DATA`: headers and body, every line ended with CRLF, dots unstuffed,
    /// without the final `.` line. Decoded lossily as UTF-8.
    pub data: String,
}

impl ReceivedMail {
    /// The header section (before the first empty line).
    pub fn headers(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or(self.data.as_str(), |(headers, _)| headers)
    }

    /// The (still transfer-encoded) body: everything after the first empty line.
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }

    /// The first header called `name` (case-insensitive), unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut found: Option<String> = None;
        for line in self.headers().split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(value) = found.as_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((key, value)) = line.split_once(':') {
                if key.trim().eq_ignore_ascii_case(name) {
                    found = Some(value.trim().to_owned());
                }
            }
        }
        found
    }

    /// The `Subject` header.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }
}

#[derive(Default)]
struct Shared {
    messages: Mutex<Vec<ReceivedMail>>,
    fail_next: AtomicUsize,
    stop: AtomicBool,
}

/// A running SMTP server; see the module docs.
pub struct SmtpSink {
    pub port: u16,
    shared: Arc<Shared>,
}

impl SmtpSink {
    /// Starts a server on 127.0.0.1 and a free port.
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the SMTP sink");
        let port = listener.local_addr().expect("SMTP sink address").port();
        let shared = Arc::new(Shared::default());
        let accept_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("smtp-sink-{port}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&accept_shared);
                    let _ = std::thread::Builder::new().name("smtp-sink-conn".into()).spawn(move || {
                        if let Err(e) = Session::new(shared).serve(stream) {
                            tracing::debug!(error = %e, "SMTP sink connection ended with an error");
                        }
                    });
                }
            })
            .expect("cannot spawn the SMTP sink thread");
        SmtpSink { port, shared }
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far, in order of arrival.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared
            .messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until at least `n` messages arrived (polling every 50 ms) and returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<ReceivedMail>> {
        crate::wait_until(
            &format!("{n} mail(s) on the SMTP sink"),
            timeout,
            || async { self.messages().len() >= n },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}; got {} message(s)", self.messages().len()))?;
        Ok(self.messages())
    }

    /// Makes the next `n` transactions fail at the end of DATA with `451` (a temporary error).
    pub fn fail_next(&self, n: usize) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop up so that it sees the flag.
        let _ = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        );
    }
}

struct Session {
    shared: Arc<Shared>,
    from: Option<String>,
    to: Vec<String>,
}

impl Session {
    fn new(shared: Arc<Shared>) -> Self {
        Session {
            shared,
            from: None,
            to: Vec::new(),
        }
    }

    fn serve(mut self, stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        reply(&mut writer, &format!("220 {HOSTNAME} ESMTP ready"))?;
        loop {
            let Some(line) = read_line(&mut reader)? else {
                return Ok(());
            };
            if self.shared.stop.load(Ordering::SeqCst) {
                return reply(&mut writer, "421 4.3.2 shutting down");
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match verb.to_ascii_uppercase().as_str() {
                "EHLO" => {
                    self.reset();
                    reply(&mut writer, &format!("250-{HOSTNAME}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE {MAX_MESSAGE}"))?;
                }
                "HELO" => {
                    self.reset();
                    reply(&mut writer, &format!("250 {HOSTNAME}"))?;
                }
                "MAIL" => match path_arg(arg, "FROM:") {
                    Some(from) => {
                        self.reset();
                        self.from = Some(from);
                        reply(&mut writer, "250 2.1.0 OK")?;
                    }
                    None => reply(&mut writer, "501 5.5.4 syntax: MAIL FROM:<address>")?,
                },
                "RCPT" => match (&self.from, path_arg(arg, "TO:")) {
                    (None, _) => reply(&mut writer, "503 5.5.1 MAIL first")?,
                    (Some(_), Some(to)) if !to.is_empty() => {
                        self.to.push(to);
                        reply(&mut writer, "250 2.1.5 OK")?;
                    }
                    (Some(_), _) => reply(&mut writer, "501 5.5.4 syntax: RCPT TO:<address>")?,
                },
                "DATA" => {
                    if self.from.is_none() || self.to.is_empty() {
                        reply(&mut writer, "503 5.5.1 MAIL and RCPT first")?;
                        continue;
                    }
                    reply(&mut writer, "354 End data with <CR><LF>.<CR><LF>")?;
                    let Some(data) = read_data(&mut reader)? else {
                        return Ok(());
                    };
                    let from = self.from.take().unwrap_or_default();
                    let to = std::mem::take(&mut self.to);
                    if data.len() > MAX_MESSAGE {
                        reply(&mut writer, "552 5.3.4 message too big")?;
                    } else if self
                        .shared
                        .fail_next
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        reply(
                            &mut writer,
                            "451 4.3.0 temporary failure (test sink told to fail)",
                        )?;
                    } else {
                        let mail = ReceivedMail {
                            from,
                            to,
                            data: String::from_utf8_lossy(&data).into_owned(),
                        };
                        self.shared
                            .messages
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(mail);
                        reply(&mut writer, "250 2.0.0 OK queued")?;
                    }
                }
                "RSET" => {
                    self.reset();
                    reply(&mut writer, "250 2.0.0 OK")?;
                }
                "NOOP" => reply(&mut writer, "250 2.0.0 OK")?,
                "VRFY" => reply(&mut writer, "252 2.1.5 cannot verify, will accept")?,
                "QUIT" => return reply(&mut writer, &format!("221 2.0.0 {HOSTNAME} closing")),
                _ => reply(&mut writer, "502 5.5.2 command not implemented")?,
            }
        }
    }

    fn reset(&mut self) {
        self.from = None;
        self.to.clear();
    }
}

fn reply(writer: &mut TcpStream, text: &str) -> std::io::Result<()> {
    writer.write_all(text.as_bytes())?;
    writer.write_all(b"\r\n")?;
    writer.flush()
}

/// One line without its CRLF (or bare LF); `None` at end of stream.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = Read::take(&mut *reader, MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.ends_with(b"\n") {
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
    }
    Ok(Some(line))
}

/// The DATA section up to the lone `.` line, dot-unstuffed, every line ended with CRLF.
fn read_data(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    loop {
        let Some(line) = read_line(reader)? else {
            return Ok(None);
        };
        if line == b"." {
            return Ok(Some(data));
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() <= MAX_MESSAGE {
            data.extend_from_slice(line);
            data.extend_from_slice(b"\r\n");
        }
    }
}

/// The address of `FROM:<a@b> PARAMS` / `TO:<a@b>`, without brackets; `None` when malformed.
fn path_arg(arg: &str, keyword: &str) -> Option<String> {
    let arg = arg.trim_start();
    if arg.len() < keyword.len() || !arg[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let path = rest.split_whitespace().next().unwrap_or("");
    let inner = path
        .strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .unwrap_or(path);
    Some(inner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::message::Mailbox;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    #[tokio::test]
    async fn lettre_delivers_to_the_sink() {
        let sink = SmtpSink::start();
        let email = Message::builder()
            .from(
                "Eventgate <noreply@eventgate.test>"
                    .parse::<Mailbox>()
                    .unwrap(),
            )
            .to("ops@example.test".parse::<Mailbox>().unwrap())
            .cc("second@example.test".parse::<Mailbox>().unwrap())
            .subject("Delivery failed for topic orders")
            .body(String::from(
                "Three events could not be stored.\n.leading dot survives\nBye",
            ))
            .unwrap();
        let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(sink.port)
            .build();
        mailer.send(email).await.unwrap();

        let mails = sink.wait_for(1, Duration::from_secs(5)).await.unwrap();
        assert_eq!(mails.len(), 1);
        let mail = &mails[0];
        assert_eq!(mail.from, "noreply@eventgate.test");
        assert_eq!(
            mail.to,
            vec![
                "ops@example.test".to_owned(),
                "second@example.test".to_owned()
            ]
        );
        assert_eq!(
            mail.subject().as_deref(),
            Some("Delivery failed for topic orders")
        );
        assert_eq!(mail.header("to").as_deref(), Some("ops@example.test"));
        assert!(
            mail.body().contains("Three events could not be stored."),
            "{}",
            mail.data
        );
        assert!(
            mail.body().contains("\r\n.leading dot survives\r\n"),
            "{}",
            mail.data
        );
    }

    #[tokio::test]
    async fn fail_next_rejects_then_accepts() {
        let sink = SmtpSink::start();
        sink.fail_next(1);
        let email = || {
            Message::builder()
                .from("a@eventgate.test".parse::<Mailbox>().unwrap())
                .to("b@example.test".parse::<Mailbox>().unwrap())
                .subject("retry me")
                .body(String::from("body"))
                .unwrap()
        };
        let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(sink.port)
            .build();
        let err = mailer.send(email()).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(sink.messages().is_empty());
        mailer.send(email()).await.unwrap();
        assert_eq!(
            sink.wait_for(1, Duration::from_secs(5)).await.unwrap()[0]
                .subject()
                .as_deref(),
            Some("retry me")
        );
    }

    #[test]
    fn raw_protocol_rules() {
        let sink = SmtpSink::start();
        let stream = TcpStream::connect(("127.0.0.1", sink.port)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut expect = |send: &str, code: &str| {
            if !send.is_empty() {
                writer.write_all(send.as_bytes()).unwrap();
            }
            loop {
                let line = String::from_utf8(read_line(&mut reader).unwrap().unwrap()).unwrap();
                assert!(
                    line.starts_with(code),
                    "after {send:?} expected {code}, got {line}"
                );
                if line.as_bytes().get(3) != Some(&b'-') {
                    break;
                }
            }
        };
        expect("", "220");
        expect("HELO client\r\n", "250");
        expect("RCPT TO:<x@y>\r\n", "503");
        expect("DATA\r\n", "503");
        expect("MAIL FROM:<> BODY=8BITMIME\r\n", "250");
        expect("RCPT TO:<x@y>\r\n", "250");
        expect("DATA\r\n", "354");
        expect("Subject: hi\r\n\r\n..one\r\n.\r\n", "250");
        expect("NOOP\r\n", "250");
        expect("STARTTLS\r\n", "502");
        expect("QUIT\r\n", "221");
        let mails = sink.messages();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].from, "");
        assert_eq!(mails[0].data, "Subject: hi\r\n\r\n.one\r\n");
    }
}
