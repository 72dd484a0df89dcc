//! The stats-api's OpenAPI document: the operations are the handlers' `#[utoipa::path]` annotations
//! (`routes.rs`, `aggregate.rs`, `export.rs`, `dead_letters.rs`, `explorer.rs`), listed here; the
//! schemas below describe the JSON the handlers write (most of it written as bytes, as the rows
//! arrive, so these types only describe it). What both APIs share (the error envelope and answers, the
//! bearer scheme, `/openapi.json` and `/api`) is added by `eventgate_core::http::openapi::finish`.
//!
//! The filters of the GET forms are free-form parameters (`<field>`, `<field>_<operator>`): their names
//! come from each topic's fields (`GET /stats/{topic}/fields`), and the document names no topic
//! (`eventgate_core::http::openapi`). A unit test checks this list against the routes the server has,
//! and schemathesis checks every answer against the document (`crates/e2e/tests/openapi.rs`).

// The types only describe requests and answers for the document.
#![allow(dead_code)]

use std::collections::HashMap;

use serde::Serialize;
use utoipa::openapi::schema::{AnyOfBuilder, Schema};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr};
use utoipa::{OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eventgate stats-api",
        description = "Analysts read the events of the topics their token may read: filtered, sorted, \
            keyset-paginated queries, aggregates, streamed exports, dead letters. The query language: \
            docs/API.md in the repository. Every route about a topic checks, in order: token (401), \
            the user's query rate (429), the topic (404), the right to read it (403).",
    ),
    paths(
        crate::routes::post_query,
        crate::routes::get_query,
        crate::routes::fields,
        crate::explorer::topics,
        crate::aggregate::post_aggregate,
        crate::export::export,
        crate::tail::tail,
        crate::dead_letters::list,
        crate::lookup::lookup,
        crate::status::status,
        crate::explorer::page,
        crate::explorer::asset,
    ),
    tags(
        (name = "queries", description = "Events of a topic, a page at a time."),
        (name = "aggregates", description = "Counts and summaries, grouped by fields and time buckets."),
        (name = "exports", description = "Every matching event, streamed as NDJSON or CSV."),
        (name = "dead letters", description = "Messages of a topic the writers could never store."),
        (name = "topics", description = "The topics a token may read, and their fields."),
        (name = "explorer", description = "The explorer page (HTML) and its assets."),
        (name = "operations", description = "Probes and metrics (on `stats.admin_listen` when it is set, then not in this document)."),
        (name = "documentation", description = "This document and its page."),
    ),
)]
struct ApiDoc;

#[derive(OpenApi)]
#[openapi(paths(
    crate::routes::health,
    crate::routes::health_live,
    crate::routes::ready,
    crate::routes::metrics
))]
struct AdminDoc;

/// The document of the API's routes (`ApiServerSettings::openapi`).
pub fn document() -> Document {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // `routes::configure` adds `GET /token` (EventGate's way to obtain a token).
    document.merge(eventgate_core::http::openapi::token_document());
    document
}

/// The document of the probes and metrics (`ApiServerSettings::admin_openapi`).
pub fn admin_document() -> Document {
    AdminDoc::openapi()
}

/// How many events match, when a query asks (`count`, or the header `Prefer: count=…`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CountMode {
    /// Counted by the database, within the statement timeout.
    Exact,
    /// The planner's estimate: cheap, approximate.
    Planned,
    /// Exact when small, else the planner's estimate.
    Estimated,
}

/// A query. Any other key is a 400.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"filter": {"event_name": "login"}, "sort": ["-timestamp"], "limit": 20}))]
pub struct QueryBody {
    /// Filters, all of which must hold: `{"<field>": value}` (equality) or `{"<field>_<operator>":
    /// value}` (`_in`, `_gt`, `_gte`, `_lt`, `_lte`, `_between`, `_contains`, `_exists`, …).
    #[schema(value_type = Option<Object>)]
    pub filter: Option<HashMap<String, serde_json::Value>>,
    /// Field names; a `-` prefix sorts that field descending. Default `["-timestamp"]`.
    pub sort: Option<Vec<String>>,
    /// The `pagination.cursor` of the previous page, unchanged.
    pub cursor: Option<String>,
    /// Events per page (1 to `stats.max_limit`, 1000 by default; default 50).
    #[schema(minimum = 1)]
    pub limit: Option<u64>,
    /// `limit` under audit-log's name.
    #[schema(minimum = 1)]
    pub page_size: Option<u64>,
    /// The page number, from 1, instead of a cursor (up to a documented depth).
    #[schema(minimum = 1)]
    pub page: Option<u64>,
    /// Only these fields of each event (`id` and `topic` are always kept).
    pub fields: Option<Vec<String>>,
    /// Also count the matching events.
    pub count: Option<CountMode>,
}

