//! The topic catalogue: one JSON Schema per topic, loaded from `config/topics/<topic>.json` at start —
//! or several versions of it, `config/topics/<topic>/1.json`, `2.json`, … (the single file is version 1).
//!
//! No topic name is known to the code: adding a topic means dropping a schema file into the directory
//! (and a line into the access file) and restarting. A topic's versions must follow its compatibility
//! rule ([`compat`]); a directory where one does not is refused, naming the topic, the version, the
//! field and the rule. An event is validated against the version it names ([`Topic::select_version`],
//! `$schema` or the `Eventgate-Schema-Version` header), else the latest; every version is compiled at
//! load. The queryable fields are the union over the versions ([`union_fields`]): a field must have one
//! type in all of them (or a wider one: see there). Besides standard JSON Schema,
//! a schema may carry an `x-eventgate` object at its root with per-topic settings:
//! `{"key_field": "run_id"}` — the payload field whose value becomes the Kafka message key (events with
//! the same key stay in order on one partition); without it the event id is the key.
//! `{"indexed_fields": ["source_app"]}` — payload fields queried often enough to deserve an expression
//! index of their own.
//! `{"naive_time_zone": "UTC"}` — date-times written without an offset are read in that zone and stored
//! as RFC 3339 with its offset ([`crate::naive_time`]; a property may name its own zone with
//! `"x-eventgate-naive-time-zone"`).
//! `{"compatibility": "backward"}` — what a new version must keep: `backward` (the default: it reads
//! every event of every earlier version), `forward` (every earlier version reads its events), `full`
//! (both) or `none`. Each version is checked against all earlier ones under its own rule.
//! `{"retention": "90d"}` — how long the topic's events are kept (`<n>h`, `<n>d`, `<n>w` or `forever`;
//! unset: `storage.retention`).
//! `{"containment_index": true}` — a GIN index over the topic's payloads, for equality and containment
//! filters on fields without an index of their own.
//! A property may be marked `"x-eventgate-type": "epoch-ms"` to be queried as a point in time.

pub mod compat;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use jsonschema::error::ValidationErrorKind;

use crate::error::ErrorDetail;
use crate::query::{FieldCatalogue, FieldType};

pub use compat::{Compatibility, Incompatibility};

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
    #[error("topic {topic}: {message}")]
    Versions { topic: String, message: String },
    #[error("topic {topic}: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Incompatible {
        topic: String,
        problems: Vec<VersionProblem>,
    },
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
    /// What a new version of the topic's schema must keep ([`compat`]); `backward` by default.
    pub compatibility: Compatibility,
    /// How long the topic's events are kept (`"90d"`, `"forever"`); unset: `storage.retention`. Expired
    /// events go with their partitions ([`crate::db::partitions`]), never row by row.
    pub retention: Option<crate::retention::Retention>,
    /// A GIN index over the payloads of this topic's partitions, which serves equality and containment
    /// filters on every field (`payload @> …`). Off by default: it costs the writer 4-6 times its insert
    /// speed on the topic; without it those filters are answered all the same, by scanning the topic's
    /// events in time order.
    pub containment_index: bool,
}

/// One version of a topic's schema.
#[derive(Debug, Clone)]
pub struct SchemaVersion {
    /// 1, 2, …: the file's name in the topic's directory (a single-file topic is version 1).
    pub number: u32,
    pub schema: Value,
}

/// A version that breaks its rule against an earlier one.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionProblem {
    pub version: u32,
    /// The earlier version it cannot follow.
    pub against: u32,
    /// The rule of `version` (its `x-eventgate.compatibility`).
    pub rule: Compatibility,
    pub incompatibility: Incompatibility,
}

impl std::fmt::Display for VersionProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (reader, writer) = match self.incompatibility.direction {
            compat::Direction::NewReadsOld => (self.version, self.against),
            compat::Direction::OldReadsNew => (self.against, self.version),
        };
        write!(
            f,
            "version {} breaks {} compatibility with version {} at {}: {} (version {reader} could \
             not read every event of version {writer})",
            self.version,
            self.rule,
            self.against,
            self.incompatibility.field(),
            self.incompatibility.reason,
        )
    }
}

