//! The query planner: a [`QueryRequest`] validated against the topic's [`FieldCatalogue`] into a
//! [`QueryPlan`] (filters, order, cursor position, page size), every problem reported at once.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::cursor::{self, CursorKey};
use super::fields::{field_value, FieldCatalogue, FieldDef, FieldSource, FieldType};
use super::planning::{
    key_field, parse_limit_at, parse_list, sort_direction, too_many, unknown_field_message, KeyList,
};
use super::request::{resolve_key, KeyResolution, Operator, QueryLimits, QueryRequest};
use super::value::{json_kind, parse_client_time, shorten, Decimal, Scalar, SortValue};
use crate::envelope::Event;
use crate::error::{ApiError, ErrorDetail};

/// At most this many error details are reported for one request.
const MAX_ERROR_DETAILS: usize = 50;

/// One validated filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The filter key as the client wrote it (for messages).
    pub key: String,
    pub field: FieldDef,
    pub op: FilterOp,
}

/// A filter operator with its typed operands. Operands have the kind of the field's typed value
/// ([`Scalar::Number`] of milliseconds for epoch-ms fields, [`Scalar::Instant`] for date-time fields).
#[derive(Debug, Clone, PartialEq)]
pub enum FilterOp {
    /// `field: v`.
    Eq(Scalar),
    /// `field: null`: the field has no value.
    IsNull,
    /// `field_in: [...]`; `or_null` when the list held `null`.
    In {
        values: Vec<Scalar>,
        or_null: bool,
    },
    Ne(Scalar),
    Gt(Scalar),
    Gte(Scalar),
    Lt(Scalar),
    Lte(Scalar),
    /// Inclusive; a `None` bound is open.
    Between(Option<Scalar>, Option<Scalar>),
    Exists(bool),
    /// Substring, ASCII case-insensitive (the text is kept as given).
    Contains(String),
}

impl FilterOp {
    pub fn operator(&self) -> Operator {
        match self {
            FilterOp::Eq(_) | FilterOp::IsNull => Operator::Eq,
            FilterOp::In { .. } => Operator::In,
            FilterOp::Ne(_) => Operator::Ne,
            FilterOp::Gt(_) => Operator::Gt,
            FilterOp::Gte(_) => Operator::Gte,
            FilterOp::Lt(_) => Operator::Lt,
            FilterOp::Lte(_) => Operator::Lte,
            FilterOp::Between(..) => Operator::Between,
            FilterOp::Exists(_) => Operator::Exists,
            FilterOp::Contains(_) => Operator::Contains,
        }
    }
}

/// One key of the order.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub field: FieldDef,
    pub descending: bool,
}

/// A validated query: what [`plan`] returns and `query_sql::page_query` translates.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPlan {
    pub filters: Vec<Filter>,
    /// The order, always ending with `id` (appended with the direction of the last key unless the client
    /// sorted by `id` already).
    pub sort: Vec<SortKey>,
    /// The sort values of the last row of the previous page, one per entry of `sort`.
    pub after: Option<Vec<SortValue>>,
    /// Rows per page (the SQL fetches one more to know whether there is a next page).
    pub limit: u32,
    /// Rows skipped before the page: offset paging (`page`), 0 otherwise.
    pub offset: u64,
    query_hash: [u8; 32],
}

impl QueryPlan {
    /// The values of the sort keys of `event`, one per entry of `sort`.
    pub fn sort_values(&self, event: &Event) -> Vec<SortValue> {
        self.sort
            .iter()
            .map(|key| field_value(&key.field, event))
            .collect()
    }

    /// The cursor for the page after the one ending with `last`.
    pub fn next_cursor(&self, last: &Event, key: &CursorKey) -> String {
        key.encode(&self.query_hash, &self.sort_values(last))
    }
}

/// Validates `req` for `topic` and builds the plan; every problem is reported at once as a 400
/// `validation` error naming the filter key, `sort[i]`, `limit` or `cursor`.
pub fn plan(
    topic: &str,
    req: &QueryRequest,
    fields: &FieldCatalogue,
    limits: &QueryLimits,
    key: &CursorKey,
) -> Result<QueryPlan, ApiError> {
    plan_restricted(topic, req, fields, limits, key, &[])
}

