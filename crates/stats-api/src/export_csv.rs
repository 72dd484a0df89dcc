//! CSV rows of an export, written from the event's payload text.
//!
//! A row's payload columns are found in one scan of the payload: the columns' paths form a tree, and
//! each object on it is read member by member once, whatever the number of columns (looking each column
//! up from the top, as [`crate::raw_json::raw_at`] does, read the payload once per column). Cells are
//! written straight into the body: no per-cell `String`.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use eventgate_core::query::fields::FieldSource;
use eventgate_core::query::FieldDef;

use crate::raw_json::{minify_into, RawEvent};

/// The largest minified value kept in [`CsvRows`]'s scratch buffer between cells; a larger one (a big
/// array or object cell) is freed once written.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

/// Writes the rows of one CSV export (or batch): the columns' payload paths as a tree, and the buffers
/// each row reuses.
pub struct CsvRows<'c> {
    columns: &'c [FieldDef],
    /// Node 0 is the payload itself; each node's children sorted by key.
    tree: Vec<Node>,
    /// For each column, its node when it is a payload column.
    column_node: Vec<Option<usize>>,
    /// Per node, for the current row: the byte range of its value in the payload, when present.
    found: Vec<Option<(usize, usize)>>,
    /// A non-string value minified before it is written as a cell (its quoting depends on it).
    scratch: Vec<u8>,
}

#[derive(Default)]
struct Node {
    children: Vec<(String, usize)>,
    /// A column is this node's value.
    wanted: bool,
}

impl<'c> CsvRows<'c> {
    pub fn new(columns: &'c [FieldDef]) -> Self {
        let mut tree = vec![Node::default()];
        let column_node = columns
            .iter()
            .map(|column| {
                let FieldSource::Payload(path) = &column.source else {
                    return None;
                };
                let mut node = 0;
                for segment in path {
                    node = match tree[node]
                        .children
                        .binary_search_by(|(key, _)| key.as_str().cmp(segment))
                    {
                        Ok(i) => tree[node].children[i].1,
                        Err(i) => {
                            let child = tree.len();
                            tree.push(Node::default());
                            tree[node].children.insert(i, (segment.clone(), child));
                            child
                        }
                    };
                }
                tree[node].wanted = true;
                Some(node)
            })
            .collect();
        let found = vec![None; tree.len()];
        CsvRows {
            columns,
            tree,
            column_node,
            found,
            scratch: Vec::new(),
        }
    }

