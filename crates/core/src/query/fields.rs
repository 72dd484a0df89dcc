//! The field catalogue of a topic: which names a query may filter and sort on, and the type of each; and
//! the typed value of a field in an event ([`field_value`]).
//!
//! Built from the topic's JSON Schema with [`FieldCatalogue::from_schema`], which never fails: whatever the
//! schema cannot tell us becomes [`FieldType::Other`] (only `_exists` applies) or is left out.
//!
//! Rules (documented for analysts in `docs/API.md`, "Query language"):
//! - The envelope fields `id` (uuid), `timestamp` (the `received_at` column, a date-time) and `producer`
//!   (string) are always present.
//! - Every property of the schema is a field, nested ones by dot path (`additional_info.region`), up to
//!   [`MAX_SCHEMA_DEPTH`] levels. An object property is itself a field of type `Other`. Property names
//!   that are empty or contain a `.` or `[` cannot be written as a dot path and are left out.
//! - Arrays: an array property is a field of type `Other` (only `_exists`); the values inside its
//!   elements are fields too, written with `[]`: `jobs[].status` (the `status` of each element of
//!   `jobs`, from the schema's `items`), `tags[]` (each element of an array of scalars). One array level:
//!   arrays inside array elements are not descended into. Such a field has one value per element, and a
//!   filter on it holds when some element's value passes ([`FieldSource::Items`]); it cannot be sorted
//!   or grouped by.
//! - A payload field is reachable as `payload.<path>` and, unless that clashes with an envelope name, as
//!   `<path>`. `payload.<path>` always means the schema property path `<path>`.
//! - Types: `"type"` (a `["string","null"]` array counts as its non-null member; `["integer","number"]` as
//!   number; any other mix as `Other`); without `"type"`, `enum`/`const` values decide (all strings →
//!   string, …, mixed → `Other`), and `properties` means an object. `"format": "date-time"` or `"date"` on a
//!   string makes a date-time field; `"x-eventgate-type": "epoch-ms"` on an integer/number (or untyped)
//!   property makes an epoch-millisecond field.
//! - Local `$ref`s (`#/$defs/..`, `#/definitions/..`, any `#/...` JSON pointer, or `#`) are resolved,
//!   following at most 16 hops; remote refs are not (the node counts as `Other` unless it says more itself).
//!   Keywords next to a `$ref` take precedence over the target's; `properties` are merged.
//! - `allOf` branches are merged like `$ref` targets. `oneOf`/`anyOf` are used only when the node itself
//!   (after `$ref`/`allOf`) says nothing about its type: the first branch that has a non-null type is taken,
//!   the others are ignored.

use std::collections::BTreeMap;

use serde_json::Value;
use uuid::Uuid;

use super::value::{event_micros, parse_stored_time, Decimal, Scalar, SortValue};
use crate::envelope::Event;

/// How deep the catalogue descends into nested object properties (a dot path has at most this many parts).
pub const MAX_SCHEMA_DEPTH: usize = 8;
/// Guard against pathological schemas: at most this many fields are catalogued.
pub const MAX_SCHEMA_FIELDS: usize = 5_000;
const MAX_REF_HOPS: usize = 16;

/// Where a field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldSource {
    /// The `id` column.
    Id,
    /// The `received_at` column (the envelope's `timestamp`).
    Timestamp,
    /// The `producer` column.
    Producer,
    /// A value inside the `payload` column, by object keys from the top.
    Payload(Vec<String>),
    /// The values inside the elements of an array of the payload: `array` is the array's path (object
    /// keys from the top), `item` the path inside each element (object keys; empty for the element
    /// itself). A filter holds when it holds for some element's value.
    Items {
        array: Vec<String>,
        item: Vec<String>,
    },
}