/// [`plan`] for a reader whose access is restricted: the `restrictions` (built by [`restriction`]) are
/// ANDed to the client's filters, whatever those are, and are part of the query hash, so a cursor of
/// another query (or of the same query under other restrictions) is refused. They do not count against
/// `max_filters` and never produce errors.
pub fn plan_restricted(
    topic: &str,
    req: &QueryRequest,
    fields: &FieldCatalogue,
    limits: &QueryLimits,
    key: &CursorKey,
    restrictions: &[Filter],
) -> Result<QueryPlan, ApiError> {
    let mut errors: Vec<ErrorDetail> = Vec::new();

    if req.filter.len() > limits.max_filters {
        let message = too_many("filters", req.filter.len(), limits.max_filters);
        errors.push(ErrorDetail::validation("filter", message));
    }
    let mut filters = Vec::new();
    for (filter_key, value) in &req.filter {
        match parse_filter(filter_key, value, fields, limits) {
            Ok(filter) => filters.push(filter),
            Err(message) => errors.push(ErrorDetail::validation(shorten(filter_key, 200), message)),
        }
    }

    let sort = parse_sort(req.sort.as_deref(), fields, limits, &mut errors);
    // Whether the cursor can be checked against the query: only when filters and sort are all valid.
    let query_ok = errors.is_empty();

    let limit = parse_limit_at(
        if req.limit.is_none() && req.page_size.is_some() {
            "page_size"
        } else {
            "limit"
        },
        req.limit.or(req.page_size),
        limits.default_limit,
        limits.max_limit,
        &mut errors,
    );
    let offset = parse_page(req, limit, limits, &mut errors);

    filters.extend(restrictions.iter().cloned());
    let query_hash = query_hash(topic, &filters, &sort);
    let after = match &req.cursor {
        None => None,
        Some(token) => match decode_cursor(token, &sort, query_ok, &query_hash, limits, key) {
            Ok(values) => Some(values),
            Err(message) => {
                errors.push(ErrorDetail::validation("cursor", message));
                None
            }
        },
    };

    if !errors.is_empty() {
        if errors.len() > MAX_ERROR_DETAILS {
            let more = errors.len() - MAX_ERROR_DETAILS;
            errors.truncate(MAX_ERROR_DETAILS);
            errors.push(ErrorDetail::validation(
                "filter",
                format!("… and {more} more problems"),
            ));
        }
        return Err(ApiError::from_details(errors));
    }
    Ok(QueryPlan {
        filters,
        sort,
        after,
        limit,
        offset,
        query_hash,
    })
}

/// The offset of `page` (1-based) of `limit`-event pages, within `max_page_depth`; errors at `page`
/// (or `page_size` given with `limit`).
fn parse_page(
    req: &QueryRequest,
    limit: u32,
    limits: &QueryLimits,
    errors: &mut Vec<ErrorDetail>,
) -> u64 {
    if req.limit.is_some() && req.page_size.is_some() {
        errors.push(ErrorDetail::validation(
            "page_size",
            "give `limit` or `page_size`, not both (they mean the same)",
        ));
    }
    let Some(page) = req.page else {
        return 0;
    };
    if req.cursor.is_some() {
        errors.push(ErrorDetail::validation(
            "page",
            "give `page` or `cursor`, not both: the cursor already says where the page starts",
        ));
        return 0;
    }
    if page == 0 {
        errors.push(ErrorDetail::validation(
            "page",
            "must be at least 1 (the first page is 1)",
        ));
        return 0;
    }
    let offset = (page - 1).saturating_mul(u64::from(limit));
    if offset.saturating_add(u64::from(limit)) > limits.max_page_depth {
        errors.push(ErrorDetail::validation(
            "page",
            format!(
                "page {page} of {limit} events ends past event {}, the deepest `page` reaches \
                 (offset paging reads and drops every event before the page); to go further, page \
                 with the cursor: send `pagination.cursor` of the last page you fetched as `cursor`",
                limits.max_page_depth
            ),
        ));
        return 0;
    }
    offset
}

