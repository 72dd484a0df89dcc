//! Prometheus metrics shared by the services: each service owns a [`prometheus::Registry`], registers its
//! own collectors there and serves [`render`] on `GET /metrics`.
//!
//! Naming: `eventgate_<area>_<what>_<unit>`, counters end in `_total`, durations are `_seconds`
//! histograms. Label values come from bounded sets only (route patterns, topic names of the catalogue,
//! error kinds, status codes), never from raw client input, so a scan of random paths cannot blow up
//! the number of series. Every metric is listed in `docs/OPERATIONS.md`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The Prometheus text exposition of everything registered in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    // Encoding into a Vec cannot fail for the text format.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buffer);
    String::from_utf8(buffer).unwrap_or_default()
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets for request and query durations: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Registers a labelled counter. The definitions are static, so a failure is a programming error.
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter =
        IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
}

/// Registers a labelled histogram.
pub fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let histogram = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("static metric definition");
    registry
        .register(Box::new(histogram.clone()))
        .expect("metric registered once");
    histogram
}

/// Registers a labelled gauge.
pub fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let gauge = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(gauge.clone()))
        .expect("metric registered once");
    gauge
}

/// `eventgate_build_info{service, version} 1`: which build answers, for dashboards and alerts.
pub fn register_build_info(registry: &Registry, service: &str) {
    gauge_vec(
        registry,
        "eventgate_build_info",
        "Always 1; labels name the service and its version",
        &["service", "version"],
    )
    .with_label_values(&[service, env!("CARGO_PKG_VERSION")])
    .set(1);
}

/// The HTTP side of every service: one counter and one latency histogram, by route pattern, method and
/// status. Recorded by [`crate::http::RequestTelemetry`].
#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> HttpMetrics {
        HttpMetrics {
            requests: counter_vec(
                registry,
                "eventgate_http_requests_total",
                "HTTP requests answered, by route pattern, method and status",
                &["route", "method", "status"],
            ),
            duration: histogram_vec(
                registry,
                "eventgate_http_request_duration_seconds",
                "Time from request received to response ready, by route pattern, method and status",
                &["route", "method", "status"],
                LATENCY_BUCKETS,
            ),
        }
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [route, method, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.duration.with_label_values(&labels).observe(seconds);
    }
}

/// Connection pool usage (feature `db`), read from bb8 at scrape time rather than updated on every
/// checkout: `eventgate_db_pool_connections{pool, state}` (idle / in_use), `..._max_connections`, and
/// counters of checkouts that had to wait or timed out, and of the time spent waiting.
#[cfg(feature = "db")]
pub struct PoolCollector {
    pool: crate::db::PgPool,
    name: String,
    max_size: u32,
    descs: Vec<prometheus::core::Desc>,
}

