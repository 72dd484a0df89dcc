//! Translation of a [`QueryPlan`] into one parameterised SQL statement over `events`.
//!
//! Invariants:
//! - No client text ever becomes SQL text. The statement is assembled only from `&'static str` fragments
//!   of this file and `$n` placeholders; every value, field path (`text[]` for `#>`) and pattern is a bind
//!   parameter. [`SqlBuilder::push`] takes `&'static str` so nothing else can be appended. The one
//!   exception is the typed expression of a field the topic declares indexed, which names the catalogue's
//!   own path (plain identifiers only) literally so that it equals the field's expression index.
//! - The statement selects and orders exactly what `QueryPlan::matches` / `QueryPlan::compare` /
//!   `QueryPlan::is_after_cursor` (core's in-memory reference, feature `testing`) say in memory (checked against Postgres by `tests/query_property.rs`):
//!   - a payload field's typed value (`eventgate_core::db::typed_value`) is `payload #> path` when it has
//!     the field's JSON type, else NULL;
//!     `#>` would index into arrays for path parts that look like integers, so such parts are guarded
//!     with `jsonb_typeof(parent) = 'object'` (Rust walks objects only);
//!   - text compares under `COLLATE "C"` (byte order, `str`'s order); `_contains` is `ILIKE` under
//!     `COLLATE "C"`, which folds ASCII letters only, like `to_ascii_lowercase`;
//!   - date-time strings become `timestamptz` only when they match [`STORED_TIME_REGEX`], so a malformed
//!     value is NULL instead of an error; date-only strings get `T00:00:00Z` appended (never the session
//!     time zone);
//!   - numbers compare as `numeric` (exact); instants are bound as `timestamptz` microseconds.
//! - Equality (and `_in`) on string, number, boolean and epoch-ms payload fields is written as jsonb
//!   containment `payload @> '{"a":{"b":v}}'`, which the GIN `jsonb_path_ops` index serves and which means
//!   the same thing (objects only, numbers by value: `1` matches `1.0`).
//! - A field inside an array (`jobs[].status`) holds when some element passes: equality and `_in` are
//!   containment `payload @> '{"jobs":[{"status":v}]}'` (an array contains a document when some element
//!   contains it; Postgres never lets an array element that is itself an array contain a scalar, and
//!   neither does the reference), served by the GIN index; every other operator is
//!   `EXISTS (SELECT 1 FROM jsonb_array_elements(<the array, or NULL>) AS e(v) WHERE <typed value of the
//!   element's path> <op> $n)`, evaluated on the rows the other conditions leave (`jsonb_path_exists`
//!   was not used: its lax mode unwraps arrays and its `.datetime()` parses otherwise than the typed
//!   value, so it would not mean what the reference means).
//! - The default order `-timestamp` becomes `ORDER BY received_at DESC, id DESC` with the keyset condition
//!   `(received_at, id) < ($a, $b)`, served by the `(topic, received_at, id)` btree. Other orders use a
//!   lexicographic OR-chain that treats NULL as greater than every value (`ASC` = `NULLS LAST`,
//!   `DESC` = `NULLS FIRST`, Postgres' defaults), with a redundant bound on the first key from the
//!   cursor's first value so that an index on it starts at the cursor (an ascending payload key after a
//!   value: a union of `>= v` and `IS NULL`, see [`page_sql`]).

use serde_json::{Map, Value};
use tokio_postgres::types::{ToSql, Type};

use eventgate_core::db::typed_value::{typed_value, ValueSql};
use eventgate_core::query::value::{PG_EPOCH_MICROS, STORED_TIME_REGEX};
use eventgate_core::query::{
    FieldDef, FieldSource, FieldType, Filter, FilterOp, QueryPlan, Scalar, SortKey, SortValue,
};

/// One bind parameter, in order: `$1` is `binds[0]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    TextArray(Vec<String>),
    Uuid(uuid::Uuid),
    Timestamptz(Instant),
    Jsonb(Value),
    Bool(bool),
    BigInt(i64),
}

/// A statement before it is run: the SQL text and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlParts {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// The page query: `SELECT id, topic, received_at, producer, payload, schema_version FROM events WHERE topic = $1 AND
/// <filters> AND <after the cursor> ORDER BY <sort, id> LIMIT plan.limit + 1 [OFFSET plan.offset]`,
/// loadable as `EventRow`.
///
/// After a cursor whose first key is an ascending payload field with a value `v` and an index
/// ([`split_at_no_value`]), the rows after it are those from `v` on and those without a value (last in
/// that order). No one index condition says "`>= v` or NULL", so the page is the union of both, each
/// an index range scan with its own bound: `WITH from_value AS MATERIALIZED (<… AND key >= v … LIMIT
/// n>) SELECT … FROM (SELECT … FROM from_value UNION ALL (<… AND key IS NULL … LIMIT n - (SELECT
/// count(*) FROM from_value)>)) AS page ORDER BY <sort, id> LIMIT n`. The rows without a value are
/// only read when those from `v` on do not fill the page (a `LIMIT 0` reads nothing): without a
/// composite index they are sorted, and they may be many.
pub fn page_sql(topic: &str, plan: &QueryPlan) -> SqlParts {
    let mut b = SqlBuilder::default();
    if split_at_no_value(plan) {
        b.push("WITH from_value AS MATERIALIZED (");
        b.page_select(topic, plan, FirstKeyBound::FromValue);
        b.push(
            ") SELECT id, topic, received_at, producer, payload, schema_version FROM (\
             SELECT id, topic, received_at, producer, payload, schema_version FROM from_value UNION ALL (",
        );
        b.page_select(topic, plan, FirstKeyBound::NoValue);
        b.push(")) AS page");
        b.order_and_limit(plan, false);
    } else {
        b.page_select(topic, plan, FirstKeyBound::Redundant);
    }
    if plan.offset > 0 {
        // Offset paging (`page`), bounded by `max_page_depth`: the rows before are read and dropped.
        b.push(" OFFSET ");
        b.bind(
            Bind::BigInt(i64::try_from(plan.offset).unwrap_or(i64::MAX)),
            "::bigint",
        );
    }
    SqlParts {
        sql: b.sql,
        binds: b.binds,
    }
}

