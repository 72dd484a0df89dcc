//! `GET /stats/{topic}/export?format=ndjson|csv&fields=…&<filters>&sort=…[&cursor=…]`: every event the
//! filters select, streamed.
//!
//! Token (401) → topic (404) → may read (403, restrictions) → plan (the query language, 400) → one of
//! the user's concurrent-statement slots (429) → the first batch is read before the answer starts (so an
//! outage or a busy pool is still a clean 503) → then keyset batches of at most [`BATCH_ROWS`] events
//! and `stats.max_page_bytes` bytes through the page query itself, payloads passed through as JSON text.
//!
//! A task writes the batches into a channel of one piece ([`PIECE_BYTES`] at most) that the body stream
//! reads, so the next batch is fetched only when the client has taken the previous one, and memory per
//! export is one batch whatever the number of rows. Bounds:
//! - `stats.export_max_rows` events and `stats.export_max_ms` of streaming: then the export ends with
//!   its truncation marker, a last NDJSON line `{"truncated":true,…,"cursor":"…"}` or a last CSV line
//!   `#eventgate-export-truncated,<reason>,<rows>,<cursor>`; the same request with `cursor` resumes it.
//! - A client that does not take a piece within `stats.export_send_timeout_ms` is dropped: the task
//!   ends (its batch freed, the user's slot given back) and the body fails, so actix aborts the
//!   connection.
//! - Each batch is its own statement, bounded by the statement timeout; a failure after the answer
//!   started aborts the connection, so the client sees an incomplete transfer (chunked encoding never
//!   terminated), never a silently short file.

use std::time::Instant;

use actix_web::http::header::{ContentDisposition, DispositionParam, DispositionType};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use tokio::sync::mpsc;

use eventgate_core::catalogue::Topic;
use eventgate_core::error::{ApiError, ErrorDetail};
use eventgate_core::http::TopicReader;
use eventgate_core::query::fields::FieldSource;
use eventgate_core::query::{self, FieldCatalogue, FieldDef, QueryPlan, QueryRequest};

use crate::db::page::{fetch_page, Page};
use crate::db::StoreError;
use crate::export_csv::{write_csv_cell, CsvRows};
use crate::fair_use::Slot;
use crate::raw_json::RawEvent;
use crate::AppState;

/// Events per batch (one page query each), at most.
pub const BATCH_ROWS: u32 = 1000;
/// The largest piece of body handed to actix at a time: what a client that stopped reading leaves
/// buffered once its export task has gone.
pub const PIECE_BYTES: usize = 64 * 1024;
/// Columns a CSV export may ask for.
const MAX_COLUMNS: usize = 500;
/// The first cell of a CSV export's truncation marker.
pub const CSV_TRUNCATED: &str = "#eventgate-export-truncated";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One event per line, as in query answers.
    Ndjson,
    /// RFC 4180, CRLF line ends, a header row of field names.
    Csv,
}

/// An export streams every match: the query's paging and counting parameters have no meaning here, and
/// `page` would make every batch skip rows.
fn refuse_paging(request: &QueryRequest) -> Result<(), ApiError> {
    let given = [
        ("page", request.page.is_some()),
        ("page_size", request.page_size.is_some()),
        ("count", request.count.is_some()),
    ];
    let details: Vec<ErrorDetail> = given
        .iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| {
            ErrorDetail::validation(
                *name,
                "an export streams every matching event: it takes no `page`, `page_size` or `count` \
                 (count with the query API's `count`, or an aggregate)",
            )
        })
        .collect();
    if details.is_empty() {
        Ok(())
    } else {
        Err(ApiError::from_details(details))
    }
}

