//! One batch's way to the ingest-api: the request, the reading of each kind of answer, and what is sent
//! again. Events keep the ids they were given when read, so a batch sent again after an unconfirmed
//! attempt (503, 5xx, a lost connection) is stored once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{error_of, retry_after, Api, INGEST};
use crate::error::{describe_transport, ApiError, ErrorDetail, Failure};
use crate::input::{Pending, Position};

/// What every delivery shares.
pub struct Retrying {
    pub api: Arc<Api>,
    pub topic: String,
    pub retries: u32,
    /// The events carry ids: a batch the service may or may not have taken can be sent again.
    pub resend_unconfirmed: bool,
}

/// One event the API (or the reader) refused, with the API's field-level errors.
#[derive(Debug)]
pub struct Refusal {
    pub at: Position,
    pub errors: Vec<ErrorDetail>,
    /// The event as sent, for `--refused FILE`.
    pub event: Option<Vec<u8>>,
}

impl Refusal {
    pub fn local(at: Position, message: String) -> Refusal {
        Refusal {
            at,
            errors: vec![ErrorDetail {
                kind: "input".into(),
                message,
                field: None,
            }],
            event: None,
        }
    }

    pub fn without_event(mut self) -> Refusal {
        self.event = None;
        self
    }

    /// A line of `--refused FILE`: where, why, and the event itself.
    pub fn to_json(&self) -> Value {
        let event = self
            .event
            .as_deref()
            .and_then(|json| serde_json::from_slice::<Value>(json).ok());
        let mut line = json!({"at": self.at.to_string(), "errors": self.errors});
        match self.at {
            Position::Line(n) => line["line"] = json!(n),
            Position::Element(n) => line["index"] = json!(n),
        }
        if let Some(event) = event {
            line["event"] = event;
        }
        line
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {}: {error}", self.at)?;
        }
        Ok(())
    }
}

/// What became of one batch.
#[derive(Debug, Default)]
pub struct BatchReport {
    pub accepted: u64,
    pub refused: Vec<Refusal>,
    pub retried_events: u64,
    pub retry_requests: u64,
    pub unconfirmed: u64,
    pub unconfirmed_first: Option<Position>,
    pub unconfirmed_reason: Option<String>,
    /// Not sent because a failure stopped everything.
    pub not_sent: u64,
    /// A failure no other batch can get past (401, 403 on the topic, 404).
    pub fatal: Option<Failure>,
}

/// A part of a batch on its way, with the attempts made for it.
struct Part {
    events: Vec<Pending>,
    attempt: u32,
}

/// How one request ended.
enum Answer {
    /// 202: every event accepted.
    Accepted,
    /// 207: each event's outcome, by index.
    PerEvent(Vec<EventResult>, Option<Duration>),
    /// An error answer.
    Error(ApiError),
    /// No answer. `sent`: the request may have reached the service.
    Transport { message: String, sent: bool },
}

