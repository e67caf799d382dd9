#!/usr/bin/env bash
# `make test`: unit tests and integration tests against the local control plane.
# Starts the plane when it is not running and stops it afterwards if this
# script started it; fails loudly when the plane cannot start.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=cluster-lib.sh
source "$HACK_DIR/cluster-lib.sh"
cd "$ROOT"

started_plane=0
if plane_is_up; then
	log "using the running control plane ($(cat "$RUN_DIR/server"))"
else
	log "starting the local control plane for the tests"
	if ! "$HACK_DIR/cluster-up.sh"; then
		log "the local control plane could not start; integration tests cannot run"
		exit 1
	fi
	started_plane=1
fi
# Each test binary runs its own controller for the installations it labels;
# a demo controller reconciling everything would fight over them.
if pid=$(component_pid ephemera); then
	log "stopping the demo's controller (pid $pid) so the tests' controllers own their installations"
	kill "$pid"
fi
stop_plane() {
	if ((started_plane)); then
		log "stopping the control plane this run started"
		"$HACK_DIR/cluster-down.sh" || true
	fi
}
trap stop_plane EXIT

export EPHEMERA_KUBECONFIG=$KUBECONFIG_PATH
export EPHEMERA_KUBECTL=$BIN_DIR/kubectl
run_step "building ephemera and its tests (first time: several minutes)" "$LOG_DIR/build-tests.log" \
	cargo test --locked --no-run
log "running unit and integration tests"
# The fault and security suites append their figures here (docs/security.md).
export EPHEMERA_FIGURES=$LOG_DIR/figures.txt
: >"$EPHEMERA_FIGURES"
# Waits that passed but took more than half their time-out: the tests most
# likely to fail on a busier machine.
export EPHEMERA_SLOW_WAITS=$LOG_DIR/slow-waits.txt
: >"$EPHEMERA_SLOW_WAITS"
show_figures() {
	log "figures of the fault and security suites:"
	cat "$EPHEMERA_FIGURES" >&2
	if [[ -s $EPHEMERA_SLOW_WAITS ]]; then
		log "waits that took more than half their time-out ($(wc -l <"$EPHEMERA_SLOW_WAITS")):"
		sed 's/^/    /' "$EPHEMERA_SLOW_WAITS" >&2
	else
		log "no wait took more than half its time-out"
	fi
}
if ! cargo test --locked --all-targets --no-fail-fast; then
	show_figures
	exit 1
fi
show_figures
# The image, built with buildah and checked inside (entrypoint, `ephemera
# version` and `ephemera crd`, non-root user). From the debug binary the tests
# just built, so the check costs seconds; `make image` (or
# EPHEMERA_TEST_IMAGE_PROFILE=release) builds it from the release binary,
# which from scratch is a build of its own of several minutes.
image_profile=${EPHEMERA_TEST_IMAGE_PROFILE:-dev}
run_step "building and checking the OCI image ($image_profile binary)" "$LOG_DIR/image.log" \
	env EPHEMERA_IMAGE_PROFILE="$image_profile" "$HACK_DIR/image.sh"
grep -E 'image .*MiB|inside:|run as uid' "$LOG_DIR/image.log" | sed 's/^/    /' >&2
log "all tests passed"
