//! AbsaOSS/EventGate's `POST /stats/{topic_name}` (its `api.yaml`, `handler_stats.py`,
//! `reader_postgres.py`): the body `{"timestamp_start": ms, "timestamp_end": ms, "cursor": …, "limit": n}`
//! selects the runs whose own `timestamp_start` lies in the window (both ends inclusive, default the last
//! 7 days), and the answer has **one row per job**: the run's columns, the job's, and the computed
//! `run_date`, `run_status`, `formatted_tenant`, `elapsed_time`, `start_time`, `end_time`.
//!
//! Here a run is one event holding its `jobs`, so the form is a query (`timestamp_start_between`, the
//! reader's restrictions, newest received first) whose events are flattened job by job, within the same
//! `limit` (rows, at most `max_limit` — EventGate clamps, so this does too), byte budget and statement
//! timeout as any page. EventGate's cursor is the `internal_id` of the last row, an integer; we have no
//! such id, so the cursor is a string (`eg.<start>.<end>.<jobs sent>.<query cursor>`): the window, how
//! many jobs of the next run earlier pages sent, and the signed keyset cursor of the run before it. The
//! window travels in it, so the pages of one walk share it even when the request leaves it out (EventGate
//! recomputes "the last 7 days" on every page); a forged window fails the signed cursor's fingerprint,
//! a forged job count only shows other jobs of a run the reader may see anyway. An integer cursor is a
//! 400 that says to send the string back.

use std::ops::ControlFlow;

use actix_web::HttpResponse;
use serde::Deserialize;
use serde_json::{Map, Value};

use eventgate_core::envelope::Event;
use eventgate_core::error::{ApiError, ErrorDetail, ErrorKind};
use eventgate_core::http::TopicReader;
use eventgate_core::query::{
    self, FieldCatalogue, FieldSource, QueryLimits, QueryPlan, QueryRequest,
};

use crate::raw_json::RawEvent;
use crate::routes::write_json;
use crate::{db, AppState};

/// EventGate's default window: the last 7 days (`POSTGRES_DEFAULT_WINDOW_MS`).
const DEFAULT_WINDOW_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// The keys of EventGate's body.
const KEYS: [&str; 4] = ["timestamp_start", "timestamp_end", "cursor", "limit"];
/// Keys only the query language has: a body with any of them is a query.
const QUERY_KEYS: [&str; 6] = ["filter", "sort", "fields", "count", "page", "page_size"];
/// Starts every cursor of this form; never a query cursor (URL-safe base64 has no `.`).
const CURSOR_PREFIX: &str = "eg.";

/// Whether a `POST /stats/{topic}` body is EventGate's request: an object with none of the query
/// language's own keys, and `timestamp_start` or `timestamp_end` at the top (a query has them only inside
/// `filter`), or an integer or `eg.` cursor. Anything else (`{}` and `{"limit": n}` included) is a query.
pub(crate) fn is_eventgate_form(body: &Value) -> bool {
    let Some(object) = body.as_object() else {
        return false;
    };
    if QUERY_KEYS.iter().any(|key| object.contains_key(*key)) {
        return false;
    }
    object.contains_key("timestamp_start")
        || object.contains_key("timestamp_end")
        || match object.get("cursor") {
            Some(Value::Number(_)) => true,
            Some(Value::String(cursor)) => cursor.starts_with(CURSOR_PREFIX),
            _ => false,
        }
}

/// Where a walk is: the window, the jobs of the next run already sent, the query cursor before that run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub start: i64,
    pub end: i64,
    pub jobs_sent: usize,
    pub after: Option<String>,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!(
            "{CURSOR_PREFIX}{}.{}.{}.{}",
            self.start,
            self.end,
            self.jobs_sent,
            self.after.as_deref().unwrap_or("")
        )
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let mut parts = text.strip_prefix(CURSOR_PREFIX)?.splitn(4, '.');
        let start = parts.next()?.parse().ok()?;
        let end = parts.next()?.parse().ok()?;
        let jobs_sent = parts.next()?.parse().ok()?;
        let after = parts.next()?;
        Some(Cursor {
            start,
            end,
            jobs_sent,
            after: (!after.is_empty()).then(|| after.to_owned()),
        })
    }
}

