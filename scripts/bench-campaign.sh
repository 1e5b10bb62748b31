#!/usr/bin/env bash
# End-to-end campaign benchmark: N synthetic customers, one campaign to all of them, through
# the whole path (API → herald.campaigns → fan-out → herald.notify.* → dispatchers → the
# simulated provider → receipts → POST /v1/receipts), on the local stack with a broker of
# its own. Then, on the same broker, the raw produce-then-consume throughput for comparison.
# Prints figures; never fails for speed.
#   scripts/bench-campaign.sh [--redis-cluster] [N]      (default 100000)
# With --redis-cluster the fleet's Redis is a local 3-master Redis Cluster (scripts/cluster.sh)
# and the campaign is split into HERALD_CAMPAIGN_SHARDS shards (16 unless set); Redis' CPU is
# the three nodes' together.
# With HERALD_BENCH_RETENTION_SECS=S the fleet keeps a finished campaign's working sets S
# seconds and its report 4S, and the bench prints Redis' memory and the campaign's keys before
# it, when it completes, after S and after 4S (what retention gives back).
# With HERALD_BENCH_EMAIL=smtp the e-mail dispatcher sends through SMTP to a real local SMTP
# server (aiosmtpd, counting only) instead of the simulated HTTP provider.
# Scale-out: HERALD_BENCH_DISPATCHERS=K runs K e-mail dispatchers (one consumer group: the
# partitions split between them, each prints what it handled) and HERALD_BENCH_FANOUTS=F
# runs F fan-outs; HERALD_BENCH_IN_FLIGHT and HERALD_BENCH_PROVIDER_CONCURRENCY set the
# e-mail dispatchers' --max-in-flight (2048) and --provider-concurrency (1024).
# The uncertain send under load: HERALD_SIM_LATE_ANSWER_RATE / HERALD_SIM_LATE_ANSWER_MS make
# the provider deliver some calls and answer them late, HERALD_PROVIDER_TIMEOUT_MS sets the
# dispatchers' time-out, HERALD_RULES a rules file with `uncertain_send = "skip"`, and
# HERALD_BENCH_RECEIPT_DELAY_MS (100) when receipts come (after the time-out, they cannot settle
# an unanswered call first). The figures print extra deliveries beside counted resends.
# Customers in control: HERALD_BENCH_CAPS=1 runs with frequency caps (promotions 2 a day and
# 5 a week, the campaign's topic 1 a day) and every 10th customer refusing e-mail for the
# campaign's topic (they get push), and prints Redis' memory per customer for both. Run it
# beside a run without, in the same hour, for the cost.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HERALD_ROOT"
CLUSTER=""
N=100000
for arg in "$@"; do
    case "$arg" in
        --redis-cluster) CLUSTER=1 ;;
        *[!0-9]* | "") die "usage: scripts/bench-campaign.sh [--redis-cluster] [N]" ;;
        *) N=$arg ;;
    esac
done
PARTITIONS=${HERALD_BENCH_PARTITIONS:-16}
API=${HERALD_BENCH_API_ADDR:-127.0.0.1:5056}
PROVIDER=${HERALD_BENCH_PROVIDER_ADDR:-127.0.0.1:3056}
NS="bench$RANDOM"
DISPATCHERS=${HERALD_BENCH_DISPATCHERS:-1}
FANOUTS=${HERALD_BENCH_FANOUTS:-1}
export HERALD_PROFILE=release
export HERALD_PROVIDER_API_KEY="bench-$RANDOM$RANDOM"
export HERALD_NAMESPACE=$NS
RETENTION=${HERALD_BENCH_RETENTION_SECS:-}
if [ -n "$RETENTION" ]; then
    export HERALD_WORKING_RETENTION_SECS=$RETENTION HERALD_CAMPAIGN_RETENTION_SECS=$((RETENTION * 4))
fi

