#!/usr/bin/env bash
# Build the base image of the compose stack, local/corral-base, without a registry: a
# Debian bookworm minbase root filesystem with python3, python3-venv and rabbitmq-server
# (so one image serves the broker, the masters, the workers and the CLI), made by
# debootstrap from this machine's Debian mirror and brought in with `docker import`.
#
#   scripts/base-image.sh            # prints the image's name when it is ready
#   scripts/base-image.sh --rebuild  # build again even if the image exists
#
# Cached: the image is tagged local/corral-base:<key>, the key a hash of its inputs (the
# packages, the suite, the mirror, RECIPE), and local/corral-base:latest points at it. A run
# that finds the tag does nothing (a second); the first takes a few minutes. Needs root.
# Environment: CORRAL_DEBIAN_MIRROR, CORRAL_ROOTFS_DIR (scripts/rootfs.sh).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/rootfs.sh
source "$CORRAL_ROOT/scripts/rootfs.sh"

REPO=local/corral-base
# rabbitmq-server brings Erlang (some 90 MB); procps gives ps for looking inside.
INCLUDE=python3,python3-venv,rabbitmq-server,procps
# Bump it when a change to this script or scripts/rootfs.sh changes what is built.
RECIPE=1

rebuild=0
case "${1:-}" in
"") ;;
--rebuild) rebuild=1 ;;
*) die "usage: $0 [--rebuild]" ;;
esac

have docker || die "docker CLI not found (run scripts/bootstrap.sh)"
timeout 20 docker info >/dev/null 2>&1 || die "docker does not answer 'docker info' (run scripts/bootstrap.sh)"

key=$(printf '%s\n' "$RECIPE" "$INCLUDE" "$ROOTFS_SUITE" "$(debian_mirror)" | sha256sum | cut -c1-12)
image=$REPO:$key

present() { docker image inspect "$image" >/dev/null 2>&1; }
finish() {
    docker tag "$image" "$REPO:latest"
    say "$image present (also $REPO:latest)"
    exit 0
}

((rebuild)) || ! present || finish
take_lock base-image
((rebuild)) || ! present || finish # a concurrent run may have built it meanwhile

mkdir -p "$ROOTFS_DIR"
log=$ROOTFS_DIR/base-image.log
: >"$log"
rootfs_image "$image" "$INCLUDE" "corral base: debian $ROOTFS_SUITE minbase, $INCLUDE" \
    'python3 --version && python3 -m venv /tmp/v && test -x /usr/sbin/rabbitmq-server' "$log" \
    'ENV LANG=C.UTF-8' 'CMD ["/bin/bash"]'
finish