/// The type of a field, which decides which operators apply and how values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    /// A UUID (only the envelope `id`): compared byte-wise, as Postgres does.
    Uuid,
    /// Text, compared byte-wise (UTF-8 order, `COLLATE "C"`).
    String,
    /// A JSON number that the schema says is an integer; compared numerically.
    Integer,
    /// A JSON number; compared numerically (exactly, as Postgres `numeric`).
    Number,
    /// `true`/`false`; `false < true`.
    Boolean,
    /// An instant: the envelope `timestamp`, or a string with `"format": "date-time"` or `"date"`.
    DateTime,
    /// An instant stored as a JSON number of milliseconds since the Unix epoch
    /// (`"x-eventgate-type": "epoch-ms"`).
    EpochMillis,
    /// Objects, arrays, and anything whose type the schema does not pin down: only `_exists` applies.
    Other,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Uuid => "uuid",
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::DateTime => "date-time",
            FieldType::EpochMillis => "epoch-ms",
            FieldType::Other => "other",
        }
    }

    /// Whether the field holds an instant (date-time or epoch milliseconds).
    pub fn is_time(self) -> bool {
        matches!(self, FieldType::DateTime | FieldType::EpochMillis)
    }
}

/// One queryable field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldDef {
    /// The canonical name: `id`, `timestamp`, `producer`, the dot path of a payload property, or
    /// `payload.<path>` when the bare path is taken by an envelope field.
    pub name: String,
    pub source: FieldSource,
    pub ty: FieldType,
    /// Declared frequently queried by the topic (`x-eventgate.indexed_fields`): an expression index
    /// exists for it and the SQL names its path literally so the planner can use that index.
    pub indexed: bool,
}

impl FieldDef {
    /// The number of dot-path parts (1 for envelope fields).
    pub fn depth(&self) -> usize {
        match &self.source {
            FieldSource::Payload(path) => path.len(),
            FieldSource::Items { array, item } => array.len() + item.len(),
            _ => 1,
        }
    }

    /// Whether the field is inside an array: one value per element, not one per event.
    pub fn is_array_item(&self) -> bool {
        matches!(self.source, FieldSource::Items { .. })
    }

    /// Envelope fields are columns and never null.
    pub fn is_envelope(&self) -> bool {
        !matches!(
            self.source,
            FieldSource::Payload(_) | FieldSource::Items { .. }
        )
    }
}

/// The typed value of `field` in `event` (see the docs of [`super`]); always `None` for `Other` fields
/// and for fields inside arrays, which have one value per element ([`item_values`]).
pub fn field_value(field: &FieldDef, event: &Event) -> SortValue {
    match &field.source {
        FieldSource::Id => Some(Scalar::Uuid(event.id)),
        FieldSource::Timestamp => Some(Scalar::Instant(event_micros(event.timestamp))),
        FieldSource::Producer => Some(Scalar::Text(event.producer.clone())),
        FieldSource::Payload(path) => typed_json(field.ty, payload_at(&event.payload, path)?),
        FieldSource::Items { .. } => None,
    }
}

/// The JSON values at `item` inside each element of the array at `array` of `payload` (walking objects
/// only, like [`payload_at`]; nothing when `array` is not an array), in element order, missing ones left
/// out.
pub fn item_values<'a>(payload: &'a Value, array: &[String], item: &[String]) -> Vec<&'a Value> {
    match payload_at(payload, array) {
        Some(Value::Array(elements)) => elements
            .iter()
            .filter_map(|element| payload_at(element, item))
            .collect(),
        _ => Vec::new(),
    }
}

/// The typed value of a JSON value for a field of type `ty`.
pub fn typed_json(ty: FieldType, value: &Value) -> SortValue {
    match (ty, value) {
        (FieldType::String, Value::String(s)) => Some(Scalar::Text(s.clone())),
        (FieldType::Integer | FieldType::Number | FieldType::EpochMillis, Value::Number(n)) => {
            Decimal::from_json_number(n).map(Scalar::Number)
        }
        (FieldType::Boolean, Value::Bool(b)) => Some(Scalar::Bool(*b)),
        (FieldType::DateTime, Value::String(s)) => parse_stored_time(s).map(Scalar::Instant),
        (FieldType::Uuid, Value::String(s)) => Uuid::parse_str(s).ok().map(Scalar::Uuid),
        _ => None,
    }
}

