#!/usr/bin/env bash
# Build flaggit, bring up a local control plane and a local config repo, install the CRDs and
# the podinfo example, and run the controller against them in the foreground. Ctrl-C stops
# everything. State lives in .flaggit-local/ (ignored by git): delete it to start afresh.
#
# Env: FLAGGIT_QUICKSTART_SECONDS=N stops after N seconds (used to check this script).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
state=$root/.flaggit-local

scripts/deps.sh
kube_bin=$(scripts/kube-build.sh)
log "building flaggit (release)"
cargo build --release --locked --bin flaggit

mkdir -p "$state"
scripts/control-plane.sh start "$state/cluster"
trap 'scripts/control-plane.sh stop "$state/cluster"' EXIT
export KUBECONFIG=$state/cluster/kubeconfig
kubectl() { "$kube_bin/kubectl" "$@"; }

# The GitOps config repo a team would keep: the podinfo app under apps/, and the ledger
# directory kept out of what Flux applies (.sourceignore). The controller records the podinfo
# canary's rollouts there (--git-url): `git -C .flaggit-local/config.git log` shows them.
if [[ ! -d $state/config.git ]]; then
    log "creating the local config repo $state/config.git"
    git init -q --bare --initial-branch=main "$state/config.git"
    seed=$(mktemp -d)
    git -C "$seed" init -q --initial-branch=main
    mkdir -p "$seed/apps/podinfo"
    cp examples/podinfo/*.yaml "$seed/apps/podinfo/"
    printf '/.flaggit/\n' >"$seed/.sourceignore"
    git -C "$seed" add -A
    git -C "$seed" -c user.name=quickstart -c user.email=quickstart@localhost \
        commit -q -m "podinfo: initial manifests"
    git -C "$seed" push -q "$state/config.git" main
    rm -rf "$seed"
fi

log "installing the CRDs (flaggit's, and Istio's and Gateway API's for the routers) and the podinfo example"
kubectl apply --server-side -f manifests/crds -f tests/fixtures/crds >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
    crd/canaries.flagger.app crd/metrictemplates.flagger.app crd/alertproviders.flagger.app \
    crd/virtualservices.networking.istio.io crd/destinationrules.networking.istio.io >/dev/null
# This local API server is Kubernetes 1.20: it serves HPAs as autoscaling/v2beta2.
kubectl kustomize examples/podinfo |
    sed 's#^apiVersion: autoscaling/v2$#apiVersion: autoscaling/v2beta2#' |
    kubectl apply --server-side -f - >/dev/null
kubectl get canaries -A

log "running the controller; Ctrl-C stops it (KUBECONFIG=$KUBECONFIG)"
run=(target/release/flaggit run --kubeconfig "$KUBECONFIG" --log-format text
    --leader-election-namespace default --listen-address 127.0.0.1
    --git-url "$state/config.git" --git-cache-dir "$state/git-cache")
if [[ -n ${FLAGGIT_QUICKSTART_SECONDS:-} ]]; then
    timeout --signal=TERM "$FLAGGIT_QUICKSTART_SECONDS" "${run[@]}" || [[ $? -eq 124 ]]
else
    "${run[@]}"
fi
