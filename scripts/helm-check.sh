#!/usr/bin/env bash
# Checks the Helm chart (deploy/helm/herald) without a cluster: `helm lint --strict`,
# `helm template` for the default values and each deploy/helm/herald/ci/*-values.yaml, every
# rendered object against the Kubernetes schemas (kubernetes-validate) and KEDA's objects
# against the fields KEDA documents, then the chart's promises (tests/helm/test_chart.py).
# Needs Herald's programs built (their --help lists the variables the chart may set).
#
#   scripts/helm-check.sh            all of it
#   scripts/helm-check.sh -k keda    pytest's -k, and any other pytest argument
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HERALD_ROOT"
ensure_helm_tools
HERALD_BIN_DIR="${HERALD_BIN_DIR:-$(bin_dir)}"
[ -x "$HERALD_BIN_DIR/herald-dispatch" ] || die "no Herald programs in $HERALD_BIN_DIR: build them first (cargo build --bins)"
export HERALD_BIN_DIR
"$HERALD_HELM_PYTHON" -m pytest -q -p no:cacheprovider tests/helm "$@"