/// Whether the page after the cursor is written as a union split at the first key's "no value"
/// ([`page_sql`]): a cursor, no offset, the first key an ascending payload field with a value in the
/// cursor, compared as its index's expression (declared or auto-indexed; unindexed, both halves
/// would read the topic).
fn split_at_no_value(plan: &QueryPlan) -> bool {
    let (Some(after), Some(first)) = (&plan.after, plan.sort.first()) else {
        return false;
    };
    plan.offset == 0
        && !first.descending
        && matches!(first.field.source, FieldSource::Payload(_))
        && eventgate_core::db::indexed_expression(&first.field).is_some()
        && matches!(after.first(), Some(Some(_)))
}

/// The bound the cursor's first value puts on the first key ([`SqlBuilder::first_key_bound`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FirstKeyBound {
    /// Redundant: keeps every row after the cursor.
    Redundant,
    /// The union's first half: the first key `>=` the cursor's value (ascending).
    FromValue,
    /// The union's second half: the first key without a value.
    NoValue,
}

impl SqlBuilder {
    /// `SELECT … FROM events WHERE topic = … AND <filters> AND <after the cursor> ORDER BY … LIMIT …`.
    fn page_select(&mut self, topic: &str, plan: &QueryPlan, bound: FirstKeyBound) {
        self.push("SELECT id, topic, received_at, producer, payload, schema_version FROM events WHERE topic = ");
        self.bind(Bind::Text(topic.to_owned()), "::text");
        for filter in &plan.filters {
            self.push(" AND ");
            self.filter(filter);
        }
        if let Some(after) = &plan.after {
            self.push(" AND ");
            self.keyset(plan, after, bound);
        }
        self.order_and_limit(plan, bound == FirstKeyBound::NoValue);
    }

    /// ` ORDER BY <sort, id> LIMIT plan.limit + 1`, less the rows of `from_value` when `rest`.
    fn order_and_limit(&mut self, plan: &QueryPlan, rest: bool) {
        self.push(" ORDER BY ");
        for (i, key) in plan.sort.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.typed(&key.field);
            self.push(if key.descending { " DESC" } else { " ASC" });
        }
        self.push(" LIMIT ");
        self.bind(Bind::BigInt(i64::from(plan.limit) + 1), "::bigint");
        if rest {
            self.push(" - (SELECT count(*) FROM from_value)");
        }
    }
}

/// An instant bound as `timestamptz`: microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant(pub i64);

/// Written in Postgres' binary form directly (microseconds since 2000-01-01): the query language's
/// instants are microseconds already, and every value, even one `time` cannot represent, stays exact.
impl ToSql for Instant {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let since_2000 = self
            .0
            .checked_sub(PG_EPOCH_MICROS)
            .ok_or("instant out of range")?;
        out.extend_from_slice(&since_2000.to_be_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }

    tokio_postgres::types::to_sql_checked!();
}

impl Bind {
    /// The value and its Postgres type, as `tokio_postgres::Client::query_typed` takes them. The type is
    /// sent with the value (as diesel did), so a `$n::numeric` placeholder casts the text bound to it
    /// instead of making Postgres expect a numeric parameter.
    pub fn typed(&self) -> (&(dyn ToSql + Sync), Type) {
        match self {
            Bind::Text(v) => (v, Type::TEXT),
            Bind::TextArray(v) => (v, Type::TEXT_ARRAY),
            Bind::Uuid(v) => (v, Type::UUID),
            Bind::Timestamptz(v) => (v, Type::TIMESTAMPTZ),
            Bind::Jsonb(v) => (v, Type::JSONB),
            Bind::Bool(v) => (v, Type::BOOL),
            Bind::BigInt(v) => (v, Type::INT8),
        }
    }
}

impl SqlParts {
    /// The parameters with their types, in placeholder order.
    pub fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.binds.iter().map(Bind::typed).collect()
    }
}

/// Builds SQL text from static fragments and placeholders only (also used by `aggregate_sql`).
#[derive(Default)]
pub(crate) struct SqlBuilder {
    sql: String,
    binds: Vec<Bind>,
    /// Field paths already bound, with their parameter numbers (a path is bound once and reused).
    paths: Vec<(Vec<String>, usize)>,
    regex_param: Option<usize>,
}

impl SqlBuilder {
    /// The statement built so far.
    pub(crate) fn finish(self) -> SqlParts {
        SqlParts {
            sql: self.sql,
            binds: self.binds,
        }
    }

    pub(crate) fn push(&mut self, fragment: &'static str) {
        self.sql.push_str(fragment);
    }

    /// The one exception to `push`'s `&'static str`: the typed expression of a field the topic declares
    /// indexed, generated by `eventgate_core::db::indexed_expression` from the catalogue's own path
    /// (plain identifiers only), so that it equals the index expression. Never client text.
    fn push_indexed_expression(&mut self, expression: String) {
        self.sql.push_str(&expression);
    }

    fn placeholder(&mut self, n: usize, cast: &'static str) {
        self.sql.push('$');
        self.sql.push_str(&n.to_string());
        self.sql.push_str(cast);
    }

    /// Adds a parameter and writes its placeholder; returns its number.
    pub(crate) fn bind(&mut self, bind: Bind, cast: &'static str) -> usize {
        self.binds.push(bind);
        let n = self.binds.len();
        self.placeholder(n, cast);
        n
    }

    fn new_param(&mut self, bind: Bind) -> usize {
        self.binds.push(bind);
        self.binds.len()
    }

    fn path(&mut self, path: &[String]) {
        let n = match self.paths.iter().find(|(p, _)| p == path) {
            Some((_, n)) => *n,
            None => {
                let n = self.new_param(Bind::TextArray(path.to_vec()));
                self.paths.push((path.to_vec(), n));
                n
            }
        };
        self.placeholder(n, "::text[]");
    }

    fn regex(&mut self) {
        let n = match self.regex_param {
            Some(n) => n,
            None => {
                let n = self.new_param(Bind::Text(STORED_TIME_REGEX.to_owned()));
                self.regex_param = Some(n);
                n
            }
        };
        self.placeholder(n, "::text");
    }