#[cfg(feature = "db")]
impl PoolCollector {
    pub fn register(registry: &Registry, name: &str, pool: crate::db::PgPool, max_size: u32) {
        let desc = |metric: &str, help: &str, labels: &[&str]| {
            prometheus::core::Desc::new(
                metric.into(),
                help.into(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                Default::default(),
            )
            .expect("static metric definition")
        };
        let descs = vec![
            desc(
                "eventgate_db_pool_connections",
                "Open connections of the pool, by state (idle, in_use)",
                &["pool", "state"],
            ),
            desc(
                "eventgate_db_pool_max_connections",
                "Configured size of the pool",
                &["pool"],
            ),
            desc(
                "eventgate_db_pool_waits_total",
                "Checkouts that had to wait for a free connection",
                &["pool"],
            ),
            desc(
                "eventgate_db_pool_timeouts_total",
                "Checkouts that gave up waiting for a connection",
                &["pool"],
            ),
            desc(
                "eventgate_db_pool_wait_seconds_total",
                "Time spent waiting for a connection",
                &["pool"],
            ),
        ];
        let collector = PoolCollector {
            pool,
            name: name.to_owned(),
            max_size,
            descs,
        };
        registry
            .register(Box::new(collector))
            .expect("metric registered once");
    }
}

#[cfg(feature = "db")]
impl prometheus::core::Collector for PoolCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Desc;
        use prometheus::{Counter, Gauge, IntCounter};
        let state = self.pool.state();
        let stats = &state.statistics;
        let with_desc = |desc: &Desc, labels: &[(&str, &str)]| {
            let mut opts = Opts::new(desc.fq_name.clone(), desc.help.clone());
            for (name, value) in labels {
                opts = opts.const_label(*name, *value);
            }
            opts
        };
        let pool = ("pool", self.name.as_str());
        let in_use = state.connections.saturating_sub(state.idle_connections);
        let mut families = Vec::new();
        let mut connections = Vec::new();
        for (label, value) in [("idle", state.idle_connections), ("in_use", in_use)] {
            let gauge = Gauge::with_opts(with_desc(&self.descs[0], &[pool, ("state", label)]))
                .expect("static metric definition");
            gauge.set(f64::from(value));
            connections.extend(gauge.collect());
        }
        // Two series of one family: merge them so the exposition has one HELP/TYPE header.
        if let Some(mut family) = connections.first().cloned() {
            let metrics = connections
                .iter()
                .flat_map(|f| f.get_metric().iter().cloned())
                .collect::<Vec<_>>();
            family.set_metric(metrics);
            families.push(family);
        }
        let max = Gauge::with_opts(with_desc(&self.descs[1], &[pool])).expect("static");
        max.set(f64::from(self.max_size));
        families.extend(max.collect());
        for (desc, value) in [
            (&self.descs[2], stats.get_waited),
            (&self.descs[3], stats.get_timed_out),
        ] {
            let counter = IntCounter::with_opts(with_desc(desc, &[pool])).expect("static");
            counter.inc_by(value);
            families.extend(counter.collect());
        }
        let waited = Counter::with_opts(with_desc(&self.descs[4], &[pool])).expect("static");
        waited.inc_by(stats.get_wait_time.as_secs_f64());
        families.extend(waited.collect());
        families
    }
}

/// The JWKS URL's health, read from the verifier at scrape time (registered by both APIs):
/// `eventgate_jwks_keys_age_seconds` (since the last successful fetch; since start-up when none
/// succeeded yet), `eventgate_jwks_keys` (keys from the URL in use: 0 before the first fetch and once they
/// expired after `auth.jwks_max_stale_secs`) and `eventgate_jwks_refresh_failures_total`. Nothing is
/// exported without a JWKS URL.
pub struct JwksCollector {
    verifier: std::sync::Arc<crate::auth::JwtVerifier>,
    descs: Vec<prometheus::core::Desc>,
}

const JWKS_METRICS: [(&str, &str); 3] = [
    (
        "eventgate_jwks_keys_age_seconds",
        "Seconds since the JWKS URL was last fetched successfully (since start-up when never)",
    ),
    (
        "eventgate_jwks_keys",
        "Keys from the JWKS URL in use (0: not fetched yet, or expired after auth.jwks_max_stale_secs)",
    ),
    (
        "eventgate_jwks_refresh_failures_total",
        "Fetches of the JWKS URL that failed",
    ),
];

impl JwksCollector {
    pub fn register(registry: &Registry, verifier: std::sync::Arc<crate::auth::JwtVerifier>) {
        let descs = JWKS_METRICS
            .iter()
            .map(|(name, help)| {
                prometheus::core::Desc::new(
                    (*name).into(),
                    (*help).into(),
                    Vec::new(),
                    Default::default(),
                )
                .expect("static metric definition")
            })
            .collect();
        registry
            .register(Box::new(JwksCollector { verifier, descs }))
            .expect("metric registered once");
    }
}