#[utoipa::path(
    get,
    path = "/stats/{topic}/export",
    tag = "exports",
    summary = "Stream every matching event",
    description = "NDJSON (one event per line, as in query answers) or CSV, streamed however many \
        events match, up to `stats.export_max_rows` events and `stats.export_max_ms`: then a last \
        truncation line carries the cursor that resumes it. The query's filters and sort as parameters.",
    params(
        ("topic" = String, Path, description = "The topic's name."),
        ("format" = Option<String>, Query, description = "`ndjson` (default) or `csv`."),
        ("fields" = Option<String>, Query, description = "CSV columns, comma-separated (CSV only)."),
        ("sort" = Option<String>, Query, description = "Comma-separated field names; `-` sorts \
            descending."),
        ("cursor" = Option<String>, Query, description = "Resumes an export its truncation line ended."),
        ("filters" = Option<std::collections::HashMap<String, String>>, Query, style = Form, explode,
         description = "Filters: `<field>=value` (equality) or `<field>_<operator>=value` \
            (`_in` and `_between` take comma-separated values); the fields: \
            `GET /stats/{topic}/fields`."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The events, streamed.", content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 400, response = eventgate_core::http::openapi::BadRequest),
        (status = 401, response = eventgate_core::http::openapi::Unauthorized),
        (status = 403, response = eventgate_core::http::openapi::Forbidden),
        (status = 404, response = eventgate_core::http::openapi::NotFound),
        (status = 429, response = eventgate_core::http::openapi::TooManyRequests),
        (status = 503, response = eventgate_core::http::openapi::Unavailable),
    ),
)]
pub(crate) async fn export(
    reader: TopicReader,
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let restrictions = reader.read_filters()?;
    let topic = &*reader.topic;
    let pairs = crate::routes::query_pairs(&request)?;
    let (options, filter_pairs) = ExportOptions::from_pairs(pairs, &topic.fields)?;
    let query_request = QueryRequest::from_query_pairs(&filter_pairs, &topic.fields)?;
    refuse_paging(&query_request)?;
    let mut plan = query::plan_restricted(
        &topic.name,
        &query_request,
        &topic.fields,
        &state.limits,
        &state.cursor_key,
        &restrictions,
    )?;
    state.field_usage.record(&topic.name, &plan);
    state.field_usage.mark_indexed(&topic.name, &mut plan);
    let freshness = crate::freshness::current(&state, &topic.name).await;
    let slot = state.slot(&reader.principal.user)?;
    // The time cap counts from here: the first batch is part of the export.
    let started = Instant::now();
    plan.limit = batch_rows(state.answers.export_max_rows, 0);
    let mut header = Vec::new();
    if options.format == Format::Csv {
        write_csv_header(&mut header, &options.columns);
    }
    let first = fetch_batch(&state, &topic.name, &plan, &options, header)
        .await
        .map_err(|e| state.store_error(e))?;
    let (sender, receiver) = mpsc::channel(1);
    let export = Export {
        state: state.clone(),
        topic: topic.name.clone(),
        plan,
        options: options.clone(),
        rows: 0,
        started,
        sender,
        _slot: slot,
    };
    tokio::spawn(export.run(first));
    let body = futures_util::stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Some(Piece::Data(bytes)) => Some((Ok(bytes), Some(receiver))),
            Some(Piece::End) => None,
            // The task gave up (a failed batch, a client too slow): fail the body, so the transfer is
            // visibly incomplete.
            None => Some((Err(std::io::Error::other("the export was aborted")), None)),
        }
    });
    let (content_type, extension) = match options.format {
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    let mut response = HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(format!(
                "{}.{extension}",
                file_stem(topic)
            ))],
        })
        .streaming(body);
    // How current the export is when it starts (its body has no room for metadata).
    if let Some(freshness) = &freshness {
        freshness.apply(&mut response);
    }
    Ok(response)
}

/// Rows of the next batch: at most [`BATCH_ROWS`], and no more than the row cap leaves.
fn batch_rows(max_rows: u64, written: u64) -> u32 {
    u32::try_from(max_rows.saturating_sub(written).min(u64::from(BATCH_ROWS)))
        .unwrap_or(BATCH_ROWS)
        .max(1)
}

/// One batch, written in the export's format after `body`.
async fn fetch_batch(
    state: &AppState,
    topic: &str,
    plan: &QueryPlan,
    options: &ExportOptions,
    body: Vec<u8>,
) -> Result<Page, StoreError> {
    let max_bytes = state.answers.max_page_bytes;
    // The columns' paths are laid out once per batch, not per row.
    let mut csv = CsvRows::new(&options.columns);
    fetch_page(
        &state.pool,
        topic,
        plan,
        body,
        max_bytes,
        |out, _, event| match options.format {
            Format::Ndjson => {
                event.write_json(out);
                out.push(b'\n');
            }
            Format::Csv => csv.write_row(out, event),
        },
    )
    .await
}

