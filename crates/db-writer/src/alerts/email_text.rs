//! What a failure email says: its subject and its plain-text body (short ASCII lines, so it travels as
//! 7bit and reads as is in any client and in the raw message). Pure, like [`super::rules`].

use std::fmt::Write as _;
use std::time::Duration;

use time::OffsetDateTime;

use super::rules::{AlertKind, AlertPolicy, Notice, NoticeState};

/// How long an example may be in an email; error texts can be long.
const MAX_EXAMPLE_CHARS: usize = 400;
/// Columns of the email body.
const BODY_WIDTH: usize = 72;

/// What a kind of failure means for the events, and what to do: the last paragraph of its alert.
fn what_it_means(kind: AlertKind) -> &'static str {
    match kind {
            AlertKind::DeadLetters => {
                "These Kafka messages can never be written (not a valid event envelope, or refused by the \
                 database). Each was parked in the dead_letters table with the raw message, its Kafka \
                 coordinates and the error, and its offset was committed, so its partition kept moving and \
                 every other event was written.\n\
                 List them: GET /stats/{topic}/dead-letters (stats-api, read access to the topic).\n\
                 Once the cause is fixed, replay them (each stored once, with its original id): \
                 eventgate dead-letters list --topic TOPIC, then eventgate dead-letters replay ID \
                 (docs/OPERATIONS.md, Replaying dead letters)."
            }
            AlertKind::DatabaseUnreachable => {
                "The writer cannot reach Postgres. It keeps the batch in hand and retries with backoff; \
                 offsets are not committed, so no accepted event is lost: events wait in Kafka and are \
                 written once the database is back. The stats-api answers 503 meanwhile."
            }
            AlertKind::BrokerUnreachable => {
                "The writer cannot reach the Kafka brokers. The ingest-api answers 503 (type queue) to \
                 producers instead of accepting events; the writers resume by themselves when the brokers \
                 return."
            }
            AlertKind::CrashLoop => {
                "Writers of this consumer group keep dying without a clean stop (killed, out of memory, \
                 panic). Nothing is lost (a restarted writer re-reads the uncommitted batch and the unique \
                 event id makes the replay harmless), but the group may make little progress. Check the \
                 writers' logs and their restarts."
            }
    }
}

impl Notice {
    pub fn subject(&self) -> String {
        let lasted = human_duration(self.at - self.since);
        let text = match (self.kind, self.state) {
            (AlertKind::DeadLetters, NoticeState::Firing) => format!(
                "ALERT: {} {} parked in dead_letters",
                self.count,
                plural(self.count, "message", "messages")
            ),
            (AlertKind::DeadLetters, NoticeState::StillFiring) => {
                "ALERT: dead letters still arriving".to_owned()
            }
            (AlertKind::DeadLetters, NoticeState::Recovered) => {
                format!("RECOVERED: no new dead letters ({} in all)", self.total)
            }
            (AlertKind::DatabaseUnreachable, NoticeState::Firing) => {
                format!("ALERT: database unreachable for {lasted}")
            }
            (AlertKind::DatabaseUnreachable, NoticeState::StillFiring) => {
                format!("ALERT: database still unreachable, for {lasted}")
            }
            (AlertKind::DatabaseUnreachable, NoticeState::Recovered) => {
                format!("RECOVERED: database reachable again after {lasted}")
            }
            (AlertKind::BrokerUnreachable, NoticeState::Firing) => {
                format!("ALERT: Kafka broker unreachable for {lasted}")
            }
            (AlertKind::BrokerUnreachable, NoticeState::StillFiring) => {
                format!("ALERT: Kafka broker still unreachable, for {lasted}")
            }
            (AlertKind::BrokerUnreachable, NoticeState::Recovered) => {
                format!("RECOVERED: Kafka broker reachable again after {lasted}")
            }
            (AlertKind::CrashLoop, NoticeState::Firing | NoticeState::StillFiring) => format!(
                "ALERT: writer crash loop, {} {} within the window",
                self.count,
                plural(self.count, "crash", "crashes")
            ),
            (AlertKind::CrashLoop, NoticeState::Recovered) => {
                "RECOVERED: writers stable again".to_owned()
            }
        };
        format!("[eventgate] {text}")
    }

