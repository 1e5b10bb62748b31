#!/usr/bin/env bash
# A local three-broker Apache Kafka cluster for fault tests: three KRaft nodes, each broker and
# controller, on 127.0.0.1 (client ports HERALD_KAFKA_CLUSTER_PORT, 19201 by default, and the two
# after it; controllers 10 above each). Internal topics have three copies and every topic needs
# two in sync (min.insync.replicas=2), as a production cluster that may lose one broker.
#
#   scripts/kafka-cluster.sh up            start (idempotent); writes .herald/kafka-cluster.env
#   scripts/kafka-cluster.sh down          stop every node and drop their data
#   scripts/kafka-cluster.sh status        each node: up or down
#   scripts/kafka-cluster.sh stop ID       SIGTERM node ID (1-3), data kept
#   scripts/kafka-cluster.sh kill ID       SIGKILL node ID, data kept
#   scripts/kafka-cluster.sh start ID      start node ID again on its data
#
# Pid files: .herald/kafka-cluster/broker-<id>.pid, so a test or an operator can stop one.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() { echo "usage: $0 up|down|status|stop ID|kill ID|start ID" >&2; exit 2; }

base=${HERALD_KAFKA_CLUSTER_PORT:-19201}
dir="$HERALD_STATE/kafka-cluster"
ids=(1 2 3)

port_of() { echo $((base + $1 - 1)); }
cport_of() { echo $((base + $1 - 1 + 10)); }
pidfile_of() { echo "$dir/broker-$1.pid"; }

voters() {
    local v=""
    for i in "${ids[@]}"; do v+="$i@127.0.0.1:$(cport_of "$i"),"; done
    echo "${v%,}"
}

bootstrap() {
    local b=""
    for i in "${ids[@]}"; do b+="127.0.0.1:$(port_of "$i"),"; done
    echo "${b%,}"
}

node_start() {
    local id=$1
    case "$id" in 1|2|3) ;; *) usage ;; esac
    if pid_alive "$(pidfile_of "$id")"; then return; fi
    [ -f "$dir/node-$id/data/meta.properties" ] || die "node $id has no storage: run '$0 up' first"
    log "starting kafka node $id on 127.0.0.1:$(port_of "$id")"
    kafka_start "$dir/node-$id" "$(pidfile_of "$id")" "$(port_of "$id")"
}

node_signal() {
    local signal=$1 id=$2 pidfile
    pidfile=$(pidfile_of "$id")
    pid_alive "$pidfile" || { log "node $id is not running"; return; }
    local pid
    pid=$(cat "$pidfile")
    kill "-$signal" "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    rm -f "$pidfile"
    log "node $id stopped ($signal)"
}

up() {
    ensure_kafka
    mkdir -p "$dir"
    local cluster_id=""
    [ -f "$dir/cluster.id" ] && cluster_id=$(cat "$dir/cluster.id")
    if [ -z "$cluster_id" ]; then
        cluster_id=$(kafka_cluster_id)
        echo "$cluster_id" >"$dir/cluster.id"
    fi
    for id in "${ids[@]}"; do
        pid_alive "$(pidfile_of "$id")" && continue
        kafka_node_config "$dir/node-$id" "$id" "$(port_of "$id")" "$(cport_of "$id")" "$(voters)" \
            default.replication.factor=3 min.insync.replicas=2 \
            offsets.topic.replication.factor=3 transaction.state.log.replication.factor=3 \
            transaction.state.log.min.isr=2 offsets.topic.num.partitions=10 \
            unclean.leader.election.enable=false
        kafka_format "$dir/node-$id" "$cluster_id"
    done
    # All three at once: a controller quorum of three needs two to elect a leader.
    for id in "${ids[@]}"; do
        pid_alive "$(pidfile_of "$id")" && continue
        log "starting kafka node $id on 127.0.0.1:$(port_of "$id")"
        kafka_start "$dir/node-$id" "$(pidfile_of "$id")" "$(port_of "$id")" &
    done
    wait
    for id in "${ids[@]}"; do pid_alive "$(pidfile_of "$id")" || die "kafka node $id did not start; see $dir/node-$id/server.log"; done
    {
        echo "export HERALD_KAFKA_BROKERS=$(bootstrap)"
        echo "export HERALD_TEST_TOPIC_REPLICATION=3"
        echo "export HERALD_KAFKA_CLUSTER_DIR=$dir"
    } >"$HERALD_STATE/kafka-cluster.env"
    log "kafka cluster up; environment in .herald/kafka-cluster.env: $(bootstrap)"
}

down() {
    for id in "${ids[@]}"; do stop_pidfile "$(pidfile_of "$id")"; done
    rm -rf "$dir" "$HERALD_STATE/kafka-cluster.env"
    log "kafka cluster down"
}

status() {
    for id in "${ids[@]}"; do
        if pid_alive "$(pidfile_of "$id")"; then echo "node $id: up (127.0.0.1:$(port_of "$id"))"
        else echo "node $id: down"; fi
    done
}

mkdir -p "$HERALD_STATE"
case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    stop) node_signal TERM "${2:-}" ;;
    kill) node_signal KILL "${2:-}" ;;
    start) ensure_kafka; node_start "${2:-}" ;;
    *) usage ;;
esac
