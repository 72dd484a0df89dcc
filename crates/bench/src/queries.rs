//! Phase 4: queries on a large history. The history is generated straight into `events` (`INSERT ...
//! SELECT generate_series` in chunks of a million, with the secondary indexes dropped during the load and
//! rebuilt after it, then `VACUUM (ANALYZE)` so no autovacuum runs under the measurements): pipeline runs
//! of `public.cps.za.runs`, one every 250 ms of `received_at`, ending now.
//!
//! Then, through the stats API, one request at a time: the first page; a page at depth ≥ 1M with a cursor
//! (built for the row at that depth found with SQL, with `eventgate_core::query` and the stats-api's
//! secret: walking a million rows page by page would take longer than the whole run); a selective
//! payload-field equality; a range on a time field; an `_in` filter; a two-field sort. And, for
//! comparison, the same deep page with OFFSET, as raw SQL (no HTTP: its cost is all in the database).
//! Then the equality on a field the topic did not declare indexed once more, after the stats-api could
//! record its use and the maintenance ran (auto-indexes).
//!
//! The generated history also serves the aggregates, exports and explorer phases ([`run`] runs them on
//! it, with the same stats-api); the rollups (`event_counts`) are filled for it as the writer would.

use std::time::Instant;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use eventgate_core::envelope::Event;
use eventgate_core::query::{CursorKey, QueryLimits, QueryRequest};

use crate::cpu::{self, Usage};
use crate::load::{ms, post_for_json, round2, Latency};
use crate::report::Results;
use crate::services::{Bench, Kind, Service, DATABASE, USER};
use crate::{aggregates, db, explorer, exports, Phase, Sizes};

pub const RUNS: &str = "public.cps.za.runs";
const PHASE: &str = "queries";
const CHUNK: u64 = 1_000_000;
/// Spacing of the generated events in `received_at`.
const SPACING_MS: i64 = 250;
const PAGE: u64 = 50;
/// Distinct tenants (equality filter: history / TENANTS events each) and applications.
const TENANTS: u64 = 10_000;
const APPS: u64 = 1_000;
/// Deep pages start at depth, depth + 1000, … (that many cursors, used in turn).
const DEEP_CURSORS: u64 = 10;

#[derive(Debug, Clone, Serialize)]
pub struct QueryResults {
    pub history_rows: u64,
    pub deep_depth: u64,
    pub generate_s: f64,
    pub table_mb: f64,
    pub indexes_mb: f64,
    pub first_page: Latency,
    pub deep_page: Latency,
    pub offset_deep: Latency,
    pub equality: Latency,
    pub time_range: Latency,
    pub in_filter: Latency,
    /// The two-field sort before the service indexed it, and after (with `unindexed_eq`).
    pub two_field_sort_before: Latency,
    pub two_field_sort: Latency,
    /// The equality on `tenant_id` (not declared indexed) again, after the stats-api had time to record
    /// its use and the maintenance ran: what auto-indexes make of it (`equality` is the same shape
    /// before).
    pub unindexed_eq: Latency,
    pub auto_index: AutoIndex,
    /// deep page p99 ÷ first page p99.
    pub deep_first_ratio: f64,
    pub cpu: Usage,
    /// The history's partitions of the topic (one per day).
    pub partitions: u64,
    /// Removing one day of the topic's events: by dropping its partition, and by a `DELETE` of the same
    /// rows (rolled back), for contrast.
    pub drop_day: Option<Removal>,
    pub delete_day: Option<Removal>,
}

/// The maintenance run between the two measurements of the unindexed equality.
#[derive(Debug, Clone, Serialize)]
pub struct AutoIndex {
    /// Indexes of `events`' partitions on `tenant_id` before and after the maintenance.
    pub indexes_before: i64,
    pub indexes_after: i64,
    pub maintenance_s: f64,
    /// Seconds waited before and after the maintenance.
    pub wait_s: f64,
}

/// What removing one day of events cost.
#[derive(Debug, Clone, Serialize)]
pub struct Removal {
    pub events: u64,
    pub seconds: f64,
    pub wal_bytes: i64,
}

