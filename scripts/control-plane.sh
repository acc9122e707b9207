#!/usr/bin/env bash
# A real, minimal Kubernetes control plane on loopback for tests and the
# quickstart: etcd + kube-apiserver + kube-controller-manager, no nodes.
#
#   control-plane.sh start DIR      start it, data/certs/logs in DIR
#   control-plane.sh stop DIR       stop the processes started in DIR
#   control-plane.sh supervise DIR  start, print "ready", stop + rm -rf DIR
#                                   when stdin hits EOF or on SIGTERM/SIGINT
#
# start writes into DIR: kubeconfig (admin, token auth), env (shell exports),
# admin-token, pids, logs/*.log, and the CA at pki/ca.crt.
#
# FLAGGIT_TEST_AUDIT_LOG=PATH makes kube-apiserver write an audit log (every
# request at level Metadata, one JSON line per stage) to PATH; the engine
# benchmark counts the controller's requests from it.
#
# Workload controllers (deployment, replicaset, daemonset, statefulset, HPA)
# are off so tests can drive Deployment status themselves, while garbage
# collection and namespace deletion stay real.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ETCD=/usr/bin/etcd
START_TIMEOUT=${FLAGGIT_CP_TIMEOUT:-60}

usage() {
    echo "usage: ${0##*/} {start|stop|supervise} DIR" >&2
    exit 2
}

now() { echo "${EPOCHREALTIME/,/.}"; }

# Print N distinct free loopback TCP ports. All sockets are held open until
# every port is chosen so we never get the same port twice.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# CA, apiserver serving cert and service-account keys; kept across restarts
# of the same DIR so existing kubeconfigs stay valid. P-256 keys: instant to
# generate, and accepted by Go and rustls alike.
gen_pki() {
    local pki=$1
    [[ -f $pki/sa.pub ]] && return 0
    mkdir -p "$pki"
    (
        cd "$pki"
        umask 077
        local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 3650 \
            -subj "/CN=flaggit-local-ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req "${ec[@]}" -keyout apiserver.key -out apiserver.csr \
            -subj "/CN=kube-apiserver" 2>/dev/null
        # rustls/webpki insist on SANs, serverAuth EKU and a non-CA leaf.
        cat >apiserver.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
EOF
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key \
            -CAcreateserial -days 3650 -extfile apiserver.ext \
            -out apiserver.crt 2>/dev/null
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out sa.key
        openssl pkey -in sa.key -pubout -out sa.pub.tmp
        chmod 644 ca.crt apiserver.crt sa.pub.tmp
        mv sa.pub.tmp sa.pub # written last: marks the set complete
    )
}

# Process exists and is not a zombie awaiting its reaper (orphans here may be
# reaped late by whatever runs as PID 1).
alive() {
    local state
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [[ $state != Z ]]
}

# Is the recorded pid still one of *our* processes? Its command line names
# DIR, which protects against killing a recycled pid.
ours() {
    local pid=$1 dir=$2 cmdline
    alive "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$dir/"* ]]
}

# Start NAME in its own session (so a Ctrl-C aimed at the caller's process
# group doesn't tear it down behind our back), stdin closed, output to log.
launch() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
    echo "$name $!" >>"$DIR/pids"
}

fail_start() {
    local name=$1 msg=$2
    log "error: $name $msg; last lines of $DIR/logs/$name.log:"
    tail -n 25 "$DIR/logs/$name.log" >&2 || true
    stop_cp "$DIR"
    exit 1
}

# wait_until NAME DEADLINE CMD...: poll CMD until it succeeds; bail out early
# if any component died, and on timeout.
wait_until() {
    local name=$1 deadline=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        local c pid
        while read -r c pid; do
            alive "$pid" || fail_start "$c" "exited during startup"
        done <"$DIR/pids"
        if (($(date +%s) >= deadline)); then
            fail_start "$name" "not ready after ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
}