/// A file name safe everywhere: the topic's letters, digits, `.`, `-` and `_`.
fn file_stem(topic: &Topic) -> String {
    topic
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What an export writes, from its query parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    pub format: Format,
    /// The CSV columns.
    pub columns: Vec<FieldDef>,
}

impl ExportOptions {
    /// Takes `format` and `fields` out of the query parameters and returns the rest (filters, `sort`
    /// and `cursor`, which resumes an export its truncation marker ended). `limit` is refused: an
    /// export has no pages.
    pub fn from_pairs(
        pairs: Vec<(String, String)>,
        fields: &FieldCatalogue,
    ) -> Result<(ExportOptions, Vec<(String, String)>), ApiError> {
        let mut details = Vec::new();
        let mut format = None;
        let mut columns = None;
        let mut rest = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                "format" => match value.as_str() {
                    "ndjson" => format = Some(Format::Ndjson),
                    "csv" => format = Some(Format::Csv),
                    _ => details.push(ErrorDetail::validation(
                        "format",
                        "must be `ndjson` or `csv`",
                    )),
                },
                "fields" => columns = Some(value),
                "limit" => details.push(ErrorDetail::validation(
                    key,
                    "an export has no pages: it streams every matching event (up to stats.export_max_rows)",
                )),
                _ => rest.push((key, value)),
            }
        }
        let format = format.unwrap_or(Format::Ndjson);
        let columns = match columns {
            Some(_) if format == Format::Ndjson => {
                details.push(ErrorDetail::validation(
                    "fields",
                    "`fields` chooses CSV columns; with `format=ndjson` every event is written whole",
                ));
                Vec::new()
            }
            Some(list) => parse_columns(&list, fields, &mut details),
            None => default_columns(fields),
        };
        if details.is_empty() {
            Ok((ExportOptions { format, columns }, rest))
        } else {
            Err(ApiError::from_details(details))
        }
    }
}

fn parse_columns(
    list: &str,
    fields: &FieldCatalogue,
    details: &mut Vec<ErrorDetail>,
) -> Vec<FieldDef> {
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    if names.len() > MAX_COLUMNS {
        details.push(ErrorDetail::validation(
            "fields",
            format!(
                "too many columns: {} given, at most {MAX_COLUMNS} allowed",
                names.len()
            ),
        ));
        return Vec::new();
    }
    let mut columns = Vec::new();
    for name in names {
        match fields.lookup(name) {
            Some(field) if field.is_array_item() => details.push(ErrorDetail::validation(
                "fields",
                format!(
                    "`{}` is inside an array (one value per element): export the array itself",
                    field.name
                ),
            )),
            Some(field) => columns.push(field.clone()),
            None => {
                let valid = fields.names();
                let listed: Vec<&str> = valid.iter().take(100).map(String::as_str).collect();
                details.push(ErrorDetail::validation(
                    "fields",
                    format!(
                        "unknown field `{}`; valid fields: {}",
                        query::value::shorten(name, 200),
                        listed.join(", ")
                    ),
                ));
            }
        }
    }
    columns
}

/// The envelope fields, then every payload field that has no fields below it (an object with declared
/// properties is written as its properties).
pub fn default_columns(fields: &FieldCatalogue) -> Vec<FieldDef> {
    let paths: Vec<&Vec<String>> = fields
        .fields()
        .filter_map(|f| match &f.source {
            FieldSource::Payload(path) => Some(path),
            _ => None,
        })
        .collect();
    fields
        .fields()
        .filter(|f| match &f.source {
            // The array is a column already (its JSON).
            FieldSource::Items { .. } => false,
            FieldSource::Payload(path) => !paths
                .iter()
                .any(|other| other.len() > path.len() && other.starts_with(path)),
            _ => true,
        })
        .cloned()
        .collect()
}

/// What the body stream receives: a piece of the body, or the sign that it is complete (a channel
/// closed without it means the export was aborted).
enum Piece {
    Data(Bytes),
    End,
}

/// Why an export ended before its last row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truncation {
    Rows,
    Time,
}

