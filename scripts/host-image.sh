#!/usr/bin/env bash
# Build the image local/corral-host (~600 MB) that tests/multihost runs as Docker-in-Docker
# "hosts": a Debian bookworm minbase rootfs with docker.io, iproute2, iptables, python3 and
# python3-venv, made by debootstrap (from this machine's Debian mirror; no container
# registry) and brought in with `docker import` (scripts/rootfs.sh). Idempotent: does
# nothing if the image exists. Corral itself is not in it: the rig mounts a venv made
# from the wheels of scripts/wheel.sh (tests/multihost/rig.py).
#
#   scripts/host-image.sh            # env: CORRAL_HOST_IMAGE, CORRAL_DEBIAN_MIRROR,
#                                    #      CORRAL_ROOTFS_DIR
#   scripts/host-image.sh --rebuild  # replace an existing image
#
# The rootfs is assembled under /var/cache/corral (never in the repository) and removed
# after the import. Needs root (debootstrap, apt-get).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/rootfs.sh
source "$CORRAL_ROOT/scripts/rootfs.sh"

IMAGE=${CORRAL_HOST_IMAGE:-local/corral-host:latest}
INCLUDE=docker.io,iproute2,iptables,python3,python3-venv,ca-certificates,procps
# What a container of the new image must run (docker.io's own containerd and runc are what
# the inner dockerd uses).
# shellcheck disable=SC2016 # expanded in the container
CHECK='for t in dockerd docker python3 ip iptables; do
    command -v "$t" >/dev/null || { echo "no $t in the image"; exit 1; }
done
dockerd --version && python3 --version'

rebuild=0
case "${1:-}" in
"") ;;
--rebuild) rebuild=1 ;;
*) die "usage: $0 [--rebuild]" ;;
esac

have docker || die "docker CLI not found (run scripts/bootstrap.sh)"
timeout 20 docker info >/dev/null 2>&1 || die "docker does not answer 'docker info' (run scripts/bootstrap.sh)"

image_ok() { docker image inspect "$IMAGE" >/dev/null 2>&1; }

if ((!rebuild)) && image_ok; then
    say "$IMAGE present ($(docker image inspect -f '{{.Id}}' "$IMAGE" | cut -c8-19))"
    exit 0
fi

take_lock host-image
# Another run may have built it while we waited for the lock.
if ((!rebuild)) && image_ok; then
    say "$IMAGE present (built by a concurrent run)"
    exit 0
fi

mkdir -p "$ROOTFS_DIR"
log=$ROOTFS_DIR/host-image.log
: >"$log"
rootfs_image "$IMAGE" "$INCLUDE" "corral multihost test host: debian $ROOTFS_SUITE minbase + docker.io" \
    "$CHECK" "$log" 'CMD ["/bin/sh"]'
