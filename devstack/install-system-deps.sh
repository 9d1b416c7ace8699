#!/usr/bin/env bash
# Install the system packages the local platform needs: a throwaway Ceph
# cluster (ceph-mon, ceph-osd with memstore, radosgw) for S3 with real STS.
# Idempotent: does nothing when the binaries are already there.
set -euo pipefail

PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)
BINARIES=(ceph-mon ceph-osd radosgw radosgw-admin)

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
    echo "install-system-deps: apt-get install ${PACKAGES[*]}" >&2
    apt-get update
    apt-get install -y --no-install-recommends "${PACKAGES[@]}"
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
