#!/usr/bin/env bash
# The local stack: a real Redis server (Debian's redis-server) and Apache Kafka (one KRaft
# broker+controller on 127.0.0.1:$HERALD_KAFKA_PORT, 19092 by default, fetched from Maven
# Central once; see scripts/kafka/pom.xml for the version). `up` is idempotent and writes
# .herald/stack.env; `down` stops only what `up` started. Data and logs are under .herald/.
#
# HERALD_STACK_BROKER=mock starts herald-broker (librdkafka's in-memory mock) instead: a quick
# mode for a machine without Java. Nothing may rest a claim about Kafka on it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() { echo "usage: $0 up|down|status" >&2; exit 2; }

redis_up() {
    local pidfile="$HERALD_STATE/redis.pid"
    if pid_alive "$pidfile"; then
        log "redis already running on port $HERALD_REDIS_PORT"
        return
    fi
    ensure_apt redis-server
    if [ "$(redis-cli -p "$HERALD_REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
        # Herald keeps its keys under a namespace, so sharing a Redis is harmless; `down`
        # leaves this one alone because `up` did not start it.
        log "reusing the redis already answering on port $HERALD_REDIS_PORT (not started here; down leaves it)"
        return
    fi
    ensure_port_free "$HERALD_REDIS_PORT" "redis (set HERALD_REDIS_PORT to move it)"
    # As production runs it: an append-only file fsynced on every write, so a Redis killed
    # with SIGKILL comes back with every slot transition (docs/operations.md, "Persistence").
    local fsync=${HERALD_REDIS_APPENDFSYNC:-always}
    log "starting redis on 127.0.0.1:$HERALD_REDIS_PORT (AOF, appendfsync $fsync)"
    redis-server --bind 127.0.0.1 --port "$HERALD_REDIS_PORT" --daemonize yes \
        --pidfile "$pidfile" --dir "$HERALD_STATE" --logfile "$HERALD_STATE/redis.log" \
        --save "" --appendonly yes --appendfsync "$fsync" --appenddirname redis-aof >/dev/null
    wait_port "$HERALD_REDIS_PORT" redis
    for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
}

broker_up() {
    local pidfile="$HERALD_STATE/broker.pid" addrfile="$HERALD_STATE/broker.addr"
    if pid_alive "$pidfile" && [ -s "$addrfile" ]; then
        log "herald-broker already running at $(cat "$addrfile")"
        return
    fi
    local bin
    bin="$(bin_dir)/herald-broker"
    [ -x "$bin" ] || build_fleet --bin herald-broker
    rm -f "$addrfile"
    log "starting herald-broker (${HERALD_BROKER_PARTITIONS:-8} partitions per topic)"
    nohup "$bin" --address-file "$addrfile" >"$HERALD_STATE/broker.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 100); do [ -s "$addrfile" ] && break; sleep 0.1; done
    [ -s "$addrfile" ] || die "herald-broker did not start; see $HERALD_STATE/broker.log"
}

kafka_up() {
    local dir="$HERALD_STATE/kafka" pidfile="$HERALD_STATE/kafka.pid"
    if pid_alive "$pidfile"; then
        log "kafka already running on 127.0.0.1:$HERALD_KAFKA_PORT"
    else
        ensure_kafka
        local cport=$((HERALD_KAFKA_PORT + 1))
        kafka_node_config "$dir" 1 "$HERALD_KAFKA_PORT" "$cport" "1@127.0.0.1:$cport" \
            offsets.topic.replication.factor=1 transaction.state.log.replication.factor=1 \
            transaction.state.log.min.isr=1 offsets.topic.num.partitions=10
        kafka_format "$dir" "$(kafka_cluster_id)"
        log "starting Apache Kafka $(kafka_version) (KRaft, heap $HERALD_KAFKA_HEAP) on 127.0.0.1:$HERALD_KAFKA_PORT"
        kafka_start "$dir" "$pidfile" "$HERALD_KAFKA_PORT"
    fi
    echo "127.0.0.1:$HERALD_KAFKA_PORT" >"$HERALD_STATE/broker.addr"
}

write_env() {
    cat >"$HERALD_STATE/stack.env" <<ENV
export HERALD_KAFKA_BROKERS=$(cat "$HERALD_STATE/broker.addr")
export HERALD_REDIS_URL=redis://127.0.0.1:$HERALD_REDIS_PORT
ENV
    log "stack up; environment in .herald/stack.env:"
    sed 's/^export /  /' "$HERALD_STATE/stack.env" >&2
}

cmd=${1:-}
mkdir -p "$HERALD_STATE"
case "$cmd" in
    up)
        redis_up
        if [ "${HERALD_STACK_BROKER:-kafka}" = mock ]; then broker_up; else kafka_up; fi
        write_env
        ;;
    down)
        stop_pidfile "$HERALD_STATE/broker.pid"
        if pid_alive "$HERALD_STATE/kafka.pid"; then
            stop_pidfile "$HERALD_STATE/kafka.pid"
            # Like Redis's: the local broker's topics are the demo's and the tests'.
            rm -rf "$HERALD_STATE/kafka"
        fi
        if pid_alive "$HERALD_STATE/redis.pid"; then
            redis-cli -p "$HERALD_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
            stop_pidfile "$HERALD_STATE/redis.pid"
            # The local stack's data is the demo's and the tests': not kept across `down`.
            rm -rf "$HERALD_STATE/redis-aof"
        fi
        rm -f "$HERALD_STATE/stack.env" "$HERALD_STATE/broker.addr"
        log "stack down"
        ;;
    status)
        if pid_alive "$HERALD_STATE/redis.pid"; then echo "redis: up (port $HERALD_REDIS_PORT)"
        elif [ "$(redis-cli -p "$HERALD_REDIS_PORT" ping 2>/dev/null)" = PONG ]; then echo "redis: up (port $HERALD_REDIS_PORT, not started by this script)"
        else echo "redis: down"; fi
        if pid_alive "$HERALD_STATE/kafka.pid"; then echo "kafka: up (127.0.0.1:$HERALD_KAFKA_PORT, Apache Kafka $(kafka_version))"
        elif pid_alive "$HERALD_STATE/broker.pid"; then echo "broker: up, herald-broker mock ($(cat "$HERALD_STATE/broker.addr" 2>/dev/null))"
        else echo "kafka: down"; fi
        ;;
    *) usage ;;
esac
