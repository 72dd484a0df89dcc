//! `core::db::schema` matches the migrations: after migrating a fresh database, every table diesel
//! defines has exactly the columns diesel names, in order, with the types and nullability written below
//! (which mirror the `table!` definitions). A migration that changes a table fails here until the schema
//! file follows.

use diesel::pg::Pg;
use diesel::QueryDsl;
use tokio_postgres::NoTls;

use eventgate_core::db::schema::{
    alert_state, auto_indexed_fields, dead_letters, event_commits, event_counts, events,
    field_usage, topic_watermarks, writer_runs,
};

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
                ("schema_version", "smallint", false),
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
                ("event_id", "uuid", true),
                ("producer", "text", true),
                ("resolution", "text", true),
                ("resolved_at", TZ, true),
                ("resolved_by", "text", true),
                ("resolution_note", "text", true),
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
        (
            "topic_watermarks",
            diesel_columns!(topic_watermarks),
            vec![
                ("topic", "text", false),
                ("newest_event_at", TZ, false),
                ("stored_at", TZ, false),
            ],
        ),
        (
            "event_commits",
            diesel_columns!(event_commits),
            vec![
                ("topic", "text", false),
                ("xact_id", "bigint", false),
                ("oldest_received_at", TZ, false),
                ("newest_received_at", TZ, false),
                ("events", "integer", false),
                ("committed_at", TZ, false),
            ],
        ),
        (
            "event_counts",
            diesel_columns!(event_counts),
            vec![
                ("topic", "text", false),
                ("minute", TZ, false),
                ("xact_id", "bigint", false),
                ("events", "bigint", false),
            ],
        ),
        (
            "field_usage",
            diesel_columns!(field_usage),
            vec![
                ("topic", "text", false),
                ("field", "text", false),
                ("hour", TZ, false),
                ("uses", "bigint", false),
            ],
        ),
        (
            "auto_indexed_fields",
            diesel_columns!(auto_indexed_fields),
            vec![
                ("topic", "text", false),
                ("field", "text", false),
                ("chosen_at", TZ, false),
                ("ready_at", TZ, true),
                ("last_used", TZ, false),
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
            // The partitions of `events` are its storage, not tables of their own (db::partitions).
            "SELECT table_name::text FROM information_schema.tables t
             WHERE table_schema = 'public' AND table_name NOT LIKE '\\_\\_%'
               AND NOT EXISTS (SELECT FROM pg_class c WHERE c.relname = t.table_name AND c.relispartition)
             ORDER BY 1",
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
    let (name, owner) = empty_database(stack, "eg_empty_").await;
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

/// The migration that scopes idempotency to (id, topic, producer) carries a history over: a database
/// migrated up to the one before it, holding events and dead letters, is migrated the rest of the way;
/// every row is still there, unchanged, dead letters are classified, and from then on the same id is
/// another event for another producer or topic but still one event for the same producer and topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_producer_key_carries_existing_rows_over() {
    const KEYED_PER_PRODUCER: &str = "2025-02-01-000000_idempotency_per_producer";
    let stack = eventgate_test_support::stack().await;
    let (name, owner, applied) = migrated_until(stack, KEYED_PER_PRODUCER).await;
    assert_eq!(applied, 3);
    let db = admin(&stack.database_url("postgres", &name)).await;
    db.batch_execute(
        "INSERT INTO events (id, topic, received_at, producer, payload)
         SELECT ('0190a3b2-1c2d-7e3f-8a9b-' || lpad(n::text, 12, '0'))::uuid, 'audit.logs',
                '2025-01-15T10:00:00Z'::timestamptz + n * interval '1 second', 'alice',
                jsonb_build_object('n', n)
         FROM generate_series(1, 50) AS n;
         INSERT INTO dead_letters (topic, kafka_topic, kafka_partition, kafka_offset, raw, error) VALUES
           ('audit.logs', 'eventgate.audit.logs', 0, 1, 'x', 'message is not a valid event envelope: x'),
           ('audit.logs', 'eventgate.audit.logs', 0, 2, 'y', 'topic_mismatch: the envelope names …'),
           ('audit.logs', 'eventgate.audit.logs', 0, 3, 'z', 'database refused the event: …'),
           ('audit.logs', 'eventgate.audit.logs', 0, 4,
            convert_to('{\"id\":\"0190a3b2-1c2d-7e3f-8a9b-00000000abcd\",\"topic\":\"audit.logs\",\"producer\":\"alice\",\"payload\":{\"a\":\"\\u0000\"}}', 'UTF8'),
            'database refused the event: unsupported Unicode escape sequence');",
    )
    .await
    .expect("an old history");
    let snapshot = "SELECT string_agg(id::text || topic || received_at::text || producer || payload::text, ',' ORDER BY id) FROM events";
    let before: String = db.query_one(snapshot, &[]).await.expect("rows").get(0);

    let rest = eventgate_core::db::run_migrations(&owner)
        .await
        .expect("the rest migrates");
    assert!(rest >= 1, "the new migration ran");

    let after: String = db.query_one(snapshot, &[]).await.expect("rows").get(0);
    assert_eq!(after, before, "every event carried over unchanged");
    let key: Vec<String> = db
        .query(
            "SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = 'events_legacy'::regclass AND i.indisprimary
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[],
        )
        .await
        .expect("primary key")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        key,
        ["id", "topic", "producer"],
        "the old table, now the legacy partition, keeps its key"
    );
    let reasons: Vec<String> = db
        .query("SELECT reason FROM dead_letters ORDER BY kafka_offset", &[])
        .await
        .expect("reasons")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        reasons,
        ["undecodable", "topic_mismatch", "refused", "refused"]
    );
    // The event a parked envelope was, read from its bytes (a `\u0000` that jsonb refuses included);
    // bytes that are no envelope leave it unknown.
    let events: Vec<(Option<uuid::Uuid>, Option<String>)> = db
        .query(
            "SELECT event_id, producer FROM dead_letters ORDER BY kafka_offset",
            &[],
        )
        .await
        .expect("event keys")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let envelope = uuid::Uuid::parse_str("0190a3b2-1c2d-7e3f-8a9b-00000000abcd").expect("uuid");
    assert_eq!(
        events,
        [
            (None, None),
            (None, None),
            (None, None),
            (Some(envelope), Some("alice".to_owned()))
        ]
    );

    // The writer's role can still insert (the grants survived) under the new key.
    let writer = admin(&stack.database_url("eventgate_writer", &name)).await;
    let insert = "INSERT INTO events (id, topic, received_at, producer, payload)
                  VALUES ('0190a3b2-1c2d-7e3f-8a9b-000000000001', $1, now(), $2, '{}')";
    writer
        .execute(insert, &[&"audit.logs", &"bob"])
        .await
        .expect("another producer's event with a stored id");
    writer
        .execute(insert, &[&"web.events", &"alice"])
        .await
        .expect("the same producer's id on another topic");
    let again = writer
        .execute(insert, &[&"audit.logs", &"alice"])
        .await
        .expect_err("the same producer, topic and id once only");
    assert_eq!(
        again.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
    let reader = admin(&stack.database_url("eventgate_stats", &name)).await;
    let reasons = reader
        .query("SELECT reason FROM dead_letters", &[])
        .await
        .expect("the stats role reads the new column");
    assert_eq!(reasons.len(), 4);
}

