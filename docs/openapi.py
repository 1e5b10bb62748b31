#!/usr/bin/env python3
"""Writes src/api/openapi.json, the OpenAPI 3.0 description of herald-ingest's HTTP API that
herald-ingest serves at /docs/openapi.json. Run after changing a route: python3 docs/openapi.py
(tests/it/api_docs.rs checks that every route the code declares is described, and that every
described path answers). Who may call each operation is not written here: herald-ingest adds
it from src/api/access.rs when it serves the document (tests/it/api_access.rs calls every
operation with no, wrong and right credentials)."""
import json, pathlib

def obj(props, required=()):
    return {"type": "object", "properties": props, "required": list(required)} if required else {"type": "object", "properties": props}

S = {"type": "string"}
I = {"type": "integer", "minimum": 0}
DEC = {"type": "string", "pattern": r"^\d+(\.\d{1,2})?$", "description": "Exact decimal, at most two decimals (a JSON number is accepted too)"}
TS = {"type": "string", "format": "date-time", "description": "RFC 3339; seed 003's form without offset is read as UTC"}
CH = {"type": "string", "enum": ["email", "sms", "whatsapp", "push"]}
LOC = obj({"lat": {"type": "number"}, "lon": {"type": "number"}}, ["lat", "lon"])
# RFC 9457 problem details, on every error of every route (application/problem+json).
ERR = obj({"type": {"type": "string", "description": "about:blank, or urn:herald:problem:invalid-field"},
           "title": S, "status": {"type": "integer", "minimum": 400, "maximum": 599}, "detail": S,
           "error": dict(S, description="The detail again (the shape Herald has always answered)"),
           "field": {"type": "string", "description": "The offending field, e.g. events[3].amount"}},
          ["type", "title", "status", "detail", "error"])

def resp(desc, schema=None):
    r = {"description": desc}
    if schema:
        media = "application/problem+json" if schema is ERR else "application/json"
        r["content"] = {media: {"schema": schema}}
    return r

def body(schema):
    return {"required": True, "content": {"application/json": {"schema": schema}}}

TPL = {"type": "string", "maxLength": 16384, "description": "Jinja (minijinja) template: {{ name }}, {{ id }}, {{ language }} and the customer's attributes by name; unknown names and syntax errors are refused with 422 naming the place"}
EMAIL_TPL = obj({"subject": TPL, "html": {"type": "string", "maxLength": 16384, "nullable": True, "description": "HTML part, Jinja, values HTML-escaped"}, "from": {"type": "string", "nullable": True, "description": "Name <address> or an address"}}, ["subject"])
ERRS = {"400": resp("Not JSON", ERR), "413": resp("Body larger than the route's limit", ERR), "415": resp("Body is not Content-Type: application/json", ERR), "422": resp("A field is invalid (named in `field`)", ERR)}
NF = {"404": resp("Unknown", ERR)}
# 401/403/429 and each operation's `security` are written in by herald-ingest from its access
# table (src/api/access.rs), the one the middleware enforces.
AUTH = {"503": resp("No JWT secret configured", ERR)}

# Ids are tokens: 1-64 letters, digits, '-', '_', '.' (safe in keys and URLs).
ID = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
LANG = {"type": "string", "pattern": "^[A-Za-z0-9]{1,8}(-[A-Za-z0-9]{1,8})*$", "maxLength": 16,
        "description": "Language tag (es, en, pt-BR)"}
def per_channel(schema):
    return {"type": "object", "properties": {c: schema for c in CH["enum"]}, "additionalProperties": False}

def p(name, desc="", where="path"):
    return {"name": name, "in": where, "required": where == "path", "schema": S, "description": desc}

