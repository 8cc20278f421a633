#!/usr/bin/env bash
# Every benchmark (issue 10's a-f) into docs/benchmarks.md: about an hour on the 2-core
# development machine. Installs and starts what it needs as scripts/test.sh does.
#
#   ./scripts/bench.sh [--only a,c] [--quick]
#
# --only: the benchmarks to run (a placement, b heartbeats, c scaling curve, d/e real
# Docker, f failover and host loss); --quick: small sizes, writes nothing (a smoke run).
# See bench/suite.py.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CORRAL_ROOT"

say "bootstrap"
bash scripts/bootstrap.sh
setup_venv
export VIRTUAL_ENV=$VENV
export PATH="$VENV/bin:$PATH"
say "benchmarks"
exec python -m bench.suite "$@"
