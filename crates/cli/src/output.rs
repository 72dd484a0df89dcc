//! Printing events: a table for a person at a terminal, NDJSON, CSV or one JSON array for programs.
//! Every writer takes pages as they come, so `query --all` streams however many events match.

use std::io::{self, Write};

use clap::ValueEnum;
use comfy_table::{presets, ContentArrangement, Table};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Ndjson,
    Csv,
    Json,
}

impl Format {
    /// The format asked for, else a table on a terminal and NDJSON in a pipe or file.
    pub fn choose(asked: Option<Format>, terminal: bool) -> Format {
        asked.unwrap_or(if terminal {
            Format::Table
        } else {
            Format::Ndjson
        })
    }

    /// Whether this format prints named columns.
    pub fn has_columns(self) -> bool {
        matches!(self, Format::Table | Format::Csv)
    }
}

/// Writes events in one format, page by page.
pub struct EventWriter<W: Write> {
    out: W,
    format: Format,
    columns: Vec<String>,
    written: u64,
}

/// RFC 4180 with CRLF line ends, as the stats-api's export writes CSV; one per page, into memory.
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new())
}

impl<W: Write> EventWriter<W> {
    pub fn new(out: W, format: Format, columns: Vec<String>) -> EventWriter<W> {
        EventWriter {
            out,
            format,
            columns,
            written: 0,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn page(&mut self, events: &[Value]) -> io::Result<()> {
        match self.format {
            Format::Ndjson => {
                for event in events {
                    serde_json::to_writer(&mut self.out, event)?;
                    self.out.write_all(b"\n")?;
                }
            }
            Format::Json => {
                for event in events {
                    self.out
                        .write_all(if self.written == 0 { b"[\n" } else { b",\n" })?;
                    serde_json::to_writer(&mut self.out, event)?;
                    self.written += 1;
                }
                self.out.flush()?;
                return Ok(());
            }
            Format::Csv => {
                let mut csv = csv_writer();
                if self.written == 0 {
                    csv.write_record(&self.columns)?;
                }
                for event in events {
                    csv.write_record(self.columns.iter().map(|c| csv_cell(cell(event, c))))?;
                }
                self.out
                    .write_all(&csv.into_inner().map_err(|e| e.into_error())?)?;
            }
            Format::Table => {
                if !events.is_empty() {
                    let mut table = Table::new();
                    table
                        .load_preset(presets::UTF8_FULL_CONDENSED)
                        .set_content_arrangement(ContentArrangement::Dynamic)
                        .set_header(&self.columns);
                    fit_width(&mut table);
                    for event in events {
                        table.add_row(self.columns.iter().map(|c| table_cell(cell(event, c))));
                    }
                    writeln!(self.out, "{table}")?;
                }
            }
        }
        self.written += events.len() as u64;
        self.out.flush()
    }

    pub fn finish(mut self) -> io::Result<()> {
        match self.format {
            Format::Json if self.written == 0 => self.out.write_all(b"[]\n")?,
            Format::Json => self.out.write_all(b"\n]\n")?,
            Format::Csv if self.written == 0 => {
                // A header alone still tells a spreadsheet what the columns are.
                let mut header = csv_writer();
                header.write_record(&self.columns)?;
                self.out
                    .write_all(&header.into_inner().map_err(|e| e.into_error())?)?;
            }
            _ => {}
        }
        self.out.flush()
    }
}

/// Wraps the table to `COLUMNS` when set, else to the terminal's width; with no usable width (a pipe,
/// a terminal that reports none) lines are left as long as they are.
fn fit_width(table: &mut Table) {
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok());
    match columns {
        Some(width) if width >= 20 => {
            table.set_width(width);
        }
        _ if table.width().is_some_and(|width| width >= 20) => {}
        _ => {
            table.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
}

/// The envelope fields of an event; every other name is a payload path.
const ENVELOPE: [&str; 4] = ["id", "topic", "timestamp", "producer"];

/// The value a column names: an envelope field, `payload.a.b`, or a payload path `a.b` (as in the query
/// language; a payload property with an envelope name is `payload.id`).
pub fn cell<'a>(event: &'a Value, column: &str) -> Option<&'a Value> {
    if ENVELOPE.contains(&column) {
        return event.get(column);
    }
    let path = column.strip_prefix("payload.").unwrap_or(column);
    path.split('.')
        .try_fold(event.get("payload")?, |value, key| value.get(key))
}

/// A cell as the export writes it: text as is, numbers and booleans as JSON writes them, objects and
/// arrays as compact JSON, nothing for no value.
pub fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// CSV: text a spreadsheet would run as a formula gets a leading `'`, as the stats-api's export does.
fn csv_cell(value: Option<&Value>) -> String {
    let text = text(value);
    if matches!(value, Some(Value::String(_))) && text.starts_with(['=', '+', '-', '@', '\t', '\r'])
    {
        format!("'{text}")
    } else {
        text
    }
}

/// A table cell: long values are cut, so one payload cannot push the table off the screen.
fn table_cell(value: Option<&Value>) -> String {
    const MAX: usize = 120;
    let text = text(value);
    if text.chars().count() > MAX {
        let mut short: String = text.chars().take(MAX - 1).collect();
        short.push('…');
        short
    } else {
        text
    }
}

/// The default columns from a topic's field list (`GET /stats/{topic}/fields`): the envelope fields,
/// then each payload field with no fields below it (as the export's default columns).
pub fn default_columns(names: &[String]) -> Vec<String> {
    // `topic` is the same on every row: left out, as the export leaves it out.
    let mut columns: Vec<String> = ["id", "timestamp", "producer"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for name in names {
        if ENVELOPE.contains(&name.as_str()) {
            continue;
        }
        let prefix = format!("{name}.");
        if !names.iter().any(|other| other.starts_with(&prefix)) {
            columns.push(name.clone());
        }
    }
    columns
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `eventgate maintain`'s report: what the run did, then a table of the partitions per topic.
pub fn maintenance_report(maintained: &eventgate_core::db::Maintained) -> String {
    let report = &maintained.report;
    let mut out = String::new();
    let list = |names: &[String]| {
        if names.is_empty() {
            "-".to_owned()
        } else {
            names.join(", ")
        }
    };
    out.push_str(&format!("created:            {}\n", list(&report.created)));
    out.push_str(&format!(
        "events moved:       {} (into their own partitions)\n",
        thousands(report.moved_events)
    ));
    out.push_str(&format!(
        "dropped (expired):  {} ({} bytes)\n",
        list(&report.dropped),
        thousands(u64::try_from(report.dropped_bytes).unwrap_or(0))
    ));
    out.push_str(&format!(
        "indexes built:      {}\n",
        list(&report.indexes_built)
    ));
    out.push_str(&format!(
        "indexes rebuilt:    {} (were invalid)\n",
        list(&report.indexes_rebuilt)
    ));
    out.push_str(&format!(
        "indexes dropped:    {} (no longer asked for)\n",
        list(&report.indexes_dropped)
    ));
    out.push_str(&format!(
        "dead letters:       {} resolved ones deleted\n",
        thousands(report.dead_letters_deleted)
    ));
    out.push_str(&format!(
        "auto-indexes:       {} chosen, {} dropped\n",
        list(&report.auto_indexes_chosen),
        list(&report.auto_indexes_dropped)
    ));
    out.push_str(&format!("deferred:           {}\n", list(&report.deferred)));
    let layout = &maintained.layout;
    let when = |seconds: i64| {
        time::OffsetDateTime::from_unix_timestamp(seconds)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| seconds.to_string())
    };
    out.push_str(&format!(
        "partitions up to:   {}\nevents to move:     {} (estimate)\n\n",
        layout.covered_until.map_or_else(|| "-".to_owned(), when),
        thousands(u64::try_from(layout.default_events_estimate).unwrap_or(0))
    ));
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header([
        "topic",
        "partitions",
        "oldest partition",
        "bytes",
    ]);
    for (topic, share) in &layout.topics {
        table.add_row([
            topic.clone(),
            thousands(share.partitions),
            share.oldest_span_start.map_or_else(|| "-".to_owned(), when),
            thousands(u64::try_from(share.bytes).unwrap_or(0)),
        ]);
    }
    out.push_str(&table.to_string());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({"id": "e1", "topic": "t", "timestamp": "2025-01-01T00:00:00Z", "producer": "dev",
               "payload": {"id": 7, "name": "=SUM(A1)", "n": 1.5, "ok": true, "info": {"region": "eu"}, "tags": ["a"]}})
    }

    #[test]
    fn cells_follow_envelope_then_payload_paths() {
        let e = event();
        assert_eq!(cell(&e, "id"), Some(&json!("e1")));
        assert_eq!(cell(&e, "payload.id"), Some(&json!(7)));
        assert_eq!(cell(&e, "info.region"), Some(&json!("eu")));
        assert_eq!(cell(&e, "missing.path"), None);
        assert_eq!(text(cell(&e, "tags")), "[\"a\"]");
        assert_eq!(text(cell(&e, "ok")), "true");
        assert_eq!(csv_cell(cell(&e, "name")), "'=SUM(A1)");
    }

    #[test]
    fn csv_has_a_header_crlf_and_quoting() {
        let mut out = Vec::new();
        let mut writer = EventWriter::new(
            &mut out,
            Format::Csv,
            vec!["id".into(), "info.region".into(), "tags".into()],
        );
        writer.page(&[event()]).expect("page");
        writer.page(&[event()]).expect("page");
        writer.finish().expect("finish");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "id,info.region,tags\r\ne1,eu,\"[\"\"a\"\"]\"\r\ne1,eu,\"[\"\"a\"\"]\"\r\n"
        );
    }

