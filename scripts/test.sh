#!/usr/bin/env bash
# THE test command of Corral (CI runs it too, through .ci/run):
#
#   ./scripts/test.sh [pytest args...]      e.g. ./scripts/test.sh tests/unit -x -k election
#
# Steps: scripts/bootstrap.sh (RabbitMQ, Docker, test image), the venv .venv with
# `pip install -e '.[test]'` (redone only when pyproject.toml or the package list
# changes), then ruff check, ruff format --check, mypy, pytest. Extra arguments go
# to pytest. Every step runs even if an earlier lint step failed; the script fails
# if any step failed. pytest collecting no tests (exit code 5) is a failure.
#
# Environment:
#   SKIP_LINT=1            skip ruff and mypy (quick local iteration)
#   CI=<non-empty>         exports CORRAL_IN_CI=1 to the tests
#   CORRAL_TEST_AMQP_URL   broker for the tests (default amqp://guest:guest@127.0.0.1:5672/)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CORRAL_ROOT"

say "bootstrap"
bash scripts/bootstrap.sh

setup_venv # (lib.sh; runs in a subshell, so its lock is released before the checks)
export VIRTUAL_ENV=$VENV
export PATH="$VENV/bin:$PATH"

export CORRAL_TEST_AMQP_URL=${CORRAL_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
if [[ -n ${CI:-} && ${CI} != false ]]; then
    export CORRAL_IN_CI=1
fi

# --- checks ----------------------------------------------------------------------
failed=()
step() { # step NAME CMD...
    local name=$1
    shift
    say "$name"
    "$@" || failed+=("$name")
}

if [[ ${SKIP_LINT:-} == 1 ]]; then
    say "ruff, mypy skipped (SKIP_LINT=1)"
else
    step "ruff" ruff check .
    step "ruff format" ruff format --check .
    step "mypy" mypy
fi

say "pytest"
rc=0
pytest "$@" || rc=$?
if ((rc == 5)); then
    err "pytest collected no tests (exit code 5): check the arguments/-k expression and tests/"
    failed+=("pytest (no tests collected)")
elif ((rc != 0)); then
    failed+=("pytest (exit code $rc)")
fi

if ((${#failed[@]})); then
    err "FAILED: $(IFS=,; printf '%s' "${failed[*]}" | sed 's/,/, /g')"
    exit 1
fi
say "all checks passed"
