//! The OpenAPI 3.1 document of each API, and what both documents share.
//!
//! Each API's document is generated from the `#[utoipa::path]` annotations on its handlers (its
//! `openapi` module lists them; a test there checks the list against the routes the server really has).
//! This module adds what every route shares — the error envelope's schema, the error answers by status
//! ([`BadRequest`], [`Unauthorized`], … referenced by the handlers' annotations), the bearer security
//! scheme — and the routes that publish the document: `GET /openapi.json` and the page `GET /api`,
//! registered by [`super::ApiServer`] beside the API's own routes.
//!
//! The page is ours (`docs/`: HTML, CSS and a small script, embedded in the binary) rather than Swagger
//! UI, Redoc or Scalar: their Rust crates either download the assets from GitHub while building (a
//! build must need nothing but the package registries) or load them from a CDN at run time, and the
//! page must work offline and under a strict Content-Security-Policy. Vendoring Swagger UI's bundle
//! would add about 1.5 MB of third-party JavaScript to each binary for what a page of a few hundred
//! lines does: list the operations with their parameters, bodies, answers and schemas.
//!
//! The document names no topic: topic names and schemas are only for users who may write or read them
//! (`GET /topics/{topic}` on the ingest-api answers a topic's JSON Schema to them), and the document is
//! public. So the body of `POST /topics/{topic}` is described as an object or a batch of objects.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};
use utoipa::{OpenApi as _, PartialSchema, ToSchema};

use crate::error::{ApiError, ErrorDetail, ErrorKind};

/// The name of the security scheme handlers' annotations require: `security(("bearer" = []))`.
pub const BEARER: &str = "bearer";

/// The one error envelope of both APIs (`crate::error`): every 4xx and 5xx answer has this shape.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"success": false, "statusCode": 400, "errors": [
    {"type": "validation", "message": "5 is not of type \"string\"", "field": "event_name"}]}))]
pub struct ErrorEnvelope {
    /// Always `false` in an error.
    pub success: bool,
    /// The HTTP status, repeated.
    pub status_code: u16,
    /// Every problem found, at least one; the first one's `type` decides the status.
    #[schema(min_items = 1)]
    pub errors: Vec<ErrorDetail>,
}

/// An error answer of one status: the envelope with that `statusCode`, and `Retry-After` (seconds)
/// where retrying helps.
fn error_response(status: u16, description: &str, retry_after: bool) -> RefOr<Response> {
    let schema = Schema::AllOf(
        AllOfBuilder::new()
            .item(Ref::from_schema_name("ErrorEnvelope"))
            .item(
                ObjectBuilder::new().property(
                    "statusCode",
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .enum_values(Some([status])),
                ),
            )
            .build(),
    );
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new().schema(Some(schema)).build(),
    );
    if retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .description(Some("Seconds to wait before retrying."))
                .build(),
        );
    }
    RefOr::T(response.build())
}

/// Declares an error answer that handlers' annotations reference with `(status = N, response = Name)`;
/// [`finish`] puts every one of them into the document's `components.responses`.
macro_rules! error_responses {
    ($($name:ident = $status:literal, $retry:literal, $description:literal;)+) => {
        $(
            #[doc = $description]
            pub struct $name;

            impl<'a> utoipa::ToResponse<'a> for $name {
                fn response() -> (&'a str, RefOr<Response>) {
                    (stringify!($name), error_response($status, $description, $retry))
                }
            }
        )+

        fn shared_responses() -> Vec<(&'static str, RefOr<Response>)> {
            vec![$(<$name as utoipa::ToResponse>::response()),+]
        }
    };
}

