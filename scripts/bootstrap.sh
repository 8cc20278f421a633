#!/usr/bin/env bash
# Make this machine ready for Corral's tests. Idempotent: every step checks first
# and does nothing if already done, so a rerun on a ready machine takes seconds.
#
#   1. apt-get install rabbitmq-server docker.io busybox-static chromium chromium-driver
#      debootstrap docker-compose (if any is missing; chromium and its driver run the
#      dashboard's browser test, debootstrap and docker-compose the compose stack's)
#   2. RabbitMQ running (`rabbitmq-server -detached`), plugins rabbitmq_management
#      (http://127.0.0.1:15672/api/overview answering guest:guest) and
#      rabbitmq_event_exchange (exchange amq.rabbitmq.event on vhost /: masters learn
#      at once that a worker's connection closed) enabled
#   3. Docker engine running (`dockerd` in the background, log /var/log/corral-dockerd.log)
#   4. test image local/busybox:latest present (scripts/build-test-image.sh)
#
# Needs root for installing and starting things (CI runs it as root).
# Never pulls images: there is no container registry.
#
#   scripts/bootstrap.sh --docker   only step 3 (scripts/engine_watch.sh restarts a hung
#                                   engine with it, while the broker may be down on purpose)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APT_LOG=/tmp/corral-apt.log
RMQ_START_LOG=/tmp/corral-rabbitmq-start.log
DOCKERD_LOG=/var/log/corral-dockerd.log
# The pid of the dockerd this script started: scripts/engine_watch.sh restarts only that one.
DOCKERD_PIDFILE=/run/corral-dockerd.pid
MGMT_URL=http://127.0.0.1:15672/api/overview
EVENTS_URL=http://127.0.0.1:15672/api/exchanges/%2F/amq.rabbitmq.event
PLUGINS=(rabbitmq_management rabbitmq_event_exchange)
TEST_IMAGE=local/busybox:latest

take_lock bootstrap

# --- 1. packages -------------------------------------------------------------
have_rabbitmq() { have rabbitmq-server && have rabbitmq-diagnostics && have rabbitmq-plugins; }
have_docker() { have dockerd && have docker; }
have_static_busybox() { [[ -x /bin/busybox ]] && is_static /bin/busybox; }
# Debian's chromium, and the chromedriver of the same version that Selenium drives.
have_chromium() { [[ -x /usr/bin/chromium ]] && [[ -x /usr/bin/chromedriver ]]; }

