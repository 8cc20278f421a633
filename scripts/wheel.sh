#!/usr/bin/env bash
# Build Corral's wheel with `python -m build` (an sdist of a copy of the sources, then the
# wheel from that sdist) and the wheels of its dependencies with `pip wheel` (from PyPI),
# so that `pip install --no-index --find-links DIR corral` works with no index at all.
# Used by scripts/compose-image.sh (the compose image) and tests/multihost (the rig).
#
#   scripts/wheel.sh              # build or reuse; the last two lines say where they are:
#                                 #   corral_wheel=/var/cache/corral/wheels/corral-<key>/corral-….whl
#                                 #   deps=/var/cache/corral/wheels/deps-py311-<key>
#   scripts/wheel.sh --into DIR   # also put them all (flat) in DIR, replacing its *.whl
#
# Cached in $CORRAL_WHEEL_CACHE (default /var/cache/corral/wheels, or
# ~/.cache/corral/wheels if that is not writable): Corral's wheel keyed by its sources
# (pyproject.toml, README.md, the packages), the dependencies' by the Python version and
# pyproject's dependency list, so a source change rebuilds only Corral's wheel (some
# 15 s; the dependencies take about a minute). Entries unused for a day are removed.
# Needs Python >= 3.11 with the `build` package (.venv has it, from the test extras;
# else one is installed into a venv in the cache).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CORRAL_ROOT"

into=""
case "${1:-}" in
"") ;;
--into)
    [[ -n ${2:-} ]] || die "usage: $0 [--into DIR]"
    into=$2
    ;;
*) die "usage: $0 [--into DIR]" ;;
esac

if [[ -n ${CORRAL_WHEEL_CACHE:-} ]]; then
    CACHE=$CORRAL_WHEEL_CACHE
elif mkdir -p /var/cache/corral/wheels 2>/dev/null && [[ -w /var/cache/corral/wheels ]]; then
    CACHE=/var/cache/corral/wheels
else
    CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/corral/wheels
fi
mkdir -p "$CACHE"

# One run at a time per cache (tests/multihost/rig.py takes the same lock on .lock).
exec {lock_fd}>>"$CACHE/.lock"
if ! flock -n "$lock_fd"; then
    note "waiting for another run to release $CACHE/.lock"
    flock -w 900 "$lock_fd" || die "timed out waiting for $CACHE/.lock"
fi

# --- the Python that builds ---------------------------------------------------------
python_with_build() {
    local py=$VENV/bin/python
    if [[ -x $py ]] && "$py" -c 'import build' 2>/dev/null; then
        printf '%s\n' "$py"
        return 0
    fi
    local tools=$CACHE/.tools
    if ! "$tools/bin/python" -c 'import build' 2>/dev/null; then
        say "installing 'build' into $tools (pip, from PyPI)"
        python3 -m venv --clear "$tools" || die "python3 -m venv $tools failed"
        "$tools/bin/python" -m pip install -q build || die "pip install build failed"
    fi
    printf '%s\n' "$tools/bin/python"
}
PY=$(python_with_build)
pytag=$("$PY" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')

# --- keys -------------------------------------------------------------------------
# The top-level packages, from pyproject's [tool.setuptools.packages.find] include.
mapfile -t packages < <("$PY" - <<'PY'
import tomllib

with open("pyproject.toml", "rb") as f:
    find = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]
for pattern in find["include"]:
    print(pattern.rstrip("*."))
PY
)
((${#packages[@]})) || die "pyproject.toml names no packages ([tool.setuptools.packages.find] include)"

source_files() { # NUL-separated, sorted
    find pyproject.toml README.md "${packages[@]}" -type f \
        ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z
}
src_key=$(source_files | xargs -0 sha256sum | sha256sum | cut -c1-16)
deps_key=$("$PY" - <<'PY' | sha256sum | cut -c1-16
import tomllib

with open("pyproject.toml", "rb") as f:
    print(sorted(tomllib.load(f)["project"]["dependencies"]))
PY
)
corral_dir=$CACHE/corral-$src_key
deps_dir=$CACHE/deps-$pytag-$deps_key

# --- build what is missing ------------------------------------------------------------
scratch=""
trap '[[ -z $scratch ]] || rm -rf "$scratch"' EXIT

if [[ ! -d $corral_dir ]]; then
    scratch=$(mktemp -d "$CACHE/.build-XXXXXX")
    # A copy of the sources: building in the work tree would leave build/ and egg-info
    # there, and the wheel is made from the sdist, as an index would make it.
    mkdir "$scratch/src"
    source_files | xargs -0 cp --parents -t "$scratch/src"
    say "building corral's wheel (python -m build, sources $src_key)"
    t0=$SECONDS
    if ! "$PY" -m build --outdir "$scratch/out" "$scratch/src" >"$scratch/build.log" 2>&1; then
        show_tail "$scratch/build.log"
        die "python -m build failed"
    fi
    built=("$scratch"/out/corral-*.whl)
    if ((${#built[@]} != 1)) || [[ ! -f ${built[0]} ]]; then
        die "python -m build made ${built[*]}, not one wheel"
    fi
    mkdir "$scratch/corral"
    mv "${built[0]}" "$scratch/corral/"
    mv "$scratch/corral" "$corral_dir"
    note "built in $((SECONDS - t0)) s"
fi
wheel=("$corral_dir"/corral-*.whl)

if [[ ! -d $deps_dir ]]; then
    [[ -n $scratch ]] || scratch=$(mktemp -d "$CACHE/.build-XXXXXX")
    say "building the dependencies' wheels (pip wheel, from PyPI; $pytag)"
    t0=$SECONDS
    if ! "$PY" -m pip wheel -q --disable-pip-version-check -w "$scratch/deps" "${wheel[0]}" \
        >"$scratch/pip.log" 2>&1; then
        show_tail "$scratch/pip.log"
        die "pip wheel failed"
    fi
    rm -f "$scratch"/deps/corral-*.whl
    mv "$scratch/deps" "$deps_dir"
    note "$(find "$deps_dir" -name '*.whl' | wc -l) wheels in $((SECONDS - t0)) s"
fi

# --- keep what is used, prune the rest ------------------------------------------------------
touch "$corral_dir" "$deps_dir"
find "$CACHE" -mindepth 1 -maxdepth 1 -type d \( -name 'corral-*' -o -name 'deps-*' \) \
    -mtime +0 -exec rm -rf {} + 2>/dev/null || true

if [[ -n $into ]]; then
    mkdir -p "$into"
    rm -f "$into"/*.whl
    # Hard links keep the files' identity (and Docker's build cache) where they can.
    cp -l "${wheel[0]}" "$deps_dir"/*.whl "$into/" 2>/dev/null ||
        cp -p "${wheel[0]}" "$deps_dir"/*.whl "$into/"
    note "$(find "$into" -maxdepth 1 -name '*.whl' | wc -l) wheels in $into"
fi
say "wheels ready"
printf 'corral_wheel=%s\ndeps=%s\n' "${wheel[0]}" "$deps_dir"
