#!/usr/bin/env bash
# A local Redis Cluster: three masters (Debian's redis-server with --cluster-enabled yes) on
# loopback ports, joined by `redis-cli --cluster create`. `up` is idempotent and writes
# .herald/cluster.env (HERALD_REDIS_URL naming the three nodes); `down` stops them and drops
# their data. The ports are HERALD_CLUSTER_PORT (7101 by default) and the two after it.
#
#   source .herald/cluster.env   # then every Herald program and test uses the cluster
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() { echo "usage: $0 up|down|status" >&2; exit 2; }

base=${HERALD_CLUSTER_PORT:-7101}
ports=("$base" "$((base + 1))" "$((base + 2))")
dir="$HERALD_STATE/cluster"

node_up() {
    local port=$1
    mkdir -p "$dir/$port"
    if pid_alive "$dir/$port/redis.pid"; then return; fi
    ensure_port_free "$port" "redis cluster node (set HERALD_CLUSTER_PORT to move the cluster)"
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes \
        --pidfile "$dir/$port/redis.pid" --dir "$dir/$port" --logfile "$dir/$port/redis.log" \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
        --save "" --appendonly no >/dev/null
    wait_port "$port" "redis cluster node"
}

cluster_ok() {
    [ "$(redis-cli -p "${ports[0]}" cluster info 2>/dev/null | tr -d '\r' | grep '^cluster_state:')" = "cluster_state:ok" ]
}

up() {
    ensure_apt redis-server
    if cluster_ok && ! pid_alive "$dir/${ports[0]}/redis.pid"; then
        log "reusing the Redis Cluster already answering on port ${ports[0]} (not started here; down leaves it)"
    else
        for p in "${ports[@]}"; do node_up "$p"; done
    fi
    if ! cluster_ok; then
        log "creating a 3-master cluster on 127.0.0.1:${ports[0]}-${ports[2]}"
        redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 \
            || { cat "$dir/create.log" >&2; die "redis-cli --cluster create failed"; }
        for _ in $(seq 100); do cluster_ok && break; sleep 0.1; done
        cluster_ok || die "the cluster did not reach cluster_state:ok; see $dir/*/redis.log"
    fi
    local urls
    urls=$(printf 'redis://127.0.0.1:%s,' "${ports[@]}")
    echo "export HERALD_REDIS_URL=${urls%,}" >"$HERALD_STATE/cluster.env"
    log "cluster up; environment in .herald/cluster.env: $(cat "$HERALD_STATE/cluster.env")"
}

down() {
    for p in "${ports[@]}"; do
        if pid_alive "$dir/$p/redis.pid"; then
            redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
            stop_pidfile "$dir/$p/redis.pid"
        fi
    done
    rm -rf "$dir" "$HERALD_STATE/cluster.env"
    log "cluster down"
}

mkdir -p "$HERALD_STATE"
case "${1:-}" in
    up) up ;;
    down) down ;;
    status) if cluster_ok; then echo "redis cluster: up (ports ${ports[*]})"; else echo "redis cluster: down"; fi ;;
    *) usage ;;
esac
