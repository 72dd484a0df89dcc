//! `GET /stats/{topic}/events/{id}/status`: a producer's "where is my event?".
//!
//! The one route of the stats-api for tokens allowed to *write* the topic (the `TopicProducer` gate:
//! token → query rate → topic → right to write), and only about the caller's own events: the event key
//! is (topic, id, producer) and the producer is always the token's subject, so another producer's id
//! answers `not_found` exactly like an id never sent — nobody learns anything about ids they did not
//! send. No payload or raw message is read. The answer (`data.status`):
//! - `stored`, with `received_at` (when the ingest-api accepted it; the time it was written is not kept);
//! - `dead_lettered`, with the dead letters' `reason` and `parked_at` (the event could not be stored);
//! - `not_found`: not stored (yet): still queued (writers store events within seconds of their 202), or
//!   never accepted.
//!
//! A stored event may have dead letters too: a later re-send of its id with another payload is parked as
//! a `conflicting_duplicate` while the first stays; they are listed with `stored`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use eventgate_core::error::ApiError;
use eventgate_core::http::TopicProducer;

use crate::raw_json::rfc3339;
use crate::AppState;

#[utoipa::path(
    get,
    path = "/stats/{topic}/events/{id}/status",
    tag = "queries",
    summary = "What became of an event the caller sent",
    description = "For a token that may *write* the topic, about its own events only (another \
        producer's id answers `not_found`, like an id never sent); no payload is read.",
    params(
        ("topic" = String, Path, description = "The topic's name."),
        ("id" = uuid::Uuid, Path, description = "The event's id."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The event's status.", body = crate::openapi::EventStatusAnswer),
        (status = 400, response = eventgate_core::http::openapi::BadRequest),
        (status = 401, response = eventgate_core::http::openapi::Unauthorized),
        (status = 403, response = eventgate_core::http::openapi::Forbidden),
        (status = 404, response = eventgate_core::http::openapi::NotFound),
        (status = 429, response = eventgate_core::http::openapi::TooManyRequests),
        (status = 503, response = eventgate_core::http::openapi::Unavailable),
    ),
)]
pub async fn status(
    producer: TopicProducer,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = crate::lookup::parse_id(&path.1)?;
    let topic = &producer.topic;
    let user = &producer.principal.user;
    let slot = state.slot(user)?;
    let found = crate::db::status::event_status(&state.pool, &topic.name, id, user)
        .await
        .map_err(|e| state.store_error(e))?;
    drop(slot);
    let dead_letters: Vec<_> = found
        .dead_letters
        .iter()
        .map(|d| json!({"reason": d.reason, "parked_at": rfc3339(d.parked_at)}))
        .collect();
    let mut data = json!({"id": id, "topic": topic.name, "producer": user});
    match (found.stored, dead_letters.is_empty()) {
        (Some(received_at), _) => {
            data["status"] = json!("stored");
            data["received_at"] = json!(rfc3339(received_at));
        }
        (None, false) => data["status"] = json!("dead_lettered"),
        (None, true) => {
            data["status"] = json!("not_found");
            data["hint"] = json!(
                "not stored: still queued (events are usually stored within seconds of their 202) \
                 or never accepted; ask again in a moment, and send it again (with the same event_id) \
                 if it stays not_found"
            );
        }
    }
    data["dead_letters"] = json!(dead_letters);
    Ok(HttpResponse::Ok().json(json!({"success": true, "statusCode": 200, "data": data})))
}