    /// The jsonb value at a payload path, walking objects only; NULL when absent.
    fn value(&mut self, path: &[String]) {
        self.value_at(Base::Payload, path);
    }

    /// The jsonb value at `path` inside `base`, walking objects only; NULL when absent.
    fn value_at(&mut self, base: Base, path: &[String]) {
        let base_sql = match base {
            Base::Payload => "payload",
            Base::Element => "e.v",
        };
        if path.is_empty() {
            return self.push(base_sql);
        }
        let guarded: Vec<usize> = (0..path.len())
            .filter(|&i| path[i].bytes().any(|c| c.is_ascii_digit()))
            .collect();
        if guarded.is_empty() {
            self.push("(");
            self.push(base_sql);
            self.push(" #> ");
            self.path(path);
            self.push(")");
            return;
        }
        self.push("(CASE WHEN ");
        for (k, &i) in guarded.iter().enumerate() {
            if k > 0 {
                self.push(" AND ");
            }
            self.push("jsonb_typeof(");
            self.push(base_sql);
            if i > 0 {
                self.push(" #> ");
                self.path(&path[..i]);
            }
            self.push(") = 'object'");
        }
        self.push(" THEN ");
        self.push(base_sql);
        self.push(" #> ");
        self.path(path);
        self.push(" END)");
    }

    /// The text of the jsonb value at a payload path (`#>> '{}'` unquotes a string).
    fn value_text(&mut self, path: &[String]) {
        self.push("(");
        self.value(path);
        self.push(" #>> '{}')");
    }
}

/// What a path starts from: the event's payload, or the array element `e.v` of an `EXISTS` over a
/// field inside an array.
#[derive(Clone, Copy)]
enum Base {
    Payload,
    Element,
}

/// The typed-value expression of a path inside the array element `e.v`.
struct Element<'a>(&'a mut SqlBuilder);

impl ValueSql for Element<'_> {
    fn push(&mut self, fragment: &'static str) {
        self.0.push(fragment);
    }

    fn value(&mut self, path: &[String]) {
        self.0.value_at(Base::Element, path);
    }

    fn value_operand(&mut self, path: &[String]) {
        if path.is_empty() {
            // `e.v` alone is not parenthesised by `value_at`.
            self.0.push("(e.v)");
        } else {
            self.0.value_at(Base::Element, path);
        }
    }

    fn value_text(&mut self, path: &[String]) {
        self.0.push("(");
        self.0.value_at(Base::Element, path);
        self.0.push(" #>> '{}')");
    }

    fn time_pattern(&mut self) {
        self.0.regex();
    }
}

/// Paths as bind parameters: the query side of the typed-value expression.
impl ValueSql for SqlBuilder {
    fn push(&mut self, fragment: &'static str) {
        SqlBuilder::push(self, fragment);
    }

    fn value(&mut self, path: &[String]) {
        SqlBuilder::value(self, path);
    }

    fn value_operand(&mut self, path: &[String]) {
        // `value` is parenthesised already.
        SqlBuilder::value(self, path);
    }

    fn value_text(&mut self, path: &[String]) {
        SqlBuilder::value_text(self, path);
    }

    fn time_pattern(&mut self) {
        self.regex();
    }
}

impl SqlBuilder {
    /// The typed value of a field: a column, or a payload value of the field's type, else NULL
    /// (`eventgate_core::db::typed_value`, the expression the field indexes are built on).
    pub(crate) fn typed(&mut self, field: &FieldDef) {
        let path = match &field.source {
            FieldSource::Id => return self.push("id"),
            FieldSource::Timestamp => return self.push("received_at"),
            FieldSource::Producer => return self.push("(producer COLLATE \"C\")"),
            FieldSource::Payload(path) => path,
            // One value per element, none per event: never sorted or grouped by (the planner refuses
            // it); filters on it are `items_filter`.
            FieldSource::Items { .. } => return self.push("NULL"),
        };
        if let Some(expression) = eventgate_core::db::indexed_expression(field) {
            return self.push_indexed_expression(expression);
        }
        typed_value(self, field.ty, path);
    }

    /// `TRUE` when the field has a value (`wanted`), or has none (`!wanted`).
    fn presence(&mut self, field: &FieldDef, wanted: bool) {
        if field.is_envelope() {
            return self.push(if wanted { "TRUE" } else { "FALSE" });
        }
        self.push("(");
        self.typed(field);
        self.push(if wanted { " IS NOT NULL)" } else { " IS NULL)" });
    }

    fn scalar(&mut self, value: &Scalar) {
        match value {
            Scalar::Uuid(u) => self.bind(Bind::Uuid(*u), "::uuid"),
            Scalar::Text(s) => self.bind(Bind::Text(s.clone()), "::text"),
            Scalar::Number(d) => self.bind(Bind::Text(d.to_string()), "::numeric"),
            Scalar::Bool(b) => self.bind(Bind::Bool(*b), "::boolean"),
            Scalar::Instant(t) => self.bind(Bind::Timestamptz(Instant(*t)), "::timestamptz"),
        };
    }

    /// `typed <op> value`.
    fn compare(&mut self, field: &FieldDef, op: &'static str, value: &Scalar) {
        self.push("(");
        self.typed(field);
        self.push(op);
        self.scalar(value);
        self.push(")");
    }