/// Every way the versions break their rules: each version (oldest first) against every earlier one,
/// under its own `x-eventgate.compatibility` — transitive, like Confluent's `…_TRANSITIVE` rules, so
/// the latest version's rule holds against the whole history. A version whose settings do not parse
/// is checked under the default rule (its settings are refused elsewhere).
pub fn check_versions(versions: &[SchemaVersion]) -> Vec<VersionProblem> {
    let mut problems = Vec::new();
    for (i, newer) in versions.iter().enumerate() {
        let rule = newer
            .schema
            .get("x-eventgate")
            .and_then(|raw| TopicSettings::deserialize(raw).ok())
            .unwrap_or_default()
            .compatibility;
        for older in &versions[..i] {
            for incompatibility in compat::check(&older.schema, &newer.schema, rule) {
                problems.push(VersionProblem {
                    version: newer.number,
                    against: older.number,
                    rule,
                    incompatibility,
                });
            }
        }
    }
    problems
}

pub struct Topic {
    pub name: String,
    /// The latest version's schema.
    pub schema: Value,
    /// The latest version's settings.
    pub settings: TopicSettings,
    /// The union of every version's fields ([`union_fields`]).
    pub fields: FieldCatalogue,
    /// Where the latest version's naive date-times are rewritten, and in which zone.
    pub naive_times: Vec<crate::naive_time::Rule>,
    /// One per version, oldest first (`compiled[n - 1]` is version `n`): compiled at load, so that
    /// an event naming an older version costs no compilation.
    compiled: Vec<Compiled>,
    /// Every version, oldest first; the last is `schema`, the one events are validated against by default.
    versions: Vec<SchemaVersion>,
}

/// What validating an event of one version needs.
struct Compiled {
    validator: jsonschema::Validator,
    naive_times: Vec<crate::naive_time::Rule>,
}

/// The member of an event that names the version of the topic's schema it was written for; removed
/// from the payload before validation and storage.
pub const SCHEMA_MEMBER: &str = "$schema";

/// The request header naming the version every event of the request was written for (an event's own
/// `$schema` overrides it).
pub const SCHEMA_VERSION_HEADER: &str = "Eventgate-Schema-Version";

