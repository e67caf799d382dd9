#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy at the
# versions pinned in hack/versions.env, and caches them by version.
#
#   hack/build-controlplane.sh        prints the cache directory on stdout
#
# Cache: ${EPHEMERA_CACHE_DIR:-~/.cache/ephemera}/controlplane/<key>, where the
# key names every pinned version, the Go version and a hash of the wrapper
# modules and of the pinned versions. A build runs under a lock, goes into a temporary
# directory and is moved into place only when complete, so an interrupted build
# leaves nothing that looks finished; the next run removes its leftovers.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"

export GOTOOLCHAIN=local CGO_ENABLED=0
command -v go >/dev/null || die "go is not installed (need Go 1.26+)"
GO_VERSION=$(go env GOVERSION)
case $GO_VERSION in
go1.2[6-9]* | go1.[3-9]*) ;;
*) die "Go 1.26 or newer is required to build Kubernetes $KUBE_VERSION; found $GO_VERSION" ;;
esac

LOG_DIR=${EPHEMERA_BUILD_LOG_DIR:-$HACK_DIR/../.cluster/logs}
mkdir -p "$LOG_DIR"
LOG_DIR=$(cd "$LOG_DIR" && pwd)

# Bump CACHE_REVISION when a change to this script changes what it produces.
CACHE_REVISION=1
inputs_hash=$( (echo "$CACHE_REVISION" && cat "$HACK_DIR/versions.env" "$HACK_DIR/k8sbin/go.mod" \
	"$HACK_DIR/etcdbin/go.mod") | sha256sum | cut -c1-12)
KEY="k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}_${GO_VERSION}_${inputs_hash}"
CACHE_ROOT=${EPHEMERA_CACHE_DIR:-$HOME/.cache/ephemera}
DEST="$CACHE_ROOT/controlplane/$KEY"

if [[ -f $DEST/.complete ]]; then
	log "control plane binaries cached at $DEST"
	echo "$DEST"
	exit 0
fi

mkdir -p "$CACHE_ROOT/controlplane"
exec 9>"$DEST.lock"
if ! flock -n 9; then
	log "another build of $KEY is running; waiting for its lock"
	flock 9
fi
if [[ -f $DEST/.complete ]]; then
	log "control plane binaries cached at $DEST (built by another process)"
	echo "$DEST"
	exit 0
fi

# We hold the lock, so any staging directory or half-moved result is a
# leftover of an interrupted build.
rm -rf "$DEST" "$DEST".tmp.*
STAGE="$DEST.tmp.$$"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/src"

log "building the control plane (first time only; about 15-25 min on 2 cores)"
log "  Kubernetes $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION, $GO_VERSION"
log "  into $DEST"

# The wrapper modules are copied so concurrent builds never edit the repo.
cp -r "$HACK_DIR/k8sbin" "$HACK_DIR/etcdbin" "$STAGE/src/"

minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
done

build_kubernetes() {
	cd "$STAGE/src/k8sbin"
	go mod download -x k8s.io/kubernetes
	go build -mod=mod -trimpath -ldflags "$ldflags" -o "$STAGE/bin/" \
		k8s.io/kubernetes/cmd/kube-apiserver \
		k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler \
		k8s.io/kubernetes/cmd/kubectl
}

build_etcd() {
	cd "$STAGE/src/etcdbin"
	go build -mod=mod -trimpath -ldflags "-s -w" -o "$STAGE/bin/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
	GOBIN="$STAGE/bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
	# The standalone kwok binary needs stage definitions; they ship in its
	# module. These are the ones kwokctl uses by default.
	local stages
	stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
	local f first=1
	for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
		pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
		[[ -f $stages/$f ]] || { echo "missing kwok stage $stages/$f" >&2; return 1; }
		((first)) || echo '---'
		first=0
		cat "$stages/$f"
	done >"$STAGE/kwok-stages.yaml"
}

build_helm() {
	local major=${HELM_VERSION%%.*}
	GOBIN="$STAGE/bin" go install -trimpath \
		-ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
		"helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
}

run_step "building etcd $ETCD_VERSION" "$LOG_DIR/build-etcd.log" build_etcd
run_step "building kwok $KWOK_VERSION" "$LOG_DIR/build-kwok.log" build_kwok
run_step "building helm $HELM_VERSION" "$LOG_DIR/build-helm.log" build_helm
run_step "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $KUBE_VERSION" \
	"$LOG_DIR/build-kubernetes.log" build_kubernetes

for b in etcd kwok helm kube-apiserver kube-controller-manager kube-scheduler kubectl; do
	[[ -x $STAGE/bin/$b ]] || die "build finished but $STAGE/bin/$b is missing"
done
"$STAGE/bin/kube-apiserver" --version | grep -q "$KUBE_VERSION" ||
	die "kube-apiserver --version does not report $KUBE_VERSION: $("$STAGE/bin/kube-apiserver" --version)"

# Keep the resolved module sums beside the wrapper modules for reference.
cp "$STAGE/src/k8sbin/go.sum" "$STAGE/k8sbin.go.sum"
cp "$STAGE/src/etcdbin/go.sum" "$STAGE/etcdbin.go.sum"
rm -rf "$STAGE/src"
(cd "$STAGE/bin" && sha256sum -- * >../SHA256SUMS)
date -u +%FT%TZ >"$STAGE/.complete"
mv "$STAGE" "$DEST"
trap - EXIT
log "control plane binaries ready in $DEST ($(du -sh "$DEST" | cut -f1))"
echo "$DEST"
