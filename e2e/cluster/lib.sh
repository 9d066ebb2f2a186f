#!/usr/bin/env bash
# Shared settings and helpers for the local-cluster scripts. Sourced, never run.
set -euo pipefail

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/../.." && pwd)"
# shellcheck source=versions.env
source "$CLUSTER_DIR/versions.env"
# The version matrix (e2e/cluster/matrix) runs these scripts for another supported version.
if [[ -n "${AGENT_OPERATOR_K8S_VERSION:-}" ]]; then
  K8S_VERSION="$AGENT_OPERATOR_K8S_VERSION"
  K8S_STAGING_VERSION="0.${K8S_VERSION#1.}"
fi

# Built binaries live outside the checkout so that every checkout on the machine shares them
# and a second `up` takes seconds.
CACHE_DIR="${AGENT_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-operator}"
BIN_DIR="$CACHE_DIR/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
STATE_DIR="${AGENT_OPERATOR_STATE_DIR:-$CLUSTER_DIR/.state}"
KUBECONFIG_PATH="$STATE_DIR/kubeconfig"

# The cluster name is derived from the checkout path, so two checkouts on one machine get
# two clusters (and two sets of ports) instead of silently sharing one.
CHECKOUT_ID="$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1)"
CLUSTER_NAME="${AGENT_OPERATOR_CLUSTER:-ao-$CHECKOUT_ID}"
# kwokctl keeps its own state (certificates, pids, logs) here.
export KWOK_WORKDIR="$STATE_DIR/kwok"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

require_tool() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: $2"
}

# Prints the last lines of a log file, for messages about a component that failed.
tail_log() {
  local file="$1"
  if [[ -f "$file" ]]; then
    printf -- '--- last lines of %s ---\n' "$file" >&2
    tail -n 30 "$file" >&2
    printf -- '---\n' >&2
  fi
}

kwokctl_bin() { printf '%s/kwokctl' "$BIN_DIR"; }
kubectl_bin() { printf '%s/kubectl' "$BIN_DIR"; }
