#!/usr/bin/env bash
# A local Apache Kafka broker that wants SASL (PLAIN over SASL_PLAINTEXT), as compose runs
# Kafka: one KRaft node on 127.0.0.1 (HERALD_KAFKA_SASL_PORT, 19301 by default; controller 10
# above), users `admin` (the broker's own) and `herald` (the programs'), passwords made here.
#
#   scripts/kafka-sasl.sh up      start (idempotent); writes .herald/kafka-sasl.env
#   scripts/kafka-sasl.sh down    stop it and drop its data
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=${HERALD_KAFKA_SASL_PORT:-19301}
cport=$((port + 10))
dir="$HERALD_STATE/kafka-sasl"
pidfile="$dir/broker.pid"
envfile="$HERALD_STATE/kafka-sasl.env"

up() {
    ensure_kafka
    pid_alive "$pidfile" && { log "SASL kafka already up on 127.0.0.1:$port"; return; }
    rm -rf "$dir"
    mkdir -p "$dir"
    local admin herald
    admin=$(random_secret)
    herald=$(random_secret)
    kafka_node_config "$dir" 1 "$port" "$cport" "1@127.0.0.1:$cport" \
        "listeners=SASL_PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport" \
        "advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$port" \
        "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT" \
        "inter.broker.listener.name=SASL_PLAINTEXT" \
        "sasl.enabled.mechanisms=PLAIN" \
        "sasl.mechanism.inter.broker.protocol=PLAIN" \
        "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$admin\" user_admin=\"$admin\" user_herald=\"$herald\";" \
        offsets.topic.replication.factor=1 transaction.state.log.replication.factor=1 \
        transaction.state.log.min.isr=1 offsets.topic.num.partitions=4
    chmod 600 "$dir/server.properties"
    kafka_format "$dir" "$(kafka_cluster_id)"
    log "starting a SASL kafka broker on 127.0.0.1:$port"
    kafka_start "$dir" "$pidfile" "$port"
    (umask 077; {
        echo "HERALD_TEST_SASL_BROKERS=127.0.0.1:$port"
        echo "HERALD_TEST_SASL_USERNAME=herald"
        echo "HERALD_TEST_SASL_PASSWORD=$herald"
    } >"$envfile")
    log "SASL kafka up; credentials in $envfile"
}

down() {
    if pid_alive "$pidfile"; then
        local pid
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -rf "$dir" "$envfile"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