/// The stats-api's statement timeout in this phase: aggregates scan the whole history, beyond the
/// configured 5 s at 10 M events, and are measured to the end (the timeout does not change speed).
const STATEMENT_TIMEOUT_MS: &str = "600000";

/// Generates the history and runs the phases measured on it (`queries`, `aggregates`, `exports`,
/// `explorer`, in the order given) with one stats-api; each one's results are stored as it ends. The
/// queries' day removal runs last: the day is gone after.
pub async fn run(
    bench: &Bench,
    sizes: &Sizes,
    phases: &[Phase],
    results: &mut Results,
) -> anyhow::Result<()> {
    let owner = db::connect(&bench.owner_url()).await?;
    let started = Instant::now();
    let base_ms = generate_history(bench, &owner, sizes.history_rows).await?;
    let generate_s = round2(started.elapsed().as_secs_f64());
    let sizes_row = owner
        .query_one(
            "SELECT sum(pg_table_size(relid))::float8 / 1048576, sum(pg_indexes_size(relid))::float8 / 1048576 \
             FROM pg_partition_tree('events') WHERE isleaf",
            &[],
        )
        .await?;
    let (table_mb, indexes_mb): (f64, f64) = (sizes_row.get(0), sizes_row.get(1));

    let stats = bench
        .spawn_with(
            Kind::Stats,
            PHASE,
            &[(
                "EVENTGATE_STATS__STATEMENT_TIMEOUT_MS",
                STATEMENT_TIMEOUT_MS.to_owned(),
            )],
        )
        .await?;
    let outcome = on_history(bench, sizes, phases, &stats, base_ms, results).await;
    bench.stop(stats).await?;
    if let Some(queries) = results.queries.as_mut() {
        queries.generate_s = generate_s;
        queries.table_mb = table_mb.round();
        queries.indexes_mb = indexes_mb.round();
    }
    outcome?;
    if let Some(queries) = results.queries.as_mut() {
        let (partitions, delete_day, drop_day) = remove_one_day(&owner).await?;
        queries.partitions = partitions;
        queries.delete_day = delete_day;
        queries.drop_day = drop_day;
    }
    Ok(())
}

