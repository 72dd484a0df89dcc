//! eventgate-core: the shared heart of eventgate.
//!
//! Module map:
//! - [`config`]: typed configuration, layered defaults < `config/eventgate.toml` < `EVENTGATE_*` env vars.
//! - [`catalogue`]: the topics, one JSON Schema each, loaded from `config/topics/`; validation of events.
//! - [`access`]: who may write and read each topic (`config/access.json`).
//! - [`auth`]: JWT verification (RS256/ES256, several keys for rotation).
//! - [`ingest`]: the rules of accepting a write: body shape, schema validation, ids.
//! - [`envelope`]: the event as it travels through Kafka and is stored and returned.
//! - [`query`]: the analysts' query language (AST, parser, field catalogue, cursor codec); pure code.
//! - [`error`]: the one error envelope and the mapping of failures to HTTP statuses.
//! - [`metrics`], [`telemetry`]: Prometheus registry and tracing set-up shared by the services.
//!
//! Invariant: without features this crate does no I/O beyond reading its configuration files; diesel
//! table definitions come in behind the `db` feature.

pub mod access;
pub mod auth;
pub mod catalogue;
pub mod config;
pub mod envelope;
pub mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod ingest;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
pub mod query;
#[cfg(feature = "db")]
pub mod schema;
pub mod telemetry;
