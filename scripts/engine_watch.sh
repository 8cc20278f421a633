#!/usr/bin/env bash
# Watches the Docker engine while the tests run, and restarts it if it hangs.
#
#   scripts/engine_watch.sh EVENTS_FILE &     (scripts/test.sh starts and stops it)
#
# Why: Docker 20.10.24 (Debian 12's docker.io, the only engine this machine can install)
# can deadlock when containers come and go quickly: two locks of libnetwork taken in
# opposite orders by getSvcRecords and processEndpointDelete (moby/moby#46661, fixed in
# 20.10.27). Every engine call that touches a network then blocks for good, and every
# later test fails on Docker timeouts. CI saw it twice in about ten full runs.
#
# Every 10 s it asks `docker network ls` (it takes the lock that deadlocks; `docker info`
# does not). When two asks in a row get no answer within 30 s, it:
#   1. sends SIGUSR1 to dockerd, which writes its goroutines to
#      /var/run/docker/goroutine-stacks-*.log, and says whether they show the known
#      deadlock (a goroutine blocked in processEndpointDelete);
#   2. stops that dockerd and starts a new one with `scripts/bootstrap.sh --docker`, but
#      only if scripts/bootstrap.sh started it (its pid is in /run/corral-dockerd.pid);
#      an engine someone else runs is left alone;
#   3. appends one line to EVENTS_FILE. scripts/test.sh reruns the failed tests once when
#      a pytest run failed while the engine was restarted, and says so.
set -uo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

EVENTS=${1:?usage: engine_watch.sh EVENTS_FILE}
PIDFILE=/run/corral-dockerd.pid
INTERVAL=${ENGINE_WATCH_INTERVAL:-10}
PROBE_TIMEOUT=${ENGINE_WATCH_TIMEOUT:-30}

answers() { timeout "$PROBE_TIMEOUT" docker network ls -q >/dev/null 2>&1; }

# The goroutine dump the engine wrote after `kill -USR1`, or nothing.
dump_after() { # dump_after PID
    local before after
    before=$(ls -1t /var/run/docker/goroutine-stacks-*.log 2>/dev/null | head -n 1)
    kill -USR1 "$1" 2>/dev/null || return 0
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        sleep 1
        after=$(ls -1t /var/run/docker/goroutine-stacks-*.log 2>/dev/null | head -n 1)
        if [[ -n $after && $after != "$before" ]]; then
            printf '%s\n' "$after"
            return 0
        fi
    done
}

verdict() { # verdict DUMP : one line saying what the dump shows
    if [[ -z $1 ]]; then
        echo "no goroutine dump was written"
    elif grep -q 'processEndpointDelete' "$1" && grep -q 'getSvcRecords' "$1"; then
        echo "the known libnetwork deadlock (processEndpointDelete against getSvcRecords, moby/moby#46661); dump: $1"
    else
        echo "not the known libnetwork deadlock; look at the dump: $1"
    fi
}

restart() { # restart PID
    local pid=$1
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill -KILL "$pid" 2>/dev/null
    for _ in $(seq 10); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    rm -f /var/run/docker.pid
    bash "$CORRAL_ROOT/scripts/bootstrap.sh" --docker >&2
}

misses=0
while sleep "$INTERVAL"; do
    if answers; then
        misses=0
        continue
    fi
    misses=$((misses + 1))
    ((misses >= 2)) || continue
    misses=0
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    ours=$(cat "$PIDFILE" 2>/dev/null || true)
    when=$(date -u +%H:%M:%S)
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
        warn "engine watch ($when): the Docker engine does not answer and its dockerd is not running"
        continue
    fi
    what=$(verdict "$(dump_after "$pid")")
    if [[ $pid != "$ours" ]]; then
        warn "engine watch ($when): dockerd (pid $pid) has not answered for $((2 * PROBE_TIMEOUT)) s: $what. It was not started by scripts/bootstrap.sh: left alone"
        continue
    fi
    warn "engine watch ($when): dockerd (pid $pid) has not answered for $((2 * PROBE_TIMEOUT)) s: $what. Restarting it"
    restart "$pid"
    echo "$when dockerd $pid hung ($what); restarted" >>"$EVENTS"
done
