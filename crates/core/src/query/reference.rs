//! The reference semantics of a query in memory: which events a [`QueryPlan`] selects and in which
//! order. The SQL of the stats-api must select and order exactly the same rows; only tests use this (the
//! property tests compare it against Postgres), so it is built for tests and the `testing` feature only.

use std::cmp::Ordering;

use super::fields::{
    field_value, item_values, payload_at, typed_json, FieldDef, FieldSource, FieldType,
};
use super::plan::{Filter, FilterOp, QueryPlan, SortKey};
use super::value::{Scalar, SortValue};
use crate::envelope::Event;

/// Whether `field` has a value in `event`: a typed value, or for `Other` fields any non-null JSON value.
fn has_value(field: &FieldDef, event: &Event) -> bool {
    match (&field.source, field.ty) {
        (FieldSource::Payload(path), FieldType::Other) => {
            payload_at(&event.payload, path).is_some_and(|v| !v.is_null())
        }
        _ => field_value(field, event).is_some(),
    }
}

/// ASCII-only case folding, exactly what Postgres `ILIKE` does under `COLLATE "C"`.
fn contains_ascii_ci(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

/// Whether a typed value passes an operator that needs one.
fn passes(op: &FilterOp, v: &Scalar) -> bool {
    match op {
        FilterOp::Eq(x) => v == x,
        FilterOp::In { values, .. } => values.contains(v),
        FilterOp::Ne(x) => v != x,
        FilterOp::Gt(x) => v > x,
        FilterOp::Gte(x) => v >= x,
        FilterOp::Lt(x) => v < x,
        FilterOp::Lte(x) => v <= x,
        FilterOp::Between(lo, hi) => {
            lo.as_ref().is_none_or(|lo| v >= lo) && hi.as_ref().is_none_or(|hi| v <= hi)
        }
        FilterOp::Contains(needle) => match v {
            Scalar::Text(text) => contains_ascii_ci(text, needle),
            _ => false,
        },
        FilterOp::Exists(_) | FilterOp::IsNull => false,
    }
}

impl Filter {
    /// Whether the event passes this filter.
    pub fn holds(&self, event: &Event) -> bool {
        if let FieldSource::Items { array, item } = &self.field.source {
            return self.holds_for_some_element(&item_values(&event.payload, array, item));
        }
        match &self.op {
            FilterOp::Exists(wanted) => has_value(&self.field, event) == *wanted,
            FilterOp::IsNull => !has_value(&self.field, event),
            op => {
                let Some(v) = field_value(&self.field, event) else {
                    return matches!(op, FilterOp::In { or_null: true, .. });
                };
                passes(op, &v)
            }
        }
    }

    /// A field inside an array: the filter holds when some element's value passes it; "no value"
    /// (`null`, `_exists: false`, the `null` of an `_in`) means no element has one.
    fn holds_for_some_element(&self, values: &[&serde_json::Value]) -> bool {
        let ty = self.field.ty;
        let has_value = |v: &&serde_json::Value| match ty {
            FieldType::Other => !v.is_null(),
            _ => typed_json(ty, v).is_some(),
        };
        let some_value = values.iter().any(has_value);
        match &self.op {
            FilterOp::Exists(wanted) => some_value == *wanted,
            FilterOp::IsNull => !some_value,
            op => {
                let or_null = matches!(op, FilterOp::In { or_null: true, .. });
                values
                    .iter()
                    .filter_map(|v| typed_json(ty, v))
                    .any(|v| passes(op, &v))
                    || (or_null && !some_value)
            }
        }
    }
}

impl QueryPlan {
    /// Whether the event passes every filter (the topic and the cursor are not looked at).
    pub fn matches(&self, event: &Event) -> bool {
        self.filters.iter().all(|f| f.holds(event))
    }

    /// The order of the query, in memory: per key, values in the key's direction with "no value" greatest
    /// (so last ascending, first descending).
    pub fn compare(&self, a: &Event, b: &Event) -> Ordering {
        let (va, vb) = (self.sort_values(a), self.sort_values(b));
        compare_values(&self.sort, &va, &vb)
    }

    /// Whether `event` comes after the cursor position (always true without a cursor).
    pub fn is_after_cursor(&self, event: &Event) -> bool {
        match &self.after {
            None => true,
            Some(after) => {
                compare_values(&self.sort, &self.sort_values(event), after) == Ordering::Greater
            }
        }
    }
}

/// Lexicographic comparison of sort values under `sort`.
fn compare_values(sort: &[SortKey], a: &[SortValue], b: &[SortValue]) -> Ordering {
    for (key, (x, y)) in sort.iter().zip(a.iter().zip(b.iter())) {
        let ord = cmp_nulls_last(x, y);
        let ord = if key.descending { ord.reverse() } else { ord };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Sort order of one key in ascending direction: nulls are greater than every value (Postgres' default).
fn cmp_nulls_last(a: &SortValue, b: &SortValue) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    }
}