async fn on_history(
    bench: &Bench,
    sizes: &Sizes,
    phases: &[Phase],
    stats: &Service,
    base_ms: i64,
    results: &mut Results,
) -> anyhow::Result<()> {
    let watched = bench.watched(&[stats]);
    for phase in phases {
        let started = Instant::now();
        match phase {
            Phase::Queries => {
                results.queries = Some(measure(bench, sizes, &stats.url, base_ms, &watched).await?);
            }
            Phase::Aggregates => {
                results.aggregates =
                    Some(aggregates::run(bench, sizes, &stats.url, &watched).await?);
            }
            Phase::Exports => {
                results.exports = Some(
                    exports::run(
                        bench, sizes, &stats.url, stats.pid, base_ms, SPACING_MS, &watched,
                    )
                    .await?,
                );
            }
            Phase::Explorer => {
                results.explorer = Some(explorer::run(bench, sizes, &stats.url).await);
            }
            Phase::Ingest | Phase::E2e | Phase::Writer => continue,
        }
        eprintln!(
            "bench: {phase:?} on the history done in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Removes the second-oldest day of the history (the oldest may be partly filled) twice: first with a
/// `DELETE` of its rows, rolled back, then by dropping its partition, as retention does. Each is timed
/// and its WAL measured (`pg_current_wal_lsn()` before and after). Runs last: the day is gone after.
async fn remove_one_day(
    client: &tokio_postgres::Client,
) -> anyhow::Result<(u64, Option<Removal>, Option<Removal>)> {
    // The days' partitions that hold events, oldest first, by the planner's count (the history was
    // just VACUUM ANALYZEd): one exact count, of the day removed, instead of one per partition.
    let with_rows: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_partition_tree('events') t \
             JOIN pg_class c ON c.oid = t.relid \
             WHERE t.isleaf AND c.relname LIKE 'events\\_p%' AND c.relname NOT LIKE '%\\_default' \
               AND c.reltuples > 0 \
             ORDER BY c.relname",
            &[],
        )
        .await
        .context("listing the partitions")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let partitions = with_rows.len() as u64;
    let Some(leaf) = with_rows.get(1).cloned() else {
        return Ok((partitions, None, None));
    };
    let events: i64 = client
        .query_one(&format!("SELECT count(*) FROM {leaf}"), &[])
        .await
        .with_context(|| format!("counting {leaf}"))?
        .get(0);
    let events = u64::try_from(events)?;
    let wal = "SELECT pg_current_wal_lsn()::text";
    let lsn = |row: tokio_postgres::Row| row.get::<_, String>(0);
    let wal_since = |from: String| async move {
        client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint",
                &[&from],
            )
            .await
            .map(|row| row.get::<_, i64>(0))
    };

    let before = lsn(client.query_one(wal, &[]).await?);
    let started = Instant::now();
    client.batch_execute("BEGIN").await?;
    client
        .execute(&format!("DELETE FROM {leaf}"), &[])
        .await
        .context("DELETE of one day")?;
    // The WAL of the rows deleted is written before the commit record; a rollback keeps the history.
    let delete_wal = wal_since(before).await?;
    client.batch_execute("ROLLBACK").await?;
    let delete_day = Removal {
        events,
        seconds: round2(started.elapsed().as_secs_f64()),
        wal_bytes: delete_wal,
    };

    let before = lsn(client.query_one(wal, &[]).await?);
    let started = Instant::now();
    client
        .batch_execute(&format!("DROP TABLE {leaf}"))
        .await
        .context("dropping one day's partition")?;
    let drop_day = Removal {
        events,
        seconds: round2(started.elapsed().as_secs_f64().max(0.001)),
        wal_bytes: wal_since(before).await?,
    };
    eprintln!(
        "bench: queries: one day of {events} events: DELETE {:.2} s, {} bytes of WAL; DROP {:.3} s, {} bytes",
        delete_day.seconds, delete_day.wal_bytes, drop_day.seconds, drop_day.wal_bytes
    );
    Ok((partitions, Some(delete_day), Some(drop_day)))
}

/// Bytes on disk per generated event: table ≈ 0.57 KB and indexes ≈ 0.47 KB (measured at 10 M), plus
/// room for the WAL of the load and of the index builds.
const BYTES_PER_EVENT: u64 = 1_200;
const WAL_ROOM_BYTES: u64 = 2 << 30;

/// Fails early, naming the numbers, when the cluster's disk cannot hold the history (when the cluster
/// runs on this machine and `df` can tell). Called before the first phase, so a run does not fail after
/// minutes of other measurements.
pub async fn check_disk_space(admin_url: &str, rows: u64) -> anyhow::Result<()> {
    let admin = db::connect(admin_url).await?;
    let Ok(row) = admin.query_one("SHOW data_directory", &[]).await else {
        return Ok(());
    };
    let directory: String = row.get(0);
    let Some(available) = available_bytes(&directory).await else {
        return Ok(());
    };
    let needed = rows * BYTES_PER_EVENT + WAL_ROOM_BYTES;
    anyhow::ensure!(
        available >= needed,
        "a history of {rows} events needs about {:.1} GB free next to the PostgreSQL data directory \
         ({directory}); {:.1} GB are: free some, or give a smaller --history-rows",
        needed as f64 / 1e9,
        available as f64 / 1e9
    );
    Ok(())
}

/// Free bytes on the filesystem of `path`, from `df -Pk` (None when it cannot tell).
async fn available_bytes(path: &str) -> Option<u64> {
    let output = tokio::process::Command::new("df")
        .args(["-Pk", path])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // Filesystem 1024-blocks Used Available Capacity Mounted-on
    let kb: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Fills `events` with `rows` generated runs; returns the epoch-ms of event 0.
async fn generate_history(
    bench: &Bench,
    client: &tokio_postgres::Client,
    rows: u64,
) -> anyhow::Result<i64> {
    db::empty_events(client, &["dead_letters"]).await?;
    let now_ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let base_ms = i64::try_from(now_ms)? - rows as i64 * SPACING_MS;
    // The history's partitions first, so its rows go straight into them (not through events_before).
    let since = OffsetDateTime::from_unix_timestamp(base_ms / 1000 - 3600)?;
    let policy = eventgate_core::db::StoragePolicy::new(
        &bench.catalogue,
        &eventgate_core::config::StorageConfig::default(),
    );
    eventgate_core::db::partitions::maintain_covering(&bench.owner_url(), &policy, since)
        .await
        .context("creating the history's partitions")?;
    // Secondary indexes (not the partitions' unique keys) are built after the load: much faster than
    // maintaining them row by row. The partitioned table's own index is read back from the catalogue
    // (so it stays the migration's); the partitions' GIN and field indexes are built again by the
    // maintenance after the load.
    let indexes: Vec<(String, String)> = client
        .query(
            "SELECT c.relname::text, replace(pg_get_indexdef(x.indexrelid), ' ON ONLY ', ' ON ') \
             FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
             WHERE x.indrelid = 'events'::regclass",
            &[],
        )
        .await
        .context("reading the index definitions")?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let per_partition: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_partition_tree('events') t \
             JOIN pg_index x ON x.indrelid = t.relid JOIN pg_class c ON c.oid = x.indexrelid \
             WHERE t.isleaf AND (c.relname LIKE '%\\_gin' OR c.relname ~ '_f[0-9a-f]{16}$')",
            &[],
        )
        .await
        .context("reading the partitions' indexes")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for name in indexes.iter().map(|(name, _)| name).chain(&per_partition) {
        client
            .batch_execute(&format!("DROP INDEX \"{name}\""))
            .await
            .with_context(|| format!("dropping index {name}"))?;
    }
    let insert = client
        .prepare(&format!(
            "INSERT INTO events (id, topic, received_at, producer, payload) \
             SELECT g.id, '{RUNS}', to_timestamp(g.ms / 1000.0), '{USER}', jsonb_build_object( \
                 'event_id', g.id::text, \
                 'run_id', g.i, \
                 'tenant_id', 'tenant-' || (g.i * 13) % {TENANTS}, \
                 'source_app', 'app-' || lpad(((g.i * 7) % {APPS})::text, 4, '0'), \
                 'source_app_version', '1.' || g.i % 20, \
                 'environment', (ARRAY['dev', 'uat', 'preprod', 'prod'])[1 + g.i % 4], \
                 'timestamp_start', g.ts, \
                 'timestamp_end', g.ts + 1000 + g.i % 60000, \
                 'jobs', jsonb_build_array(jsonb_build_object( \
                     'catalog_id', 'job-' || g.i % 50, \
                     'status', (ARRAY['succeeded', 'failed', 'killed', 'skipped'])[1 + g.i % 4], \
                     'timestamp_start', g.ts, \
                     'timestamp_end', g.ts + 500)), \
                 'additional_info', jsonb_build_object( \
                     'region', (ARRAY['eu', 'us', 'ap'])[1 + g.i % 3], \
                     'owner', 'team-' || g.i % 40)) \
             FROM ( \
                 SELECT s.i, s.ms, s.ms - 5000 - (s.i * 7919) % 600000 AS ts, \
                        (lpad(to_hex(s.ms), 12, '0') || '7' || lpad(to_hex(s.i % 4096), 3, '0') \
                         || '8' || lpad(to_hex(s.i), 15, '0'))::uuid AS id \
                 FROM (SELECT i, $1::bigint + i * {SPACING_MS} AS ms \
                       FROM generate_series($2::bigint, $3::bigint) AS i) AS s \
             ) AS g"
        ))
        .await
        .context("preparing the history insert")?;
    let started = Instant::now();
    let mut lo = 0u64;
    while lo < rows {
        let hi = (lo + CHUNK).min(rows) - 1;
        client
            .execute(&insert, &[&base_ms, &(lo as i64), &(hi as i64)])
            .await
            .with_context(|| format!("generating events {lo}..={hi}"))?;
        lo = hi + 1;
        eprintln!(
            "bench: queries: {lo} of {rows} events generated ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    client
        .batch_execute("SET maintenance_work_mem = '1GB'")
        .await?;
    for (name, definition) in &indexes {
        let t = Instant::now();
        client
            .batch_execute(definition)
            .await
            .with_context(|| format!("rebuilding index {name}"))?;
        eprintln!(
            "bench: queries: index {name} rebuilt in {:.0} s",
            t.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    eventgate_core::db::maintain_now(&bench.owner_url(), &policy)
        .await
        .context("building the partitions' indexes")?;
    eprintln!(
        "bench: queries: the partitions' indexes built in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    // The writer keeps the rollups in the same transaction as the rows; the history bypasses it.
    let t = Instant::now();
    if let Some(rollups) = db::fill_rollups(client).await? {
        eprintln!(
            "bench: queries: {rollups} rollup rows (events per topic and minute) in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        client
            .batch_execute("VACUUM (ANALYZE) event_counts")
            .await
            .context("VACUUM (ANALYZE) event_counts")?;
    }
    let t = Instant::now();
    client
        .batch_execute("VACUUM (ANALYZE) events")
        .await
        .context("VACUUM (ANALYZE) events")?;
    eprintln!(
        "bench: queries: VACUUM (ANALYZE) in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(base_ms)
}

async fn measure(
    bench: &Bench,
    sizes: &Sizes,
    stats_url: &str,
    base_ms: i64,
    watched: &[cpu::Watched],
) -> anyhow::Result<QueryResults> {
    let url = format!("{stats_url}/stats/{RUNS}");
    let token = eventgate_test_support::token(USER);
    let n = sizes.query_iterations;
    let (cursors, expected_first) = deep_cursors(bench, sizes.deep_depth).await?;
    let span_ms = sizes.history_rows as i64 * SPACING_MS;

    let before = cpu::snapshot(watched);
    let first_page = time_queries(
        bench,
        &url,
        &token,
        n,
        "first page",
        |_| json!({"limit": PAGE}),
    )
    .await?;
    // The deep page must be the page that follows the row at depth, or the figure means nothing.
    let (status, answer) = post_for_json(
        &bench.http,
        &url,
        &token,
        Bytes::from(json!({"limit": PAGE, "cursor": cursors[0]}).to_string()),
    )
    .await?;
    anyhow::ensure!(
        status == 200 && answer["data"][0]["id"].as_str() == Some(expected_first.as_str()),
        "the deep page does not start after the row at depth {}: {status}, first id {} (expected {expected_first})",
        sizes.deep_depth,
        answer["data"][0]["id"]
    );
    let deep_page = time_queries(
        bench,
        &url,
        &token,
        n,
        "deep page (cursor)",
        |i| json!({"limit": PAGE, "cursor": cursors[i % cursors.len()]}),
    )
    .await?;
    // `tenant_id` is not among the topic's indexed fields: an analyst's filter the service may learn.
    let equality = time_queries(bench, &url, &token, n, "equality (unindexed)", |i| {
        json!({"filter": {"tenant_id": format!("tenant-{}", (i as u64 * 37) % TENANTS)}, "limit": PAGE})
    })
    .await?;
    let time_range = time_queries(bench, &url, &token, n, "time range", |i| {
        // One hour of runs, somewhere in the history.
        let from = base_ms + (i as i64 * 7_919_000) % (span_ms - 3_600_000).max(1);
        json!({"filter": {"timestamp_start_between": [from, from + 3_600_000]}, "sort": ["-timestamp_start"], "limit": PAGE})
    })
    .await?;
    let in_filter = time_queries(bench, &url, &token, n, "_in", |i| {
        let apps: Vec<String> = (0..5)
            .map(|k| format!("app-{:04}", (i as u64 * 5 + k * 199) % APPS))
            .collect();
        json!({"filter": {"source_app_in": apps}, "limit": PAGE})
    })
    .await?;
    let two_field_sort = time_queries(
        bench,
        &url,
        &token,
        n,
        "two-field sort",
        |_| json!({"sort": ["source_app", "-timestamp_start"], "limit": PAGE}),
    )
    .await?;
    let after = cpu::snapshot(watched);
    let offset_deep = offset_pages(bench, sizes).await?;
    let (unindexed_eq, two_field_sort_after, auto_index) =
        unindexed_again(bench, sizes, &url, &token).await?;

    Ok(QueryResults {
        history_rows: sizes.history_rows,
        deep_depth: sizes.deep_depth,
        generate_s: 0.0,
        table_mb: 0.0,
        indexes_mb: 0.0,
        deep_first_ratio: round2(deep_page.p99_ms / first_page.p99_ms.max(0.01)),
        first_page,
        deep_page,
        offset_deep,
        equality,
        time_range,
        in_filter,
        two_field_sort_before: two_field_sort,
        two_field_sort: two_field_sort_after,
        unindexed_eq,
        auto_index,
        cpu: cpu::usage(&before, &after),
        partitions: 0,
        drop_day: None,
        delete_day: None,
    })
}

/// The unindexed equality again, once the service could have indexed it: a wait for the stats-api to
/// flush what analysts filtered by (every `stats.field_usage_flush_ms`, 10 s), the maintenance (as the
/// writers run it every 5 minutes), a wait for the stats-api to re-read the auto-indexed fields (every
/// `stats.auto_index_refresh_ms`, 10 s), then the same number of requests for other tenants, and the
/// two-field sort again (the service counts multi-key sorts too and gives them a composite index).
async fn unindexed_again(
    bench: &Bench,
    sizes: &Sizes,
    url: &str,
    token: &str,
) -> anyhow::Result<(Latency, Latency, AutoIndex)> {
    let owner = db::connect(&bench.owner_url()).await?;
    let indexes = || async {
        db::count(
            &owner,
            "SELECT count(*) FROM pg_partition_tree('events') t JOIN pg_index x ON x.indrelid = t.relid \
             WHERE t.isleaf AND pg_get_indexdef(x.indexrelid) LIKE '%tenant_id%'",
        )
        .await
    };
    let wait = std::time::Duration::from_secs_f64(sizes.auto_index_wait_secs);
    let indexes_before = indexes().await?;
    tokio::time::sleep(wait).await;
    let policy = eventgate_core::db::StoragePolicy::new(
        &bench.catalogue,
        &eventgate_core::config::StorageConfig::default(),
    );
    let started = Instant::now();
    eventgate_core::db::maintain_now(&bench.owner_url(), &policy)
        .await
        .context("the maintenance after the unindexed equality")?;
    let maintenance_s = round2(started.elapsed().as_secs_f64());
    let indexes_after = indexes().await?;
    eprintln!(
        "bench: queries: maintenance in {maintenance_s:.1} s; indexes on tenant_id: {indexes_before} before, {indexes_after} after"
    );
    tokio::time::sleep(wait).await;
    let latency = time_queries(
        bench,
        url,
        token,
        sizes.query_iterations,
        "equality (unindexed), after the maintenance",
        |i| {
            json!({"filter": {"tenant_id": format!("tenant-{}", (i as u64 * 37 + 17) % TENANTS)}, "limit": PAGE})
        },
    )
    .await?;
    let two_field_sort = time_queries(
        bench,
        url,
        token,
        sizes.query_iterations,
        "two-field sort, after the maintenance",
        |_| json!({"sort": ["source_app", "-timestamp_start"], "limit": PAGE}),
    )
    .await?;
    Ok((
        latency,
        two_field_sort,
        AutoIndex {
            indexes_before,
            indexes_after,
            maintenance_s,
            wait_s: round2(wait.as_secs_f64()),
        },
    ))
}

/// Cursors for the pages after the rows at depth, depth + 1000, …, and the id the first of those pages
/// must start with.
async fn deep_cursors(bench: &Bench, depth: u64) -> anyhow::Result<(Vec<String>, String)> {
    let client = db::connect(&bench.owner_url()).await?;
    // Row `depth` (1-based) of the default order is at OFFSET depth - 1.
    let rows = client
        .query(
            "SELECT id::text, (extract(epoch FROM received_at) * 1000000)::bigint FROM events \
             WHERE topic = $1 ORDER BY received_at DESC, id DESC OFFSET $2 LIMIT $3",
            &[
                &RUNS,
                &(depth as i64 - 1),
                &((DEEP_CURSORS - 1) as i64 * 1000 + 2),
            ],
        )
        .await
        .context("finding the rows at depth")?;
    anyhow::ensure!(
        rows.len() as u64 > (DEEP_CURSORS - 1) * 1000 + 1,
        "the history is too short for depth {depth}"
    );
    let topic = bench
        .catalogue
        .get(RUNS)
        .with_context(|| format!("topic {RUNS} is not in config/topics"))?;
    let key = CursorKey::new(bench.cursor_secret.as_bytes());
    // The cursor belongs to the query it is sent with: no filter, the default sort.
    let request = QueryRequest {
        limit: Some(PAGE),
        ..QueryRequest::default()
    };
    let plan =
        eventgate_core::query::plan(RUNS, &request, &topic.fields, &QueryLimits::default(), &key)
            .map_err(|e| anyhow!("planning the deep-page query: {e}"))?;
    let mut cursors = Vec::new();
    for k in 0..DEEP_CURSORS as usize {
        let row = &rows[k * 1000];
        let id: String = row.get(0);
        let micros: i64 = row.get(1);
        let last = Event {
            id: uuid::Uuid::parse_str(&id)?,
            topic: RUNS.to_owned(),
            timestamp: OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)?,
            producer: USER.to_owned(),
            payload: Value::Null,
        };
        cursors.push(plan.next_cursor(&last, &key));
    }
    let expected_first: String = rows[1].get(0);
    Ok((cursors, expected_first))
}

/// Sends `n` queries one after the other (plus a few unmeasured ones first) and returns the latencies.
async fn time_queries(
    bench: &Bench,
    url: &str,
    token: &str,
    n: usize,
    what: &str,
    body: impl Fn(usize) -> Value,
) -> anyhow::Result<Latency> {
    let mut samples = Vec::with_capacity(n);
    let mut empty = 0;
    for i in 0..n + 3 {
        let request = Bytes::from(body(i).to_string());
        let sent = Instant::now();
        let (status, answer) = post_for_json(&bench.http, url, token, request).await?;
        let elapsed = sent.elapsed();
        anyhow::ensure!(status == 200, "query {what} answered {status}: {answer}");
        if answer["data"].as_array().is_none_or(Vec::is_empty) {
            empty += 1;
        }
        if i >= 3 {
            samples.push(ms(elapsed));
        }
    }
    let latency = Latency::of(samples);
    eprintln!(
        "bench: queries: {what}: p50 {:.2} ms, p99 {:.2} ms{}",
        latency.p50_ms,
        latency.p99_ms,
        if empty > 0 {
            format!(" ({empty} empty pages)")
        } else {
            String::new()
        }
    );
    Ok(latency)
}

/// The page after the row at depth with `OFFSET`, as the stats-api's role, straight in SQL.
async fn offset_pages(bench: &Bench, sizes: &Sizes) -> anyhow::Result<Latency> {
    let client = db::connect(&bench.url("eventgate_stats", DATABASE)).await?;
    client.batch_execute("SET statement_timeout = 0").await?;
    let statement = client
        .prepare(
            "SELECT id, topic, received_at, producer, payload FROM events WHERE topic = $1 \
             ORDER BY received_at DESC, id DESC OFFSET $2 LIMIT $3",
        )
        .await?;
    let mut samples = Vec::new();
    for i in 0..sizes.offset_iterations + 1 {
        let offset = (sizes.deep_depth + (i as u64 % DEEP_CURSORS) * 1000) as i64;
        let sent = Instant::now();
        let rows = client
            .query(&statement, &[&RUNS, &offset, &(PAGE as i64 + 1)])
            .await
            .context("OFFSET page")?;
        let elapsed = sent.elapsed();
        anyhow::ensure!(!rows.is_empty(), "the OFFSET page is empty");
        if i > 0 {
            samples.push(ms(elapsed));
        }
    }
    let latency = Latency::of(samples);
    eprintln!(
        "bench: queries: OFFSET {}: p50 {:.1} ms, p99 {:.1} ms",
        sizes.deep_depth, latency.p50_ms, latency.p99_ms
    );
    Ok(latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn free_space_comes_from_df() {
        assert!(available_bytes("/").await.is_some_and(|bytes| bytes > 0));
        assert_eq!(available_bytes("/no/such/directory").await, None);
    }
}
