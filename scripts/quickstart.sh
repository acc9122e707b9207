#!/usr/bin/env bash
# The whole story of flaggit on one machine, unattended: builds flaggit, starts a local
# Kubernetes control plane, a local GitOps config repo, a real Prometheus and the stand-ins a
# laptop lacks (`flaggit dev stand-in` plays the kubelet and the mesh's telemetry), runs the
# controller and the dashboard, then
#   1. releases podinfo 6.0.1: it is analysed and promoted step by step;
#   2. releases podinfo 6.0.2, a build whose requests fail: it is rolled back, and flaggit
#      writes 6.0.1 back into the config repo's manifest;
# and prints the config repo's `git log`, the write-back commit, `flaggit history` and the
# dashboard's address with a token to sign in. Then it keeps everything running until Ctrl-C.
# Each run starts afresh in .flaggit-local/ (ignored by git).
#
# Env:
#   FLAGGIT_QUICKSTART_FAST=1   CI: 3-second analysis steps, and exit once the story is told
#   FLAGGIT_QUICKSTART_EXIT=1   exit once the story is told (normal steps), to time it
#   FLAGGIT_QUICKSTART_STATE=D  keep the state in D instead of .flaggit-local
#   FLAGGIT_BIN=path            use this flaggit binary instead of building one
#   FLAGGIT_QUICKSTART_SCREENSHOTS=D  also save screenshots of the dashboard in D (docs/images)
# shellcheck source-path=SCRIPTDIR
set -Eeuo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'log "error: line $LINENO: \"$BASH_COMMAND\" failed"' ERR
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
state=${FLAGGIT_QUICKSTART_STATE:-$root/.flaggit-local}
fast=${FLAGGIT_QUICKSTART_FAST:-}
leave=${FLAGGIT_QUICKSTART_EXIT:-$fast}
started=$SECONDS

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

scripts/deps.sh >/dev/null
kube_bin=$(scripts/kube-build.sh)
if [[ -n ${FLAGGIT_BIN:-} ]]; then
    flaggit=$FLAGGIT_BIN
else
    log "building flaggit (release)"
    cargo build --release --locked --bin flaggit
    flaggit=$root/target/release/flaggit
fi
kubectl() { "$kube_bin/kubectl" "$@"; }

if [[ -d $state/cluster ]]; then
    scripts/control-plane.sh stop "$state/cluster" || true
