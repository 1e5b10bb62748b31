#!/usr/bin/env bash
# Flash-promo benchmark (seed 002): N customers placed within 2 km of a store, one promo
# opening now; measures how fast its notifications go out (activation by herald-retry,
# fan-out in batches of 1000, the e-mail dispatcher, the simulated provider with receipts),
# then the reserve latency with many buyers at once. Release builds, a broker of its own.
# Prints figures; never fails for speed.
#   scripts/bench-promos.sh [N] [CONCURRENCY]      (defaults 100000, 2000)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HERALD_ROOT"
N=${1:-100000}
CONCURRENCY=${2:-2000}
PARTITIONS=${HERALD_BENCH_PARTITIONS:-16}
API=${HERALD_BENCH_API_ADDR:-127.0.0.1:5076}
PROVIDER=${HERALD_BENCH_PROVIDER_ADDR:-127.0.0.1:3076}
NS="benchp$RANDOM"
PROMO="bench-$RANDOM"
export HERALD_PROFILE=release
export HERALD_PROVIDER_API_KEY="bench-$RANDOM$RANDOM"
export HERALD_NAMESPACE=$NS

ensure_apt redis-server curl python3
build_fleet
setup_credentials "$HERALD_STATE/bench-promos-keys"
BIN=$(bin_dir)
OUT="$HERALD_STATE/bench-promos"
mkdir -p "$OUT"

stack_was_up=""
stack_running && stack_was_up=1
pids=()
broker_pid=""
OWN_BROKER_PID=""
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do [ "$pid" = "$broker_pid" ] || kill -TERM "$pid" 2>/dev/null || true; done
    sleep 2
    for pid in "${pids[@]}"; do [ "$pid" = "${BROKER_CPU_PID:-}" ] && [ -z "$OWN_BROKER_PID" ] && continue; kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    redis-cli -p "$HERALD_REDIS_PORT" --scan --pattern "$NS:*" 2>/dev/null \
        | xargs -r -n 5000 redis-cli -p "$HERALD_REDIS_PORT" UNLINK >/dev/null 2>&1 || true
    [ -z "$stack_was_up" ] && bash scripts/stack.sh down
    log "logs in $OUT/"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for port in "${API##*:}" "${PROVIDER##*:}" 5081 5082 5083; do ensure_port_free "$port" herald-bench; done
bash scripts/stack.sh up
# shellcheck disable=SC1091
source "$HERALD_STATE/stack.env"

start() { # name, then the command
    local name=$1; shift
    "$@" >"$OUT/$name.log" 2>&1 &
    pids+=($!)
}

start_bench_broker "$OUT" "$PARTITIONS" "$NS"
broker_pid=$BROKER_CPU_PID
# The broker's CPU is a row of the table: the mock is a child like the fleet; Kafka is the
# stack's, watched but never stopped here.
pids+=("$broker_pid")
names+=(broker)

start provider "$BIN/herald-provider" --addr "$PROVIDER" --latency-min-ms 0 --latency-max-ms 2 \
    --receipt-url "http://$API/v1/receipts" --receipt-delay-ms 100
# Each benchmark user reserves once: the per-user limit stays as deployed.
start ingest "$BIN/herald-ingest" --http-addr "$API"
export HERALD_PROVIDER_URL="http://$PROVIDER"
start dispatch-email "$BIN/herald-dispatch" --channel email --health-addr 127.0.0.1:5081 \
    --max-in-flight 2048 --provider-concurrency 1024 --provider-rate 1000000 --provider-max-rate 1000000
start fanout "$BIN/herald-fanout" --health-addr 127.0.0.1:5082
start retry "$BIN/herald-retry" --health-addr 127.0.0.1:5083 --promo-poll-ms 100
wait_port "${API##*:}" herald-ingest
wait_port "${PROVIDER##*:}" herald-provider

log "storing $N customers within 1.9 km of the store (not timed)"
"$BIN/herald-dev" --api "http://$API" seed-customers --count "$N" --prefix pb --channels email \
    --near 40.4168,-3.7038 --radius-m 1900

