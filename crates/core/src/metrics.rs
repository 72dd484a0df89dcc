//! Prometheus metrics shared by the services: each service owns a [`prometheus::Registry`], registers its
//! own collectors there and serves [`render`] on `GET /metrics`.

use prometheus::{Encoder, Registry, TextEncoder};

/// The Prometheus text exposition of everything registered in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    // Encoding into a Vec cannot fail for the text format.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buffer);
    String::from_utf8(buffer).unwrap_or_default()
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
}
