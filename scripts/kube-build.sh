#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kubectl 1.20.2 from
# Debian bookworm's `kubernetes` source package, once, into
#   $FLAGGIT_CACHE/kube-1.20.2/bin/
# and print that directory on stdout. Everything else goes to stderr.
#
# Why from source: bookworm only ships kubectl as a binary package, and its
# 1.20.2 tree vendors reflect2 1.0.1, which segfaults under Go >= 1.18 as soon
# as the apiserver serves custom resources. We swap in Debian's reflect2 1.0.2
# before building.
#
# Env: FLAGGIT_KEEP_KUBE_SRC=1 keeps the (~2 GB) source/build tree afterwards.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBE_VERSION=1.20.2
KUBE_DIR=$FLAGGIT_CACHE/kube-$KUBE_VERSION
BIN_DIR=$KUBE_DIR/bin
BINARIES=(kube-apiserver kube-controller-manager kubectl)
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
SRC_LIST=/etc/apt/sources.list.d/flaggit-src.sources

have_binaries() {
    local b
    for b in "${BINARIES[@]}"; do
        [[ -x $BIN_DIR/$b ]] || return 1
    done
}

# Fast path: already built.
if have_binaries; then
    echo "$BIN_DIR"
    exit 0
fi

# Serialise concurrent invocations (e.g. parallel test binaries): the loser
# waits for the winner's build and then takes the fast path.
mkdir -p "$KUBE_DIR"
exec 9>"$KUBE_DIR/.lock"
if ! flock -n 9; then
    log "another kube-build is running; waiting for it"
    flock 9
fi
if have_binaries; then
    echo "$BIN_DIR"
    exit 0
fi

# dpkg-dev provides dpkg-source, which `apt-get source` uses to unpack.
apt_install golang-go rsync golang-github-modern-go-reflect2-dev dpkg-dev make

# `apt-get source` needs a deb-src entry. Debian images ship deb822 sources
# with "Types: deb" only, so add a separate file rather than editing theirs.
ensure_deb_src() {
    if apt-cache showsrc kubernetes 2>/dev/null | grep -q "^Version: .*really$KUBE_VERSION"; then
        return 0
    fi
    log "adding bookworm deb-src entry: $SRC_LIST"
    as_root tee "$SRC_LIST" >/dev/null <<'EOF'
# Added by flaggit scripts/kube-build.sh to fetch the kubernetes source package.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    _FLAGGIT_APT_UPDATED=0 # the index must be refreshed to see the new entry
    apt_update_once
    apt-cache showsrc kubernetes 2>/dev/null | grep -q "^Version: .*really$KUBE_VERSION" ||
        die "bookworm's kubernetes source package is not $KUBE_VERSION any more"
}
ensure_deb_src

started=$SECONDS
work=$KUBE_DIR/src
rm -rf "$work" "$BIN_DIR"
mkdir -p "$work"
cd "$work"

# Downloads .dsc + tarballs and unpacks them with the Debian patches applied.
# (Running as root, apt warns that it can't sandbox the download as _apt.)
log "fetching kubernetes source package into $work"
apt-get source -qq kubernetes >&2
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name "kubernetes-*really$KUBE_VERSION" -print -quit)
[[ -n $src ]] || die "unpacked kubernetes-*really$KUBE_VERSION source not found in $work"
cd "$src"

# reflect2 fix. The 1.20 build runs in GOPATH mode (hack/lib/init.sh sets
# GO111MODULE=off), so vendor/modules.txt is not consulted and swapping the
# package directory is enough; modules.txt keeps saying v1.0.1.
[[ -f $REFLECT2_SRC/go_above_118.go ]] ||
    die "$REFLECT2_SRC is not reflect2 >= 1.0.2 (no go_above_118.go)"
log "replacing vendored reflect2 1.0.1 with Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
rsync -a --delete --exclude='*_test.go' "$REFLECT2_SRC/" vendor/github.com/modern-go/reflect2/

# No .git is needed: hack/lib/version.sh carries git-archive values
# (tag v1.20.2, tree state "archive"). Static binaries like Debian's build
# (CGO_ENABLED=0). Clear user Go settings that would break the GOPATH build.
log "building ${BINARIES[*]} (6-11 min on 2 cores)"
env -u GOFLAGS -u GOPATH -u GOBIN CGO_ENABLED=0 \
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl" >&2

# Publish atomically: a half-copied bin dir must never pass have_binaries.
tmp=$(mktemp -d "$KUBE_DIR/bin.tmp.XXXXXX")
for b in "${BINARIES[@]}"; do
    cp "_output/bin/$b" "$tmp/$b"
done
chmod 755 "$tmp"
mv -T "$tmp" "$BIN_DIR"

cd "$KUBE_DIR"
if [[ ${FLAGGIT_KEEP_KUBE_SRC:-0} != 1 ]]; then
    rm -rf "$work"
fi
log "built $("$BIN_DIR/kube-apiserver" --version) in $((SECONDS - started)) s"
echo "$BIN_DIR"