/// EventGate's body, checked: every mistake at once, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatsRequest {
    pub timestamp_start: Option<i64>,
    pub timestamp_end: Option<i64>,
    pub cursor: Option<Cursor>,
    pub limit: Option<u64>,
}

pub(crate) fn parse(body: &Value, limits: &QueryLimits) -> Result<StatsRequest, ApiError> {
    let mut errors = Vec::new();
    let empty = Map::new();
    let object = body.as_object().unwrap_or(&empty);
    for key in object.keys().filter(|key| !KEYS.contains(&key.as_str())) {
        errors.push(ErrorDetail::validation(
            key.as_str(),
            format!(
                "unknown key `{}` in EventGate's stats request, which takes timestamp_start, \
                 timestamp_end, cursor and limit (the query language's `filter` cannot be mixed with them)",
                query::value::shorten(key, 64)
            ),
        ));
    }
    let mut time = |key: &str| match object.get(key) {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_i64() {
            Some(ms) if query::value::parse_client_time(value).is_ok() => Some(ms),
            Some(_) => {
                errors.push(ErrorDetail::validation(
                    key,
                    "epoch milliseconds out of range (years 0001 to 9999)",
                ));
                None
            }
            None => {
                errors.push(ErrorDetail::validation(
                    key,
                    "must be an integer (epoch milliseconds)",
                ));
                None
            }
        },
    };
    let timestamp_start = time("timestamp_start");
    let timestamp_end = time("timestamp_end");
    let cursor = match object.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.len() <= limits.max_cursor_len => {
            let cursor = Cursor::decode(text);
            if cursor.is_none() {
                errors.push(ErrorDetail::validation(
                    "cursor",
                    "invalid cursor: pass the `pagination.cursor` of the previous page unchanged",
                ));
            }
            cursor
        }
        Some(Value::String(_)) => {
            errors.push(ErrorDetail::validation(
                "cursor",
                format!(
                    "cursor longer than {} characters: pass the `pagination.cursor` of the previous page unchanged",
                    limits.max_cursor_len
                ),
            ));
            None
        }
        Some(Value::Number(_)) => {
            errors.push(ErrorDetail::validation(
                "cursor",
                "EventGate's integer cursor (a job's internal_id) does not exist here: send back the \
                 string `pagination.cursor` of the previous page, unchanged",
            ));
            None
        }
        Some(_) => {
            errors.push(ErrorDetail::validation(
                "cursor",
                "must be the string `pagination.cursor` of the previous page, or null",
            ));
            None
        }
    };
    let limit = match object.get("limit") {
        None => None,
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => {
                errors.push(ErrorDetail::validation(
                    "limit",
                    "must be a positive integer",
                ));
                None
            }
        },
    };
    if errors.is_empty() {
        Ok(StatsRequest {
            timestamp_start,
            timestamp_end,
            cursor,
            limit,
        })
    } else {
        Err(ApiError::from_details(errors))
    }
}

/// The request with its defaults: the window (the cursor's, which a given bound must equal), the rows
/// per page (clamped to `max_limit`, as EventGate clamps to its 1000), where to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub start: i64,
    pub end: i64,
    pub limit: u32,
    pub jobs_sent: usize,
    pub after: Option<String>,
}

pub(crate) fn resolve(
    request: StatsRequest,
    now_ms: i64,
    limits: &QueryLimits,
) -> Result<Resolved, ApiError> {
    let limit = request.limit.map_or(limits.default_limit, |n| {
        u32::try_from(n).unwrap_or(u32::MAX).min(limits.max_limit)
    });
    let Some(cursor) = request.cursor else {
        return Ok(Resolved {
            start: request
                .timestamp_start
                .unwrap_or(now_ms.saturating_sub(DEFAULT_WINDOW_MS)),
            end: request.timestamp_end.unwrap_or(now_ms),
            limit,
            jobs_sent: 0,
            after: None,
        });
    };
    let differs = |given: Option<i64>, walked: i64| given.is_some_and(|ms| ms != walked);
    if differs(request.timestamp_start, cursor.start) || differs(request.timestamp_end, cursor.end)
    {
        return Err(ApiError::new(
            ErrorKind::Validation,
            format!(
                "this cursor walks the window {}..{}: send the same timestamp_start and timestamp_end \
                 (or neither), or start over without a cursor",
                cursor.start, cursor.end
            ),
        )
        .with_field("cursor"));
    }
    Ok(Resolved {
        start: cursor.start,
        end: cursor.end,
        limit,
        jobs_sent: cursor.jobs_sent,
        after: cursor.after,
    })
}

