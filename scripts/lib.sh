# shellcheck shell=bash
# Shared helpers for scripts/*.sh. Source it, do not run it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Repository root (the parent of scripts/).
CORRAL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CORRAL_ROOT

# rabbitmq-*, dockerd live in sbin; a CI shell may not have it on PATH.
case ":$PATH:" in
*:/usr/sbin:*) ;;
*) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;;
esac
export PATH

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
err() { printf 'ERROR: %s\n' "$*" >&2; }
die() {
    err "$*"
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "$1 needs root (run this script as root)"
}

# show_tail FILE... : print the last lines of each readable file to stderr.
show_tail() {
    local f
    for f in "$@"; do
        [[ -r $f ]] || continue
        printf -- '---- last 40 lines of %s ----\n' "$f" >&2
        tail -n 40 "$f" >&2
        printf -- '---- end of %s ----\n' "$f" >&2
    done
}

# wait_until SECONDS CMD... : run CMD every second until it succeeds; 1 on timeout.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# take_lock NAME : serialise concurrent runs (other engineers, parallel CI steps).
# The lock is held until the calling (sub)shell exits. A daemon must be started
# from a subshell that first runs close_lock_fds, or it would inherit the lock
# fd and hold the lock forever.
CORRAL_LOCK_FDS=()
take_lock() {
    local file="/tmp/corral-$1.lock" fd
    exec {fd}>>"$file"
    CORRAL_LOCK_FDS+=("$fd")
    if ! flock -n "$fd"; then
        note "waiting for another run to release $file"
        flock -w 900 "$fd" || die "timed out waiting for lock $file"
    fi
}

# close_lock_fds : close the lock fds in the current (sub)shell.
close_lock_fds() {
    local fd
    for fd in "${CORRAL_LOCK_FDS[@]}"; do
        exec {fd}>&-
    done
}

# is_static FILE : true if FILE is a statically linked executable.
is_static() {
    local out
    if have file; then
        out=$(file -L "$1" 2>&1) || true
    else
        # ldd exits 1 with "not a dynamic executable" for static binaries.
        out=$(LC_ALL=C ldd "$1" 2>&1) || true
    fi
    [[ $out == *"statically linked"* || $out == *"static-pie linked"* ||
        $out == *"not a dynamic executable"* ]]
}

# http_ok URL [USER:PASS] : true if URL answers 200 (curl may be missing: use python).
http_ok() {
    http_all_ok "${2:-}" "$1"
}

# http_all_ok USER:PASS URL... : true if every URL answers 200 (one python for them all;
# an empty USER:PASS sends no credentials).
http_all_ok() {
    python3 - "$@" <<'PY'
import base64, sys, urllib.request

cred, urls = sys.argv[1], sys.argv[2:]
for url in urls:
    req = urllib.request.Request(url)
    if cred:
        req.add_header("Authorization", "Basic " + base64.b64encode(cred.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            if resp.status != 200:
                sys.exit(1)
    except Exception:
        sys.exit(1)
PY
}

# --- the project's venv ------------------------------------------------------------
# setup_venv : create/reuse .venv and `pip install -e '.[test]'` into it, redone only
# when pyproject.toml, the interpreter or the set of top-level packages changes.
VENV=$CORRAL_ROOT/.venv
STAMP=$VENV/.corral-install-stamp
export PIP_DISABLE_PIP_VERSION_CHECK=1

install_fingerprint() {
    # pyproject + interpreter + the top-level packages: an editable install maps
    # the packages that exist at install time, so a new package needs a reinstall.
    {
        cat pyproject.toml
        "$VENV/bin/python" -c 'import sys; print(sys.version)'
        ls -1d ./*/__init__.py 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
}

setup_venv() {
    # In a subshell, so the lock is released on return and no daemon started later
    # inherits it.
    (_setup_venv_locked)
}

_setup_venv_locked() {
    # pyproject.toml and '.[test]' are relative paths (we are in a subshell).
    cd "$CORRAL_ROOT" || exit 1
    mkdir -p "$VENV"
    take_lock "venv-$(printf '%s' "$VENV" | sha256sum | cut -c1-12)"
    if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        say "creating venv $VENV"
        python3 -m venv --clear "$VENV" || die "python3 -m venv $VENV failed"
    fi
    local want
    want=$(install_fingerprint)
    if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
        say "venv up to date ($VENV)"
        return 0
    fi
    say "pip install -e '.[test]' into $VENV"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install -q -e '.[test]' || die "pip install -e '.[test]' failed"
    printf '%s\n' "$want" >"$STAMP"
}