    #[test]
    fn json_is_one_array_even_when_empty() {
        let mut out = Vec::new();
        let mut writer = EventWriter::new(&mut out, Format::Json, vec![]);
        writer.page(&[json!({"a": 1})]).expect("page");
        writer.page(&[json!({"a": 2})]).expect("page");
        writer.finish().expect("finish");
        let parsed: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(parsed, json!([{"a": 1}, {"a": 2}]));
        let mut out = Vec::new();
        EventWriter::new(&mut out, Format::Json, vec![])
            .finish()
            .expect("finish");
        assert_eq!(out, b"[]\n");
    }

    #[test]
    fn a_table_has_the_columns_as_header() {
        let mut out = Vec::new();
        let mut writer = EventWriter::new(
            &mut out,
            Format::Table,
            vec!["producer".into(), "info.region".into()],
        );
        writer.page(&[event()]).expect("page");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("producer") && text.contains("info.region") && text.contains("eu"),
            "{text}"
        );
    }

    #[test]
    fn default_columns_are_the_envelope_and_payload_leaves() {
        let names: Vec<String> = [
            "id",
            "timestamp",
            "producer",
            "info",
            "info.region",
            "run_id",
            "payload.id",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(
            default_columns(&names),
            [
                "id",
                "timestamp",
                "producer",
                "info.region",
                "run_id",
                "payload.id"
            ]
        );
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn the_format_follows_the_terminal_unless_asked() {
        assert_eq!(Format::choose(None, true), Format::Table);
        assert_eq!(Format::choose(None, false), Format::Ndjson);
        assert_eq!(Format::choose(Some(Format::Csv), true), Format::Csv);
    }
}