    pub(crate) fn filter(&mut self, filter: &Filter) {
        let field = &filter.field;
        if let FieldSource::Items { array, item } = &field.source {
            return self.items_filter(filter, array, item);
        }
        match &filter.op {
            FilterOp::Exists(wanted) => self.presence(field, *wanted),
            FilterOp::IsNull => self.presence(field, false),
            FilterOp::Eq(v) => match containment(field, v) {
                Some(doc) => {
                    self.push("(payload @> ");
                    self.bind(Bind::Jsonb(doc), "::jsonb");
                    self.push(")");
                }
                None => self.compare(field, " = ", v),
            },
            FilterOp::In { values, or_null } => {
                self.push("(");
                let docs: Option<Vec<Value>> =
                    values.iter().map(|v| containment(field, v)).collect();
                match docs {
                    Some(docs) => {
                        for (i, doc) in docs.into_iter().enumerate() {
                            if i > 0 {
                                self.push(" OR ");
                            }
                            self.push("payload @> ");
                            self.bind(Bind::Jsonb(doc), "::jsonb");
                        }
                    }
                    None => {
                        self.typed(field);
                        self.push(" IN (");
                        for (i, v) in values.iter().enumerate() {
                            if i > 0 {
                                self.push(", ");
                            }
                            self.scalar(v);
                        }
                        self.push(")");
                    }
                }
                if *or_null {
                    if !values.is_empty() {
                        self.push(" OR ");
                    }
                    self.presence(field, false);
                }
                if values.is_empty() && !*or_null {
                    self.push("FALSE");
                }
                self.push(")");
            }
            FilterOp::Ne(v) => self.compare(field, " <> ", v),
            FilterOp::Gt(v) => self.compare(field, " > ", v),
            FilterOp::Gte(v) => self.compare(field, " >= ", v),
            FilterOp::Lt(v) => self.compare(field, " < ", v),
            FilterOp::Lte(v) => self.compare(field, " <= ", v),
            FilterOp::Between(lo, hi) => match (lo, hi) {
                (None, None) => self.presence(field, true),
                (Some(lo), None) => self.compare(field, " >= ", lo),
                (None, Some(hi)) => self.compare(field, " <= ", hi),
                (Some(lo), Some(hi)) => {
                    self.push("(");
                    self.compare(field, " >= ", lo);
                    self.push(" AND ");
                    self.compare(field, " <= ", hi);
                    self.push(")");
                }
            },
            FilterOp::Contains(needle) => {
                self.push("(");
                self.typed(field);
                self.push(" ILIKE ");
                self.bind(Bind::Text(like_pattern(needle)), "::text");
                self.push(")");
            }
        }
    }

    /// A filter on a field inside an array: some element passes (see the module's docs).
    fn items_filter(&mut self, filter: &Filter, array: &[String], item: &[String]) {
        let field = &filter.field;
        match &filter.op {
            FilterOp::Exists(wanted) => self.some_element(array, item, field.ty, !*wanted, None),
            FilterOp::IsNull => self.some_element(array, item, field.ty, true, None),
            FilterOp::In { values, or_null } => {
                self.push("(");
                let docs: Option<Vec<Value>> =
                    values.iter().map(|v| containment(field, v)).collect();
                match docs {
                    Some(docs) => {
                        for (i, doc) in docs.into_iter().enumerate() {
                            if i > 0 {
                                self.push(" OR ");
                            }
                            self.push("payload @> ");
                            self.bind(Bind::Jsonb(doc), "::jsonb");
                        }
                    }
                    None if !values.is_empty() => {
                        self.some_element(array, item, field.ty, false, Some(&filter.op))
                    }
                    None => {}
                }
                if *or_null {
                    if !values.is_empty() {
                        self.push(" OR ");
                    }
                    self.some_element(array, item, field.ty, true, None);
                }
                if values.is_empty() && !*or_null {
                    self.push("FALSE");
                }
                self.push(")");
            }
            FilterOp::Eq(v) => match containment(field, v) {
                Some(doc) => {
                    self.push("(payload @> ");
                    self.bind(Bind::Jsonb(doc), "::jsonb");
                    self.push(")");
                }
                None => self.some_element(array, item, field.ty, false, Some(&filter.op)),
            },
            op => self.some_element(array, item, field.ty, false, Some(op)),
        }
    }

    /// `[NOT] EXISTS (SELECT 1 FROM jsonb_array_elements(<array or NULL>) AS e(v) WHERE <cond>)`: with
    /// `op`, some element's typed value passes it; without, some element has a value.
    fn some_element(
        &mut self,
        array: &[String],
        item: &[String],
        ty: FieldType,
        negated: bool,
        op: Option<&FilterOp>,
    ) {
        self.push(if negated { "(NOT EXISTS" } else { "(EXISTS" });
        self.push(" (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(");
        self.value(array);
        self.push(") = 'array' THEN ");
        self.value(array);
        self.push(" END) AS e(v) WHERE ");
        let typed = |b: &mut SqlBuilder| {
            b.push("(");
            typed_value(&mut Element(b), ty, item);
            b.push(")");
        };
        match op {
            None => {
                typed(self);
                self.push(" IS NOT NULL");
            }
            Some(op) => self.element_condition(op, &typed),
        }
        self.push("))");
    }

