//! The topic catalogue: one JSON Schema per topic, loaded from `config/topics/<topic>.json` at start.
//!
//! No topic name is known to the code: adding a topic means dropping a schema file into the directory
//! (and a line into the access file) and restarting. Besides standard JSON Schema, a schema may carry an
//! `x-eventgate` object at its root with per-topic settings:
//! `{"key_field": "run_id"}` — the payload field whose value becomes the Kafka message key (events with
//! the same key stay in order on one partition); without it the event id is the key.
//! `{"indexed_fields": ["source_app"]}` — payload fields queried often enough to deserve an expression
//! index of their own (the GIN index already serves equality on every field).
//! `{"naive_time_zone": "UTC"}` — date-times written without an offset are read in that zone and stored
//! as RFC 3339 with its offset ([`crate::naive_time`]; a property may name its own zone with
//! `"x-eventgate-naive-time-zone"`).
//! A property may be marked `"x-eventgate-type": "epoch-ms"` to be queried as a point in time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use jsonschema::error::ValidationErrorKind;

use crate::error::ErrorDetail;
use crate::query::FieldCatalogue;

/// Characters Kafka allows in a topic name; we keep eventgate topic names inside them.
fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot read topics directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read topic schema {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("topic schema {path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("topic schema {path} is not a valid JSON Schema: {message}")]
    Schema { path: PathBuf, message: String },
    #[error("topic file {path}: {message}")]
    Name { path: PathBuf, message: String },
    #[error("no topic schemas found in {0}")]
    Empty(PathBuf),
}

/// Per-topic settings read from the schema's `x-eventgate` object.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TopicSettings {
    pub key_field: Option<String>,
    /// Payload fields analysts filter and sort by often: each gets an expression index
    /// `(topic, <typed value>, id)`, created by `eventgate migrate` and the writer at start-up.
    pub indexed_fields: Vec<String>,
    /// The time zone date-time properties written without an offset are read in (`UTC`, `+02:00`, an
    /// IANA name); they are stored as RFC 3339 with the offset ([`crate::naive_time`]). A property may
    /// name its own with `"x-eventgate-naive-time-zone"`.
    pub naive_time_zone: Option<String>,
}

pub struct Topic {
    pub name: String,
    pub schema: Value,
    pub settings: TopicSettings,
    pub fields: FieldCatalogue,
    /// Where naive date-times are rewritten, and in which zone.
    pub naive_times: Vec<crate::naive_time::Rule>,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Topic {
    pub fn from_schema(name: &str, schema: Value) -> Result<Topic, String> {
        if !is_valid_topic_name(name) {
            return Err(format!(
                "topic name {name:?} must be 1-200 characters of letters, digits, '.', '_' or '-'"
            ));
        }
        let settings = match schema.get("x-eventgate") {
            Some(raw) => {
                TopicSettings::deserialize(raw).map_err(|e| format!("x-eventgate: {e}"))?
            }
            None => TopicSettings::default(),
        };
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| e.to_string())?;
        let mut fields = FieldCatalogue::from_schema(&schema);
        fields.mark_indexed(&settings.indexed_fields)?;
        let naive_times = crate::naive_time::rules(&schema, settings.naive_time_zone.as_deref())?;
        Ok(Topic {
            name: name.to_owned(),
            schema,
            settings,
            fields,
            naive_times,
            validator,
        })
    }

    /// Every way `payload` violates the topic's schema, each naming the JSON path of the offending value
    /// (`jobs[0].status`) relative to the event, prefixed with `prefix` (for batches: `[3].`).
    pub fn validate(&self, payload: &Value, prefix: &str) -> Vec<ErrorDetail> {
        self.validate_event(payload, prefix, None)
    }

