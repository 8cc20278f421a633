#!/usr/bin/env bash
# Build the image local/corral-host (~600 MB) that tests/multihost runs as Docker-in-Docker
# "hosts": a Debian bookworm minbase rootfs with docker.io, iproute2, iptables, python3 and
# python3-venv, made by debootstrap (from Debian's mirror; no container registry) and
# brought in with `docker import`. Idempotent: does nothing if the image exists.
#
#   scripts/host-image.sh            # env: CORRAL_HOST_IMAGE, CORRAL_HOST_ROOTFS_DIR
#   scripts/host-image.sh --rebuild  # replace an existing image
#
# The rootfs is assembled under /var/cache/corral (never in the repository) and removed
# after the import. Needs root (debootstrap, apt-get).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE=${CORRAL_HOST_IMAGE:-local/corral-host:latest}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
INCLUDE=docker.io,iproute2,iptables,python3,python3-venv,ca-certificates,procps
CACHE=${CORRAL_HOST_ROOTFS_DIR:-/var/cache/corral}
LOG=$CACHE/host-image.log

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

need_root "building $IMAGE (debootstrap)"
take_lock host-image
# Another run may have built it while we waited for the lock.
if ((!rebuild)) && image_ok; then
    say "$IMAGE present (built by a concurrent run)"
    exit 0
fi

mkdir -p "$CACHE"
: >"$LOG"

if ! have debootstrap; then
    say "installing debootstrap (apt; log: $LOG)"
    apt-get -q -o DPkg::Lock::Timeout=300 update >>"$LOG" 2>&1 || {
        show_tail "$LOG"
        die "apt-get update failed"
    }
    DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 install -y debootstrap \
        </dev/null >>"$LOG" 2>&1 || {
        show_tail "$LOG"
        die "apt-get install debootstrap failed"
    }
    hash -r
fi

root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
cleanup() {
    # debootstrap may leave /proc or /sys mounted in the rootfs on failure.
    local m
    for m in proc sys dev/pts dev; do
        mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m" || true
    done
    rm -rf --one-file-system "$root"
}
trap cleanup EXIT

say "debootstrap --variant=minbase $SUITE into $root (a few minutes; log: $LOG)"
t0=$SECONDS
if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$MIRROR" \
    >>"$LOG" 2>&1 </dev/null; then
    show_tail "$LOG" "$root/debootstrap/debootstrap.log"
    die "debootstrap failed"
fi
note "debootstrap done in $((SECONDS - t0)) s"

# The package cache and lists are useless in the image; docker.io's own containerd/runc
# are what the inner dockerd uses.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
for tool in dockerd docker python3 ip iptables; do
    chroot "$root" sh -c "command -v $tool" >/dev/null 2>&1 || die "the rootfs has no $tool"
done

say "importing the rootfs as $IMAGE"
t0=$SECONDS
old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
tar --numeric-owner -C "$root" -cf - . |
    docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["/bin/sh"]' \
        -m "corral multihost test host: debian $SUITE minbase + docker.io" \
        - "$IMAGE" >/dev/null || die "docker import failed"
note "imported in $((SECONDS - t0)) s"

out=$(docker run --rm --network none "$IMAGE" sh -c 'dockerd --version && python3 --version' 2>&1) ||
    {
        docker image rm "$IMAGE" >/dev/null 2>&1 || true
        die "$IMAGE does not run: $out"
    }
new_id=$(docker image inspect -f '{{.Id}}' "$IMAGE")
if [[ -n $old_id && $old_id != "$new_id" ]]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "built $IMAGE (${new_id:7:12}, $((size / 1024 / 1024)) MiB): $(tr '\n' ' ' <<<"$out")"
