#!/usr/bin/env bash
# The demo: builds Herald (release), brings up the local stack (Redis + Apache Kafka), the
# simulated provider (with faults) and the fleet, sends requests through the seed 001 API
# with progress, a campaign of personalised offers, and a burst of shop events (sales and
# user events, seeds 003/004), prints the outcome, and stops everything at the end or on
# Ctrl-C.
#   scripts/demo.sh [COUNT]        (default 300)
#   HERALD_DEMO_KEEP=1 scripts/demo.sh   keeps the fleet running until Ctrl-C
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HERALD_ROOT"
COUNT=${1:-300}
API_ADDR=${HERALD_DEMO_API_ADDR:-127.0.0.1:5000}
PROVIDER_ADDR=${HERALD_DEMO_PROVIDER_ADDR:-127.0.0.1:3001}
METRICS_ADDR=${HERALD_DEMO_METRICS_ADDR:-127.0.0.1:9300}
SMTP_PORT=${HERALD_DEMO_SMTP_PORT:-2525}
MAIL_DIR="$HERALD_STATE/mail"
export HERALD_PROFILE=release
export HERALD_PROVIDER_API_KEY=${HERALD_PROVIDER_API_KEY:-demo-$RANDOM$RANDOM}

ensure_apt redis-server curl python3
build_fleet
BIN=$(bin_dir)
mkdir -p "$HERALD_STATE/logs"
log "credentials: an admin key from \`herald keys create\` in .herald/demo-keys/keys.toml, a receipt secret, a JWT secret"
setup_credentials "$HERALD_STATE/demo-keys"
AUTH="Authorization: Bearer $HERALD_API_KEY"
(umask 077; printf '%s\n' "$HERALD_API_KEY" >"$HERALD_STATE/demo-keys/admin.key"
    printf '%s\n' "$HERALD_JWT_SECRET" >"$HERALD_STATE/demo-keys/jwt.secret")

