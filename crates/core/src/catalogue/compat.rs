//! Compatibility between two versions of a topic's schema.
//!
//! `check(old, new, rule)` answers whether the new version may follow the old one under the topic's
//! rule, and if not, why — each incompatibility names the field (`jobs[].status`, `""` for the event
//! itself) and the change (`type narrowed from [integer, number] to integer`, `enum value "x" removed`).
//!
//! The question behind every rule is one of reading: can a reader that validates with schema R accept
//! every event valid under schema W (the events of W are a subset of those of R)?
//! - `backward`: the new version reads every event of the old one (R = new, W = old). The default.
//! - `forward`: the old version reads every event of the new one (R = old, W = new).
//! - `full`: both. `none`: anything goes.
//!
//! The answer is proved, never guessed: what is not analysed counts as incompatible when it changes.
//! Analysed: `type`, `enum`, `const`, `required`, `properties`, `additionalProperties`, `items` (one
//! schema), the bounds (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minLength`,
//! `maxLength`, `minItems`, `maxItems`, `minProperties`, `maxProperties`), `format`, `pattern`,
//! `multipleOf`, `uniqueItems`. Annotations (`title`, `description`, `default`, `examples`, `x-…`, …)
//! are ignored. Conservative: `format` and `pattern` are compared by name and text (a reader's changed
//! format or pattern is incompatible even when it accepts more); any other keyword (`oneOf`, `anyOf`,
//! `allOf`, `not`, `$ref`, `$defs`, `patternProperties`, `if`/`then`/`else`, `prefixItems`,
//! `dependentRequired`, …) is not analysed: a change to it is incompatible, and an unchanged one is
//! assumed to constrain both versions alike (each keyword is an independent assertion; a `$ref` is
//! assumed to point where it did, its target being checked where it is). Where such a keyword gives
//! meaning to its neighbours — `patternProperties` to `properties`/`additionalProperties`,
//! `prefixItems` to `items`, `unevaluatedProperties`/`unevaluatedItems` to the whole schema object —
//! a change to the neighbours is incompatible too.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value};

/// A topic's rule for a new version (`x-eventgate.compatibility`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compatibility {
    /// The new version reads every event of every earlier version.
    #[default]
    Backward,
    /// Every earlier version reads every event of the new version.
    Forward,
    /// Both.
    Full,
    /// No check.
    None,
}

impl Compatibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::Backward => "backward",
            Compatibility::Forward => "forward",
            Compatibility::Full => "full",
            Compatibility::None => "none",
        }
    }
}

impl std::fmt::Display for Compatibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which reading fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The new version cannot read every event of the old one (what `backward` forbids).
    NewReadsOld,
    /// The old version cannot read every event of the new one (what `forward` forbids).
    OldReadsNew,
}

/// One reason a new version breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// The field, as validation errors name it: `customer_id`, `jobs[].status` (`[]`: every item),
    /// `additional_info.*` (any property the schema does not list); `""` for the event itself.
    pub path: String,
    pub direction: Direction,
    /// The change, from the old version to the new one.
    pub reason: String,
}

impl Incompatibility {
    /// The path for people: the field, or `(the event)`.
    pub fn field(&self) -> &str {
        if self.path.is_empty() {
            "(the event)"
        } else {
            &self.path
        }
    }
}

impl std::fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field(), self.reason)
    }
}

/// Every way `new` breaks `rule` as the successor of `old`; empty when it may follow it. Under `full`
/// a change that breaks both readings is reported once.
pub fn check(old: &Value, new: &Value, rule: Compatibility) -> Vec<Incompatibility> {
    let directions: &[Direction] = match rule {
        Compatibility::Backward => &[Direction::NewReadsOld],
        Compatibility::Forward => &[Direction::OldReadsNew],
        Compatibility::Full => &[Direction::NewReadsOld, Direction::OldReadsNew],
        Compatibility::None => &[],
    };
    let mut found: Vec<Incompatibility> = Vec::new();
    for &direction in directions {
        let mut checker = Checker {
            direction,
            found: Vec::new(),
        };
        checker.schema(old, new, "");
        for problem in checker.found {
            if !found
                .iter()
                .any(|f| f.path == problem.path && f.reason == problem.reason)
            {
                found.push(problem);
            }
        }
    }
    found
}

/// Keywords that say nothing about which values are valid.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
];

/// Keywords whose effect on the valid values is compared.
const ANALYSED: &[&str] = &[
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "format",
    "pattern",
    "multipleOf",
    "uniqueItems",
];

fn is_annotation(keyword: &str) -> bool {
    ANNOTATIONS.contains(&keyword) || keyword.starts_with("x-")
}

/// A schema in a schema position: `true`/`{}` accept anything, `false` nothing.
enum Node<'a> {
    Any,
    Nothing,
    Object(&'a Map<String, Value>),
}

impl<'a> Node<'a> {
    fn map(&self) -> Option<&'a Map<String, Value>> {
        match self {
            Node::Object(m) => Some(m),
            _ => None,
        }
    }
}

fn node(schema: &Value) -> Option<Node<'_>> {
    match schema {
        Value::Bool(true) => Some(Node::Any),
        Value::Bool(false) => Some(Node::Nothing),
        Value::Object(map) if map.keys().all(|k| is_annotation(k)) => Some(Node::Any),
        Value::Object(map) => Some(Node::Object(map)),
        _ => None,
    }
}