/// The value at `path` inside `payload`, walking objects only (like jsonb containment; the SQL guards
/// `#>` so it never indexes into an array either).
pub fn payload_at<'a>(payload: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(payload, |current, segment| {
        current.as_object()?.get(segment)
    })
}

/// The fields of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCatalogue {
    /// Payload fields by dot path (without the `payload.` prefix).
    payload: BTreeMap<String, FieldDef>,
    envelope: [FieldDef; 3],
}

const ENVELOPE_NAMES: [&str; 3] = ["id", "timestamp", "producer"];

impl Default for FieldCatalogue {
    /// The envelope fields only.
    fn default() -> Self {
        FieldCatalogue::from_schema(&Value::Null)
    }
}

impl FieldCatalogue {
    /// Builds the catalogue from a topic's JSON Schema. Never fails; always contains the envelope fields.
    pub fn from_schema(schema: &Value) -> FieldCatalogue {
        let envelope = [
            FieldDef {
                name: "id".into(),
                source: FieldSource::Id,
                ty: FieldType::Uuid,
                indexed: false,
            },
            FieldDef {
                name: "timestamp".into(),
                source: FieldSource::Timestamp,
                ty: FieldType::DateTime,
                indexed: false,
            },
            FieldDef {
                name: "producer".into(),
                source: FieldSource::Producer,
                ty: FieldType::String,
                indexed: false,
            },
        ];
        let mut walker = Walker {
            root: schema,
            out: Vec::new(),
        };
        walker.object_properties(schema, &mut Vec::new(), None);
        let mut payload = BTreeMap::new();
        for (source, ty) in walker.out {
            let key = source_key(&source);
            payload.entry(key).or_insert_with(|| FieldDef {
                name: String::new(),
                source,
                ty,
                indexed: false,
            });
        }
        let mut catalogue = FieldCatalogue { payload, envelope };
        // Canonical names: the bare path where `lookup` resolves it to this very field.
        let keys: Vec<String> = catalogue.payload.keys().cloned().collect();
        for key in keys {
            let source = catalogue.payload.get(&key).map(|def| def.source.clone());
            let bare_ok =
                matches!(catalogue.lookup(&key), Some(def) if Some(&def.source) == source.as_ref());
            let name = if bare_ok {
                key.clone()
            } else {
                format!("payload.{key}")
            };
            if let Some(def) = catalogue.payload.get_mut(&key) {
                def.name = name;
            }
        }
        catalogue
    }

    /// Marks the named payload fields as indexed (see [`FieldDef::indexed`]). Only scalar payload fields
    /// whose path parts are plain identifiers can be: their path is written into SQL and DDL literally.
    pub fn mark_indexed(&mut self, names: &[String]) -> Result<(), String> {
        for name in names {
            let key = match self.lookup(name) {
                Some(FieldDef {
                    source: FieldSource::Items { .. },
                    name,
                    ..
                }) => {
                    return Err(format!(
                    "indexed field {name:?} is inside an array: equality on it is served by the \
                         GIN index of every payload, ranges are checked on the rows the other \
                         filters leave"
                ))
                }
                Some(FieldDef {
                    source: FieldSource::Payload(path),
                    ty,
                    ..
                }) => {
                    if !path.iter().all(|part| is_plain_identifier(part)) {
                        return Err(format!(
                            "indexed field {name:?}: path parts must be letters, digits and '_'"
                        ));
                    }
                    if matches!(ty, FieldType::Other | FieldType::DateTime | FieldType::Uuid) {
                        return Err(format!(
                            "indexed field {name:?}: only string, integer, number, boolean and epoch-ms fields can be indexed"
                        ));
                    }
                    path.join(".")
                }
                Some(_) => {
                    return Err(format!(
                        "indexed field {name:?}: envelope fields are always indexed"
                    ))
                }
                None => {
                    return Err(format!(
                        "indexed field {name:?} is not a property of the schema"
                    ))
                }
            };
            if let Some(def) = self.payload.get_mut(&key) {
                def.indexed = true;
            }
        }
        Ok(())
    }