/// One stored event.
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// The event's id (the producer's `event_id`, or the gateway's UUIDv7).
    pub id: uuid::Uuid,
    pub topic: String,
    /// When the ingest-api received it (RFC 3339, µs).
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
    /// The `sub` of the token that sent it.
    pub producer: Option<String>,
    /// The version of the topic's schema the event was validated against (the one it named, else the
    /// latest when it was sent; 1 for events stored before versions were recorded). Left out with
    /// `fields`.
    #[schema(minimum = 1)]
    pub schema_version: Option<u16>,
    /// The event as sent (only the selected fields with `fields`).
    #[schema(value_type = Option<Object>)]
    pub payload: Option<HashMap<String, serde_json::Value>>,
}

/// Where the page ends and how to get the next one.
#[derive(Serialize, ToSchema)]
pub struct Pagination {
    /// Pass it back, with the same filter and sort, for the next page; `null` on the last one.
    pub cursor: Option<String>,
    pub has_more: bool,
    pub limit: u64,
    /// How many events match, when the query asked (`count`, `Prefer: count=…`, or `page`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Whether `total` is exact (`false`: the planner's estimate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_exact: Option<bool>,
    /// `true` when an exact count ran past the statement timeout: `total` is then the estimate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_timed_out: Option<bool>,
}

/// Offset paging (`page`) in audit-log's terms.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PageMetadata {
    pub current_page: u64,
    pub page_size: u64,
    pub first_page: u64,
    pub last_page: u64,
    /// How many events match.
    pub total_records: u64,
}

/// One page of events.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryPage {
    pub success: bool,
    pub status_code: u16,
    pub data: Vec<Event>,
    pub pagination: Pagination,
    /// With `page`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PageMetadata>,
    pub freshness: Option<Freshness>,
}

/// How current the answer is: the topic's watermark (also the header `Eventgate-Freshness`); null
/// when it could not be read. Every member is null before the topic's first stored batch.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// The newest stored event's `timestamp` (received-at).
    #[schema(format = DateTime)]
    pub newest_event_at: Option<String>,
    /// When the writers last stored a batch of the topic.
    #[schema(format = DateTime)]
    pub stored_at: Option<String>,
    /// Now minus `newest_event_at`, in ms.
    pub age_ms: Option<i64>,
    /// `stored_at` minus `newest_event_at`, in ms: how far behind the writers were at that batch.
    pub lag_ms: Option<i64>,
}

/// AbsaOSS/EventGate's stats request, answered in its shape (`EventGatePage`): the runs whose
/// `timestamp_start` lies in the window, one row per job. Told from a query by `timestamp_start` or
/// `timestamp_end` at the top (or an `eg.` cursor) and none of the query's own keys; only topics of
/// runs (a time field `timestamp_start` and an array `jobs`) take it, others answer 400 at `topic`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"timestamp_start": 1_704_067_200_000_i64, "timestamp_end": 1_706_745_600_000_i64,
    "cursor": null, "limit": 50}))]
pub struct EventGateStatsBody {
    /// Start of the window, epoch milliseconds, inclusive (default: 7 days ago, or the cursor's).
    pub timestamp_start: Option<i64>,
    /// End of the window, epoch milliseconds, inclusive (default: now, or the cursor's).
    pub timestamp_end: Option<i64>,
    /// The string `pagination.cursor` of the previous page (EventGate's integer `internal_id` is a 400).
    pub cursor: Option<String>,
    /// Rows (jobs) per page; more than `stats.max_limit` is that maximum, as EventGate clamps.
    #[schema(minimum = 1)]
    pub limit: Option<u64>,
}