CAPS=${HERALD_BENCH_CAPS:-}
if [ -n "$CAPS" ]; then
    mkdir -p "$HERALD_STATE"
    export HERALD_RULES="$HERALD_STATE/bench-caps-rules.toml"
    { cat config/rules.toml; printf '\n[caps]\n[caps.promotions]\nper_day = 2\nper_week = 5\n[caps.topics.offers]\nper_day = 1\n'; } >"$HERALD_RULES"
fi

ensure_apt redis-server curl python3
build_fleet
setup_credentials "$HERALD_STATE/bench-campaign-keys"
BIN=$(bin_dir)
OUT="$HERALD_STATE/bench-campaign"
mkdir -p "$OUT"
rm -f "$OUT/retention.txt"

stack_was_up=""
cluster_started=""
stack_running && stack_was_up=1
pids=()
names=()
broker_pid=""
OWN_BROKER_PID=""
cleanup() {
    trap - EXIT INT TERM
    # The fleet first, the broker last, so that consumers can commit on their way out.
    for pid in "${pids[@]}"; do [ "$pid" = "$broker_pid" ] || kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 150); do
        alive=""
        for pid in "${pids[@]}"; do [ "$pid" != "$broker_pid" ] && kill -0 "$pid" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do [ "$pid" = "${BROKER_CPU_PID:-}" ] && [ -z "$OWN_BROKER_PID" ] && continue; kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -n "$cluster_started" ] && bash scripts/cluster.sh down
    [ -z "$stack_was_up" ] && bash scripts/stack.sh down
    log "logs in $OUT/"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Health ports: e-mail dispatchers 5061, 5071, 5081...; push 5062; fan-outs 5063, 5073...; retry 5064.
