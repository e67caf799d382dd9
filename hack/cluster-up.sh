#!/usr/bin/env bash
# Starts the local control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok (a fake node whose pods become Running/Ready without
# containers). Everything listens on 127.0.0.1 on free ports, with TLS and a
# client-certificate kubeconfig.
#
# Idempotent: when the plane is already up this only checks it. When it was left
# half-running (a crash, stale pid files) the leftovers are stopped, by their
# recorded PIDs only, and the plane starts fresh.
#
# Layout under .cluster/ (git-ignored):
#   kubeconfig        admin kubeconfig (certificates inlined)
#   bin/              kubectl, helm and the plane's binaries (links into the cache)
#   logs/<name>.log   one log per component
#   run/              pid files, ports, PKI and etcd data of the running plane
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=cluster-lib.sh
source "$HACK_DIR/cluster-lib.sh"

for tool in openssl curl python3 flock; do
	command -v "$tool" >/dev/null || die "$tool is required (see README prerequisites; .ci/run installs it)"
done

if plane_is_up; then
	log "control plane already running: $(cat "$RUN_DIR/server")"
	exit 0
fi
if [[ -d $RUN_DIR ]]; then
	log "found leftovers of an earlier plane; stopping them"
	"$HACK_DIR/cluster-down.sh"
fi