    /// [`Topic::validate`] for an event as a producer sends it: `id_field` (`ingest.id_field`), the
    /// event's own idempotency key, belongs to the gateway's envelope, so a schema that closes its
    /// properties (`additionalProperties: false`) without declaring it does not refuse it. The id's
    /// own check (a UUID) is the gateway's. Any other unexpected property is still refused.
    pub fn validate_event(
        &self,
        payload: &Value,
        prefix: &str,
        id_field: Option<&str>,
    ) -> Vec<ErrorDetail> {
        let mut found: Vec<(String, String)> = Vec::new();
        for error in self.validator.iter_errors(payload) {
            let path = error.instance_path().to_string();
            match error.kind() {
                // A missing property is named by its own path (`jobs[0].status`), not its parent's.
                ValidationErrorKind::Required { property } => {
                    let name = property
                        .as_str()
                        .map_or_else(|| property.to_string(), str::to_owned);
                    found.push((child_pointer(&path, &name), error.to_string()));
                }
                // One error per unexpected property, each named by its path; the gateway's id field
                // at the top is not one.
                ValidationErrorKind::AdditionalProperties { unexpected }
                | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                    let what = match error.kind() {
                        ValidationErrorKind::AdditionalProperties { .. } => "Additional",
                        _ => "Unevaluated",
                    };
                    for name in unexpected {
                        if path.is_empty() && id_field == Some(name.as_str()) {
                            continue;
                        }
                        found.push((
                            child_pointer(&path, name),
                            format!("{what} properties are not allowed ('{name}' was unexpected)"),
                        ));
                    }
                }
                _ => found.push((path, error.to_string())),
            }
        }
        found
            .into_iter()
            .map(|(pointer, message)| {
                let field = field_name(prefix, &pointer);
                let detail = ErrorDetail::new(crate::error::ErrorKind::Validation, message);
                if field.is_empty() {
                    detail
                } else {
                    detail.with_field(field)
                }
            })
            .collect()
    }

    /// Rewrites the event's naive date-times as the topic declares ([`crate::naive_time`]); to be done
    /// before [`Topic::validate_event`], so that what is checked is what is stored.
    pub fn normalise_naive_times(&self, payload: &mut Value) -> usize {
        crate::naive_time::normalise(&self.naive_times, payload)
    }

    /// The Kafka message key for an event: the configured key field's value, or the id.
    pub fn message_key(&self, payload: &Value, id: &uuid::Uuid) -> String {
        self.settings
            .key_field
            .as_deref()
            .and_then(|field| payload.get(field))
            .map(|value| match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| id.to_string())
    }
}

/// The field an error names: a JSON pointer inside an event, after the event's place in its batch
/// (`prefix`: `""` for a single event, `"[3]."` for the fourth of a batch); `""` for the event itself.
pub fn field_name(prefix: &str, pointer: &str) -> String {
    let path = pointer_to_path(pointer);
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path,
        (false, true) => prefix.trim_end_matches('.').to_owned(),
        (false, false) if path.starts_with('[') => {
            format!("{}{path}", prefix.trim_end_matches('.'))
        }
        (false, false) => format!("{prefix}{path}"),
    }
}

/// The JSON pointer of the member `name` of the object at `pointer`.
fn child_pointer(pointer: &str, name: &str) -> String {
    format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"))
}

/// `/jobs/0/status` → `jobs[0].status`: the notation producers know from their own code.
pub fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&segment);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

#[derive(Debug, Default)]
pub struct Catalogue {
    /// Shared, so that a request can hold its topic without borrowing the catalogue.
    topics: BTreeMap<String, std::sync::Arc<Topic>>,
}

