//! `GET /stats/{topic}/events/{id}[?producer=…][&fields=…]`: one event by its id.
//!
//! An id is unique per (topic, producer) (the event key), so two producers may each have stored an event
//! with the same id. The answer is the one event (`data`) when one matches; `?producer=` chooses among
//! several, and without it several matches are a 400 at `producer` listing them. Read rules are those
//! of queries: the `TopicReader` gate, and a restricted reader's mandatory filters ANDed to the lookup,
//! so an event the reader may not see is a 404 like an id that does not exist (no oracle). The lookup
//! is planned as the query `{"filter": {"id": …[, "producer": …]}}` and served by the primary key.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use eventgate_core::error::{ApiError, ErrorDetail, ErrorKind};
use eventgate_core::http::TopicReader;
use eventgate_core::query::{self, QueryRequest};

use crate::AppState;

/// Producers listed when an id is ambiguous.
const MAX_LISTED: u32 = 10;

pub(crate) fn parse_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| {
        ErrorDetail::validation(
            "id",
            format!(
                "`{}` is not an event id (a UUID)",
                query::value::shorten(raw, 64)
            ),
        )
        .into()
    })
}

/// The query parameters: `producer` and `fields` (comma-separated); anything else is a 400.
fn parse_params(
    pairs: &[(String, String)],
) -> Result<(Option<String>, Option<Vec<String>>), ApiError> {
    let mut producer = None;
    let mut fields = None;
    let mut errors = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "producer" if producer.is_none() => producer = Some(value.clone()),
            "fields" if fields.is_none() => {
                fields = Some(if value.is_empty() {
                    Vec::new()
                } else {
                    value.split(',').map(|f| f.trim().to_owned()).collect()
                })
            }
            "producer" | "fields" => errors.push(ErrorDetail::validation(
                name.as_str(),
                "given more than once",
            )),
            other => errors.push(ErrorDetail::validation(
                query::value::shorten(other, 100),
                "unknown parameter; a lookup takes `producer` and `fields`",
            )),
        }
    }
    if errors.is_empty() {
        Ok((producer, fields))
    } else {
        Err(ApiError::from_details(errors))
    }
}

#[utoipa::path(
    get,
    path = "/stats/{topic}/events/{id}",
    tag = "queries",
    summary = "One event by its id",
    description = "The read rules of queries: an event the reader may not see is a 404, like an id \
        that does not exist. Two producers may have used the same id: then `producer` chooses (without \
        it, the 400 at `producer` names them).",
    params(
        ("topic" = String, Path, description = "The topic's name."),
        ("id" = uuid::Uuid, Path, description = "The event's id."),
        ("producer" = Option<String>, Query, description = "The producer whose event it is."),
        ("fields" = Option<String>, Query, description = "Comma-separated fields the event keeps."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The event.", body = crate::openapi::OneEvent),
        (status = 400, response = eventgate_core::http::openapi::BadRequest),
        (status = 401, response = eventgate_core::http::openapi::Unauthorized),
        (status = 403, response = eventgate_core::http::openapi::Forbidden),
        (status = 404, response = eventgate_core::http::openapi::NotFound),
        (status = 429, response = eventgate_core::http::openapi::TooManyRequests),
        (status = 503, response = eventgate_core::http::openapi::Unavailable),
    ),
)]
pub async fn lookup(
    reader: TopicReader,
    request: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let restrictions = reader.read_filters()?;
    let topic = &reader.topic;
    let id = parse_id(&path.1)?;
    let (producer, fields) = parse_params(&crate::routes::query_pairs(&request)?)?;
    let selection = fields
        .as_deref()
        .map(|names| query::selection(names, &topic.fields, state.limits.max_selected_fields))
        .transpose()?;
    let mut filter = Map::new();
    filter.insert("id".into(), Value::String(id.to_string()));
    if let Some(producer) = &producer {
        filter.insert("producer".into(), Value::String(producer.clone()));
    }
    let lookup = QueryRequest {
        filter,
        sort: Some(vec!["producer".into()]),
        limit: Some(u64::from(MAX_LISTED)),
        ..QueryRequest::default()
    };
    let plan = query::plan_restricted(
        &topic.name,
        &lookup,
        &topic.fields,
        &state.limits,
        &state.cursor_key,
        &restrictions,
    )?;
    let slot = state.slot(&reader.principal.user)?;
    let mut producers: Vec<String> = Vec::new();
    let page = crate::db::page::fetch_page(
        &state.pool,
        &topic.name,
        &plan,
        br#"{"success":true,"statusCode":200,"data":"#.to_vec(),
        state.answers.max_page_bytes,
        |out, index, event| {
            // The first match is written; the others only named, in case the id is ambiguous.
            if index == 0 {
                event.write_json_as(out, selection.as_ref());
            }
            producers.push(event.producer.to_owned());
        },
    )
    .await
    .map_err(|e| state.store_error(e))?;
    drop(slot);
    match page.rows {
        0 => Err(ApiError::new(
            ErrorKind::NotFound,
            match &producer {
                Some(p) => format!(
                    "no event {id} of producer {p:?} in topic {:?} that you may read",
                    topic.name
                ),
                None => format!("no event {id} in topic {:?} that you may read", topic.name),
            },
        )
        .with_field("id")),
        1 => {
            let mut body = page.body;
            body.push(b'}');
            Ok(HttpResponse::Ok()
                .content_type(actix_web::http::header::ContentType::json())
                .body(body))
        }
        n => {
            let more = if page.has_more { " or more" } else { "" };
            Err(ErrorDetail::validation(
                "producer",
                format!(
                    "{n}{more} events have id {id} in topic {:?} (an id is unique per producer): \
                     choose one with ?producer= ({})",
                    topic.name,
                    json!(producers)
                ),
            )
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ids_and_parameters_are_checked() {
        assert!(parse_id("0190a3b2-1c2d-7e3f-8a9b-000000000001").is_ok());
        let error = parse_id("42").expect_err("not a uuid");
        assert_eq!(error.details[0].field.as_deref(), Some("id"));
        assert_eq!(error.status(), 400);
        let (producer, fields) =
            parse_params(&pairs(&[("producer", "alice"), ("fields", "a, b")])).expect("valid");
        assert_eq!(producer.as_deref(), Some("alice"));
        assert_eq!(fields, Some(vec!["a".to_owned(), "b".to_owned()]));
        let error = parse_params(&pairs(&[
            ("sort", "x"),
            ("producer", "a"),
            ("producer", "b"),
        ]))
        .expect_err("refused");
        let named: Vec<_> = error
            .details
            .iter()
            .map(|d| d.field.clone().unwrap_or_default())
            .collect();
        assert_eq!(named, ["sort", "producer"]);
    }
}
