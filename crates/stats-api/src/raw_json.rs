//! Payloads passed through as the JSON text Postgres sends, never built into a `serde_json::Value` tree
//! (a ~1 MB event of small array elements is ≈ 17 MB as a tree): answers and exports splice the text,
//! minified, and the few values the service needs (a CSV column, the sort keys of a page's last row) are
//! found by scanning the text for that path alone.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use eventgate_core::envelope::Event;
use eventgate_core::query::{FieldSource, QueryPlan, Selection};

/// One stored event with its payload as JSON text (borrowed from the database row).
pub struct RawEvent<'a> {
    pub id: uuid::Uuid,
    pub topic: &'a str,
    pub received_at: OffsetDateTime,
    pub producer: &'a str,
    /// The version of the topic's schema the event was validated against (`events.schema_version`).
    pub schema_version: i16,
    /// Valid JSON as Postgres writes `jsonb` (`", "` and `": "` between items), not yet minified.
    pub payload: &'a str,
}

impl RawEvent<'_> {
    /// Appends the event as one JSON object, the shape and member order of [`Event`]'s serialisation
    /// with the schema version beside the envelope's fields:
    /// `{"id":…,"topic":…,"timestamp":…,"producer":…,"schema_version":N,"payload":{…}}`. The payload's
    /// members come in `jsonb`'s order (shorter keys first), which JSON readers do not depend on.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(
            self.id
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"topic\":");
        write_json_string(out, self.topic);
        out.extend_from_slice(b",\"timestamp\":");
        write_json_string(out, &rfc3339(self.received_at));
        out.extend_from_slice(b",\"producer\":");
        write_json_string(out, self.producer);
        out.extend_from_slice(b",\"schema_version\":");
        out.extend_from_slice(self.schema_version.to_string().as_bytes());
        out.extend_from_slice(b",\"payload\":");
        minify_into(out, self.payload);
        out.push(b'}');
    }

    /// [`RawEvent::write_json`] keeping only the members `selection` names (`fields`): `id` and `topic`
    /// always, `timestamp` and `producer` when selected, and a `payload` with the selected payload
    /// fields at their paths (absent ones left out). Only the selected values are parsed.
    pub fn write_selected_json(&self, out: &mut Vec<u8>, selection: &Selection) {
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(
            self.id
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"topic\":");
        write_json_string(out, self.topic);
        if selection.timestamp {
            out.extend_from_slice(b",\"timestamp\":");
            write_json_string(out, &rfc3339(self.received_at));
        }
        if selection.producer {
            out.extend_from_slice(b",\"producer\":");
            write_json_string(out, self.producer);
        }
        let mut payload = Map::new();
        for path in &selection.payload {
            let Some(value) =
                raw_at(self.payload, path).and_then(|raw| serde_json::from_str::<Value>(raw).ok())
            else {
                continue;
            };
            insert_at(&mut payload, path, value);
        }
        out.extend_from_slice(b",\"payload\":");
        // Writing a map of values into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &payload);
        out.push(b'}');
    }

    /// Either form: the whole event, or the members of `selection`.
    pub fn write_json_as(&self, out: &mut Vec<u8>, selection: Option<&Selection>) {
        match selection {
            None => self.write_json(out),
            Some(selection) => self.write_selected_json(out, selection),
        }
    }

    /// The event as the cursor code needs it: the envelope, and a payload holding only the values of
    /// the plan's payload sort keys (each parsed from its own few bytes of text).
    pub fn sort_key_event(&self, plan: &QueryPlan) -> Event {
        let mut payload = Map::new();
        for key in &plan.sort {
            let FieldSource::Payload(path) = &key.field.source else {
                continue;
            };
            let Some(value) = scalar_at(self.payload, path) else {
                continue;
            };
            insert_at(&mut payload, path, value);
        }
        Event {
            id: self.id,
            topic: self.topic.to_owned(),
            timestamp: self.received_at,
            producer: self.producer.to_owned(),
            payload: Value::Object(payload),
        }
    }
}

/// RFC 3339, as `time::serde::rfc3339` writes the envelope's `timestamp`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Appends `json` without the whitespace outside strings: Postgres writes `jsonb` with a space after
/// every `,` and `:`, which would make answers a third larger for arrays of small numbers. A linear
/// byte scan; the input is valid JSON (the database's own output).
pub fn minify_into(out: &mut Vec<u8>, json: &str) {
    let bytes = json.as_bytes();
    out.reserve(bytes.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            out.extend_from_slice(&bytes[start..i]);
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The JSON text at `path` inside `json`, walking objects only (as `eventgate_core::query::payload_at`
/// does on a tree): `None` when a step is missing or not an object. Only the objects on the path are
/// scanned member by member; every other value is skipped without being built.
pub fn raw_at<'a>(json: &'a str, path: &[String]) -> Option<&'a str> {
    let mut current = json;
    for segment in path {
        let mut deserializer = serde_json::Deserializer::from_str(current);
        current = Member(segment).deserialize(&mut deserializer).ok()??.get();
    }
    Some(current.trim())
}

/// A scalar (string, number, boolean) at `path`, parsed; `None` for objects, arrays, null or absent.
pub fn scalar_at(json: &str, path: &[String]) -> Option<Value> {
    let raw = raw_at(json, path)?;
    match raw.as_bytes().first() {
        Some(b'{' | b'[' | b'n') | None => None,
        _ => serde_json::from_str(raw).ok(),
    }
}

fn insert_at(object: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = object;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(next) = entry else {
            return;
        };
        current = next;
    }
    current.insert(last.clone(), value);
}