impl Truncation {
    fn reason(self) -> &'static str {
        match self {
            Truncation::Rows => "row_limit",
            Truncation::Time => "time_limit",
        }
    }

    fn metric(self) -> &'static str {
        match self {
            Truncation::Rows => "export_rows",
            Truncation::Time => "export_time",
        }
    }
}

/// One export in progress: the task that reads batches and hands them to the body stream.
struct Export {
    state: web::Data<AppState>,
    topic: String,
    plan: QueryPlan,
    options: ExportOptions,
    /// Events written so far.
    rows: u64,
    started: Instant,
    sender: mpsc::Sender<Piece>,
    /// The user's concurrent-statement slot, held while the export runs.
    _slot: Slot,
}

impl Export {
    async fn run(mut self, first: Page) {
        let limits = self.state.answers.clone();
        let mut page = first;
        loop {
            self.rows += page.rows as u64;
            if page.cut_by_bytes {
                self.state.metrics.limit_hit("page_bytes");
            }
            let next_after = match (page.has_more, &page.last) {
                (true, Some(last)) => Some(last),
                _ => None,
            };
            let after = next_after.map(|last| self.plan.sort_values(last));
            let cursor = next_after.map(|last| self.plan.next_cursor(last, &self.state.cursor_key));
            if !self.send(Bytes::from(page.body)).await {
                return;
            }
            let (Some(after), Some(cursor)) = (after, cursor) else {
                let _ = self.sender.send(Piece::End).await;
                return;
            };
            let truncation = if self.rows >= limits.export_max_rows {
                Some(Truncation::Rows)
            } else if self.started.elapsed() >= limits.export_max_time {
                Some(Truncation::Time)
            } else {
                None
            };
            if let Some(truncation) = truncation {
                self.state.metrics.limit_hit(truncation.metric());
                let marker = self.marker(truncation, &cursor);
                if self.send(Bytes::from(marker)).await {
                    let _ = self.sender.send(Piece::End).await;
                }
                return;
            }
            // The next batch starts strictly after this one's last row, in the query's order.
            self.plan.after = Some(after);
            self.plan.limit = batch_rows(limits.export_max_rows, self.rows);
            page = match fetch_batch(
                &self.state,
                &self.topic,
                &self.plan,
                &self.options,
                Vec::new(),
            )
            .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(topic = %self.topic, %error, "export aborted");
                    // Dropping the sender without `End` fails the body.
                    return;
                }
            };
        }
    }

    /// Hands `bytes` to the body stream in pieces; `false` when the client went away or did not take a
    /// piece within the send timeout (then the export is over).
    async fn send(&self, mut bytes: Bytes) -> bool {
        let timeout = self.state.answers.export_send_timeout;
        while !bytes.is_empty() {
            let piece = bytes.split_to(bytes.len().min(PIECE_BYTES));
            match tokio::time::timeout(timeout, self.sender.send(Piece::Data(piece))).await {
                Ok(Ok(())) => {}
                // The body stream is gone: the client disconnected.
                Ok(Err(_)) => return false,
                Err(_) => {
                    self.state.metrics.limit_hit("export_send_timeout");
                    tracing::warn!(
                        topic = %self.topic,
                        rows = self.rows,
                        timeout_ms = timeout.as_millis() as u64,
                        "export dropped: the client stopped reading"
                    );
                    return false;
                }
            }
        }
        true
    }

    /// The last line of a truncated export: what stopped it and the cursor that resumes it.
    fn marker(&self, truncation: Truncation, cursor: &str) -> Vec<u8> {
        let limits = &self.state.answers;
        let message = match truncation {
            Truncation::Rows => format!(
                "the export stopped after {} events (stats.export_max_rows); repeat the request with this cursor to export the rest",
                limits.export_max_rows
            ),
            Truncation::Time => format!(
                "the export stopped after {} ms (stats.export_max_ms); repeat the request with this cursor to export the rest",
                limits.export_max_time.as_millis()
            ),
        };
        let mut out = Vec::new();
        match self.options.format {
            Format::Ndjson => {
                crate::routes::write_json(
                    &mut out,
                    &json!({
                        "truncated": true,
                        "reason": truncation.reason(),
                        "rows": self.rows,
                        "cursor": cursor,
                        "message": message,
                    }),
                );
                out.push(b'\n');
            }
            Format::Csv => {
                write_csv_cell(&mut out, CSV_TRUNCATED, false);
                out.push(b',');
                write_csv_cell(&mut out, truncation.reason(), false);
                out.push(b',');
                write_csv_cell(&mut out, &self.rows.to_string(), false);
                out.push(b',');
                write_csv_cell(&mut out, cursor, false);
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }
}

pub fn write_csv_header(out: &mut Vec<u8>, columns: &[FieldDef]) {
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_csv_cell(out, &column.name, false);
    }
    out.extend_from_slice(b"\r\n");
}

