//! Reading the events to send, streamed: NDJSON line by line, or a JSON array element by element, on a
//! thread of its own that hands each event, already serialised with its id, to the sender through a
//! bounded channel. Memory stays flat whatever the size of the input.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::Value;
use tokio::sync::mpsc;

/// A line longer than this is not read into memory: the ingest-api would refuse it anyway.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Where an event was in the input, for messages: `line 17` (NDJSON), `[16]` (array, from 0 as jq counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Line(u64),
    Element(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Element(n) => write!(f, "[{n}]"),
        }
    }
}

/// An event ready to send: its JSON text, with the id assigned before the first attempt.
#[derive(Debug, Clone)]
pub struct Pending {
    pub at: Position,
    pub json: Vec<u8>,
}

#[derive(Debug)]
pub enum Item {
    Event(Pending),
    /// Not an event (not JSON, not an object): refused here, the rest goes on.
    Bad {
        at: Position,
        message: String,
    },
    /// The input cannot be read further (an I/O error, a broken JSON array).
    Broken(String),
}

/// How the events are prepared.
#[derive(Debug, Clone)]
pub struct Preparation {
    /// The field that carries a producer's event id; `None`: leave events as they are.
    pub id_field: Option<String>,
}

/// Counts the bytes read, for the progress bar.
struct Counting<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads `source` on a thread of its own, sending every item to `items`; stops early when the receiver
/// is dropped. `bytes` counts what was read.
pub fn spawn_reader(
    source: Box<dyn Read + Send>,
    preparation: Preparation,
    items: mpsc::Sender<Item>,
    bytes: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = BufReader::with_capacity(
            256 * 1024,
            Counting {
                inner: source,
                bytes,
            },
        );
        read_all(reader, &preparation, &items);
    })
}

/// The whole input: a JSON array when its first non-blank character is `[`, else NDJSON.
pub fn read_all(mut reader: impl BufRead, preparation: &Preparation, items: &mpsc::Sender<Item>) {
    let (first, blank_lines) = match first_significant_byte(&mut reader) {
        Ok(found) => found,
        Err(e) => {
            let _ = items.blocking_send(Item::Broken(format!("cannot read the input: {e}")));
            return;
        }
    };
    match first {
        None => {}
        Some(b'[') => read_array(reader, preparation, items),
        Some(_) => read_ndjson(reader, blank_lines, preparation, items),
    }
}

/// Skips leading whitespace (and a UTF-8 byte order mark); returns the first other byte, unread, and
/// the number of line ends skipped.
fn first_significant_byte(reader: &mut impl BufRead) -> std::io::Result<(Option<u8>, u64)> {
    let mut lines = 0;
    let mut at_start = true;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((None, lines));
        }
        let mut skip = 0;
        if at_start && buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
            skip = 3;
        }
        at_start = false;
        let rest = &buf[skip..];
        match rest.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let byte = rest[i];
                lines += rest[..i].iter().filter(|&&b| b == b'\n').count() as u64;
                reader.consume(skip + i);
                return Ok((Some(byte), lines));
            }
            None => {
                lines += rest.iter().filter(|&&b| b == b'\n').count() as u64;
                let len = buf.len();
                reader.consume(len);
            }
        }
    }
}

fn read_ndjson(
    mut reader: impl BufRead,
    lines_before: u64,
    preparation: &Preparation,
    items: &mpsc::Sender<Item>,
) {
    let mut line_number = lines_before;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = match read_line_capped(&mut reader, &mut line, MAX_LINE_BYTES) {
            Ok(read) => read,
            Err(e) => {
                let _ = items.blocking_send(Item::Broken(format!(
                    "cannot read the input after line {line_number}: {e}"
                )));
                return;
            }
        };
        line_number += 1;
        let at = Position::Line(line_number);
        let item = match read {
            LineRead::Eof => return,
            LineRead::TooLong(length) => Item::Bad {
                at,
                message: format!(
                    "the line is {length} bytes long, more than the {MAX_LINE_BYTES} read at most"
                ),
            },
            LineRead::Line => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<Value>(&line) {
                    Ok(value) => prepare(at, value, preparation),
                    Err(e) => Item::Bad {
                        at,
                        message: format!("not JSON: {e}"),
                    },
                }
            }
        };
        if items.blocking_send(item).is_err() {
            return;
        }
    }
}

enum LineRead {
    Eof,
    Line,
    TooLong(usize),
}

/// One line without its end into `line`; a line longer than `cap` is skipped to its end, not stored.
fn read_line_capped(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<LineRead> {
    let mut length = 0usize;
    let mut any = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(match (any, length > cap) {
                (false, _) => LineRead::Eof,
                (true, true) => LineRead::TooLong(length),
                (true, false) => LineRead::Line,
            });
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        length += chunk.len();
        if length <= cap {
            line.extend_from_slice(chunk);
        } else {
            line.clear();
        }
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(if length > cap {
                LineRead::TooLong(length)
            } else {
                LineRead::Line
            });
        }
    }
}

/// A JSON array, one element at a time: serde's sequence visitor hands each element over as soon as it
/// is parsed, so the array is never held whole.
fn read_array(reader: impl BufRead, preparation: &Preparation, items: &mpsc::Sender<Item>) {
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let mut count = 0u64;
    let elements = Elements {
        preparation,
        items,
        count: &mut count,
    };
    let result = elements
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    if let Err(e) = result {
        if items.is_closed() {
            return;
        }
        let _ = items.blocking_send(Item::Broken(format!(
            "the JSON array is broken after element [{}]: {e}; nothing after it was sent",
            count.saturating_sub(1)
        )));
    }
}

