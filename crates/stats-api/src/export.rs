//! `GET /stats/{topic}/export?format=ndjson|csv&fields=…&<filters>&sort=…`: every event the filters
//! select, streamed.
//!
//! Token (401) → topic (404) → may read (403, restrictions) → plan (the query language, 400) → the first
//! batch is read before the answer starts (so an outage is still a clean 503) → then keyset batches of
//! [`BATCH_ROWS`] through the page query itself, each fetched only when the client has taken the previous
//! one (actix polls the body stream only while its write buffer has room). Memory per export is one batch,
//! whatever the number of rows. Each batch is its own statement, bounded by the statement timeout; a
//! failure after the answer started aborts the connection, so the client sees an incomplete transfer
//! (chunked encoding never terminated), never a silently short file.

use actix_web::http::header::{ContentDisposition, DispositionParam, DispositionType};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use eventgate_core::http::TopicReader;
use serde_json::Value;

use eventgate_core::catalogue::Topic;
use eventgate_core::db::PgPool;
use eventgate_core::envelope::Event;
use eventgate_core::error::{ApiError, ErrorDetail};
use eventgate_core::query::fields::FieldSource;
use eventgate_core::query::{self, payload_at, FieldCatalogue, FieldDef, QueryPlan, QueryRequest};

use crate::db::page::{fetch_page, Page};
use crate::AppState;

/// Events per batch (one page query each).
pub const BATCH_ROWS: u32 = 1000;
/// Columns a CSV export may ask for.
const MAX_COLUMNS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One event per line, as in query answers.
    Ndjson,
    /// RFC 4180, CRLF line ends, a header row of field names.
    Csv,
}

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
    let mut plan = query::plan_restricted(
        &topic.name,
        &query_request,
        &topic.fields,
        &state.limits,
        &state.cursor_key,
        &restrictions,
    )?;
    plan.limit = BATCH_ROWS;
    let first = fetch_page(&state.pool, &topic.name, &plan).await?;
    let export = Export {
        pool: state.pool.clone(),
        topic: topic.name.clone(),
        plan,
        options: options.clone(),
        pending: Some(first),
        header_written: false,
        done: false,
    };
    let body = futures_util::stream::unfold(export, Export::next_chunk);
    let (content_type, extension) = match options.format {
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(format!(
                "{}.{extension}",
                file_stem(topic)
            ))],
        })
        .streaming(body))
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
    /// Takes `format` and `fields` out of the query parameters and returns the rest (filters and
    /// `sort`). `cursor` and `limit` are refused: an export has no pages.
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
                "cursor" | "limit" => details.push(ErrorDetail::validation(
                    key,
                    "an export has no pages: it streams every matching event",
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
            FieldSource::Payload(path) => !paths
                .iter()
                .any(|other| other.len() > path.len() && other.starts_with(path)),
            _ => true,
        })
        .cloned()
        .collect()
}

/// One export in progress: the state of the body stream.
struct Export {
    pool: PgPool,
    topic: String,
    plan: QueryPlan,
    options: ExportOptions,
    /// A batch read but not yet written (the first one, read before the answer started).
    pending: Option<Page>,
    header_written: bool,
    done: bool,
}

impl Export {
    async fn next_chunk(mut self) -> Option<(Result<Bytes, std::io::Error>, Export)> {
        if self.done {
            return None;
        }
        let page = match self.pending.take() {
            Some(page) => page,
            None => match fetch_page(&self.pool, &self.topic, &self.plan).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(topic = %self.topic, %error, "export aborted");
                    self.done = true;
                    return Some((Err(std::io::Error::other(error.to_string())), self));
                }
            },
        };
        let mut out = Vec::with_capacity(page.events.len() * 256);
        if self.options.format == Format::Csv && !self.header_written {
            write_csv_header(&mut out, &self.options.columns);
        }
        self.header_written = true;
        for event in &page.events {
            match self.options.format {
                Format::Ndjson => {
                    out.extend_from_slice(&event.to_json_bytes());
                    out.push(b'\n');
                }
                Format::Csv => write_csv_row(&mut out, &self.options.columns, event),
            }
        }
        match (page.has_more, page.events.last()) {
            // The next batch starts strictly after this one's last row, in the query's order.
            (true, Some(last)) => self.plan.after = Some(self.plan.sort_values(last)),
            _ => self.done = true,
        }
        Some((Ok(Bytes::from(out)), self))
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

pub fn write_csv_row(out: &mut Vec<u8>, columns: &[FieldDef], event: &Event) {
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match &column.source {
            FieldSource::Id => write_csv_cell(out, &event.id.to_string(), false),
            FieldSource::Timestamp => {
                let text = event
                    .timestamp
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                write_csv_cell(out, &text, false);
            }
            FieldSource::Producer => write_csv_cell(out, &event.producer, true),
            FieldSource::Payload(path) => match payload_at(&event.payload, path) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => write_csv_cell(out, s, true),
                Some(other) => write_csv_cell(out, &other.to_string(), false),
            },
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// One cell, quoted when it holds a separator, a quote or a line break (RFC 4180). Text that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) gets a leading
/// `'`, so opening an export never executes what a producer wrote; numbers are never touched.
fn write_csv_cell(out: &mut Vec<u8>, text: &str, is_text: bool) {
    let guarded = is_text && text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = text.contains([',', '"', '\n', '\r']);
    if quoted {
        out.push(b'"');
    }
    if guarded {
        out.push(b'\'');
    }
    for byte in text.bytes() {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    if quoted {
        out.push(b'"');
    }
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

        let err = ExportOptions::from_pairs(
            pairs(&[("format", "xlsx"), ("limit", "5"), ("cursor", "x")]),
            &catalogue(),
        )
        .expect_err("invalid");
        let fields: Vec<_> = err.details.iter().filter_map(|d| d.field.clone()).collect();
        assert_eq!(fields, ["format", "limit", "cursor"]);
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
        let event = Event {
            id: uuid::Uuid::nil(),
            topic: "t".into(),
            timestamp: time::OffsetDateTime::UNIX_EPOCH,
            producer: "=cmd|' /C calc'!A0".into(),
            payload: json!({"name": "a \"quoted\", multi\nline", "n": -1.5, "info": {"region": "-eu"}, "tags": [1, "x"], "blob": {"k": "v,w"}}),
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
