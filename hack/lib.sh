# Shared shell helpers for hack/ scripts: timestamped progress lines and
# long-running steps that report how long they have been running.
# shellcheck shell=bash

EPHEMERA_T0=${EPHEMERA_T0:-$(date +%s)}
export EPHEMERA_T0

elapsed() {
	local s=$(($(date +%s) - EPHEMERA_T0))
	printf '%dm%02ds' $((s / 60)) $((s % 60))
}

log() { printf '[ephemera %s] %s\n' "$(elapsed)" "$*" >&2; }

die() {
	log "ERROR: $*"
	exit 1
}

# show_log_tail FILE [LINES]: print the end of a component's or step's log.
show_log_tail() {
	local file=$1 lines=${2:-40}
	if [[ -f $file ]]; then
		printf -- '----- last %s lines of %s -----\n' "$lines" "$file" >&2
		tail -n "$lines" "$file" >&2
		printf -- '----- end of %s -----\n' "$file" >&2
	else
		log "(no log at $file)"
	fi
}

# run_step NAME LOGFILE CMD...: run CMD with its output in LOGFILE, printing a
# heartbeat every 30 s. On failure, name the step, point at the log and show
# its tail, then exit.
run_step() {
	local name=$1 logfile=$2
	shift 2
	mkdir -p "$(dirname "$logfile")"
	local start
	start=$(date +%s)
	log "$name (log: $logfile)"
	"$@" >"$logfile" 2>&1 &
	local pid=$!
	(
		while sleep 30; do
			kill -0 "$pid" 2>/dev/null || exit 0
			local s=$(($(date +%s) - start))
			log "$(printf "  ... still %s: %dm%02ds so far" "$name" $((s / 60)) $((s % 60)))"
		done
	) &
	local ticker=$!
	local rc=0
	wait "$pid" || rc=$?
	kill "$ticker" 2>/dev/null || true
	wait "$ticker" 2>/dev/null || true
	if ((rc != 0)); then
		log "FAILED step: $name (exit $rc)"
		show_log_tail "$logfile" 60
		die "step '$name' failed; full log: $logfile"
	fi
	log "  done: $name in $(($(date +%s) - start))s"
}