    /// Adds (or replaces) a payload field with its name as its own catalogue gave it: how the union of
    /// a topic's versions is built (`catalogue::union_fields`). Envelope fields are not replaced.
    pub fn insert_payload_field(&mut self, def: FieldDef) {
        if !def.is_envelope() {
            self.payload.insert(source_key(&def.source), def);
        }
    }

    /// Finds a field by name: an envelope name, `payload.<path>`, or a bare payload path.
    pub fn lookup(&self, name: &str) -> Option<&FieldDef> {
        if let Some(def) = self.envelope.iter().find(|d| d.name == name) {
            return Some(def);
        }
        if let Some(rest) = name.strip_prefix("payload.") {
            if let Some(def) = self.payload.get(rest) {
                return Some(def);
            }
        }
        self.payload.get(name)
    }

    /// The canonical names of all fields, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.fields().map(|d| d.name.clone()).collect();
        names.sort();
        names
    }

    /// All fields, envelope first, then payload fields by path.
    pub fn fields(&self) -> impl Iterator<Item = &FieldDef> {
        self.envelope.iter().chain(self.payload.values())
    }

    pub fn len(&self) -> usize {
        self.envelope.len() + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The catalogue key of a payload field: its dot path, with `[]` after the array for a field inside
/// an array's elements (`jobs[].status`, `tags[]`).
fn source_key(source: &FieldSource) -> String {
    match source {
        FieldSource::Payload(path) => path.join("."),
        FieldSource::Items { array, item } if item.is_empty() => format!("{}[]", array.join(".")),
        FieldSource::Items { array, item } => format!("{}[].{}", array.join("."), item.join(".")),
        FieldSource::Id | FieldSource::Timestamp | FieldSource::Producer => String::new(),
    }
}

/// Whether `name` is one of the envelope field names.
pub fn is_envelope_name(name: &str) -> bool {
    ENVELOPE_NAMES.contains(&name)
}

struct Walker<'a> {
    root: &'a Value,
    out: Vec<(FieldSource, FieldType)>,
}

/// What a schema node says about itself once `$ref`s and `allOf` are merged.
#[derive(Default)]
struct NodeInfo<'a> {
    types: Option<Vec<&'a str>>,
    format: Option<&'a str>,
    x_type: Option<&'a str>,
    enum_values: Option<Vec<&'a Value>>,
    properties: Vec<(&'a String, &'a Value)>,
    branches: Vec<&'a Value>,
    /// `items` when it is one schema for every element.
    items: Option<&'a Value>,
}

impl<'a> Walker<'a> {
    /// The fields below `node` at `path`; inside the elements of the array at `array` when given
    /// (`path` is then the path inside an element).
    fn object_properties(
        &mut self,
        node: &'a Value,
        path: &mut Vec<String>,
        array: Option<&Vec<String>>,
    ) {
        let info = self.info(node);
        let properties =
            if info.properties.is_empty() && info.types.is_none() && info.enum_values.is_none() {
                // Untyped node: maybe a oneOf/anyOf of objects.
                match self.first_typed_branch(&info) {
                    Some(branch) => self.info(branch).properties,
                    None => Vec::new(),
                }
            } else {
                info.properties
            };
        let depth = path.len() + array.map_or(0, Vec::len);
        for (name, sub) in properties {
            if self.out.len() >= MAX_SCHEMA_FIELDS || depth >= MAX_SCHEMA_DEPTH {
                return;
            }
            if name.is_empty() || name.contains('.') || name.contains('[') {
                continue;
            }
            path.push(name.clone());
            let (ty, is_object, object_node) = self.classify(sub);
            let source = match array {
                None => FieldSource::Payload(path.clone()),
                Some(array) => FieldSource::Items {
                    array: array.clone(),
                    item: path.clone(),
                },
            };
            self.out.push((source, ty));
            if is_object {
                self.object_properties(object_node, path, array);
            } else if array.is_none() {
                self.array_items(sub, path);
            }
            path.pop();
        }
    }

