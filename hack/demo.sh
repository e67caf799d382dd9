#!/usr/bin/env bash
# `make demo`: bring up the local control plane and show what it runs.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=cluster-lib.sh
source "$HACK_DIR/cluster-lib.sh"

"$HACK_DIR/cluster-up.sh"
KUBECTL=("$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_PATH")
log "server version:"
"${KUBECTL[@]}" version
log "nodes:"
"${KUBECTL[@]}" get nodes -o wide
log "the plane stays up; stop it with: make cluster-down"