    /// The condition of `op` on an element's typed value (written by `typed`).
    fn element_condition(&mut self, op: &FilterOp, typed: &dyn Fn(&mut SqlBuilder)) {
        let compare = |b: &mut SqlBuilder, sql_op: &'static str, v: &Scalar| {
            typed(b);
            b.push(sql_op);
            b.scalar(v);
        };
        match op {
            FilterOp::Eq(v) => compare(self, " = ", v),
            FilterOp::Ne(v) => compare(self, " <> ", v),
            FilterOp::Gt(v) => compare(self, " > ", v),
            FilterOp::Gte(v) => compare(self, " >= ", v),
            FilterOp::Lt(v) => compare(self, " < ", v),
            FilterOp::Lte(v) => compare(self, " <= ", v),
            FilterOp::In { values, .. } => {
                typed(self);
                self.push(" IN (");
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.scalar(v);
                }
                self.push(")");
            }
            // One element within both bounds.
            FilterOp::Between(lo, hi) => {
                typed(self);
                self.push(" IS NOT NULL");
                if let Some(lo) = lo {
                    self.push(" AND ");
                    compare(self, " >= ", lo);
                }
                if let Some(hi) = hi {
                    self.push(" AND ");
                    compare(self, " <= ", hi);
                }
            }
            FilterOp::Contains(needle) => {
                typed(self);
                self.push(" ILIKE ");
                self.bind(Bind::Text(like_pattern(needle)), "::text");
            }
            FilterOp::Exists(_) | FilterOp::IsNull => {
                typed(self);
                self.push(" IS NOT NULL");
            }
        }
    }

    /// The redundant bound the cursor's first value puts on the first key, followed by ` AND `: it
    /// keeps every row after the cursor, and lets an index on the key start the scan at the cursor
    /// (without it a deep page of a payload-led sort reads every row before the cursor).
    /// "No value" (NULL) is greater than every value, so after value `v`:
    /// - ascending: `>= v`, or no value (rows without one come last; not an index condition, so with an
    ///   index [`page_sql`] writes the two as the halves of a union, [`FirstKeyBound`]);
    /// - descending: `<= v` (rows without one came first);
    /// - ascending after no value: no value (`IS NULL`, which a btree serves as well);
    /// - descending after no value: anything (nothing is written).
    ///
    /// Envelope columns always have a value.
    fn first_key_bound(&mut self, first: &SortKey, value: Option<&Scalar>, bound: FirstKeyBound) {
        match first.field.source {
            FieldSource::Payload(_) => {}
            FieldSource::Items { .. } => return,
            FieldSource::Id | FieldSource::Timestamp | FieldSource::Producer => {
                if let Some(v) = value {
                    self.compare(
                        &first.field,
                        if first.descending { " <= " } else { " >= " },
                        v,
                    );
                    self.push(" AND ");
                }
                return;
            }
        }
        match bound {
            FirstKeyBound::Redundant => {}
            FirstKeyBound::FromValue => {
                if let Some(v) = value {
                    self.compare(&first.field, " >= ", v);
                    self.push(" AND ");
                }
                return;
            }
            FirstKeyBound::NoValue => {
                self.presence(&first.field, false);
                self.push(" AND ");
                return;
            }
        }
        match (first.descending, value) {
            (true, Some(v)) => {
                self.compare(&first.field, " <= ", v);
                self.push(" AND ");
            }
            (false, Some(v)) => {
                self.push("(");
                self.compare(&first.field, " >= ", v);
                self.push(" OR ");
                self.presence(&first.field, false);
                self.push(") AND ");
            }
            (false, None) => {
                self.presence(&first.field, false);
                self.push(" AND ");
            }
            (true, None) => {}
        }
    }

    /// Rows strictly after the cursor position in the plan's order (NULL greater than every value).
    fn keyset(&mut self, plan: &QueryPlan, after: &[SortValue], bound: FirstKeyBound) {
        let keys: Vec<_> = plan.sort.iter().zip(after.iter()).collect();
        let all_columns_one_direction = !keys.is_empty()
            && keys
                .iter()
                .all(|(k, v)| k.field.is_envelope() && v.is_some())
            && keys
                .iter()
                .all(|(k, _)| k.descending == keys[0].0.descending);
        if all_columns_one_direction {
            // A redundant bound on the time when it leads: `events` is partitioned by received_at, and
            // Postgres skips the partitions wholly after the cursor only for a plain comparison (it
            // does not prune by a row comparison).
            if let Some((first, Some(v))) = keys.first() {
                if matches!(first.field.source, FieldSource::Timestamp) {
                    self.compare(
                        &first.field,
                        if first.descending { " <= " } else { " >= " },
                        v,
                    );
                    self.push(" AND ");
                }
            }
            // Row comparison: the btree (topic, received_at, id) serves it directly.
            self.push("(");
            for (i, (key, _)) in keys.iter().enumerate() {
                if i > 0 {
                    self.push(", ");
                }
                self.typed(&key.field);
            }
            self.push(if keys[0].0.descending {
                ") < ("
            } else {
                ") > ("
            });
            for (i, (_, value)) in keys.iter().enumerate() {
                if i > 0 {
                    self.push(", ");
                }
                if let Some(v) = value {
                    self.scalar(v);
                }
            }
            self.push(")");
            return;
        }
        self.push("(");
        // A redundant bound on a leading column lets an index range scan start at the cursor.
        if let Some((first, value)) = keys.first() {
            self.first_key_bound(first, value.as_ref(), bound);
        }
        self.push("(");
        let mut terms = 0;
        for i in 0..keys.len() {
            let (key, value) = keys[i];
            let nullable = !key.field.is_envelope();
            // "Strictly after" on key i; skipped when nothing can be (ascending after NULL).
            let after_kind = match (key.descending, value) {
                (false, Some(_)) => Some(if nullable { "gt_or_null" } else { "gt" }),
                (false, None) => None,
                (true, Some(_)) => Some("lt"),
                (true, None) => Some("not_null"),
            };
            let Some(after_kind) = after_kind else {
                continue;
            };
            if terms > 0 {
                self.push(" OR ");
            }
            terms += 1;
            self.push("(");
            for (prev, prev_value) in &keys[..i] {
                match prev_value {
                    Some(v) => self.compare(&prev.field, " = ", v),
                    None => self.presence(&prev.field, false),
                }
                self.push(" AND ");
            }
            match (after_kind, value) {
                ("gt", Some(v)) => self.compare(&key.field, " > ", v),
                ("gt_or_null", Some(v)) => {
                    self.push("(");
                    self.compare(&key.field, " > ", v);
                    self.push(" OR ");
                    self.presence(&key.field, false);
                    self.push(")");
                }
                ("lt", Some(v)) => self.compare(&key.field, " < ", v),
                _ => self.presence(&key.field, true),
            }
            self.push(")");
        }
        if terms == 0 {
            self.push("FALSE");
        }
        self.push("))");
    }
}

