//! The ingest-api's OpenAPI document: the operations are the handlers' `#[utoipa::path]` annotations
//! (`routes.rs`), listed here; the schemas below describe the JSON the handlers write. What both APIs
//! share (the error envelope and answers, the bearer scheme, `/openapi.json` and `/api`) is added by
//! `eventgate_core::http::openapi::finish` when the server starts.
//!
//! Why the body of `POST /topics/{topic}` is not each topic's schema: the document is public and names
//! no topic (`eventgate_core::http::openapi`); `GET /topics/{topic}` gives a topic's JSON Schema to
//! those who may write or read it. The tests check this list against the routes the server has
//! (`tests/openapi.rs`), and schemathesis checks every answer against the document
//! (`crates/e2e/tests/openapi.rs`).

// The types only describe answers for the document; the handlers write the same JSON.
#![allow(dead_code)]

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{OpenApi, ToSchema};

use eventgate_core::error::ErrorDetail;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eventgate ingest-api",
        description = "Producers send events to topics: each event is validated against its topic's \
            JSON Schema, authorised, and answered `202` only after Kafka acknowledged it. A topic's \
            schema: `GET /topics/{topic}`. The guide: docs/API.md in the repository.",
    ),
    paths(crate::routes::post_events, crate::routes::list_topics, crate::routes::get_topic),
    tags(
        (name = "events", description = "Sending events."),
        (name = "topics", description = "The topics a token may use, and their schemas."),
        (name = "operations", description = "Probes and metrics (on `ingest.admin_listen` when it is set, then not in this document)."),
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

/// One event (an object) or a batch (a non-empty array of objects), each validated against the
/// topic's JSON Schema (`GET /topics/{topic}`). An event may carry its own id in `event_id` (a UUID):
/// sending it again then stores it once. Written by hand: the derive cannot say "at least one".
pub struct Events;

impl utoipa::PartialSchema for Events {
    fn schema() -> RefOr<Schema> {
        let event = || {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some("An event: what the topic's JSON Schema allows."))
        };
        OneOfBuilder::new()
            .item(event())
            .item(
                ArrayBuilder::new()
                    .items(event())
                    .min_items(Some(1))
                    .description(Some("A batch: at most `ingest.max_batch_events` events.")),
            )
            .examples([
                json!({"event_name": "login", "description": "alice signed in", "customer_id": 42}),
            ])
            .into()
    }
}

impl ToSchema for Events {}

/// Every event was acknowledged by the broker.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Accepted {
    /// `true`.
    pub success: bool,
    /// `202`.
    pub status_code: u16,
    /// The events' ids, in the order sent.
    pub ids: Vec<uuid::Uuid>,
}

/// Some events of the batch were acknowledged, others refused (never published) or not acknowledged.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MultiStatus {
    /// `false`: not every event was accepted.
    pub success: bool,
    /// `207`.
    pub status_code: u16,
    /// The ids of the acknowledged events.
    pub ids: Vec<uuid::Uuid>,
    /// One outcome per event of the batch, in order.
    pub results: Vec<EventResult>,
}

/// What became of one event of a batch.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventResult {
    /// The event's position in the batch.
    pub index: u32,
    /// `202` acknowledged; `400`/`413` refused; `503` not acknowledged (retry it, with its id).
    pub status_code: u16,
    /// The event's id, unless it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<uuid::Uuid>,
    /// Why it was not accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ErrorDetail>>,
}

/// The topics the token may write or read.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicList {
    pub success: bool,
    pub status_code: u16,
    pub topics: Vec<String>,
}

/// A topic and its JSON Schema.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicSchema {
    pub success: bool,
    pub status_code: u16,
    pub topic: String,
    /// The topic's JSON Schema (`config/topics/<topic>.json`), which every event must satisfy.
    pub schema: HashMap<String, serde_json::Value>,
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