customer = obj({
    "id": ID, "name": {"type": "string", "maxLength": 200, "nullable": True},
    "contacts": dict(per_channel({"type": "string", "minLength": 1, "maxLength": 320, "pattern": "\\S"}), description="Address per channel"),
    "consent": per_channel({"type": "boolean"}),
    "time_zone": {"type": "string", "description": "IANA name, e.g. Europe/Madrid"},
    "location": dict(LOC, nullable=True),
    "attributes": {"type": "object", "maxProperties": 64, "additionalProperties": {"type": "string", "maxLength": 1024}},
    "language": dict(LANG, nullable=True, description="Language tag (es, en, pt-BR): which of a campaign's translations the customer gets"),
})
sale = obj({
    "event_type": {"type": "string", "enum": ["sale_completed"]}, "sale_id": S,
    "product_id": {"oneOf": [S, {"type": "integer"}]}, "product_name": S,
    "quantity": {"type": "integer", "minimum": 1, "maximum": 10000}, "total": DEC,
    "customer_email": {"type": "string", "format": "email"}, "customer_id": S, "timestamp": TS,
}, ["event_type", "sale_id", "product_id", "product_name", "quantity", "total", "customer_email", "timestamp"])
user_event = obj({
    "event_id": S, "user_id": S,
    "event_type": {"type": "string", "enum": ["click", "view", "add_to_cart", "purchase"]},
    "category": S, "product_id": {"oneOf": [S, {"type": "integer"}]},
    "amount": dict(DEC, description="Purchases only, and required for them"), "timestamp": TS,
}, ["event_id", "user_id", "event_type", "timestamp"])
segment = obj({
    "radius_m": {"type": "number", "default": 2000, "maximum": 50000},
    "min_purchases": I, "min_spent": DEC, "categories": {"type": "array", "items": S},
    "attributes": {"type": "object", "additionalProperties": S},
})
promo_in = obj({
    "id": S, "store": obj({"id": S, "name": S, "location": LOC}, ["id", "name", "location"]),
    "product": obj({"id": S, "name": S}, ["id", "name"]), "price": DEC, "original_price": DEC,
    "units": {"type": "integer", "minimum": 1}, "starts_at": TS, "ends_at": TS, "segment": segment,
    "message": {"type": "string", "description": "Template; {{name}} and profile attributes are filled per customer"},
    "channels": {"type": "array", "items": CH},
}, ["store", "product", "price", "units", "starts_at", "ends_at"])
promo_out = obj({
    "id": S, "status": {"type": "string", "enum": ["scheduled", "active", "ended"]}, "price": DEC,
    "stock": obj({"available": I, "held": I, "sold": I}),
    "notifications": obj({"activated_at": TS, "campaign": S, "near": I, "segment": I, "capped": I, "notified": I}),
})

