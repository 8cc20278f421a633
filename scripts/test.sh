#!/usr/bin/env bash
# THE test command of Corral (CI runs it too, through .ci/run):
#
#   ./scripts/test.sh [pytest args...]      e.g. ./scripts/test.sh tests/unit -x -k election
#
# Without arguments: unit and integration tests in parallel (pytest-xdist, PYTEST_WORKERS
# processes, default 3), then the chaos tests one at a time. With arguments: one pytest
# run with them.
#
# Steps: scripts/bootstrap.sh (RabbitMQ, Docker, test image), the venv .venv with
# `pip install -e '.[test]'` (redone only when pyproject.toml or the package list
# changes), then ruff check, ruff format --check, mypy, pytest. Extra arguments go
# to pytest. Every step runs even if an earlier lint step failed; the script fails
# if any step failed. pytest collecting no tests (exit code 5) is a failure.
#
# While pytest runs, scripts/engine_watch.sh watches the Docker engine: Debian 12's
# Docker 20.10.24 can deadlock under container churn (moby/moby#46661). It restarts a
# hung engine that scripts/bootstrap.sh started; a pytest run that failed meanwhile runs
# its failed tests again, once (`--last-failed`), and the output says so.
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

# The engine watch (scripts/engine_watch.sh) restarts a Docker engine that deadlocked
# (moby/moby#46661 in Docker 20.10.24) and writes a line to $ENGINE_EVENTS each time.
ENGINE_EVENTS=$(mktemp /tmp/corral-engine-events.XXXXXX)
bash scripts/engine_watch.sh "$ENGINE_EVENTS" &
ENGINE_WATCH=$!
trap 'kill "$ENGINE_WATCH" 2>/dev/null; rm -f "$ENGINE_EVENTS"' EXIT

run_pytest() { # run_pytest NAME ARGS...: one pytest run; exit code 5 (nothing ran) fails too
    local name=$1 rc=0 restarts
    shift
    say "$name"
    restarts=$(wc -l <"$ENGINE_EVENTS")
    pytest "$@" || rc=$?
    if ((rc != 0 && rc != 5)) && (($(wc -l <"$ENGINE_EVENTS") > restarts)); then
        # Tests that failed because the engine hung are run again, once, on the new one.
        warn "the Docker engine hung during '$name' and was restarted:"
        tail -n +$((restarts + 1)) "$ENGINE_EVENTS" | sed 's/^/    /' >&2
        say "$name: the failed tests again, once (pytest --last-failed)"
        rc=0
        pytest "$@" --last-failed --last-failed-no-failures none || rc=$?
    fi
    if ((rc == 5)); then
        err "pytest collected no tests (exit code 5): check the arguments/-k expression and tests/"
        failed+=("$name (no tests collected)")
    elif ((rc != 0)); then
        failed+=("$name (exit code $rc)")
    fi
}

if (($#)); then
    run_pytest "pytest" "$@"
else
    # The whole suite in two runs: unit and integration tests on PYTEST_WORKERS processes
    # (each test has its own vhost and labels its containers; most of their time is
    # waiting), then the chaos tests one at a time (they restart the shared broker).
    run_pytest "pytest (unit, integration)" -n "${PYTEST_WORKERS:-3}" -m "not chaos and not soak" --durations=10
    run_pytest "pytest (chaos)" -m "chaos and not soak" --durations=10
fi

if ((${#failed[@]})); then
    err "FAILED: $(IFS=,; printf '%s' "${failed[*]}" | sed 's/,/, /g')"
    exit 1
fi
say "all checks passed"