/// The mandatory filter `name_in: values` of a restricted reader, typed like a client's filter. Fails
/// (with a message for the log) when the topic has no such field or a value does not fit its type: the
/// caller must then refuse the read, never run it unrestricted.
pub fn restriction(
    fields: &FieldCatalogue,
    name: &str,
    values: &[Value],
) -> Result<Filter, String> {
    let field = fields
        .lookup(name)
        .ok_or_else(|| format!("the topic has no field `{}`", shorten(name, 200)))?;
    if field.ty == FieldType::Other {
        return Err(format!("`{}` has no comparable values", field.name));
    }
    if field.is_array_item() {
        // "Some element is allowed" would show the other elements: a restriction needs one value.
        return Err(format!(
            "`{}` is inside an array: a restriction needs a field with one value per event",
            field.name
        ));
    }
    if values.is_empty() {
        return Err(format!("no allowed values for `{}`", field.name));
    }
    // Values come from the access file, not from a client: no length limit applies.
    let limits = QueryLimits {
        max_value_len: usize::MAX,
        ..QueryLimits::default()
    };
    let values = values
        .iter()
        .map(|value| parse_operand(field, value, &limits))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Filter {
        key: format!("{}{}", field.name, Operator::In.suffix()),
        field: field.clone(),
        op: FilterOp::In {
            values,
            or_null: false,
        },
    })
}

fn path_too_deep(name: &str, limits: &QueryLimits) -> Option<String> {
    let depth = name
        .strip_prefix("payload.")
        .unwrap_or(name)
        .split('.')
        .count();
    (depth > limits.max_path_depth).then(|| {
        format!(
            "field path `{}` has {depth} parts, at most {} allowed",
            shorten(name, 200),
            limits.max_path_depth
        )
    })
}

fn parse_filter(
    key: &str,
    value: &Value,
    fields: &FieldCatalogue,
    limits: &QueryLimits,
) -> Result<Filter, String> {
    let (field, op) = match resolve_key(key, fields) {
        KeyResolution::Found { field, op } => (field, op),
        KeyResolution::Unknown { name } => {
            return Err(path_too_deep(&name, limits)
                .unwrap_or_else(|| unknown_field_message(&name, key, fields)));
        }
    };
    if let Some(message) = path_too_deep(key.strip_suffix(op.suffix()).unwrap_or(key), limits) {
        return Err(message);
    }
    let ty = field.ty;
    let name = &field.name;
    let applies = match op {
        Operator::Exists => true,
        Operator::Contains => ty == FieldType::String,
        _ if ty == FieldType::Other => false,
        Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte | Operator::Between => {
            ty != FieldType::Boolean
        }
        Operator::Eq | Operator::In | Operator::Ne => true,
    };
    if !applies {
        let hint = match ty {
            FieldType::Other => "only `_exists` applies to it",
            FieldType::Boolean => "booleans support equality, `_in`, `_ne` and `_exists`",
            _ => "`_contains` applies to string fields only",
        };
        return Err(format!(
            "`{}` does not apply to `{name}` ({}): {hint}",
            op.name(),
            ty.as_str()
        ));
    }
    let operand = |v: &Value| parse_operand(field, v, limits);
    let op = match op {
        Operator::Eq => match value {
            Value::Null => FilterOp::IsNull,
            v => FilterOp::Eq(operand(v)?),
        },
        Operator::In => {
            let Value::Array(items) = value else {
                return Err(format!(
                    "expected a list of values, got {}",
                    json_kind(value)
                ));
            };
            if items.is_empty() {
                return Err("expected at least one value".to_owned());
            }
            if items.len() > limits.max_in_values {
                return Err(too_many("values", items.len(), limits.max_in_values));
            }
            let mut values = Vec::new();
            let mut or_null = false;
            let mut problems = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Null => or_null = true,
                    v => match operand(v) {
                        Ok(s) => {
                            if !values.contains(&s) {
                                values.push(s);
                            }
                        }
                        Err(e) => problems.push(format!("value {i}: {e}")),
                    },
                }
            }
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
            FilterOp::In { values, or_null }
        }
        Operator::Between => {
            let bounds =
                match value {
                    Value::Array(items) if items.len() == 2 => items,
                    _ => return Err(
                        "expected a list of exactly two bounds [from, to] (null for an open bound)"
                            .to_owned(),
                    ),
                };
            let bound = |v: &Value| match v {
                Value::Null => Ok(None),
                v => operand(v).map(Some),
            };
            match (bound(&bounds[0]), bound(&bounds[1])) {
                (Ok(lo), Ok(hi)) => FilterOp::Between(lo, hi),
                (Err(e), Ok(_)) => return Err(format!("lower bound: {e}")),
                (Ok(_), Err(e)) => return Err(format!("upper bound: {e}")),
                (Err(e1), Err(e2)) => return Err(format!("lower bound: {e1}; upper bound: {e2}")),
            }
        }
        Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte | Operator::Ne => {
            if value.is_null() {
                return Err(format!(
                    "`{}` needs a value, not null (use `{name}_exists` to test for presence)",
                    op.name()
                ));
            }
            let v = operand(value)?;
            match op {
                Operator::Gt => FilterOp::Gt(v),
                Operator::Gte => FilterOp::Gte(v),
                Operator::Lt => FilterOp::Lt(v),
                Operator::Lte => FilterOp::Lte(v),
                _ => FilterOp::Ne(v),
            }
        }
        Operator::Exists => match value {
            Value::Bool(b) => FilterOp::Exists(*b),
            v => return Err(format!("expected true or false, got {}", json_kind(v))),
        },
        Operator::Contains => match value {
            Value::String(s) => {
                check_text(s, limits)?;
                FilterOp::Contains(s.clone())
            }
            v => return Err(format!("expected a string, got {}", json_kind(v))),
        },
    };
    Ok(Filter {
        key: key.to_owned(),
        field: field.clone(),
        op,
    })
}