    /// One event as a CSV row: each column's value found in the payload's text (nothing else of it is
    /// parsed); strings unquoted, other values as compact JSON.
    pub fn write_row(&mut self, out: &mut Vec<u8>, event: &RawEvent) {
        self.find_payload_values(event.payload);
        for (i, column) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match &column.source {
                FieldSource::Id => out.extend_from_slice(
                    event
                        .id
                        .hyphenated()
                        .encode_lower(&mut uuid::Uuid::encode_buffer())
                        .as_bytes(),
                ),
                // Digits, `-`, `:`, `.`, `T`, `Z`, `+`: never quoted. A time that cannot be written is an
                // empty cell, as before.
                FieldSource::Timestamp => {
                    let mark = out.len();
                    if event
                        .received_at
                        .format_into(out, &time::format_description::well_known::Rfc3339)
                        .is_err()
                    {
                        out.truncate(mark);
                    }
                }
                FieldSource::Producer => write_csv_cell(out, event.producer, true),
                // Refused as a column by `parse_columns`, left out of the default ones.
                FieldSource::Items { .. } => {}
                FieldSource::Payload(_) => {
                    let value = self.column_node[i]
                        .and_then(|node| self.found[node])
                        .map(|(start, end)| &event.payload[start..end]);
                    self.write_value(out, value);
                }
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    fn write_value(&mut self, out: &mut Vec<u8>, value: Option<&str>) {
        match value {
            None | Some("null") => {}
            Some(text) if text.starts_with('"') => {
                // Without a backslash the JSON string is its own text between the quotes (valid JSON
                // has no raw quote or control character in a string).
                match text.len().checked_sub(1).map(|end| &text[1..end]) {
                    Some(inner) if text.len() >= 2 && !inner.contains('\\') => {
                        write_csv_cell(out, inner, true)
                    }
                    _ => {
                        if let Ok(s) = serde_json::from_str::<String>(text) {
                            write_csv_cell(out, &s, true);
                        }
                    }
                }
            }
            // Objects and arrays, minified (Postgres spaces them).
            Some(text) if text.starts_with(['{', '[']) => {
                self.scratch.clear();
                minify_into(&mut self.scratch, text);
                write_csv_bytes(out, &self.scratch, false);
                if self.scratch.capacity() > SCRATCH_KEEP_BYTES {
                    self.scratch = Vec::new();
                }
            }
            // Numbers and booleans: no whitespace once trimmed.
            Some(text) => write_csv_cell(out, text, false),
        }
    }

    /// Fills `found` for `payload`: one pass over the objects on the columns' paths.
    fn find_payload_values(&mut self, payload: &str) {
        self.found.fill(None);
        let text = payload.trim();
        let base = payload.as_ptr() as usize;
        if self.tree[0].wanted {
            let start = text.as_ptr() as usize - base;
            self.found[0] = Some((start, start + text.len()));
        }
        if !self.tree[0].children.is_empty() {
            scan(&self.tree, 0, text, base, &mut self.found);
        }
    }
}

/// Records the members of the object `text` that are children of `node`, and walks into those that have
/// children of their own. Anything but an object (or invalid text) leaves them absent, as `raw_at`
/// does; the first of duplicate keys counts, as there.
fn scan(tree: &[Node], node: usize, text: &str, base: usize, found: &mut [Option<(usize, usize)>]) {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let _ = deserializer.deserialize_any(Scan {
        tree,
        node,
        base,
        found,
    });
}

struct Scan<'s> {
    tree: &'s [Node],
    node: usize,
    base: usize,
    found: &'s mut [Option<(usize, usize)>],
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let children = &self.tree[self.node].children;
        while let Some(child) = map.next_key_seed(Child(children))? {
            match child {
                Some(child) if self.found[child].is_none() => {
                    let raw: &'de RawValue = map.next_value()?;
                    let text = raw.get().trim();
                    let start = text.as_ptr() as usize - self.base;
                    self.found[child] = Some((start, start + text.len()));
                    if !self.tree[child].children.is_empty() && text.starts_with('{') {
                        scan(self.tree, child, text, self.base, self.found);
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A member's key: the child node it names, if any (without allocating when it has no escapes).
struct Child<'s>(&'s [(String, usize)]);

impl<'de> DeserializeSeed<'de> for Child<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Child<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self
            .0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1))
    }
}

/// One cell, quoted when it holds a separator, a quote or a line break (RFC 4180). Text that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) gets a leading
/// `'`, so opening an export never executes what a producer wrote; numbers are never touched.
pub fn write_csv_cell(out: &mut Vec<u8>, text: &str, is_text: bool) {
    write_csv_bytes(out, text.as_bytes(), is_text);
}

/// [`write_csv_cell`] on bytes: copied in runs, not byte by byte.
fn write_csv_bytes(out: &mut Vec<u8>, bytes: &[u8], is_text: bool) {
    let guarded = is_text
        && matches!(
            bytes.first(),
            Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
        );
    let quoted = bytes
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if quoted {
        out.push(b'"');
    }
    if guarded {
        out.push(b'\'');
    }
    if quoted {
        // Each `"` doubled: every run ending in one is followed by another.
        for run in bytes.split_inclusive(|&b| b == b'"') {
            out.extend_from_slice(run);
            if run.last() == Some(&b'"') {
                out.push(b'"');
            }
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw_json::{raw_at, rfc3339};
    use eventgate_core::query::FieldCatalogue;
    use serde_json::json;

    /// The cell routine as it was, byte by byte: the reference.
    fn reference_cell(out: &mut Vec<u8>, text: &str, is_text: bool) {
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

    /// The row routine as it was (one `raw_at` per column): the reference.
    fn reference_row(out: &mut Vec<u8>, columns: &[FieldDef], event: &RawEvent) {
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match &column.source {
                FieldSource::Id => reference_cell(out, &event.id.to_string(), false),
                FieldSource::Timestamp => reference_cell(out, &rfc3339(event.received_at), false),
                FieldSource::Producer => reference_cell(out, event.producer, true),
                FieldSource::Items { .. } => {}
                FieldSource::Payload(path) => match raw_at(event.payload, path) {
                    None | Some("null") => {}
                    Some(text) if text.starts_with('"') => {
                        if let Ok(s) = serde_json::from_str::<String>(text) {
                            reference_cell(out, &s, true);
                        }
                    }
                    Some(text) => {
                        let mut compact = Vec::with_capacity(text.len());
                        minify_into(&mut compact, text);
                        reference_cell(out, &String::from_utf8_lossy(&compact), false);
                    }
                },
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    #[test]
    fn cells_are_written_as_the_byte_by_byte_routine_wrote_them() {
        for text in [
            "",
            "plain",
            "a,b",
            "\"",
            "\"\"",
            "a\"b\"",
            "\"lead and trail\"",
            "line\nbreak",
            "cr\r",
            "=1+2",
            "-5",
            "+x,\"y\"",
            "@a",
            "\tt",
            "\rr",
            "é,ü\"ß",
        ] {
            for is_text in [false, true] {
                let (mut ours, mut theirs) = (b"x".to_vec(), b"x".to_vec());
                write_csv_cell(&mut ours, text, is_text);
                reference_cell(&mut theirs, text, is_text);
                assert_eq!(ours, theirs, "{text:?} is_text={is_text}");
            }
        }
    }

    #[test]
    fn one_scan_finds_what_a_lookup_per_column_finds() {
        let catalogue = FieldCatalogue::from_schema(&json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "n": {"type": "number"},
                "ok": {"type": "boolean"},
                "info": {"type": "object", "properties": {
                    "region": {"type": "string"},
                    "deep": {"type": "object", "properties": {"x": {"type": "integer"}}}}},
                "tags": {"type": "array"},
                "blob": {"type": "object"},
            }
        }));
        let names = [
            "timestamp",
            "id",
            "producer",
            "name",
            "n",
            "ok",
            "info",
            "info.region",
            "info.deep",
            "info.deep.x",
            "tags",
            "blob",
            "name",
            "info.deep.x",
        ];
        let columns: Vec<FieldDef> = names
            .iter()
            .map(|n| catalogue.lookup(n).expect("field").clone())
            .collect();
        let payloads = [
            json!({"name": "a \"quoted\", multi\nline", "n": -1.5, "ok": true,
                   "info": {"region": "-eu", "deep": {"x": 3}}, "tags": [1, "x", {"a": null}],
                   "blob": {"k": "v,w", "l": [1, 2]}}),
            json!({"name": "\u{e9}\\t\u{1F600}", "n": 1e300, "ok": false, "info": "not an object",
                   "tags": [], "blob": {}}),
            json!({"info": {"deep": [1, 2], "region": null}, "name": null, "n": 0}),
            json!({"info": {"deep": {"y": 1}}, "name": "=SUM(A1)", "unknown": {"name": "no"}}),
            json!({}),
        ];
        let mut rows = CsvRows::new(&columns);
        for payload in &payloads {
            // Postgres' spacing, and compact text.
            for text in [
                serde_json::to_string_pretty(payload).expect("json"),
                payload.to_string(),
                format!("  {payload} "),
            ] {
                let event = RawEvent {
                    id: uuid::Uuid::now_v7(),
                    topic: "t",
                    received_at: time::OffsetDateTime::from_unix_timestamp_nanos(
                        1_736_937_000_123_456_000,
                    )
                    .expect("t"),
                    producer: "-p,\"q\"",
                    schema_version: 1,
                    payload: &text,
                };
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                rows.write_row(&mut ours, &event);
                reference_row(&mut theirs, &columns, &event);
                assert_eq!(
                    String::from_utf8(ours).expect("utf-8"),
                    String::from_utf8(theirs).expect("utf-8"),
                    "{text}"
                );
            }
        }
        // Escaped keys and duplicate keys (`json`, not `jsonb`: the first one counts).
        let text = r#"{"na\u006de": "escaped key", "n": 1, "n": 2, "info": {"region": "a"}, "info": {"region": "b"}}"#;
        let event = RawEvent {
            id: uuid::Uuid::nil(),
            topic: "t",
            received_at: time::OffsetDateTime::UNIX_EPOCH,
            producer: "p",
            schema_version: 1,
            payload: text,
        };
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        rows.write_row(&mut ours, &event);
        reference_row(&mut theirs, &columns, &event);
        assert_eq!(ours, theirs);
    }
}