/// A new empty database owned by `eventgate`: its name and the owner's URL.
async fn empty_database(stack: &eventgate_test_support::Stack, prefix: &str) -> (String, String) {
    let name = stack.unique_name(prefix);
    admin(&stack.database_url("postgres", "postgres"))
        .await
        .batch_execute(&format!("CREATE DATABASE {name} OWNER eventgate"))
        .await
        .expect("empty database");
    let owner = stack.database_url("eventgate", &name);
    (name, owner)
}

/// A database migrated up to (not including) the migration named `before`: its name, the owner's URL
/// and how many migrations were applied.
async fn migrated_until(
    stack: &eventgate_test_support::Stack,
    before: &'static str,
) -> (String, String, usize) {
    use diesel::migration::MigrationSource;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    use diesel_async::AsyncPgConnection;
    use diesel_migrations::MigrationHarness;

    let (name, owner) = empty_database(stack, "eg_upgrade_").await;
    let connection = eventgate_core::db::tls::diesel_connection(&owner)
        .await
        .expect("connect");
    let applied = tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(connection);
        let migrations = MigrationSource::<Pg>::migrations(&eventgate_core::db::MIGRATIONS)
            .expect("embedded migrations");
        // What `run_pending_migrations` does first: the table of applied migrations.
        diesel::migration::MigrationConnection::setup(&mut conn).expect("migrations table");
        let mut applied = 0;
        for migration in migrations {
            if migration.name().to_string().as_str() >= before {
                break;
            }
            conn.run_migration(&*migration).expect("an old migration");
            applied += 1;
        }
        applied
    })
    .await
    .expect("migration task");
    (name, owner, applied)
}