fn check_text(s: &str, limits: &QueryLimits) -> Result<(), String> {
    let chars = s.chars().count();
    if chars > limits.max_value_len {
        return Err(format!(
            "value too long: {chars} characters, at most {} allowed",
            limits.max_value_len
        ));
    }
    if s.contains('\0') {
        return Err("value contains a NUL character".to_owned());
    }
    Ok(())
}

/// A client value as an operand for `field`.
fn parse_operand(field: &FieldDef, value: &Value, limits: &QueryLimits) -> Result<Scalar, String> {
    if let Value::String(s) = value {
        check_text(s, limits)?;
    }
    let wrong = |expected: &str| {
        format!(
            "expected {expected} for `{}`, got {}",
            field.name,
            json_kind(value)
        )
    };
    match field.ty {
        FieldType::Uuid => match value {
            Value::String(s) => Uuid::parse_str(s)
                .map(Scalar::Uuid)
                .map_err(|_| format!("`{}` is not a UUID", shorten(s, 64))),
            _ => Err(wrong("a UUID string")),
        },
        FieldType::String => match value {
            Value::String(s) => Ok(Scalar::Text(s.clone())),
            _ => Err(wrong("a string")),
        },
        FieldType::Integer => match value {
            Value::Number(n) => match Decimal::from_json_number(n) {
                Some(d) if d.is_integer() => Ok(Scalar::Number(d)),
                _ => Err(format!("expected an integer for `{}`, got {n}", field.name)),
            },
            _ => Err(wrong("an integer")),
        },
        FieldType::Number => match value {
            Value::Number(n) => Decimal::from_json_number(n)
                .map(Scalar::Number)
                .ok_or_else(|| wrong("a number")),
            _ => Err(wrong("a number")),
        },
        FieldType::Boolean => match value {
            Value::Bool(b) => Ok(Scalar::Bool(*b)),
            _ => Err(wrong("true or false")),
        },
        FieldType::DateTime => parse_client_time(value).map(Scalar::Instant),
        FieldType::EpochMillis => {
            parse_client_time(value).map(|us| Scalar::Number(Decimal::millis_from_micros(us)))
        }
        FieldType::Other => Err(format!("`{}` has no comparable values", field.name)),
    }
}

fn parse_sort(
    sort: Option<&[String]>,
    fields: &FieldCatalogue,
    limits: &QueryLimits,
    errors: &mut Vec<ErrorDetail>,
) -> Vec<SortKey> {
    let default = ["-timestamp".to_owned()];
    let entries: &[String] = match sort {
        Some(list) if !list.is_empty() => list,
        _ => &default,
    };
    let mut keys = parse_list(
        "sort",
        "sort fields",
        entries,
        limits.max_sort_fields,
        errors,
        |entry, chosen: &[SortKey]| {
            let (descending, name) = sort_direction(entry);
            if name.is_empty() {
                return Err(
                    "empty sort field; write a field name, `-` first for descending".to_owned(),
                );
            }
            if let Some(message) = path_too_deep(name, limits) {
                return Err(message);
            }
            let field = key_field(name, fields, chosen.iter().map(|k| &k.field), KeyList::Sort)?;
            Ok(SortKey {
                field: field.clone(),
                descending,
            })
        },
    );
    if !keys.iter().any(|k| k.field.source == FieldSource::Id) {
        let descending = keys.last().is_some_and(|k| k.descending);
        if let Some(id) = fields.lookup("id") {
            keys.push(SortKey {
                field: id.clone(),
                descending,
            });
        }
    }
    keys
}

