//! The analysts' query language of `POST /stats/{topic}` (and its GET form): pure code, no I/O.
//!
//! A [`QueryRequest`] (filters, sort, cursor, limit) is validated against the topic's [`FieldCatalogue`]
//! by [`plan()`] into a [`QueryPlan`], which the stats-api turns into SQL (`eventgate_stats_api::query_sql`).
//! `QueryPlan::matches` and `QueryPlan::compare` (`reference`, built for tests and the `testing`
//! feature) are the reference semantics in memory: the SQL must select and order exactly the same rows
//! (a property test checks it against Postgres).
//!
//! Semantics, in short (the analyst-facing description is `docs/API.md`, "Query language"):
//! - Every field has a *typed value* per event ([`field_value`]): the payload value at the field's path
//!   (walking objects only, never into arrays) if it has the field's type, else none. Missing, `null` and
//!   wrong-typed values are all "no value". A field inside an array (`jobs[].status`,
//!   [`FieldSource::Items`]) has one typed value per element instead, and a filter on it holds when some
//!   element's value passes it ("no value" then means: no element has one).
//! - `field: null` and `field_exists: false` match events without a value; every other operator (`_ne`
//!   included) only matches events with one.
//! - Sorting: "no value" is greater than every value (last ascending, first descending); `id` is always
//!   the last key, so the order is total.
//!
//! Map of the module:
//! - `request`: the request as the client writes it (POST body or GET query string), and the limits;
//! - `fields`: the fields of a topic, from its JSON Schema, and the typed value of a field in an event;
//! - `value`: typed values (exact decimals, instants) and their parsing;
//! - `plan`: the planner, request → [`QueryPlan`] (and a restricted reader's mandatory filters);
//! - `planning`: the planning steps queries and aggregates share;
//! - `cursor`: the signed pagination cursor;
//! - `select`: field selection (`fields`), which members each event of an answer keeps;
//! - `aggregate`: aggregates (`POST /stats/{topic}/aggregate`), planned with the same filters;
//! - `reference`: the reference semantics in memory (tests and the `testing` feature only).

pub mod aggregate;
pub mod cursor;
pub mod fields;
mod plan;
mod planning;
#[cfg(any(test, feature = "testing"))]
mod reference;
pub mod request;
pub mod select;
pub mod value;

#[cfg(test)]
mod tests;

pub use cursor::CursorKey;
pub use fields::{
    field_value, payload_at, typed_json, FieldCatalogue, FieldDef, FieldSource, FieldType,
};
pub use plan::{plan, plan_restricted, restriction, Filter, FilterOp, QueryPlan, SortKey};
pub use request::{CountMode, Operator, QueryLimits, QueryRequest};
pub use select::{selection, Selection};
pub use value::{Decimal, Micros, Scalar, SortValue};
