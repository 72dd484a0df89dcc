//! The request as the client writes it (POST body or GET query string), before validation.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{FieldCatalogue, FieldDef, FieldType};
use super::value::shorten;
use crate::error::{ApiError, ErrorDetail};

/// The body of `POST /stats/{topic}`; the GET form is turned into the same thing by
/// [`QueryRequest::from_query_pairs`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// Filter keys (`field` or `field_<op>`) to values; all of them must hold.
    #[serde(default)]
    pub filter: Map<String, Value>,
    /// Sort fields, `-` prefix for descending; `None` (or an empty list) means `["-timestamp"]`.
    #[serde(default)]
    pub sort: Option<Vec<String>>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Page size; `None` means the configured default.
    #[serde(default)]
    pub limit: Option<u64>,
    /// `page_size`, the audit-log spelling of `limit` (one of the two at most).
    #[serde(default)]
    pub page_size: Option<u64>,
    /// Offset paging: the 1-based number of the page of `limit` events (capped by
    /// [`QueryLimits::max_page_depth`]; the cursor goes further). Asks for the exact total too.
    #[serde(default)]
    pub page: Option<u64>,
    /// The fields each event of the answer keeps (`None`: whole events); see [`super::select`].
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Whether and how to count the query's total (`pagination.total`).
    #[serde(default)]
    pub count: Option<CountMode>,
}

/// How a query's total is counted: `count` in the body or the GET form, or PostgREST's
/// `Prefer: count=…` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountMode {
    /// `count(*)` of the matching events, within the statement timeout.
    Exact,
    /// The planner's row estimate (`EXPLAIN`): instant, approximate.
    Planned,
    /// The planner's estimate, counted exactly when the estimate is small (PostgREST's `estimated`).
    Estimated,
}

impl CountMode {
    pub const NAMES: &'static str = "`exact`, `planned` or `estimated`";

    pub fn parse(text: &str) -> Option<CountMode> {
        match text {
            "exact" => Some(CountMode::Exact),
            "planned" => Some(CountMode::Planned),
            "estimated" => Some(CountMode::Estimated),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CountMode::Exact => "exact",
            CountMode::Planned => "planned",
            CountMode::Estimated => "estimated",
        }
    }
}

/// Bounds on a query, configurable by the service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryLimits {
    /// Filters per request.
    pub max_filters: usize,
    /// Values in one `_in` list.
    pub max_in_values: usize,
    /// Characters in one string value (filter operand).
    pub max_value_len: usize,
    /// Sort fields per request (the `id` tie-breaker is not counted).
    pub max_sort_fields: usize,
    /// Parts of a dot path (`a.b.c` has 3).
    pub max_path_depth: usize,
    /// Page size when the request gives none.
    pub default_limit: u32,
    /// Largest page size a request may ask for.
    pub max_limit: u32,
    /// Characters of a cursor token.
    pub max_cursor_len: usize,
    /// Offset paging (`page`) reaches this many events into a query at most, like Elasticsearch's
    /// `max_result_window`: deeper offsets make Postgres read and drop every row before them.
    pub max_page_depth: u64,
    /// Entries of `fields`.
    pub max_selected_fields: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_filters: 20,
            max_in_values: 100,
            max_value_len: 1024,
            max_sort_fields: 5,
            max_path_depth: 8,
            default_limit: 50,
            max_limit: 1000,
            max_cursor_len: 64 * 1024,
            max_page_depth: 10_000,
            max_selected_fields: 100,
        }
    }
}

/// A filter operator, named by the suffix of the filter key (`Eq` has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    Eq,
    Between,
    In,
    Gt,
    Gte,
    Lt,
    Lte,
    Ne,
    Exists,
    Contains,
}

impl Operator {
    /// The operators with a suffix, in the order they are tried.
    pub const SUFFIXED: [Operator; 9] = [
        Operator::Between,
        Operator::In,
        Operator::Gte,
        Operator::Gt,
        Operator::Lte,
        Operator::Lt,
        Operator::Ne,
        Operator::Exists,
        Operator::Contains,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            Operator::Eq => "",
            Operator::Between => "_between",
            Operator::In => "_in",
            Operator::Gt => "_gt",
            Operator::Gte => "_gte",
            Operator::Lt => "_lt",
            Operator::Lte => "_lte",
            Operator::Ne => "_ne",
            Operator::Exists => "_exists",
            Operator::Contains => "_contains",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            other => &other.suffix()[1..],
        }
    }
}

/// How a filter key resolved against the catalogue.
pub(crate) enum KeyResolution<'a> {
    Found {
        field: &'a FieldDef,
        op: Operator,
    },
    /// No field by that name (after trying operator suffixes); `name` is the field name that was looked up.
    Unknown {
        name: String,
    },
}

