//! The body of `GET /health/live` and `GET /health/ready`, the same on every service:
//!
//! ```json
//! {"success": true, "statusCode": 200, "status": "ok", "service": "ingest-api", "version": "0.1.0",
//!  "dependencies": {"kafka": {"status": "ok", "latency_ms": 3}}}
//! ```
//!
//! `status` is `ok` when every dependency answered, `degraded` when one did not (503, the failing one
//! says `unreachable` and why), `stopping` once a shutdown started (503, so load balancers stop sending
//! before the listener closes). Liveness has no dependencies: it only says the process serves HTTP.
//! `warnings` (when any) say what does not make the service unready, such as a topics reload that failed.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Degraded,
    Stopping,
}

/// One dependency's answer to a readiness probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct DependencyHealth {
    /// `ok` or `unreachable`.
    pub status: &'static str,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DependencyHealth {
    pub fn ok(latency_ms: u64) -> Self {
        DependencyHealth {
            status: "ok",
            latency_ms,
            error: None,
        }
    }

    pub fn unreachable(latency_ms: u64, error: impl Into<String>) -> Self {
        DependencyHealth {
            status: "unreachable",
            latency_ms,
            error: Some(error.into()),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct HealthReport {
    pub success: bool,
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    pub status: Status,
    pub service: String,
    pub version: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, DependencyHealth>,
    /// What the operator should know that does not make the service unready: a configuration reload
    /// that failed (the service goes on with what it had).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl HealthReport {
    /// Liveness: the process answers.
    pub fn live(service: &str) -> Self {
        HealthReport::build(service, Status::Ok, BTreeMap::new())
    }

    /// Readiness: every dependency answered, unless the service is stopping.
    pub fn ready(
        service: &str,
        stopping: bool,
        dependencies: impl IntoIterator<Item = (String, DependencyHealth)>,
    ) -> Self {
        let dependencies: BTreeMap<_, _> = dependencies.into_iter().collect();
        let status = if stopping {
            Status::Stopping
        } else if dependencies.values().all(DependencyHealth::is_ok) {
            Status::Ok
        } else {
            Status::Degraded
        };
        HealthReport::build(service, status, dependencies)
    }

    fn build(
        service: &str,
        status: Status,
        dependencies: BTreeMap<String, DependencyHealth>,
    ) -> Self {
        let healthy = status == Status::Ok;
        HealthReport {
            success: healthy,
            // 503 rather than 500: the condition is transient and a probe should simply retry.
            status_code: if healthy { 200 } else { 503 },
            status,
            service: service.to_owned(),
            version: env!("CARGO_PKG_VERSION"),
            dependencies,
            warnings: Vec::new(),
        }
    }

    /// The report with `warnings` (the status stays what the dependencies made it).
    pub fn with_warnings(mut self, warnings: impl IntoIterator<Item = String>) -> Self {
        self.warnings.extend(warnings);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failing_dependency_degrades_the_service() {
        let report = HealthReport::ready(
            "stats-api",
            false,
            [
                (
                    "postgres".to_owned(),
                    DependencyHealth::unreachable(2000, "timed out"),
                ),
                ("other".to_owned(), DependencyHealth::ok(1)),
            ],
        );
        assert_eq!(report.status_code, 503);
        let body = serde_json::to_value(&report).unwrap();
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["success"], false);
        assert_eq!(body["dependencies"]["postgres"]["status"], "unreachable");
        assert_eq!(body["dependencies"]["postgres"]["error"], "timed out");
        assert_eq!(body["dependencies"]["other"]["status"], "ok");
        assert!(body["dependencies"]["other"].get("error").is_none());
    }

    #[test]
    fn stopping_wins_over_healthy_dependencies() {
        let report = HealthReport::ready(
            "ingest-api",
            true,
            [("kafka".to_owned(), DependencyHealth::ok(1))],
        );
        assert_eq!(report.status, Status::Stopping);
        assert_eq!(report.status_code, 503);
        let live = serde_json::to_value(HealthReport::live("ingest-api")).unwrap();
        assert_eq!(live["status"], "ok");
        assert_eq!(live["statusCode"], 200);
        assert!(live.get("dependencies").is_none());
    }
}
