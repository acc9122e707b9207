# shellcheck shell=bash
# Shared helpers for flaggit's dev/test scripts. Source it, don't run it:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Everything built or downloaded lives outside the repo so `git clean` and
# fresh checkouts don't throw away a ~10-minute Kubernetes build.
FLAGGIT_CACHE=${FLAGGIT_CACHE:-$HOME/.cache/flaggit}
export FLAGGIT_CACHE

# apt/dpkg must never stop to ask questions in CI or under the test harness.
export DEBIAN_FRONTEND=noninteractive

# Logs go to stderr: several scripts print their result (a path, "ready")
# on stdout for callers to capture.
log() {
    printf '[%s] %s\n' "${0##*/}" "$*" >&2 || true
}

die() {
    log "error: $*"
    exit 1
}

# Sets SUDO to () as root or (sudo) otherwise; dies if neither works.
SUDO=()
need_root_or_sudo() {
    if [[ $EUID -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        die "need root or sudo to install packages / edit apt sources"
    fi
}

# Run a command as root (directly, or through sudo).
as_root() {
    need_root_or_sudo
    ${SUDO[@]+"${SUDO[@]}"} "$@"
}

# apt-get update at most once per script invocation.
_FLAGGIT_APT_UPDATED=0
apt_update_once() {
    if [[ $_FLAGGIT_APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        _FLAGGIT_APT_UPDATED=1
    fi
}

# Is the Debian package installed (not just "config-files"/half-installed)?
pkg_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

# apt_install PKG...: install only what is missing, so it costs one
# dpkg-query per package when everything is already there.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    apt_update_once
    log "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
