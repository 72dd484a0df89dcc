//! Phase 3: the writer against the physical limit. The db-writers start and join their group while a
//! topic is filled with N envelopes (as the ingest-api would have produced them), and the group's drain
//! of the backlog into the empty, indexed `events` table is timed from the moment the topic is filled
//! and the group has settled to the last row. Then `events` is emptied and the very same rows are loaded
//! with one raw `COPY` into it (the same partitions, keys and indexes).
//! writer rows/s ÷ COPY rows/s is the figure.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::{pin_mut, SinkExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;

use eventgate_core::envelope::Event;

use crate::cpu::{self, Usage};
use crate::db;
use crate::e2e::writer_metric;
use crate::ingest::{event, TOPIC};
use crate::load::round2;
use crate::services::{Bench, Kind, Service, USER};
use crate::Sizes;

const PHASE: &str = "writer";
const ROWS_METRIC: &str = "eventgate_writer_rows_inserted_total";
const ASSIGNED_METRIC: &str = "eventgate_writer_assigned_partitions";

#[derive(Debug, Clone, Serialize)]
pub struct WriterResults {
    pub rows: u64,
    /// Writer processes in the consumer group.
    pub writers: usize,
    pub writer_rows_per_s: f64,
    pub copy_rows_per_s: f64,
    pub writer_copy_ratio: f64,
    /// Rows written in the measured window (from the filled topic and settled group to the last row).
    pub drained_rows: u64,
    /// Rows per written batch, and the time one batch's write took (the writer's own metrics).
    pub mean_batch_rows: f64,
    pub mean_write_ms: f64,
    /// Batch writes in progress on average, per writer (the writer overlaps up to two): below 1, the
    /// database waits for the writer (consuming, decoding, committing offsets).
    pub writes_in_flight: f64,
    pub writer_cpu: Usage,
    pub copy_cpu: Usage,
}

pub async fn run(bench: &Bench, sizes: &Sizes) -> anyhow::Result<WriterResults> {
    let rows = sizes.writer_rows;
    let client = db::connect(&bench.owner_url()).await?;
    db::empty_events(&client, &["dead_letters"]).await?;
    client
        .batch_execute("DROP TABLE IF EXISTS events_copy")
        .await
        .context("dropping events_copy")?;
    let kafka = bench.kafka_config(&bench.prefix(PHASE));
    eventgate_core::kafka::ensure_topics(&kafka, &bench.catalogue)
        .await
        .context("creating the writer phase's topics")?;

    // Started before the pre-fill, so they join (and rebalance, when there are several) while the
    // topic fills: partitions resume from committed offsets in the middle of the producer's batches,
    // and the count below checks that no event was lost on the way.
    let mut writers = Vec::new();
    for instance in 0..sizes.writers {
        writers.push(bench.spawn_instance(Kind::Writer, PHASE, instance).await?);
    }
    let outcome = drain(bench, sizes, &writers).await;
    for writer in writers {
        bench.stop(writer).await?;
    }
    bench.delete_topics(PHASE).await;
    let mut results = outcome?;
    let stored = db::count(&client, "SELECT count(*) FROM events").await?;
    anyhow::ensure!(
        stored == rows as i64,
        "the writers reported {rows} rows but the table holds {stored}"
    );
    let (copy_rows_per_s, copy_cpu) = copy_same_rows(bench, &client, rows).await?;
    results.copy_rows_per_s = copy_rows_per_s.round();
    results.writer_copy_ratio = round2(results.writer_rows_per_s / copy_rows_per_s);
    results.copy_cpu = copy_cpu;
    Ok(results)
}

/// Pre-fills the topic while the writers join, waits for the group to settle, and measures the drain
/// from then (the end of the pre-fill at the earliest: the producer competes for the CPU before it; a
/// group still rebalancing measures its joins, not its drain) to the last row. Rows written before the
/// clock starts are left out of the rate.
async fn drain(bench: &Bench, sizes: &Sizes, writers: &[Service]) -> anyhow::Result<WriterResults> {
    let rows = sizes.writer_rows;
    prefill(bench, rows).await?;
    let partitions =
        bench.catalogue.topics().count() as f64 * f64::from(bench.kafka_config("").partitions);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owned = Vec::new();
        for writer in writers {
            owned.push(
                writer_metric(bench, writer, ASSIGNED_METRIC)
                    .await
                    .unwrap_or(0.0),
            );
        }
        if owned.iter().all(|&n| n > 0.0) && owned.iter().sum::<f64>() >= partitions {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the writers' group did not settle within 60 s (partitions owned: {owned:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let watched = bench.watched(&writers.iter().collect::<Vec<_>>());
    let metric = |name: &'static str| group_metric(bench, writers, name);
    let start_cpu = cpu::snapshot(&watched);
    let started = Instant::now();
    let start_rows = metric(ROWS_METRIC).await;
    let start_flush = metric("eventgate_writer_flush_seconds_sum").await;
    let start_batches = metric("eventgate_writer_flush_seconds_count").await;
    let start_batch_rows = metric("eventgate_writer_batch_size_sum").await;
    if start_rows > rows as f64 * 0.5 {
        eprintln!(
            "bench: writer: {start_rows} of {rows} rows were written while the topic was filled \
             and the group settled: the measured drain is short, give more --writer-rows"
        );
    }
    let mut last_progress = Instant::now();
    let mut last_value = start_rows;
    let finished = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let value = metric(ROWS_METRIC).await;
        let now = Instant::now();
        if value > last_value {
            last_value = value;
            last_progress = now;
        }
        if value >= rows as f64 {
            break now;
        }
        anyhow::ensure!(
            now.duration_since(last_progress) < Duration::from_secs(120),
            "the writers made no progress for 120 s at {value} of {rows} rows (see target/bench/logs/writer-db-writer*.log)"
        );
    };
    let end_cpu = cpu::snapshot(&watched);
    let seconds = finished.duration_since(started).as_secs_f64().max(1e-3);
    let flush = metric("eventgate_writer_flush_seconds_sum").await - start_flush;
    let batches = (metric("eventgate_writer_flush_seconds_count").await - start_batches).max(1.0);
    let batch_rows = metric("eventgate_writer_batch_size_sum").await - start_batch_rows;
    Ok(WriterResults {
        rows,
        writers: writers.len(),
        writer_rows_per_s: ((rows as f64 - start_rows) / seconds).round(),
        copy_rows_per_s: 0.0,
        writer_copy_ratio: 0.0,
        drained_rows: (rows as f64 - start_rows) as u64,
        mean_batch_rows: (batch_rows / batches).round(),
        mean_write_ms: round2(flush * 1000.0 / batches),
        writes_in_flight: round2(flush / seconds / writers.len() as f64),
        writer_cpu: cpu::usage(&start_cpu, &end_cpu),
        copy_cpu: Usage::default(),
    })
}