#[derive(Debug, Deserialize)]
struct EventResult {
    index: usize,
    #[serde(rename = "statusCode")]
    status: u16,
    #[serde(default)]
    errors: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct MultiStatus {
    #[serde(default)]
    results: Vec<EventResult>,
}

pub async fn deliver(retrying: Arc<Retrying>, batch: Vec<Pending>) -> BatchReport {
    let mut report = BatchReport::default();
    let mut work = vec![Part {
        events: batch,
        attempt: 0,
    }];
    while let Some(part) = work.pop() {
        let answer = post(&retrying, &part.events).await;
        match answer {
            Answer::Accepted => report.accepted += part.events.len() as u64,
            Answer::PerEvent(results, wait) => {
                let mut again = Vec::new();
                let mut reason = None;
                let mut by_index: Vec<Option<EventResult>> =
                    part.events.iter().map(|_| None).collect();
                for result in results {
                    if let Some(slot) = by_index.get_mut(result.index) {
                        *slot = Some(result);
                    }
                }
                for (event, result) in part.events.into_iter().zip(by_index) {
                    match result {
                        Some(r) if (200..300).contains(&r.status) => report.accepted += 1,
                        Some(r) if is_transient(r.status) => {
                            reason = Some(format!("{} for some events of a 207", r.status));
                            again.push(event)
                        }
                        Some(r) => report.refused.push(refusal(event, r.errors)),
                        // No word about it: it was not confirmed.
                        None => again.push(event),
                    }
                }
                if !again.is_empty() {
                    let reason = reason.unwrap_or_else(|| "missing from a 207 answer".into());
                    retry(
                        &retrying,
                        &mut report,
                        &mut work,
                        Part {
                            events: again,
                            attempt: part.attempt,
                        },
                        wait,
                        true,
                        reason,
                    )
                    .await;
                }
            }
            Answer::Error(error) => match error.status {
                400 | 403 | 413 => refuse_or_split(&mut report, &mut work, part, error),
                401 | 404 => {
                    report.not_sent += part.events.len() as u64;
                    report.fatal = Some(error.into_failure(INGEST, "the events"));
                    break;
                }
                status if is_transient(status) => {
                    // Refused before any work: 429 (rate), 408 (the body did not arrive).
                    let safe = matches!(status, 408 | 429);
                    let wait = error.retry_after;
                    let reason = format!("{status}{}", error.lines().replace("\n  ", " "));
                    retry(&retrying, &mut report, &mut work, part, wait, safe, reason).await;
                }
                _ => {
                    report.not_sent += part.events.len() as u64;
                    report.fatal = Some(error.into_failure(INGEST, "the events"));
                    break;
                }
            },
            Answer::Transport { message, sent } => {
                retry(
                    &retrying,
                    &mut report,
                    &mut work,
                    part,
                    None,
                    !sent,
                    message,
                )
                .await;
            }
        }
    }
    for part in work {
        report.not_sent += part.events.len() as u64;
    }
    report
}

fn is_transient(status: u16) -> bool {
    matches!(status, 408 | 429) || status >= 500
}

/// Sends `part` again after a pause, unless its attempts are used up or sending it again could store
/// it twice (`safe`: the service certainly did not take it; else only with ids).
async fn retry(
    retrying: &Retrying,
    report: &mut BatchReport,
    work: &mut Vec<Part>,
    mut part: Part,
    retry_after: Option<Duration>,
    safe: bool,
    reason: String,
) {
    if part.attempt >= retrying.retries || !(safe || retrying.resend_unconfirmed) {
        report.unconfirmed += part.events.len() as u64;
        report.unconfirmed_first = part.events.first().map(|e| e.at);
        let after = if part.attempt == 0 {
            String::new()
        } else {
            format!(" after {} attempts", part.attempt + 1)
        };
        report.unconfirmed_reason = Some(format!("{reason}{after}"));
        return;
    }
    part.attempt += 1;
    tokio::time::sleep(backoff(part.attempt, retry_after)).await;
    report.retry_requests += 1;
    report.retried_events += part.events.len() as u64;
    work.push(part);
}

/// `Retry-After` when the service gave one; else 250 ms doubling up to 30 s, each pause drawn between
/// half and all of it so that many clients do not come back in step.
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(wait) = retry_after {
        return wait;
    }
    let full = Duration::from_millis(250)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(10))
        .min(Duration::from_secs(30));
    let half = full / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

/// A 400, 403 or 413: events the errors name (`[3].description`) are refused; the others were not
/// published and go again. Errors about the request as a whole (`body`: too many events, too large)
/// split the batch in two until each event has its own answer.
fn refuse_or_split(report: &mut BatchReport, work: &mut Vec<Part>, part: Part, error: ApiError) {
    let mut per_event: Vec<Vec<ErrorDetail>> = part.events.iter().map(|_| Vec::new()).collect();
    let mut general = Vec::new();
    for detail in error.errors {
        match split_index(detail.field.as_deref()) {
            Some((index, field)) if index < per_event.len() => {
                per_event[index].push(ErrorDetail { field, ..detail })
            }
            _ => general.push(detail),
        }
    }
    let named_any = per_event.iter().any(|errors| !errors.is_empty());
    if !named_any {
        if error.status == 403 {
            // The topic itself (no event named): no other batch will fare better.
            report.not_sent += part.events.len() as u64;
            report.fatal = Some(
                ApiError {
                    status: 403,
                    errors: general,
                    request_id: error.request_id,
                    retry_after: None,
                }
                .into_failure(INGEST, "the events"),
            );
        } else if part.events.len() > 1 {
            let mut first = part.events;
            let second = first.split_off(first.len() / 2);
            // Popped last first: the first half goes first.
            work.push(Part {
                events: second,
                attempt: part.attempt,
            });
            work.push(Part {
                events: first,
                attempt: part.attempt,
            });
        } else {
            for event in part.events {
                report.refused.push(refusal(event, general.clone()));
            }
        }
        return;
    }
    let mut rest = Vec::new();
    for (event, errors) in part.events.into_iter().zip(per_event) {
        if errors.is_empty() {
            rest.push(event);
        } else {
            let mut errors = errors;
            errors.extend(general.iter().cloned());
            report.refused.push(refusal(event, errors));
        }
    }
    if !rest.is_empty() {
        work.push(Part {
            events: rest,
            attempt: part.attempt,
        });
    }
}

/// `[3].jobs[0].status` → (3, `jobs[0].status`); `[3]` → (3, none).
fn split_index(field: Option<&str>) -> Option<(usize, Option<String>)> {
    let rest = field?.strip_prefix('[')?;
    let (digits, rest) = rest.split_once(']')?;
    let index = digits.parse().ok()?;
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    Some((index, (!rest.is_empty()).then(|| rest.to_owned())))
}

fn refusal(event: Pending, errors: Vec<ErrorDetail>) -> Refusal {
    let errors = errors
        .into_iter()
        .map(|detail| match split_index(detail.field.as_deref()) {
            Some((_, field)) => ErrorDetail { field, ..detail },
            None => detail,
        })
        .collect();
    Refusal {
        at: event.at,
        errors,
        event: Some(event.json),
    }
}