/// SHA-256 over the canonical form of the topic, the filters (order-independent, by canonical field name)
/// and the sort; a cursor is only valid for the query with the same hash.
fn query_hash(topic: &str, filters: &[Filter], sort: &[SortKey]) -> [u8; 32] {
    let mut canonical_filters: Vec<String> = filters
        .iter()
        .map(|f| {
            let operands: Vec<Value> = match &f.op {
                FilterOp::Eq(v)
                | FilterOp::Ne(v)
                | FilterOp::Gt(v)
                | FilterOp::Gte(v)
                | FilterOp::Lt(v)
                | FilterOp::Lte(v) => {
                    vec![cursor::encode_scalar(v)]
                }
                FilterOp::IsNull => vec![Value::Null],
                FilterOp::In { values, or_null } => {
                    let mut vs: Vec<String> = values
                        .iter()
                        .map(|v| cursor::encode_scalar(v).to_string())
                        .collect();
                    vs.sort();
                    vec![json!(vs), json!(or_null)]
                }
                FilterOp::Between(lo, hi) => {
                    vec![cursor::encode_value(lo), cursor::encode_value(hi)]
                }
                FilterOp::Exists(b) => vec![json!(b)],
                FilterOp::Contains(s) => vec![json!(s.to_ascii_lowercase())],
            };
            json!([f.field.name, f.op.operator().name(), operands]).to_string()
        })
        .collect();
    canonical_filters.sort();
    let canonical_sort: Vec<Value> = sort
        .iter()
        .map(|k| json!([k.field.name, k.descending]))
        .collect();
    let canonical = json!([
        "eventgate-query-v1",
        topic,
        canonical_filters,
        canonical_sort
    ]);
    Sha256::digest(canonical.to_string().as_bytes()).into()
}

fn decode_cursor(
    token: &str,
    sort: &[SortKey],
    query_ok: bool,
    query_hash: &[u8; 32],
    limits: &QueryLimits,
    key: &CursorKey,
) -> Result<Vec<SortValue>, &'static str> {
    if token.len() > limits.max_cursor_len {
        return Err("invalid cursor: too long");
    }
    let (hash, raw_values) = key.decode(token)?;
    if !query_ok {
        // The signature is fine; whether it fits the query cannot be told while the query is invalid.
        return Ok(Vec::new());
    }
    let expected: String = query_hash
        .iter()
        .take(cursor::QUERY_HASH_LEN)
        .map(|b| format!("{b:02x}"))
        .collect();
    if hash != expected {
        return Err("cursor belongs to a different query: keep filter and sort unchanged while paging, or drop the cursor to start over");
    }
    if raw_values.len() != sort.len() {
        return Err("invalid cursor: pass the `next_cursor` of the previous page unchanged");
    }
    let mut values = Vec::with_capacity(sort.len());
    for (raw, key) in raw_values.iter().zip(sort) {
        let value = cursor::decode_value(raw).ok_or("invalid cursor: malformed value")?;
        let fits = match (&value, key.field.ty) {
            (None, _) => !key.field.is_envelope(),
            (Some(Scalar::Uuid(_)), FieldType::Uuid) => true,
            (Some(Scalar::Text(_)), FieldType::String) => true,
            (
                Some(Scalar::Number(_)),
                FieldType::Integer | FieldType::Number | FieldType::EpochMillis,
            ) => true,
            (Some(Scalar::Bool(_)), FieldType::Boolean) => true,
            (Some(Scalar::Instant(_)), FieldType::DateTime) => true,
            _ => false,
        };
        if !fits {
            return Err("invalid cursor: value does not fit the sort field");
        }
        values.push(value);
    }
    Ok(values)
}