/// A metric summed over the writers of the group (0 when none reports it).
async fn group_metric(bench: &Bench, writers: &[Service], name: &str) -> f64 {
    let mut total = 0.0;
    for writer in writers {
        total += writer_metric(bench, writer, name).await.unwrap_or(0.0);
    }
    total
}

/// Produces `rows` envelopes to the phase's `audit.logs` topic like the ingest-api does (key = id,
/// idempotent, acks=all) and waits for every acknowledgement.
async fn prefill(bench: &Bench, rows: u64) -> anyhow::Result<()> {
    let kafka = bench.kafka_config(&bench.prefix(PHASE));
    let producer: FutureProducer = eventgate_core::kafka::client_config(&kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .context("creating the pre-fill producer")?;
    let kafka_topic = kafka.kafka_topic(TOPIC);
    eprintln!("bench: writer: pre-filling {kafka_topic} with {rows} events");
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for n in 0..rows {
        let envelope = Event {
            id: uuid::Uuid::now_v7(),
            topic: TOPIC.to_owned(),
            timestamp: time::OffsetDateTime::now_utc(),
            producer: USER.to_owned(),
            payload: event(n),
        };
        let key = envelope.id.to_string();
        let payload = envelope.to_json_bytes();
        let producer = &producer;
        let topic = kafka_topic.as_str();
        pending.push(async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Timeout::After(Duration::from_secs(60)),
                )
                .await
                .map(|_| ())
                .map_err(|(error, _)| error)
        });
        while pending.len() >= 100_000 {
            if let Some(result) = pending.next().await {
                result.context("pre-filling the topic")?;
            }
        }
    }
    while let Some(result) = pending.next().await {
        result.context("pre-filling the topic")?;
    }
    eprintln!(
        "bench: writer: pre-filled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads the rows the writer stored (`COPY (SELECT …) TO STDOUT`, into memory), empties `events` and
/// times one `COPY events FROM STDIN` of them: the same rows into the same partitions with the same
/// indexes, as fast as Postgres loads them. Returns rows/s and the CPU it took.
async fn copy_same_rows(
    bench: &Bench,
    client: &tokio_postgres::Client,
    rows: u64,
) -> anyhow::Result<(f64, Usage)> {
    const COLUMNS: &str = "id, topic, received_at, producer, payload, schema_version";
    let stream = client
        .copy_out(&format!("COPY (SELECT {COLUMNS} FROM events) TO STDOUT"))
        .await
        .context("COPY events TO STDOUT")?;
    pin_mut!(stream);
    // Coalesced into 1 MiB chunks, as a client streaming a file would send them.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut current = BytesMut::with_capacity(1 << 20);
    while let Some(data) = stream.next().await {
        current.extend_from_slice(&data.context("reading the rows")?);
        if current.len() >= 1 << 20 {
            chunks.push(current.split().freeze());
        }
    }
    if !current.is_empty() {
        chunks.push(current.freeze());
    }
    eprintln!(
        "bench: writer: COPY of the same {rows} rows into the emptied events ({:.0} MiB)",
        chunks.iter().map(Bytes::len).sum::<usize>() as f64 / 1048576.0
    );
    // Its rollups too (the writer kept them for these rows; COPY does not).
    db::empty_events(client, &[]).await?;

    let watched = bench.watched(&[]);
    let before = cpu::snapshot(&watched);
    let started = Instant::now();
    let sink = client
        .copy_in::<_, Bytes>(&format!("COPY events ({COLUMNS}) FROM STDIN"))
        .await
        .context("COPY events FROM STDIN")?;
    pin_mut!(sink);
    for chunk in chunks {
        sink.send(chunk).await.context("sending COPY data")?;
    }
    let copied = sink.as_mut().finish().await.context("finishing COPY")?;
    let seconds = started.elapsed().as_secs_f64().max(1e-3);
    let after = cpu::snapshot(&watched);
    anyhow::ensure!(copied == rows, "COPY loaded {copied} rows, expected {rows}");
    Ok((rows as f64 / seconds, cpu::usage(&before, &after)))
}
