#!/usr/bin/env bash
# `make bench N=100 [CONCURRENCY=…] [IDLE=60] [ROUNDS=1] [PROFILE=release]`:
# ephemera against the direct floor on the local control plane, release build
# unless PROFILE says otherwise (PROFILE=dev reuses the test build). ROUNDS=k
# measures both k times in alternating order and reports the median ratio. Writes
# bench/results/latest.json and latest.md. Run it on an otherwise quiet
# machine: the API server and the controller share its cores.
# To profile the controller's heap: PROFILE=profiling (the release build with
# its symbols), BENCH_CARGO_FLAGS=--no-default-features (glibc's allocator:
# heaptrack does not see jemalloc) and
# BENCH_CONTROLLER_WRAPPER="heaptrack -o /tmp/controller".
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=cluster-lib.sh
source "$HACK_DIR/cluster-lib.sh"
cd "$ROOT"

"$HACK_DIR/cluster-up.sh"
if pid=$(component_pid ephemera); then
	log "stopping the demo's controller (pid $pid): the benchmark runs its own"
	kill "$pid"
fi
export EPHEMERA_KUBECONFIG=$KUBECONFIG_PATH
export BENCH_INSTALLATIONS=${N:-100}
export BENCH_IDLE_SECONDS=${IDLE:-60}
if [[ -n ${CONCURRENCY:-} ]]; then export BENCH_CONCURRENCY=$CONCURRENCY; fi
export BENCH_ROUNDS=${ROUNDS:-1}
PROFILE=${PROFILE:-bench}
read -r -a cargo_flags <<<"${BENCH_CARGO_FLAGS:-}"
run_step "building the benchmark ($PROFILE profile; first time: several minutes)" "$LOG_DIR/build-bench.log" \
	cargo bench --locked --profile "$PROFILE" "${cargo_flags[@]}" --bench installations --no-run
log "measuring $BENCH_INSTALLATIONS installations, ephemera and the direct floor, $BENCH_ROUNDS round(s)"
cargo bench --locked --profile "$PROFILE" "${cargo_flags[@]}" --bench installations