start_cp() {
    local t0 bin
    t0=$(now)
    mkdir -p "$1/logs"
    DIR=$(cd "$1" && pwd) # absolute: it ends up in env and in cmdlines
    if [[ -f $DIR/pids ]]; then
        local c pid
        while read -r c pid; do
            ours "$pid" "$DIR" && die "$DIR already has a running $c (pid $pid); stop it first"
        done <"$DIR/pids"
        rm -f "$DIR/pids"
    fi
    local cmd
    for cmd in "$ETCD" openssl curl python3; do
        if ! command -v "$cmd" >/dev/null; then
            "$SCRIPT_DIR/deps.sh"
            break
        fi
    done
    bin=$("$SCRIPT_DIR/kube-build.sh")

    local pki=$DIR/pki
    gen_pki "$pki"

    # One admin identity for everything; system:masters bypasses RBAC.
    if [[ ! -s $DIR/admin-token ]]; then
        (umask 077 && openssl rand -hex 32 >"$DIR/admin-token")
    fi
    local token
    token=$(<"$DIR/admin-token")
    (umask 077 && echo "$token,admin,admin,\"system:masters\"" >"$DIR/tokens.csv")

    local etcd_client etcd_peer api_port kcm_port
    read -r etcd_client etcd_peer api_port kcm_port < <(free_ports 4)
    [[ -n $kcm_port ]] || die "could not pick free loopback ports"
    local server=https://127.0.0.1:$api_port

    write_kubeconfig "$DIR/kubeconfig" "$server" "$pki/ca.crt" "$token"
    {
        echo "# source me: kubectl (the matching 1.20 one, first in PATH) talks to this control plane"
        printf 'export KUBECONFIG=%q\n' "$DIR/kubeconfig"
        printf 'export FLAGGIT_KUBE_SERVER=%q\n' "$server"
        # shellcheck disable=SC2016 # $PATH is meant to expand when sourced
        printf 'export PATH=%q:"$PATH"\n' "$bin"
    } >"$DIR/env"

    # etcd 3.4 from Debian; amd64/arm64 need no ETCD_UNSUPPORTED_ARCH.
    launch etcd "$ETCD" \
        --name=flaggit \
        --data-dir="$DIR/etcd" \
        --listen-client-urls="http://127.0.0.1:$etcd_client" \
        --advertise-client-urls="http://127.0.0.1:$etcd_client" \
        --listen-peer-urls="http://127.0.0.1:$etcd_peer" \
        --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
        --initial-cluster="flaggit=http://127.0.0.1:$etcd_peer" \
        --logger=zap --log-outputs=stderr
    local deadline=$(($(date +%s) + START_TIMEOUT))
    wait_until etcd "$deadline" curl -fsS "http://127.0.0.1:$etcd_client/health"

    # No --insecure-port: 1.20 removed insecure serving (the flag only warns).
    # --endpoint-reconciler-type=none: Endpoints validation rejects loopback
    #   IPs, so the default reconciler would log errors forever trying to
    #   publish 127.0.0.1 as the "kubernetes" service endpoint.
    local audit=()
    if [[ -n ${FLAGGIT_TEST_AUDIT_LOG:-} ]]; then
        cat >"$DIR/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
EOF
        audit=(--audit-policy-file="$DIR/audit-policy.yaml"
            --audit-log-path="$FLAGGIT_TEST_AUDIT_LOG"
            --audit-log-format=json --audit-log-mode=blocking
            --audit-log-maxsize=0)
    fi
    launch kube-apiserver "$bin/kube-apiserver" \
        "${audit[@]}" \
        --etcd-servers="http://127.0.0.1:$etcd_client" \
        --bind-address=127.0.0.1 \
        --advertise-address=127.0.0.1 \
        --secure-port="$api_port" \
        --tls-cert-file="$pki/apiserver.crt" \
        --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --token-auth-file="$DIR/tokens.csv" \
        --authorization-mode=Node,RBAC \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$pki/sa.pub" \
        --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16 \
        --endpoint-reconciler-type=none \
        --allow-privileged=true \
        --profiling=false \
        --v=1
    # /readyz covers etcd, informers and the RBAC/priority bootstrap hooks.
    wait_until kube-apiserver "$deadline" \
        curl -fsS --cacert "$pki/ca.crt" -H "Authorization: Bearer $token" "$server/readyz"

    # Its own secure port is loopback-only and serves /healthz unauthenticated.
    # --port=0 turns off 1.20's insecure port (default 10252, which parallel
    # control planes would fight over).
    launch kube-controller-manager "$bin/kube-controller-manager" \
        --kubeconfig="$DIR/kubeconfig" \
        --controllers='*,-deployment,-replicaset,-daemonset,-statefulset,-horizontalpodautoscaling,-serviceaccount-token' \
        --leader-elect=false \
        --use-service-account-credentials=false \
        --root-ca-file="$pki/ca.crt" \
        --bind-address=127.0.0.1 \
        --secure-port="$kcm_port" \
        --port=0 \
        --cert-dir="$DIR/kcm-certs" \
        --profiling=false \
        --v=1
    wait_until kube-controller-manager "$deadline" \
        curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
    wait_until kube-apiserver "$deadline" \
        "$bin/kubectl" --kubeconfig="$DIR/kubeconfig" get namespace default

    log "control plane up at $server in $(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') s (source $DIR/env)"
}

