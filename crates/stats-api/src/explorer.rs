//! The event explorer: `GET /` serves a small page (HTML, CSS and JavaScript from `assets/`, embedded in
//! the binary, no CDN, no build step) on which an analyst pastes a token, picks a topic, builds filters
//! from its fields, sorts, pages, expands payloads, charts counts over time and downloads a CSV. The page
//! only calls this service's public API with the pasted token; it holds no secret and needs no session.
//!
//! `GET /stats` lists the topics the token may read, for the page's topic picker.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use eventgate_core::error::{ApiError, ErrorKind};
use eventgate_core::gate::Gatekeeping;
use eventgate_core::http::authorization;

const PAGE: &str = include_str!("../assets/explorer.html");
const SCRIPT: &str = include_str!("../assets/explorer.js");
const STYLE: &str = include_str!("../assets/explorer.css");

/// Scripts, styles and requests from this origin only, no inline script, no framing: a token pasted
/// into the page can only ever be sent back to this API.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset_response(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .insert_header((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        // The assets change with the binary; a restart must not leave a stale script behind.
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .body(body)
}

#[utoipa::path(
    get,
    path = "/",
    tag = "explorer",
    summary = "The explorer page",
    responses((status = 200, description = "The page (HTML).", content_type = "text/html", body = String)),
)]
pub(crate) async fn page() -> HttpResponse {
    asset_response(PAGE, "text/html; charset=utf-8")
}

#[utoipa::path(
    get,
    path = "/explorer/{file}",
    tag = "explorer",
    params(("file" = String, Path, description = "`explorer.js` or `explorer.css`.")),
    responses(
        (status = 200, description = "The asset.", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        (status = 404, response = eventgate_core::http::openapi::NotFound),
    ),
)]
pub(crate) async fn asset(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    match path.as_str() {
        "explorer.js" => Ok(asset_response(SCRIPT, "text/javascript; charset=utf-8")),
        "explorer.css" => Ok(asset_response(STYLE, "text/css; charset=utf-8")),
        _ => Err(ApiError::new(ErrorKind::NotFound, "no such asset")),
    }
}

/// `GET /stats`: the topics the token may read, by name (401 without a valid token).
#[utoipa::path(
    get,
    path = "/stats",
    tag = "topics",
    summary = "The topics the token may read",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Their names.", body = crate::openapi::TopicNames),
        (status = 401, response = eventgate_core::http::openapi::Unauthorized),
        (status = 429, response = eventgate_core::http::openapi::TooManyRequests),
        (status = 503, response = eventgate_core::http::openapi::Unavailable),
    ),
)]
pub(crate) async fn topics(
    request: HttpRequest,
    gate: web::Data<Gatekeeping>,
) -> Result<HttpResponse, ApiError> {
    let principal = gate.verifier.authenticate(authorization(&request))?;
    gate.rate_limits.check_query(&principal.user)?;
    let catalogue = gate.catalogue.current();
    let mut names: Vec<&str> = catalogue
        .topics()
        .filter(|topic| gate.access.read_access(&principal, &topic.name).is_some())
        .map(|topic| topic.name.as_str())
        .collect();
    names.sort_unstable();
    let topics: Vec<_> = names.iter().map(|name| json!({"name": name})).collect();
    Ok(HttpResponse::Ok().json(json!({"success": true, "statusCode": 200, "topics": topics})))
}
