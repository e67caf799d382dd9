#!/usr/bin/env bash
# Injects a fault into one component of the running local control plane, by
# the PID recorded in .cluster/run/pids/ (never by name), for fault tests:
#
#   hack/plane-fault.sh kill    COMPONENT [DOWN_SECONDS]  SIGKILL, wait, start again
#   hack/plane-fault.sh restart COMPONENT [DOWN_SECONDS]  SIGTERM, wait, start again
#   hack/plane-fault.sh freeze  COMPONENT SECONDS         SIGSTOP, wait, SIGCONT
#
# COMPONENT is one of etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok. A restarted component gets its original command line
# and working directory (read from /proc before it is stopped), appends to its
# log, and its new PID is recorded. Prints one line per step, with timings.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=cluster-lib.sh
source "$HACK_DIR/cluster-lib.sh"

usage() { die "usage: $0 kill|restart COMPONENT [DOWN_SECONDS] | freeze COMPONENT SECONDS"; }
(($# >= 2)) || usage
action=$1 component=$2 seconds=${3:-0}
[[ $seconds =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage
known=0
for c in "${COMPONENTS[@]}"; do [[ $c == "$component" ]] && known=1; done
((known)) || die "unknown component $component (one of: ${COMPONENTS[*]})"
pid=$(component_pid "$component") || die "$component is not running (no live PID in $RUN_DIR/pids/$component.pid)"

wait_gone() {
	local i
	for ((i = 0; i < 300; i++)); do
		[[ -d /proc/$1 ]] || return 0
		# A zombie (not yet reaped by its parent) no longer holds its ports.
		[[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]] && return 0
		sleep 0.1
	done
	die "$component (pid $1) did not exit"
}

start_ms=$(($(date +%s%N) / 1000000))
took() {
	local ms=$(($(date +%s%N) / 1000000 - start_ms))
	printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100))
}

case $action in
kill | restart)
	mapfile -d '' argv <"/proc/$pid/cmdline"
	cwd=$(readlink "/proc/$pid/cwd")
	signal=KILL
	[[ $action == restart ]] && signal=TERM
	log "$component: SIG$signal to pid $pid"
	kill "-$signal" "$pid"
	wait_gone "$pid"
	log "$component: stopped ($(took)); starting again in ${seconds}s"
	sleep "$seconds"
	echo "--- restarted by plane-fault.sh at $(date -u +%FT%TZ)" >>"$LOG_DIR/$component.log"
	(
		cd "$cwd"
		setsid "${argv[@]}" >>"$LOG_DIR/$component.log" 2>&1 </dev/null &
		echo $! >"$RUN_DIR/pids/$component.pid"
	)
	log "$component: started again as pid $(cat "$RUN_DIR/pids/$component.pid") ($(took))"
	;;
freeze)
	log "$component: SIGSTOP to pid $pid for ${seconds}s"
	kill -STOP "$pid"
	sleep "$seconds"
	kill -CONT "$pid"
	log "$component: SIGCONT ($(took))"
	;;
*) usage ;;
esac