/// A key is first looked up as a field name; failing that, a known operator suffix is stripped and the
/// rest looked up. So a field literally named `x_in` is filtered for equality by `x_in`, and its `_in` is
/// `x_in_in`.
pub(crate) fn resolve_key<'a>(key: &str, fields: &'a FieldCatalogue) -> KeyResolution<'a> {
    if let Some(field) = fields.lookup(key) {
        return KeyResolution::Found {
            field,
            op: Operator::Eq,
        };
    }
    for op in Operator::SUFFIXED {
        if let Some(base) = key.strip_suffix(op.suffix()) {
            return match fields.lookup(base) {
                Some(field) => KeyResolution::Found { field, op },
                None => KeyResolution::Unknown {
                    name: base.to_owned(),
                },
            };
        }
    }
    KeyResolution::Unknown {
        name: key.to_owned(),
    }
}

/// A test of the JSON shape of one top-level body member.
type ShapeCheck = fn(&Value) -> bool;

/// Query-string keys that are not filters.
pub const RESERVED_QUERY_KEYS: [&str; 7] = [
    "sort",
    "cursor",
    "limit",
    "page_size",
    "page",
    "fields",
    "count",
];

/// The members a POST body may have.
const BODY_KEYS: [&str; 8] = [
    "filter",
    "sort",
    "cursor",
    "limit",
    "page_size",
    "page",
    "fields",
    "count",
];

impl QueryRequest {
    /// Parses a POST body, reporting an unknown top-level key or a wrongly typed member as a 400
    /// `validation` error naming it.
    pub fn from_json(body: &Value) -> Result<QueryRequest, ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ErrorDetail::validation("", "the query body must be a JSON object").into());
        };
        let mut details = Vec::new();
        for key in object.keys() {
            if !BODY_KEYS.contains(&key.as_str()) {
                details.push(ErrorDetail::validation(
                    shorten(key, 100),
                    "unknown key; the body may have `filter`, `sort`, `cursor`, `limit` (or \
                     `page_size`), `page`, `fields` and `count`",
                ));
            }
        }
        let checks: [(&str, ShapeCheck, &str); 8] = [
            (
                "filter",
                |v| v.is_object() || v.is_null(),
                "must be an object of filters",
            ),
            (
                "sort",
                |v| v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
                "must be a list of field names",
            ),
            (
                "cursor",
                |v| v.is_null() || v.is_string(),
                "must be a string (the `next_cursor` of the previous page)",
            ),
            (
                "limit",
                |v| v.is_null() || v.is_u64(),
                "must be a positive integer",
            ),
            (
                "page_size",
                |v| v.is_null() || v.is_u64(),
                "must be a positive integer",
            ),
            (
                "page",
                |v| v.is_null() || v.is_u64(),
                "must be a positive integer (the first page is 1)",
            ),
            (
                "fields",
                |v| v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
                "must be a list of field names",
            ),
            (
                "count",
                |v| v.is_null() || v.as_str().and_then(CountMode::parse).is_some(),
                "must be `exact`, `planned` or `estimated`",
            ),
        ];
        for (key, ok, message) in checks {
            if let Some(value) = object.get(key) {
                if !ok(value) {
                    details.push(ErrorDetail::validation(key, message));
                }
            }
        }
        if !details.is_empty() {
            return Err(ApiError::from_details(details));
        }
        let mut request = QueryRequest::default();
        if let Some(Value::Object(filter)) = object.get("filter") {
            request.filter = filter.clone();
        }
        if let Some(Value::Array(sort)) = object.get("sort") {
            request.sort = Some(
                sort.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            );
        }
        request.cursor = object
            .get("cursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        request.limit = object.get("limit").and_then(Value::as_u64);
        request.page_size = object.get("page_size").and_then(Value::as_u64);
        request.page = object.get("page").and_then(Value::as_u64);
        if let Some(Value::Array(fields)) = object.get("fields") {
            request.fields = Some(
                fields
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            );
        }
        request.count = object
            .get("count")
            .and_then(Value::as_str)
            .and_then(CountMode::parse);
        Ok(request)
    }

    /// The GET form: `?source_app=unify&run_id_in=1,2&timestamp_between=2025-01-01,2025-01-31&sort=-timestamp,source_app&limit=10&cursor=...`.
    ///
    /// `sort`, `cursor`, `limit`, `page_size`, `page`, `fields` (comma-separated) and `count` are
    /// reserved; every other key is a filter (a payload field named like a reserved key is reachable as
    /// `payload.sort`). Values are converted by the field's type: numbers for
    /// integer/number fields, `true`/`false` for booleans, digit strings to epoch milliseconds for time
    /// fields (other strings stay strings: ISO dates), `null` to null (so a string field cannot be compared
    /// with the literal text `null` in GET; use POST). `_in` and `_between` take comma-separated lists (an
    /// empty `_between` bound is open): a value containing a comma can only be sent with POST. A value
    /// that does not convert is passed on as a string and reported by [`super::plan`] as a wrong type.
    /// Fails only for what cannot be carried: a repeated key or a non-numeric `limit`.
    pub fn from_query_pairs(
        pairs: &[(String, String)],
        fields: &FieldCatalogue,
    ) -> Result<QueryRequest, ApiError> {
        let mut details = Vec::new();
        let mut request = QueryRequest::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, raw) in pairs {
            if seen.contains(&key.as_str()) {
                details.push(ErrorDetail::validation(
                    shorten(key, 100),
                    "given more than once; use `_in` with a comma-separated list to allow several values",
                ));
                continue;
            }
            seen.push(key);
            match key.as_str() {
                "sort" => {
                    request.sort = Some(if raw.is_empty() {
                        Vec::new()
                    } else {
                        raw.split(',').map(str::to_owned).collect()
                    });
                }
                "cursor" => request.cursor = (!raw.is_empty()).then(|| raw.clone()),
                "limit" | "page_size" | "page" => match raw.parse::<u64>() {
                    Ok(n) if key == "limit" => request.limit = Some(n),
                    Ok(n) if key == "page_size" => request.page_size = Some(n),
                    Ok(n) => request.page = Some(n),
                    Err(_) => details.push(ErrorDetail::validation(
                        key.as_str(),
                        "must be a positive integer",
                    )),
                },
                "fields" => {
                    request.fields = Some(if raw.is_empty() {
                        Vec::new()
                    } else {
                        raw.split(',').map(|f| f.trim().to_owned()).collect()
                    });
                }
                "count" => match CountMode::parse(raw) {
                    Some(mode) => request.count = Some(mode),
                    None => details.push(ErrorDetail::validation(
                        "count",
                        format!("must be {}", CountMode::NAMES),
                    )),
                },
                _ => {
                    // the-eye's `timestamp_after` / `timestamp_before` (django-filter's range).
                    let key = time_alias(key, fields).unwrap_or_else(|| key.clone());
                    let value = match resolve_key(&key, fields) {
                        KeyResolution::Found { field, op } => {
                            convert_query_value(raw, field.ty, op)
                        }
                        KeyResolution::Unknown { .. } => Value::String(raw.clone()),
                    };
                    if request.filter.contains_key(&key) {
                        details.push(ErrorDetail::validation(
                            shorten(&key, 100),
                            "given more than once (`_after` is `_gte`, `_before` is `_lte`)",
                        ));
                        continue;
                    }
                    request.filter.insert(key, value);
                }
            }
        }
        if details.is_empty() {
            Ok(request)
        } else {
            Err(ApiError::from_details(details))
        }
    }
}