/// One event as a CSV row (see [`CsvRows`], which an export keeps for a whole batch).
pub fn write_csv_row(out: &mut Vec<u8>, columns: &[FieldDef], event: &RawEvent) {
    CsvRows::new(columns).write_row(out, event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalogue() -> FieldCatalogue {
        FieldCatalogue::from_schema(&json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "n": {"type": "number"},
                "info": {"type": "object", "properties": {"region": {"type": "string"}, "deep": {"type": "object", "properties": {"x": {"type": "integer"}}}}},
                "tags": {"type": "array"},
                "blob": {"type": "object"},
            }
        }))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn default_columns_flatten_declared_objects() {
        let names: Vec<String> = default_columns(&catalogue())
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(
            names,
            [
                "id",
                "timestamp",
                "producer",
                "blob",
                "info.deep.x",
                "info.region",
                "n",
                "name",
                "tags"
            ]
        );
    }

    #[test]
    fn options_take_format_and_fields_and_leave_filters() {
        let (options, rest) = ExportOptions::from_pairs(
            pairs(&[
                ("format", "csv"),
                ("fields", "name, info.region,timestamp"),
                ("name", "x"),
                ("sort", "n"),
            ]),
            &catalogue(),
        )
        .expect("options");
        assert_eq!(options.format, Format::Csv);
        let names: Vec<&str> = options.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["name", "info.region", "timestamp"]);
        assert_eq!(rest, pairs(&[("name", "x"), ("sort", "n")]));

        let err =
            ExportOptions::from_pairs(pairs(&[("format", "xlsx"), ("limit", "5")]), &catalogue())
                .expect_err("invalid");
        let fields: Vec<_> = err.details.iter().filter_map(|d| d.field.clone()).collect();
        assert_eq!(fields, ["format", "limit"]);
        let err = ExportOptions::from_pairs(
            pairs(&[("format", "csv"), ("fields", "name,nope")]),
            &catalogue(),
        )
        .expect_err("unknown column");
        assert!(
            err.details[0].message.contains("unknown field `nope`"),
            "{err:?}"
        );
        let err = ExportOptions::from_pairs(pairs(&[("fields", "name")]), &catalogue())
            .expect_err("fields with ndjson");
        assert_eq!(err.details[0].field.as_deref(), Some("fields"));
    }

    #[test]
    fn csv_rows_quote_flatten_and_defuse_formulas() {
        let columns: Vec<FieldDef> = [
            "id",
            "producer",
            "name",
            "n",
            "info.region",
            "tags",
            "blob",
            "info.deep.x",
        ]
        .iter()
        .map(|n| catalogue().lookup(n).expect("field").clone())
        .collect();
        let payload = serde_json::to_string_pretty(&json!({"name": "a \"quoted\", multi\nline", "n": -1.5, "info": {"region": "-eu"}, "tags": [1, "x"], "blob": {"k": "v,w"}})).expect("json");
        let event = RawEvent {
            id: uuid::Uuid::nil(),
            topic: "t",
            received_at: time::OffsetDateTime::UNIX_EPOCH,
            producer: "=cmd|' /C calc'!A0",
            schema_version: 1,
            payload: &payload,
        };
        let mut out = Vec::new();
        write_csv_header(&mut out, &columns);
        write_csv_row(&mut out, &columns, &event);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "id,producer,name,n,info.region,tags,blob,info.deep.x\r\n\
             00000000-0000-0000-0000-000000000000,'=cmd|' /C calc'!A0,\"a \"\"quoted\"\", multi\nline\",-1.5,'-eu,\"[1,\"\"x\"\"]\",\"{\"\"k\"\":\"\"v,w\"\"}\",\r\n"
        );
    }
}
