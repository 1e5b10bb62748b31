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
# openapi-python-client (which generates a client from it, as an integrating team would) and
# standardwebhooks (the specification's reference code, which checks outgoing webhooks).
# Exports HERALD_TEST_PYTHON, its interpreter, and HERALD_VENV.
HERALD_VENV="${HERALD_VENV:-$HOME/.cache/herald-venv}"
ensure_test_python() {
    if [ ! -x "$HERALD_VENV/bin/python" ]; then
        python3 -c 'import ensurepip' 2>/dev/null || ensure_apt python3-venv
        log "creating the Python environment for test servers ($HERALD_VENV)"
        python3 -m venv "$HERALD_VENV" || die "python3 -m venv failed"
    fi
    if ! "$HERALD_VENV/bin/python" -c 'import aiosmtpd, standardwebhooks' 2>/dev/null \
        || [ ! -x "$HERALD_VENV/bin/schemathesis" ] \
        || [ ! -x "$HERALD_VENV/bin/openapi-python-client" ] \
        || [ ! -x "$HERALD_VENV/bin/openapi-spec-validator" ]; then
        log "installing aiosmtpd, schemathesis, openapi-python-client, openapi-spec-validator and standardwebhooks (PyPI)"
        "$HERALD_VENV/bin/pip" install --quiet --disable-pip-version-check \
            'aiosmtpd==1.4.6' 'schemathesis==4.32.5' 'openapi-python-client==0.29.1' \
            'openapi-spec-validator==0.9.0' 'standardwebhooks==1.3.0' \
            || die "pip install of the test tools failed"
    fi
    export HERALD_TEST_PYTHON="$HERALD_VENV/bin/python" HERALD_VENV
}

