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

/// Creates the expression indexes of every indexed field of the catalogue that does not exist yet, and
/// builds again those whose earlier build failed (a `CREATE INDEX CONCURRENTLY` that was interrupted
/// leaves an INVALID index: never used by queries, still updated by every insert). `CONCURRENTLY`, so a
/// running system keeps writing while an index is built; under the schema lock
/// ([`super::SCHEMA_LOCK_KEY`]), so writers starting together do not build the same index twice.
/// Returns how many indexes were built.
pub async fn ensure_field_indexes(
    database_url: &str,
    catalogue: &crate::catalogue::Catalogue,
) -> Result<usize, diesel::result::Error> {
    use diesel_async::SimpleAsyncConnection;

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
    let mut conn = super::tls::diesel_connection(database_url)
        .await
        .map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
    // Released when the connection closes.
    conn.batch_execute(&format!(
        "SELECT pg_advisory_lock({})",
        super::SCHEMA_LOCK_KEY
    ))
    .await?;
    let mut built = 0;
    for expression in expressions {
        let name = index_name(&expression);
        match index_state(&mut conn, &name).await? {
            IndexState::Valid => continue,
            IndexState::Invalid => {
                tracing::warn!(index = %name, "field index is invalid (an earlier build failed): building it again");
                conn.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                    .await?;
            }
            IndexState::Missing => {}
        }
        conn.batch_execute(&format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON events (topic, {expression}, id)"
        ))
        .await?;
        tracing::info!(index = %name, %expression, "built field index");
        built += 1;
    }
    Ok(built)
}

enum IndexState {
    Missing,
    Valid,
    Invalid,
}

async fn index_state(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> Result<IndexState, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        valid: bool,
    }
    let rows: Vec<Row> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT i.indisvalid AS valid FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND n.nspname = current_schema()",
        )
        .bind::<diesel::sql_types::Text, _>(name),
        conn,
    )
    .await?;
    Ok(match rows.first() {
        None => IndexState::Missing,
        Some(row) if row.valid => IndexState::Valid,
        Some(_) => IndexState::Invalid,
    })
}