    /// The plain-text body. `source` names who reports (`db-writer host-1 pid 42, group g`).
    pub fn body(&self, source: &str, policy: &AlertPolicy) -> String {
        let mut body = String::new();
        let state = match self.state {
            NoticeState::Firing => "ALERT",
            NoticeState::StillFiring => "ALERT (still going on)",
            NoticeState::Recovered => "RECOVERED",
        };
        // Writing into a String cannot fail.
        let _ = writeln!(body, "{state}: {}", self.subject_text());
        let _ = writeln!(body);
        let _ = writeln!(body, "Kind:        {}", self.kind.as_str());
        let _ = writeln!(body, "Reported by: {source}");
        let _ = writeln!(body, "Since:       {}", rfc3339(self.since));
        let _ = writeln!(body, "Now:         {}", rfc3339(self.at));
        match (self.kind, self.state) {
            (AlertKind::DeadLetters, NoticeState::Recovered) => {
                let _ = writeln!(
                    body,
                    "Count:       no new dead letter for {}; {} in all since {}",
                    human_duration(policy.window),
                    self.total,
                    rfc3339(self.since)
                );
            }
            (AlertKind::DeadLetters, _) => {
                let _ = writeln!(
                    body,
                    "Count:       {} new dead {} ({} since {})",
                    self.count,
                    plural(self.count, "letter", "letters"),
                    self.total,
                    rfc3339(self.since)
                );
            }
            (AlertKind::CrashLoop, NoticeState::Recovered) => {
                let _ = writeln!(
                    body,
                    "Count:       fewer crashes than the threshold within {}",
                    human_duration(policy.window)
                );
            }
            (AlertKind::CrashLoop, _) => {
                let _ = writeln!(
                    body,
                    "Count:       {} {} within {}",
                    self.count,
                    plural(self.count, "crash", "crashes"),
                    human_duration(policy.window)
                );
            }
            (_, NoticeState::Recovered) => {
                let _ = writeln!(
                    body,
                    "Lasted:      {} ({} failed checks)",
                    human_duration(self.at - self.since),
                    self.total
                );
            }
            (_, _) => {
                let _ = writeln!(
                    body,
                    "Lasted:      {} so far ({} failed checks)",
                    human_duration(self.at - self.since),
                    self.total
                );
            }
        }
        if let Some(detail) = &self.detail {
            let _ = writeln!(body, "Last error:  {}", truncate(detail));
        }
        if !self.examples.is_empty() {
            let _ = writeln!(body);
            let _ = writeln!(
                body,
                "Examples (the first {} of {}):",
                self.examples.len(),
                self.count.max(self.examples.len() as u64)
            );
            for example in &self.examples {
                let _ = writeln!(body, "  - {}", truncate(example));
            }
        }
        let _ = writeln!(body);
        if self.state == NoticeState::Recovered {
            let _ = writeln!(body, "The incident is over; nothing more to do.");
        } else {
            let _ = writeln!(body, "{}", what_it_means(self.kind));
        }
        let _ = writeln!(body);
        let next = match self.next_email_after {
            Some(at) if self.state != NoticeState::Recovered => {
                format!(
                    " The next one about it goes out no earlier than {}.",
                    rfc3339(at)
                )
            }
            _ => String::new(),
        };
        let _ = writeln!(
            body,
            "At most one email per kind of failure every {}, plus one when it clears.{next}",
            human_duration(policy.window)
        );
        // Plain ASCII in lines shorter than 76 characters travels as 7bit: readable as is in any client
        // and in the raw message.
        body.lines().map(wrap_line).collect::<Vec<_>>().join("\n") + "\n"
    }

