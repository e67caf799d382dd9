#!/usr/bin/env bash
# `make demo`: the main job on the local control plane. Starts the plane,
# installs the CRDs, runs the controller, applies examples/quickstart.yaml,
# shows progress until the installation is Ready, then shows it.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=cluster-lib.sh
source "$HACK_DIR/cluster-lib.sh"
cd "$ROOT"

"$HACK_DIR/cluster-up.sh"
export KUBECONFIG=$KUBECONFIG_PATH
KUBECTL=("$BIN_DIR/kubectl")

run_step "building ephemera (first time: a few minutes)" "$LOG_DIR/build-ephemera.log" cargo build --locked
EPHEMERA=$ROOT/target/debug/ephemera

log "installing the CRDs"
"$EPHEMERA" crd | "${KUBECTL[@]}" apply --server-side --field-manager=ephemera-demo -f - >/dev/null
"${KUBECTL[@]}" wait --for=condition=Established --timeout=60s \
	crd/testinstallations.ephemera.dev crd/installationprofiles.ephemera.dev crd/testruns.ephemera.dev >/dev/null

if pid=$(component_pid ephemera); then
	log "controller already running (pid $pid, log: $LOG_DIR/ephemera.log)"
else
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	log "starting the controller (log: $LOG_DIR/ephemera.log, metrics: http://127.0.0.1:$port/metrics)"
	setsid "$EPHEMERA" controller --listen "127.0.0.1:$port" >"$LOG_DIR/ephemera.log" 2>&1 </dev/null &
	echo $! >"$RUN_DIR/pids/ephemera.pid"
fi

log "applying examples/quickstart.yaml"
"${KUBECTL[@]}" apply -f examples/quickstart.yaml

start=$(date +%s)
last=""
while true; do
	line=$("${KUBECTL[@]}" get ti quickstart -o 'jsonpath={.status.phase}|{.status.message}' 2>/dev/null || true)
	phase=${line%%|*}
	if [[ $line != "$last" && -n $phase ]]; then
		log "  quickstart: $phase - ${line#*|} ($(($(date +%s) - start))s)"
		last=$line
	fi
	[[ $phase == Ready ]] && break
	if ! component_pid ephemera >/dev/null; then
		show_log_tail "$LOG_DIR/ephemera.log"
		die "the controller exited; log: $LOG_DIR/ephemera.log"
	fi
	if (($(date +%s) - start > 120)); then
		"${KUBECTL[@]}" describe ti quickstart || true
		die "quickstart did not become Ready within 120s; controller log: $LOG_DIR/ephemera.log"
	fi
	sleep 0.5
done

echo
"${KUBECTL[@]}" get ti
echo
url=$("${KUBECTL[@]}" get ti quickstart -o 'jsonpath={.status.url}')
ns=$("${KUBECTL[@]}" get ti quickstart -o 'jsonpath={.status.credentialsSecret.namespace}')
log "quickstart is Ready at $url"
log "  everything it is made of:  $BIN_DIR/kubectl --kubeconfig $KUBECONFIG_PATH -n $ns get all,secrets,ingress"
log "  its admin login is in Secret $ns/credentials (never in the status)"
log "  (the local plane fakes pods with kwok, so nothing answers at that URL here)"
log "clean up: $BIN_DIR/kubectl --kubeconfig $KUBECONFIG_PATH delete -f examples/quickstart.yaml; make cluster-down"
