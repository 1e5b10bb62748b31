#!/usr/bin/env bash
# The chaos run: a campaign through a fleet that is killed under it, and seed 001 requests
# whose publisher died between marking them and publishing them. Exits non-zero if a promise
# breaks; prints what it did and what it cost, beside the same campaign without faults.
#
#   scripts/chaos.sh            20,000 customers, a kill every 5 s (release build)
#   scripts/chaos.sh --short    2,000 customers, a kill every 3 s (what the test suite runs)
#
# Faults: the simulated provider fails 30% of calls; every interval one random process among
# herald-ingest, herald-fanout, each dispatcher, herald-retry and herald-metrics gets SIGKILL
# and is started again; Redis gets SIGKILL once, mid-campaign, and comes back from its
# append-only file; 100 seed 001 requests are marked published in Redis as /process does and
# never published, as if herald-ingest died between the two.
# Promises checked: every customer has one outcome in the report (delivered + failed +
# uncertain = audience), nobody is reached twice at the provider for one campaign (counted by
# idempotency key; the run's rules say "skip" for uncertain sends, so a crash mid-call leaves
# the customer `uncertain` rather than sent again), and every seed 001 request ends sent or
# failed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HERALD_ROOT"

N=20000
INTERVAL=5
if [ "${1:-}" = "--short" ]; then N=2000; INTERVAL=3; fi
N=${HERALD_CHAOS_CUSTOMERS:-$N}
REQUESTS=200
API=127.0.0.1:${HERALD_CHAOS_API_PORT:-5086}
PROVIDER=127.0.0.1:${HERALD_CHAOS_PROVIDER_PORT:-3086}
REDIS_PORT=${HERALD_CHAOS_REDIS_PORT:-6486}
OUT="$HERALD_STATE/chaos"

# The test suite hands its own debug binaries in; run by hand, the release build is used.
if [ -n "${HERALD_BIN_DIR:-}" ]; then
    BIN=$HERALD_BIN_DIR
else
    export HERALD_PROFILE=release
    ensure_apt redis-server curl python3
    build_fleet
    BIN=$(bin_dir)
fi
rm -rf "$OUT"
mkdir -p "$OUT/redis"

