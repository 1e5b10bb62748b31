#!/usr/bin/env bash
# Benchmark of the requests API on loopback: create + process throughput and latency, with
# wrk (Debian's package) against herald-ingest (release) on the local stack. Prints figures;
# never fails for speed.
#   scripts/bench-api.sh [SECONDS] [CONNECTIONS]     (default 20 s, 64 connections)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HERALD_ROOT"
DURATION=${1:-20}
CONNS=${2:-64}
ADDR=${HERALD_BENCH_API_ADDR:-127.0.0.1:5055}
export HERALD_PROFILE=release

ensure_apt redis-server wrk
build_fleet --bin herald-ingest --bin herald-broker --bin herald
stack_was_up=""
stack_running && stack_was_up=1
ensure_port_free "${ADDR##*:}" herald-ingest
bash scripts/stack.sh up
# shellcheck disable=SC1091
source "$HERALD_STATE/stack.env"
export HERALD_NAMESPACE="bench$RANDOM"
OWN_BROKER_PID=""
start_bench_broker "$HERALD_STATE" 12 "$HERALD_NAMESPACE"
# As a deployment runs it: every call presents a key with the requests scopes.
setup_credentials "$HERALD_STATE/bench-keys"
HERALD_API_KEY=$("$(bin_dir)/herald" keys create --name bench --scopes requests:write,requests:read | tail -1)
export HERALD_API_KEY
# One client at full speed: its key's rate limit (default 2,000/s) must not be what is measured.
export HERALD_KEY_RATE_PER_SEC=1000000 HERALD_KEY_BURST=1000000

"$(bin_dir)/herald-ingest" --http-addr "$ADDR" >"$HERALD_STATE/bench-ingest.log" 2>&1 &
ingest=$!
cleanup() {
    kill -TERM "$ingest" 2>/dev/null || true
    wait "$ingest" 2>/dev/null || true
    [ -n "$OWN_BROKER_PID" ] && kill -TERM "$OWN_BROKER_PID" 2>/dev/null
    [ -z "$stack_was_up" ] && bash scripts/stack.sh down
}
trap cleanup EXIT
wait_port "${ADDR##*:}" herald-ingest

log "warming up (3 s)"
wrk -t2 -c"$CONNS" -d3s -s benches/wrk/create_process.lua "http://$ADDR" >/dev/null
log "measuring: ${DURATION}s, $CONNS connections, 2 wrk threads, on $(nproc) cores"
wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s benches/wrk/create_process.lua "http://$ADDR" | tee "$HERALD_STATE/bench-api.txt"
rss=$(awk '/VmHWM/ {print $2 " " $3}' "/proc/$ingest/status")
echo "herald-ingest peak RSS: $rss"
