#!/usr/bin/env bash
# Quick start: a local Corral cluster (RabbitMQ, Docker, one master, two workers) and a demo.
#
#   ./scripts/demo.sh          install/start what is missing, start the cluster, run the demo
#   ./scripts/demo.sh stop     stop the cluster's master and workers (containers are removed)
#
# The cluster keeps running after the demo, so you can try the CLI:
#   source .venv/bin/activate && source .corral/env && corral nodes && corral ps
# Every process logs in as a broker user of its role (`corral admin bootstrap`): the master
# as corral-master, each worker as worker-<node id>, the CLI as corral-admin. Their URLs
# are in .corral/credentials/ (mode 0600); .corral/env sets the CLI's.
# Logs: .corral/logs/. Environment: CORRAL_DEMO_PORT (default 8080), the host port of the
# demo web service (bound to 127.0.0.1).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CORRAL_ROOT"

STATE=$CORRAL_ROOT/.corral
PORT=${CORRAL_DEMO_PORT:-8080}
CREDENTIALS=$STATE/credentials
WORKERS=(demo-w1 demo-w2)
mkdir -p "$STATE/logs"

alive() { [[ -f $STATE/$1.pid ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

stop_cluster() {
    local name
    for name in w1 w2 master; do
        if alive "$name"; then
            say "stopping $name (pid $(cat "$STATE/$name.pid"))"
            kill "$(cat "$STATE/$name.pid")"
        fi
        rm -f "$STATE/$name.pid"
    done
    if have docker; then
        docker ps -aq --filter label=corral.node=demo-w1 --filter label=corral.managed=true |
            xargs -r docker rm -f >/dev/null
        docker ps -aq --filter label=corral.node=demo-w2 --filter label=corral.managed=true |
            xargs -r docker rm -f >/dev/null
    fi
}

if [[ ${1:-} == stop ]]; then
    stop_cluster
    exit 0
fi

bash scripts/bootstrap.sh
setup_venv
export PATH="$CORRAL_ROOT/.venv/bin:$PATH"

start() { # start NAME URL ARGS...: `corral ARGS` as the user of URL (in its environment,
    # not on its command line, where any local user could read the password)
    local name=$1 url=$2
    shift 2
    if alive "$name"; then
        note "$name already running (pid $(cat "$STATE/$name.pid"))"
        return
    fi
    CORRAL_AMQP_URL=$url nohup corral "$@" >>"$STATE/logs/$name.log" 2>&1 &
    echo $! >"$STATE/$name.pid"
    note "$name started (pid $!, log .corral/logs/$name.log)"
}

# --- broker users, one per role -----------------------------------------------------
url_of() { head -1 "$CREDENTIALS/$1.url"; }
have_credentials() {
    local user
    for user in corral-master corral-admin corral-broker-admin "${WORKERS[@]/#/worker-}"; do
        [[ -s $CREDENTIALS/$user.url ]] || return 1
    done
}
bootstrap_users() { # ARGS... for `corral admin bootstrap`
    local args=(--credentials-dir "$CREDENTIALS")
    local worker
    for worker in "${WORKERS[@]}"; do args+=(--worker "$worker"); done
    if [[ -s $CREDENTIALS/corral-broker-admin.url ]]; then
        # guest is needed only for the first bootstrap: the broker's administrator since.
        local login
        login=$(url_of corral-broker-admin | sed -E 's#^amqps?://([^@]*)@.*#\1#')
        export CORRAL_MANAGEMENT_USER=${login%%:*} CORRAL_MANAGEMENT_PASSWORD=${login#*:}
    fi
    corral admin bootstrap "${args[@]}" "$@"
}
say "broker users: one per role (corral admin bootstrap; .corral/credentials/)"
if have_credentials; then
    bootstrap_users
else
    # A user whose password was not written here (an earlier .corral was removed) gets a
    # new one, so whatever still runs with the old one is stopped first.
    stop_cluster
    bootstrap_users --rotate
fi
have_credentials || die "corral admin bootstrap did not write every user's URL to $CREDENTIALS"
export CORRAL_AMQP_URL CORRAL_ROLE=admin
CORRAL_AMQP_URL=$(url_of corral-admin)
printf 'export CORRAL_AMQP_URL=%q CORRAL_ROLE=admin\n' "$CORRAL_AMQP_URL" >"$STATE/env"
chmod 600 "$STATE/env"

say "starting the cluster: one master, two workers"
start master "$(url_of corral-master)" master --name demo-master
for n in 1 2; do
    start "w$n" "$(url_of "worker-demo-w$n")" worker --node-id "demo-w$n" \
        --state-dir "$STATE/w$n" --cpus 2 --memory 2g --label "zone=zone-$n"
done
two_ready() { (($(corral nodes --output json 2>/dev/null | grep -c '"state": "ready"') >= 2)); }
wait_until 60 two_ready || {
    show_tail "$STATE"/logs/*.log
    die "the workers did not report in within 60 s"
}
corral nodes

say "clearing an earlier demo's jobs (if any)"
corral cancel hello-web >/dev/null 2>&1 || true
corral cancel hello-batch >/dev/null 2>&1 || true
no_old_web() { [[ -z $(docker ps -q --filter label=corral.job=hello-web) ]]; }
wait_until 30 no_old_web || warn "the previous hello-web still holds port $PORT"

say "a web service: busybox httpd, published on 127.0.0.1:$PORT"
corral run --kind service --name hello-web --port "$PORT:80" --wait --timeout 60 \
    local/busybox:latest sh -c \
    'mkdir -p /www && echo "Hello from Corral, container $(hostname)" >/www/index.html &&
     exec httpd -f -p 80 -h /www'
corral ps hello-web
page() {
    python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode().strip())' "http://127.0.0.1:$PORT/"
}
wait_until 20 page || die "http://127.0.0.1:$PORT/ does not answer (see 'corral ps hello-web')"
say "GET http://127.0.0.1:$PORT/ -> $(page)   (open it in a browser, too)"

say "a batch job that computes and exits"
corral run --name hello-batch --wait --timeout 60 local/busybox:latest sh -c 'echo computing; sleep 1; echo "result: 42"'
corral logs hello-batch  # a unique prefix of the task id will do

say "the cluster keeps running: try 'source .venv/bin/activate; source .corral/env; corral --help',"
note "'corral watch' in another terminal, and './scripts/demo.sh stop' to stop it."