    /// The fields inside the elements of `node` when it is an array with one `items` schema: the
    /// element itself (`tags[]`) when it is a scalar, its properties (`jobs[].status`) when an object.
    fn array_items(&mut self, node: &'a Value, array: &[String]) {
        let info = self.info(node);
        let is_array = match &info.types {
            Some(types) => types.contains(&"array"),
            None => true,
        };
        let Some(items) = info.items.filter(|_| is_array) else {
            return;
        };
        if self.out.len() >= MAX_SCHEMA_FIELDS || array.len() >= MAX_SCHEMA_DEPTH {
            return;
        }
        let array = array.to_vec();
        let (ty, is_object, object_node) = self.classify(items);
        if is_object {
            self.object_properties(object_node, &mut Vec::new(), Some(&array));
        } else if ty != FieldType::Other {
            self.out.push((
                FieldSource::Items {
                    array,
                    item: Vec::new(),
                },
                ty,
            ));
        }
    }

    /// The field type of a node, whether it is an object to descend into, and the node to descend into.
    fn classify(&self, node: &'a Value) -> (FieldType, bool, &'a Value) {
        let info = self.info(node);
        if info.types.is_none() && info.enum_values.is_none() && info.properties.is_empty() {
            if let Some(branch) = self.first_typed_branch(&info) {
                let (ty, is_object, inner) = self.classify_info(&self.info(branch), branch);
                // Keywords on the node itself (format, x-eventgate-type) still apply.
                return (refine(ty, info.format, info.x_type), is_object, inner);
            }
        }
        self.classify_info(&info, node)
    }

    fn classify_info(&self, info: &NodeInfo<'a>, node: &'a Value) -> (FieldType, bool, &'a Value) {
        let base = match &info.types {
            Some(types) => {
                let non_null: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
                match non_null.as_slice() {
                    [one] => type_name(one),
                    [] => BaseType::Other,
                    many if many.iter().all(|t| *t == "integer" || *t == "number") => {
                        BaseType::Number
                    }
                    _ => BaseType::Other,
                }
            }
            None => match &info.enum_values {
                Some(values) => enum_type(values),
                None if !info.properties.is_empty() => BaseType::Object,
                None => BaseType::Unknown,
            },
        };
        let ty = match base {
            BaseType::String => FieldType::String,
            BaseType::Integer => FieldType::Integer,
            BaseType::Number => FieldType::Number,
            BaseType::Boolean => FieldType::Boolean,
            BaseType::Object | BaseType::Other => FieldType::Other,
            BaseType::Unknown => {
                if info.x_type == Some("epoch-ms") {
                    FieldType::EpochMillis
                } else {
                    FieldType::Other
                }
            }
        };
        (
            refine(ty, info.format, info.x_type),
            base == BaseType::Object,
            node,
        )
    }

