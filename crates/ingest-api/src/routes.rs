//! HTTP handlers: extract → authenticate → authorise → prepare (core rules) → publish → respond.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use time::OffsetDateTime;

use eventgate_core::error::{ApiError, ErrorKind};
use eventgate_core::http::{authorization, metrics_response, read_body};
use eventgate_core::ingest::{self, EventOutcome};

use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/topics", web::get().to(list_topics))
        .route("/topics/{topic}", web::get().to(get_topic))
        .route("/topics/{topic}", web::post().to(post_events))
        .route("/health", web::get().to(health))
        .route("/health/live", web::get().to(health))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

async fn post_events(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = state.verifier.authenticate(authorization(&request))?;
    let topic_name = path.into_inner();
    let topic = state.catalogue.get(&topic_name).ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            format!("topic {topic_name:?} does not exist"),
        )
        .with_field("topic")
    })?;
    if !state.access.can_write(&principal.user, &topic.name) {
        return Err(ApiError::new(
            ErrorKind::Permission,
            format!(
                "user {:?} may not write to topic {:?}",
                principal.user, topic.name
            ),
        )
        .with_field("topic"));
    }
    let body = read_body(payload, state.max_body_bytes).await?;
    let prepared = ingest::prepare(
        &body,
        topic,
        &principal.user,
        &state.rules,
        OffsetDateTime::now_utc(),
    )?;
    let counter = |outcome: &str, n: usize| {
        state
            .metrics
            .events
            .with_label_values(&[topic.name.as_str(), outcome])
            .inc_by(n as u64);
    };
    counter("rejected", prepared.rejected_count());
    if let Some(error) = prepared.all_rejected_error() {
        return Err(error);
    }
    let accepted: Vec<_> = prepared.accepted().collect();
    if let Err(error) = state.publisher.publish(topic, &accepted).await {
        counter("failed", accepted.len());
        return Err(error);
    }
    counter("accepted", accepted.len());
    let ids: Vec<String> = accepted.iter().map(|e| e.id.to_string()).collect();
    tracing::info!(topic = %topic.name, producer = %principal.user, batch.size = accepted.len(), "events accepted");
    if prepared.rejected_count() == 0 {
        return Ok(
            HttpResponse::Accepted().json(json!({"success": true, "statusCode": 202, "ids": ids}))
        );
    }
    let results: Vec<_> = prepared
        .outcomes
        .iter()
        .enumerate()
        .map(|(index, outcome)| match outcome {
            EventOutcome::Accepted(event) => {
                json!({"index": index, "statusCode": 202, "id": event.id})
            }
            EventOutcome::Rejected(errors) => {
                json!({"index": index, "statusCode": 400, "errors": errors})
            }
        })
        .collect();
    Ok(
        HttpResponse::build(actix_web::http::StatusCode::MULTI_STATUS)
            .json(json!({"success": false, "statusCode": 207, "ids": ids, "results": results})),
    )
}

async fn list_topics(state: web::Data<AppState>) -> HttpResponse {
    let names: Vec<&str> = state.catalogue.names().collect();
    HttpResponse::Ok().json(json!({"success": true, "statusCode": 200, "topics": names}))
}

async fn get_topic(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let topic = state.catalogue.get(&name).ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            format!("topic {name:?} does not exist"),
        )
        .with_field("topic")
    })?;
    Ok(HttpResponse::Ok().json(
        json!({"success": true, "statusCode": 200, "topic": topic.name, "schema": topic.schema}),
    ))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let broker = state.publisher.broker_reachable().await;
    let body = json!({"status": if broker { "ok" } else { "degraded" }, "dependencies": {"kafka": if broker { "ok" } else { "unreachable" }}});
    if broker {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics_response(&state.metrics.registry)
}