    fn subject_text(&self) -> String {
        let subject = self.subject();
        let text = subject.trim_start_matches("[eventgate] ");
        text.split_once(": ")
            .map_or(text, |(_, rest)| rest)
            .to_owned()
    }
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn truncate(text: &str) -> String {
    let one_line = text.replace(['\r', '\n'], " ");
    if one_line.chars().count() <= MAX_EXAMPLE_CHARS {
        return one_line;
    }
    let cut: String = one_line.chars().take(MAX_EXAMPLE_CHARS).collect();
    format!("{cut}...")
}

/// Wraps one line of the body at [`BODY_WIDTH`] columns, continuation lines indented like the line's
/// value (`Key:         value`, `  - example`); non-ASCII characters become `\u{..}` escapes.
fn wrap_line(line: &str) -> String {
    let line: String = line
        .chars()
        .map(|c| {
            if c.is_ascii() && (!c.is_ascii_control() || c == '\t') {
                c.to_string()
            } else {
                c.escape_unicode().to_string()
            }
        })
        .collect();
    if line.len() <= BODY_WIDTH {
        return line;
    }
    // `Key:  value` lines hang under the value; example lines under the example text.
    let key = line.find(": ").filter(|&colon| {
        line[..colon]
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == ' ')
    });
    let indent = match key {
        _ if line.starts_with("  - ") => 4,
        Some(colon) => colon + 1 + line[colon + 1..].len() - line[colon + 1..].trim_start().len(),
        None => 0,
    };
    let indent = if indent >= BODY_WIDTH / 2 { 4 } else { indent };
    let mut out = String::new();
    let mut rest = line.as_str();
    let mut first = true;
    while !rest.is_empty() {
        let width = if first {
            BODY_WIDTH
        } else {
            BODY_WIDTH - indent
        };
        if !first {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
        }
        if rest.len() <= width {
            out.push_str(rest);
            break;
        }
        // Break at the last space that fits, or hard in the middle of a very long word.
        let cut = rest[..=width]
            .rfind(' ')
            .filter(|&i| i > 0)
            .unwrap_or(width);
        out.push_str(rest[..cut].trim_end());
        rest = rest[cut..].trim_start();
        first = false;
    }
    out
}

/// `1h 2m`, `3m 4s`, `5s`, `250ms`.
pub fn human_duration(duration: impl TryInto<Duration>) -> String {
    let duration: Duration = duration.try_into().unwrap_or(Duration::ZERO);
    let secs = duration.as_secs();
    match secs {
        0 => format!("{}ms", duration.as_millis()),
        1..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::tests::{policy, secs, T0};
    use crate::alerts::rules::Alerter;

    #[test]
    fn the_body_says_what_happened_and_what_to_do() {
        let mut alerter = Alerter::new(policy());
        let long = "x".repeat(2000);
        alerter.record(
            AlertKind::DeadLetters,
            2,
            vec![
                "topic audit.logs, eventgate.audit.logs partition 1 offset 7: database refused the event"
                    .to_owned(),
                long,
            ],
            T0,
        );
        let notice = alerter.poll(T0 + secs(30)).remove(0);
        let body = notice.body(
            "db-writer host-1 pid 42, group eventgate-db-writer",
            &policy(),
        );
        assert!(
            body.lines().all(|l| l.len() <= BODY_WIDTH && l.is_ascii()),
            "short ASCII lines: {body}"
        );
        let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            body.starts_with("ALERT: 2 messages parked in dead_letters Kind:"),
            "{body}"
        );
        assert!(
            body.contains("Reported by: db-writer host-1 pid 42"),
            "{body}"
        );
        assert!(body.contains("Since: 2025-01-15T10:00:00Z"), "{body}");
        assert!(body.contains("Count: 2 new dead letters"), "{body}");
        assert!(body.contains("Examples (the first 2 of 2):"), "{body}");
        assert!(
            body.contains("partition 1 offset 7: database refused"),
            "{body}"
        );
        assert!(body.contains("GET /stats/{topic}/dead-letters"), "{body}");
        assert!(
            body.contains(
                "eventgate dead-letters list --topic TOPIC, then eventgate dead-letters replay ID"
            ),
            "how to replay: {body}"
        );
        assert!(body.contains("every 10m 0s"), "{body}");
        assert!(
            !body.contains(&"x".repeat(MAX_EXAMPLE_CHARS + 1)),
            "long examples are cut"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(secs(59)), "59s");
        assert_eq!(human_duration(secs(61)), "1m 1s");
        assert_eq!(human_duration(secs(7322)), "2h 2m");
        assert_eq!(human_duration(time::Duration::seconds(-5)), "0ms");
    }
}