/// One job of a run, with its run's members, as EventGate's stats answer it. The members EventGate
/// reads from its tables are the event's values as sent (null when absent).
#[derive(Serialize, ToSchema)]
pub struct EventGateRow {
    pub event_id: serde_json::Value,
    pub job_ref: serde_json::Value,
    pub tenant_id: serde_json::Value,
    pub source_app: serde_json::Value,
    pub source_app_version: serde_json::Value,
    pub environment: serde_json::Value,
    /// The run's `timestamp_start`.
    pub run_timestamp_start: serde_json::Value,
    /// The run's `timestamp_end`.
    pub run_timestamp_end: serde_json::Value,
    /// Always null: jobs have no id of their own here (`id` and `job_index` say which job it is).
    pub internal_id: Option<i64>,
    pub country: serde_json::Value,
    pub catalog_id: serde_json::Value,
    pub status: serde_json::Value,
    /// The job's.
    pub timestamp_start: serde_json::Value,
    /// The job's.
    pub timestamp_end: serde_json::Value,
    pub message: serde_json::Value,
    pub additional_info: serde_json::Value,
    /// The run's start date, `DD-MM-YYYY` (UTC).
    pub run_date: Option<String>,
    /// `succeeded`, `failed`, `no data received` or `no data produced`.
    pub run_status: String,
    /// `tenant_id` in lower case.
    pub formatted_tenant: String,
    /// The job's end minus its start, in milliseconds.
    pub elapsed_time: Option<i64>,
    /// The job's start, `YYYY-MM-DD HH:MM:SS` (UTC).
    pub start_time: Option<String>,
    /// The job's end, `YYYY-MM-DD HH:MM:SS` (UTC).
    pub end_time: Option<String>,
    /// The stored event (the run): `GET /stats/{topic}/events/{id}`.
    pub id: uuid::Uuid,
    /// The job's position in the run's `jobs`.
    pub job_index: u64,
}

/// Where EventGate's page ends.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventGatePagination {
    /// Pass it back (with the same window, or none) for the next page; `null` on the last one.
    pub cursor: Option<String>,
    pub has_more: bool,
    pub limit: u64,
}

/// A page of EventGate's stats: one row per job, newest run first, a run's jobs last first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventGatePage {
    pub success: bool,
    pub status_code: u16,
    pub data: Vec<EventGateRow>,
    pub pagination: EventGatePagination,
}

/// A schema that is any of two named ones (`$ref`s), registered with their own references.
fn any_of<A: ToSchema, B: ToSchema>(description: &str) -> RefOr<Schema> {
    AnyOfBuilder::new()
        .item(Ref::from_schema_name(A::name()))
        .item(Ref::from_schema_name(B::name()))
        .description(Some(description))
        .into()
}

fn register<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

/// The body of `POST /stats/{topic}`: a query, or EventGate's stats request. (Any of, not one of: a
/// body with only `cursor` and `limit` fits both schemas; the cursor's `eg.` prefix tells them apart.)
pub struct StatsBody;

impl utoipa::PartialSchema for StatsBody {
    fn schema() -> RefOr<Schema> {
        any_of::<QueryBody, EventGateStatsBody>(
            "A query, or EventGate's stats request (`timestamp_start`/`timestamp_end` at the top).",
        )
    }
}

impl ToSchema for StatsBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        register::<QueryBody>(schemas);
        register::<EventGateStatsBody>(schemas);
    }
}

/// The answer of `POST /stats/{topic}`: a page of events, or EventGate's page of jobs. (Any of: an
/// empty page fits both.)
pub struct StatsAnswer;

impl utoipa::PartialSchema for StatsAnswer {
    fn schema() -> RefOr<Schema> {
        any_of::<QueryPage, EventGatePage>(
            "A page of events; EventGate's request is answered with EventGate's page of jobs.",
        )
    }
}

impl ToSchema for StatsAnswer {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        register::<QueryPage>(schemas);
        register::<EventGatePage>(schemas);
    }
}

/// A field a topic's events can be filtered and sorted by.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldInfo {
    /// `timestamp`, `producer`, `id`, or a payload path such as `jobs.status`.
    pub name: String,
    /// The field's type (`string`, `integer`, `number`, `boolean`, `date-time`, …).
    #[serde(rename = "type")]
    pub ty: String,
}

/// The fields of a topic.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldList {
    pub success: bool,
    pub status_code: u16,
    pub topic: String,
    pub fields: Vec<FieldInfo>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicName {
    pub name: String,
}

/// The topics the token may read.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicNames {
    pub success: bool,
    pub status_code: u16,
    pub topics: Vec<TopicName>,
}

/// Time buckets of an aggregate.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    /// `minute`, `hour`, `day`, `week`, `month`, `quarter` or `year`.
    pub unit: String,
    /// A date-time field (default `timestamp`).
    pub field: Option<String>,
    /// An IANA time zone name (default `UTC`).
    pub time_zone: Option<String>,
}