declare -A PIDS CMDS
started_stack=""
cleanup() {
    trap - EXIT INT TERM
    for name in "${!PIDS[@]}"; do kill -KILL "${PIDS[$name]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "$started_stack" ] && bash scripts/stack.sh down
    log "logs in $OUT/"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The campaign runs on the local stack's Apache Kafka (its own Redis is started below).
if [ "${HERALD_BENCH_BROKER:-kafka}" != mock ] && ! pid_alive "$HERALD_STATE/kafka.pid"; then
    bash scripts/stack.sh up
    started_stack=1
fi

start() { # name, then the command; remembered so that it can be started again
    local name=$1; shift
    CMDS[$name]="$*"
    "$@" >>"$OUT/$name.log" 2>&1 &
    PIDS[$name]=$!
}
restart() {
    local name=$1
    # shellcheck disable=SC2086
    ${CMDS[$name]} >>"$OUT/$name.log" 2>&1 &
    PIDS[$name]=$!
}
redis_start() {
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$OUT/redis" --save "" \
        --appendonly yes --appendfsync always >>"$OUT/redis.log" 2>&1 &
    PIDS[redis]=$!
    wait_port "$REDIS_PORT" redis
}

# One campaign through a fresh fleet; with CHAOS=1, under faults. Prints the report's JSON to
# $OUT/report-$LABEL.json and the provider's stats to $OUT/provider-$LABEL.json.
run_campaign() {
    local label=$1 chaos=$2
    for port in "${API##*:}" "${PROVIDER##*:}" "$REDIS_PORT" 5091 5092 5093 5094 5095 5096; do
        ensure_port_free "$port" herald-chaos
    done
    redis_start
    export HERALD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    export HERALD_NAMESPACE="chaos$label$RANDOM"
    # Topics of this run's own on the local stack's Apache Kafka (HERALD_BENCH_BROKER=mock: a
    # herald-broker of its own instead, stopped with the fleet).
    start_bench_broker "$OUT" 8 "$HERALD_NAMESPACE"
    [ -n "$OWN_BROKER_PID" ] && PIDS[broker]=$OWN_BROKER_PID
    setup_credentials "$OUT/keys-$label"
    sed -e 's/^uncertain_send = "resend"/uncertain_send = "skip"/' \
        -e 's/^\[channels.push\]/[channels.push]\nuncertain_send = "skip"/' \
        config/rules.toml >"$OUT/rules.toml"
    export HERALD_RULES="$OUT/rules.toml" HERALD_PROVIDER_URL="http://$PROVIDER"
    export HERALD_PROVIDER_API_KEY="chaos-$RANDOM$RANDOM"
    export HERALD_PROVIDER_TIMEOUT_MS=2000 HERALD_LEASE_MS=5000 HERALD_RETRY_WATCH_MS=4000
    export HERALD_RETRY_CLAIM_LEASE_MS=3000 HERALD_REQUEST_RECONCILE_MS=500 RUST_LOG=warn
    # A steady pace (a provider's contracted rate), so the campaign lasts long enough for the
    # faults to land in it: about 14 s for 2,000 customers, 140 s for 20,000.
    export HERALD_PROVIDER_RATE=150 HERALD_PROVIDER_MAX_RATE=150
    local errors=0
    [ "$chaos" = 1 ] && errors=0.3
    start provider "$BIN/herald-provider" --addr "$PROVIDER" --error-rate "$errors" \
        --latency-min-ms 1 --latency-max-ms 10 --receipt-url "http://$API/v1/receipts" \
        --receipt-delay-ms 100
    start ingest "$BIN/herald-ingest" --http-addr "$API"
    start dispatch-email "$BIN/herald-dispatch" --channel email --health-addr 127.0.0.1:5091
    start dispatch-push "$BIN/herald-dispatch" --channel push --health-addr 127.0.0.1:5092
    start fanout "$BIN/herald-fanout" --health-addr 127.0.0.1:5093
    start retry "$BIN/herald-retry" --health-addr 127.0.0.1:5094
    start metrics "$BIN/herald-metrics" --http-addr 127.0.0.1:5095
    wait_port "${API##*:}" herald-ingest
    wait_port "${PROVIDER##*:}" herald-provider
    local herald=("$BIN/herald-dev" --api "http://$API")
    "${herald[@]}" seed-customers --count "$N" --prefix c --channels email,push >/dev/null

    if [ "$chaos" = 1 ]; then
        # Seed 001 requests: half processed as usual, half marked as /process marks them and
        # never published (herald-ingest died between the two): herald-retry must publish them.
        : >"$OUT/requests.txt"
        for i in $(seq "$REQUESTS"); do
            id=$(curl -sf -X POST "http://$API/v1/requests" -H "Authorization: Bearer $HERALD_API_KEY" \
                -H 'content-type: application/json' \
                -d "{\"to\":\"r$i@example.com\",\"message\":\"m\",\"type\":\"email\"}" |
                python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
            echo "$id" >>"$OUT/requests.txt"
            if [ $((i % 2)) = 0 ]; then
                curl -sf -X POST "http://$API/v1/requests/$id/process" \
                    -H "Authorization: Bearer $HERALD_API_KEY" >/dev/null
            else
                now=$(date +%s%3N)
                redis-cli -p "$REDIS_PORT" hsetnx "$HERALD_NAMESPACE:req:$id" published_ms "$now" >/dev/null
                redis-cli -p "$REDIS_PORT" zadd "$HERALD_NAMESPACE:requests:publishing" "$now" "$id" >/dev/null
            fi
        done
    fi

    local started
    started=$(date +%s%N)
    "${herald[@]}" send-campaign --id "chaos-$label" --count "$N" --prefix c \
        --channels email,push --timeout-ms 3000 --wait-secs 0 >/dev/null
    local kills=0 redis_kills=0 victims=(ingest fanout dispatch-email dispatch-push retry metrics)
    if [ "$chaos" = 1 ]; then
        local deadline=$(( $(date +%s) + 600 ))
        while [ "$(date +%s)" -lt "$deadline" ]; do
            sleep "$INTERVAL"
            status=$(curl -s "http://$API/v1/campaigns/chaos-$label" -H "Authorization: Bearer $HERALD_API_KEY" |
                python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",""))' 2>/dev/null || true)
            # Killed mid-campaign only: once completed, there is nothing left to break.
            [ "$status" = completed ] && break
            if [ "$redis_kills" = 0 ] && [ "$kills" -ge 2 ]; then
                kill -KILL "${PIDS[redis]}"; wait "${PIDS[redis]}" 2>/dev/null || true
                redis_start
                redis_kills=1
                log "SIGKILL to redis; restarted from its append-only file"
            fi
            victim=${victims[$((RANDOM % ${#victims[@]}))]}
            kill -KILL "${PIDS[$victim]}" 2>/dev/null || true
            wait "${PIDS[$victim]}" 2>/dev/null || true
            restart "$victim"
            kills=$((kills + 1))
            log "SIGKILL to $victim (kill $kills); started again"
        done
    fi
    report() {
        curl -s "http://$API/v1/campaigns/chaos-$label" -H "Authorization: Bearer $HERALD_API_KEY"
    }
    for _ in $(seq 600); do
        report >"$OUT/report-$label.json" || true
        python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1])).get("status") != "completed")' \
            "$OUT/report-$label.json" 2>/dev/null && break
        sleep 1
    done
    local ended
    ended=$(date +%s%N)
    curl -s "http://$PROVIDER/v1/stats" >"$OUT/provider-$label.json"
    echo "$kills $redis_kills $(( (ended - started) / 1000000 ))" >"$OUT/faults-$label.txt"
    if [ "$chaos" = 1 ]; then
        for _ in $(seq 120); do
            pending=0
            while read -r id; do
                st=$(curl -s "http://$API/v1/requests/$id" -H "Authorization: Bearer $HERALD_API_KEY" |
                    python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",""))' 2>/dev/null || true)
                case "$st" in sent|failed) ;; *) pending=$((pending + 1)) ;; esac
            done <"$OUT/requests.txt"
            [ "$pending" = 0 ] && break
            sleep 1
        done
        echo "$pending" >"$OUT/requests-stuck.txt"
    fi
    for name in "${!PIDS[@]}"; do kill -TERM "${PIDS[$name]}" 2>/dev/null || true; done
    for name in "${!PIDS[@]}"; do wait "${PIDS[$name]}" 2>/dev/null || true; done
    PIDS=()
    rm -rf "$OUT/redis" "$OUT/broker.addr"
    mkdir -p "$OUT/redis"
}

log "the campaign without faults: $N customers"
run_campaign calm 0
log "the same campaign under chaos: a SIGKILL every ${INTERVAL}s, Redis killed once, 30% provider errors"
run_campaign chaos 1

python3 - "$N" "$OUT" <<'PY'
import json, sys
n, out = int(sys.argv[1]), sys.argv[2]
failed = []
print()
for label in ("calm", "chaos"):
    report = json.load(open(f"{out}/report-{label}.json"))
    provider = json.load(open(f"{out}/provider-{label}.json"))
    kills, redis_kills, ms = open(f"{out}/faults-{label}.txt").read().split()
    c = report["counts"]
    outcomes = c.get("delivered", 0) + c.get("failed", 0) + c.get("uncertain", 0)
    twice = provider["keys_delivered_twice"]
    print(f"{label:<6} {report['status']:<10} {int(ms) / 1000:>6.1f} s  outcomes {outcomes}/{n} "
          f"(delivered {c.get('delivered', 0)}, fell back {c.get('fallbacks', 0)}, failed {c.get('failed', 0)}, "
          f"uncertain {c.get('uncertain', 0)})  kills {kills}, redis restarts {redis_kills}, "
          f"reached twice {twice}, provider errors {provider['errors']}")
    if report["status"] != "completed" or outcomes != n:
        failed.append(f"{label}: {outcomes}/{n} recipients accounted for ({report['status']})")
    if twice:
        failed.append(f"{label}: {twice} idempotency keys delivered twice")
stuck = int(open(f"{out}/requests-stuck.txt").read())
print(f"seed 001 requests: {200 - stuck}/200 ended sent or failed (100 of them marked, never published)")
if stuck:
    failed.append(f"{stuck} seed 001 requests still queued or processing")
if failed:
    print("BROKEN: " + "; ".join(failed))
    sys.exit(1)
print("every promise held")
PY
