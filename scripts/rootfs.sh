# shellcheck shell=bash
# Images without a registry: a Debian root filesystem made by debootstrap from the
# host's own Debian mirror, brought into Docker with `docker import`. Shared by
# scripts/base-image.sh (the compose image's base) and scripts/host-image.sh (the
# multi-host rig's hosts). Source it after lib.sh, do not run it.
#
#   rootfs_image IMAGE INCLUDE MESSAGE CHECK LOG [IMPORT-CHANGE...]
#
# Needs root (debootstrap, chroot); installs debootstrap with apt if it is missing.

ROOTFS_SUITE=bookworm
ROOTFS_DIR=${CORRAL_ROOTFS_DIR:-/var/cache/corral}

# debian_mirror : the mirror this machine's apt uses for $ROOTFS_SUITE's main component
# (CORRAL_DEBIAN_MIRROR overrides it), else deb.debian.org. Printed on stdout.
debian_mirror() {
    if [[ -n ${CORRAL_DEBIAN_MIRROR:-} ]]; then
        printf '%s\n' "$CORRAL_DEBIAN_MIRROR"
        return 0
    fi
    local found
    # `apt-cache policy` lists each configured source as "500 URI SUITE/COMPONENT ARCH
    # Packages", whether sources.list or deb822 .sources files name it.
    found=$(apt-cache policy 2>/dev/null |
        awk -v want="$ROOTFS_SUITE/main" '$3 == want && $2 ~ /^https?:/ { print $2; exit }') || true
    printf '%s\n' "${found:-http://deb.debian.org/debian}"
}

ensure_debootstrap() { # ensure_debootstrap LOG
    have debootstrap && return 0
    say "installing debootstrap (apt; log: $1)"
    local apt_opts=(-q -o DPkg::Lock::Timeout=300)
    apt-get "${apt_opts[@]}" update >>"$1" 2>&1 || {
        show_tail "$1"
        die "apt-get update failed"
    }
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y debootstrap \
        </dev/null >>"$1" 2>&1 || {
        show_tail "$1"
        die "apt-get install debootstrap failed"
    }
    hash -r
}

# rootfs_image IMAGE INCLUDE MESSAGE CHECK LOG [CHANGE...] : debootstrap --variant=minbase
# $ROOTFS_SUITE with the comma-separated packages INCLUDE, then `docker import` it as
# IMAGE (commit message MESSAGE, Dockerfile instructions CHANGE..., e.g. 'CMD ["sh"]').
# CHECK is a shell command that must succeed in a container of the new image (run with
# --network none); on failure the image is removed. Output of debootstrap goes to LOG;
# the rootfs is assembled under $ROOTFS_DIR and removed afterwards. A few minutes.
rootfs_image() {
    local image=$1 include=$2 message=$3 check=$4 log=$5
    shift 5
    local changes=() change
    for change in 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$@"; do
        changes+=(-c "$change")
    done
    need_root "building $image (debootstrap)"
    mkdir -p "$ROOTFS_DIR"
    ensure_debootstrap "$log"

    local mirror root t0
    mirror=$(debian_mirror)
    root=$(mktemp -d "$ROOTFS_DIR/rootfs.XXXXXX")
    # shellcheck disable=SC2064 # expand $root now: it is local
    trap "_rootfs_cleanup '$root'" EXIT
    say "debootstrap --variant=minbase --include=$include $ROOTFS_SUITE from $mirror"
    note "into $root: a few minutes; log: $log"
    t0=$SECONDS
    if ! debootstrap --variant=minbase --include="$include" "$ROOTFS_SUITE" "$root" "$mirror" \
        >>"$log" 2>&1 </dev/null; then
        show_tail "$log" "$root/debootstrap/debootstrap.log"
        die "debootstrap failed"
    fi
    note "debootstrap done in $((SECONDS - t0)) s"
    # The package cache and lists only make the image bigger (apt-get update restores them).
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

    say "importing the rootfs as $image"
    t0=$SECONDS
    local old_id new_id out size
    old_id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    tar --numeric-owner -C "$root" -cf - . |
        docker import "${changes[@]}" -m "$message" - "$image" >/dev/null ||
        die "docker import failed"
    note "imported in $((SECONDS - t0)) s"
    _rootfs_cleanup "$root"
    trap - EXIT

    out=$(docker run --rm --network none "$image" sh -c "$check" 2>&1) || {
        docker image rm "$image" >/dev/null 2>&1 || true
        die "$image does not pass its check ($check): $out"
    }
    new_id=$(docker image inspect -f '{{.Id}}' "$image")
    if [[ -n $old_id && $old_id != "$new_id" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true # fails harmlessly if in use
    fi
    size=$(docker image inspect -f '{{.Size}}' "$image")
    say "built $image (${new_id:7:12}, $((size / 1024 / 1024)) MiB): $(tr '\n' ' ' <<<"$out")"
}

_rootfs_cleanup() {
    # debootstrap may leave /proc or /sys mounted in the rootfs on failure.
    local m
    for m in proc sys dev/pts dev; do
        if mountpoint -q "$1/$m" 2>/dev/null; then umount -l "$1/$m" || true; fi
    done
    rm -rf --one-file-system "$1"
}