impl Resolved {
    /// The query whose events are flattened: the runs whose `timestamp_start` is in the window, newest
    /// received first (EventGate's `internal_id DESC` is the order its writer inserted the jobs).
    pub fn query(&self) -> QueryRequest {
        let mut filter = Map::new();
        filter.insert(
            "timestamp_start_between".to_owned(),
            Value::from(vec![self.start, self.end]),
        );
        QueryRequest {
            filter,
            cursor: self.after.clone(),
            limit: Some(u64::from(self.limit)),
            ..QueryRequest::default()
        }
    }
}

/// A topic this form can read: runs with a time field `timestamp_start` and an array `jobs`
/// (EventGate's stats serve its runs topic only, and answer 400 for the others).
pub(crate) fn check_topic(fields: &FieldCatalogue) -> Result<(), ApiError> {
    let start = fields.lookup("timestamp_start").is_some_and(|field| {
        matches!(&field.source, FieldSource::Payload(path) if path.len() == 1) && field.ty.is_time()
    });
    let jobs = fields.fields().any(
        |field| matches!(&field.source, FieldSource::Items { array, .. } if array.len() == 1 && array[0] == "jobs"),
    );
    if start && jobs {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorKind::Validation,
        "EventGate's stats request (timestamp_start, timestamp_end, cursor, limit) reads topics of runs \
         with a time field `timestamp_start` and an array `jobs`, such as public.cps.za.runs; this topic \
         has no such fields: query it with `filter` (docs/API.md)",
    )
    .with_field("topic"))
}

/// The run members each row repeats, as EventGate's reader selects them.
#[derive(Debug, Default, Deserialize)]
struct Run {
    event_id: Option<Value>,
    job_ref: Option<Value>,
    tenant_id: Option<Value>,
    source_app: Option<Value>,
    source_app_version: Option<Value>,
    environment: Option<Value>,
    timestamp_start: Option<Value>,
    timestamp_end: Option<Value>,
    jobs: Option<Value>,
}

impl Run {
    /// The jobs in the answer's order: last first, as EventGate's `internal_id DESC` gives the jobs of
    /// one run (its writer inserts them in the run's order). Each with its index in the run.
    fn jobs_newest_first(&self) -> Vec<(usize, &Value)> {
        match &self.jobs {
            Some(Value::Array(jobs)) => jobs.iter().enumerate().rev().collect(),
            _ => Vec::new(),
        }
    }
}

