//! eventgate-core: the shared heart of eventgate.
//!
//! Module map:
//! - [`config`]: typed configuration, layered defaults < `config/eventgate.toml` < `EVENTGATE_*` env vars.
//! - [`catalogue`]: the topics, one JSON Schema each, loaded from `config/topics/`; validation of events.
//! - [`access`]: who may write and read each topic, users and groups, topic families, field
//!   restrictions (`config/access.json`), swappable at run time ([`access::SharedAccess`]).
//! - [`auth`]: JWT verification (RS256/ES256 only; PEM keys and JWKS, several keys for rotation).
//! - [`gate`]: the one gate of requests about a topic: token → rate → topic → permission.
//! - [`limits`]: JSON nesting depth of request bodies; [`ratelimit`]: token buckets per user.
//! - [`reload`] (feature `reload`): SIGHUP reloads the access file and token keys.
//! - [`ingest`]: the rules of accepting a write: body shape, schema validation, ids.
//! - [`naive_time`]: date-times without an offset read in a topic's declared time zone.
//! - [`envelope`]: the event as it travels through Kafka and is stored and returned.
//! - [`query`]: the analysts' query language (AST, parser, field catalogue, cursor codec); pure code.
//! - [`error`]: the one error envelope and the mapping of failures to HTTP statuses.
//! - [`metrics`], [`telemetry`]: Prometheus collectors and the log/trace set-up shared by the services.
//! - [`health`]: the body of the liveness and readiness probes; [`shutdown`] (feature `http`): the
//!   graceful stop (readiness 503 → drain → in-flight requests finish, within a deadline).
//!
//! - [`db`] (feature `db`): the database's one shared room: table definitions, pool, migrations, error
//!   causes by SQLSTATE, the typed-value expression shared by field indexes and queries.
//!
//! Invariant: without features this crate does no I/O beyond reading its configuration files, and
//! depends on no database, HTTP or Kafka crate (`make lint` checks it).

pub mod access;
pub mod auth;
pub mod catalogue;
pub mod config;
#[cfg(feature = "db")]
pub mod db;
pub mod envelope;
pub mod error;
pub mod gate;
pub mod health;
#[cfg(feature = "http")]
pub mod http;
pub mod ingest;
mod json_log;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod limits;
pub mod metrics;
pub mod naive_time;
pub mod query;
pub mod ratelimit;
#[cfg(all(unix, feature = "reload"))]
pub mod reload;
pub mod retention;
#[cfg(feature = "http")]
pub mod shutdown;
pub mod telemetry;
