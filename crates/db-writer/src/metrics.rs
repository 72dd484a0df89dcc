//! The writer's Prometheus collectors.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use crate::store::Written;

pub struct WriterMetrics {
    pub registry: Registry,
    pub rows_inserted: IntCounter,
    pub dead_letters: IntCounter,
    pub write_retries: IntCounter,
    pub batch_size: Histogram,
    pub flush_seconds: Histogram,
    pub assigned_partitions: IntGauge,
}

impl WriterMetrics {
    pub fn new() -> WriterMetrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let rows_inserted = counter(
            "eventgate_writer_rows_inserted_total",
            "Events inserted (duplicates not counted)",
        );
        let dead_letters = counter(
            "eventgate_writer_dead_letters_total",
            "Messages parked in dead_letters",
        );
        let write_retries = counter(
            "eventgate_writer_write_retries_total",
            "Failed batch writes that were retried",
        );
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("static metric definition");
            registry
                .register(Box::new(h.clone()))
                .expect("metric registered once");
            h
        };
        let batch_size = histogram(
            "eventgate_writer_batch_size",
            "Messages per written batch",
            vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0],
        );
        let flush_seconds = histogram(
            "eventgate_writer_flush_seconds",
            "Time to write a batch, retries included",
            prometheus::exponential_buckets(0.001, 2.0, 15).expect("static buckets"),
        );
        let assigned_partitions = IntGauge::new(
            "eventgate_writer_assigned_partitions",
            "Kafka partitions this writer currently owns",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(assigned_partitions.clone()))
            .expect("metric registered once");
        WriterMetrics {
            assigned_partitions,
            registry,
            rows_inserted,
            dead_letters,
            write_retries,
            batch_size,
            flush_seconds,
        }
    }

    pub fn record_flush(&self, messages: usize, written: Written, elapsed: Duration) {
        self.batch_size.observe(messages as f64);
        self.flush_seconds.observe(elapsed.as_secs_f64());
        self.rows_inserted.inc_by(written.events as u64);
        self.dead_letters.inc_by(written.dead_letters as u64);
    }
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics::new()
    }
}
