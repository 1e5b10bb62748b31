//! The pieces of the OpenAPI documents that derive macros cannot write: a limit the
//! validator enforces is a constant, and the schema states the same constant, so the
//! document and the server cannot disagree on it (issue 19: the hand-written document was
//! looser than the server in eight places). Types carry their own schemas (`ToSchema` on
//! the serde types); fields whose rule is a constant name one of these functions with
//! `#[schema(schema_with = ...)]`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{ContentBuilder, Ref, RefOr};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Longest display name (campaigns, customers, products).
pub const MAX_NAME_LEN: usize = 200;
/// Longest address a contact, a request's `to` or a bounce may carry (RFC 5321's path).
pub const MAX_ADDRESS_LEN: usize = 320;

/// A schema written as JSON. Only literals of this crate reach it; debug builds (every test)
/// check that nothing of one was lost on the way, so a typo fails `cargo test`, not a client.
pub fn from_json(value: Value) -> Schema {
    let parsed = serde_json::from_value::<Schema>(value.clone());
    debug_assert!(
        parsed.is_ok(),
        "schema literal {value}: {:?}",
        parsed.as_ref().err()
    );
    let schema = parsed.unwrap_or_default();
    debug_assert_eq!(
        serde_json::to_value(&schema).ok().map(as_floats),
        Some(as_floats(value)),
        "a schema literal utoipa cannot hold"
    );
    schema
}

/// The value with every number a float (50000 and 50000.0 are one bound).
fn as_floats(value: Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.into_iter().map(as_floats).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, as_floats(v))).collect())
        }
        other => other,
    }
}

