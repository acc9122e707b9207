#!/usr/bin/env bash
# Build the flaggit and flaggit-loadtester container images on this machine, without a
# container engine or base images: each image is one layer made from scratch by umoci (a
# daemonless OCI image tool from Debian), holding the release binary, the shared libraries
# it links (copied from this Debian system), CA certificates and a non-root user.
# The release workflow (.github/workflows/release.yaml) builds the same images from the
# Dockerfile, multi-arch; this script is for trying an image locally and for the test.
#
#   scripts/image.sh [OUT]   writes the OCI layout OUT (default dist/oci) with the tags
#                            flaggit-<version> and flaggit-loadtester-<version>, and OUT.tar
#
# Copy it to a registry or a local engine with skopeo, for example:
#   skopeo copy oci:dist/oci:flaggit-0.1.0 docker://registry.example/flaggit:0.1.0
#
# Env: FLAGGIT_BIN_DIR=dir  use the flaggit and flaggit-loadtester binaries in dir instead of
#                           building them (cargo build --release).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
out=$(realpath -m "${1:-dist/oci}")

apt_install umoci ca-certificates bash curl hey
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
if [[ -n ${FLAGGIT_BIN_DIR:-} ]]; then
    bin_dir=$FLAGGIT_BIN_DIR
else
    log "building flaggit and flaggit-loadtester (release)"
    cargo build --release --locked --bin flaggit --bin flaggit-loadtester
    bin_dir=$root/target/release
fi
kube_bin=$(scripts/kube-build.sh)

# add_binary ROOTFS FILE DEST: copies FILE to ROOTFS/DEST and every shared library it
# loads (as ldd resolves them here) to the same path under ROOTFS.
add_binary() {
    local rootfs=$1 file=$2 dest=$3 lib
    install -D -m 0755 "$file" "$rootfs$dest"
    while read -r lib; do
        [[ -e $rootfs$lib ]] || install -D -m 0755 "$(realpath "$lib")" "$rootfs$lib"
    done < <(ldd "$file" 2>/dev/null | grep -o '/[^ ]*' | sort -u || true)
}

# base ROOTFS: the files every image has: users, CA certificates, a writable /tmp.
base() {
    local rootfs=$1
    mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
    chmod 1777 "$rootfs/tmp"
    chown 65532:65532 "$rootfs/home/nonroot"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
}

# image NAME ENTRYPOINT FILL: a one-layer image tagged NAME-<version>, whose rootfs FILL fills.
image() {
    local name=$1 entrypoint=$2 fill=$3 tag=$1-$version work
    work=$(mktemp -d)
    umoci new --image "$out:$tag"
    umoci unpack --image "$out:$tag" "$work/bundle" >/dev/null
    base "$work/bundle/rootfs"
    "$fill" "$work/bundle/rootfs"
    umoci repack --image "$out:$tag" "$work/bundle"
    umoci config --image "$out:$tag" \
        --config.user 65532:65532 --config.workingdir /home/nonroot \
        --config.entrypoint "$entrypoint" \
        --config.env PATH=/usr/local/bin:/usr/bin:/bin \
        --config.label "org.opencontainers.image.title=$name" \
        --config.label "org.opencontainers.image.version=$version" \
        --config.label "org.opencontainers.image.source=https://github.com/flaggit/flaggit"
    rm -rf "$work"
    log "built $out:$tag ($(umoci stat --image "$out:$tag" | awk '/umoci repack/ {print $5}'))"
}

fill_flaggit() {
    add_binary "$1" "$bin_dir/flaggit" /usr/local/bin/flaggit
}

fill_loadtester() {
    local rootfs=$1 tool
    add_binary "$rootfs" "$bin_dir/flaggit-loadtester" /usr/local/bin/flaggit-loadtester
    add_binary "$rootfs" "$kube_bin/kubectl" /usr/local/bin/kubectl
    for tool in bash sh curl hey cat grep sed env sleep; do
        add_binary "$rootfs" "$(command -v "$tool")" "/usr/bin/$tool"
    done
    ln -s /usr/bin/bash "$rootfs/bin" 2>/dev/null || true
    if command -v helm >/dev/null; then
        add_binary "$rootfs" "$(command -v helm)" /usr/local/bin/helm
    else
        log "note: helm is not installed here (Debian does not package it): this local image has no helm; the released image does"
    fi
}

rm -rf "$out" "$out.tar"
mkdir -p "$(dirname "$out")"
umoci init --layout "$out"
image flaggit /usr/local/bin/flaggit fill_flaggit
image flaggit-loadtester /usr/local/bin/flaggit-loadtester fill_loadtester
umoci gc --layout "$out"
tar -C "$out" -cf "$out.tar" .
log "OCI layout $out (tags: $(umoci ls --layout "$out" | tr '\n' ' ')); archive $out.tar"
