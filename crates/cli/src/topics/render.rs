//! How `topics list` and `topics describe` print what they found: a table for a person, JSON for a
//! program. In the table `-` means "not asked" (no database, no retention declared) and `?` means "could
//! not be read" (the broker or the database did not answer); JSON says both as `null`, and its
//! `broker` and `database` members say which.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use comfy_table::{presets, ContentArrangement, Table};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::inspect::{Details, EventCount, Freshness, KafkaTopic, Report, SourceState, TopicView};
use crate::error::Failure;
use crate::output::thousands;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For a person.
    Table,
    /// For a program: one JSON object.
    Json,
}

impl Format {
    /// The format asked for, else a table on a terminal and JSON in a pipe or file.
    pub fn choose(asked: Option<Format>) -> Format {
        asked.unwrap_or(if std::io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Json
        })
    }
}

/// One top-level property of a version's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub kind: String,
}

/// A version's top-level properties, required and optional, each with its type as the schema says.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionFields {
    pub version: u32,
    pub required: Vec<Field>,
    pub optional: Vec<Field>,
    /// This version's `x-eventgate` object (empty when it has none).
    pub settings: serde_json::Map<String, Value>,
}

impl VersionFields {
    pub fn of(version: u32, schema: &Value) -> VersionFields {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut fields = VersionFields {
            version,
            required: Vec::new(),
            optional: Vec::new(),
            settings: schema
                .get("x-eventgate")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        };
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                let field = Field {
                    name: name.clone(),
                    kind: type_of(property),
                };
                if required.contains(&name.as_str()) {
                    fields.required.push(field);
                } else {
                    fields.optional.push(field);
                }
            }
        }
        // A required name without a property of its own: any type.
        for name in required {
            if !fields.required.iter().any(|f| f.name == name) {
                fields.required.push(Field {
                    name: name.to_owned(),
                    kind: "any".to_owned(),
                });
            }
        }
        fields
    }
}

/// A property's type in a few words: `string`, `integer|null`, `string (date-time)`, `array of
/// object`, `integer (epoch-ms)`, `enum`, `oneOf`, …
pub fn type_of(property: &Value) -> String {
    let base = match property.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("|"),
        _ => ["enum", "const", "oneOf", "anyOf", "allOf", "$ref"]
            .iter()
            .find(|key| property.get(**key).is_some())
            .map_or("any", |key| key)
            .to_owned(),
    };
    let base = if base == "array" {
        match property.get("items") {
            Some(items) if items.is_object() => format!("array of {}", type_of(items)),
            _ => base,
        }
    } else {
        base
    };
    let marks: Vec<&str> = [
        property.get("format").and_then(Value::as_str),
        property.get("x-eventgate-type").and_then(Value::as_str),
    ]
    .into_iter()
    .flatten()
    .collect();
    if marks.is_empty() {
        base
    } else {
        format!("{base} ({})", marks.join(", "))
    }
}

/// `1`, or `1–3` for a topic with versions 1 to 3.
pub fn versions_text(versions: &[u32]) -> String {
    match (versions.first(), versions.last()) {
        (Some(first), Some(last)) if first != last => format!("{first}–{last}"),
        (Some(only), _) => only.to_string(),
        _ => "-".to_owned(),
    }
}

/// `3 / 3`, `3 / 1 (differs)`, `3 / missing`, `3 / ?`: configured, then in Kafka.
pub fn partitions_text(configured: i32, kafka: &KafkaTopic) -> String {
    match kafka {
        KafkaTopic::Present(partitions) if partitions.len() as i64 == i64::from(configured) => {
            format!("{configured} / {}", partitions.len())
        }
        KafkaTopic::Present(partitions) => {
            format!("{configured} / {} (differs)", partitions.len())
        }
        KafkaTopic::Missing => format!("{configured} / missing"),
        KafkaTopic::Unknown => format!("{configured} / ?"),
    }
}

/// `1,234` counted, `~1,200,000` estimated; `-` without a database, `?` when it could not be read.
pub fn events_text(events: Option<EventCount>, database: &SourceState) -> String {
    match events {
        Some(EventCount { count, exact: true }) => thousands(count),
        Some(EventCount {
            count,
            exact: false,
        }) => format!("~{}", thousands(count)),
        None => unknown(database).to_owned(),
    }
}