/// The GET form's aliases for time fields, as the-eye's django-filter range names them:
/// `<field>_after` is `<field>_gte` and `<field>_before` is `<field>_lte` (both inclusive, like
/// django-filter's). Only when the key is not a field itself and the rest names a date-time or epoch-ms
/// field.
fn time_alias(key: &str, fields: &FieldCatalogue) -> Option<String> {
    if fields.lookup(key).is_some() {
        return None;
    }
    let (base, op) = [("_after", Operator::Gte), ("_before", Operator::Lte)]
        .into_iter()
        .find_map(|(suffix, op)| Some((key.strip_suffix(suffix)?, op)))?;
    fields
        .lookup(base)
        .filter(|field| field.ty.is_time())
        .map(|_| format!("{base}{}", op.suffix()))
}

fn convert_query_value(raw: &str, ty: FieldType, op: Operator) -> Value {
    match op {
        Operator::In => Value::Array(
            raw.split(',')
                .map(|part| convert_scalar(part, ty, false))
                .collect(),
        ),
        Operator::Between => Value::Array(
            raw.split(',')
                .map(|part| convert_scalar(part, ty, true))
                .collect(),
        ),
        Operator::Exists => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(raw.to_owned()),
        },
        Operator::Contains => Value::String(raw.to_owned()),
        _ => convert_scalar(raw, ty, false),
    }
}

fn convert_scalar(raw: &str, ty: FieldType, empty_is_null: bool) -> Value {
    if raw == "null" || (empty_is_null && raw.is_empty()) {
        return Value::Null;
    }
    let as_string = || Value::String(raw.to_owned());
    match ty {
        FieldType::Integer | FieldType::Number => match serde_json::from_str::<Value>(raw) {
            Ok(number @ Value::Number(_)) if raw.trim() == raw => number,
            _ => as_string(),
        },
        FieldType::Boolean => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => as_string(),
        },
        FieldType::DateTime | FieldType::EpochMillis => {
            let digits = raw.strip_prefix('-').unwrap_or(raw);
            match raw.parse::<i64>() {
                Ok(ms) if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) => {
                    Value::from(ms)
                }
                _ => as_string(),
            }
        }
        FieldType::Uuid | FieldType::String | FieldType::Other => as_string(),
    }
}
