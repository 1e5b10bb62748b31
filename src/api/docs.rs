//! herald-ingest's OpenAPI document (served by [`crate::openapi`]). Paths, parameters, bodies and answers come from the
//! handlers' `#[utoipa::path]` and the serde types they read and write (collected by
//! `utoipa_axum`'s router as the routes are added); who may call each operation is written
//! in from [`super::access::access`], the table the middleware enforces, so the document
//! cannot say a route is open when it is not (or the reverse).

use std::sync::Arc;

use axum::http::Method;
use serde_json::{json, Value};
use utoipa::openapi::OpenApi;

use super::access::{access, Access};
pub use crate::openapi::{entry, referenced, routes, Component, Document};
use crate::openapi::{error_response, finish};

impl Document {
    /// herald-ingest's document, with each operation's security from the access table.
    pub fn ingest(api: OpenApi, topics: &crate::model::TopicCatalog) -> Arc<Document> {
        let mut doc = finish(
            api,
            "Herald API (herald-ingest)",
            "Seed 001's requests API exactly as contracted, offers and campaigns, receipts, \
             sales and user events, one-click unsubscribe and provider webhooks, and seed 002's \
             flash promos.",
        );
        with_security(&mut doc);
        with_conditional_rules(&mut doc);
        with_topics(&mut doc, topics);
        Document::new(doc)
    }
}

/// Rules between members of one body, which the derives cannot state.
fn with_conditional_rules(doc: &mut Value) {
    if let Some(Value::Object(user_event)) = doc["components"]["schemas"].get_mut("UserEvent") {
        user_event.extend(crate::model::commerce::UserEvent::purchase_rule());
    }
    doc["components"]["schemas"]["OneUserEvent"] = json!({
        "allOf": [{"$ref": "#/components/schemas/UserEvent"}, {"not": {"required": ["events"]}}],
    });
}

/// The topics are configuration: the document lists this deployment's, wherever one is
/// named (a campaign's, a promo's, the preferences' keys).
fn with_topics(doc: &mut Value, topics: &crate::model::TopicCatalog) {
    let names: Vec<Value> = topics.names().map(|t| json!(t.as_str())).collect();
    let schemas = &mut doc["components"]["schemas"];
    for schema in ["NewCampaign", "NewPromo"] {
        if let Some(topic) = schemas[schema]["properties"].get_mut("topic") {
            let mut allowed = names.clone();
            allowed.push(Value::Null);
            topic["enum"] = Value::Array(allowed);
        }
    }
    if let Some(map) = schemas["PreferenceView"]["properties"].get_mut("topics") {
        let channels = serde_json::to_value(crate::model::Channel::map_schema(
            json!({"type": "boolean"}),
        ))
        .unwrap_or_default();
        *map = json!({
            "type": "object",
            "description": map["description"].clone(),
            "propertyNames": {"enum": names},
            "additionalProperties": channels,
        });
    }
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
        "providerSignature": {"type": "apiKey", "in": "header", "name": "X-Twilio-Signature",
                              "description": "The provider's own signature: Twilio's X-Twilio-Signature, Meta's X-Hub-Signature-256 (see each operation)."},
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    fn document() -> Value {
        serde_json::from_str(&super::super::openapi_json()).unwrap()
    }

    #[test]
    fn every_reference_names_a_schema_of_the_document() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50, "{}", found.len());
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} is referred to but not in the document"
            );
        }
    }

    #[test]
    fn every_operation_has_a_summary_an_answer_and_its_security() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut n = 0;
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                n += 1;
                assert!(
                    op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{method} {path}"
                );
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
                assert!(op["security"].is_array(), "{method} {path}");
            }
        }
        assert!(n >= 29, "{n} operations");
        // A body limit the server enforces is the schema's (stated once: Message::MAX_TO_LEN).
        let to = &doc["components"]["schemas"]["Message"]["properties"]["to"];
        assert_eq!(to["maxLength"], crate::model::Message::MAX_TO_LEN);
    }
}