/// Upgrade in place to the partitioned history: an existing `events` table with events, with the bound
/// constraint validated beforehand as docs/OPERATIONS.md says, becomes the partition `events_legacy`
/// without a rewrite (the same file on disk) and keeps every row; new spans follow its bound; the
/// services' roles read and write through the partitioned table; and once every topic's retention has
/// passed its bound, the legacy partition is dropped whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_history_becomes_the_legacy_partition_without_a_rewrite() {
    use eventgate_core::catalogue::{Catalogue, Topic};
    use eventgate_core::db::partitions::{maintain, StoragePolicy};

    const PARTITIONED: &str = "2025-04-01-000000_partitioned_events";
    let stack = eventgate_test_support::stack().await;
    let (name, owner, _) = migrated_until(stack, PARTITIONED).await;
    let db = admin(&stack.database_url("eventgate", &name)).await;
    let bound = time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT)
        + time::Duration::days(3);
    db.batch_execute(
        "INSERT INTO events (id, topic, received_at, producer, payload)
         SELECT gen_random_uuid(), (ARRAY['audit.logs', 'web.events'])[1 + n % 2],
                now() - n * interval '1 minute', 'alice', jsonb_build_object('n', n)
         FROM generate_series(1, 1000) AS n;",
    )
    .await
    .expect("an old history");
    // What the operator runs beforehand, while the writers write (docs/OPERATIONS.md).
    db.execute(
        &format!(
            "ALTER TABLE events ADD CONSTRAINT events_legacy_bound CHECK (received_at < '{}') NOT VALID",
            bound
                .format(&time::format_description::well_known::Rfc3339)
                .expect("format")
        ),
        &[],
    )
    .await
    .expect("bound");
    db.batch_execute("ALTER TABLE events VALIDATE CONSTRAINT events_legacy_bound")
        .await
        .expect("validate");
    let file = "SELECT pg_relation_filenode('events')::bigint";
    let before_file: i64 = db.query_one(file, &[]).await.expect("filenode").get(0);
    let snapshot = "SELECT count(*), string_agg(id::text || topic || payload::text, ',' ORDER BY id) FROM events";
    let before = db.query_one(snapshot, &[]).await.expect("snapshot");
    let (count_before, rows_before): (i64, String) = (before.get(0), before.get(1));

    eventgate_core::db::run_migrations(&owner)
        .await
        .expect("the rest migrates");

    let kind: String = db
        .query_one(
            "SELECT relkind::text FROM pg_class WHERE relname = 'events'",
            &[],
        )
        .await
        .expect("relkind")
        .get(0);
    assert_eq!(kind, "p", "events is partitioned");
    let legacy_file: i64 = db
        .query_one("SELECT pg_relation_filenode('events_legacy')::bigint", &[])
        .await
        .expect("filenode")
        .get(0);
    assert_eq!(legacy_file, before_file, "the old table was not rewritten");
    let after = db.query_one(snapshot, &[]).await.expect("snapshot");
    assert_eq!(
        (after.get::<_, i64>(0), after.get::<_, String>(1)),
        (count_before, rows_before),
        "every event carried over"
    );
    let upper: time::OffsetDateTime = db
        .query_one(
            "SELECT (regexp_match(pg_get_expr(relpartbound, oid), 'TO \\(''([^'']*)''\\)'))[1]::timestamptz
             FROM pg_class WHERE relname = 'events_legacy'",
            &[],
        )
        .await
        .expect("bound")
        .get(0);
    assert_eq!(
        upper, bound,
        "the legacy partition ends at the validated bound"
    );

    // The roles go on reading and writing through the partitioned table.
    let writer = admin(&stack.database_url("eventgate_writer", &name)).await;
    writer
        .execute(
            "INSERT INTO events (id, topic, received_at, producer, payload)
             VALUES (gen_random_uuid(), 'audit.logs', now(), 'bob', '{}')",
            &[],
        )
        .await
        .expect("the writer's role inserts");
    let reader = admin(&stack.database_url("eventgate_stats", &name)).await;
    let readable: i64 = reader
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("the stats role reads")
        .get(0);
    assert_eq!(readable, count_before + 1);

    // The maintenance starts the spans at the bound, whatever its clock says about today.
    let topics = |retention: &str| {
        Catalogue::from_topics(["audit.logs", "web.events"].map(|name| {
            Topic::from_schema(
                name,
                serde_json::json!({"type": "object", "x-eventgate": {"retention": retention}}),
            )
            .expect("topic")
        }))
    };
    let storage = eventgate_core::config::StorageConfig {
        retention: "1d".parse().expect("1d"),
        ..Default::default()
    };
    let policy = StoragePolicy::new(&topics("1d"), &storage);
    let run = maintain(&db, &policy, time::OffsetDateTime::now_utc())
        .await
        .expect("maintenance")
        .expect("not locked");
    assert!(
        run.report.created.iter().any(|name| name
            == &format!(
                "events_p{:04}{:02}{:02}",
                bound.year(),
                u8::from(bound.month()),
                bound.day()
            )),
        "{:?}",
        run.report
    );
    assert!(
        run.report.dropped.is_empty(),
        "nothing expired yet: {:?}",
        run.report
    );
    // Two days after the bound every topic's day of retention has passed: the legacy history goes whole.
    let run = maintain(&db, &policy, bound + time::Duration::days(2))
        .await
        .expect("maintenance")
        .expect("not locked");
    assert!(
        run.report.dropped.contains(&"events_legacy".to_owned()),
        "{:?}",
        run.report
    );
    let left: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
}