fn accepts_anything(schema: &Value) -> bool {
    matches!(node(schema), Some(Node::Any))
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// A set of JSON types as written (`integer`, `[integer, number]`).
fn show_types(types: &BTreeSet<String>) -> String {
    if types.len() == 1 {
        types.iter().next().cloned().unwrap_or_default()
    } else {
        format!("[{}]", types.iter().cloned().collect::<Vec<_>>().join(", "))
    }
}

fn types_of(map: &Map<String, Value>) -> Option<BTreeSet<String>> {
    match map.get("type")? {
        Value::String(t) => Some(BTreeSet::from([t.clone()])),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

/// Whether a reader's types take every value of type `t` (an integer is a number).
fn covers(reader: &BTreeSet<String>, t: &str) -> bool {
    reader.contains(t) || (t == "integer" && reader.contains("number"))
}

fn covers_all(reader: &BTreeSet<String>, writer: &BTreeSet<String>) -> bool {
    writer.iter().all(|t| covers(reader, t))
}

/// The JSON type of a value, integers apart.
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                "integer"
            } else {
                "number"
            }
        }
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JSON equality with `1` and `1.0` the same number, as JSON Schema has it.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// The values a schema object allows at most, when it lists them (`enum`, `const`).
fn listed_values(map: &Map<String, Value>) -> Option<Vec<&Value>> {
    match (map.get("const"), map.get("enum")) {
        (Some(c), Some(Value::Array(values))) => {
            Some(values.iter().filter(|v| same_value(v, c)).collect())
        }
        (Some(c), _) => Some(vec![c]),
        (None, Some(Value::Array(values))) => Some(values.iter().collect()),
        (None, _) => None,
    }
}

/// Whether `listed` (the reader's `enum`/`const`) holds `value`.
fn lists(listed: &[&Value], value: &Value) -> bool {
    listed.iter().any(|l| same_value(l, value))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Number,
    String,
    Array,
    Object,
}

/// A bound on a number, a length or a count, with the keyword it comes from.
struct Bound<'a> {
    keyword: &'static str,
    raw: &'a Value,
    value: f64,
    exclusive: bool,
}

impl Bound<'_> {
    fn text(&self) -> String {
        format!("{} {}", self.keyword, self.raw)
    }
}

/// Lower (`upper = false`) or upper bounds of one kind: `(inclusive keyword, exclusive keyword)`.
struct BoundPair {
    kind: Kind,
    upper: bool,
    inclusive: &'static str,
    exclusive: Option<&'static str>,
}

const BOUNDS: &[BoundPair] = &[
    BoundPair {
        kind: Kind::Number,
        upper: false,
        inclusive: "minimum",
        exclusive: Some("exclusiveMinimum"),
    },
    BoundPair {
        kind: Kind::Number,
        upper: true,
        inclusive: "maximum",
        exclusive: Some("exclusiveMaximum"),
    },
    BoundPair {
        kind: Kind::String,
        upper: false,
        inclusive: "minLength",
        exclusive: None,
    },
    BoundPair {
        kind: Kind::String,
        upper: true,
        inclusive: "maxLength",
        exclusive: None,
    },
    BoundPair {
        kind: Kind::Array,
        upper: false,
        inclusive: "minItems",
        exclusive: None,
    },
    BoundPair {
        kind: Kind::Array,
        upper: true,
        inclusive: "maxItems",
        exclusive: None,
    },
    BoundPair {
        kind: Kind::Object,
        upper: false,
        inclusive: "minProperties",
        exclusive: None,
    },
    BoundPair {
        kind: Kind::Object,
        upper: true,
        inclusive: "maxProperties",
        exclusive: None,
    },
];

impl BoundPair {
    /// The tighter of the pair's keywords in `map`; `Err` when one is not a number (draft 4's
    /// boolean `exclusiveMinimum`, or a mistake), which is then not analysed.
    fn of<'a>(&self, map: &'a Map<String, Value>) -> Result<Option<Bound<'a>>, &'static str> {
        let mut best: Option<Bound<'a>> = None;
        let keywords =
            std::iter::once((self.inclusive, false)).chain(self.exclusive.map(|e| (e, true)));
        for (keyword, exclusive) in keywords {
            let Some(raw) = map.get(keyword) else {
                continue;
            };
            let value = raw.as_f64().ok_or(keyword)?;
            let bound = Bound {
                keyword,
                raw,
                value,
                exclusive,
            };
            best = match best {
                None => Some(bound),
                Some(current) if self.tighter(&bound, &current) => Some(bound),
                Some(current) => Some(current),
            };
        }
        Ok(best)
    }

    /// Whether `a` lets fewer values through than `b`.
    fn tighter(&self, a: &Bound, b: &Bound) -> bool {
        let further = if self.upper {
            a.value < b.value
        } else {
            a.value > b.value
        };
        further || (a.value == b.value && a.exclusive && !b.exclusive)
    }

    /// Whether a value passes the bound.
    fn passes(&self, bound: &Bound, value: f64) -> bool {
        match (self.upper, bound.exclusive) {
            (false, false) => value >= bound.value,
            (false, true) => value > bound.value,
            (true, false) => value <= bound.value,
            (true, true) => value < bound.value,
        }
    }

    /// What the bound measures of a value of its kind.
    fn measure(&self, value: &Value) -> Option<f64> {
        match (self.kind, value) {
            (Kind::Number, Value::Number(n)) => n.as_f64(),
            (Kind::String, Value::String(s)) => Some(s.chars().count() as f64),
            (Kind::Array, Value::Array(items)) => Some(items.len() as f64),
            (Kind::Object, Value::Object(members)) => Some(members.len() as f64),
            _ => None,
        }
    }
}

struct Checker {
    direction: Direction,
    found: Vec<Incompatibility>,
}