error_responses! {
    BadRequest = 400, false,
        "The request breaks a rule (`validation`: schema, query language, parameters) or is not JSON \
         (`malformed`); every problem is listed, each naming its `field`.";
    Unauthorized = 401, false,
        "No usable bearer token (`auth`): missing, malformed, expired, wrong issuer or audience, or \
         signed by an unknown key.";
    Forbidden = 403, false,
        "The token's user may not do this to this topic (`permission`), or a field restriction forbids \
         it.";
    NotFound = 404, false, "No such topic (`not_found`, field `topic`) or no such thing on it.";
    RequestTimeout = 408, false,
        "The body did not arrive within `limits.body_timeout_ms` (`timeout`).";
    PayloadTooLarge = 413, false,
        "The body, an event or an event's JSON values are over a configured limit (`too_large`).";
    TooManyRequests = 429, true,
        "The user sends faster than its rate allows, or has too many statements running \
         (`rate_limit`); retry after `Retry-After` seconds.";
    Unavailable = 503, true,
        "A dependency cannot serve the request now: the broker did not acknowledge in time (`queue`), \
         the database is unreachable, busy or timed out (`database`), or the identity provider's keys \
         cannot be fetched (`auth_unavailable`). Retry after `Retry-After` seconds.";
}

/// Completes an API's document: the paths of `/openapi.json` and `/api`, the shared error answers and
/// schemas, and the bearer scheme.
pub fn finish(document: OpenApi) -> OpenApi {
    let mut document = document.merge_from(DocsApi::openapi());
    let components = document.components.get_or_insert_with(Default::default);
    for (name, response) in shared_responses() {
        components.responses.insert(name.to_owned(), response);
    }
    for (name, schema) in [
        ("ErrorEnvelope", ErrorEnvelope::schema()),
        ("ErrorDetail", ErrorDetail::schema()),
        ("ErrorKind", ErrorKind::schema()),
    ] {
        components.schemas.insert(name.to_owned(), schema);
    }
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A JWT (RS256 or ES256) from the identity provider, in `Authorization: Bearer \
                     <token>`; its `sub` is the user the access rules name.",
                ))
                .build(),
        ),
    );
    document
}

/// The document as served, serialised once at start-up.
pub struct OpenApiJson(pub web::Bytes);

impl OpenApiJson {
    pub fn new(document: &OpenApi) -> Result<OpenApiJson, serde_json::Error> {
        Ok(OpenApiJson(web::Bytes::from(document.to_json()?)))
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(openapi_json, docs_page, docs_asset))]
struct DocsApi;

#[derive(utoipa::OpenApi)]
#[openapi(paths(super::token::token))]
struct TokenApi;

/// The document of `GET /token` (`super::configure_token`), for the APIs that serve it.
pub fn token_document() -> OpenApi {
    TokenApi::openapi()
}

/// Adds `GET /openapi.json`, `GET /api` and the page's assets; the document is app data
/// ([`OpenApiJson`]).
pub fn configure_docs(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json))
        .route("/api", web::get().to(docs_page))
        .route("/api/{file}", web::get().to(docs_asset));
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "documentation",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API.",
         content_type = "application/json", body = Object),
    ),
)]
async fn openapi_json(document: web::Data<OpenApiJson>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(header::ContentType::json())
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .body(document.0.clone())
}

const PAGE: &str = include_str!("docs/api.html");
const SCRIPT: &str = include_str!("docs/api.js");
const STYLE: &str = include_str!("docs/api.css");

/// Own scripts and styles only, requests to this origin only (the document), no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; \
     base-uri 'none'";

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
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .body(body)
}

/// The API's documentation: a page that renders `/openapi.json` (no CDN, works offline).
#[utoipa::path(
    get,
    path = "/api",
    tag = "documentation",
    responses(
        (status = 200, description = "The documentation page.", content_type = "text/html",
         body = String),
    ),
)]
async fn docs_page() -> HttpResponse {
    asset_response(PAGE, "text/html; charset=utf-8")
}

/// The documentation page's script and style.
#[utoipa::path(
    get,
    path = "/api/{file}",
    tag = "documentation",
    params(("file" = String, Path, description = "`api.js` or `api.css`.")),
    responses(
        (status = 200, description = "The asset.", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        (status = 404, response = NotFound),
    ),
)]
async fn docs_asset(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    match file.as_str() {
        "api.js" => Ok(asset_response(SCRIPT, "text/javascript; charset=utf-8")),
        "api.css" => Ok(asset_response(STYLE, "text/css; charset=utf-8")),
        _ => Err(ApiError::new(ErrorKind::NotFound, "no such asset").with_field("file")),
    }
}