/// The version number a `$schema` member or the header names: an integer `N`, or a string `"N"` or
/// `"<topic>/N"` (the topic must be this one); anything else is refused with the reason.
pub fn parse_version(topic: &str, value: &Value) -> Result<u32, String> {
    let number = |text: &str| -> Option<u32> {
        // One spelling per version, as the files are named: no sign, no leading zero.
        (!text.starts_with('0') && !text.starts_with('+'))
            .then(|| text.parse::<u32>().ok())
            .flatten()
            .filter(|n| *n >= 1)
    };
    let expected = format!("a version number: an integer N, or the string \"N\" or \"{topic}/N\"");
    match value {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("must be {expected}, not {n}")),
        Value::String(text) => {
            let digits = match text.rsplit_once('/') {
                Some((named, digits)) if named == topic => digits,
                Some((named, _)) => {
                    return Err(format!(
                        "names the topic {named:?}, but the event is sent to {topic:?}"
                    ))
                }
                None => text.as_str(),
            };
            number(digits).ok_or_else(|| format!("must be {expected}, not {text:?}"))
        }
        other => Err(format!("must be {expected}, not {other}")),
    }
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
        let versions = vec![SchemaVersion {
            number: 1,
            schema: schema.clone(),
        }];
        Ok(Topic {
            name: name.to_owned(),
            schema,
            settings,
            fields,
            compiled: vec![Compiled {
                validator,
                naive_times: naive_times.clone(),
            }],
            naive_times,
            versions,
        })
    }

    /// A topic of several versions (`schemas[0]` is version 1): each must be a valid topic schema and
    /// follow its rule against the earlier ones, and their fields must agree on their types; the latest
    /// is the one events are validated against unless they name another.
    pub fn from_versions(name: &str, schemas: Vec<Value>) -> Result<Topic, String> {
        let mut built = Vec::with_capacity(schemas.len());
        for (number, schema) in (1..).zip(schemas) {
            let topic = Topic::from_schema(name, schema.clone())
                .map_err(|e| format!("version {number}: {e}"))?;
            built.push((SchemaVersion { number, schema }, topic));
        }
        Topic::combine(name, built).map_err(|error| match error {
            CatalogueError::Incompatible { problems, .. } => problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            CatalogueError::Versions { message, .. } => message,
            other => other.to_string(),
        })
    }

    /// The versions of a topic, each already a topic of its own (oldest first), made one topic: the
    /// latest's schema and settings, every version's validator, the union of their fields. Refused when
    /// a version breaks its rule ([`CatalogueError::Incompatible`]) or a field's types disagree
    /// ([`CatalogueError::Versions`]).
    fn combine(name: &str, built: Vec<(SchemaVersion, Topic)>) -> Result<Topic, CatalogueError> {
        let versions: Vec<SchemaVersion> = built.iter().map(|(v, _)| v.clone()).collect();
        let problems = check_versions(&versions);
        if !problems.is_empty() {
            return Err(CatalogueError::Incompatible {
                topic: name.to_owned(),
                problems,
            });
        }
        let catalogues: Vec<(u32, &FieldCatalogue)> =
            built.iter().map(|(v, t)| (v.number, &t.fields)).collect();
        let mut fields = union_fields(&catalogues).map_err(|message| CatalogueError::Versions {
            topic: name.to_owned(),
            message,
        })?;
        let mut compiled = Vec::with_capacity(built.len());
        let mut latest = None;
        for (_, mut topic) in built {
            compiled.append(&mut topic.compiled);
            latest = Some(topic);
        }
        let Some(mut topic) = latest else {
            return Err(CatalogueError::Versions {
                topic: name.to_owned(),
                message: "no schema version".into(),
            });
        };
        // The latest version's indexed fields, on the union (a widened type may refuse one).
        fields
            .mark_indexed(&topic.settings.indexed_fields)
            .map_err(|message| CatalogueError::Versions {
                topic: name.to_owned(),
                message,
            })?;
        topic.fields = fields;
        topic.compiled = compiled;
        topic.versions = versions;
        Ok(topic)
    }

    /// Every version of the schema, oldest first.
    pub fn versions(&self) -> &[SchemaVersion] {
        &self.versions
    }

    /// The version an event is validated against: the one it names, else the latest. An unknown
    /// version is refused with the versions that exist.
    pub fn select_version(&self, named: Option<u32>) -> Result<u32, String> {
        match named {
            None => Ok(self.latest_version()),
            Some(n) if self.versions.iter().any(|v| v.number == n) => Ok(n),
            Some(n) => Err(format!(
                "topic {:?} has no schema version {n}; its versions are {}",
                self.name,
                self.versions
                    .iter()
                    .map(|v| v.number.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn compiled(&self, version: u32) -> Option<&Compiled> {
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        self.compiled.get(index)
    }

    /// The number of the latest version, the one events are validated against.
    pub fn latest_version(&self) -> u32 {
        self.versions.last().map_or(1, |v| v.number)
    }

    /// The topic's rule for its versions (the latest version's `x-eventgate.compatibility`).
    pub fn compatibility(&self) -> Compatibility {
        self.settings.compatibility
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
        self.validate_event_version(payload, prefix, id_field, self.latest_version())
    }

    /// [`Topic::validate_event`] against one version of the schema (see [`Topic::select_version`]);
    /// an unknown version is an error of the event.
    pub fn validate_event_version(
        &self,
        payload: &Value,
        prefix: &str,
        id_field: Option<&str>,
        version: u32,
    ) -> Vec<ErrorDetail> {
        let Some(compiled) = self.compiled(version) else {
            let message = self
                .select_version(Some(version))
                .err()
                .unwrap_or_else(|| format!("no compiled schema for version {version}"));
            return vec![ErrorDetail::validation(
                field_name(prefix, &child_pointer("", SCHEMA_MEMBER)),
                message,
            )];
        };
        let mut found: Vec<(String, String)> = Vec::new();
        for error in compiled.validator.iter_errors(payload) {
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

    /// [`Topic::normalise_naive_times`] as one version of the schema declares them.
    pub fn normalise_naive_times_version(&self, payload: &mut Value, version: u32) -> usize {
        match self.compiled(version) {
            Some(compiled) => crate::naive_time::normalise(&compiled.naive_times, payload),
            None => 0,
        }
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

/// Where a topic's schema versions are: `(number, file)`, oldest first.
struct TopicSource {
    name: String,
    files: Vec<(u32, PathBuf)>,
}

/// The topics of `dir`, by name: a `<topic>.json` file (version 1) or a `<topic>/` directory of
/// `1.json`, `2.json`, … Each broken entry is an error of its own, so that a check can report them
/// all; hidden directories (Kubernetes' `..data` of a mounted ConfigMap) are skipped.
fn scan(dir: &Path) -> Result<Vec<Result<TopicSource, CatalogueError>>, CatalogueError> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| CatalogueError::ReadDir { path, source }
    };
    let mut found: BTreeMap<String, Result<TopicSource, CatalogueError>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(read_error(dir))? {
        let path = entry.map_err(read_error(dir))?.path();
        let Some(file_name) = path.file_name().and_then(|s| s.to_str()) else {
            continue;
        };
        let source = if path.is_dir() {
            if file_name.starts_with('.') {
                continue;
            }
            let name = file_name.to_owned();
            versions_in(&path, &name).map(|files| TopicSource { name, files })
        } else {
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            Ok(TopicSource {
                name,
                files: vec![(1, path.clone())],
            })
        };
        let name = match &source {
            Ok(source) => source.name.clone(),
            Err(CatalogueError::Versions { topic, .. }) => topic.clone(),
            Err(_) => file_name.to_owned(),
        };
        match found.entry(name) {
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(source);
            }
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                let name = entry.key().clone();
                *entry.get_mut() = Err(CatalogueError::Versions {
                    message: format!(
                        "defined twice, as {name}.json and as the directory {name}/: keep one (the \
                         file is version 1 of the directory)"
                    ),
                    topic: name,
                });
            }
        }
    }
    Ok(found.into_values().collect())
}

/// The version files of a topic's directory: `1.json` … `n.json`, without a gap.
fn versions_in(dir: &Path, topic: &str) -> Result<Vec<(u32, PathBuf)>, CatalogueError> {
    let versions_error = |message: String| CatalogueError::Versions {
        topic: topic.to_owned(),
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|source| CatalogueError::ReadDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| CatalogueError::ReadDir {
                path: dir.to_owned(),
                source,
            })?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        // `1`, `2`, …: no sign, no leading zero, so that each version has one name.
        let number = stem
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1 && !stem.starts_with('0') && !stem.starts_with('+'));
        let Some(number) = number else {
            return Err(versions_error(format!(
                "unexpected file {} in the topic's directory: versions are named 1.json, 2.json, …",
                path.display()
            )));
        };
        files.push((number, path));
    }
    files.sort();
    if files.is_empty() {
        return Err(versions_error(format!(
            "the directory {} holds no version (1.json, 2.json, …)",
            dir.display()
        )));
    }
    if let Some((expected, (number, _))) = (1..).zip(&files).find(|(i, (n, _))| i != n) {
        return Err(versions_error(format!(
            "versions must be numbered 1, 2, … without a gap: version {expected} is missing \
             (found {number}.json)"
        )));
    }
    Ok(files)
}

/// Reads, parses and checks a topic's versions; the topic validates with the latest.
fn load_topic(source: TopicSource) -> Result<Topic, CatalogueError> {
    let mut built = Vec::with_capacity(source.files.len());
    for (number, path) in source.files {
        let text = std::fs::read_to_string(&path).map_err(|source| CatalogueError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let schema: Value = serde_json::from_str(&text).map_err(|source| CatalogueError::Json {
            path: path.clone(),
            source,
        })?;
        // Every version must be a topic schema of its own, not only the latest.
        let topic = Topic::from_schema(&source.name, schema.clone()).map_err(|message| {
            CatalogueError::Schema {
                path: path.clone(),
                message,
            }
        })?;
        built.push((SchemaVersion { number, schema }, topic));
    }
    Topic::combine(&source.name, built)
}

/// How the types of one field in two versions combine, when they can: the same type; `integer` and
/// `number` as `number`; `epoch-ms` and `integer` as `integer`, and with `number` as `number`;
/// `date-time` and `string` as `string` (a format added or removed); anything with a type the schema
/// does not pin down (`other`: only `_exists` applies) as `other`. Any other pair (`string` and
/// `integer`) has no type both versions' values can be compared as.
fn wider_type(a: FieldType, b: FieldType) -> Option<FieldType> {
    use FieldType::*;
    match (a, b) {
        _ if a == b => Some(a),
        (Other, _) | (_, Other) => Some(Other),
        (Integer | EpochMillis, Number) | (Number, Integer | EpochMillis) => Some(Number),
        (Integer, EpochMillis) | (EpochMillis, Integer) => Some(Integer),
        (DateTime, String) | (String, DateTime) => Some(String),
        _ => None,
    }
}

/// The queryable fields of a topic of several versions (`(number, fields)`, oldest first): every
/// field of every version, each with one type — [`wider_type`] of its types in the versions that have
/// it. A field whose types have none is refused, naming the field, the versions and their types.
/// Indexed marks are not carried over: the caller marks the latest version's.
pub fn union_fields(versions: &[(u32, &FieldCatalogue)]) -> Result<FieldCatalogue, String> {
    let mut union = FieldCatalogue::default();
    // Where each field's type came from, for the error.
    let mut seen: BTreeMap<String, (u32, FieldType)> = BTreeMap::new();
    let mut conflicts = Vec::new();
    // Newest first, so that a name the latest version gives a field is the one kept.
    for (number, fields) in versions.iter().rev() {
        for def in fields.fields().filter(|d| !d.is_envelope()) {
            let mut def = def.clone();
            def.indexed = false;
            let key = def.name.clone();
            let known = union.fields().find(|d| d.source == def.source).cloned();
            match known {
                None => {
                    seen.insert(key, (*number, def.ty));
                    union.insert_payload_field(def);
                }
                Some(mut known) => match wider_type(known.ty, def.ty) {
                    Some(ty) => {
                        known.ty = ty;
                        union.insert_payload_field(known);
                    }
                    None => {
                        let (other, other_ty) = seen.get(&key).copied().unwrap_or((0, known.ty));
                        conflicts.push(format!(
                            "field {key} is {} in version {number} but {} in version {other}: a \
                             field must keep one type across versions (integer may widen to \
                             number, date-time to string)",
                            def.ty.as_str(),
                            other_ty.as_str(),
                        ));
                    }
                },
            }
        }
    }
    if conflicts.is_empty() {
        Ok(union)
    } else {
        Err(conflicts.join("; "))
    }
}

/// What [`Catalogue::check_dir`] found: the topics that load, and every error of the others.
#[derive(Debug, Default)]
pub struct DirCheck {
    pub topics: Vec<Topic>,
    pub errors: Vec<CatalogueError>,
}

impl Catalogue {
    /// Loads every topic of `dir`: `<topic>.json`, or `<topic>/1.json`, `2.json`, … whose versions
    /// follow the topic's compatibility rule. Any broken topic fails the whole load: a service must
    /// not start with part of its topics silently missing (or serve a version that breaks its rule).
    pub fn load_dir(dir: &Path) -> Result<Catalogue, CatalogueError> {
        let mut topics = BTreeMap::new();
        for source in scan(dir)? {
            let topic = load_topic(source?)?;
            topics.insert(topic.name.clone(), std::sync::Arc::new(topic));
        }
        if topics.is_empty() {
            return Err(CatalogueError::Empty(dir.to_owned()));
        }
        Ok(Catalogue { topics })
    }

    /// [`Catalogue::load_dir`] that goes on past a broken topic, for `eventgate topics check`: every
    /// topic that loads and every error of the others. `Err` only when `dir` cannot be read.
    pub fn check_dir(dir: &Path) -> Result<DirCheck, CatalogueError> {
        let mut check = DirCheck::default();
        for source in scan(dir)? {
            match source.and_then(load_topic) {
                Ok(topic) => check.topics.push(topic),
                Err(error) => check.errors.push(error),
            }
        }
        if check.topics.is_empty() && check.errors.is_empty() {
            check.errors.push(CatalogueError::Empty(dir.to_owned()));
        }
        Ok(check)
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

    /// Writes `files` (`name` → JSON) under a new temporary directory.
    fn topics_dir(files: &[(&str, Value)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, schema) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&path, schema.to_string()).expect("write");
        }
        dir
    }

    fn logs(properties: Value, required: &[&str]) -> Value {
        json!({"type": "object", "properties": properties, "required": required,
               "additionalProperties": false})
    }

    #[test]
    fn a_topic_directory_holds_its_versions_and_validates_with_the_latest() {
        let v1 = logs(json!({"name": {"type": "string"}}), &["name"]);
        let v2 = logs(
            json!({"name": {"type": "string"}, "customer_id": {"type": "integer"}}),
            &["name"],
        );
        let dir = topics_dir(&[
            ("audit.logs/1.json", v1),
            ("audit.logs/2.json", v2.clone()),
            ("audit.logs/README.md", json!("not a version")),
            ("web.events.json", json!({})),
            // A mounted ConfigMap's own directories are not topics.
            ("..data/x.json", json!({})),
        ]);
        let catalogue = Catalogue::load_dir(dir.path()).expect("loads");
        assert_eq!(
            catalogue.names().collect::<Vec<_>>(),
            ["audit.logs", "web.events"]
        );
        let topic = catalogue.get("audit.logs").expect("topic");
        assert_eq!(topic.latest_version(), 2);
        assert_eq!(
            topic
                .versions()
                .iter()
                .map(|v| v.number)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(topic.schema, v2);
        assert_eq!(topic.compatibility(), Compatibility::Backward);
        // Version 2's new property is accepted: the latest version validates.
        assert!(topic
            .validate(&json!({"name": "n", "customer_id": 4}), "")
            .is_empty());
        let single = catalogue.get("web.events").expect("topic");
        assert_eq!(single.latest_version(), 1);
        assert_eq!(single.versions().len(), 1);
    }

    #[test]
    fn a_version_that_breaks_its_rule_is_refused_naming_topic_version_field_and_rule() {
        let v1 = logs(json!({"name": {"type": "string"}}), &["name"]);
        let v2 = logs(
            json!({"name": {"type": "string"}, "customer_id": {"type": "integer"}}),
            &["name", "customer_id"],
        );
        let dir = topics_dir(&[("audit.logs/1.json", v1.clone()), ("audit.logs/2.json", v2)]);
        let error = Catalogue::load_dir(dir.path()).expect_err("refused");
        let CatalogueError::Incompatible { topic, problems } = &error else {
            panic!("{error}");
        };
        assert_eq!(topic, "audit.logs");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            error.to_string(),
            "topic audit.logs: version 2 breaks backward compatibility with version 1 at \
             customer_id: new required property (version 2 could not read every event of version 1)"
        );

        // Under `none` the same version is accepted; `forward` names the other reading.
        let mut none = logs(
            json!({"name": {"type": "string"}, "customer_id": {"type": "integer"}}),
            &["name", "customer_id"],
        );
        none["x-eventgate"] = json!({"compatibility": "none"});
        let dir = topics_dir(&[("t/1.json", v1.clone()), ("t/2.json", none.clone())]);
        let topic = Topic::from_versions("t", vec![v1.clone(), none.clone()]).expect("none");
        assert_eq!(topic.compatibility(), Compatibility::None);
        assert!(Catalogue::load_dir(dir.path()).is_ok());
        none["x-eventgate"] = json!({"compatibility": "forward"});
        let error = Topic::from_versions("t", vec![v1, none]).expect_err("forward");
        assert!(
            error.contains("breaks forward compatibility with version 1 at customer_id")
                && error.contains("version 1 could not read every event of version 2"),
            "{error}"
        );
    }

    #[test]
    fn every_version_is_checked_against_every_earlier_one() {
        let typed = |t: Value| logs(json!({"n": {"type": t}}), &[]);
        let v1 = typed(json!("integer"));
        let v2 = typed(json!(["integer", "string"]));
        let v3 = typed(json!("string"));
        let problems = check_versions(
            &[v1, v2, v3]
                .into_iter()
                .zip(1..)
                .map(|(schema, number)| SchemaVersion { number, schema })
                .collect::<Vec<_>>(),
        );
        let found: Vec<(u32, u32, String)> = problems
            .iter()
            .map(|p| (p.version, p.against, p.incompatibility.reason.clone()))
            .collect();
        assert_eq!(
            found,
            [
                (3, 1, "type changed from integer to string".to_owned()),
                (
                    3,
                    2,
                    "type narrowed from [integer, string] to string".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn versions_are_numbered_without_gaps_and_a_topic_is_defined_once() {
        let schema = json!({"type": "object"});
        let refused = |files: &[(&str, Value)], expected: &str| {
            let dir = topics_dir(files);
            let error = Catalogue::load_dir(dir.path()).expect_err(expected);
            assert!(error.to_string().contains(expected), "{error}");
        };
        refused(
            &[("t/1.json", schema.clone()), ("t/3.json", schema.clone())],
            "version 2 is missing",
        );
        refused(&[("t/2.json", schema.clone())], "version 1 is missing");
        refused(&[("t/01.json", schema.clone())], "unexpected file");
        refused(&[("t/v2.json", schema.clone())], "unexpected file");
        refused(&[("t/notes.txt", json!("x"))], "holds no version");
        refused(
            &[("t.json", schema.clone()), ("t/1.json", schema.clone())],
            "defined twice",
        );
        // Every version must be a valid topic schema, not only the latest.
        refused(
            &[
                ("t/1.json", json!({"type": 5})),
                ("t/2.json", schema.clone()),
            ],
            "not a valid JSON Schema",
        );
    }

    #[test]
    fn a_check_reports_every_broken_topic_and_loads_the_others() {
        let v1 = logs(json!({"a": {"type": "integer"}}), &[]);
        let narrowed = logs(json!({"a": {"type": "integer", "maximum": 5}}), &[]);
        let dir = topics_dir(&[
            ("good.json", v1.clone()),
            ("narrow/1.json", v1.clone()),
            ("narrow/2.json", narrowed),
            ("gap/2.json", v1),
            ("broken.json", json!({"type": 5})),
        ]);
        let check = Catalogue::check_dir(dir.path()).expect("readable");
        assert_eq!(
            check
                .topics
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["good"]
        );
        let errors: Vec<String> = check.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("broken.json"), "{errors:?}");
        assert!(errors[1].contains("topic gap:"), "{errors:?}");
        assert!(
            errors[2].contains("topic narrow: version 2 breaks backward compatibility with version 1 at a: maximum 5 added"),
            "{errors:?}"
        );
        assert!(Catalogue::check_dir(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn the_schema_member_names_a_version_as_an_integer_or_a_string() {
        assert_eq!(parse_version("logs", &json!(2)), Ok(2));
        assert_eq!(parse_version("logs", &json!("2")), Ok(2));
        assert_eq!(parse_version("logs", &json!("logs/12")), Ok(12));
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("02"),
            json!("+2"),
            json!(""),
            json!("logs/"),
            json!(null),
            json!([1]),
        ] {
            let error = parse_version("logs", &bad).expect_err("refused");
            assert!(
                error.starts_with("must be a version number"),
                "{bad}: {error}"
            );
        }
        let error = parse_version("logs", &json!("web.events/1")).expect_err("other topic");
        assert!(error.contains("\"web.events\""), "{error}");
    }

    #[test]
    fn each_version_validates_its_own_events_and_unknown_ones_are_named() {
        let v1 = logs(json!({"name": {"type": "string"}}), &["name"]);
        let v2 = logs(
            json!({"name": {"type": "string"}, "customer_id": {"type": "integer"}}),
            &["name"],
        );
        let topic = Topic::from_versions("audit.logs", vec![v1, v2]).expect("loads");
        assert_eq!(topic.select_version(None), Ok(2));
        assert_eq!(topic.select_version(Some(1)), Ok(1));
        assert_eq!(
            topic.select_version(Some(3)),
            Err("topic \"audit.logs\" has no schema version 3; its versions are 1, 2".to_owned())
        );
        let event = json!({"name": "n", "customer_id": 4});
        // Version 1 is closed: customer_id is not one of its properties.
        assert_eq!(topic.validate_event_version(&event, "", None, 1).len(), 1);
        assert!(topic.validate_event_version(&event, "", None, 2).is_empty());
        let unknown = topic.validate_event_version(&event, "[4].", None, 7);
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[0].field.as_deref(), Some("[4].$schema"));
    }

    #[test]
    fn the_fields_of_a_topic_are_the_union_over_its_versions() {
        let mut v1 = logs(
            json!({"name": {"type": "string"}, "legacy": {"type": "string"},
                   "count": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}}),
            &[],
        );
        v1["additionalProperties"] = json!(true);
        let mut v2 = logs(
            json!({"name": {"type": "string"}, "customer_id": {"type": "integer"},
                   "count": {"type": "number"}, "at": {"type": "string"}}),
            &[],
        );
        v2["additionalProperties"] = json!(true);
        v2["x-eventgate"] = json!({"compatibility": "none", "indexed_fields": ["count"]});
        let topic = Topic::from_versions("t", vec![v1, v2]).expect("loads");
        let ty = |name: &str| topic.fields.lookup(name).map(|d| d.ty);
        // A field of version 1 only is still queryable: its events are stored.
        assert_eq!(ty("legacy"), Some(FieldType::String));
        assert_eq!(ty("customer_id"), Some(FieldType::Integer));
        // Widened: queried as the wider type.
        assert_eq!(ty("count"), Some(FieldType::Number));
        assert_eq!(ty("at"), Some(FieldType::String));
        assert!(topic.fields.lookup("count").is_some_and(|d| d.indexed));
        assert!(topic.fields.lookup("timestamp").is_some());
    }

    #[test]
    fn a_field_whose_types_disagree_across_versions_is_refused_at_load() {
        let v1 = logs(json!({"code": {"type": "string"}}), &[]);
        let mut v2 = logs(json!({"code": {"type": "integer"}}), &[]);
        v2["x-eventgate"] = json!({"compatibility": "none"});
        let error = Topic::from_versions("t", vec![v1.clone(), v2.clone()]).expect_err("refused");
        assert_eq!(
            error,
            "field code is string in version 1 but integer in version 2: a field must keep one \
             type across versions (integer may widen to number, date-time to string)"
        );
        let dir = topics_dir(&[("audit.logs/1.json", v1), ("audit.logs/2.json", v2)]);
        let error = Catalogue::load_dir(dir.path()).expect_err("refused");
        let text = error.to_string();
        assert!(
            text.starts_with("topic audit.logs: field code is string in version 1 but integer"),
            "{text}"
        );
    }

    #[test]
    fn shipped_topics_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/topics");
        let catalogue = Catalogue::load_dir(&dir).unwrap();
        let names: Vec<_> = catalogue.names().collect();
        assert_eq!(names, ["audit.logs", "public.cps.za.runs", "web.events"]);
    }
}
