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

/// A column as `information_schema` describes it: name, type, nullable.
type Column = (&'static str, &'static str, bool);

/// `(table, diesel's column names, the columns)`, as the `table!` definitions say.
fn declared() -> Vec<(&'static str, Vec<String>, Vec<Column>)> {
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
                ("reason", "text", false),
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

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connection");
    tokio::spawn(connection);
    client
}

/// Writers that start together each migrate: under the schema lock they take turns, and every
/// migration is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_started_together_take_turns() {
    let stack = eventgate_test_support::stack().await;
    let name = stack.unique_name("eg_empty_");
    admin(&stack.database_url("postgres", "postgres"))
        .await
        .batch_execute(&format!("CREATE DATABASE {name} OWNER eventgate"))
        .await
        .expect("empty database");
    let owner = stack.database_url("eventgate", &name);
    let (a, b, c) = tokio::join!(
        eventgate_core::db::run_migrations(&owner),
        eventgate_core::db::run_migrations(&owner),
        eventgate_core::db::run_migrations(&owner),
    );
    let applied = [
        a.expect("first migrates"),
        b.expect("second migrates"),
        c.expect("third migrates"),
    ];
    let total =
        diesel::migration::MigrationSource::<Pg>::migrations(&eventgate_core::db::MIGRATIONS)
            .expect("embedded migrations")
            .len();
    assert_eq!(applied.iter().sum::<usize>(), total, "{applied:?}");
    assert!(
        applied.contains(&total),
        "one of them applied all: {applied:?}"
    );
    let db = admin(&stack.database_url("postgres", &name)).await;
    let rows: i64 = db
        .query_one("SELECT count(*) FROM __diesel_schema_migrations", &[])
        .await
        .expect("migrations table")
        .get(0);
    assert_eq!(rows, total as i64);
}

/// A field index whose build failed (INVALID) is found and built again; a valid one is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_field_indexes_are_built_again() {
    use eventgate_core::catalogue::{Catalogue, Topic};
    let database = eventgate_test_support::stack().await.fresh_database().await;
    let topic = Topic::from_schema(
        "t.indexed",
        serde_json::json!({
            "type": "object",
            "properties": {"app": {"type": "string"}},
            "x-eventgate": {"indexed_fields": ["app"]}
        }),
    )
    .expect("topic");
    let catalogue = Catalogue::from_topics([topic]);
    let expression = catalogue
        .topics()
        .flat_map(|t| t.fields.fields())
        .find_map(eventgate_core::db::indexed_expression)
        .expect("an indexed field");
    let name = eventgate_core::db::field_index::index_name(&expression);
    let ensure = || eventgate_core::db::ensure_field_indexes(&database.writer_url, &catalogue);

    assert_eq!(ensure().await.expect("first build"), 1);
    assert_eq!(ensure().await.expect("nothing to do"), 0);

    let db = admin(&database.admin_url).await;
    let is_valid = || async {
        db.query_one(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE c.relname = $1",
            &[&name],
        )
        .await
        .expect("the index")
        .get::<_, bool>(0)
    };
    // What an interrupted CREATE INDEX CONCURRENTLY leaves behind.
    db.execute(
        "UPDATE pg_index SET indisvalid = false
         WHERE indexrelid = (SELECT oid FROM pg_class WHERE relname = $1)",
        &[&name],
    )
    .await
    .expect("mark invalid");
    assert!(!is_valid().await);

    assert_eq!(
        ensure().await.expect("rebuild"),
        1,
        "the invalid index is built again"
    );
    assert!(is_valid().await);
}
