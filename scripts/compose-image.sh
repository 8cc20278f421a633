#!/usr/bin/env bash
# Build the compose stack's one image, local/corral:latest (compose/Dockerfile), with no
# registry and no index:
#
#   1. the base local/corral-base (scripts/base-image.sh: debootstrap, once; minutes)
#   2. the wheels of Corral and its dependencies in compose/wheels (scripts/wheel.sh;
#      cached, rebuilt when the sources change)
#   3. docker build --network none -f compose/Dockerfile . (the context cut down by
#      /.dockerignore), `corral --version` checked in the result
#
#   scripts/compose-image.sh     # env: CORRAL_IMAGE (default local/corral:latest)
#
# Idempotent: with nothing changed it takes a few seconds. The image it replaces is
# removed if nothing uses it. Needs root the first time (debootstrap).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CORRAL_ROOT"

IMAGE=${CORRAL_IMAGE:-local/corral:latest}
BASE=local/corral-base:latest # what compose/Dockerfile starts FROM

have docker || die "docker CLI not found (run scripts/bootstrap.sh)"
take_lock compose-image

bash scripts/base-image.sh
bash scripts/wheel.sh --into compose/wheels | grep -Ev "^(corral_wheel|deps)="

say "building $IMAGE (docker build -f compose/Dockerfile, no network)"
t0=$SECONDS
log=$(mktemp /tmp/corral-compose-image.XXXXXX)
trap 'rm -f "$log"' EXIT
old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
if ! DOCKER_BUILDKIT=0 docker build --network none --build-arg "BASE=$BASE" \
    -f compose/Dockerfile -t "$IMAGE" . >"$log" 2>&1; then
    show_tail "$log"
    die "docker build failed"
fi
note "$(grep -m1 'Sending build context' "$log" || true)"
version=$(docker run --rm --network none "$IMAGE" corral --version 2>&1) ||
    die "$IMAGE does not run corral --version: $version"
new_id=$(docker image inspect -f '{{.Id}}' "$IMAGE")
if [[ -n $old_id && $old_id != "$new_id" ]]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true # fails harmlessly if in use
fi
say "$IMAGE ready (${new_id:7:12}, $version) in $((SECONDS - t0)) s"