fn unknown(source: &SourceState) -> &'static str {
    match source {
        SourceState::NotConfigured => "-",
        _ => "?",
    }
}

fn retention_text(retention: &Option<Value>) -> String {
    match retention {
        None => "-".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn millis(from: OffsetDateTime, to: OffsetDateTime) -> i64 {
    i64::try_from((to - from).whole_milliseconds()).unwrap_or(i64::MAX)
}

/// `181 ms`, `4.2 s`, `3 min 20 s`, `5 h 12 min`, `671 d 3 h`: a span as a person reads it.
pub fn duration_text(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    let (s, min, h, d) = (ms / 1000, ms / 60_000, ms / 3_600_000, ms / 86_400_000);
    let text = if ms < 1000 {
        format!("{ms} ms")
    } else if s < 60 {
        format!("{}.{} s", s, (ms % 1000) / 100)
    } else if min < 60 {
        format!("{min} min {} s", s % 60)
    } else if h < 24 {
        format!("{h} h {} min", min % 60)
    } else {
        format!("{d} d {} h", h % 24)
    };
    format!("{sign}{text}")
}

fn kafka_status(kafka: &KafkaTopic) -> &'static str {
    match kafka {
        KafkaTopic::Present(_) => "present",
        KafkaTopic::Missing => "missing",
        KafkaTopic::Unknown => "unknown",
    }
}

fn source_json(source: &SourceState) -> Value {
    match source {
        SourceState::Read => json!({"state": "read", "error": null}),
        SourceState::NotConfigured => json!({"state": "not_configured", "error": null}),
        SourceState::Unreachable(why) => json!({"state": "unreachable", "error": why}),
    }
}

/// A topic as `list --format json` shows it; `describe` adds its details.
pub fn topic_json(topic: &TopicView) -> Value {
    let mut value = json!({
        "name": topic.name,
        "versions": topic.versions,
        "latest_version": topic.versions.last(),
        "compatibility": topic.compatibility,
        "kafka_topic": topic.kafka_topic,
        "kafka_status": kafka_status(&topic.kafka),
        "partitions_configured": topic.partitions_configured,
        "partitions_in_kafka": match &topic.kafka {
            KafkaTopic::Present(partitions) => json!(partitions.len()),
            _ => Value::Null,
        },
        "retention": topic.retention,
        "events_stored": topic.events.map(|e| e.count),
        "events_exact": topic.events.map(|e| e.exact),
        "dead_letters_unresolved": topic.dead_letters_unresolved,
    });
    if let (Some(details), Some(object)) = (&topic.details, value.as_object_mut()) {
        let fields = |fields: &[Field]| -> Vec<Value> {
            fields
                .iter()
                .map(|f| json!({"name": f.name, "type": f.kind}))
                .collect()
        };
        object.insert("key_field".into(), json!(details.key_field));
        object.insert("indexed_fields".into(), json!(details.indexed_fields));
        object.insert("naive_time_zone".into(), json!(details.naive_time_zone));
        object.insert("settings".into(), Value::Object(details.settings.clone()));
        object.insert(
            "schema_versions".into(),
            details
                .schema_versions
                .iter()
                .map(|v| {
                    json!({
                        "version": v.version,
                        "required": fields(&v.required),
                        "optional": fields(&v.optional),
                        "settings": v.settings,
                    })
                })
                .collect(),
        );
        object.insert(
            "kafka_partitions".into(),
            match &topic.kafka {
                KafkaTopic::Present(partitions) => partitions
                    .iter()
                    .map(|p| {
                        json!({
                            "partition": p.id,
                            "leader": p.leader,
                            "replicas": p.replicas,
                            "isr": p.isr,
                            "error": p.error,
                            "low": p.watermarks.map(|w| w.0),
                            "high": p.watermarks.map(|w| w.1),
                        })
                    })
                    .collect(),
                _ => Value::Null,
            },
        );
        object.insert(
            "freshness".into(),
            details.freshness.map_or(Value::Null, freshness_json),
        );
        object.insert(
            "dead_letters_by_reason".into(),
            json!(details.dead_letters_by_reason),
        );
    }
    value
}

fn freshness_json(f: Freshness) -> Value {
    json!({
        "newest_event_at": rfc3339(f.newest_event_at),
        "stored_at": rfc3339(f.stored_at),
        "age_ms": millis(f.newest_event_at, f.now),
        "lag_ms": millis(f.newest_event_at, f.stored_at),
    })
}

fn envelope(report: &Report) -> serde_json::Map<String, Value> {
    let mut object = serde_json::Map::new();
    object.insert("broker".into(), source_json(&report.broker));
    object.insert("database".into(), source_json(&report.database));
    object.insert("problems".into(), json!(report.problems));
    object.insert("warnings".into(), json!(report.warnings));
    object
}

/// Warnings and problems on standard error, whatever the format: what is `?` and why.
fn warn(report: &Report) {
    if let SourceState::Unreachable(why) = &report.broker {
        eprintln!("warning: the Kafka broker did not answer ({why}): partitions in Kafka are `?`");
    }
    if let SourceState::Unreachable(why) = &report.database {
        eprintln!("warning: the database could not be read ({why}): its columns are `?`");
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for problem in &report.problems {
        eprintln!("{problem}");
    }
    if !report.problems.is_empty() {
        eprintln!(
            "error: {} problem(s) in the topics directory: the services would refuse it (see \
             `eventgate topics check`)",
            report.problems.len()
        );
    }
}

fn write_out(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Failure::from_output)
}

fn table() -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    table
}

