#!/usr/bin/env bash
# herald-events throughput on user events (seed 004): N events from `herald-dev
# generate-events` (1% invalid, 1% copies, purchases also sales) are published to a broker of its
# own first, then one herald-events (release, user-events consumer only) drains the backlog;
# the drain rate is the most it aggregates. Prints events/s, peak RSS and CPU, and checks
# that every message was consumed. Never fails for speed.
#   scripts/bench-events.sh [N]      (default 1000000)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HERALD_ROOT"
N=${1:-1000000}
PARTITIONS=${HERALD_BENCH_PARTITIONS:-16}
ADDR=${HERALD_BENCH_EVENTS_ADDR:-127.0.0.1:9357}
NS="benche$RANDOM"
export HERALD_PROFILE=release
export HERALD_NAMESPACE=$NS

ensure_apt redis-server curl python3
build_fleet
BIN=$(bin_dir)
OUT="$HERALD_STATE/bench-events"
mkdir -p "$OUT"

stack_was_up=""
stack_running && stack_was_up=1
broker_pid=""
events_pid=""
cleanup() {
    trap - EXIT INT TERM
    [ -n "$events_pid" ] && { kill -TERM "$events_pid" 2>/dev/null || true; wait "$events_pid" 2>/dev/null || true; }
    [ -n "$broker_pid" ] && { kill -TERM "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; }
    # A million seen-markers live for the dedup window: drop this run's keys.
    redis-cli -p "${HERALD_REDIS_PORT:-6399}" --scan --pattern "$NS:*" 2>/dev/null \
        | xargs -r -n 5000 redis-cli -p "${HERALD_REDIS_PORT:-6399}" UNLINK >/dev/null 2>&1 || true
    [ -z "$stack_was_up" ] && bash scripts/stack.sh down
    log "logs in $OUT/"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ensure_port_free "${ADDR##*:}" herald-events
bash scripts/stack.sh up
# shellcheck disable=SC1091
source "$HERALD_STATE/stack.env"

start_bench_broker "$OUT" "$PARTITIONS" "$NS"
broker_pid=$OWN_BROKER_PID

log "publishing $N events (not timed as aggregation)"
"$BIN/herald-dev" generate-events --rate 0 --duration 3600 --count "$N" --users 100000 --json \
    2>/dev/null | tee "$OUT/generate.json"
user_records=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["published"])' "$OUT/generate.json")

log "herald-events (user events) draining the backlog"
start_ns=$(date +%s%N)
"$BIN/herald-events" --only user-events --health-addr "$ADDR" >"$OUT/events.log" 2>&1 &
events_pid=$!
wait_port "${ADDR##*:}" herald-events
handled() { curl -s "http://$ADDR/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin)["user-events"]; print(s["applied"] + s["duplicates"] + s["dead_lettered"])' 2>/dev/null || echo 0; }
want=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["user_events"] + r["invalid_user_events"] + r["duplicate_user_events"])' "$OUT/generate.json")
done_count=0
idle=0
last=0
for _ in $(seq 6000); do
    done_count=$(handled)
    [ "$done_count" -ge "$want" ] && break
    if [ "$done_count" -eq "$last" ]; then idle=$((idle + 1)); else idle=0; fi
    # Messages the broker dropped (retention) never come: stop after 5 s without progress.
    [ "$idle" -ge 25 ] && [ "$done_count" -gt 0 ] && break
    last=$done_count
    sleep 0.2
done
end_ns=$(date +%s%N)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$events_pid/status" 2>/dev/null || echo 0)
ticks=$(awk '{print $14 + $15}' "/proc/$events_pid/stat" 2>/dev/null || echo 0)
curl -s "http://$ADDR/stats" >"$OUT/stats.json"
python3 - "$start_ns" "$end_ns" "$hwm" "$ticks" "$OUT/stats.json" "$OUT/generate.json" "$idle" <<'PY'
import json, os, sys
start, end, hwm, ticks, stats, gen, idle = sys.argv[1:]
s = json.load(open(stats))["user-events"]
g = json.load(open(gen))
handled = s["applied"] + s["duplicates"] + s["dead_lettered"]
# Measured to the last message handled, not to when the script noticed idleness.
secs = (int(end) - int(start)) / 1e9 - (int(idle) * 0.2 if int(idle) >= 25 else 0)
rate = handled / secs
cpu = int(ticks) / os.sysconf("SC_CLK_TCK")
print(f"published                 {g['published']:,} records at {g['published_per_sec']:,.0f}/s "
      f"({g['user_events']:,} user events, {g['sales']:,} sales, {g['invalid_user_events']:,} invalid, {g['duplicate_user_events']:,} copies)")
print(f"user events handled       {handled:,} in {secs:.1f} s (includes start-up and group join)")
print(f"  applied                 {s['applied']:,} (distinct valid events published: {g['user_events']:,})")
print(f"  duplicates dropped      {s['duplicates']:,} (copies published: {g['duplicate_user_events']:,})")
print(f"  dead-lettered           {s['dead_lettered']:,} (invalid published: {g['invalid_user_events']:,})")
print(f"aggregation throughput    {rate:,.0f} user events/s")
print(f"herald-events peak RSS    {int(hwm) / 1024:.1f} MiB; CPU {cpu:.1f} s ({cpu / secs * 100:.0f}% of one core)")
if (s["applied"], s["duplicates"], s["dead_lettered"]) != (g["user_events"], g["duplicate_user_events"], g["invalid_user_events"]):
    print("WARNING: not every published event was accounted for (broker retention?)")
PY
