#!/usr/bin/env bash
# A minimal Debian base image with Python 3.11, built from the Debian package mirror, for
# hosts that cannot pull from a container registry:
#
#   sudo scripts/make_base_image.sh                 # imports bonemet-base:bookworm
#   make container BASE=bonemet-base:bookworm
#
# debootstrap --variant=minbase, then python3.11, python3.11-venv, procps and ca-certificates
# from the same mirror, then `docker import` (or `podman import`). Needs root and debootstrap
# (apt-get install debootstrap).
#
# Settings (environment variables):
#   IMAGE    the tag (default bonemet-base:<suite>)
#   SUITE    Debian suite (default bookworm: its python3.11 is the one bonemet supports)
#   MIRROR   Debian mirror (default: the host's first deb.debian.org-style mirror for apt,
#            else http://deb.debian.org/debian)
#   ENGINE   docker or podman (default: docker when its daemon answers, else podman)
#   CACHE    a .tar file: imported when it exists, else written after the build, so that a
#            machine builds the root file system once (e.g. ~/.cache/bonemet/base.tar)
set -euo pipefail

die() {
    echo "make_base_image: $*" >&2
    exit 1
}

SUITE=${SUITE:-bookworm}
IMAGE=${IMAGE:-bonemet-base:$SUITE}
PACKAGES="python3.11 python3.11-venv procps ca-certificates"
CACHE=${CACHE:-}

if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null; then
        ENGINE=podman
    else
        die "no container engine: install docker (with a running daemon) or podman, or set ENGINE"
    fi
fi

import() {
    "$ENGINE" import --change 'CMD ["/bin/bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' - "$IMAGE" <"$1" >/dev/null
    echo "make_base_image: imported $IMAGE from $1"
}

if [ -n "$CACHE" ] && [ -s "$CACHE" ]; then
    import "$CACHE"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root: run it with sudo"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
        head -n 1 | tr -d ' ' || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/bonemet-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
echo "make_base_image: debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
    die "debootstrap failed: $(tail -n 3 "$work/debootstrap.log" | tr '\n' ' ')"
# apt in the new root resolves the dependencies that debootstrap --include would not
chroot "$rootfs" /bin/sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES" \
    >"$work/apt.log" 2>&1 || die "apt-get install in the new root failed: $(tail -n 3 "$work/apt.log" | tr '\n' ' ')"
chroot "$rootfs" /bin/sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log'
: >"$rootfs/etc/resolv.conf"  # the engine mounts its own
rm -f "$rootfs/etc/hostname"

tarball="$work/rootfs.tar"
tar --numeric-owner -C "$rootfs" -cf "$tarball" .
import "$tarball"
if [ -n "$CACHE" ]; then
    mkdir -p "$(dirname "$CACHE")"
    mv "$tarball" "$CACHE.partial" && mv "$CACHE.partial" "$CACHE"
    echo "make_base_image: cached the root file system in $CACHE"
fi