stack_was_up=""
stack_running && stack_was_up=1
fleet_pids=()
cleanup() {
    trap - EXIT INT TERM
    log "stopping the fleet"
    for pid in "${fleet_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${fleet_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_pidfile "$HERALD_STATE/smtp.pid" || true
    [ -z "$stack_was_up" ] && bash "$HERALD_ROOT/scripts/stack.sh" down
    log "logs are in .herald/logs/"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_port_free "${PROVIDER_ADDR##*:}" herald-provider
ensure_port_free "${API_ADDR##*:}" herald-ingest
ensure_port_free "${METRICS_ADDR##*:}" herald-metrics
FAILING_PORT=${HERALD_DEMO_FAILING_PROVIDER_ADDR:-127.0.0.1:3009}
ensure_port_free "${FAILING_PORT##*:}" "the failing provider"
bash scripts/stack.sh up
# shellcheck disable=SC1091
source "$HERALD_STATE/stack.env"
# The broker creates no topic by itself: the fleet's are made as an operator makes them.
if pid_alive "$HERALD_STATE/kafka.pid"; then
    log "creating the fleet's topics (herald topics create --partitions 8)"
    "$BIN/herald" topics create --partitions 8 | sed 's/^/    /'
fi

start() { # name, then the command
    local name=$1; shift
    "$@" >"$HERALD_STATE/logs/$name.log" 2>&1 &
    fleet_pids+=($!)
}

log "starting the simulated provider on $PROVIDER_ADDR (10% errors, 2% hangs, 200 req/s limit)"
start provider "$BIN/herald-provider" --addr "$PROVIDER_ADDR" --error-rate 0.1 --hang-rate 0.02 \
    --hang-ms 5000 --rate-limit 200 --latency-min-ms 5 --latency-max-ms 40 \
    --receipt-url "http://$API_ADDR/v1/receipts" --receipt-delay-ms 300 --receipt-loss-rate 0.1
wait_port "${PROVIDER_ADDR##*:}" herald-provider
export HERALD_PROVIDER_URL="http://$PROVIDER_ADDR"
export HERALD_PROVIDER_TIMEOUT_MS=1000

log "starting a real SMTP server on 127.0.0.1:$SMTP_PORT (aiosmtpd from PyPI): e-mail goes there through SMTP"
rm -rf "$MAIL_DIR"
start_smtp_catcher "$SMTP_PORT" "$MAIL_DIR"
export HERALD_SMTP_URL="smtp://127.0.0.1:$SMTP_PORT"
export HERALD_EMAIL_FROM="Tienda Demo <ofertas@tienda.example>"
export HERALD_PUBLIC_URL="http://$API_ADDR"

FAILING_ADDR=${HERALD_DEMO_FAILING_PROVIDER_ADDR:-127.0.0.1:3009}
log "push has two providers (.herald/demo-providers.toml): push-primary fails every call, so push fails over to push-backup"
start provider-failing "$BIN/herald-provider" --addr "$FAILING_ADDR" --error-rate 1.0
wait_port "${FAILING_ADDR##*:}" "the failing provider"
cat >"$HERALD_STATE/demo-providers.toml" <<EOF
# Push: two providers in order. The first answers every call with a 5xx (a provider down);
# its circuit opens and every push goes to the second, with the same idempotency key.
[[push]]
name = "push-primary"
adapter = "http"
url = "http://$FAILING_ADDR"
[[push]]
name = "push-backup"
adapter = "http"
url = "http://$PROVIDER_ADDR"
EOF
export HERALD_PROVIDERS="$HERALD_STATE/demo-providers.toml"
"$BIN/herald" providers check | sed 's/^/    /'

log "starting herald-ingest on $API_ADDR, one dispatcher per channel, fan-out, herald-retry, herald-metrics, herald-events"
start ingest "$BIN/herald-ingest" --http-addr "$API_ADDR"
port=9401
for channel in email sms whatsapp push; do
    start "dispatch-$channel" "$BIN/herald-dispatch" --channel "$channel" --health-addr "127.0.0.1:$port"
    port=$((port + 1))
done
start fanout "$BIN/herald-fanout" --health-addr 127.0.0.1:9405
start retry "$BIN/herald-retry" --health-addr 127.0.0.1:9406
start events "$BIN/herald-events" --health-addr 127.0.0.1:9407
start metrics "$BIN/herald-metrics" --http-addr "$METRICS_ADDR"
wait_port "${METRICS_ADDR##*:}" herald-metrics
log "live dashboard: http://$METRICS_ADDR/   (log in with the key in .herald/demo-keys/admin.key; Prometheus: /metrics, JSON: /v1/stats, with that key as a bearer token)"
wait_port "${API_ADDR##*:}" herald-ingest
for _ in $(seq 50); do
    curl -sf "http://$API_ADDR/readyz" >/dev/null && break
    sleep 0.2
done

log "sending $COUNT requests through POST /v1/requests and /process"
"$BIN/herald-dev" --api "http://$API_ADDR" send-requests --count "$COUNT"

echo
CAMPAIGN="demo-$(date +%s)"
log "personalised offers: $COUNT customers, campaign $CAMPAIGN (e-mail, then WhatsApp, SMS, push;"
log "e-mail goes through SMTP and is confirmed when the server accepts it; on the other channels"
log "10% of the simulator's receipts are lost, so those customers fall back after 3 s)"
"$BIN/herald-dev" --api "http://$API_ADDR" seed-customers --count "$COUNT" --prefix demo \
    --channels email,whatsapp,sms,push
"$BIN/herald-dev" --api "http://$API_ADDR" send-campaign --id "$CAMPAIGN" --count "$COUNT" \
    --prefix demo --channels email,whatsapp,sms,push --timeout-ms 3000 --wait-secs 90

show_mail() {
    python3 - "$MAIL_DIR/messages.jsonl" <<'PY'
import json, sys
msgs = [json.loads(l) for l in open(sys.argv[1])]
promo = [m for m in msgs if m["list_unsubscribe"]]
print(f"    {len(msgs)} e-mails at the SMTP server ({len(promo)} promotional, with one-click unsubscribe)")
for m in [x for x in promo if "demo0@" in x["to"] or "demo1@" in x["to"]][:2]:
    print(f"    To: {m['to']}  Subject: {m['subject']}\n      text: {(m['text'] or '').strip()}\n      html: {(m['html'] or '').strip()}")
PY
}
log "e-mails received by the SMTP server (.herald/mail/messages.jsonl, raw MIME in .herald/mail/raw/):"
show_mail
UNSUBSCRIBE=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    m = json.loads(l)
    if m["list_unsubscribe"] and "demo0@" in m["to"]:
        print(m["list_unsubscribe"].split(">")[0][1:]); break' "$MAIL_DIR/messages.jsonl")
if [ -n "$UNSUBSCRIBE" ]; then
    log "demo0 clicks one-click unsubscribe (RFC 8058, as Gmail does): $(curl -s -o /dev/null -w '%{http_code}' -X POST -d 'List-Unsubscribe=One-Click' "$UNSUBSCRIBE")"
    log "  campaign $CAMPAIGN now counts: $(curl -s -H "$AUTH" "http://$API_ADDR/v1/campaigns/$CAMPAIGN" | python3 -c 'import json,sys; print({"unsubscribed": json.load(sys.stdin)["counts"].get("unsubscribed", 0)})')"
fi

log "push failover (the dashboard's provider panel shows the same):"
curl -s http://127.0.0.1:9404/stats | python3 -c 'import json,sys
s = json.load(sys.stdin)
for p in s["providers"]:
    c = p["calls"]
    print("    {:<13} circuit {:<9} calls {:>4}  accepted {:>4}  server errors {:>4}".format(p["name"], p["circuit"], c["calls"], c["delivered"], c["server_errors"]))
print("    failovers to the next provider: {}".format(s["failovers"]))'

log "(customers are in Europe/Madrid: at night SMS and WhatsApp are in quiet hours, so a customer"
log " whose e-mail and push stayed silent waits for 09:00 and the campaign stays 'running')"
echo

PROMO="flash-$(date +%s)"
log "flash promo $PROMO (seed 002): 10 headphones at 19.99 for the $COUNT customers within 2 km of a store"
"$BIN/herald-dev" --api "http://$API_ADDR" seed-customers --count "$COUNT" --prefix near --channels email \
    --near 40.4168,-3.7038 --radius-m 1900
ADMIN=$("$BIN/herald-dev" token --role admin --sub demo-ops)
curl -sf -X POST "http://$API_ADDR/api/flash-promos/" -H "Authorization: Bearer $ADMIN" \
    -H 'content-type: application/json' -d "{
  \"id\": \"$PROMO\", \"store\": {\"id\": \"sol\", \"name\": \"Tienda Sol\", \"location\": {\"lat\": 40.4168, \"lon\": -3.7038}},
  \"product\": {\"id\": \"p1\", \"name\": \"Auriculares\"}, \"price\": \"19.99\", \"original_price\": \"49.99\", \"units\": 10,
  \"starts_at\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"ends_at\": \"$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)\"}" >/dev/null
for _ in $(seq 50); do
    curl -sf -H "$AUTH" "http://$API_ADDR/v1/campaigns/promo-$PROMO" >/dev/null && break
    sleep 0.2
done
BUYER=$("$BIN/herald-dev" token --role user --sub near0)
log "near0 reserves: $(curl -s -X POST "http://$API_ADDR/api/flash-promos/$PROMO/reserve/" -H "Authorization: Bearer $BUYER")"
log "near0 buys:     $(curl -s -X POST "http://$API_ADDR/api/flash-promos/$PROMO/purchase/" -H "Authorization: Bearer $BUYER")"
sleep 2
log "the promo now: $(curl -s "http://$API_ADDR/api/flash-promos/$PROMO/" -H "Authorization: Bearer $ADMIN" | python3 -c 'import json,sys; p=json.load(sys.stdin); print(json.dumps({"stock": p["stock"], "notifications": p["notifications"]}))')"
log "try: curl -H \"Authorization: Bearer \$(HERALD_JWT_SECRET=\$(cat $HERALD_STATE/demo-keys/jwt.secret) herald-dev token --role user --sub near1)\" -X POST http://$API_ADDR/api/flash-promos/$PROMO/reserve/"
echo

log "shop events: 5 s of shoppers (the same $COUNT demo customers) clicking and buying, 1% invalid, 1% copies"
"$BIN/herald-dev" generate-events --rate 1000 --duration 5 --users "$COUNT" --prefix demo
log "one sale through the API (seed 003's event):"
curl -s -X POST "http://$API_ADDR/v1/sales" -H "$AUTH" -H 'content-type: application/json' -d "{
  \"event_type\": \"sale_completed\", \"sale_id\": \"demo-$(date +%s)\", \"product_id\": 1,
  \"product_name\": \"Manzana Orgánica\", \"quantity\": 5, \"total\": 75.00,
  \"customer_email\": \"cliente@example.com\", \"timestamp\": \"$(date -u +%Y-%m-%dT%H:%M:%S)\"}"
echo
for _ in $(seq 50); do
    curl -sf -H "$AUTH" "http://$API_ADDR/v1/customers/cliente@example.com/loyalty" >/dev/null && break
    sleep 0.2
done
log "herald-events: $(curl -s http://127.0.0.1:9407/stats)"
log "every /v1 route takes the key: export HERALD_API_KEY=\$(cat $HERALD_STATE/demo-keys/admin.key)"
log "loyalty:  curl -H \"Authorization: Bearer \$HERALD_API_KEY\" http://$API_ADDR/v1/customers/cliente@example.com/loyalty  (or demo0, demo1, ...)"
log "activity: curl -H \"Authorization: Bearer \$HERALD_API_KEY\" http://$API_ADDR/v1/customers/demo0/activity"
echo
log "provider's view: $(curl -s "http://$PROVIDER_ADDR/v1/stats")"
log "campaign report: curl -H \"Authorization: Bearer \$HERALD_API_KEY\" http://$API_ADDR/v1/campaigns/$CAMPAIGN"
log "the API is at http://$API_ADDR  (try: herald requests get <id>, with HERALD_API_KEY set)"
log "dashboard: http://$METRICS_ADDR/  ·  Prometheus metrics: http://$METRICS_ADDR/metrics and /metrics on ports 9401-9407"
if [ -n "${HERALD_DEMO_KEEP:-}" ]; then
    log "fleet running; Ctrl-C to stop"
    wait
fi