pub fn list_table(report: &Report) -> String {
    let mut table = table();
    table.set_header([
        "topic",
        "versions",
        "compatibility",
        "kafka topic",
        "partitions (configured / kafka)",
        "retention",
        "events",
        "dead letters",
    ]);
    for topic in &report.topics {
        table.add_row([
            topic.name.clone(),
            versions_text(&topic.versions),
            topic.compatibility.clone(),
            topic.kafka_topic.clone(),
            partitions_text(topic.partitions_configured, &topic.kafka),
            retention_text(&topic.retention),
            events_text(topic.events, &report.database),
            topic
                .dead_letters_unresolved
                .map_or_else(|| unknown(&report.database).to_owned(), |n| n.to_string()),
        ]);
    }
    let mut text = format!("{table}\n");
    if report.database == SourceState::NotConfigured {
        text.push_str("(no database: events and dead letters not counted; --database-url)\n");
    } else if report
        .topics
        .iter()
        .any(|t| t.events.is_some_and(|e| !e.exact))
    {
        text.push_str(
            "(~: the planner's estimate: a topic of more than 100,000 events, or a count that ran \
             out of --timeout)\n",
        );
    }
    text
}

pub fn print_list(report: &Report, format: Format) -> Result<u8, Failure> {
    warn(report);
    let text = match format {
        Format::Table => list_table(report),
        Format::Json => {
            let mut object = envelope(report);
            object.insert(
                "topics".into(),
                report.topics.iter().map(topic_json).collect(),
            );
            format!("{}\n", Value::Object(object))
        }
    };
    write_out(&text)?;
    Ok(report.exit_code())
}