impl Catalogue {
    /// Loads every `<topic>.json` of `dir`. Any broken file fails the whole load: a service must not
    /// start with part of its topics silently missing.
    pub fn load_dir(dir: &Path) -> Result<Catalogue, CatalogueError> {
        let entries = std::fs::read_dir(dir).map_err(|source| CatalogueError::ReadDir {
            path: dir.to_owned(),
            source,
        })?;
        let mut topics = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| CatalogueError::ReadDir {
                path: dir.to_owned(),
                source,
            })?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            let text =
                std::fs::read_to_string(&path).map_err(|source| CatalogueError::ReadFile {
                    path: path.clone(),
                    source,
                })?;
            let schema: Value =
                serde_json::from_str(&text).map_err(|source| CatalogueError::Json {
                    path: path.clone(),
                    source,
                })?;
            let topic =
                Topic::from_schema(&name, schema).map_err(|message| CatalogueError::Schema {
                    path: path.clone(),
                    message,
                })?;
            topics.insert(name, std::sync::Arc::new(topic));
        }
        if topics.is_empty() {
            return Err(CatalogueError::Empty(dir.to_owned()));
        }
        Ok(Catalogue { topics })
    }

    pub fn from_topics(topics: impl IntoIterator<Item = Topic>) -> Catalogue {
        Catalogue {
            topics: topics
                .into_iter()
                .map(|t| (t.name.clone(), std::sync::Arc::new(t)))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name).map(|t| &**t)
    }

    /// The topic, shared: what a request keeps for its whole life.
    pub fn shared(&self, name: &str) -> Option<std::sync::Arc<Topic>> {
        self.topics.get(name).cloned()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values().map(|t| &**t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runs_topic() -> Topic {
        Topic::from_schema(
            "public.cps.za.runs",
            json!({
                "type": "object",
                "required": ["run_id", "jobs"],
                "x-eventgate": {"key_field": "run_id"},
                "properties": {
                    "run_id": {"type": "integer"},
                    "jobs": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"status": {"enum": ["succeeded", "failed"]}}
                    }},
                    "created_at": {"type": "string", "format": "date-time"}
                }
            }),
        )
        .unwrap()
    }

    #[test]
    fn violations_name_their_json_path() {
        let topic = runs_topic();
        let errors = topic.validate(&json!({"run_id": 1, "jobs": [{"status": "ok"}]}), "");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field.as_deref(), Some("jobs[0].status"));

        let errors = topic.validate(&json!({"run_id": "x", "jobs": []}), "[2].");
        assert_eq!(errors[0].field.as_deref(), Some("[2].run_id"));
    }

    #[test]
    fn every_violation_is_reported() {
        let errors = runs_topic().validate(&json!({"run_id": "x"}), "");
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn the_id_field_is_the_gateways_even_when_a_schema_closes_its_properties() {
        let closed = Topic::from_schema(
            "closed",
            json!({"type": "object", "properties": {"a": {"type": "integer"}},
                   "additionalProperties": false}),
        )
        .unwrap();
        let with_id = json!({"a": 1, "event_id": "0191e6a2-59d8-7a31-9f62-5d2f04a1c0de"});
        assert!(closed
            .validate_event(&with_id, "", Some("event_id"))
            .is_empty());
        // Without the id field named, the schema alone decides.
        assert_eq!(closed.validate(&with_id, "").len(), 1);
        // Any other unexpected property is still refused, and only it is named.
        let errors = closed.validate_event(
            &json!({"a": 1, "event_id": "x", "b": 2}),
            "[1].",
            Some("event_id"),
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("'b'"), "{}", errors[0].message);
        assert!(
            !errors[0].message.contains("event_id"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[0].field.as_deref(), Some("[1].b"));
    }

    #[test]
    fn missing_and_unexpected_properties_are_named_by_their_own_path() {
        let topic = Topic::from_schema(
            "runs",
            json!({
                "type": "object",
                "required": ["description", "jobs"],
                "properties": {
                    "description": {"type": "string"},
                    "jobs": {"type": "array", "items": {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"type": "string"}},
                        "additionalProperties": false
                    }}
                },
                "additionalProperties": false
            }),
        )
        .unwrap();
        let fields = |payload: Value, prefix: &str| -> Vec<String> {
            let mut fields: Vec<String> = topic
                .validate(&payload, prefix)
                .into_iter()
                .map(|e| e.field.unwrap_or_default())
                .collect();
            fields.sort();
            fields
        };
        assert_eq!(fields(json!({"jobs": []}), ""), ["description"]);
        assert_eq!(fields(json!({"jobs": []}), "[1]."), ["[1].description"]);
        assert_eq!(
            fields(
                json!({"description": "d", "jobs": [{"stat": "x"}], "a/b": 1, "c": 2}),
                ""
            ),
            ["a/b", "c", "jobs[0].stat", "jobs[0].status"]
        );
        let errors = topic.validate(&json!({"jobs": [], "c": 2}), "");
        let unexpected = errors
            .iter()
            .find(|e| e.field.as_deref() == Some("c"))
            .expect("c named");
        assert_eq!(
            unexpected.message,
            "Additional properties are not allowed ('c' was unexpected)"
        );
    }

    #[test]
    fn a_topic_may_read_naive_date_times_in_a_zone() {
        let topic = Topic::from_schema(
            "t",
            json!({"x-eventgate": {"naive_time_zone": "UTC"},
                   "properties": {"at": {"type": "string", "format": "date-time"}}}),
        )
        .unwrap();
        let mut event = json!({"at": "2021-01-01 09:15:29.243860"});
        assert_eq!(topic.normalise_naive_times(&mut event), 1);
        assert_eq!(event["at"], "2021-01-01T09:15:29.243860Z");
        assert!(topic.validate(&event, "").is_empty());
        let err = Topic::from_schema(
            "t",
            json!({"x-eventgate": {"naive_time_zone": "Nowhere/Land"}}),
        )
        .expect_err("unknown zone");
        assert!(err.contains("naive_time_zone"), "{err}");
    }

    #[test]
    fn formats_are_validated() {
        let errors = runs_topic().validate(
            &json!({"run_id": 1, "jobs": [], "created_at": "yesterday"}),
            "",
        );
        assert_eq!(errors[0].field.as_deref(), Some("created_at"));
    }

    #[test]
    fn key_field_or_id_keys_the_message() {
        let topic = runs_topic();
        let id = uuid::Uuid::now_v7();
        assert_eq!(topic.message_key(&json!({"run_id": 7}), &id), "7");
        assert_eq!(topic.message_key(&json!({}), &id), id.to_string());
    }

    #[test]
    fn topic_names_are_kafka_safe() {
        assert!(Topic::from_schema("bad name", json!({})).is_err());
        assert!(Topic::from_schema("../etc", json!({})).is_err());
        assert!(Topic::from_schema("web.events", json!({})).is_ok());
    }

    #[test]
    fn pointer_becomes_dotted_path() {
        assert_eq!(pointer_to_path(""), "");
        assert_eq!(pointer_to_path("/a/0/b~1c"), "a[0].b/c");
    }

    #[test]
    fn shipped_topics_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/topics");
        let catalogue = Catalogue::load_dir(&dir).unwrap();
        let names: Vec<_> = catalogue.names().collect();
        assert_eq!(names, ["audit.logs", "public.cps.za.runs", "web.events"]);
    }
}
