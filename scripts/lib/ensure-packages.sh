# shellcheck shell=bash
# Shared helper, sourced by scripts/pg-node, scripts/dev (and scripts/test):
#
#   ensure_packages pkg...
#
# Installs the Debian packages that are not installed yet. `dpkg -s` decides what is
# missing, so a machine that already has everything never touches apt. `apt-get update`
# runs at most once per process (a fresh machine's package lists may be empty or stale).
# Only root installs; anyone else gets the exact command to run and a non-zero status.
# Returns 1 on failure: call it as `ensure_packages a b || exit 1` (or under `set -e`).

_ENSURE_PACKAGES_UPDATED=${_ENSURE_PACKAGES_UPDATED:-0}

ensure_packages() {
    local pkg missing=()
    for pkg in "$@"; do
        if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]} == 0)) && return 0

    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: missing packages: ${missing[*]} (and no apt-get here: install them with your system's package manager)" >&2
        return 1
    fi
    if [[ "$(id -u)" != 0 ]]; then
        echo "error: missing packages: ${missing[*]}" >&2
        echo "       install them as root:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        return 1
    fi

    echo "==> installing packages: ${missing[*]}" >&2
    if [[ "$_ENSURE_PACKAGES_UPDATED" != 1 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || {
            echo "error: apt-get update failed" >&2
            return 1
        }
        _ENSURE_PACKAGES_UPDATED=1
        export _ENSURE_PACKAGES_UPDATED
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 || {
        echo "error: apt-get install ${missing[*]} failed" >&2
        return 1
    }
}