# The Helm chart's tools, from the registries and cached under ~/.cache: helm (a Go module,
# built once: several minutes on two cores) and, in a venv of their own so their jsonschema
# never meets Schemathesis', kubernetes-validate (the Kubernetes schemas, bundled) and pytest.
# Exports HERALD_HELM and HERALD_HELM_PYTHON.
HERALD_HELM_VERSION="${HERALD_HELM_VERSION:-v4.3.2}"
ensure_helm_tools() {
    local tools="$HOME/.cache/herald-tools/helm-$HERALD_HELM_VERSION"
    if [ ! -x "$tools/helm" ]; then
        command -v go >/dev/null || die "helm, step 'go': no go on PATH (helm is built from the Go module helm.sh/helm/v4)"
        log "building helm $HERALD_HELM_VERSION from the Go module proxy (once)"
        mkdir -p "$tools"
        GOBIN="$tools" GOMODCACHE="$HOME/.cache/go-mod" GOCACHE="$HOME/.cache/go-build" \
            go install "helm.sh/helm/v4/cmd/helm@$HERALD_HELM_VERSION" \
            || die "go install helm.sh/helm/v4/cmd/helm@$HERALD_HELM_VERSION failed"
    fi
    local venv="$HOME/.cache/herald-helm-venv"
    if ! "$venv/bin/python" -c 'import kubernetes_validate, pytest' 2>/dev/null; then
        log "installing kubernetes-validate and pytest (PyPI) into $venv"
        python3 -m venv "$venv" || die "python3 -m venv failed"
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            'kubernetes-validate==1.37.0' 'pytest==8.3.4' \
            || die "pip install of kubernetes-validate failed"
    fi
    export HERALD_HELM="$tools/helm" HERALD_HELM_PYTHON="$venv/bin/python"
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

# The broker a benchmark measures on, for namespace NS with PARTITIONS per topic; logs in OUT.
# By default the local stack's Apache Kafka (`scripts/stack.sh up` must have run): the bench's
# topics are created fresh under its own namespace with `herald topics create`. With
# HERALD_BENCH_BROKER=mock, a herald-broker of its own instead (librdkafka's in-memory mock:
# for comparison only, no claim about Kafka rests on it). Exports HERALD_KAFKA_BROKERS; sets
# OWN_BROKER_PID (a child to stop, mock only) and BROKER_CPU_PID (the process whose CPU is the
# broker's row: the JVM, or the mock).
start_bench_broker() {
    local out=$1 partitions=$2 ns=$3
    OWN_BROKER_PID=""
    if [ "${HERALD_BENCH_BROKER:-kafka}" = mock ]; then
        log "own herald-broker (mock): $partitions partitions per topic, namespace $ns"
        rm -f "$out/broker.addr"
        "${HERALD_BIN_DIR:-$(bin_dir)}/herald-broker" --partitions "$partitions" --namespace "$ns" \
            --address-file "$out/broker.addr" >"$out/broker.log" 2>&1 &
        OWN_BROKER_PID=$!
        for _ in $(seq 100); do [ -s "$out/broker.addr" ] && break; sleep 0.1; done
        HERALD_KAFKA_BROKERS=$(cat "$out/broker.addr")
        BROKER_CPU_PID=$OWN_BROKER_PID
    else
        pid_alive "$HERALD_STATE/kafka.pid" || die "the local stack's Kafka is not running (scripts/stack.sh up)"
        HERALD_KAFKA_BROKERS=127.0.0.1:$HERALD_KAFKA_PORT
        BROKER_CPU_PID=$(cat "$HERALD_STATE/kafka.pid")
        log "Apache Kafka $(kafka_version) at $HERALD_KAFKA_BROKERS: topics of namespace $ns, $partitions partitions each"
        HERALD_NAMESPACE=$ns HERALD_KAFKA_BROKERS=$HERALD_KAFKA_BROKERS \
            "${HERALD_BIN_DIR:-$(bin_dir)}/herald" topics create --partitions "$partitions" >"$out/topics.log" 2>&1 \
            || { cat "$out/topics.log" >&2; die "herald topics create failed"; }
    fi
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
    # Admins' flash-promo tokens: a secret of their own (herald-dev token --role admin).
    export HERALD_JWT_ADMIN_SECRET=${HERALD_JWT_ADMIN_SECRET:-$(random_secret)}
    # Signs the one-click unsubscribe links of promotional e-mail (dispatchers) and checks
    # them (herald-ingest).
    export HERALD_UNSUBSCRIBE_SECRET=${HERALD_UNSUBSCRIBE_SECRET:-$(random_secret)}
}

# ---------------------------------------------------------------------------------------------
# Apache Kafka (KRaft): the version pinned in scripts/kafka/pom.xml, fetched once from Maven
# Central into ~/.cache/herald-kafka/VERSION/libs, run as plain `java -cp` processes.

HERALD_KAFKA_PORT="${HERALD_KAFKA_PORT:-19092}"
# The broker's heap: bounded, so a test run's broker cannot grow past it.
HERALD_KAFKA_HEAP="${HERALD_KAFKA_HEAP:-768m}"

kafka_version() {
    sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERALD_ROOT/scripts/kafka/pom.xml"
}

kafka_libs() {
    echo "$HOME/.cache/herald-kafka/$(kafka_version)/libs"
}

# Java 17 or newer and the broker's jars; dies naming the step that failed.
ensure_kafka() {
    command -v java >/dev/null || die "kafka, step 'java': no java on PATH (Kafka $(kafka_version) needs a JDK or JRE 17+; apt-get install openjdk-17-jre-headless)"
    local major
    major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/.*java.specification.version = \([0-9]*\).*/\1/p')
    [ "${major:-0}" -ge 17 ] || die "kafka, step 'java': java ${major:-?} found, Kafka $(kafka_version) needs 17 or newer"
    local libs
    libs=$(kafka_libs)
    [ -f "$libs/.complete" ] && return 0
    command -v mvn >/dev/null || ensure_apt maven
    log "fetching Apache Kafka $(kafka_version) from Maven Central into $libs (once)"
    rm -rf "$libs.partial"
    mkdir -p "$libs.partial"
    if ! (cd "$HERALD_ROOT/scripts/kafka" && mvn -q -B dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$libs.partial" >"$libs.partial/mvn.log" 2>&1); then
        tail -20 "$libs.partial/mvn.log" >&2
        die "kafka, step 'fetch': mvn dependency:copy-dependencies failed (log above)"
    fi
    ls "$libs.partial"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka, step 'fetch': no kafka_2.13 jar arrived in $libs.partial"
    rm -rf "$libs"
    mv "$libs.partial" "$libs"
    touch "$libs/.complete"
}

# Writes DIR/server.properties for a combined broker+controller: NODE_ID, the client PORT, the
# controller port CPORT, the quorum VOTERS (id@host:port,...) and more settings (key=value).
kafka_node_config() {
    local dir=$1 node=$2 port=$3 cport=$4 voters=$5
    shift 5
    mkdir -p "$dir/data"
    {
        echo "process.roles=broker,controller"
        echo "node.id=$node"
        echo "controller.quorum.voters=$voters"
        echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
        echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
        echo "controller.listener.names=CONTROLLER"
        echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        echo "inter.broker.listener.name=PLAINTEXT"
        echo "log.dirs=$dir/data"
        # A missing topic is an error the operator sees, not a topic made with defaults.
        echo "auto.create.topics.enable=false"
        # Tests start hundreds of consumer groups: no 3 s wait for more members before each
        # group's first assignment.
        echo "group.initial.rebalance.delay.ms=0"
        # Small index files: a test run creates thousands of small partitions.
        echo "log.index.size.max.bytes=1048576"
        echo "num.partitions=1"
        for kv in "$@"; do echo "$kv"; done
    } >"$dir/server.properties"
    cat >"$dir/log4j2.properties" <<'LOG'
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:herald.kafka.log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
LOG
}

# Formats DIR's storage for CLUSTER_ID unless it already is (a restarted node keeps its data).
kafka_format() {
    local dir=$1 cluster_id=$2
    [ -f "$dir/data/meta.properties" ] && return 0
    java -cp "$(kafka_libs)/*" kafka.tools.StorageTool format -t "$cluster_id" \
        -c "$dir/server.properties" --ignore-formatted >"$dir/format.log" 2>&1 \
        || { cat "$dir/format.log" >&2; die "kafka, step 'format storage' in $dir failed (log above)"; }
}

kafka_cluster_id() {
    java -cp "$(kafka_libs)/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1
}

# Starts the node configured in DIR in the background (pid in PIDFILE), waits for PORT.
kafka_start() {
    local dir=$1 pidfile=$2 port=$3
    ensure_port_free "$port" "kafka broker in $dir (set HERALD_KAFKA_PORT to move it)"
    nohup java -Xms"$HERALD_KAFKA_HEAP" -Xmx"$HERALD_KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true -Dherald.kafka.log="$dir/server.log" \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$(kafka_libs)/*" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$(cat "$pidfile")" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$dir/server.log" "$dir/stdout.log" >&2 2>/dev/null || true
    die "kafka, step 'start': the broker in $dir did not open port $port (logs above)"
}

# True when the local stack (Redis and a broker: Kafka, or the mock) was started by stack.sh.
stack_running() {
    pid_alive "$HERALD_STATE/redis.pid" \
        && { pid_alive "$HERALD_STATE/kafka.pid" || pid_alive "$HERALD_STATE/broker.pid"; }
}