struct Elements<'a> {
    preparation: &'a Preparation,
    items: &'a mpsc::Sender<Item>,
    count: &'a mut u64,
}

impl<'de> DeserializeSeed<'de> for Elements<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Value>()? {
            let item = prepare(Position::Element(*self.count), value, self.preparation);
            *self.count += 1;
            if self.items.blocking_send(item).is_err() {
                return Err(de::Error::custom("the sender stopped"));
            }
        }
        Ok(())
    }
}

/// An event object with its id (assigned when it has none, so every attempt sends the same one), as
/// JSON text.
fn prepare(at: Position, value: Value, preparation: &Preparation) -> Item {
    let Value::Object(mut event) = value else {
        return Item::Bad {
            at,
            message: format!("an event must be a JSON object, not {}", kind(&value)),
        };
    };
    if let Some(field) = &preparation.id_field {
        if event.get(field).is_none_or(Value::is_null) {
            event.insert(
                field.clone(),
                Value::String(uuid::Uuid::now_v7().to_string()),
            );
        }
    }
    match serde_json::to_vec(&event) {
        Ok(json) => Item::Event(Pending { at, json }),
        Err(e) => Item::Bad {
            at,
            message: e.to_string(),
        },
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, id_field: Option<&str>) -> Vec<Item> {
        let (tx, mut rx) = mpsc::channel(1000);
        let preparation = Preparation {
            id_field: id_field.map(str::to_owned),
        };
        read_all(text.as_bytes(), &preparation, &tx);
        drop(tx);
        let mut items = Vec::new();
        while let Ok(item) = rx.try_recv() {
            items.push(item);
        }
        items
    }

    fn event(item: &Item) -> (Position, Value) {
        match item {
            Item::Event(p) => (p.at, serde_json::from_slice(&p.json).expect("json")),
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn ndjson_lines_are_numbered_blank_lines_skipped_bad_ones_reported() {
        let items = read("\n{\"a\":1}\n\nnot json\n[1]\n{\"a\":2}", None);
        assert_eq!(items.len(), 4);
        assert_eq!(
            event(&items[0]),
            (Position::Line(2), serde_json::json!({"a": 1}))
        );
        assert!(
            matches!(&items[1], Item::Bad { at: Position::Line(4), message } if message.starts_with("not JSON")),
            "{:?}",
            items[1]
        );
        assert!(
            matches!(&items[2], Item::Bad { at: Position::Line(5), message } if message.contains("not an array")),
            "{:?}",
            items[2]
        );
        assert_eq!(event(&items[3]).0, Position::Line(6));
    }

    #[test]
    fn an_array_is_read_element_by_element() {
        let items = read(" \n[{\"a\":1}, 5, {\"a\":2}]\n", None);
        assert_eq!(items.len(), 3);
        assert_eq!(event(&items[0]).0, Position::Element(0));
        assert!(matches!(
            &items[1],
            Item::Bad {
                at: Position::Element(1),
                ..
            }
        ));
        assert_eq!(
            event(&items[2]),
            (Position::Element(2), serde_json::json!({"a": 2}))
        );
    }

    #[test]
    fn a_broken_array_says_where_after_sending_what_came_before() {
        let items = read("[{\"a\":1}, {\"a\":", None);
        assert_eq!(items.len(), 2);
        assert_eq!(event(&items[0]).0, Position::Element(0));
        let Item::Broken(message) = &items[1] else {
            panic!("{:?}", items[1])
        };
        assert!(message.contains("after element [0]"), "{message}");
        let items = read("[{\"a\":1}] trailing", None);
        assert!(matches!(items.last(), Some(Item::Broken(_))), "{items:?}");
    }

    #[test]
    fn ids_are_assigned_to_events_without_one_and_kept_otherwise() {
        let items = read(
            "{\"a\":1}\n{\"event_id\":\"0193a6c4-0000-7000-8000-000000000001\"}\n{\"event_id\":null}",
            Some("event_id"),
        );
        let ids: Vec<String> = items
            .iter()
            .map(|i| event(i).1["event_id"].as_str().expect("id").to_owned())
            .collect();
        assert!(uuid::Uuid::parse_str(&ids[0]).is_ok());
        assert_eq!(ids[1], "0193a6c4-0000-7000-8000-000000000001");
        assert!(uuid::Uuid::parse_str(&ids[2]).is_ok());
        assert_ne!(ids[0], ids[2]);
        assert!(event(&read("{\"a\":1}", None)[0])
            .1
            .get("event_id")
            .is_none());
    }

    #[test]
    fn an_overlong_line_is_skipped_not_stored() {
        let mut reader = "aaaaaaaaaa\nbb\n".as_bytes();
        let mut line = Vec::new();
        assert!(matches!(
            read_line_capped(&mut reader, &mut line, 4).expect("read"),
            LineRead::TooLong(10)
        ));
        line.clear();
        assert!(matches!(
            read_line_capped(&mut reader, &mut line, 4).expect("read"),
            LineRead::Line
        ));
        assert_eq!(line, b"bb");
        assert!(matches!(
            read_line_capped(&mut reader, &mut line, 4).expect("read"),
            LineRead::Eof
        ));
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_fine() {
        let items = read("\u{feff}{\"a\":1}\r\n{\"a\":2}\r\n", None);
        assert_eq!(items.len(), 2);
        assert_eq!(event(&items[1]).0, Position::Line(2));
    }
}