ADMIN=$("$BIN/herald-dev" token --role admin --sub bench-ops)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ends=$(date -u -d '+30 minutes' +%Y-%m-%dT%H:%M:%SZ)
log "flash promo $PROMO opening now for everyone within 2 km"
start_ns=$(date +%s%N)
curl -sf -X POST "http://$API/api/flash-promos/" -H "Authorization: Bearer $ADMIN" \
    -H 'content-type: application/json' -d "{
  \"id\": \"$PROMO\", \"store\": {\"id\": \"s1\", \"name\": \"Tienda Sol\", \"location\": {\"lat\": 40.4168, \"lon\": -3.7038}},
  \"product\": {\"id\": \"p1\", \"name\": \"Auriculares\"}, \"price\": \"19.99\", \"units\": 100000,
  \"starts_at\": \"$now\", \"ends_at\": \"$ends\"}" >"$OUT/promo.json"
for _ in $(seq 600); do
    curl -sf -H "Authorization: Bearer $HERALD_API_KEY" "http://$API/v1/campaigns/promo-$PROMO" >/dev/null && break
    sleep 0.1
done
activated_ns=$(date +%s%N)
"$BIN/herald" --api "http://$API" campaign watch "promo-$PROMO" >"$OUT/watch.txt" 2>&1 || true
end_ns=$(date +%s%N)
curl -s -H "Authorization: Bearer $HERALD_API_KEY" "http://$API/v1/campaigns/promo-$PROMO" >"$OUT/campaign.json"
curl -s "http://$API/api/flash-promos/$PROMO/" -H "Authorization: Bearer $ADMIN" >"$OUT/promo-state.json"
curl -s "http://$PROVIDER/v1/stats" >"$OUT/provider.json"

log "reserve latency: 20,000 buyers, $CONCURRENCY at a time"
ulimit -n 65536 2>/dev/null || true
"$BIN/herald-dev" --api "http://$API" bench-reserve --promo "$PROMO" --users 20000 \
    --concurrency "$CONCURRENCY" | tee "$OUT/reserve.txt"
log "reserve latency: 20,000 other buyers, 64 at a time (below saturation)"
"$BIN/herald-dev" --api "http://$API" bench-reserve --promo "$PROMO" --users 20000 \
    --prefix rl --concurrency 64 | tee "$OUT/reserve-64.txt"

python3 - "$N" "$start_ns" "$activated_ns" "$end_ns" "$OUT" "$CONCURRENCY" <<'PY'
import json, sys
n, start, activated, end, out = int(sys.argv[1]), *map(int, sys.argv[2:5]), sys.argv[5]
c = json.load(open(f"{out}/campaign.json"))
p = json.load(open(f"{out}/promo-state.json"))
r = dict(l.split() for l in open(f"{out}/reserve.txt") if l.strip())
r64 = dict(l.split() for l in open(f"{out}/reserve-64.txt") if l.strip())
counts = c.get("counts", {})
secs = (end - start) / 1e9
sent = counts.get("sent", 0)
print()
print(f"customers within 2 km      {n:,}; segment {p['notifications'].get('segment')}, notified {p['notifications'].get('notified')}")
print(f"promo created -> campaign  {(activated - start) / 1e9:.1f} s (activation: segment, daily cap, batches)")
print(f"campaign status            {c.get('status')} (sent {sent:,}, delivered {counts.get('delivered', 0):,})")
print(f"promo created -> last      {secs:.1f} s")
print(f"notifications a minute     {sent / secs * 60:,.0f}")
prov = json.load(open(f"{out}/provider.json"))
print(f"duplicates (provider)      {prov['extra_deliveries']} extra deliveries, {prov['recipients_reached_twice']} reached twice, replayed {prov['replayed']}; resent {counts.get('resent', 0)}, uncertain {counts.get('uncertain', 0)}")
print(f"reserve at {sys.argv[6]} concurrent: {r.get('reserve_per_sec')}/s, p50 {r.get('reserve_p50_ms')} ms, p99 {r.get('reserve_p99_ms')} ms, max {r.get('reserve_max_ms')} ms")
print("reserve statuses           " + ", ".join(f"{k[15:]}: {v}" for k, v in r.items() if k.startswith("reserve_status_")))
print(f"reserve at 64 concurrent:  {r64.get('reserve_per_sec')}/s, p50 {r64.get('reserve_p50_ms')} ms, p99 {r64.get('reserve_p99_ms')} ms, max {r64.get('reserve_max_ms')} ms")
PY
