#!/usr/bin/env bash
# Builds the kstatus helper (main.go beside this script: the real
# sigs.k8s.io/cli-utils kstatus library behind a tiny stdin/stdout command)
# from the Go module proxy, and caches the binary by the hash of its sources
# and the Go version, like build-controlplane.sh caches the plane.
#
#   hack/kstatus/build.sh     prints the path of the binary on stdout
set -euo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib.sh
source "$DIR/../lib.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0
command -v go >/dev/null || die "go is not installed (need Go 1.26+)"
key=$( (go env GOVERSION && cat "$DIR/go.mod" "$DIR/go.sum" "$DIR/main.go") | sha256sum | cut -c1-12)
CACHE_ROOT=${EPHEMERA_CACHE_DIR:-$HOME/.cache/ephemera}
DEST="$CACHE_ROOT/kstatus/$key"
if [[ -x $DEST/kstatus ]]; then
	echo "$DEST/kstatus"
	exit 0
fi
mkdir -p "$CACHE_ROOT/kstatus"
exec 9>"$DEST.lock"
flock 9
if [[ ! -x $DEST/kstatus ]]; then
	log "building the kstatus helper (sigs.k8s.io/cli-utils) into $DEST"
	start=$(date +%s)
	mkdir -p "$DEST"
	(cd "$DIR" && go build -mod=readonly -trimpath -o "$DEST/kstatus.tmp" .) >&2
	mv "$DEST/kstatus.tmp" "$DEST/kstatus"
	log "built the kstatus helper in $(($(date +%s) - start))s"
fi
echo "$DEST/kstatus"
