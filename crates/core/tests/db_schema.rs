//! `core::db::schema` matches the migrations: after migrating a fresh database, every table diesel
//! defines has exactly the columns diesel names, in order, with the types and nullability written below
//! (which mirror the `table!` definitions). A migration that changes a table fails here until the schema
//! file follows.

use diesel::pg::Pg;
use diesel::QueryDsl;
use tokio_postgres::NoTls;

use eventgate_core::db::schema::{alert_state, dead_letters, events, writer_runs};

/// The column names of a diesel table, as diesel writes them in a `SELECT` of all its columns.
macro_rules! diesel_columns {
    ($table:ident) => {
        column_names(
            &diesel::debug_query::<Pg, _>(&$table::table.select($table::all_columns)).to_string(),
        )
    };
}

fn column_names(select: &str) -> Vec<String> {
    let list = select
        .trim_start_matches("SELECT ")
        .split(" FROM ")
        .next()
        .unwrap_or_default();
    list.split(", ")
        .map(|c| {
            c.rsplit('.')
                .next()
                .unwrap_or(c)
                .trim_matches('"')
                .to_owned()
        })
        .collect()
}

/// `(table, [(column, type as information_schema names it, nullable)])`, as the `table!` definitions say.
fn declared() -> Vec<(
    &'static str,
    Vec<String>,
    Vec<(&'static str, &'static str, bool)>,
)> {
    const TZ: &str = "timestamp with time zone";
    vec![
        (
            "events",
            diesel_columns!(events),
            vec![
                ("id", "uuid", false),
                ("topic", "text", false),
                ("received_at", TZ, false),
                ("producer", "text", false),
                ("payload", "jsonb", false),
            ],
        ),
        (
            "dead_letters",
            diesel_columns!(dead_letters),
            vec![
                ("id", "bigint", false),
                ("topic", "text", true),
                ("kafka_topic", "text", false),
                ("kafka_partition", "integer", false),
                ("kafka_offset", "bigint", false),
                ("raw", "bytea", true),
                ("error", "text", false),
                ("created_at", TZ, false),
            ],
        ),
        (
            "writer_runs",
            diesel_columns!(writer_runs),
            vec![
                ("id", "bigint", false),
                ("group_id", "text", false),
                ("instance", "text", false),
                ("started_at", TZ, false),
                ("last_seen", TZ, false),
                ("stopped_at", TZ, true),
            ],
        ),
        (
            "alert_state",
            diesel_columns!(alert_state),
            vec![
                ("group_id", "text", false),
                ("kind", "text", false),
                ("active", "boolean", false),
                ("since", TZ, true),
                ("last_alert", TZ, true),
            ],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diesel_schema_matches_the_migrated_database() {
    let database = eventgate_test_support::stack().await.fresh_database().await;
    let (client, connection) = tokio_postgres::connect(&database.admin_url, NoTls)
        .await
        .expect("connection");
    tokio::spawn(connection);
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_name NOT LIKE '\\_\\_%' ORDER BY 1",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut declared_tables: Vec<&str> = declared().iter().map(|(t, _, _)| *t).collect();
    declared_tables.sort_unstable();
    assert_eq!(
        tables, declared_tables,
        "every table has a diesel definition"
    );

    for (table, names, columns) in declared() {
        let written: Vec<&str> = columns.iter().map(|(c, _, _)| *c).collect();
        assert_eq!(
            names, written,
            "{table}: the table! columns and this test's list"
        );
        let actual: Vec<(String, String, bool)> = client
            .query(
                "SELECT column_name::text, data_type::text, is_nullable = 'YES'
                 FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                &[&table],
            )
            .await
            .expect("columns")
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        let expected: Vec<(String, String, bool)> = columns
            .iter()
            .map(|(c, t, n)| ((*c).to_owned(), (*t).to_owned(), *n))
            .collect();
        assert_eq!(actual, expected, "{table}: migrated columns");
    }
}
