#!/usr/bin/env bash
# Install every Debian package the tests and the quickstart need.
# Idempotent; costs a handful of dpkg-query calls when all is present.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

packages=(
    # Local control plane: etcd, plus Go + the patched reflect2 to build
    # kube-apiserver/controller-manager/kubectl from Debian's source package.
    etcd-server golang-go rsync golang-github-modern-go-reflect2-dev dpkg-dev
    # Certificates and tokens for the control plane.
    openssl
    # Metrics backend and load generator for the quickstart/analysis tests.
    prometheus hey
    # Git remotes in tests (git daemon, http-backend, sshd); curl for readiness probes.
    git openssh-server curl ca-certificates
    # Free-port picking in control-plane.sh.
    python3
    # Native build deps of crates vendoring libgit2/openssl (git2, openssl-src).
    pkg-config cmake make gcc perl
    # Headless browser for the dashboard test (driven over WebDriver).
    chromium chromium-driver
    # Daemonless OCI image builder for scripts/image.sh and its test.
    umoci
)

apt_install "${packages[@]}"
log "all dependencies installed"
