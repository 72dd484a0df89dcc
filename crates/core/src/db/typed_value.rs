//! The SQL expression of a payload field's typed value: the field's JSON value when it has the field's
//! JSON type, cast to the SQL type it compares as, else NULL. Written once, here, for both its uses:
//! - the expression index of a field a topic declares indexed ([`super::field_index`]), where the path is
//!   a literal of the catalogue's own plain identifiers ([`LiteralPaths`]);
//! - the stats-api's queries, where the path is a bind parameter (its `SqlBuilder` implements
//!   [`ValueSql`]) — except for indexed fields, whose queries use the index's literal expression so that
//!   the planner can match it.
//!
//! If the two were written apart and drifted, indexes would silently stop serving queries.

use crate::query::FieldType;

/// Where an expression is written. Fragments are `&'static str` so that nothing but this module's text
/// and the sink's own path rendering reaches the SQL.
pub trait ValueSql {
    fn push(&mut self, fragment: &'static str);
    /// The jsonb value at `path` (NULL when absent), as a function argument.
    fn value(&mut self, path: &[String]);
    /// The same value as an operand of a cast (parenthesised).
    fn value_operand(&mut self, path: &[String]);
    /// The text of the value (`#>>`: a string unquoted).
    fn value_text(&mut self, path: &[String]);
    /// The pattern a stored date-time string must match to be read as one.
    fn time_pattern(&mut self);
}

/// Writes the typed value of the payload field at `path` of type `ty`.
pub fn typed_value(sql: &mut impl ValueSql, ty: FieldType, path: &[String]) {
    match ty {
        FieldType::String | FieldType::Uuid => {
            sql.push("((CASE WHEN jsonb_typeof(");
            sql.value(path);
            sql.push(") = 'string' THEN ");
            sql.value_text(path);
            sql.push(" END) COLLATE \"C\")");
        }
        FieldType::Integer | FieldType::Number | FieldType::EpochMillis => {
            sql.push("(CASE WHEN jsonb_typeof(");
            sql.value(path);
            sql.push(") = 'number' THEN ");
            sql.value_operand(path);
            sql.push("::numeric END)");
        }
        FieldType::Boolean => {
            sql.push("(CASE WHEN jsonb_typeof(");
            sql.value(path);
            sql.push(") = 'boolean' THEN ");
            sql.value_operand(path);
            sql.push("::boolean END)");
        }
        FieldType::DateTime => {
            // Date-time strings become timestamptz only when they match the stored-time pattern (a
            // malformed value is NULL, not an error); a date alone is midnight UTC, never the session's
            // time zone.
            sql.push("(CASE WHEN jsonb_typeof(");
            sql.value(path);
            sql.push(") = 'string' AND ");
            sql.value_text(path);
            sql.push(" ~ ");
            sql.time_pattern();
            sql.push(" THEN (CASE WHEN length(");
            sql.value_text(path);
            sql.push(") = 10 THEN ");
            sql.value_text(path);
            sql.push(" || 'T00:00:00Z' ELSE ");
            sql.value_text(path);
            sql.push(" END)::timestamptz END)");
        }
        FieldType::Other => {
            // Not comparable; only presence is asked of it.
            sql.push("(CASE WHEN jsonb_typeof(");
            sql.value(path);
            sql.push(") <> 'null' THEN ");
            sql.value_operand(path);
            sql.push(" END)");
        }
    }
}

/// Paths written as `'{a,b}'::text[]` literals: only for catalogue paths of plain identifiers
/// ([`crate::query::fields::is_plain_identifier`]), never client text. Such parts are never integers, so
/// `#>` cannot index into an array with them and no object guard is needed.
#[derive(Default)]
pub struct LiteralPaths {
    sql: String,
}

impl LiteralPaths {
    /// The expression for `path`, or `None` when a part is not a plain identifier.
    pub fn typed_value(ty: FieldType, path: &[String]) -> Option<String> {
        if !path
            .iter()
            .all(|p| crate::query::fields::is_plain_identifier(p))
        {
            return None;
        }
        let mut sql = LiteralPaths::default();
        typed_value(&mut sql, ty, path);
        Some(sql.sql)
    }

    fn literal(&mut self, path: &[String]) {
        self.sql.push_str("'{");
        self.sql.push_str(&path.join(","));
        self.sql.push_str("}'::text[]");
    }
}

impl ValueSql for LiteralPaths {
    fn push(&mut self, fragment: &'static str) {
        self.sql.push_str(fragment);
    }

    fn value(&mut self, path: &[String]) {
        self.sql.push_str("payload #> ");
        self.literal(path);
    }

    fn value_operand(&mut self, path: &[String]) {
        self.sql.push('(');
        self.value(path);
        self.sql.push(')');
    }

    fn value_text(&mut self, path: &[String]) {
        self.sql.push_str("(payload #>> ");
        self.literal(path);
        self.sql.push(')');
    }

    fn time_pattern(&mut self) {
        self.sql.push('\'');
        self.sql
            .push_str(&crate::query::value::STORED_TIME_REGEX.replace('\'', "''"));
        self.sql.push('\'');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| (*p).to_owned()).collect()
    }

    /// The index expressions of existing databases are named by a hash of their text: the text must not
    /// change, or every deployed index would be built again under a new name.
    #[test]
    fn literal_expressions_keep_their_text() {
        assert_eq!(
            LiteralPaths::typed_value(FieldType::String, &path(&["event_name"])).as_deref(),
            Some("((CASE WHEN jsonb_typeof(payload #> '{event_name}'::text[]) = 'string' THEN (payload #>> '{event_name}'::text[]) END) COLLATE \"C\")")
        );
        assert_eq!(
            LiteralPaths::typed_value(FieldType::Integer, &path(&["a", "b"])).as_deref(),
            Some("(CASE WHEN jsonb_typeof(payload #> '{a,b}'::text[]) = 'number' THEN (payload #> '{a,b}'::text[])::numeric END)")
        );
        assert_eq!(
            LiteralPaths::typed_value(FieldType::Boolean, &path(&["ok"])).as_deref(),
            Some("(CASE WHEN jsonb_typeof(payload #> '{ok}'::text[]) = 'boolean' THEN (payload #> '{ok}'::text[])::boolean END)")
        );
    }

    #[test]
    fn paths_that_are_not_plain_identifiers_get_no_literal() {
        assert_eq!(
            LiteralPaths::typed_value(FieldType::String, &path(&["a'b"])),
            None
        );
        assert_eq!(
            LiteralPaths::typed_value(FieldType::String, &path(&["1"])),
            None
        );
    }
}
