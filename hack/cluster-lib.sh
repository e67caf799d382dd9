# Helpers shared by cluster-up.sh and cluster-down.sh: where the plane keeps its
# state, starting a component with a pid file, stopping it by that PID only.
# shellcheck shell=bash

CLUSTER_DIR=${EPHEMERA_CLUSTER_DIR:-$ROOT/.cluster}
BIN_DIR=$CLUSTER_DIR/bin
LOG_DIR=$CLUSTER_DIR/logs
RUN_DIR=$CLUSTER_DIR/run
KUBECONFIG_PATH=$CLUSTER_DIR/kubeconfig
# Start order; stopped in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# start_component NAME BINARY ARGS...: run in its own session so it outlives
# this script, with output in logs/NAME.log and its PID in run/pids/NAME.pid.
start_component() {
	local name=$1
	shift
	log "starting $name (log: $LOG_DIR/$name.log)"
	setsid "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
	local pid=$!
	echo "$pid" >"$RUN_DIR/pids/$name.pid"
	# Until the forked shell has exec'd the binary, /proc shows the shell, and
	# component_pid would take the component for dead (seen on a loaded box).
	local tries=0
	while ! component_pid "$name" >/dev/null && [[ -d /proc/$pid ]] && ((tries < 100)); do
		sleep 0.05
		tries=$((tries + 1))
	done
}

# component_pid NAME: prints the recorded PID if that process is still the
# component we started (guards against PID reuse), else fails.
component_pid() {
	local pidfile=$RUN_DIR/pids/$1.pid pid
	[[ -f $pidfile ]] || return 1
	pid=$(cat "$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	local argv0
	argv0=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1)
	[[ $(basename -- "$argv0") == "$1" ]] || return 1
	echo "$pid"
}

# wait_for WHAT TIMEOUT_S COMPONENT CMD...: poll CMD until it succeeds, with a
# progress line every 10 s. On time-out, or if COMPONENT died, show its log.
wait_for() {
	local what=$1 timeout=$2 component=$3
	shift 3
	local start
	start=$(date +%s)
	log "waiting for $what"
	local next_report=$((start + 10))
	while ! "$@" >/dev/null 2>&1; do
		local now
		now=$(date +%s)
		if ! component_pid "$component" >/dev/null; then
			show_log_tail "$LOG_DIR/$component.log"
			die "$component exited while waiting for $what; log: $LOG_DIR/$component.log"
		fi
		if ((now - start >= timeout)); then
			show_log_tail "$LOG_DIR/$component.log"
			die "timed out after ${timeout}s waiting for $what; log: $LOG_DIR/$component.log"
		fi
		if ((now >= next_report)); then
			log "  ... still waiting for $what ($((now - start))s)"
			next_report=$((now + 10))
		fi
		sleep 0.5
	done
	log "  ready: $what ($(($(date +%s) - start))s)"
}

# plane_is_up: every component we started is alive and the API server answers.
plane_is_up() {
	local c
	[[ -f $RUN_DIR/server && -f $KUBECONFIG_PATH ]] || return 1
	for c in "${COMPONENTS[@]}"; do component_pid "$c" >/dev/null || return 1; done
	local pki=$RUN_DIR/pki
	curl -sf --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
		"$(cat "$RUN_DIR/server")/readyz" >/dev/null
}