async fn post(retrying: &Retrying, events: &[Pending]) -> Answer {
    let size = events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 1;
    let mut body = Vec::with_capacity(size);
    body.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&event.json);
    }
    body.push(b']');
    let api = &retrying.api;
    let url = api.ingest(&["topics", &retrying.topic]);
    let request = api
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            return Answer::Transport {
                message: describe_transport(INGEST, url.as_str(), &e),
                // A refused connection never carried the request.
                sent: !e.is_connect(),
            };
        }
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => {
            return Answer::Transport {
                message: format!("{INGEST} broke off its answer ({status}): {e}"),
                sent: true,
            }
        }
    };
    match status {
        200..=202 => Answer::Accepted,
        207 => match serde_json::from_slice::<MultiStatus>(&body) {
            Ok(multi) => Answer::PerEvent(multi.results, retry_after(&headers)),
            Err(e) => Answer::Transport {
                message: format!("{INGEST} answered 207 with an unreadable body: {e}"),
                sent: true,
            },
        },
        _ => Answer::Error(error_of(status, &headers, &body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(n: u64) -> Pending {
        Pending {
            at: Position::Line(n),
            json: format!("{{\"n\":{n}}}").into_bytes(),
        }
    }

    fn error(status: u16, fields: &[Option<&str>]) -> ApiError {
        ApiError {
            status,
            errors: fields
                .iter()
                .map(|field| ErrorDetail {
                    kind: "validation".into(),
                    message: "bad".into(),
                    field: field.map(str::to_owned),
                })
                .collect(),
            request_id: None,
            retry_after: None,
        }
    }

    #[test]
    fn indexes_are_split_off_field_names() {
        assert_eq!(
            split_index(Some("[3].jobs[0].status")),
            Some((3, Some("jobs[0].status".into())))
        );
        assert_eq!(split_index(Some("[12]")), Some((12, None)));
        assert_eq!(split_index(Some("description")), None);
        assert_eq!(split_index(None), None);
    }

    #[test]
    fn named_events_are_refused_and_the_others_go_again() {
        let mut report = BatchReport::default();
        let mut work = Vec::new();
        let part = Part {
            events: (1..=4).map(pending).collect(),
            attempt: 0,
        };
        refuse_or_split(
            &mut report,
            &mut work,
            part,
            error(400, &[Some("[1].a"), Some("[3]")]),
        );
        let refused: Vec<_> = report.refused.iter().map(|r| r.at).collect();
        assert_eq!(refused, [Position::Line(2), Position::Line(4)]);
        assert_eq!(report.refused[0].errors[0].field.as_deref(), Some("a"));
        assert_eq!(report.refused[1].errors[0].field, None);
        assert_eq!(work.len(), 1);
        let again: Vec<_> = work[0].events.iter().map(|e| e.at).collect();
        assert_eq!(again, [Position::Line(1), Position::Line(3)]);
    }

    #[test]
    fn a_refusal_of_the_whole_request_splits_it_down_to_single_events() {
        let mut report = BatchReport::default();
        let mut work = Vec::new();
        let part = Part {
            events: (1..=3).map(pending).collect(),
            attempt: 0,
        };
        refuse_or_split(&mut report, &mut work, part, error(413, &[Some("body")]));
        assert!(report.refused.is_empty());
        assert_eq!(work.len(), 2);
        assert_eq!(work[1].events.len(), 1, "the first half is handled first");
        let single = work.pop().expect("part");
        refuse_or_split(&mut report, &mut work, single, error(413, &[Some("body")]));
        assert_eq!(report.refused.len(), 1);
        assert_eq!(report.refused[0].errors[0].field.as_deref(), Some("body"));
    }

    #[test]
    fn a_403_on_the_topic_stops_everything() {
        let mut report = BatchReport::default();
        let mut work = Vec::new();
        let part = Part {
            events: vec![pending(1)],
            attempt: 0,
        };
        refuse_or_split(&mut report, &mut work, part, error(403, &[Some("topic")]));
        assert!(report.fatal.is_some());
        assert_eq!(report.not_sent, 1);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        assert_eq!(
            backoff(3, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        let first = backoff(1, None);
        assert!(
            first >= Duration::from_millis(125) && first <= Duration::from_millis(250),
            "{first:?}"
        );
        let late = backoff(30, None);
        assert!(
            late >= Duration::from_secs(15) && late <= Duration::from_secs(30),
            "{late:?}"
        );
    }

    #[test]
    fn a_refused_event_is_written_with_where_why_and_what() {
        let refusal = refusal(pending(7), error(400, &[Some("[0].a")]).errors);
        assert_eq!(
            refusal.to_json(),
            json!({"at": "line 7", "line": 7, "errors": [{"type": "validation", "message": "bad", "field": "a"}], "event": {"n": 7}})
        );
        assert_eq!(refusal.to_string(), "  line 7: a: bad");
    }
}
