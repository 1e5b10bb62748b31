//! The API's OpenAPI document and its page. The paths, parameters and bodies come from
//! `openapi.json` (written by `docs/openapi.py`); who may call each operation is written in
//! from [`super::access::access`], the same table the middleware enforces, so the document
//! cannot say a route is open when it is not (or the reverse).

use std::sync::OnceLock;

use axum::http::Method;
use serde_json::{json, Value};

use super::access::{access, Access};

/// The paths and bodies, as `docs/openapi.py` wrote them.
const PATHS: &str = include_str!("openapi.json");

/// The document served at `/docs/openapi.json`.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc: Value = serde_json::from_str(PATHS).unwrap_or_else(|_| json!({}));
        with_security(&mut doc);
        doc.to_string()
    })
}

/// `/docs`: the document as a page, with no assets to fetch.
pub fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        // Inside a <script> element, "</" must not appear as is.
        include_str!("docs.html").replace("__SPEC__", &document().replace("</", "<\\/"))
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// Writes each operation's security requirement, its scope (`x-herald-scope`) and the
/// answers authentication adds.
fn with_security(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "Herald service key (hk_...)",
                   "description": "A key made by `herald keys create --scopes ...`; the scope an operation needs is its x-herald-scope."},
        "shopperToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (HS256; claims sub, role admin|user, exp)"},
        "receiptSignature": {"type": "apiKey", "in": "header", "name": "Herald-Signature",
                             "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\"> with the provider's receipt secret; at most 5 minutes old."},
    });
    // RFC 9457 problem details: every error body of every route (crate::http::problem).
    doc["components"]["schemas"]["Error"] = json!({
        "type": "object",
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"},
            "status": {"type": "integer"}, "detail": {"type": "string"},
            "error": {"type": "string"}, "field": {"type": "string"},
            "retry_after_s": {"type": "integer"},
        },
        "required": ["type", "title", "status", "detail", "error"],
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, operations) in paths.iter_mut() {
        let Some(operations) = operations.as_object_mut() else {
            continue;
        };
        for (method, op) in operations.iter_mut() {
            let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                continue;
            };
            describe(op, access(&method, path));
        }
    }
}

fn describe(op: &mut Value, needed: Access) {
    let (security, scope) = match needed {
        Access::Public | Access::Link => (json!([]), None),
        Access::Key(scope) | Access::Requests(scope) => (json!([{"apiKey": []}]), Some(scope)),
        Access::Shopper(Some(scope)) => {
            (json!([{"shopperToken": []}, {"apiKey": []}]), Some(scope))
        }
        Access::Shopper(None) => (json!([{"shopperToken": []}]), None),
        Access::Signed => (json!([{"receiptSignature": []}]), None),
        Access::Webhook => (json!([{"providerSignature": []}]), None),
    };
    op["security"] = security;
    if let Some(scope) = scope {
        op["x-herald-scope"] = json!(scope.as_str());
    }
    if matches!(needed, Access::Public | Access::Link) {
        return;
    }
    let responses = &mut op["responses"];
    responses["401"] = error_response("Missing or invalid credentials");
    if !matches!(needed, Access::Signed | Access::Webhook) {
        responses["403"] = error_response("The credentials do not allow this operation");
    }
    if matches!(needed, Access::Key(_) | Access::Requests(_)) {
        responses["429"] = error_response("Over the key's call rate (Retry-After)");
    }
}