fi
rm -rf "$state"
mkdir -p "$state/logs"
pids=()
cleanup() {
    trap - EXIT INT TERM
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    scripts/control-plane.sh stop "$state/cluster"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# background NAME CMD...: runs CMD with its output in $state/logs/NAME.log.
background() {
    local name=$1
    shift
    "$@" >"$state/logs/$name.log" 2>&1 &
    pids+=("$!")
}

say "starting a local Kubernetes control plane (etcd, kube-apiserver 1.20, no nodes)"
scripts/control-plane.sh start "$state/cluster"
export KUBECONFIG=$state/cluster/kubeconfig
kubectl apply --server-side -f manifests/crds -f tests/fixtures/crds -f manifests/dashboard/viewer.yaml >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
    crd/canaries.flagger.app crd/virtualservices.networking.istio.io \
    crd/destinationrules.networking.istio.io >/dev/null

read -r prom_port mesh_port ctl_port dash_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(4)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')

say "starting the stand-ins for what this laptop lacks, and Prometheus"
broken=ghcr.io/stefanprodan/podinfo:6.0.2
background stand-in "$flaggit" dev stand-in --metrics-listen "127.0.0.1:$mesh_port" --broken-image "$broken"
cat >"$state/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: mesh
    static_configs:
      - targets: ["127.0.0.1:$mesh_port"]
EOF
background prometheus prometheus --config.file="$state/prometheus.yml" \
    --storage.tsdb.path="$state/prometheus" --web.listen-address="127.0.0.1:$prom_port" --log.level=warn
echo "kubelet: 'flaggit dev stand-in' marks Deployments ready (no pods run)"
echo "mesh:    the same process serves each ready replica's requests as Istio metrics; $broken answers 500 half the time"
echo "metrics: Prometheus at http://127.0.0.1:$prom_port scrapes them every second"

say "creating the config repo a team would keep: $state/config.git"
git init -q --bare --initial-branch=main "$state/config.git"
work=$state/checkout
git clone -q "$state/config.git" "$work" 2>/dev/null
mkdir -p "$work/apps/podinfo"
cp examples/quickstart/*.yaml "$work/apps/podinfo/"
sed -i "s#file:///path/to/config.git#file://$state/config.git#" "$work/apps/podinfo/canary.yaml"
if [[ -n $fast ]]; then
    sed -i 's/^    interval: 10s$/    interval: 3s/' "$work/apps/podinfo/canary.yaml"
fi
printf '/.flaggit/\n' >"$work/.sourceignore" # the ledger is not applied (Flux's .sourceignore)
developer() { git -C "$work" -c user.name="Dana Developer" -c user.email=dana@example.com "$@"; }
developer add -A
developer commit -q -m "podinfo: initial manifests (6.0.0)"
developer push -q origin main

# Plays Flux: applies what the config repo's main branch declares.
flux_apply() {
    developer pull -q --rebase origin main
    kubectl apply -f "$work/apps/podinfo/namespace.yaml" >/dev/null
    kubectl apply -f "$work/apps/podinfo/" | grep -v ' unchanged$' | sed 's/^/flux: applied /' || true
}
# A developer's release: bump the image in the config repo, push, and Flux applies it.
release() {
    local version=$1
    developer pull -q --rebase origin main
    sed -i "s#podinfo:[0-9.]*\$#podinfo:$version#" "$work/apps/podinfo/deployment.yaml"
    developer commit -q -am "podinfo: release $version"
    # flaggit pushes its records to the same branch: a rejected push is rebased and retried.
    local tries=0
    until developer push -q origin main 2>/dev/null; do
        ((++tries < 10)) || die "cannot push the release to $state/config.git"
        developer pull -q --rebase origin main
    done
    echo "git: Dana Developer pushed \"podinfo: release $version\""
    flux_apply
}
phase() { kubectl -n demo get canary podinfo -o 'jsonpath={.status.phase}' 2>/dev/null || true; }
# wait_phase PHASE SECONDS: shows each change of phase and weight until the canary is in PHASE.
wait_phase() {
    local want=$1 deadline=$((SECONDS + $2)) seen="" now phase weight failed
    while :; do
        read -r phase weight failed < <(kubectl -n demo get canary podinfo \
            -o 'jsonpath={.status.phase} {.status.canaryWeight} {.status.failedChecks}{"\n"}' 2>/dev/null || echo)
        now=$(printf '%-16s traffic to the new version %3s%%   failed checks %s' \
            "${phase:-Initializing}" "${weight:-0}" "${failed:-0}")
        if [[ $now != "$seen" ]]; then
            printf '  %s  %s\n' "$(date +%T)" "$now"
            seen=$now
        fi
        [[ $(phase) == "$want" ]] && return 0
        if ((SECONDS > deadline)); then
            log "error: the canary did not reach $want in $2 s; see $state/logs/controller.log"
            tail -n 30 "$state/logs/controller.log" >&2
            exit 1
        fi
        sleep 1
    done
}
# wait_record KIND: waits until the config repo has a record of that kind, prints its commit.
wait_record() {
    local deadline=$((SECONDS + 60)) commit
    while :; do
        commit=$(git -C "$state/config.git" log --format=%H --grep="^Flaggit-Kind: $1\$" -1 main)
        [[ -n $commit ]] && { echo "$commit"; return 0; }
        ((SECONDS > deadline)) && die "no $1 record in the config repo after 60 s"
        sleep 1
    done
}

say "running the controller and the dashboard"
interval_flags=()
[[ -n $fast ]] && interval_flags=(--min-analysis-interval 1s --git-batch-window 100ms)
background controller "$flaggit" run --kubeconfig "$KUBECONFIG" --log-format text \
    --leader-election-namespace default --listen-address 127.0.0.1 --port "$ctl_port" \
    --metrics-server "http://127.0.0.1:$prom_port" --git-cache-dir "$state/git-cache" \
    --git-allow "namespace=demo,url=file://$state/config.git,path=apps/podinfo" \
    "${interval_flags[@]}"
background dashboard "$flaggit" dashboard --kubeconfig "$KUBECONFIG" --log-format text \
    --listen "127.0.0.1:$dash_port"
echo "logs: $state/logs/"

say "podinfo 6.0.0 in the config repo; Flux applies it and flaggit takes it over"
flux_apply
wait_phase Initialized 120

say "release 1: a developer bumps podinfo to 6.0.1 (healthy)"
release 6.0.1
wait_phase Succeeded 300
wait_record Promoted >/dev/null

say "release 2: podinfo 6.0.2, a build that fails half its requests"
release 6.0.2
wait_phase Failed 300
rollback=$(wait_record RolledBack)
# Flux applies what flaggit wrote back: the Deployment is 6.0.1 again.
flux_apply

say "the config repo's history: each record is a commit (git log --oneline)"
git -C "$state/config.git" log --oneline main
say "the rollback's write-back commit (git show ${rollback:0:7})"
git -C "$state/config.git" show --stat --patch "$rollback" -- apps/podinfo/deployment.yaml | cat
say "flaggit history demo/podinfo"
"$flaggit" history demo/podinfo --repo "file://$state/config.git"

# A read-only identity for the dashboard: the canaries-reader role, and a token for it.
kubectl -n demo create serviceaccount quickstart-viewer >/dev/null
kubectl create clusterrolebinding quickstart-viewer --clusterrole=flaggit-canaries-reader \
    --serviceaccount=demo:quickstart-viewer >/dev/null
token=$(printf '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":86400}}' |
    kubectl create --raw /api/v1/namespaces/demo/serviceaccounts/quickstart-viewer/token -f - |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["token"])')
printf '%s\n' "$token" >"$state/dashboard-token"
dashboard=http://127.0.0.1:$dash_port/
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$dashboard")
[[ $code == 200 ]] || die "the dashboard answered $code to the viewer token; see $state/logs/dashboard.log"
say "flaggit status demo/podinfo"
"$flaggit" status demo/podinfo
if [[ -n ${FLAGGIT_QUICKSTART_SCREENSHOTS:-} ]]; then
    scripts/dashboard-screenshots.py "$dashboard" "$state/dashboard-token" \
        "$FLAGGIT_QUICKSTART_SCREENSHOTS" demo/podinfo
fi
say "done in $((SECONDS - started)) s: a release promoted, a bad one rolled back, both in Git"
cat <<EOF
Dashboard:   $dashboard   sign in with this token (read-only, canaries only; also in $state/dashboard-token):
             $token
Cluster:     source $state/cluster/env    then: kubectl -n demo get canary,deploy
Config repo: git -C $state/config.git log
Steer it:    $flaggit rollback demo/podinfo --reason "..."   (status, promote, pause, resume, retry: docs/cli.md)
EOF
if [[ -n $leave ]]; then
    exit 0
fi
echo
echo "Everything keeps running; Ctrl-C stops it."
wait
