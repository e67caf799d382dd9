#!/usr/bin/env bash
# Stops the local control plane: only the processes cluster-up.sh started, by
# the PIDs it recorded. Logs stay in .cluster/logs/; the plane's state (etcd
# data, certificates, kubeconfig) is removed, so the next start is fresh.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=cluster-lib.sh
source "$HACK_DIR/cluster-lib.sh"

stopped=0
# The demo's controller first, then the plane in reverse start order.
STOP_ORDER=(ephemera)
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do STOP_ORDER+=("${COMPONENTS[i]}"); done
for name in "${STOP_ORDER[@]}"; do
	if pid=$(component_pid "$name"); then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name (pid $pid) did not stop on SIGTERM within 10s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		log "stopped $name (pid $pid)"
		stopped=$((stopped + 1))
	fi
done
rm -rf "$RUN_DIR" "$KUBECONFIG_PATH"
if ((stopped == 0)); then
	log "control plane was not running"
else
	log "control plane stopped ($stopped processes)"
fi