impl prometheus::core::Collector for JwksCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::{Gauge, IntCounter, IntGauge};
        let Some(status) = self.verifier.jwks_status() else {
            return Vec::new();
        };
        let opts = |i: usize| Opts::new(JWKS_METRICS[i].0, JWKS_METRICS[i].1);
        let age = Gauge::with_opts(opts(0)).expect("static metric definition");
        age.set(status.age_secs);
        let keys = IntGauge::with_opts(opts(1)).expect("static metric definition");
        keys.set(i64::try_from(status.keys).unwrap_or(i64::MAX));
        let failures = IntCounter::with_opts(opts(2)).expect("static metric definition");
        failures.inc_by(status.failures);
        let mut families = age.collect();
        families.extend(keys.collect());
        families.extend(failures.collect());
        families
    }
}

/// The topics in use and their reloads (SIGHUP), read from the [`SharedCatalogue`] at each scrape:
/// `eventgate_topics`, `eventgate_topic_reloads_total{outcome="ok"|"failed"}` (the writer counts its own
/// reloads under the same name).
///
/// [`SharedCatalogue`]: crate::gate::SharedCatalogue
pub struct TopicsCollector {
    catalogue: std::sync::Arc<crate::gate::SharedCatalogue>,
    descs: Vec<prometheus::core::Desc>,
}

const TOPICS_HELP: &str = "Topics in use (the topics directory as last loaded)";
const TOPIC_RELOADS_HELP: &str = "Reloads of the topics directory on SIGHUP, by outcome";

impl TopicsCollector {
    pub fn register(registry: &Registry, catalogue: std::sync::Arc<crate::gate::SharedCatalogue>) {
        let desc = |name: &str, help: &str, labels: Vec<String>| {
            prometheus::core::Desc::new(name.into(), help.into(), labels, Default::default())
                .expect("static metric definition")
        };
        let descs = vec![
            desc("eventgate_topics", TOPICS_HELP, Vec::new()),
            desc(
                "eventgate_topic_reloads_total",
                TOPIC_RELOADS_HELP,
                vec!["outcome".into()],
            ),
        ];
        registry
            .register(Box::new(TopicsCollector { catalogue, descs }))
            .expect("metric registered once");
    }
}

impl prometheus::core::Collector for TopicsCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::IntGauge;
        let topics =
            IntGauge::new("eventgate_topics", TOPICS_HELP).expect("static metric definition");
        topics.set(i64::try_from(self.catalogue.current().names().count()).unwrap_or(i64::MAX));
        let reloads = IntCounterVec::new(
            Opts::new("eventgate_topic_reloads_total", TOPIC_RELOADS_HELP),
            &["outcome"],
        )
        .expect("static metric definition");
        reloads
            .with_label_values(&["ok"])
            .inc_by(self.catalogue.reloads());
        reloads
            .with_label_values(&["failed"])
            .inc_by(self.catalogue.failed_reloads());
        let mut families = topics.collect();
        families.extend(reloads.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_counters() {
        let registry = Registry::new();
        let counter =
            prometheus::IntCounter::new("eventgate_test_total", "a test counter").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc_by(3);
        assert!(render(&registry).contains("eventgate_test_total 3"));
    }

    #[test]
    fn http_metrics_count_by_route_method_status() {
        let registry = Registry::new();
        let http = HttpMetrics::new(&registry);
        http.observe("/topics/{topic}", "POST", 202, 0.004);
        http.observe("/topics/{topic}", "POST", 202, 0.006);
        http.observe("/topics/{topic}", "POST", 401, 0.001);
        let text = render(&registry);
        assert!(
            text.contains(
                r#"eventgate_http_requests_total{method="POST",route="/topics/{topic}",status="202"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"eventgate_http_request_duration_seconds_count{method="POST",route="/topics/{topic}",status="401"} 1"#
        ));
    }

    #[test]
    fn build_info_names_service_and_version() {
        let registry = Registry::new();
        register_build_info(&registry, "ingest-api");
        let text = render(&registry);
        assert!(text.contains(&format!(
            r#"eventgate_build_info{{service="ingest-api",version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        )));
    }
}