/// One row of the answer: EventGate's columns in its order, its computed members, then ours: the
/// stored event's `id` (for `GET /stats/{topic}/events/{id}`) and the job's index in the run.
/// `internal_id` is null: there is no job id here.
fn job_row(id: uuid::Uuid, run: &Run, job: &Value, job_index: usize) -> Vec<(&'static str, Value)> {
    let field = |value: &Option<Value>| value.clone().unwrap_or(Value::Null);
    let job_field = |name: &str| job.get(name).cloned().unwrap_or(Value::Null);
    let job_start = job.get("timestamp_start").and_then(Value::as_i64);
    let job_end = job.get("timestamp_end").and_then(Value::as_i64);
    let run_start = run.timestamp_start.as_ref().and_then(Value::as_i64);
    vec![
        ("event_id", field(&run.event_id)),
        ("job_ref", field(&run.job_ref)),
        ("tenant_id", field(&run.tenant_id)),
        ("source_app", field(&run.source_app)),
        ("source_app_version", field(&run.source_app_version)),
        ("environment", field(&run.environment)),
        ("run_timestamp_start", field(&run.timestamp_start)),
        ("run_timestamp_end", field(&run.timestamp_end)),
        ("internal_id", Value::Null),
        ("country", job_field("country")),
        ("catalog_id", job_field("catalog_id")),
        ("status", job_field("status")),
        ("timestamp_start", job_field("timestamp_start")),
        ("timestamp_end", job_field("timestamp_end")),
        ("message", job_field("message")),
        ("additional_info", job_field("additional_info")),
        ("run_date", utc(run_start, DAY_MONTH_YEAR)),
        (
            "run_status",
            Value::from(run_status(job.get("status"), job.get("message"))),
        ),
        (
            "formatted_tenant",
            Value::from(text(run.tenant_id.as_ref()).to_lowercase()),
        ),
        (
            "elapsed_time",
            match (job_start, job_end) {
                (Some(start), Some(end)) => end.checked_sub(start).map_or(Value::Null, Value::from),
                _ => Value::Null,
            },
        ),
        ("start_time", utc(job_start, DATE_TIME)),
        ("end_time", utc(job_end, DATE_TIME)),
        ("id", Value::from(id.to_string())),
        ("job_index", Value::from(job_index)),
    ]
}

/// A JSON value as Python's `str()` would give it to EventGate's `.lower()` (missing and null: empty).
fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// EventGate's `run_status` of a job: its status and message, case-insensitively.
fn run_status(status: Option<&Value>, message: Option<&Value>) -> &'static str {
    if text(status).to_lowercase() != "failed" {
        return "succeeded";
    }
    let message = text(message).to_lowercase();
    if message.contains("no data") {
        "no data received"
    } else if message.contains("no records to send") {
        "no data produced"
    } else {
        "failed"
    }
}

const DAY_MONTH_YEAR: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[day]-[month]-[year]");
const DATE_TIME: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// Epoch milliseconds as UTC text (`strftime` of EventGate's reader); null without a value.
fn utc(ms: Option<i64>, format: &[time::format_description::FormatItem<'static>]) -> Value {
    ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    })
    .and_then(|instant| instant.format(format).ok())
    .map_or(Value::Null, Value::from)
}