email_ports=()
for i in $(seq 0 $((DISPATCHERS - 1))); do email_ports+=($((5061 + 10 * i))); done
fanout_ports=()
for i in $(seq 0 $((FANOUTS - 1))); do fanout_ports+=($((5063 + 10 * i))); done
for port in "${API##*:}" "${PROVIDER##*:}" "${email_ports[@]}" 5062 "${fanout_ports[@]}" 5064; do ensure_port_free "$port" herald-bench; done
bash scripts/stack.sh up
# shellcheck disable=SC1091
source "$HERALD_STATE/stack.env"
redis_pidfiles=("$HERALD_STATE/redis.pid")
if [ -n "$CLUSTER" ]; then
    [ -n "$RETENTION" ] && die "HERALD_BENCH_RETENTION_SECS reads one Redis: not with --redis-cluster"
    bash scripts/cluster.sh status | grep -q up || cluster_started=1
    bash scripts/cluster.sh up
    # shellcheck disable=SC1091
    source "$HERALD_STATE/cluster.env"
    export HERALD_CAMPAIGN_SHARDS=${HERALD_CAMPAIGN_SHARDS:-16}
    redis_pidfiles=("$HERALD_STATE"/cluster/*/redis.pid)
    log "Redis Cluster: $HERALD_REDIS_URL, $HERALD_CAMPAIGN_SHARDS shards per campaign"
fi
# CPU ticks (utime + stime) of one process: where the two cores went.
ticks_of() {
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
# CPU ticks of the Redis server(s); with `children`, of the children they forked and reaped
# instead (cutime + cstime): the AOF rewrites, which run beside the server on the other core
# and are not in its own utime + stime. A rewrite still running then is not counted yet.
redis_ticks() {
    local total=0 f fields='$14 + $15'
    [ "${1:-}" = children ] && fields='$16 + $17'
    for f in "${redis_pidfiles[@]}"; do
        total=$((total + $(awk "{print $fields}" "/proc/$(cat "$f")/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

start() { # name, then the command
    local name=$1; shift
    "$@" >"$OUT/$name.log" 2>&1 &
    pids+=($!)
    names+=("$name")
}

start_bench_broker "$OUT" "$PARTITIONS" "$NS"
broker_pid=$BROKER_CPU_PID
# The broker's CPU is a row of the table: the mock is a child like the fleet; Kafka is the
# stack's, watched but never stopped here.
pids+=("$broker_pid")
names+=(broker)

start provider "$BIN/herald-provider" --addr "$PROVIDER" --latency-min-ms 0 --latency-max-ms 2 \
    --receipt-url "http://$API/v1/receipts" --receipt-delay-ms "${HERALD_BENCH_RECEIPT_DELAY_MS:-100}"
start ingest "$BIN/herald-ingest" --http-addr "$API"
export HERALD_PROVIDER_URL="http://$PROVIDER"
fast=(--max-in-flight "${HERALD_BENCH_IN_FLIGHT:-2048}" --provider-rate 1000000 --provider-max-rate 1000000)
email=()
if [ "${HERALD_BENCH_EMAIL:-http}" = smtp ]; then
    SMTP_PORT=${HERALD_BENCH_SMTP_PORT:-2556}
    rm -rf "$OUT/mail"
    log "e-mail through SMTP to a local aiosmtpd on port $SMTP_PORT (counting only)"
    start_smtp_catcher "$SMTP_PORT" "$OUT/mail" --count-only
    pids+=("$(cat "$HERALD_STATE/smtp.pid")")
    names+=("smtp-server")
    # SMTP sends one message per connection at a time: the pool is the concurrency.
    email=(--smtp-url "smtp://127.0.0.1:$SMTP_PORT" --email-from "Bench <bench@shop.example>"
        --public-url "http://$API" --provider-concurrency 64)
else
    email=(--provider-concurrency "${HERALD_BENCH_PROVIDER_CONCURRENCY:-1024}")
fi
for i in "${!email_ports[@]}"; do
    name=dispatch-email; [ "$DISPATCHERS" -gt 1 ] && name="dispatch-email-$((i + 1))"
    start "$name" "$BIN/herald-dispatch" --channel email --health-addr "127.0.0.1:${email_ports[$i]}" "${fast[@]}" "${email[@]}"
done
start dispatch-push "$BIN/herald-dispatch" --channel push --health-addr 127.0.0.1:5062 "${fast[@]}" --provider-concurrency 1024
for i in "${!fanout_ports[@]}"; do
    name=fanout; [ "$FANOUTS" -gt 1 ] && name="fanout-$((i + 1))"
    start "$name" "$BIN/herald-fanout" --health-addr "127.0.0.1:${fanout_ports[$i]}"
done
start retry "$BIN/herald-retry" --health-addr 127.0.0.1:5064
wait_port "${API##*:}" herald-ingest
wait_port "${PROVIDER##*:}" herald-provider

redis_start=$(redis_ticks)
redis_child_start=$(redis_ticks children)
log "storing $N synthetic customers (not timed)"
"$BIN/herald-dev" --api "http://$API" seed-customers --count "$N" --prefix b --channels email,push

# Redis' memory and the campaign's keys; the scan also expires what is due (Redis frees an
# expired key when it is next touched or sampled).
redis_memory() {
    local keys report used
    keys=$(redis-cli -p "$HERALD_REDIS_PORT" --scan --pattern "$NS:*{$NS}*" | wc -l)
    report=$(redis-cli -p "$HERALD_REDIS_PORT" exists "$NS:campaign:{$NS}")
    used=$(redis-cli -p "$HERALD_REDIS_PORT" info memory | awk -F: '/^used_memory:/ {printf "%.1f MiB", $2 / 1048576}')
    echo "redis $used; the campaign's keys: $keys (report kept: $report)"
}
[ -n "$RETENTION" ] && echo "before the campaign            $(redis_memory)" >"$OUT/retention.txt"
# utime + stime of each process, in clock ticks, as "name ticks" lines.
process_ticks() {
    local i
    for i in "${!pids[@]}"; do
        echo "${names[$i]} $(ticks_of "${pids[$i]}")"
    done
}
if [ -n "$CAPS" ]; then
    log "every 10th customer refuses e-mail for offers (not timed)"
    for ((i = 0; i < N; i += 10)); do
        printf "SET %s:prefs:b%d '{\"refused\":{\"offers\":[\"email\"]}}'\n" "$NS" "$i"
    done | redis-cli -p "$HERALD_REDIS_PORT" >/dev/null
fi
# Where the campaign alone starts: seeding the customers is not part of sending to them.
ticks_before_campaign=$(process_ticks)
redis_before_campaign=$(redis_ticks)
redis_child_before_campaign=$(redis_ticks children)
log "campaign to $N customers: e-mail first, push as fallback"
start_ns=$(date +%s%N)
"$BIN/herald-dev" --api "http://$API" send-campaign --id "$NS" --count "$N" --prefix b \
    --channels email,push --timeout-ms 60000 --wait-secs 1800 --json >"$OUT/report.json"
end_ns=$(date +%s%N)

if [ -n "$RETENTION" ]; then
    # herald-retry retires a finished campaign on its next scan; give it a moment.
    sleep 2
    echo "at completion                  $(redis_memory)" >>"$OUT/retention.txt"
    sleep "$RETENTION"; sleep 1
    echo "after the working retention    $(redis_memory)" >>"$OUT/retention.txt"
    sleep $((RETENTION * 3))
    echo "after the report retention     $(redis_memory)" >>"$OUT/retention.txt"
fi
dispatch_ports="${email_ports[*]} 5062"
for port in $dispatch_ports; do curl -s "http://127.0.0.1:$port/stats" >"$OUT/stats-$port.json"; done
# The provider counts every delivery (it does not drop a repeated key): duplicates show.
curl -s "http://$PROVIDER/v1/stats" >"$OUT/provider.json"
rss_lines=""
for i in "${!pids[@]}"; do
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/${pids[$i]}/status" 2>/dev/null || echo 0)
    cpu=$(ticks_of "${pids[$i]}")
    rss_lines+="${names[$i]} $hwm $cpu"$'\n'
done

log "raw broker throughput on the same broker ($N messages of 250 bytes, $PARTITIONS partitions)"
"$BIN/herald-dev" broker-bench --topic "$NS.sales" --count "$N" --size 250 >"$OUT/broker.txt"

python3 - "$N" "$start_ns" "$end_ns" "$OUT" "$rss_lines" "$(redis_ticks) $redis_start $redis_before_campaign" "$dispatch_ports" "$ticks_before_campaign" \
    "$(redis_ticks children) $redis_child_start $redis_child_before_campaign" <<'PY'
import json, sys
n, start_ns, end_ns, out, rss = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ports = [int(p) for p in sys.argv[7].split()]
report = json.load(open(f"{out}/report.json"))
counts = report["counts"]
secs = (end_ns - start_ns) / 1e9
buckets = {}
for port in ports:
    stats = json.load(open(f"{out}/stats-{port}.json"))
    for upper, c in stats["dispatch"]["fanout_to_call_ms"]:
        buckets[upper] = buckets.get(upper, 0) + c
def q(p):
    total = sum(buckets.values()); rank = max(1, -(-total * p // 1)); seen = 0
    for upper in sorted(buckets):
        seen += buckets[upper]
        if seen >= rank: return upper
broker = dict(l.split() for l in open(f"{out}/broker.txt") if l.strip())
produce, consume = float(broker["broker_produce_per_sec"]), float(broker["broker_consume_per_sec"])
outcomes = counts.get("delivered", 0) + counts.get("failed", 0) + counts.get("uncertain", 0)
provider = json.load(open(f"{out}/provider.json"))
window = {}
for port in ports:
    stats = json.load(open(f"{out}/stats-{port}.json"))
    for upper, c in stats["dispatch"]["accept_to_mark_ms"]:
        window[upper] = window.get(upper, 0) + c
rate = n / secs
print()
print(f"recipients                 {n}")
print(f"status                     {report['status']}  (delivered {counts.get('delivered', 0)}, failed {counts.get('failed', 0)}, accounted {outcomes}/{n})")
print(f"time to last outcome       {secs:.1f} s")
print(f"recipients/s               {rate:.0f}")
print(f"fan-out -> provider call   p50 {q(0.5)} ms, p99 {q(0.99)} ms")
buckets = window
print(f"uncertain window           accept -> marked sent p50 {q(0.5)} ms, p99 {q(0.99)} ms")
print(f"duplicates (provider)      {provider['extra_deliveries']} extra deliveries, {provider['recipients_reached_twice']} recipients reached twice, replayed {provider['replayed']}")
print(f"uncertain sends            resent {counts.get('resent', 0)}, left uncertain {counts.get('uncertain', 0)}")
if len(ports) > 2:
    # Each e-mail dispatcher's share: the partitions split between the group's members.
    shares = []
    for port in ports[:-1]:
        d = json.load(open(f"{out}/stats-{port}.json"))["dispatch"]
        shares.append(f"{port}: {d.get('sent', 0)} sent of {d.get('received', 0)} received")
    print(f"e-mail dispatchers         {'; '.join(shares)}")
print(f"broker raw produce         {produce:.0f} msg/s")
print(f"broker raw consume         {consume:.0f} msg/s")
print(f"pipeline / raw consume     {rate / consume * 100:.1f} %")
redis_cpu = [int(t) for t in sys.argv[6].split()]
# Each process's ticks when the campaign was posted (after the customers were stored).
before = {}
for line in sys.argv[8].strip().splitlines():
    name, ticks = line.split()
    before[name] = before.get(name, 0) + int(ticks)
print("per process:      peak RSS   CPU s, whole run   CPU µs per recipient: whole run (seeding included) / campaign only")
total_all = total_campaign = 0
def row(name, rss, ticks, campaign):
    print(f"  {name:<16} {rss:>9}  {ticks / 100:>7.1f}   {ticks * 1e4 / n:>24.0f} / {campaign * 1e4 / n:.0f}")
for line in rss.strip().splitlines():
    name, kb, ticks = line.split()
    ticks = int(ticks)
    campaign = ticks - before.get(name, 0)
    total_all += ticks; total_campaign += campaign
    row(name, f"{int(kb) / 1024:.0f} MiB", ticks, campaign)
redis_all, redis_campaign = redis_cpu[0] - redis_cpu[1], redis_cpu[0] - redis_cpu[2]
total_all += redis_all; total_campaign += redis_campaign
row("redis-server", "", redis_all, redis_campaign)
children = [int(t) for t in sys.argv[9].split()]
rewrites_all, rewrites_campaign = children[0] - children[1], children[0] - children[2]
total_all += rewrites_all; total_campaign += rewrites_campaign
row("redis rewrites", "", rewrites_all, rewrites_campaign)
row("total", "", total_all, total_campaign)
PY
[ -f "$OUT/retention.txt" ] && cat "$OUT/retention.txt"
if [ -n "$CAPS" ]; then
    caps=0 prefs=0
    for ((i = 0; i < 1000 && i < N; i += 10)); do
        for key in "$NS:cap:{b$i}:all" "$NS:cap:{b$i}:t:offers"; do
            caps=$((caps + $(redis-cli -p "$HERALD_REDIS_PORT" memory usage "$key" | grep -o '[0-9]\+' || echo 0)))
        done
        prefs=$((prefs + $(redis-cli -p "$HERALD_REDIS_PORT" memory usage "$NS:prefs:b$i" | grep -o '[0-9]\+' || echo 0)))
    done
    n=$(( (N < 1000 ? N : 1000) / 10 ))
    echo "caps: $((caps / n)) bytes of Redis per capped customer (two counters, one campaign); preferences: $((prefs / n)) bytes per customer who chose (sampled over $n)"
fi
true