/// Every route pattern an app serves (`/topics/{topic}`), for the tests that check a document against
/// the routes. actix-web has no API that lists them; the request's resource map names each one in its
/// `Debug` form, and a test that finds none fails (so a change of that form cannot pass unnoticed).
pub fn route_patterns(request: &actix_web::HttpRequest) -> std::collections::BTreeSet<String> {
    let debug = format!("{:?}", request.resource_map());
    let mut patterns = std::collections::BTreeSet::new();
    let mut rest = debug.as_str();
    while let Some(start) = rest.find("Single(\"") {
        rest = &rest[start + "Single(\"".len()..];
        let Some(end) = rest.find("\")") else { break };
        if !rest[..end].is_empty() {
            patterns.insert(rest[..end].to_owned());
        }
        rest = &rest[end..];
    }
    patterns
}

/// The `(method, path)` of every operation of a document, methods in upper case.
pub fn operations(document: &OpenApi) -> std::collections::BTreeSet<(String, String)> {
    let mut operations = std::collections::BTreeSet::new();
    for (path, item) in &document.paths.paths {
        let item = serde_json::to_value(item).unwrap_or_default();
        if let Some(methods) = item.as_object() {
            for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
                if methods.contains_key(method) {
                    operations.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    operations
}

/// Checks a document against the app `configure` builds, both ways: every route is documented, and
/// every documented operation is answered by a route of its method (a request to it does not reach
/// the app's default service). For each API's tests; panics with the differences.
pub async fn assert_document_matches_routes(
    document: &OpenApi,
    configure: impl FnOnce(&mut web::ServiceConfig),
) {
    use actix_web::{test, App, HttpRequest};
    const UNROUTED: u16 = 599;
    let app = test::init_service(
        App::new()
            .configure(configure)
            .route(
                "/__route_patterns",
                web::get().to(|request: HttpRequest| async move {
                    HttpResponse::Ok().json(route_patterns(&request))
                }),
            )
            .default_service(web::to(|| async {
                HttpResponse::new(
                    actix_web::http::StatusCode::from_u16(UNROUTED).expect("a valid status"),
                )
            })),
    )
    .await;
    let listed: std::collections::BTreeSet<String> = test::call_and_read_body_json(
        &app,
        test::TestRequest::get()
            .uri("/__route_patterns")
            .to_request(),
    )
    .await;
    let routes: std::collections::BTreeSet<String> = listed
        .into_iter()
        .filter(|pattern| pattern != "/__route_patterns")
        .collect();
    assert!(
        !routes.is_empty(),
        "no route pattern found in the resource map's Debug form (did actix-web change it?)"
    );
    let operations = operations(document);
    let documented: std::collections::BTreeSet<String> =
        operations.iter().map(|(_, path)| path.clone()).collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "routes without a documented operation: {undocumented:?}; documented paths without a route: \
         {unserved:?}"
    );
    // The gate's refusals: whoever needs a token can be refused one (401), and a token signed by a key
    // of an unreachable JWKS is a 503.
    let json = serde_json::to_value(document).expect("the document serialises");
    for (method, path) in &operations {
        let operation = &json["paths"][path][method.to_lowercase()];
        if operation.get("security").is_some() {
            for status in ["401", "503"] {
                assert!(
                    operation["responses"].get(status).is_some(),
                    "{method} {path} needs a token but does not document {status}"
                );
            }
        }
    }
    for (method, path) in &operations {
        // Any value fills a path parameter: the routes match any segment.
        let uri: String = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let request = test::TestRequest::default()
            .method(method.parse().expect("an HTTP method"))
            .uri(if uri.is_empty() { "/" } else { &uri })
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_ne!(
            response.status().as_u16(),
            UNROUTED,
            "{method} {path} is documented but no route of that method answers it"
        );
    }
}
