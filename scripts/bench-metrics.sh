#!/usr/bin/env bash
# herald-metrics throughput: N lifecycle events (a `sent` and a `delivered` per recipient,
# over 4 campaigns and the four channels) are published to a broker of its own first, then
# one herald-metrics (release) drains the backlog; the drain rate is the most it can count.
# Prints events/s, recipients/min that rate covers, peak RSS and CPU. Never fails for speed.
#   scripts/bench-metrics.sh [N]      (default 1000000)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HERALD_ROOT"
N=${1:-1000000}
PARTITIONS=${HERALD_BENCH_PARTITIONS:-16}
ADDR=${HERALD_BENCH_METRICS_ADDR:-127.0.0.1:9356}
NS="benchm$RANDOM"
export HERALD_PROFILE=release
export HERALD_NAMESPACE=$NS

ensure_apt redis-server curl python3
build_fleet
BIN=$(bin_dir)
OUT="$HERALD_STATE/bench-metrics"
mkdir -p "$OUT"

stack_was_up=""
stack_running && stack_was_up=1
broker_pid=""
metrics_pid=""
cleanup() {
    trap - EXIT INT TERM
    [ -n "$metrics_pid" ] && { kill -TERM "$metrics_pid" 2>/dev/null || true; wait "$metrics_pid" 2>/dev/null || true; }
    [ -n "$broker_pid" ] && { kill -TERM "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; }
    [ -z "$stack_was_up" ] && bash scripts/stack.sh down
    log "logs in $OUT/"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ensure_port_free "${ADDR##*:}" herald-metrics
bash scripts/stack.sh up
# shellcheck disable=SC1091
source "$HERALD_STATE/stack.env"

start_bench_broker "$OUT" "$PARTITIONS" "$NS"
broker_pid=$OWN_BROKER_PID

log "publishing $N lifecycle events to $NS.events (not timed as aggregation)"
"$BIN/herald-dev" produce-events --topic "$NS.events" --count "$N" | tee "$OUT/produce.txt"

log "herald-metrics draining the backlog"
start_ns=$(date +%s%N)
# Loopback, and no key file in a bench: served without a key by explicit choice.
"$BIN/herald-metrics" --http-addr "$ADDR" --open-on-loopback >"$OUT/metrics.log" 2>&1 &
metrics_pid=$!
wait_port "${ADDR##*:}" herald-metrics
counted=0
for _ in $(seq 3000); do
    counted=$(curl -s "http://$ADDR/v1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["aggregator"]["counted"])' 2>/dev/null || echo 0)
    [ "$counted" -ge "$N" ] && break
    sleep 0.2
done
end_ns=$(date +%s%N)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$metrics_pid/status" 2>/dev/null || echo 0)
ticks=$(awk '{print $14 + $15}' "/proc/$metrics_pid/stat" 2>/dev/null || echo 0)
curl -s "http://$ADDR/v1/stats" >"$OUT/stats.json"
python3 - "$N" "$counted" "$start_ns" "$end_ns" "$hwm" "$ticks" "$OUT/stats.json" <<'PY'
import json, os, sys
n, counted, start, end, hwm, ticks, stats = sys.argv[1:]
secs = (int(end) - int(start)) / 1e9
rate = int(counted) / secs
cpu = int(ticks) / os.sysconf("SC_CLK_TCK")
s = json.load(open(stats))
print(f"events counted            {int(counted):,} of {int(n):,} in {secs:.1f} s (includes start-up)")
print(f"aggregator throughput     {rate:,.0f} events/s")
print(f"recipients a minute       {rate * 60 / 2:,.0f} (2 events per recipient: sent, delivered)")
print(f"herald-metrics peak RSS   {int(hwm) / 1024:.1f} MiB; CPU {cpu:.1f} s ({cpu / secs * 100:.0f}% of one core)")
print(f"totals                    {s['totals']['outcomes']}")
PY
