//! The expression indexes of the payload fields a topic declares indexed: `(topic, <typed value>, id)`,
//! one per distinct expression (topics sharing a field share its index). The expression comes from
//! [`super::typed_value`], which the stats-api's queries use too, so a query on an indexed field compares
//! exactly the indexed expression.

use diesel::prelude::*;
use diesel_async::AsyncPgConnection;

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

/// The index's name: a hash of its expression, so that the same expression is found again whatever
/// topic declared it.
pub fn index_name(expression: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(expression.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("events_field_{hex}")
}

/// Creates the expression indexes of every indexed field of the catalogue that does not exist yet.
/// `CONCURRENTLY`, so a running system keeps writing while an index is built. Returns how many were
/// created.
pub async fn ensure_field_indexes(
    database_url: &str,
    catalogue: &crate::catalogue::Catalogue,
) -> Result<usize, diesel::result::Error> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};

    let mut expressions: Vec<String> = catalogue
        .topics()
        .flat_map(|topic| {
            topic
                .fields
                .fields()
                .filter_map(indexed_expression)
                .collect::<Vec<_>>()
        })
        .collect();
    expressions.sort();
    expressions.dedup();
    if expressions.is_empty() {
        return Ok(0);
    }
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
    let mut created = 0;
    for expression in expressions {
        let name = index_name(&expression);
        let exists: i64 = {
            #[derive(QueryableByName)]
            struct Count {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let rows: Vec<Count> = diesel_async::RunQueryDsl::load(
                diesel::sql_query("SELECT count(*) AS n FROM pg_indexes WHERE indexname = $1")
                    .bind::<diesel::sql_types::Text, _>(&name),
                &mut conn,
            )
            .await?;
            rows.first().map_or(0, |c| c.n)
        };
        if exists == 0 {
            conn.batch_execute(&format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON events (topic, {expression}, id)"
            ))
            .await?;
            tracing::info!(index = %name, %expression, "created field index");
            created += 1;
        }
    }
    Ok(created)
}