/// An aggregate. Any other key is a 400.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"filter": {"event_name": "login"}, "group_by": ["customer_id"],
    "interval": {"unit": "day", "time_zone": "Europe/Berlin"}, "metrics": ["count"], "sort": ["-count"]}))]
pub struct AggregateBody {
    /// The filters of queries.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<HashMap<String, serde_json::Value>>,
    /// Fields to group by.
    pub group_by: Option<Vec<String>>,
    pub interval: Option<Interval>,
    /// `count`, `count_distinct(f)`, `sum(f)`, `avg(f)`, `min(f)`, `max(f)`, … (default `count`).
    pub metrics: Option<Vec<String>>,
    /// `bucket`, a group field or a metric; `-` for descending.
    pub sort: Option<Vec<String>>,
    /// Groups per answer.
    #[schema(minimum = 1)]
    pub limit: Option<u64>,
}

/// One group (and time bucket) of an aggregate.
#[derive(Serialize, ToSchema)]
pub struct AggregateRow {
    /// The group's values of the `group_by` fields.
    #[schema(value_type = Option<Object>)]
    pub group: Option<HashMap<String, serde_json::Value>>,
    /// The bucket's start, with `interval`.
    pub bucket: Option<serde_json::Value>,
    /// Each metric's value, by its name.
    #[schema(value_type = Object)]
    pub metrics: HashMap<String, serde_json::Value>,
}

/// The totals over every group.
#[derive(Serialize, ToSchema)]
pub struct AggregateTotal {
    pub groups: u64,
    #[schema(value_type = Object)]
    pub metrics: HashMap<String, serde_json::Value>,
}

/// The groups of an aggregate.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregateAnswer {
    pub success: bool,
    pub status_code: u16,
    pub data: Vec<AggregateRow>,
    pub total: AggregateTotal,
    #[serde(rename = "has_more")]
    pub has_more: bool,
    pub limit: u64,
    pub freshness: Option<Freshness>,
}

/// One event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OneEvent {
    pub success: bool,
    pub status_code: u16,
    pub data: Event,
}

/// Where an event is.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// Written to the database.
    Stored,
    /// Parked: it could not be stored (see `dead_letters`).
    DeadLettered,
    /// Not stored (yet): still queued, or never accepted.
    NotFound,
}

/// A dead letter of the event (no raw message).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventDeadLetter {
    pub reason: String,
    #[schema(format = DateTime)]
    pub parked_at: String,
}

/// What became of an event.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventStatus {
    pub id: uuid::Uuid,
    pub topic: String,
    /// The caller: only its own events are told about.
    pub producer: String,
    pub status: EventState,
    /// When the ingest-api accepted it (`stored`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub received_at: Option<String>,
    /// What to do next (`not_found`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Its dead letters: a `stored` event may have one too (a re-send with another payload).
    pub dead_letters: Vec<EventDeadLetter>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventStatusAnswer {
    pub success: bool,
    pub status_code: u16,
    pub data: EventStatus,
}

/// A message the writers could never store.
#[derive(Serialize, ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub topic: String,
    pub kafka_topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `undecodable`, `topic_mismatch`, `refused` or `conflicting_duplicate`.
    pub reason: String,
    pub error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    /// The message's exact bytes.
    pub raw_base64: Option<String>,
    /// The same bytes as text, when they are UTF-8.
    pub raw: Option<String>,
    /// `replayed` or `discarded` (by `eventgate dead-letters`); null while unresolved.
    pub resolution: Option<String>,
    #[schema(format = DateTime)]
    pub resolved_at: Option<String>,
    /// Who resolved it (`--by`, or the login name of who ran the command).
    pub resolved_by: Option<String>,
}

/// A page of dead letters, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeadLetterPage {
    pub success: bool,
    pub status_code: u16,
    pub data: Vec<DeadLetter>,
    pub pagination: Pagination,
}

#[cfg(test)]
mod tests {
    use eventgate_core::http::openapi::{assert_document_matches_routes, configure_docs, finish};

    /// The document is the routes' (both ways), whatever is added to either.
    #[actix_web::test]
    async fn the_document_lists_every_route_and_only_routes() {
        let mut document = super::document();
        document.merge(super::admin_document());
        assert_document_matches_routes(&finish(document), |cfg| {
            crate::routes::configure(cfg);
            crate::routes::configure_admin(cfg);
            configure_docs(cfg);
        })
        .await;
    }
}