install_packages() {
    local missing=()
    have_rabbitmq || missing+=(rabbitmq-server)
    have_docker || missing+=(docker.io)
    have_static_busybox || missing+=(busybox-static)
    have_chromium || missing+=(chromium chromium-driver)
    have debootstrap || missing+=(debootstrap)
    have docker-compose || missing+=(docker-compose)
    ((${#missing[@]})) || return 0

    need_root "installing ${missing[*]}"
    local pkgs=(rabbitmq-server docker.io busybox-static chromium chromium-driver debootstrap
        docker-compose)
    say "installing ${pkgs[*]} (apt; missing: ${missing[*]}; log: $APT_LOG)"
    local t0=$SECONDS
    : >"$APT_LOG"
    local apt_opts=(-q -o DPkg::Lock::Timeout=300)
    if ! apt-get "${apt_opts[@]}" update >>"$APT_LOG" 2>&1; then
        err "apt-get update failed"
        show_tail "$APT_LOG"
        exit 1
    fi
    # policy-rc.d may deny starting services during install: fine, we start them below.
    if ! DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y "${pkgs[@]}" </dev/null \
        >>"$APT_LOG" 2>&1; then
        err "apt-get install ${pkgs[*]} failed"
        show_tail "$APT_LOG"
        exit 1
    fi
    hash -r
    note "installed in $((SECONDS - t0)) s"
    have_static_busybox ||
        die "/bin/busybox is still not the static busybox after installing busybox-static"
}

# --- 2. RabbitMQ ---------------------------------------------------------------
rmq_ping() { timeout 30 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

rmq_fail() {
    err "$1"
    local logs=("$RMQ_START_LOG" /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log) f
    for f in /var/log/rabbitmq/rabbit@*.log; do
        [[ $f == *_upgrade.log ]] || logs+=("$f")
    done
    show_tail "${logs[@]}"
    exit 1
}

RMQ_OPEN_FILES=65536
RMQ_LIMITS_FILE=/etc/security/limits.d/corral-rabbitmq.conf
# Debian's rabbitmq-server re-runs itself through `su rabbitmq`, whose pam_limits sets the
# limits afresh: a limits.d entry is what counts (capped by the hard limit we have here).
raise_fd_limit() {
    local hard n
    hard=$(ulimit -Hn)
    n=$RMQ_OPEN_FILES
    [[ $hard != unlimited ]] && ((hard < n)) && n=$hard
    printf 'rabbitmq soft nofile %s\nrabbitmq hard nofile %s\n' "$n" "$n" >"$RMQ_LIMITS_FILE"
}

# Fully booted, not only the Erlang node answering: the rabbit application running.
rmq_running() { timeout 30 rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }
rmq_ready() { rmq_running && http_all_ok guest:guest "$MGMT_URL" "$EVENTS_URL"; }

# enable_plugins MODE : make sure PLUGINS are enabled; MODE --offline writes the
# enabled_plugins file (the node boots with them), --online asks the running node.
enable_plugins() {
    local enabled plugin missing=()
    enabled=$(rabbitmq-plugins list -q -e -m 2>/dev/null) || true
    for plugin in "${PLUGINS[@]}"; do
        grep -qx "$plugin" <<<"$enabled" || missing+=("$plugin")
    done
    ((${#missing[@]})) || return 0
    say "enabling RabbitMQ plugins ${missing[*]} ($1)"
    (close_lock_fds && exec rabbitmq-plugins enable "$1" "${missing[@]}") \
        >>"$RMQ_START_LOG" 2>&1 </dev/null ||
        rmq_fail "rabbitmq-plugins enable $1 ${missing[*]} failed"
}

start_rabbitmq() {
    if rmq_ready; then
        return 0
    fi
    need_root "starting rabbitmq-server"
    local t0=$SECONDS
    # Every connection and every quorum queue costs the broker file descriptors; with
    # the usual 1024 a few hundred quorum queues leave it accepting sockets it can never
    # serve, so give it many more.
    raise_fd_limit
    # The plugins go into the enabled_plugins file before the node starts, so it boots
    # with them: enabling them online while the node is still booting races with its
    # boot (RabbitMQ 3.10: file_handle_cache badarg, "Application rabbit exited", the
    # node left without the rabbit application). A node that already answers (started
    # by someone else, or still booting) is waited for until fully booted instead.
    rmq_ping || enable_plugins --offline
    local attempt
    for attempt in 1 2 3; do
        if ! rmq_ping; then
            say "starting rabbitmq-server (rabbitmq-server -detached)"
            (close_lock_fds && exec rabbitmq-server -detached) >>"$RMQ_START_LOG" 2>&1 </dev/null || true
        fi
        if wait_until 90 rmq_running; then
            note "rabbitmq booted after $((SECONDS - t0)) s"
            enable_plugins --online
            if wait_until 60 rmq_ready; then
                note "management API and event exchange up after $((SECONDS - t0)) s"
                return 0
            fi
        fi
        ((attempt < 3)) || break
        note "rabbitmq is not ready (attempt $attempt): stopping the node and starting it again"
        timeout 60 rabbitmqctl stop >>"$RMQ_START_LOG" 2>&1 </dev/null || true
    done
    rmq_fail "rabbitmq was not ready (application running, management API $MGMT_URL answering guest:guest, exchange amq.rabbitmq.event) after 3 starts"
}

# --- 3. Docker -----------------------------------------------------------------
docker_ok() { timeout 20 docker info >/dev/null 2>&1; }

start_docker() {
    if docker_ok; then
        return 0
    fi
    need_root "starting dockerd"
    local pid=""
    if [[ -s /var/run/docker.pid ]] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        pid=$(cat /var/run/docker.pid)
        say "dockerd already running (pid $pid) but not answering yet; waiting"
    else
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        say "starting dockerd (log: $DOCKERD_LOG)"
        # setsid: own session, so it outlives this script and its process group.
        (close_lock_fds && exec setsid nohup dockerd) >>"$DOCKERD_LOG" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$DOCKERD_PIDFILE"
    fi
    local t0=$SECONDS deadline=$((SECONDS + 60))
    until docker_ok; do
        if ! kill -0 "$pid" 2>/dev/null; then
            err "dockerd (pid $pid) exited"
            show_tail "$DOCKERD_LOG"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            err "docker did not answer 'docker info' within 60 s"
            show_tail "$DOCKERD_LOG"
            exit 1
        fi
        sleep 1
    done
    note "docker up after $((SECONDS - t0)) s (dockerd pid $pid)"
}

# --- 4. test image -------------------------------------------------------------
ensure_test_image() {
    if docker image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    say "building test image $TEST_IMAGE"
    bash "$CORRAL_ROOT/scripts/build-test-image.sh" || die "building $TEST_IMAGE failed"
}

if [[ ${1:-} == --docker ]]; then
    start_docker
    exit 0
fi
install_packages
start_rabbitmq
start_docker
ensure_test_image
say "bootstrap ok: rabbitmq (amqp :5672, management :15672, event exchange), docker, $TEST_IMAGE"