/// Gives a type the schema `$schema` (an expression of this module's functions), under its
/// own name in `#/components/schemas`.
macro_rules! described {
    ($ty:ty, $schema:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $schema.into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}
pub(crate) use described;

/// A token id (`CustomerId`, `CampaignId`...): the pattern `is_token` checks.
pub fn token(max: usize) -> Schema {
    from_json(json!({
        "type": "string",
        "pattern": format!("^[A-Za-z0-9._-]{{1,{max}}}$"),
        "description": format!("1-{max} letters, digits, '-', '_' or '.'"),
    }))
}

/// A text that must hold something other than blanks, at most `max` bytes (the schema
/// counts characters, a looser bound for non-ASCII text, never a tighter one).
pub fn text(max: usize) -> Schema {
    from_json(json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": "\\S"}))
}

pub fn name() -> Schema {
    text(MAX_NAME_LEN)
}

pub fn optional_name() -> Schema {
    from_json(json!({"type": ["string", "null"], "maxLength": MAX_NAME_LEN}))
}

pub fn address() -> Schema {
    text(MAX_ADDRESS_LEN)
}

/// Money: an exact decimal, at most two places (a JSON number is accepted too).
pub fn money() -> Schema {
    from_json(json!({
        "type": ["string", "number"], "pattern": MONEY_PATTERN, "minimum": 0, "maximum": MAX_AMOUNT,
        "description": "Exact decimal, at most two places, as text (answers) or a number",
    }))
}

pub fn optional_money() -> Schema {
    from_json(json!({
        "type": ["string", "number", "null"], "pattern": MONEY_PATTERN, "minimum": 0, "maximum": MAX_AMOUNT,
        "description": "Exact decimal, at most two places, as text (answers) or a number",
    }))
}

/// The largest amount of money a body may carry (whole units).
pub const MAX_AMOUNT: i64 = 1_000_000_000;

/// Money as text: what `commerce::cents` accepts (answers always write this form).
const MONEY_PATTERN: &str = "^(\\d{1,9}(\\.\\d{1,2})?|1000000000(\\.0{1,2})?)$";

/// An instant, as events carry it.
/// A timestamp's year from 1970: what a millisecond count since the epoch can hold.
const SINCE_1970: &str = "^(19[7-9][0-9]|[2-9][0-9]{3})-";

pub fn timestamp() -> Schema {
    from_json(json!({
        "type": "string", "format": "date-time", "pattern": SINCE_1970,
        "description": "RFC 3339; seed 003's form without offset is read as UTC. Not before \
                        1970, and (a rule no schema states) at most a day ahead of the \
                        server's clock",
    }))
}

pub fn optional_timestamp() -> Schema {
    from_json(json!({"type": ["string", "null"], "format": "date-time", "pattern": SINCE_1970}))
}

/// `#/components/schemas/Problem`: RFC 9457 problem details, the body of every error of
/// every program ([`crate::http::problem`] writes it).
pub fn problem() -> Schema {
    from_json(json!({
        "type": "object",
        "description": "RFC 9457 problem details",
        "properties": {
            "type": {"type": "string", "description": "about:blank, or urn:herald:problem:invalid-field"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "error": {"type": "string", "description": "The detail again (the shape Herald has always answered)"},
            "field": {"type": "string", "description": "The offending field, e.g. events[3].amount"},
            "retry_after_s": {"type": "integer", "minimum": 0},
        },
        "required": ["type", "title", "status", "detail", "error"],
    }))
}

/// The type of every error body ([`problem`]), for `body = Problem` in a handler's responses.
pub struct Problem;
described!(Problem, problem());

/// An error answer: a problem body.
fn problem_answer(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}

/// Declares a set of error answers a handler lists in its `responses(...)`.
macro_rules! problems {
    ($(#[$doc:meta])* $name:ident { $($status:literal => $description:literal),+ $(,)? }) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$(($status, $description)),+]
                    .into_iter()
                    .map(|(status, description): (u16, &str)| {
                        (status.to_string(), problem_answer(description))
                    })
                    .collect()
            }
        }
    };
}

problems!(
    /// What reading a JSON body can refuse.
    BodyErrors {
        400 => "Not JSON, or not an object",
        413 => "Body larger than the route's limit",
        415 => "Body is not Content-Type: application/json",
        422 => "A field is invalid (named in `field`)",
    }
);
problems!(
    /// A form body (provider webhooks).
    FormErrors {
        413 => "Body larger than the route's limit",
        422 => "A field is invalid (named in `field`)",
    }
);
problems!(NotFound { 404 => "Unknown" });
problems!(
    /// A readiness probe's refusal ([`crate::health::not_ready`]).
    NotReady { 503 => "Not ready: what does not answer is in `detail`" }
);
problems!(
    /// herald-metrics reads every figure from Redis.
    StoreDown { 503 => "Redis unavailable" }
);
problems!(
    /// A campaign id is the campaign: another definition or audience cannot take it.
    IdTaken { 409 => "Another campaign (definition or audience) has this id" }
);
problems!(
    /// An operator's action on a campaign in a state where it does not apply.
    StateConflict { 409 => "Not in a state where this applies (resume a running campaign, cancel a cancelled one)" }
);
problems!(
    /// A page's `before` or `limit` out of range or not a number.
    BadPage { 422 => "A bad `before` or `limit`" }
);
problems!(QueueDown { 503 => "Kafka or Redis did not answer in time: send it again" });
problems!(
    /// The flash-promo API's shopper tokens need a configured secret.
    NoJwtSecret { 503 => "No JWT secret configured" }
);
problems!(
    /// Reserving or buying a unit: the window, the stock and the caller's rate decide.
    BuyingErrors {
        404 => "Unknown",
        409 => "Sold out, already bought, no live hold, or not open yet",
        410 => "Ended",
        429 => "Over the caller's rate limit (Retry-After)",
        503 => "No JWT secret configured",
    }
);

/// A whole number as JSON Schema counts one: `668` and `668.0` alike (serde's integers
/// refuse the second, which a schema's `"type": "integer"` allows).
pub fn whole_number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;
    let n = <serde_json::Number as serde::Deserialize>::deserialize(d)?;
    let whole =
        whole_u64(&n).ok_or_else(|| D::Error::custom(format!("{n} is not a whole number")))?;
    T::try_from(whole).map_err(|_| D::Error::custom(format!("{n} is out of range")))
}

/// `n` as a non-negative whole number, when it is one (floats up to 2^53, where they are exact).
pub fn whole_u64(n: &serde_json::Number) -> Option<u64> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=EXACT).contains(f))
            .map(|f| f as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_literal_parses() {
        for s in [
            token(64),
            name(),
            optional_name(),
            address(),
            money(),
            optional_money(),
            timestamp(),
            optional_timestamp(),
            problem(),
        ] {
            let back = serde_json::to_value(&s).unwrap();
            assert!(back.is_object() && back != json!({}), "{back}");
        }
    }

    #[test]
    fn a_token_schema_states_the_validators_bound() {
        let s = serde_json::to_value(token(59)).unwrap();
        assert_eq!(s["pattern"], "^[A-Za-z0-9._-]{1,59}$");
    }
}