fn write_row(out: &mut Vec<u8>, row: &[(&'static str, Value)]) {
    out.push(b'{');
    for (i, (name, value)) in row.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::raw_json::write_json_string(out, name);
        out.push(b':');
        write_json(out, value);
    }
    out.push(b'}');
}

/// Writes the rows of the events as they arrive, up to `limit` rows or the byte budget, and remembers
/// where the next page starts.
struct Flattener {
    body: Vec<u8>,
    rows: usize,
    limit: usize,
    max_bytes: usize,
    /// Jobs of the first event sent by earlier pages.
    skip: usize,
    /// The last run whose every job is on this page or before (its sort keys): the next page's query
    /// cursor is after it.
    done: Option<Event>,
    /// Jobs of the run after `done` on this page or before, when the page ends inside it.
    jobs_sent: usize,
    has_more: bool,
    cut_by_bytes: bool,
}

impl Flattener {
    fn push(&mut self, event: &RawEvent, plan: &QueryPlan) -> ControlFlow<()> {
        // A payload that is not a run (its members of other types) flattens to what it has.
        let run: Run = serde_json::from_str(event.payload).unwrap_or_default();
        let skip = std::mem::take(&mut self.skip);
        for (position, (index, job)) in run.jobs_newest_first().into_iter().enumerate().skip(skip) {
            if self.rows == self.limit {
                return self.stop(position, false);
            }
            let mark = self.body.len();
            if self.rows > 0 {
                self.body.push(b',');
            }
            write_row(&mut self.body, &job_row(event.id, &run, job, index));
            if self.rows > 0 && self.body.len() > self.max_bytes {
                self.body.truncate(mark);
                return self.stop(position, true);
            }
            self.rows += 1;
        }
        self.done = Some(event.sort_key_event(plan));
        self.jobs_sent = 0;
        ControlFlow::Continue(())
    }

    fn stop(&mut self, jobs_sent: usize, by_bytes: bool) -> ControlFlow<()> {
        self.jobs_sent = jobs_sent;
        self.has_more = true;
        self.cut_by_bytes = by_bytes;
        ControlFlow::Break(())
    }
}

/// Answers EventGate's request on the topic of `reader`, restrictions applied, in EventGate's shape.
pub(crate) async fn answer(
    state: &AppState,
    reader: &TopicReader,
    restrictions: &[query::Filter],
    body: &Value,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let result = run(state, reader, restrictions, body).await;
    state
        .metrics
        .observe_query(&reader.topic.name, &result, started.elapsed());
    result
}

async fn run(
    state: &AppState,
    reader: &TopicReader,
    restrictions: &[query::Filter],
    body: &Value,
) -> Result<HttpResponse, ApiError> {
    let topic = &reader.topic;
    let request = parse(body, &state.limits)?;
    check_topic(&topic.fields)?;
    let now_ms = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX);
    let resolved = resolve(request, now_ms, &state.limits)?;
    let mut plan = query::plan_restricted(
        &topic.name,
        &resolved.query(),
        &topic.fields,
        &state.limits,
        &state.cursor_key,
        restrictions,
    )?;
    state.field_usage.record(&topic.name, &plan);
    state.field_usage.mark_indexed(&topic.name, &mut plan);
    let mut page = Flattener {
        body: br#"{"success":true,"statusCode":200,"data":["#.to_vec(),
        rows: 0,
        limit: resolved.limit as usize,
        max_bytes: state.answers.max_page_bytes,
        skip: resolved.jobs_sent,
        done: None,
        jobs_sent: resolved.jobs_sent,
        has_more: false,
        cut_by_bytes: false,
    };
    let slot = state.slot(&reader.principal.user)?;
    let events = db::page::stream_page(&state.pool, &topic.name, &plan, |event| {
        page.push(event, &plan)
    })
    .await
    .map_err(|e| state.store_error(e))?;
    drop(slot);
    // Every event the query gave was flattened and it gave `limit + 1`: more runs may follow.
    if !page.has_more && events > plan.limit as usize {
        page.has_more = true;
        page.jobs_sent = 0;
    }
    if page.cut_by_bytes {
        state.metrics.limit_hit("page_bytes");
    }
    let cursor = page.has_more.then(|| {
        Cursor {
            start: resolved.start,
            end: resolved.end,
            jobs_sent: page.jobs_sent,
            after: match &page.done {
                Some(run) => Some(plan.next_cursor(run, &state.cursor_key)),
                None => resolved.after.clone(),
            },
        }
        .encode()
    });
    let mut body = page.body;
    body.extend_from_slice(b"],\"pagination\":");
    write_json(
        &mut body,
        &serde_json::json!({"cursor": cursor, "has_more": page.has_more, "limit": resolved.limit}),
    );
    body.push(b'}');
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn limits() -> QueryLimits {
        QueryLimits::default()
    }

    #[test]
    fn eventgates_bodies_are_told_from_queries() {
        for body in [
            json!({"timestamp_start": 1_704_067_200_000_i64, "timestamp_end": 1_706_745_600_000_i64}),
            json!({"timestamp_start": 1}),
            json!({"timestamp_end": null, "limit": 2}),
            json!({"cursor": 17, "limit": 2}),
            json!({"cursor": "eg.1.2.0.", "limit": 2}),
            json!({"timestamp_start": 1, "unknown": true}),
        ] {
            assert!(is_eventgate_form(&body), "{body}");
        }
        for body in [
            json!({}),
            json!({"limit": 2}),
            json!({"cursor": null}),
            json!({"cursor": "eyJxIjoi"}),
            json!({"filter": {"timestamp_start_between": [1, 2]}}),
            json!({"filter": {}, "timestamp_start": 1}),
            json!({"sort": ["-timestamp"], "timestamp_end": 1}),
            json!({"page": 1, "cursor": 3}),
            json!([{"timestamp_start": 1}]),
        ] {
            assert!(!is_eventgate_form(&body), "{body}");
        }
    }

    #[test]
    fn the_cursor_round_trips_and_refuses_anything_else() {
        for cursor in [
            Cursor {
                start: -5,
                end: 1_706_745_600_000,
                jobs_sent: 3,
                after: Some("eyJx_-Ab".to_owned()),
            },
            Cursor {
                start: 0,
                end: 0,
                jobs_sent: 0,
                after: None,
            },
        ] {
            assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor.clone()));
        }
        for text in [
            "",
            "eg.",
            "eg.1.2",
            "eg.1.2.x.",
            "eg.a.2.0.",
            "1.2.0.",
            "eg.1.2.-1.",
        ] {
            assert_eq!(Cursor::decode(text), None, "{text}");
        }
    }

    #[test]
    fn the_body_is_checked_key_by_key() {
        let request = parse(
            &json!({"timestamp_start": 1_704_067_200_000_i64, "timestamp_end": 1_706_745_600_000_i64, "cursor": null, "limit": 3}),
            &limits(),
        )
        .expect("EventGate's body");
        assert_eq!(
            request,
            StatsRequest {
                timestamp_start: Some(1_704_067_200_000),
                timestamp_end: Some(1_706_745_600_000),
                cursor: None,
                limit: Some(3),
            }
        );
        let error = parse(
            &json!({"timestamp_start": "2025-01-01", "timestamp_end": 1.5, "cursor": 42, "limit": 0, "filter_x": 1}),
            &limits(),
        )
        .expect_err("every key is wrong");
        let fields: Vec<_> = error
            .details
            .iter()
            .map(|d| d.field.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            fields,
            [
                "filter_x",
                "timestamp_start",
                "timestamp_end",
                "cursor",
                "limit"
            ],
            "{error:?}"
        );
        assert!(
            error.details[3].message.contains("internal_id"),
            "{error:?}"
        );
        let error = parse(
            &json!({"timestamp_end": 300_000_000_000_000_i64}),
            &limits(),
        )
        .expect_err("year 11476");
        assert!(
            error.details[0].message.contains("out of range"),
            "{error:?}"
        );
        for limit in [json!(true), json!(-1), json!(null), json!("5")] {
            assert!(parse(&json!({"timestamp_start": 1, "limit": limit}), &limits()).is_err());
        }
    }

    #[test]
    fn defaults_are_eventgates_and_the_cursor_keeps_its_window() {
        let now = 1_706_745_600_000;
        let first = resolve(
            StatsRequest {
                timestamp_start: None,
                timestamp_end: None,
                cursor: None,
                limit: None,
            },
            now,
            &limits(),
        )
        .expect("defaults");
        assert_eq!(
            (first.start, first.end, first.limit),
            (now - DEFAULT_WINDOW_MS, now, 50)
        );
        // EventGate clamps a large limit to its maximum.
        let clamped = resolve(
            StatsRequest {
                timestamp_start: Some(1),
                timestamp_end: None,
                cursor: None,
                limit: Some(5000),
            },
            now,
            &limits(),
        )
        .expect("clamped");
        assert_eq!(clamped.limit, 1000);
        let cursor = Cursor {
            start: 10,
            end: 20,
            jobs_sent: 2,
            after: Some("abc".to_owned()),
        };
        // A later page, with or without the window: the cursor's, a day later too.
        for (start, end) in [(None, None), (Some(10), None), (Some(10), Some(20))] {
            let next = resolve(
                StatsRequest {
                    timestamp_start: start,
                    timestamp_end: end,
                    cursor: Some(cursor.clone()),
                    limit: Some(2),
                },
                now + 86_400_000,
                &limits(),
            )
            .expect("next page");
            assert_eq!(
                next,
                Resolved {
                    start: 10,
                    end: 20,
                    limit: 2,
                    jobs_sent: 2,
                    after: Some("abc".to_owned())
                }
            );
        }
        let error = resolve(
            StatsRequest {
                timestamp_start: Some(11),
                timestamp_end: None,
                cursor: Some(cursor),
                limit: None,
            },
            now,
            &limits(),
        )
        .expect_err("another window");
        assert_eq!(error.details[0].field.as_deref(), Some("cursor"));
        let query = first.query();
        assert_eq!(
            serde_json::to_value(&query.filter).expect("json"),
            json!({"timestamp_start_between": [now - DEFAULT_WINDOW_MS, now]})
        );
        assert_eq!((query.sort, query.limit), (None, Some(50)));
    }

    #[test]
    fn a_row_is_eventgates_columns_and_computed_members() {
        let run: Run = serde_json::from_value(json!({
            "event_id": "e-1", "job_ref": "spark-1", "tenant_id": "STATS_Test", "source_app": "unify",
            "source_app_version": "2.0.0", "environment": "test",
            "timestamp_start": 1_704_067_200_000_i64, "timestamp_end": 1_704_067_260_000_i64,
            "jobs": [
                {"catalog_id": "db.a", "status": "succeeded", "timestamp_start": 1_704_067_200_000_i64,
                 "timestamp_end": 1_704_067_201_500_i64},
                {"catalog_id": "db.b", "status": "FAILED", "message": "No data arrived",
                 "timestamp_start": 1_704_153_599_999_i64, "country": "za", "additional_info": {"k": 1}}
            ]
        }))
        .expect("a run");
        let jobs = run.jobs_newest_first();
        assert_eq!(jobs.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 0]);
        let id = uuid::Uuid::nil();
        let row: Map<String, Value> = job_row(id, &run, jobs[0].1, jobs[0].0)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(
            Value::Object(row),
            json!({
                "event_id": "e-1", "job_ref": "spark-1", "tenant_id": "STATS_Test", "source_app": "unify",
                "source_app_version": "2.0.0", "environment": "test",
                "run_timestamp_start": 1_704_067_200_000_i64, "run_timestamp_end": 1_704_067_260_000_i64,
                "internal_id": null, "country": "za", "catalog_id": "db.b", "status": "FAILED",
                "timestamp_start": 1_704_153_599_999_i64, "timestamp_end": null,
                "message": "No data arrived", "additional_info": {"k": 1},
                "run_date": "01-01-2024", "run_status": "no data received", "formatted_tenant": "stats_test",
                "elapsed_time": null, "start_time": "2024-01-01 23:59:59", "end_time": null,
                "id": id.to_string(), "job_index": 1
            })
        );
        let mut out = Vec::new();
        write_row(&mut out, &job_row(id, &run, jobs[1].1, jobs[1].0));
        let second: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(second["elapsed_time"], json!(1500));
        assert_eq!(second["run_status"], json!("succeeded"));
        assert_eq!(second["end_time"], json!("2024-01-01 00:00:01"));
        assert!(String::from_utf8_lossy(&out).starts_with(r#"{"event_id":"e-1","job_ref""#));
    }

    #[test]
    fn run_status_reads_status_and_message_as_eventgate_does() {
        let s = |status: Value, message: Value| run_status(Some(&status), Some(&message));
        assert_eq!(
            s(json!("failed"), json!("no records to send")),
            "no data produced"
        );
        assert_eq!(
            s(json!("Failed"), json!("NO DATA here")),
            "no data received"
        );
        assert_eq!(s(json!("failed"), Value::Null), "failed");
        assert_eq!(s(json!("killed"), json!("no data")), "succeeded");
        assert_eq!(run_status(None, None), "succeeded");
    }

    #[test]
    fn only_runs_topics_take_the_form() {
        let runs = FieldCatalogue::from_schema(&json!({"type": "object", "properties": {
            "timestamp_start": {"type": "integer", "x-eventgate-type": "epoch-ms"},
            "jobs": {"type": "array", "items": {"type": "object", "properties": {"status": {"type": "string"}}}}
        }}));
        assert!(check_topic(&runs).is_ok());
        let audit = FieldCatalogue::from_schema(&json!({"type": "object", "properties": {
            "event_name": {"type": "string"}, "timestamp_start": {"type": "string"}
        }}));
        let error = check_topic(&audit).expect_err("no jobs, no time field");
        assert_eq!(error.details[0].field.as_deref(), Some("topic"));
    }
}
