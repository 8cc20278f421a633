#!/usr/bin/env bash
# Build the test image local/busybox:latest (~2 MB) without any registry: a rootfs
# holding the host's static busybox (/bin/busybox from busybox-static) with a
# symlink per applet, imported with `docker import`. CMD ["/bin/sh"], PATH=/bin.
# Rebuilding replaces the tag; the previous image is removed if nothing uses it.
#
#   scripts/build-test-image.sh          # env: BUSYBOX=/bin/busybox to override
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE=local/busybox:latest
BUSYBOX=${BUSYBOX:-/bin/busybox}
# Applets the tests rely on; all of `busybox --list` is linked as well.
REQUIRED=(sh httpd wget nc sleep echo cat ls env hostname mkdir true false date id ps kill top)

have docker || die "docker CLI not found (run scripts/bootstrap.sh)"
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found (apt-get install busybox-static)"
is_static "$BUSYBOX" ||
    die "$BUSYBOX is dynamically linked; the image needs the static one (apt-get install busybox-static)"

take_lock build-test-image

work=$(mktemp -d /tmp/corral-busybox.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

say "building $IMAGE from $BUSYBOX"
mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev,var/www,usr}
cp "$BUSYBOX" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
chmod 1777 "$root/tmp"

mapfile -t applets < <("$root/bin/busybox" --list)
((${#applets[@]} > 0)) || die "'$BUSYBOX --list' printed nothing"
declare -A have_applet=()
for a in "${applets[@]}"; do
    have_applet[$a]=1
done
for a in "${REQUIRED[@]}"; do
    [[ -n ${have_applet[$a]:-} ]] || die "busybox has no '$a' applet"
done
for a in "${applets[@]}"; do
    [[ $a == busybox || $a == */* || -z $a ]] && continue
    ln -s busybox "$root/bin/$a"
done
# Absolute paths like /usr/bin/env or /sbin/ifconfig resolve too.
ln -s bin "$root/sbin"
ln -s ../bin "$root/usr/bin"
ln -s ../bin "$root/usr/sbin"

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF

old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
    docker import \
        -c 'CMD ["/bin/sh"]' \
        -c 'ENV PATH=/bin' \
        -m "corral test image: static $("$BUSYBOX" | head -n 1 | sed "s/ multi-call binary.*//")" \
        - "$IMAGE" >/dev/null ||
    die "docker import failed"

out=$(docker run --rm "$IMAGE" sh -c 'echo ok' 2>&1) || true
if [[ $out != ok ]]; then
    # Do not leave a broken image behind (bootstrap only checks that the tag exists).
    if [[ -n $old_id ]]; then
        docker tag "$old_id" "$IMAGE" >/dev/null 2>&1 || docker image rm "$IMAGE" >/dev/null 2>&1 || true
    else
        docker image rm "$IMAGE" >/dev/null 2>&1 || true
    fi
    die "$IMAGE does not run: docker run --rm $IMAGE sh -c 'echo ok' gave: $out"
fi

new_id=$(docker image inspect -f '{{.Id}}' "$IMAGE")
if [[ -n $old_id && $old_id != "$new_id" ]]; then
    # Fails (harmlessly) if a container still uses it.
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "built $IMAGE (${new_id:7:12}, $((size / 1024)) KiB, ${#applets[@]} applets); 'echo ok' runs"
