# Shared helpers for Herald's scripts. Source it; do not run it.
# shellcheck shell=bash

HERALD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERALD_STATE="$HERALD_ROOT/.herald"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"
HERALD_REDIS_PORT="${HERALD_REDIS_PORT:-6399}"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

apt_updated=""
# Installs Debian packages that are missing (as root, or with sudo when available).
ensure_apt() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
    log "installing ${missing[*]} (apt-get)"
    if [ -z "$apt_updated" ]; then
        $sudo apt-get update -qq >/dev/null || die "apt-get update failed"
        apt_updated=1
    fi
    # APT_NO_RECOMMENDS=1: without recommends (prometheus would pull in systemd otherwise).
    local lean=()
    [ -n "${APT_NO_RECOMMENDS:-}" ] && lean=(--no-install-recommends)
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${lean[@]}" "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

# The Rust toolchain that is here (rustup's or Debian's; none can be downloaded on these
# machines, so none is pinned), with rustfmt and clippy, and what rdkafka-sys needs to build
# librdkafka (a C toolchain, make, cmake, pkg-config, zlib).
ensure_rust() {
    command -v cargo >/dev/null || die "cargo not found: install Rust (rustup, or Debian's cargo >= the rust-version in Cargo.toml)"
    if command -v rustup >/dev/null; then
        local installed
        installed=$(rustup component list --installed 2>/dev/null || true)
        local missing=()
        grep -q '^rustfmt' <<<"$installed" || missing+=(rustfmt)
        grep -q '^clippy' <<<"$installed" || missing+=(clippy)
        if [ ${#missing[@]} -gt 0 ]; then
            log "adding ${missing[*]} (rustup)"
            rustup component add "${missing[@]}" || die "rustup component add ${missing[*]} failed"
        fi
    else
        command -v rustfmt >/dev/null || ensure_apt rustfmt
        cargo clippy --version >/dev/null 2>&1 || ensure_apt rust-clippy
    fi
    local tools=()
    command -v cc >/dev/null || tools+=(build-essential)
    command -v make >/dev/null || tools+=(make)
    command -v cmake >/dev/null || tools+=(cmake)
    command -v pkg-config >/dev/null || tools+=(pkg-config)
    [ ${#tools[@]} -gt 0 ] && ensure_apt "${tools[@]}"
    ensure_apt zlib1g-dev libssl-dev
}

# cargo-deny, from crates.io when missing (a few minutes, once: it lands in ~/.cargo/bin).
ensure_cargo_deny() {
    command -v cargo-deny >/dev/null && return
    log "installing cargo-deny from crates.io (once)"
    cargo install cargo-deny --locked --no-default-features --quiet || die "cargo install cargo-deny failed"
}

# A Python virtual environment with the PyPI packages the tests use: aiosmtpd (the SMTP
# server e-mail is tested against), Schemathesis (which fuzzes the API from its document) and
# openapi-python-client (which generates a client from it, as an integrating team would).
# Exports HERALD_TEST_PYTHON, its interpreter, and HERALD_VENV.
HERALD_VENV="${HERALD_VENV:-$HOME/.cache/herald-venv}"
ensure_test_python() {
    if [ ! -x "$HERALD_VENV/bin/python" ]; then
        python3 -c 'import ensurepip' 2>/dev/null || ensure_apt python3-venv
        log "creating the Python environment for test servers ($HERALD_VENV)"
        python3 -m venv "$HERALD_VENV" || die "python3 -m venv failed"
    fi
    if ! "$HERALD_VENV/bin/python" -c 'import aiosmtpd' 2>/dev/null \
        || [ ! -x "$HERALD_VENV/bin/schemathesis" ] \
        || [ ! -x "$HERALD_VENV/bin/openapi-python-client" ] \
        || [ ! -x "$HERALD_VENV/bin/openapi-spec-validator" ]; then
        log "installing aiosmtpd, schemathesis, openapi-python-client and openapi-spec-validator (PyPI)"
        "$HERALD_VENV/bin/pip" install --quiet --disable-pip-version-check \
            'aiosmtpd==1.4.6' 'schemathesis==4.32.5' 'openapi-python-client==0.29.1' \
            'openapi-spec-validator==0.9.0' \
            || die "pip install of the test tools failed"
    fi
    export HERALD_TEST_PYTHON="$HERALD_VENV/bin/python" HERALD_VENV
}

# Starts the SMTP catcher (scripts/servers/smtp_catcher.py) on PORT, writing to DIR, pid in
# $HERALD_STATE/smtp.pid; more arguments go to the catcher (--count-only).
start_smtp_catcher() {
    local port=$1 dir=$2
    shift 2
    ensure_test_python
    mkdir -p "$dir" "$HERALD_STATE"
    ensure_port_free "$port" "the SMTP catcher"
    "$HERALD_TEST_PYTHON" "$HERALD_ROOT/scripts/servers/smtp_catcher.py" --port "$port" --out "$dir" "$@" \
        >"$HERALD_STATE/smtp.log" 2>&1 &
    echo $! >"$HERALD_STATE/smtp.pid"
    wait_port "$port" "the SMTP catcher"
}

# Builds binaries (default: all); HERALD_PROFILE=release|debug (default debug).
build_fleet() {
    ensure_rust
    local flags=()
    [ "${HERALD_PROFILE:-debug}" = release ] && flags+=(--release)
    [ $# -eq 0 ] && flags+=(--bins)
    log "building Herald (${HERALD_PROFILE:-debug}) $*"
    (cd "$HERALD_ROOT" && cargo build "${flags[@]}" "$@") || die "build failed"
}

bin_dir() {
    echo "$CARGO_TARGET_DIR/${HERALD_PROFILE:-debug}"
}

# A herald-broker of a benchmark's own (so it measures on an empty broker): PARTITIONS per
# topic for namespace NS, its log and address in OUT. Sets OWN_BROKER_PID and exports
# HERALD_KAFKA_BROKERS.
start_own_broker() {
    local out=$1 partitions=$2 ns=$3
    log "own broker: $partitions partitions per topic, namespace $ns"
    rm -f "$out/broker.addr"
    "$(bin_dir)/herald-broker" --partitions "$partitions" --namespace "$ns" \
        --address-file "$out/broker.addr" >"$out/broker.log" 2>&1 &
    OWN_BROKER_PID=$!
    for _ in $(seq 100); do [ -s "$out/broker.addr" ] && break; sleep 0.1; done
    HERALD_KAFKA_BROKERS=$(cat "$out/broker.addr")
    export HERALD_KAFKA_BROKERS
}

pid_alive() {
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Waits until a TCP port on 127.0.0.1 accepts connections.
wait_port() {
    local port=$1 what=$2 tries=${3:-100}
    for _ in $(seq "$tries"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    die "$what did not open port $port"
}

# Dies with a clear message when something already listens on a port we are about to use.
ensure_port_free() {
    local port=$1 what=$2
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port (for $what) is already in use; stop what holds it (ss -ltnp 'sport = :$port') or choose another"
    fi
}

# Stops a process recorded in a pid file and removes the file.
stop_pidfile() {
    local f=$1
    if pid_alive "$f"; then
        local pid
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

# A random secret of 32 bytes, as hex (what `openssl rand -hex 32` prints).
random_secret() {
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

# Sets a deployment's credentials up as an operator would, in directory DIR: a key file with
# one admin key made by `herald keys create` (exports HERALD_API_KEYS_FILE and HERALD_API_KEY,
# which the herald CLI presents), a receipt secret shared by Herald and the simulated provider,
# and a JWT secret for the flash-promo API unless one is set.
setup_credentials() {
    local dir=$1
    mkdir -p "$dir"
    export HERALD_API_KEYS_FILE="$dir/keys.toml"
    rm -f "$HERALD_API_KEYS_FILE"
    HERALD_API_KEY=$("${HERALD_BIN_DIR:-$(bin_dir)}/herald" keys create --name operator --scopes admin | tail -1)
    export HERALD_API_KEY
    local receipt_secret
    receipt_secret=$(random_secret)
    export HERALD_RECEIPT_SECRETS="sim=$receipt_secret"
    export HERALD_SIM_RECEIPT_SECRET="$receipt_secret"
    export HERALD_JWT_SECRET=${HERALD_JWT_SECRET:-$(random_secret)}
    # Signs the one-click unsubscribe links of promotional e-mail (dispatchers) and checks
    # them (herald-ingest).
    export HERALD_UNSUBSCRIBE_SECRET=${HERALD_UNSUBSCRIBE_SECRET:-$(random_secret)}
}
