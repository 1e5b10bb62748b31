//! The OpenAPI document every program with HTTP routes serves, and its page: `/docs` and
//! `/docs/openapi.json`. Each program writes its own document's security (herald-ingest's in
//! [`crate::api::docs`], herald-metrics' in [`crate::metrics`]).

use std::sync::Arc;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{OpenApi, RefOr};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A program's document, as served, and its page.
pub struct Document {
    json: String,
    page: String,
}

impl Document {
    /// The document as finished by its program, with its page.
    pub fn new(doc: Value) -> Arc<Document> {
        let json = doc.to_string();
        // Inside a <script> element, "</" must not appear as is.
        let page = include_str!("openapi.html").replace("__SPEC__", &json.replace("</", "<\\/"));
        Arc::new(Document { json, page })
    }

    pub fn json(&self) -> &str {
        &self.json
    }
}

/// A named schema for `#/components/schemas`.
pub type Component = (String, RefOr<Schema>);

/// `T`'s schema under its name, and the schemas it refers to.
pub fn entry<T: ToSchema>() -> Vec<Component> {
    let mut all = vec![(T::name().into_owned(), T::schema())];
    T::schemas(&mut all);
    all
}

/// A document holding the schemas that bodies refer to by name from a `schema_with`
/// function (where no derive can register them); the test below finds any left out.
pub fn referenced(entries: &[fn() -> Vec<Component>]) -> OpenApi {
    let mut components = utoipa::openapi::Components::new();
    components
        .schemas
        .extend(entries.iter().flat_map(|entry| entry()));
    let mut api = OpenApi::default();
    api.components = Some(components);
    api
}

/// `/docs` and `/docs/openapi.json`, for any program's router (the [`Document`] comes as an
/// extension, layered once the router's document is complete).
pub fn routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(openapi_json))
}

/// This API, as a page (no assets to fetch)
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
async fn page(Extension(doc): Extension<Arc<Document>>) -> Html<String> {
    Html(doc.page.clone())
}

/// This document
#[utoipa::path(get, path = "/docs/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
async fn openapi_json(Extension(doc): Extension<Arc<Document>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.json.clone(),
    )
        .into_response()
}

/// The document's title, description and the `Problem` schema every error refers to.
pub fn finish(mut api: OpenApi, title: &str, description: &str) -> Value {
    api.info.title = title.into();
    api.info.version = "1".into();
    api.info.description = Some(description.into());
    api.info.license = None;
    api.info.contact = None;
    let mut doc = serde_json::to_value(&api).unwrap_or_else(|_| json!({}));
    doc["components"]["schemas"]["Problem"] =
        serde_json::to_value(crate::schema::problem()).unwrap_or_default();
    doc
}

/// An error answer of the document, as a `Problem`.
pub fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}
