#!/usr/bin/env bash
# Install the system packages the local platform needs: a throwaway Ceph
# cluster (ceph-mon, ceph-osd with memstore, radosgw) for S3 with real STS,
# and tinyproxy, the forward proxy the proxy tests start.
# Idempotent: does nothing when the binaries are already there.
set -euo pipefail

LOCK="$(dirname "$0")/debian-packages.lock"
# package=version lines of the lock
mapfile -t LOCKED < <(grep -v '^#' "$LOCK" | grep '=')
PACKAGES=()
for entry in "${LOCKED[@]}"; do PACKAGES+=("${entry%%=*}"); done
BINARIES=(ceph-mon ceph-osd radosgw radosgw-admin tinyproxy)

missing=()
for bin in "${BINARIES[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-system-deps: Ceph binaries present ($(ceph-mon --version 2>/dev/null | awk '{print $3}')), nothing to do" >&2
    exit 0
fi

echo "install-system-deps: missing: ${missing[*]}" >&2

is_debian=0
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    case " ${ID:-} ${ID_LIKE:-} " in
        *" debian "*|*" ubuntu "*) is_debian=1 ;;
    esac
fi

if [ "$is_debian" -eq 1 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    wanted=()
    for entry in "${LOCKED[@]}"; do
        name="${entry%%=*}" version="${entry#*=}"
        if apt-cache madison "$name" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$version"; then
            wanted+=("$entry")
        else
            echo "install-system-deps: $name $version (devstack/debian-packages.lock) is no longer served; installing the suite's version" >&2
            wanted+=("$name")
        fi
    done
    echo "install-system-deps: apt-get install ${wanted[*]}" >&2
    apt-get install -y --no-install-recommends "${wanted[@]}"
    for bin in "${BINARIES[@]}"; do
        command -v "$bin" >/dev/null 2>&1 || {
            echo "install-system-deps: $bin still missing after apt-get install" >&2
            exit 1
        }
    done
    echo "install-system-deps: done" >&2
    exit 0
fi

cat >&2 <<MSG
install-system-deps: cannot install ${PACKAGES[*]} automatically here
  (needs Debian/Ubuntu with apt-get, run as root; this is ${PRETTY_NAME:-an unknown system}, uid $(id -u)).
The local platform cannot run radosgw on this machine until the Ceph binaries
(${BINARIES[*]}) are on PATH. On Debian/Ubuntu, as root:
  apt-get install -y --no-install-recommends ${PACKAGES[*]}
MSG
exit 1
