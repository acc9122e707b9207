#!/usr/bin/env bash
# The whole test suite, as CI runs it: format, lints, then every test — unit tests and the
# cluster tests against a real kube-apiserver that the test harness starts on loopback.
# Installs what it needs (Debian packages, the cached Kubernetes build) on a fresh machine.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
scripts/deps.sh
FLAGGIT_KUBE_BIN=$(scripts/kube-build.sh)
export FLAGGIT_KUBE_BIN
log "dependencies ready after $((SECONDS - started))s"

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets -- --test-threads=6
log "all tests passed in $((SECONDS - started))s"