pub fn describe_text(report: &Report, topic: &TopicView, details: &Details) -> String {
    let mut text = String::new();
    let mut line = |name: &str, value: String| {
        text.push_str(&format!("{name:<15}{value}\n"));
    };
    line("topic:", topic.name.clone());
    line(
        "versions:",
        format!(
            "{} (compatibility {})",
            versions_text(&topic.versions),
            topic.compatibility
        ),
    );
    line("kafka topic:", topic.kafka_topic.clone());
    line(
        "partitions:",
        format!(
            "{} configured, {} in Kafka",
            topic.partitions_configured,
            match &topic.kafka {
                KafkaTopic::Present(p) => p.len().to_string(),
                KafkaTopic::Missing => "none: the Kafka topic is missing".to_owned(),
                KafkaTopic::Unknown => "? (the broker did not answer)".to_owned(),
            }
        ),
    );
    line("retention:", retention_text(&topic.retention));
    line(
        "events stored:",
        match topic.events {
            Some(EventCount { exact: false, .. }) => format!(
                "{} (the planner's estimate: the count ran out of time)",
                events_text(topic.events, &report.database)
            ),
            _ => events_text(topic.events, &report.database),
        },
    );
    line(
        "newest event:",
        match details.freshness {
            Some(f) => format!(
                "{} ({} ago); stored at {}, the writers' lag then {}",
                rfc3339(f.newest_event_at),
                duration_text(millis(f.newest_event_at, f.now)),
                rfc3339(f.stored_at),
                duration_text(millis(f.newest_event_at, f.stored_at))
            ),
            None if report.database == SourceState::Read => "none stored yet".to_owned(),
            None => unknown(&report.database).to_owned(),
        },
    );
    line(
        "dead letters:",
        match &details.dead_letters_by_reason {
            Some(reasons) if reasons.is_empty() => "0 unresolved".to_owned(),
            Some(reasons) => format!(
                "{} unresolved: {}",
                reasons.values().sum::<i64>(),
                reasons
                    .iter()
                    .map(|(reason, n)| format!("{reason} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => unknown(&report.database).to_owned(),
        },
    );
    line(
        "key field:",
        details
            .key_field
            .clone()
            .unwrap_or_else(|| "- (the event id)".to_owned()),
    );
    line(
        "indexed:",
        if details.indexed_fields.is_empty() {
            "-".to_owned()
        } else {
            details.indexed_fields.join(", ")
        },
    );
    let shown = ["key_field", "indexed_fields", "compatibility", "retention"];
    let others: Vec<String> = details
        .settings
        .iter()
        .filter(|(key, _)| !shown.contains(&key.as_str()))
        .map(|(key, value)| format!("{key}: {value}"))
        .collect();
    if !others.is_empty() {
        line("settings:", others.join("; "));
    }
    for version in &details.schema_versions {
        text.push_str(&format!("version {}\n", version.version));
        let list = |fields: &[Field]| -> String {
            if fields.is_empty() {
                return "-".to_owned();
            }
            fields
                .iter()
                .map(|f| format!("{}: {}", f.name, f.kind))
                .collect::<Vec<_>>()
                .join(", ")
        };
        text.push_str(&format!("  required:    {}\n", list(&version.required)));
        text.push_str(&format!("  optional:    {}\n", list(&version.optional)));
    }
    if let KafkaTopic::Present(partitions) = &topic.kafka {
        let mut table = table();
        table.set_header(["partition", "leader", "replicas", "in sync", "low", "high"]);
        let ids = |ids: &[i32]| {
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        for p in partitions {
            let (low, high) = p.watermarks.map_or_else(
                || ("?".to_owned(), "?".to_owned()),
                |(low, high)| (low.to_string(), high.to_string()),
            );
            table.add_row([
                p.id.to_string(),
                match &p.error {
                    Some(error) => format!("{} ({error})", p.leader),
                    None => p.leader.to_string(),
                },
                ids(&p.replicas),
                ids(&p.isr),
                low,
                high,
            ]);
        }
        text.push_str(&format!("{table}\n"));
    }
    text
}

pub fn print_describe(report: &Report, format: Format) -> Result<u8, Failure> {
    warn(report);
    let Some(topic) = report.topics.first() else {
        return Err(Failure::Usage("no topic to describe".to_owned()));
    };
    let text = match (format, &topic.details) {
        (Format::Table, Some(details)) => describe_text(report, topic, details),
        _ => {
            let mut object = envelope(report);
            object.insert("topic".into(), topic_json(topic));
            format!("{}\n", Value::Object(object))
        }
    };
    write_out(&text)?;
    Ok(report.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::inspect::Partition;

    fn partitions(n: i32) -> KafkaTopic {
        KafkaTopic::Present(
            (0..n)
                .map(|id| Partition {
                    id,
                    leader: 1,
                    replicas: vec![1],
                    isr: vec![1],
                    error: None,
                    watermarks: None,
                })
                .collect(),
        )
    }

    #[test]
    fn versions_partitions_and_counts_read_as_a_person_expects() {
        assert_eq!(versions_text(&[1]), "1");
        assert_eq!(versions_text(&[1, 2, 3]), "1–3");
        assert_eq!(partitions_text(3, &partitions(3)), "3 / 3");
        assert_eq!(partitions_text(3, &partitions(1)), "3 / 1 (differs)");
        assert_eq!(partitions_text(3, &KafkaTopic::Missing), "3 / missing");
        assert_eq!(partitions_text(3, &KafkaTopic::Unknown), "3 / ?");
        assert_eq!(duration_text(181), "181 ms");
        assert_eq!(duration_text(4_250), "4.2 s");
        assert_eq!(duration_text(200_000), "3 min 20 s");
        assert_eq!(duration_text(5 * 3_600_000 + 12 * 60_000), "5 h 12 min");
        assert_eq!(duration_text(57_988_483_865), "671 d 3 h");
        assert_eq!(duration_text(-1_500), "-1.5 s");
        let read = SourceState::Read;
        assert_eq!(
            events_text(
                Some(EventCount {
                    count: 1_500,
                    exact: true
                }),
                &read
            ),
            "1,500"
        );
        assert_eq!(
            events_text(
                Some(EventCount {
                    count: 2_000_000,
                    exact: false
                }),
                &read
            ),
            "~2,000,000"
        );
        assert_eq!(events_text(None, &SourceState::NotConfigured), "-");
        assert_eq!(
            events_text(None, &SourceState::Unreachable("down".into())),
            "?"
        );
    }

    #[test]
    fn field_types_say_format_nullability_items_and_combinators() {
        let schema = json!({
            "type": "object",
            "required": ["name", "ghost"],
            "properties": {
                "name": {"type": "string"},
                "at": {"type": "string", "format": "date-time"},
                "n": {"type": ["integer", "null"]},
                "jobs": {"type": "array", "items": {"type": "object"}},
                "ms": {"type": "integer", "x-eventgate-type": "epoch-ms"},
                "kind": {"enum": ["a", "b"]},
                "free": {}
            },
            "x-eventgate": {"key_field": "name", "retention": "90d"}
        });
        let fields = VersionFields::of(2, &schema);
        let kinds: Vec<(String, String)> = fields
            .required
            .iter()
            .chain(&fields.optional)
            .map(|f| (f.name.clone(), f.kind.clone()))
            .collect();
        let expected = [
            ("name", "string"),
            ("ghost", "any"),
            ("at", "string (date-time)"),
            ("free", "any"),
            ("jobs", "array of object"),
            ("kind", "enum"),
            ("ms", "integer (epoch-ms)"),
            ("n", "integer|null"),
        ];
        assert_eq!(
            kinds,
            expected
                .iter()
                .map(|(n, k)| ((*n).to_owned(), (*k).to_owned()))
                .collect::<Vec<_>>()
        );
        assert_eq!(fields.settings["retention"], "90d");
        assert_eq!(retention_text(&Some(json!("90d"))), "90d");
        assert_eq!(retention_text(&Some(json!({"days": 90}))), r#"{"days":90}"#);
        assert_eq!(retention_text(&None), "-");
    }

    #[test]
    fn the_list_table_marks_missing_and_unknown_and_the_json_says_null() {
        let topic = |name: &str, kafka: KafkaTopic| TopicView {
            name: name.to_owned(),
            versions: vec![1, 2],
            compatibility: "backward".to_owned(),
            kafka_topic: format!("eventgate.{name}"),
            partitions_configured: 3,
            kafka,
            retention: None,
            events: None,
            dead_letters_unresolved: None,
            details: None,
        };
        let report = Report {
            topics: vec![topic("a", partitions(3)), topic("b", KafkaTopic::Missing)],
            broker: SourceState::Read,
            database: SourceState::NotConfigured,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let text = list_table(&report);
        assert!(text.contains("3 / missing"), "{text}");
        assert!(text.contains("1–2"), "{text}");
        assert!(text.contains("(no database"), "{text}");
        let json = topic_json(&report.topics[1]);
        assert_eq!(json["kafka_status"], "missing");
        assert_eq!(json["partitions_in_kafka"], Value::Null);
        assert_eq!(json["events_stored"], Value::Null);
        assert_eq!(json["latest_version"], 2);
        assert_eq!(topic_json(&report.topics[0])["partitions_in_kafka"], 3);
    }
}