/// The containment document `{"a":{"b":v}}` for equality with `v`, when containment means exactly
/// "the typed value equals v": payload fields of JSON string, number or boolean type (served by the GIN
/// index). Not for a field the topic declares indexed: its expression index has statistics (ANALYZE
/// gathers them for index expressions; jsonb containment has none and is guessed at 0.01 % a value), so
/// comparing the expression lets the planner choose between walking the requested order until a page
/// is full (common values) and collecting the matches (rare ones). With containment it collected and
/// sorted 50,000 matches of `source_app_in` (200 ms at 10 M events, docs/PERFORMANCE.md).
fn containment(field: &FieldDef, value: &Scalar) -> Option<Value> {
    let (path, item) = match &field.source {
        FieldSource::Payload(path) => (path, None),
        // `{"jobs": [{"status": v}]}`: some element of `jobs` is an object whose `status` is v.
        FieldSource::Items { array, item } => (array, Some(item)),
        _ => return None,
    };
    if eventgate_core::db::indexed_expression(field).is_some() {
        return None;
    }
    let leaf = match (field.ty, value) {
        (FieldType::String, Scalar::Text(s)) => Value::String(s.clone()),
        (FieldType::Integer | FieldType::Number | FieldType::EpochMillis, Scalar::Number(d)) => {
            Value::Number(d.to_json_number()?)
        }
        (FieldType::Boolean, Scalar::Bool(b)) => Value::Bool(*b),
        _ => return None,
    };
    let nest = |mut doc: Value, path: &[String]| {
        for segment in path.iter().rev() {
            let mut object = Map::new();
            object.insert(segment.clone(), doc);
            doc = Value::Object(object);
        }
        doc
    };
    let leaf = match item {
        Some(item) => Value::Array(vec![nest(leaf, item)]),
        None => leaf,
    };
    let mut doc = leaf;
    for segment in path.iter().rev() {
        let mut object = Map::new();
        object.insert(segment.clone(), doc);
        doc = Value::Object(object);
    }
    Some(doc)
}