paths = {
    "/v1/requests": {"post": {"summary": "Create a notification request (seed 001)", "requestBody": body(obj({"to": {"type": "string", "minLength": 1, "maxLength": 320, "pattern": "\\S"}, "message": {"type": "string", "minLength": 1, "maxLength": 8192, "pattern": "\\S"}, "type": {"type": "string", "enum": ["email", "sms", "push"]}}, ["to", "message", "type"])),
        "responses": {"201": resp("Created", obj({"id": S})), **ERRS}}},
    "/v1/requests/{id}/process": {"post": {"summary": "Queue a request for sending (idempotent)", "parameters": [p("id")], "responses": {"202": resp("Queued"), **NF, "503": resp("Kafka did not acknowledge in time", ERR)}}},
    "/v1/requests/{id}": {"get": {"summary": "A request's status", "parameters": [p("id")], "responses": {"200": resp("Status", obj({"id": S, "status": {"type": "string", "enum": ["queued", "processing", "sent", "failed"]}})), **NF}}},
    "/v1/customers/{id}": {
        "put": {"summary": "Store a customer", "parameters": [p("id")], "requestBody": body(customer), "responses": {"200": resp("Stored", customer), **ERRS}},
        "get": {"summary": "A customer", "parameters": [p("id")], "responses": {"200": resp("The customer", customer), **NF}}},
    "/v1/customers/batch": {"post": {"summary": "Store up to 10,000 customers", "requestBody": body(obj({"customers": {"type": "array", "items": customer}}, ["customers"])), "responses": {"200": resp("Stored", obj({"stored": I})), **ERRS}}},
    "/v1/customers/{id}/loyalty": {"get": {"summary": "Loyalty points of a customer id or e-mail address", "parameters": [p("id", "Customer id or e-mail address")], "responses": {"200": resp("The account", obj({"customer": S, "points": {"type": "integer"}, "sales": I, "spent": DEC, "last_sale_id": S, "recent": {"type": "array", "items": obj({"sale_id": S, "points": {"type": "integer"}, "total": DEC, "at_ms": I})}})), **NF}}},
    "/v1/customers/{id}/activity": {"get": {"summary": "A user's aggregated events (seed 004)", "parameters": [p("id")], "responses": {"200": resp("Aggregates", obj({"user_id": S, "events": I, "clicks": I, "views": I, "add_to_cart": I, "purchases": I, "spent": DEC, "categories": {"type": "object", "additionalProperties": I}, "last_seen_ms": I})), **NF}}},
    "/v1/campaigns": {"post": {"summary": "Send a campaign of personalised offers (the same id again resumes)", "requestBody": body(obj({"id": dict(ID, nullable=True), "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"}, "template": TPL, "email": dict(EMAIL_TPL, nullable=True), "whatsapp": dict(nullable=True, **obj({"name": {"type": "string", "pattern": "^[a-z0-9_]+$", "description": "An approved template in Meta's manager"}, "language": dict(LANG, nullable=True, description="When the customer's profile has none"), "parameters": {"type": "array", "maxItems": 20, "items": TPL}}, ["name"])), "translations": {"type": "object", "description": "The message in other languages, by language tag (es, en, pt-br); chosen by the customer's `language`", "additionalProperties": obj({"template": TPL, "email": EMAIL_TPL}, ["template"])}, "channels": {"type": "array", "items": CH, "uniqueItems": True}, "confirmation_timeout_ms": per_channel({"type": "integer", "minimum": 100, "maximum": 604800000}), "max_cost": {"type": "number", "minimum": 0, "nullable": True}, "audience": obj({"customer_ids": {"type": "array", "items": ID, "minItems": 1, "maxItems": 5000000}}, ["customer_ids"])}, ["name", "template", "audience"])),
        "responses": {"202": resp("Queued", obj({"id": S, "recipients": I, "batches": I})), "200": resp("Already there: resumed"), **ERRS,
                      "409": resp("Another campaign (definition or audience) has this id", ERR), "503": resp("Kafka or Redis unavailable, or the same id being stored by another call: post it again", ERR)}}},
    "/v1/campaigns/{id}": {"get": {"summary": "A campaign's progress and counts", "parameters": [p("id")], "responses": {"200": resp("Report", obj({"id": S, "status": {"type": "string", "enum": ["fanning_out", "running", "completed"]}, "recipients": I, "progress": {"type": "object"}, "counts": {"type": "object", "additionalProperties": I}})), **NF}}},
    "/v1/unsubscribe/{token}": {"get": {"summary": "The page a promotional e-mail's unsubscribe link opens (changes nothing)", "parameters": [p("token", "The signed token of the link")], "responses": {"200": {"description": "A confirmation page", "content": {"text/html": {"schema": S}}}, **NF}},
                                "post": {"summary": "One-click unsubscribe (RFC 8058): withdraws consent to promotional e-mail; idempotent; the signed token is the credential", "parameters": [p("token", "The signed token of the link")], "requestBody": {"required": False, "content": {"application/x-www-form-urlencoded": {"schema": obj({"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}})}}}, "responses": {"200": {"description": "Unsubscribed", "content": {"text/html": {"schema": S}}}, **NF}}},
    "/v1/bounces": {"post": {"summary": "A bounce reported later (the provider's webhook, an operator): a hard bounce suppresses the address for promotions", "requestBody": body(dict(obj({"address": {"type": "string", "minLength": 1, "maxLength": 320, "pattern": "\\S"}, "kind": {"type": "string", "enum": ["hard", "soft"]}, "reason": {"type": "string", "maxLength": 500, "nullable": True}, "channel": CH}, ["address", "kind"]), additionalProperties=False)), "responses": {"200": resp("Recorded", obj({"address": S, "channel": CH, "suppressed": {"type": "boolean"}})), **ERRS}}},
    "/v1/webhooks/twilio": {"post": {"summary": "Twilio's status callbacks and inbound messages (X-Twilio-Signature: HMAC-SHA1 over the full URL and the sorted form parameters); a STOP/BAJA reply withdraws promotions to that number", "parameters": [p("key", "The delivery key Herald put in the StatusCallback URL", "query")], "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": obj({"MessageSid": S, "MessageStatus": S, "ErrorCode": S, "From": S, "Body": S})}}}, "responses": {"200": resp("Applied (or nothing to apply)"), **ERRS}}},
    "/v1/webhooks/whatsapp": {"get": {"summary": "Meta's webhook verification handshake: echoes hub.challenge when hub.verify_token matches", "parameters": [p("hub.mode", "subscribe", "query"), p("hub.verify_token", "HERALD_WHATSAPP_VERIFY_TOKEN", "query"), p("hub.challenge", "Echoed back", "query")], "responses": {"200": {"description": "The challenge", "content": {"text/plain": {"schema": S}}}}},
                              "post": {"summary": "Meta's WhatsApp Cloud API webhooks (X-Hub-Signature-256 of the raw body): statuses become receipts, STOP/BAJA messages withdraw promotions", "requestBody": body(obj({"object": S, "entry": {"type": "array", "items": {"type": "object"}}})), "responses": {"200": resp("Applied", obj({"outcomes": {"type": "object"}, "opted_out": I})), **ERRS}}},
    "/v1/receipts": {"post": {"summary": "Delivery receipts from a provider: one, or {\"receipts\": [...]}", "requestBody": body({"oneOf": [obj({"key": S, "status": {"type": "string", "enum": ["delivered", "failed"]}, "reason": S}, ["key", "status"]), obj({"receipts": {"type": "array", "items": {"type": "object"}}})]}), "responses": {"200": resp("Applied"), **ERRS}}},
    "/v1/sales": {"post": {"summary": "A completed sale (seed 003): a confirmation e-mail and loyalty points follow", "requestBody": body(sale), "responses": {"202": resp("Accepted", obj({"sale_id": S, "status": S, "confirmation": {"type": "string", "description": "The request id of the confirmation e-mail"}, "loyalty_account": S})), **ERRS, "503": resp("Kafka unavailable", ERR)}}},
    "/v1/user-events": {"post": {"summary": "User events (seed 004): one, or {\"events\": [...]} (up to 10,000)", "requestBody": body({"oneOf": [user_event, obj({"events": {"type": "array", "items": user_event}}, ["events"])]}), "responses": {"202": resp("Accepted", obj({"accepted": I})), **ERRS, "503": resp("Kafka unavailable: send them again", ERR)}}},
    "/api/flash-promos/": {"post": {"summary": "Create a flash promo (admin)", "requestBody": body(promo_in), "responses": {"201": resp("Created", promo_out), "200": resp("This id exists: the stored promo", promo_out), **ERRS, **AUTH, "403": resp("Not an admin", ERR)}}},
    "/api/flash-promos/active/": {"get": {"summary": "Promos whose window is open", "responses": {"200": resp("Active promos", obj({"count": I, "promos": {"type": "array", "items": promo_out}}))}}},
    "/api/flash-promos/{id}/": {"get": {"summary": "One promo with its stock and notification figures", "parameters": [p("id")], "responses": {"200": resp("The promo", promo_out), **NF, **AUTH}}},
    "/api/flash-promos/{id}/reserve/": {"post": {"summary": "Hold one unit for the caller (60 s)", "parameters": [p("id")], "responses": {"201": resp("Held", obj({"promo_id": S, "user_id": S, "status": S, "expires_at": TS, "expires_in_ms": I, "units_left": I})), "200": resp("Already held by the caller: the same hold"), "409": resp("Sold out, already bought, or not open yet", ERR), "410": resp("Ended", ERR), "429": resp("Over the caller's rate limit (Retry-After)", ERR), **NF, **AUTH}}},
    "/api/flash-promos/{id}/purchase/": {"post": {"summary": "Buy the unit the caller holds", "parameters": [p("id")], "responses": {"201": resp("Bought", obj({"promo_id": S, "user_id": S, "status": S, "price": DEC, "sale_id": S})), "200": resp("Bought before: the same purchase"), "409": resp("No live hold by the caller, or not open yet", ERR), "410": resp("Ended", ERR), "429": resp("Over the caller's rate limit (Retry-After)", ERR), **NF, **AUTH}}},
    "/api/users/segments/": {"get": {"summary": "The caller's segments and the active promos that suit them", "parameters": [p("user_id", "Admins only: another user", "query")], "responses": {"200": resp("Segments", obj({"user_id": S, "segments": {"type": "array", "items": S}, "located": {"type": "boolean"}, "promos": {"type": "array", "items": S}})), **NF, **AUTH, "403": resp("A user asked for someone else", ERR)}}},
    "/healthz": {"get": {"summary": "Alive", "responses": {"200": resp("ok")}}},
    "/readyz": {"get": {"summary": "Ready: Redis answers", "responses": {"200": resp("ready"), "503": resp("not ready")}}},
    "/metrics": {"get": {"summary": "Prometheus metrics (requests by route and status)", "responses": {"200": resp("text/plain exposition")}}},
    "/docs": {"get": {"summary": "This API, as a page", "responses": {"200": resp("HTML")}}},
    "/docs/openapi.json": {"get": {"summary": "This document", "responses": {"200": resp("OpenAPI 3.0")}}},
}

doc = {
    "openapi": "3.0.3",
    "info": {"title": "Herald API (herald-ingest)", "version": "1",
             "description": "Seed 001's requests API exactly as contracted, offers and campaigns, receipts, sales and user events, and seed 002's flash promos."},
    "paths": paths,
}
out = pathlib.Path(__file__).resolve().parent.parent / "src" / "api" / "openapi.json"
out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
print(f"wrote {out} ({len(paths)} paths)")
