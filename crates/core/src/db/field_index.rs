//! The expression indexes of the payload fields a topic declares indexed: `(topic, <typed value>, id)`
//! on each of the topic's partitions, built by the maintenance ([`super::partitions`]). The expression comes from
//! [`super::typed_value`], which the stats-api's queries use too, so a query on an indexed field compares
//! exactly the indexed expression.

use super::typed_value::LiteralPaths;
use crate::query::{FieldDef, FieldSource, FieldType};

/// The SQL of an indexed field's typed value with its path written literally, or `None` when the field
/// gets no index (not a payload field, not declared indexed, a path that is not plain identifiers, or a
/// type without an index: uuid, date-time, other).
pub fn indexed_expression(field: &FieldDef) -> Option<String> {
    let FieldSource::Payload(path) = &field.source else {
        return None;
    };
    if !field.indexed {
        return None;
    }
    match field.ty {
        FieldType::String
        | FieldType::Integer
        | FieldType::Number
        | FieldType::EpochMillis
        | FieldType::Boolean => LiteralPaths::typed_value(field.ty, path),
        FieldType::Uuid | FieldType::DateTime | FieldType::Other => None,
    }
}

/// A hash of an index's expression (16 hex digits), so that the same expression is found again
/// whatever topic declared it: the `f<hash>` of a partition's field index (`<partition>_f<hash>`), and
/// of the field indexes before partitions, `events_field_<hash>`, which the migration kept as
/// `events_legacy_f<hash>`.
pub fn expression_hash(expression: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(expression.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