    fn first_typed_branch(&self, info: &NodeInfo<'a>) -> Option<&'a Value> {
        info.branches.iter().copied().find(|branch| {
            let b = self.info(branch);
            let non_null_type = b
                .types
                .as_ref()
                .is_some_and(|types| types.iter().any(|t| *t != "null"));
            let enum_non_null = b
                .enum_values
                .as_ref()
                .is_some_and(|v| v.iter().any(|v| !v.is_null()));
            non_null_type || enum_non_null || !b.properties.is_empty()
        })
    }

    /// Merges a node with its `$ref` targets and `allOf` branches (the node's own keywords first).
    fn info(&self, node: &'a Value) -> NodeInfo<'a> {
        let mut info = NodeInfo::default();
        let mut queue: Vec<&'a Value> = vec![node];
        let mut seen = 0usize;
        while let Some(current) = queue.first().copied() {
            queue.remove(0);
            seen += 1;
            if seen > MAX_REF_HOPS * 4 {
                break;
            }
            let Some(obj) = current.as_object() else {
                continue;
            };
            if info.types.is_none() {
                info.types = match obj.get("type") {
                    Some(Value::String(t)) => Some(vec![t.as_str()]),
                    Some(Value::Array(ts)) => Some(ts.iter().filter_map(Value::as_str).collect()),
                    _ => None,
                };
            }
            if info.format.is_none() {
                info.format = obj.get("format").and_then(Value::as_str);
            }
            if info.x_type.is_none() {
                info.x_type = obj.get("x-eventgate-type").and_then(Value::as_str);
            }
            if info.enum_values.is_none() {
                info.enum_values = match (obj.get("enum"), obj.get("const")) {
                    (Some(Value::Array(values)), _) => Some(values.iter().collect()),
                    (_, Some(value)) => Some(vec![value]),
                    _ => None,
                };
            }
            if info.items.is_none() {
                info.items = obj.get("items").filter(|items| items.is_object());
            }
            if let Some(Value::Object(props)) = obj.get("properties") {
                for (name, sub) in props {
                    if !info.properties.iter().any(|(n, _)| *n == name) {
                        info.properties.push((name, sub));
                    }
                }
            }
            for key in ["oneOf", "anyOf"] {
                if let Some(Value::Array(branches)) = obj.get(key) {
                    info.branches.extend(branches.iter());
                }
            }
            if let Some(target) = obj
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| self.resolve(r))
            {
                queue.push(target);
            }
            if let Some(Value::Array(all)) = obj.get("allOf") {
                queue.extend(all.iter());
            }
        }
        info
    }

    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        self.root.pointer(pointer)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BaseType {
    String,
    Integer,
    Number,
    Boolean,
    Object,
    Other,
    Unknown,
}

fn type_name(t: &str) -> BaseType {
    match t {
        "string" => BaseType::String,
        "integer" => BaseType::Integer,
        "number" => BaseType::Number,
        "boolean" => BaseType::Boolean,
        "object" => BaseType::Object,
        _ => BaseType::Other,
    }
}

fn enum_type(values: &[&Value]) -> BaseType {
    let non_null: Vec<&&Value> = values.iter().filter(|v| !v.is_null()).collect();
    if non_null.is_empty() {
        BaseType::Other
    } else if non_null.iter().all(|v| v.is_string()) {
        BaseType::String
    } else if non_null.iter().all(|v| v.is_i64() || v.is_u64()) {
        BaseType::Integer
    } else if non_null.iter().all(|v| v.is_number()) {
        BaseType::Number
    } else if non_null.iter().all(|v| v.is_boolean()) {
        BaseType::Boolean
    } else {
        BaseType::Other
    }
}

fn refine(ty: FieldType, format: Option<&str>, x_type: Option<&str>) -> FieldType {
    match ty {
        FieldType::Integer | FieldType::Number if x_type == Some("epoch-ms") => {
            FieldType::EpochMillis
        }
        FieldType::String if matches!(format, Some("date-time") | Some("date")) => {
            FieldType::DateTime
        }
        other => other,
    }
}

/// `[A-Za-z_][A-Za-z0-9_]{0,62}`: safe to write inside a SQL string literal and never read by `#>` as an
/// array index.
pub fn is_plain_identifier(part: &str) -> bool {
    let mut chars = part.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && part.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