impl Checker {
    fn push(&mut self, path: &str, reason: String) {
        self.found.push(Incompatibility {
            path: path.to_owned(),
            direction: self.direction,
            reason,
        });
    }

    /// `(reader, writer)` of this check from `(old, new)`.
    fn rw<'a, T: ?Sized>(&self, old: &'a T, new: &'a T) -> (&'a T, &'a T) {
        match self.direction {
            Direction::NewReadsOld => (new, old),
            Direction::OldReadsNew => (old, new),
        }
    }

    /// One of two texts: the first when the new version reads the old one.
    fn say(&self, new_reads_old: String, old_reads_new: String) -> String {
        match self.direction {
            Direction::NewReadsOld => new_reads_old,
            Direction::OldReadsNew => old_reads_new,
        }
    }

    /// The old and new schemas of one place in the event.
    fn schema(&mut self, old: &Value, new: &Value, path: &str) {
        if old == new {
            return;
        }
        let (Some(old_node), Some(new_node)) = (node(old), node(new)) else {
            self.push(
                path,
                "a schema that is neither an object nor a boolean changed (not analysed)".into(),
            );
            return;
        };
        let empty = Map::new();
        let (reader, writer) = self.rw(&old_node, &new_node);
        match (reader, writer) {
            // A writer that allows nothing, or a reader that allows anything: nothing to read wrong.
            (_, Node::Nothing) | (Node::Any, _) => {}
            (Node::Nothing, _) => {
                let reason = self.say(
                    "the new version allows no value here".into(),
                    "the old version allowed no value here".into(),
                );
                self.push(path, reason);
            }
            (Node::Object(_), _) => {
                let old_map = old_node.map().unwrap_or(&empty);
                let new_map = new_node.map().unwrap_or(&empty);
                self.object(old_map, new_map, path);
            }
        }
    }

    /// Two schema objects of one place; the reader's is not empty.
    fn object(&mut self, old: &Map<String, Value>, new: &Map<String, Value>, path: &str) {
        let (reader, writer) = self.rw(old, new);
        self.not_analysed(old, new, path);
        for keyword in ["unevaluatedProperties", "unevaluatedItems"] {
            if reader.contains_key(keyword) || writer.contains_key(keyword) {
                let changed = old
                    .iter()
                    .chain(new.iter())
                    .any(|(k, _)| !is_annotation(k) && k != keyword && old.get(k) != new.get(k));
                if changed {
                    self.push(
                        path,
                        format!(
                            "the schema changed beside {keyword}, which is not analysed: any \
                             change next to it counts as incompatible"
                        ),
                    );
                }
                return;
            }
        }

        let writer_values = listed_values(writer);
        let reader_values = listed_values(reader);
        // The types the writer's values may have: from its list of values when it has one.
        let writer_types: Option<BTreeSet<String>> = match &writer_values {
            Some(values) => Some(values.iter().map(|v| type_of(v).to_owned()).collect()),
            None => types_of(writer),
        };
        let may_be = |kind: Kind| -> bool {
            let Some(types) = &writer_types else {
                return true;
            };
            match kind {
                Kind::Number => types.contains("number") || types.contains("integer"),
                Kind::String => types.contains("string"),
                Kind::Array => types.contains("array"),
                Kind::Object => types.contains("object"),
            }
        };

        match &writer_values {
            // A finite writer: each of its values must pass the reader's type, list and bounds.
            Some(values) => {
                for value in values {
                    self.listed_value(reader, reader_values.as_deref(), value, path);
                }
            }
            None => {
                if let Some(listed) = &reader_values {
                    let shown = Value::Array(listed.iter().map(|v| (*v).clone()).collect());
                    let reason = self.say(
                        format!("values restricted to {shown} (the old version had no enum)"),
                        format!("enum {shown} removed: the new version accepts other values"),
                    );
                    self.push(path, reason);
                }
                self.types(old, new, path);
                for pair in BOUNDS {
                    if may_be(pair.kind) {
                        self.bound(pair, old, new, path);
                    }
                }
            }
        }

        if may_be(Kind::String) {
            for keyword in ["format", "pattern"] {
                self.same_text(keyword, old, new, path);
            }
        }
        if may_be(Kind::Number) {
            self.multiple_of(old, new, path);
        }
        if may_be(Kind::Array) {
            if reader.get("uniqueItems") == Some(&Value::Bool(true))
                && writer.get("uniqueItems") != Some(&Value::Bool(true))
            {
                let reason = self.say("uniqueItems added".into(), "uniqueItems removed".into());
                self.push(path, reason);
            }
            self.items(old, new, path);
        }
        if may_be(Kind::Object) {
            self.required(old, new, path);
            self.properties(old, new, path);
        }
    }

    /// Keywords that are not analysed: any change to one is incompatible.
    fn not_analysed(&mut self, old: &Map<String, Value>, new: &Map<String, Value>, path: &str) {
        let keywords: BTreeSet<&String> = old
            .keys()
            .chain(new.keys())
            .filter(|k| !is_annotation(k) && !ANALYSED.contains(&k.as_str()))
            .collect();
        for keyword in keywords {
            let what = match (old.get(keyword), new.get(keyword)) {
                (a, b) if a == b => continue,
                (None, _) => "added",
                (_, None) => "removed",
                _ => "changed",
            };
            self.push(
                path,
                format!(
                    "{keyword} {what}; {keyword} is not analysed, so any change to it counts as \
                     incompatible"
                ),
            );
        }
    }

    /// A value the writer lists, against the reader.
    fn listed_value(
        &mut self,
        reader: &Map<String, Value>,
        reader_values: Option<&[&Value]>,
        value: &Value,
        path: &str,
    ) {
        if let Some(listed) = reader_values {
            if !lists(listed, value) {
                let reason = self.say(
                    format!("enum value {value} removed"),
                    format!("enum value {value} added"),
                );
                self.push(path, reason);
            }
            return;
        }
        let why = if let Some(types) = types_of(reader).filter(|t| !covers(t, type_of(value))) {
            Some(format!("it is not of type {}", show_types(&types)))
        } else {
            BOUNDS.iter().find_map(|pair| {
                let measured = pair.measure(value)?;
                match pair.of(reader) {
                    Ok(Some(bound)) if !pair.passes(&bound, measured) => {
                        Some(format!("it does not pass {}", bound.text()))
                    }
                    Ok(_) => None,
                    Err(keyword) => Some(format!("{keyword} is not a number (not analysed)")),
                }
            })
        };
        if let Some(why) = why {
            let reason = self.say(
                format!("the old version's value {value} is refused by the new one: {why}"),
                format!("the new version's value {value} is refused by the old one: {why}"),
            );
            self.push(path, reason);
        }
    }

    fn types(&mut self, old: &Map<String, Value>, new: &Map<String, Value>, path: &str) {
        let (old_types, new_types) = (types_of(old), types_of(new));
        let (reader, writer) = self.rw(&old_types, &new_types);
        let Some(reader) = reader else {
            return;
        };
        let reason = match (writer, &old_types, &new_types) {
            (Some(writer), _, _) if covers_all(reader, writer) => return,
            (Some(_), Some(o), Some(n)) => {
                let verb = if covers_all(o, n) {
                    "narrowed"
                } else if covers_all(n, o) {
                    "widened"
                } else {
                    "changed"
                };
                format!("type {verb} from {} to {}", show_types(o), show_types(n))
            }
            _ => self.say(
                format!("type {} added", show_types(reader)),
                format!(
                    "type {} removed: the new version accepts any type",
                    show_types(reader)
                ),
            ),
        };
        self.push(path, reason);
    }

    fn bound(
        &mut self,
        pair: &BoundPair,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        path: &str,
    ) {
        let (old_bound, new_bound) = match (pair.of(old), pair.of(new)) {
            (Ok(o), Ok(n)) => (o, n),
            (Err(keyword), _) | (_, Err(keyword)) => {
                let keywords = std::iter::once(pair.inclusive).chain(pair.exclusive);
                if keywords.into_iter().any(|k| old.get(k) != new.get(k)) {
                    self.push(
                        path,
                        format!("{keyword} is not a number; its change is not analysed"),
                    );
                }
                return;
            }
        };
        let (reader, writer) = self.rw(&old_bound, &new_bound);
        let Some(reader) = reader else {
            return;
        };
        let reason = match writer {
            Some(writer) if !pair.tighter(reader, writer) => return,
            Some(_) => {
                let (Some(o), Some(n)) = (&old_bound, &new_bound) else {
                    return;
                };
                // The new bound is the tighter one when the new version reads the old.
                let new_tighter = self.direction == Direction::NewReadsOld;
                let verb = match (pair.upper, new_tighter) {
                    (false, true) | (true, false) => "raised",
                    (false, false) | (true, true) => "lowered",
                };
                if o.keyword == n.keyword {
                    format!("{} {verb} from {} to {}", o.keyword, o.raw, n.raw)
                } else {
                    let side = if pair.upper { "upper" } else { "lower" };
                    format!("{side} bound {verb} from {} to {}", o.text(), n.text())
                }
            }
            None => self.say(
                format!("{} added", reader.text()),
                format!("{} removed", reader.text()),
            ),
        };
        self.push(path, reason);
    }

    /// `format` and `pattern`: the reader's must be the writer's, word for word.
    fn same_text(
        &mut self,
        keyword: &str,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        path: &str,
    ) {
        let (reader, writer) = self.rw(old, new);
        let Some(wanted) = reader.get(keyword) else {
            return;
        };
        let reason = match writer.get(keyword) {
            Some(had) if had == wanted => return,
            Some(_) => format!(
                "{keyword} changed from {} to {}",
                old.get(keyword).unwrap_or(&Value::Null),
                new.get(keyword).unwrap_or(&Value::Null)
            ),
            None => self.say(
                format!("{keyword} {wanted} added"),
                format!("{keyword} {wanted} removed"),
            ),
        };
        self.push(path, reason);
    }

    fn multiple_of(&mut self, old: &Map<String, Value>, new: &Map<String, Value>, path: &str) {
        let (reader, writer) = self.rw(old, new);
        let Some(wanted) = reader.get("multipleOf") else {
            return;
        };
        let reason = match writer.get("multipleOf") {
            Some(had) => {
                let divides = match (had.as_f64(), wanted.as_f64()) {
                    (Some(h), Some(w)) if w != 0.0 => (h / w).fract() == 0.0,
                    _ => had == wanted,
                };
                if divides {
                    return;
                }
                format!(
                    "multipleOf changed from {} to {}",
                    old.get("multipleOf").unwrap_or(&Value::Null),
                    new.get("multipleOf").unwrap_or(&Value::Null)
                )
            }
            None => self.say(
                format!("multipleOf {wanted} added"),
                format!("multipleOf {wanted} removed"),
            ),
        };
        self.push(path, reason);
    }

    fn required(&mut self, old: &Map<String, Value>, new: &Map<String, Value>, path: &str) {
        let names = |m: &Map<String, Value>| -> BTreeSet<String> {
            m.get("required")
                .and_then(Value::as_array)
                .map(|names| {
                    names
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let (old_required, new_required) = (names(old), names(new));
        let (reader, writer) = self.rw(&old_required, &new_required);
        let listed = |m: &Map<String, Value>, name: &str| {
            m.get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.contains_key(name))
        };
        for name in reader.difference(writer) {
            let reason = match self.direction {
                Direction::NewReadsOld if listed(old, name) => "property made required",
                Direction::NewReadsOld => "new required property",
                Direction::OldReadsNew if listed(new, name) => "property no longer required",
                Direction::OldReadsNew => "required property removed",
            };
            self.push(&join(path, name), reason.into());
        }
    }

    fn properties(&mut self, old: &Map<String, Value>, new: &Map<String, Value>, path: &str) {
        let any = Value::Bool(true);
        if old.contains_key("patternProperties") || new.contains_key("patternProperties") {
            if old.get("properties") != new.get("properties")
                || old.get("additionalProperties") != new.get("additionalProperties")
            {
                self.push(
                    path,
                    "properties or additionalProperties changed beside patternProperties, which \
                     is not analysed"
                        .into(),
                );
            }
            return;
        }
        let empty = Map::new();
        let members = |m: &Map<String, Value>| -> Map<String, Value> {
            m.get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty)
                .clone()
        };
        let (old_props, new_props) = (members(old), members(new));
        let old_rest = old.get("additionalProperties").unwrap_or(&any);
        let new_rest = new.get("additionalProperties").unwrap_or(&any);
        let names: BTreeSet<&String> = old_props.keys().chain(new_props.keys()).collect();
        for name in names {
            let at = join(path, name);
            match (old_props.get(name), new_props.get(name)) {
                (Some(o), Some(n)) => self.schema(o, n, &at),
                (Some(o), None) => self.removed_property(o, new_rest, &at),
                (None, Some(n)) => self.added_property(old_rest, n, &at),
                (None, None) => {}
            }
        }
        self.additional(old_rest, new_rest, path);
    }

    /// A property the new version no longer lists: its additional properties now govern it.
    fn removed_property(&mut self, old: &Value, new_rest: &Value, at: &str) {
        match (self.direction, new_rest) {
            (Direction::NewReadsOld, Value::Bool(false)) => {
                if !matches!(old, Value::Bool(false)) {
                    self.push(
                        at,
                        "property removed while the new version allows no additional properties: \
                         old events may carry it"
                            .into(),
                    );
                }
            }
            (Direction::OldReadsNew, Value::Bool(true)) => {
                if !accepts_anything(old) {
                    self.push(
                        at,
                        "property removed while the new version allows additional properties: \
                         new events may carry it with any value"
                            .into(),
                    );
                }
            }
            _ => self.schema(old, new_rest, at),
        }
    }

    /// A property only the new version lists: the old version's additional properties governed it.
    fn added_property(&mut self, old_rest: &Value, new: &Value, at: &str) {
        match (self.direction, old_rest) {
            (Direction::NewReadsOld, Value::Bool(true)) => {
                if !accepts_anything(new) {
                    self.push(
                        at,
                        "property added while the old version allowed additional properties: old \
                         events may carry it with any value"
                            .into(),
                    );
                }
            }
            (Direction::OldReadsNew, Value::Bool(false)) => {
                if !matches!(new, Value::Bool(false)) {
                    self.push(
                        at,
                        "property added that the old version does not allow (additionalProperties \
                         false)"
                            .into(),
                    );
                }
            }
            _ => self.schema(old_rest, new, at),
        }
    }

    /// The properties neither version lists.
    fn additional(&mut self, old_rest: &Value, new_rest: &Value, path: &str) {
        let (reader, writer) = self.rw(old_rest, new_rest);
        if matches!(reader, Value::Bool(false)) && !matches!(writer, Value::Bool(false)) {
            let reason = self.say(
                "additionalProperties closed: old events may carry properties the new version \
                 does not list"
                    .into(),
                "additionalProperties opened: new events may carry properties the old version \
                 does not allow"
                    .into(),
            );
            self.push(path, reason);
            return;
        }
        self.schema(old_rest, new_rest, &join(path, "*"));
    }

    fn items(&mut self, old: &Map<String, Value>, new: &Map<String, Value>, path: &str) {
        let any = Value::Bool(true);
        let (old_items, new_items) = (
            old.get("items").unwrap_or(&any),
            new.get("items").unwrap_or(&any),
        );
        if old_items == new_items {
            return;
        }
        if old.contains_key("prefixItems") || new.contains_key("prefixItems") {
            self.push(
                path,
                "items changed beside prefixItems, which is not analysed".into(),
            );
            return;
        }
        if old_items.is_array() || new_items.is_array() {
            self.push(
                path,
                "items as a list of schemas (a tuple) changed, which is not analysed".into(),
            );
            return;
        }
        self.schema(old_items, new_items, &format!("{path}[]"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use Compatibility::{Backward, Forward, Full, None as NoRule};

    /// Each incompatibility as `path: reason`.
    fn problems(old: &Value, new: &Value, rule: Compatibility) -> Vec<String> {
        check(old, new, rule)
            .iter()
            .map(|p| format!("{}: {}", p.path, p.reason))
            .collect()
    }

    /// The rules under which `new` may follow `old`.
    fn allowed(old: &Value, new: &Value) -> Vec<Compatibility> {
        [Backward, Forward, Full, NoRule]
            .into_iter()
            .filter(|rule| check(old, new, *rule).is_empty())
            .collect()
    }

    fn closed(properties: Value, required: &[&str]) -> Value {
        json!({"type": "object", "properties": properties, "required": required,
               "additionalProperties": false})
    }

    #[test]
    fn a_new_optional_property_of_a_closed_object_is_backward_compatible() {
        let old = closed(json!({"a": {"type": "string"}}), &["a"]);
        let new = closed(
            json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
            &["a"],
        );
        assert_eq!(allowed(&old, &new), [Backward, NoRule]);
        // Old readers refuse the new property: not forward.
        assert_eq!(
            problems(&old, &new, Forward),
            ["b: property added that the old version does not allow (additionalProperties false)"]
        );
    }

    #[test]
    fn a_new_property_of_an_open_object_is_forward_compatible_only() {
        let old = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let new = json!({"type": "object", "properties": {
            "a": {"type": "string"}, "b": {"type": "integer"}}});
        assert_eq!(allowed(&old, &new), [Forward, NoRule]);
        assert_eq!(
            problems(&old, &new, Backward),
            ["b: property added while the old version allowed additional properties: old events \
              may carry it with any value"]
        );
        // A property that takes any value says nothing new: compatible both ways.
        let any = json!({"type": "object", "properties": {
            "a": {"type": "string"}, "b": {"description": "free"}}});
        assert_eq!(allowed(&old, &any), [Backward, Forward, Full, NoRule]);
    }

    #[test]
    fn a_new_required_property_breaks_backward() {
        let old = closed(json!({"a": {"type": "string"}}), &["a"]);
        let new = closed(
            json!({"a": {"type": "string"}, "customer_id": {"type": "integer"}}),
            &["a", "customer_id"],
        );
        assert_eq!(
            problems(&old, &new, Backward),
            ["customer_id: new required property"]
        );
        assert_eq!(
            problems(&old, &new, Full),
            [
                "customer_id: new required property",
                "customer_id: property added that the old version does not allow \
                 (additionalProperties false)"
            ]
        );
        // An optional property made required.
        let optional = closed(
            json!({"a": {"type": "string"}, "customer_id": {"type": "integer"}}),
            &["a"],
        );
        assert_eq!(
            problems(&optional, &new, Backward),
            ["customer_id: property made required"]
        );
        assert!(problems(&optional, &new, Forward).is_empty());
        // Forward: the old version required what the new one no longer does.
        assert_eq!(
            problems(&new, &optional, Forward),
            ["customer_id: property no longer required"]
        );
    }

    #[test]
    fn removed_properties_under_each_rule() {
        let old = closed(
            json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
            &[],
        );
        // Closed, b removed: old events with b are refused by the new version; new events never
        // carry b, so the old version reads them.
        let new = closed(json!({"a": {"type": "string"}}), &[]);
        assert_eq!(allowed(&old, &new), [Forward, NoRule]);
        assert_eq!(
            problems(&old, &new, Backward),
            [
                "b: property removed while the new version allows no additional properties: old \
              events may carry it"
            ]
        );
        // Removed but required by the old version: new events lack it.
        let old_required = closed(
            json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
            &["b"],
        );
        assert_eq!(
            problems(&old_required, &new, Forward),
            ["b: required property removed"]
        );
        // Removed from an open object: new events may carry b with any value.
        let open_old = json!({"properties": {"a": {"type": "string"}, "b": {"type": "integer"}}});
        let open_new = json!({"properties": {"a": {"type": "string"}}});
        assert_eq!(allowed(&open_old, &open_new), [Backward, NoRule]);
        assert_eq!(
            problems(&open_old, &open_new, Forward),
            [
                "b: property removed while the new version allows additional properties: new \
              events may carry it with any value"
            ]
        );
    }

    #[test]
    fn narrowed_and_widened_types() {
        let wide = json!({"properties": {"n": {"type": ["integer", "number"]}}});
        let narrow = json!({"properties": {"n": {"type": "integer"}}});
        assert_eq!(
            problems(&wide, &narrow, Backward),
            ["n: type narrowed from [integer, number] to integer"]
        );
        assert!(problems(&wide, &narrow, Forward).is_empty());
        let wider = json!({"properties": {"n": {"type": ["integer", "string"]}}});
        assert_eq!(
            problems(&narrow, &wider, Forward),
            ["n: type widened from integer to [integer, string]"]
        );
        assert!(problems(&narrow, &wider, Backward).is_empty());
        // Every integer is a number.
        let number = json!({"properties": {"n": {"type": "number"}}});
        assert_eq!(allowed(&narrow, &number), [Backward, NoRule]);
        assert_eq!(
            problems(&narrow, &number, Forward),
            ["n: type widened from integer to number"]
        );
        let string = json!({"properties": {"n": {"type": "string"}}});
        assert_eq!(
            problems(&narrow, &string, Full),
            ["n: type changed from integer to string"]
        );
        // A type where there was none restricts; removing one widens.
        let untyped = json!({"properties": {"n": {"minimum": 0}}});
        let typed = json!({"properties": {"n": {"minimum": 0, "type": "integer"}}});
        assert_eq!(
            problems(&untyped, &typed, Backward),
            ["n: type integer added"]
        );
        assert_eq!(
            problems(&typed, &untyped, Forward),
            ["n: type integer removed: the new version accepts any type"]
        );
    }

    #[test]
    fn enum_values_removed_and_added() {
        let two = json!({"properties": {"status": {"enum": ["succeeded", "failed"]}}});
        let one = json!({"properties": {"status": {"enum": ["succeeded"]}}});
        assert_eq!(
            problems(&two, &one, Backward),
            [r#"status: enum value "failed" removed"#]
        );
        assert!(problems(&two, &one, Forward).is_empty());
        assert_eq!(
            problems(&one, &two, Forward),
            [r#"status: enum value "failed" added"#]
        );
        assert!(problems(&one, &two, Backward).is_empty());
        // An enum where any string was allowed, and the reverse.
        let any = json!({"properties": {"status": {"type": "string"}}});
        let listed = json!({"properties": {"status": {"type": "string", "enum": ["a"]}}});
        assert_eq!(
            problems(&any, &listed, Backward),
            [r#"status: values restricted to ["a"] (the old version had no enum)"#]
        );
        assert_eq!(
            problems(&listed, &any, Forward),
            [r#"status: enum ["a"] removed: the new version accepts other values"#]
        );
        // A const is an enum of one; the old values are checked against the new bounds.
        let old = json!({"properties": {"n": {"enum": [1, 2]}}});
        let new = json!({"properties": {"n": {"type": "integer", "maximum": 1}}});
        assert_eq!(
            problems(&old, &new, Backward),
            ["n: the old version's value 2 is refused by the new one: it does not pass maximum 1"]
        );
        let constant = json!({"properties": {"n": {"const": 1}}});
        assert!(problems(&constant, &new, Backward).is_empty());
        assert!(problems(&constant, &old, Backward).is_empty());
        assert_eq!(
            problems(&constant, &old, Forward),
            ["n: enum value 2 added"]
        );
    }

    #[test]
    fn bounds_tightened_break_backward_and_loosened_break_forward() {
        let cases: [(&str, Value, Value, &str, &str); 7] = [
            (
                "n",
                json!({"type": "integer", "minimum": 0}),
                json!({"type": "integer", "minimum": 5}),
                "minimum raised from 0 to 5",
                "minimum lowered from 5 to 0",
            ),
            (
                "n",
                json!({"type": "integer", "maximum": 10}),
                json!({"type": "integer", "maximum": 5}),
                "maximum lowered from 10 to 5",
                "maximum raised from 5 to 10",
            ),
            (
                "s",
                json!({"type": "string", "minLength": 1}),
                json!({"type": "string", "minLength": 2}),
                "minLength raised from 1 to 2",
                "minLength lowered from 2 to 1",
            ),
            (
                "s",
                json!({"type": "string", "maxLength": 200}),
                json!({"type": "string", "maxLength": 100}),
                "maxLength lowered from 200 to 100",
                "maxLength raised from 100 to 200",
            ),
            (
                "a",
                json!({"type": "array", "maxItems": 10}),
                json!({"type": "array", "maxItems": 3}),
                "maxItems lowered from 10 to 3",
                "maxItems raised from 3 to 10",
            ),
            (
                "a",
                json!({"type": "array", "minItems": 0}),
                json!({"type": "array", "minItems": 1}),
                "minItems raised from 0 to 1",
                "minItems lowered from 1 to 0",
            ),
            (
                "n",
                json!({"type": "number", "minimum": 0}),
                json!({"type": "number", "exclusiveMinimum": 0}),
                "lower bound raised from minimum 0 to exclusiveMinimum 0",
                "lower bound lowered from exclusiveMinimum 0 to minimum 0",
            ),
        ];
        for (field, loose, tight, tightened, loosened) in cases {
            let loose = json!({"properties": {field: loose}});
            let tight = json!({"properties": {field: tight}});
            assert_eq!(
                problems(&loose, &tight, Backward),
                [format!("{field}: {tightened}")]
            );
            assert!(problems(&loose, &tight, Forward).is_empty(), "{tightened}");
            assert_eq!(
                problems(&tight, &loose, Forward),
                [format!("{field}: {loosened}")]
            );
            assert!(problems(&tight, &loose, Backward).is_empty(), "{loosened}");
            assert!(problems(&tight, &loose, NoRule).is_empty());
        }
        // A bound where there was none, and none where there was one.
        let free = json!({"properties": {"n": {"type": "integer"}}});
        let bounded = json!({"properties": {"n": {"type": "integer", "maximum": 9}}});
        assert_eq!(problems(&free, &bounded, Backward), ["n: maximum 9 added"]);
        assert_eq!(problems(&bounded, &free, Forward), ["n: maximum 9 removed"]);
        // A string bound does not matter to an integer.
        let long = json!({"properties": {"n": {"type": "integer", "maxLength": 3}}});
        assert!(problems(&free, &long, Full).is_empty());
    }

    #[test]
    fn formats_and_patterns_are_compared_by_text() {
        let date_time = json!({"properties": {"at": {"type": "string", "format": "date-time"}}});
        let date = json!({"properties": {"at": {"type": "string", "format": "date"}}});
        let plain = json!({"properties": {"at": {"type": "string"}}});
        for rule in [Backward, Forward, Full] {
            assert_eq!(
                problems(&date_time, &date, rule),
                [r#"at: format changed from "date-time" to "date""#]
            );
        }
        assert_eq!(
            problems(&plain, &date, Backward),
            [r#"at: format "date" added"#]
        );
        assert!(problems(&plain, &date, Forward).is_empty());
        assert_eq!(
            problems(&date, &plain, Forward),
            [r#"at: format "date" removed"#]
        );
        let pattern = json!({"properties": {"at": {"type": "string", "pattern": "^[0-9]+$"}}});
        assert_eq!(
            problems(&plain, &pattern, Backward),
            [r#"at: pattern "^[0-9]+$" added"#]
        );
        assert!(problems(&plain, &pattern, Forward).is_empty());
    }

    #[test]
    fn items_are_compared_item_by_item() {
        let old = json!({"properties": {"tags": {"type": "array", "items": {"type": "number"}}}});
        let new = json!({"properties": {"tags": {"type": "array", "items": {"type": "integer"}}}});
        assert_eq!(
            problems(&old, &new, Backward),
            ["tags[]: type narrowed from number to integer"]
        );
        assert!(problems(&old, &new, Forward).is_empty());
        // Nested objects in items are named by their path.
        let jobs = |statuses: Value| {
            json!({"properties": {"jobs": {"type": "array", "items": {
                "type": "object", "properties": {"status": {"enum": statuses}}}}}})
        };
        assert_eq!(
            problems(&jobs(json!(["ok", "failed"])), &jobs(json!(["ok"])), Full),
            [r#"jobs[].status: enum value "failed" removed"#]
        );
        let unique = json!({"properties": {"tags": {"type": "array", "uniqueItems": true,
            "items": {"type": "number"}}}});
        assert_eq!(
            problems(&old, &unique, Backward),
            ["tags: uniqueItems added"]
        );
    }

    #[test]
    fn closing_and_opening_additional_properties() {
        let open = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let closed_ = json!({"type": "object", "properties": {"a": {"type": "string"}},
                             "additionalProperties": false});
        assert_eq!(
            problems(&open, &closed_, Backward),
            [
                ": additionalProperties closed: old events may carry properties the new version \
              does not list"
            ]
        );
        assert!(problems(&open, &closed_, Forward).is_empty());
        assert_eq!(
            problems(&closed_, &open, Forward),
            [
                ": additionalProperties opened: new events may carry properties the old version \
              does not allow"
            ]
        );
        // A schema for the additional properties is compared like any other.
        let typed = json!({"type": "object", "properties": {"a": {"type": "string"}},
                           "additionalProperties": {"type": "integer"}});
        assert_eq!(problems(&open, &typed, Backward), ["*: type integer added"]);
        let inner = |rest: Value| {
            json!({"properties": {"info": {"type": "object",
            "additionalProperties": rest}}})
        };
        assert_eq!(
            problems(&inner(json!(true)), &inner(json!(false)), Backward)[0],
            "info: additionalProperties closed: old events may carry properties the new version \
             does not list"
        );
    }

    #[test]
    fn constructs_not_analysed_count_as_incompatible_when_they_change() {
        let old =
            json!({"properties": {"v": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}});
        let new = json!({"properties": {"v": {"oneOf": [{"type": "string"}, {"type": "number"}]}}});
        for rule in [Backward, Forward, Full] {
            assert_eq!(
                problems(&old, &new, rule),
                [
                    "v: oneOf changed; oneOf is not analysed, so any change to it counts as \
                  incompatible"
                ],
                "{rule}"
            );
        }
        assert!(problems(&old, &new, NoRule).is_empty());
        for keyword in ["anyOf", "allOf", "not", "$ref", "if", "$defs"] {
            let with = json!({"properties": {"v": {keyword: {"type": "string"}}}});
            let without = json!({"properties": {"v": {}}});
            let found = problems(&without, &with, Backward);
            assert_eq!(found.len(), 1, "{keyword}: {found:?}");
            assert!(
                found[0].contains(&format!("{keyword} added")) && found[0].contains("not analysed"),
                "{found:?}"
            );
        }
        // Unchanged, such a keyword constrains both versions alike: the rest is still analysed.
        let old = json!({"anyOf": [{"required": ["a"]}, {"required": ["b"]}],
                         "properties": {"a": {"type": "string"}}, "additionalProperties": false});
        let new = json!({"anyOf": [{"required": ["a"]}, {"required": ["b"]}],
                         "properties": {"a": {"type": "string"}, "c": {"type": "string"}},
                         "additionalProperties": false});
        assert!(problems(&old, &new, Backward).is_empty());
        // Beside patternProperties or unevaluatedProperties, a change of properties is not analysed.
        let pattern = |props: Value| {
            json!({"patternProperties": {"^x": {"type": "integer"}},
                                            "properties": props, "additionalProperties": false})
        };
        let found = problems(
            &pattern(json!({})),
            &pattern(json!({"xa": {"type": "string"}})),
            Backward,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("patternProperties"), "{found:?}");
        let unevaluated =
            |props: Value| json!({"unevaluatedProperties": false, "properties": props});
        let found = problems(
            &unevaluated(json!({})),
            &unevaluated(json!({"a": {}})),
            Backward,
        );
        assert!(found[0].contains("unevaluatedProperties"), "{found:?}");
    }

    #[test]
    fn none_accepts_any_change_and_annotations_never_matter() {
        let old = closed(json!({"a": {"type": "string", "enum": ["x"]}}), &["a"]);
        let new = json!({"type": "array", "oneOf": [false]});
        assert!(check(&old, &new, NoRule).is_empty());
        assert!(!check(&old, &new, Backward).is_empty());
        let described = json!({"title": "t", "description": "d", "x-eventgate": {"key_field": "a"},
            "type": "object", "properties": {"a": {"type": "string", "enum": ["x"],
            "description": "the a", "examples": ["x"]}}, "required": ["a"],
            "additionalProperties": false});
        assert_eq!(allowed(&old, &described), [Backward, Forward, Full, NoRule]);
    }

    #[test]
    fn false_and_true_schemas() {
        let any = json!({"properties": {"a": true}});
        let nothing = json!({"properties": {"a": false}});
        assert_eq!(
            problems(&any, &nothing, Backward),
            ["a: the new version allows no value here"]
        );
        assert!(problems(&any, &nothing, Forward).is_empty());
        assert_eq!(
            problems(&any, &nothing, Full),
            ["a: the new version allows no value here"]
        );
    }
}