write_kubeconfig() {
    local file=$1 server=$2 ca=$3 token=$4
    (
        umask 077
        cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: flaggit-local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$ca")
users:
- name: admin
  user:
    token: $token
contexts:
- name: flaggit-local
  context:
    cluster: flaggit-local
    user: admin
current-context: flaggit-local
EOF
    )
    mv "$file.tmp" "$file"
}

# TERM everything recorded in DIR/pids (controller-manager first), KILL what
# is still alive after 5 s.
stop_cp() {
    local dir=$1 c pid pids=() i
    local IFS=$' \t\n' # may run from a trap that interrupted a `read`
    [[ -f $dir/pids ]] || return 0
    while read -r c pid; do
        ours "$pid" "$dir" && pids=("$pid" "${pids[@]}")
    done <"$dir/pids"
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            local left=()
            for pid in "${pids[@]}"; do
                ours "$pid" "$dir" && left+=("$pid")
            done
            ((${#left[@]})) || break
            sleep 0.1
        done
        if ((${#left[@]})); then
            log "killing ${left[*]} after 5 s"
            kill -KILL "${left[@]}" 2>/dev/null || true
        fi
    fi
    rm -f "$dir/pids"
}

supervise_cp() {
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd)
    # shellcheck disable=SC2317 # invoked via trap
    cleanup() {
        trap - EXIT INT TERM
        # The parent may be gone with its end of our stdout/stderr: a log
        # line must fail quietly, not kill us halfway through the cleanup.
        trap '' PIPE
        stop_cp "$DIR"
        rm -rf "$DIR"
    }
    # Every way out, including a dead parent's pipe (SIGPIPE), cleans up.
    trap cleanup EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    trap 'exit 141' PIPE
    start_cp "$DIR"
    # The only stdout line. Callers may stop reading (close the pipe) after it.
    echo ready
    # Block until the parent closes our stdin (or dies). A trapped signal
    # interrupts `read`, and the EXIT trap cleans up in every case.
    # No `IFS=` prefix: a trap running inside this `read` would inherit it.
    while read -r _; do :; done
}

[[ $# -eq 2 ]] || usage
case $1 in
    start) start_cp "$2" ;;
    stop) if [[ -d $2 ]]; then stop_cp "$(cd "$2" && pwd)"; fi ;;
    supervise) supervise_cp "$2" ;;
    *) usage ;;
esac