BIN_CACHE=$("$HACK_DIR/build-controlplane.sh")
mkdir -p "$BIN_DIR" "$LOG_DIR" "$RUN_DIR/pki" "$RUN_DIR/pids"
for b in "$BIN_CACHE"/bin/*; do ln -sfn "$b" "$BIN_DIR/$(basename "$b")"; done

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
ETCD_PORT=$(free_port)
ETCD_PEER_PORT=$(free_port)
API_PORT=$(free_port)
KCM_PORT=$(free_port)
SCHED_PORT=$(free_port)
cat >"$RUN_DIR/ports.env" <<PORTS
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
PORTS

# --- PKI: one CA, one admin certificate used for serving and as client cert.
PKI=$RUN_DIR/pki
log "generating certificates"
{
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=ephemera-local-ca \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
		-keyout "$PKI/ca.key" -out "$PKI/ca.crt"
	openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=ephemera-admin" \
		-keyout "$PKI/admin.key" -out "$PKI/admin.csr"
	printf '%s\n' "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc,IP:127.0.0.1" \
		"extendedKeyUsage=serverAuth,clientAuth" "basicConstraints=CA:FALSE" \
		"keyUsage=critical,digitalSignature,keyEncipherment" >"$PKI/admin.ext"
	openssl x509 -req -in "$PKI/admin.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 3650 -extfile "$PKI/admin.ext" -out "$PKI/admin.crt"
	openssl genrsa -out "$PKI/sa.key" 2048
	openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
} >"$LOG_DIR/pki.log" 2>&1 || {
	show_log_tail "$LOG_DIR/pki.log"
	die "generating certificates failed; log: $LOG_DIR/pki.log"
}

b64() { base64 -w0 <"$1"; }
SERVER="https://127.0.0.1:$API_PORT"
cat >"$RUN_DIR/admin.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: ephemera-local
  cluster:
    server: $SERVER
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: ephemera-admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: ephemera-local
  context:
    cluster: ephemera-local
    user: ephemera-admin
current-context: ephemera-local
KUBECONFIG
chmod 600 "$RUN_DIR/admin.kubeconfig"
KCFG=$RUN_DIR/admin.kubeconfig

# --- etcd
start_component etcd "$BIN_DIR/etcd" --name=node0 --data-dir="$RUN_DIR/etcd" \
	--auto-compaction-retention=1 --quota-backend-bytes=8589934592 --unsafe-no-fsync=true \
	--listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
	--listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster="node0=http://127.0.0.1:$ETCD_PEER_PORT" \
	--listen-metrics-urls="" --log-level=warn
wait_for "etcd to be healthy" 60 etcd \
	curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver
start_component kube-apiserver "$BIN_DIR/kube-apiserver" \
	--etcd-servers="http://127.0.0.1:$ETCD_PORT" --etcd-prefix=/registry \
	--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
	--cert-dir="$RUN_DIR/apiserver" \
	--tls-cert-file="$PKI/admin.crt" --tls-private-key-file="$PKI/admin.key" --client-ca-file="$PKI/ca.crt" \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
	--authorization-mode=Node,RBAC --allow-privileged=true --service-cluster-ip-range=10.96.0.0/16 \
	--enable-priority-and-fairness=false --max-requests-inflight=0 --max-mutating-requests-inflight=0
api_curl() { curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"; }
wait_for "kube-apiserver to be ready" 180 kube-apiserver api_curl "$SERVER/readyz"

# --- controllers, scheduler and the fake kubelet
start_component kube-controller-manager "$BIN_DIR/kube-controller-manager" \
	--kubeconfig="$KCFG" --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
	--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics \
	--root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
	--use-service-account-credentials=false \
	--kube-api-qps=5000 --kube-api-burst=10000 --leader-elect=false
start_component kube-scheduler "$BIN_DIR/kube-scheduler" \
	--kubeconfig="$KCFG" --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
	--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics \
	--kube-api-qps=5000 --kube-api-burst=10000 --leader-elect=false
# kwok's default stages plus ours that make failures observable
# (hack/kwok-failure-stages.yaml) and run containers end as their image says
# (hack/kwok-run-stages.yaml).
{
	cat "$BIN_CACHE/kwok-stages.yaml"
	echo '---'
	cat "$HACK_DIR/kwok-failure-stages.yaml"
	echo '---'
	cat "$HACK_DIR/kwok-run-stages.yaml"
} >"$RUN_DIR/kwok-stages.yaml"
# No --node-port: kwok then serves nothing, so no extra listener exists.
start_component kwok "$BIN_DIR/kwok" \
	--kubeconfig="$KCFG" --config="$RUN_DIR/kwok-stages.yaml" \
	--manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
	--node-lease-duration-seconds=40 --cidr=10.244.0.0/16 --node-ip=10.240.0.1

wait_for "kube-controller-manager to be healthy" 60 kube-controller-manager \
	curl -skf "https://127.0.0.1:$KCM_PORT/healthz"
wait_for "kube-scheduler to be healthy" 60 kube-scheduler \
	curl -skf "https://127.0.0.1:$SCHED_PORT/healthz"

KUBECTL=("$BIN_DIR/kubectl" --kubeconfig="$KCFG")
log "creating the fake node kwok-node-0"
"${KUBECTL[@]}" apply -f - >>"$LOG_DIR/kubectl.log" 2>&1 <<'NODE' || { show_log_tail "$LOG_DIR/kubectl.log"; die "creating the fake node failed"; }
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
status:
  allocatable: {cpu: "1000", memory: 4Ti, pods: "5000"}
  capacity: {cpu: "1000", memory: 4Ti, pods: "5000"}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
    kubeProxyVersion: fake
  phase: Running
NODE

node_ready_untainted() {
	local out
	out=$("${KUBECTL[@]}" get node kwok-node-0 \
		-o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}|{.spec.taints}' 2>/dev/null) || return 1
	[[ $out == "True|" ]]
}
wait_for "node kwok-node-0 to be Ready without taints" 120 kwok node_ready_untainted
wait_for "the default ServiceAccount" 60 kube-controller-manager \
	"${KUBECTL[@]}" -n default get serviceaccount default

cp "$KCFG" "$KUBECONFIG_PATH"
chmod 600 "$KUBECONFIG_PATH"
echo "$SERVER" >"$RUN_DIR/server"
log "control plane is up at $SERVER"
log "  kubeconfig: $KUBECONFIG_PATH   tools: $BIN_DIR/kubectl, $BIN_DIR/helm   logs: $LOG_DIR/"