/// Finds one member of a JSON object; the others are skipped unbuilt.
struct Member<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(self.0))? {
            if matches && found.is_none() {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    // Anything but an object has no members: `None`, not an error.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(serde::de::Error::custom("not an object"))
    }
}

/// Whether a key equals the wanted one, without allocating when it has no escapes.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn minifying_keeps_strings_and_drops_the_spaces_postgres_writes() {
        let mut out = Vec::new();
        minify_into(
            &mut out,
            r#"{"a": [1, 2, {"b c": "x, y: \"z\" \\"}], "d": null, "e": true}"#,
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            r#"{"a":[1,2,{"b c":"x, y: \"z\" \\"}],"d":null,"e":true}"#
        );
    }

    #[test]
    fn values_at_a_path_walk_objects_only() {
        let text = r#"{"info": {"region": "eu", "0": 5, "list": [1, {"x": 1}]}, "n": 1.5, "s": "a\"b", "nul": null}"#;
        assert_eq!(raw_at(text, &path(&["info", "region"])), Some(r#""eu""#));
        assert_eq!(scalar_at(text, &path(&["info", "0"])), Some(json!(5)));
        assert_eq!(scalar_at(text, &path(&["n"])), Some(json!(1.5)));
        assert_eq!(scalar_at(text, &path(&["s"])), Some(json!("a\"b")));
        assert_eq!(scalar_at(text, &path(&["nul"])), None);
        assert_eq!(
            scalar_at(text, &path(&["info"])),
            None,
            "objects are not scalars"
        );
        assert!(
            raw_at(text, &path(&["info", "list", "0"])).is_none(),
            "no walking into arrays"
        );
        assert!(raw_at(text, &path(&["missing"])).is_none());
        assert!(raw_at(text, &path(&["n", "x"])).is_none());
        assert_eq!(
            raw_at(text, &[]),
            Some(text),
            "the empty path is the whole document"
        );
    }

    #[test]
    fn a_selection_keeps_the_named_members_only() {
        let payload =
            r#"{"a": 1, "info": {"region": "eu", "secret": "x"}, "list": [1, 2], "n": null}"#;
        let raw = RawEvent {
            id: uuid::Uuid::nil(),
            topic: "t",
            received_at: OffsetDateTime::UNIX_EPOCH,
            producer: "p",
            schema_version: 2,
            payload,
        };
        let selection = Selection {
            timestamp: false,
            producer: true,
            payload: vec![
                path(&["info", "region"]),
                path(&["list"]),
                path(&["n"]),
                path(&["missing"]),
            ],
        };
        let mut out = Vec::new();
        raw.write_selected_json(&mut out, &selection);
        let written: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            written,
            json!({"id": uuid::Uuid::nil(), "topic": "t", "producer": "p",
                   "payload": {"info": {"region": "eu"}, "list": [1, 2], "n": null}})
        );
    }

    #[test]
    fn an_event_written_from_text_equals_the_serialised_event() {
        let payload = json!({"event_name": "login", "nested": {"a": [0, 0, 1.5, "x"], "é": "ü\n"}, "n": null});
        let event = Event {
            id: uuid::Uuid::now_v7(),
            topic: "audit.logs".into(),
            timestamp: OffsetDateTime::from_unix_timestamp_nanos(1_736_937_000_123_456_000)
                .expect("t"),
            producer: "al\"ice".into(),
            payload: payload.clone(),
        };
        // The spacing Postgres uses.
        let spaced = serde_json::to_string_pretty(&payload).expect("json");
        let raw = RawEvent {
            id: event.id,
            topic: &event.topic,
            received_at: event.timestamp,
            producer: &event.producer,
            schema_version: 3,
            payload: &spaced,
        };
        let mut out = Vec::new();
        raw.write_json(&mut out);
        let written: Value = serde_json::from_slice(&out).expect("valid JSON");
        // What the ingest-api queued for the event, the version included.
        let expected: Value =
            serde_json::from_slice(&event.to_json_bytes_versioned(3)).expect("json");
        assert_eq!(written, expected);
        assert!(
            !out.contains(&b'\n'),
            "one line: NDJSON exports depend on it"
        );
    }
}
