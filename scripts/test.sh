#!/usr/bin/env bash
# Runs every check Herald has: formatting, clippy, unit and integration tests against a real
# Redis and a real Kafka-protocol broker. Installs what is missing; stops the servers it
# started even when a test fails. `.ci/run` calls exactly this.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HERALD_ROOT"

ensure_rust
ensure_apt redis-server
# The observability tests drive the dashboard in headless Chromium and scrape with Prometheus.
APT_NO_RECOMMENDS=1 ensure_apt chromium fonts-dejavu-core prometheus
# No Docker engine here: Debian's docker-compose validates compose/ offline.
APT_NO_RECOMMENDS=1 ensure_apt docker-compose
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

started_stack=""
cleanup() { [ -n "$started_stack" ] && bash "$HERALD_ROOT/scripts/stack.sh" down || true; }
trap cleanup EXIT

log "cargo fmt --check"
cargo fmt --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

build_fleet
# Stop at the end only what this run started (a developer's running stack stays up).
if ! pid_alive "$HERALD_STATE/broker.pid"; then
    started_stack=1
fi
bash "$HERALD_ROOT/scripts/stack.sh" up
# shellcheck disable=SC1091
source "$HERALD_STATE/stack.env"

log "cargo test"
RUST_LOG="${RUST_LOG:-warn}" cargo test --all-targets -- --test-threads "${HERALD_TEST_THREADS:-4}"
