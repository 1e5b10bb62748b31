#!/usr/bin/env bash
# Runs every check Herald has: formatting, clippy, unit and integration tests against a real
# Redis and a real Kafka-protocol broker. Installs what is missing (on a fresh Debian machine
# too); stops the servers it started even when a test fails. `.ci/run` calls exactly this.
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    fmt, clippy, unit tests and the fast integration tests: for
#                              local iteration (no crash runs, no browser, no Prometheus)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HERALD_ROOT"

quick=""
case "${1:-}" in
    --quick) quick=1 ;;
    "") ;;
    *) die "usage: scripts/test.sh [--quick]" ;;
esac

phase_start=$(date +%s)
phase() {
    local now
    now=$(date +%s)
    [ -n "${phase_name:-}" ] && log "$phase_name: $((now - phase_start)) s"
    phase_name=$1
    phase_start=$now
    log "$1"
}

phase "setup: toolchain and servers"
ensure_rust
ensure_apt redis-server curl python3 openssl
# The real SMTP server the e-mail tests send to (aiosmtpd from PyPI, in a venv).
ensure_test_python
if [ -z "$quick" ]; then
    # The observability tests drive the dashboard in headless Chromium and scrape with Prometheus.
    APT_NO_RECOMMENDS=1 ensure_apt chromium fonts-dejavu-core prometheus
    # No Docker engine here: Debian's docker-compose validates compose/ offline.
    APT_NO_RECOMMENDS=1 ensure_apt docker-compose
fi

# Stop at the end only what this run started (a developer's running stack stays up).
started_stack=""
started_cluster=""
started_kafka_cluster=""
started_kafka_sasl=""
cleanup() {
    [ -n "$started_kafka_sasl" ] && bash "$HERALD_ROOT/scripts/kafka-sasl.sh" down || true
    [ -n "$started_kafka_cluster" ] && bash "$HERALD_ROOT/scripts/kafka-cluster.sh" down || true
    [ -n "$started_cluster" ] && bash "$HERALD_ROOT/scripts/cluster.sh" down || true
    [ -n "$started_stack" ] && bash "$HERALD_ROOT/scripts/stack.sh" down || true
}
trap cleanup EXIT

phase "cargo fmt --check"
cargo fmt --check
phase "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
phase "the production programs build without the dev feature"
cargo clippy --bins --quiet --no-default-features --features otlp -- -D warnings

phase "cargo deny check bans licenses sources (offline)"
ensure_cargo_deny
mkdir -p "$HERALD_STATE"
if ! cargo deny --offline check bans licenses sources >"$HERALD_STATE/deny.log" 2>&1; then
    cat "$HERALD_STATE/deny.log"
    die "cargo deny refused the dependency tree (deny.toml)"
fi
tail -1 "$HERALD_STATE/deny.log"

phase "build"
build_fleet
cargo test --all-targets --no-run --quiet
stack_running || started_stack=1
bash "$HERALD_ROOT/scripts/stack.sh" up
# shellcheck disable=SC1091
source "$HERALD_STATE/stack.env"

# The broker-loss tests stop brokers: they run alone, on their own cluster, below; the SASL
# test runs on its own broker, below.
skip=(--skip kafka_cluster:: --skip kafka_sasl::)
[ -n "$quick" ] && skip+=(--skip campaign_crash --skip observability --skip redis_restart --skip chaos)
# Three tests at a time: each starts a fleet (and the crash tests a dozen processes, debug
# builds) on a 2-core machine, and at four the campaign, crash and promo tests' receipts and
# first outcomes came seconds late on a day this VM ran a quarter slower (HERALD_TEST_THREADS
# overrides).
THREADS=${HERALD_TEST_THREADS:-3}
phase "cargo test${quick:+ (quick)}"
RUST_LOG="${RUST_LOG:-warn}" cargo test --all-targets -- --test-threads "$THREADS" "${skip[@]}"

# The same campaign, promo, events and crash tests on a local 3-master Redis Cluster (campaigns
# in 16 shards there): every script and pipeline must be routed by its hash tag, with no
# cross-slot call left.
phase "cargo test on a Redis Cluster (campaigns, promos, events, crashes)"
bash "$HERALD_ROOT/scripts/cluster.sh" status | grep -q up || started_cluster=1
bash "$HERALD_ROOT/scripts/cluster.sh" up
(
    # shellcheck disable=SC1091
    source "$HERALD_STATE/cluster.env"
    RUST_LOG="${RUST_LOG:-warn}" cargo test --test it -- --test-threads "$THREADS" \
        offers:: promos:: events:: slots:: once_slot:: dispatch_once:: campaign_crash:: cluster:: \
        campaign_control:: history:: \
        --skip kafka_cluster:: --skip kafka_sasl::
)
# The Helm chart, offline: lint, render with each value set, the Kubernetes and KEDA schemas,
# and the chart's promises read off the manifests (tests/helm/test_chart.py).
phase "Helm chart (lint, template, schemas, invariants)"
bash "$HERALD_ROOT/scripts/helm-check.sh"

[ -n "$quick" ] && { phase "done"; exit 0; }

# Apache Kafka losing a broker: three KRaft brokers, topics with three copies and two in sync.
# One test at a time: each stops or kills a broker of the shared cluster.
phase "cargo test on a three-broker Kafka cluster (a leader killed, a broker stopped, a rebalance)"
bash "$HERALD_ROOT/scripts/kafka-cluster.sh" status | grep -q "node 1: up" || started_kafka_cluster=1
bash "$HERALD_ROOT/scripts/kafka-cluster.sh" up
(
    # shellcheck disable=SC1091
    source "$HERALD_STATE/kafka-cluster.env"
    RUST_LOG="${RUST_LOG:-warn}" cargo test --test it -- --test-threads 1 kafka_cluster::
)

# A broker that wants SASL, as compose's does: the programs reach it with credentials only.
phase "cargo test on a Kafka broker that wants SASL"
[ -f "$HERALD_STATE/kafka-sasl.env" ] || started_kafka_sasl=1
bash "$HERALD_ROOT/scripts/kafka-sasl.sh" up
(
    # shellcheck disable=SC1091
    source "$HERALD_STATE/kafka-sasl.env"
    export HERALD_TEST_SASL_BROKERS HERALD_TEST_SASL_USERNAME HERALD_TEST_SASL_PASSWORD
    RUST_LOG="${RUST_LOG:-warn}" cargo test --test it -- --test-threads 1 kafka_sasl::
)
[ -n "$started_kafka_sasl" ] && bash "$HERALD_ROOT/scripts/kafka-sasl.sh" down
started_kafka_sasl=""
phase "done"