/// `%needle%` with `\`, `%` and `_` escaped (backslash is `LIKE`'s default escape character).
pub fn like_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventgate_core::query::{plan, CursorKey, FieldCatalogue, QueryLimits, QueryRequest};
    use serde_json::json;

    fn catalogue() -> FieldCatalogue {
        FieldCatalogue::from_schema(&json!({
            "type": "object",
            "properties": {
                "source_app": {"type": "string"},
                "run_id": {"type": "integer"},
                "score": {"type": "number"},
                "ok": {"type": "boolean"},
                "timestamp_start": {"type": "integer", "x-eventgate-type": "epoch-ms"},
                "finished_at": {"type": "string", "format": "date-time"},
                "info": {"type": "object", "properties": {"region": {"type": "string"}, "0": {"type": "integer"}}},
                "tags": {"type": "array"},
                "x'; DROP TABLE events; --": {"type": "string"},
                "weird\"name": {"type": "object", "properties": {"$1": {"type": "integer"}}}
            }
        }))
    }

    fn key() -> CursorKey {
        CursorKey::new(b"sql-test-secret")
    }

    fn sql_for(body: Value) -> SqlParts {
        let req = QueryRequest::from_json(&body).expect("body");
        let plan = plan("jobs", &req, &catalogue(), &QueryLimits::default(), &key()).expect("plan");
        page_sql("jobs", &plan)
    }

    /// The SQL is made of this file's fragments only: after removing placeholders, no character outside
    /// a small fixed alphabet, and none of the client's strings.
    fn assert_only_static_sql(parts: &SqlParts, client_texts: &[&str]) {
        for text in client_texts {
            assert!(
                !parts.sql.contains(text),
                "client text {text:?} in SQL: {}",
                parts.sql
            );
        }
        let max_param = parts.binds.len();
        let mut rest = parts.sql.as_str();
        while let Some(at) = rest.find('$') {
            let digits: String = rest[at + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let n: usize = digits.parse().expect("placeholder number");
            assert!(n >= 1 && n <= max_param, "placeholder ${n} without a bind");
            rest = &rest[at + 1 + digits.len()..];
        }
        // Quoted literals are only ours.
        let literals: Vec<&str> = parts.sql.split('\'').skip(1).step_by(2).collect();
        for literal in literals {
            assert!(
                [
                    "{}",
                    "object",
                    "string",
                    "number",
                    "boolean",
                    "null",
                    "array",
                    "T00:00:00Z"
                ]
                .contains(&literal),
                "unexpected literal {literal:?} in {}",
                parts.sql
            );
        }
    }

    #[test]
    fn default_order_uses_the_btree_and_a_row_comparison() {
        let req = QueryRequest::default();
        let p = plan("jobs", &req, &catalogue(), &QueryLimits::default(), &key()).expect("plan");
        let parts = page_sql("jobs", &p);
        assert_eq!(
            parts.sql,
            "SELECT id, topic, received_at, producer, payload, schema_version FROM events WHERE topic = $1::text \
             ORDER BY received_at DESC, id DESC LIMIT $2::bigint"
        );
        assert_eq!(
            parts.binds,
            vec![Bind::Text("jobs".into()), Bind::BigInt(51)]
        );
        let last = eventgate_core::envelope::Event {
            id: uuid::Uuid::nil(),
            topic: "jobs".into(),
            timestamp: time::OffsetDateTime::UNIX_EPOCH,
            producer: "p".into(),
            payload: json!({}),
        };
        let req = QueryRequest {
            cursor: Some(p.next_cursor(&last, &key())),
            ..QueryRequest::default()
        };
        let p = plan("jobs", &req, &catalogue(), &QueryLimits::default(), &key()).expect("plan");
        let parts = page_sql("jobs", &p);
        assert!(
            parts.sql.contains("AND (received_at <= $2::timestamptz) AND (received_at, id) < ($3::timestamptz, $4::uuid) ORDER BY received_at DESC, id DESC"),
            "{}",
            parts.sql
        );
        assert_eq!(parts.binds[1], Bind::Timestamptz(Instant(0)));
        assert_eq!(parts.binds[2], Bind::Timestamptz(Instant(0)));
    }

    #[test]
    fn equality_uses_containment() {
        let parts = sql_for(
            json!({"filter": {"info.region": "eu", "run_id": 5, "ok": true, "source_app_in": ["a", "b"]}}),
        );
        assert!(
            parts
                .binds
                .contains(&Bind::Jsonb(json!({"info": {"region": "eu"}}))),
            "{:?}",
            parts.binds
        );
        assert!(parts.binds.contains(&Bind::Jsonb(json!({"run_id": 5}))));
        assert!(parts.binds.contains(&Bind::Jsonb(json!({"ok": true}))));
        assert!(parts
            .binds
            .contains(&Bind::Jsonb(json!({"source_app": "b"}))));
        assert_eq!(parts.sql.matches("payload @> ").count(), 5, "{}", parts.sql);
        assert_only_static_sql(&parts, &["eu"]);
    }

    #[test]
    fn equality_on_an_indexed_field_compares_its_index_expression() {
        let mut fields = catalogue();
        fields
            .mark_indexed(&["source_app".to_owned()])
            .expect("indexable");
        let req =
            QueryRequest::from_json(&json!({"filter": {"source_app_in": ["a", "b"], "run_id": 5}}))
                .expect("body");
        let p = plan("jobs", &req, &fields, &QueryLimits::default(), &key()).expect("plan");
        let parts = page_sql("jobs", &p);
        let expression = "((CASE WHEN jsonb_typeof(payload #> '{source_app}'::text[]) = 'string' THEN (payload #>> '{source_app}'::text[]) END) COLLATE \"C\")";
        assert!(
            parts.sql.contains(&format!("{expression} IN ($")),
            "{}",
            parts.sql
        );
        assert!(parts.binds.contains(&Bind::Text("a".into())));
        assert!(parts.binds.contains(&Bind::Text("b".into())));
        // The field that is not indexed still goes through the GIN index.
        assert_eq!(parts.sql.matches("payload @> ").count(), 1, "{}", parts.sql);
        assert!(parts.binds.contains(&Bind::Jsonb(json!({"run_id": 5}))));
    }

    #[test]
    fn integer_like_path_parts_are_guarded() {
        let parts = sql_for(json!({"filter": {"info.0_gt": 1}}));
        assert!(
            parts.sql.contains("jsonb_typeof(payload #> $"),
            "{}",
            parts.sql
        );
        assert!(
            parts.sql.contains(") = 'object' THEN payload #> "),
            "{}",
            parts.sql
        );
        assert!(parts.binds.contains(&Bind::TextArray(vec!["info".into()])));
        assert!(parts
            .binds
            .contains(&Bind::TextArray(vec!["info".into(), "0".into()])));
    }

    #[test]
    fn hostile_names_and_values_only_appear_as_binds() {
        let evil = "x'; DROP TABLE events; --";
        let parts = sql_for(json!({
            "filter": {
                evil: "'; DELETE FROM events; --",
                format!("{evil}_contains"): "%_\\' OR 1=1 --",
                format!("{evil}_in"): ["$1", "')--"],
                "weird\"name.$1_gte": 3,
                "source_app_gt": "\" OR \"\"=\"",
                "finished_at_between": ["2025-01-01", "2025-01-02T00:00:00+01:00"],
                "timestamp_start_lt": "2025-01-01",
                "tags_exists": true,
            },
            "sort": [format!("-{evil}"), "weird\"name.$1", "finished_at"],
        }));
        assert_only_static_sql(
            &parts,
            &[evil, "DROP", "DELETE", "OR 1=1", "weird", "\" OR", "2025"],
        );
        assert!(
            parts
                .binds
                .contains(&Bind::Text("%\\%\\_\\\\' OR 1=1 --%".into())),
            "{:?}",
            parts.binds
        );
        assert!(parts.binds.contains(&Bind::TextArray(vec![evil.into()])));
        assert!(parts
            .binds
            .contains(&Bind::TextArray(vec!["weird\"name".into(), "$1".into()])));
    }

    #[test]
    fn sql_looking_field_names_are_unknown_fields() {
        for name in [
            "id; DROP TABLE events",
            "payload) OR (1=1",
            "received_at",
            "topic",
            "payload",
            "$1",
        ] {
            let req = QueryRequest::from_json(&json!({"filter": {name: 1}, "sort": [name]}))
                .expect("body");
            let err =
                plan("jobs", &req, &catalogue(), &QueryLimits::default(), &key()).expect_err(name);
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn cursor_on_nullable_mixed_keys_builds_an_or_chain() {
        let body = json!({"sort": ["score", "-finished_at"], "filter": {"source_app": "a"}});
        let req = QueryRequest::from_json(&body).expect("body");
        let p = plan("jobs", &req, &catalogue(), &QueryLimits::default(), &key()).expect("plan");
        let last = eventgate_core::envelope::Event {
            id: uuid::Uuid::nil(),
            topic: "jobs".into(),
            timestamp: time::OffsetDateTime::UNIX_EPOCH,
            producer: "p".into(),
            payload: json!({"score": 1.5}),
        };
        let mut req = req;
        req.cursor = Some(p.next_cursor(&last, &key()));
        let p = plan("jobs", &req, &catalogue(), &QueryLimits::default(), &key()).expect("plan");
        let parts = page_sql("jobs", &p);
        // score > 1.5 OR score IS NULL; score = 1.5 AND finished_at IS NOT NULL; … AND id > nil.
        assert!(parts.sql.contains(" OR "), "{}", parts.sql);
        assert!(parts.sql.contains("IS NOT NULL"), "{}", parts.sql);
        assert!(parts.binds.contains(&Bind::Text("1.5".into())));
        assert_only_static_sql(&parts, &[]);
    }

    /// The SQL of the page after the event with `payload`, for `sort` on `fields`.
    fn page_after(fields: &FieldCatalogue, sort: Value, payload: Value) -> String {
        let req = QueryRequest::from_json(&json!({ "sort": sort })).expect("body");
        let p = plan("jobs", &req, fields, &QueryLimits::default(), &key()).expect("plan");
        let last = eventgate_core::envelope::Event {
            id: uuid::Uuid::nil(),
            topic: "jobs".into(),
            timestamp: time::OffsetDateTime::UNIX_EPOCH,
            producer: "p".into(),
            payload,
        };
        let mut req = req;
        req.cursor = Some(p.next_cursor(&last, &key()));
        let p = plan("jobs", &req, fields, &QueryLimits::default(), &key()).expect("plan");
        let parts = page_sql("jobs", &p);
        if !p.sort.iter().any(|k| k.field.indexed) {
            assert_only_static_sql(&parts, &[]);
        }
        parts.sql
    }

    #[test]
    fn a_payload_led_cursor_bounds_its_first_key() {
        let plain = catalogue();
        let app = "(CASE WHEN jsonb_typeof((payload #> $2::text[])) = 'string' THEN ((payload #> $2::text[]) #>> '{}') END) COLLATE \"C\")";
        // Descending after a value: `<= v` (rows without a value came first).
        let sql = page_after(
            &plain,
            json!(["-source_app", "run_id"]),
            json!({"source_app": "a"}),
        );
        assert!(sql.contains(&format!("{app} <= $3::text) AND ((")), "{sql}");
        // Ascending after no value: only rows without one follow.
        let sql = page_after(&plain, json!(["source_app", "run_id"]), json!({}));
        assert!(sql.contains(&format!("{app} IS NULL) AND ((")), "{sql}");
        // Descending after no value: nothing to bound.
        let sql = page_after(&plain, json!(["-source_app", "run_id"]), json!({}));
        assert_eq!(
            sql.matches(" IS NULL)").count(),
            2,
            "the chain's own: {sql}"
        );
        // Ascending after a value, no index: `>= v` or no value.
        let sql = page_after(
            &plain,
            json!(["source_app", "run_id"]),
            json!({"source_app": "a"}),
        );
        assert!(sql.contains(&format!("{app} >= $3::text) OR ((")), "{sql}");
        assert!(!sql.contains("UNION"), "{sql}");
        // … with an index: the two halves, the second read only for what the first leaves.
        let mut indexed = catalogue();
        indexed
            .mark_indexed(&["source_app".to_owned()])
            .expect("indexable");
        let sql = page_after(
            &indexed,
            json!(["source_app", "run_id"]),
            json!({"source_app": "a"}),
        );
        let expression = "((CASE WHEN jsonb_typeof(payload #> '{source_app}'::text[]) = 'string' THEN (payload #>> '{source_app}'::text[]) END) COLLATE \"C\")";
        assert!(
            sql.starts_with("WITH from_value AS MATERIALIZED (SELECT "),
            "{sql}"
        );
        assert!(sql.contains(&format!("({expression} >= $")), "{sql}");
        assert!(
            sql.contains(&format!("({expression} IS NULL) AND (")),
            "{sql}"
        );
        assert!(
            sql.contains(" - (SELECT count(*) FROM from_value))) AS page ORDER BY "),
            "{sql}"
        );
    }

    fn runs_catalogue() -> FieldCatalogue {
        FieldCatalogue::from_schema(&json!({
            "properties": {
                "jobs": {"type": "array", "items": {"type": "object", "properties": {
                    "status": {"type": "string"},
                    "n": {"type": "number"},
                    "at": {"type": "string", "format": "date-time"},
                    "0": {"type": "integer"},
                    "x'; DROP TABLE events; --": {"type": "string"}
                }}},
                "labels": {"type": "array", "items": {"type": "string"}}
            }
        }))
    }

    fn runs_sql(body: Value) -> SqlParts {
        let req = QueryRequest::from_json(&body).expect("body");
        let plan = plan(
            "runs",
            &req,
            &runs_catalogue(),
            &QueryLimits::default(),
            &key(),
        )
        .expect("plan");
        page_sql("runs", &plan)
    }

    #[test]
    fn equality_inside_an_array_is_containment() {
        let parts = runs_sql(json!({"filter": {
            "jobs[].status": "failed",
            "jobs[].n_in": [1, 2.5],
            "labels[]": "a"
        }}));
        for doc in [
            json!({"jobs": [{"status": "failed"}]}),
            json!({"jobs": [{"n": 1}]}),
            json!({"jobs": [{"n": 2.5}]}),
            json!({"labels": ["a"]}),
        ] {
            assert!(
                parts.binds.contains(&Bind::Jsonb(doc.clone())),
                "{doc} in {:?}",
                parts.binds
            );
        }
        assert_eq!(parts.sql.matches("payload @> ").count(), 4, "{}", parts.sql);
        assert!(!parts.sql.contains("EXISTS"), "{}", parts.sql);
        assert_only_static_sql(&parts, &["failed"]);
    }

    #[test]
    fn other_operators_inside_an_array_are_an_exists_over_its_elements() {
        let evil = "x'; DROP TABLE events; --";
        let parts = runs_sql(json!({"filter": {
            "jobs[].n_between": [1, 2],
            "jobs[].at_gt": "2025-01-01",
            "jobs[].status_exists": false,
            format!("jobs[].{evil}_contains"): "%",
            "jobs[].0_lt": 3,
            "labels[]_in": ["a", null]
        }}));
        assert_eq!(parts.sql.matches("(EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof((payload #> $").count(), 4, "{}", parts.sql);
        assert_eq!(
            parts
                .sql
                .matches("(NOT EXISTS (SELECT 1 FROM jsonb_array_elements(")
                .count(),
            2,
            "{}",
            parts.sql
        );
        assert!(
            parts.sql.contains(") = 'array' THEN (payload #> $"),
            "{}",
            parts.sql
        );
        assert!(parts.sql.contains(" END) AS e(v) WHERE "), "{}", parts.sql);
        // The element's own path, guarded like a payload path when it looks like an index.
        assert!(
            parts
                .sql
                .contains("jsonb_typeof(e.v) = 'object' THEN e.v #> $"),
            "{}",
            parts.sql
        );
        assert!(parts.binds.contains(&Bind::TextArray(vec![evil.into()])));
        assert!(parts.binds.contains(&Bind::Jsonb(json!({"labels": ["a"]}))));
        assert_only_static_sql(&parts, &[evil, "DROP", "2025"]);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(like_pattern(""), "%%");
    }

    #[test]
    fn every_bind_is_sent_with_its_type() {
        let parts = sql_for(
            json!({"filter": {"finished_at_gt": "2025-01-01", "run_id_in": [1, 2], "tags_exists": false}}),
        );
        let types: Vec<Type> = parts.params().into_iter().map(|(_, ty)| ty).collect();
        assert_eq!(types.len(), parts.binds.len());
        assert_eq!(types[0], Type::TEXT, "the topic");
        assert_eq!(types.last(), Some(&Type::INT8), "the limit");
        assert!(
            types.contains(&Type::TIMESTAMPTZ),
            "the instant of finished_at_gt"
        );
    }
}
