#!/bin/bash
# (Copied from the team recipe shared/recipes/rabbitmq-cluster.sh, so a clean clone has it.)
# A 3-node RabbitMQ cluster on one machine, beside the default node (which keeps 5672).
# Nodes rq1..rq3@localhost: AMQP 5701-5703, management 15701-15703, distribution 25701-25703.
# Verified with Debian's RabbitMQ 3.10.8: about 20 s to start and join, about 120 MB per node.
#   start:  shared/recipes/rabbitmq-cluster.sh start
#   stop one node (a broker failure):  rabbitmqctl -n rq2@localhost stop   (kill -9 of its beam.smp also works)
#   start it again:  shared/recipes/rabbitmq-cluster.sh start-node 2
#   stop all:  shared/recipes/rabbitmq-cluster.sh stop
#   a new cluster, its old data wiped:  scripts/rabbitmq-cluster.sh fresh   (Corral's tests use this:
#     RabbitMQ 3.10 has been seen failing to restart all three nodes from their old data, with
#     `incompatible_feature_flags … badmap` in the node log)
# Nodes run as the rabbitmq user and share its Erlang cookie, so they can cluster.
# Each has the plugins rabbitmq_management and rabbitmq_event_exchange (masters learn at once,
# through the exchange amq.rabbitmq.event, that a worker's connection closed).
set -euo pipefail

PLUGINS="rabbitmq_management,rabbitmq_event_exchange"

launch() {
  local i=$1 d=/var/lib/rabbitmq/rq$1
  mkdir -p "$d"; echo "[$PLUGINS]." > "$d/enabled_plugins"; chown -R rabbitmq:rabbitmq "$d"
  su rabbitmq -s /bin/sh -c "RABBITMQ_NODENAME=rq$i@localhost RABBITMQ_NODE_PORT=570$i RABBITMQ_DIST_PORT=2570$i \
    RABBITMQ_MNESIA_BASE=$d/mnesia RABBITMQ_LOG_BASE=$d/log RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins \
    RABBITMQ_PID_FILE=$d/pid RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-rabbitmq_management tcp_config [{port,1570$i}]' \
    /usr/lib/rabbitmq/bin/rabbitmq-server -detached"
}

await_node() {
  local i=$1
  for _ in $(seq 90); do rabbitmqctl -n "rq$i@localhost" -q await_startup >/dev/null 2>&1 && return 0; sleep 1; done
  echo "rq$i did not start; see /var/lib/rabbitmq/rq$i/log" >&2; return 1
}

# A node already running with an older enabled_plugins file (launch did not restart it) gets
# the event exchange online; quick when it has it.
enable_events() {
  local i=$1
  # "[E*] name": enabled and running on the node (-e alone reads the local default file).
  rabbitmq-plugins -n "rq$i@localhost" -q list rabbitmq_event_exchange 2>/dev/null |
    grep -q '^\[.\*\] rabbitmq_event_exchange ' && return 0
  RABBITMQ_ENABLED_PLUGINS_FILE=/var/lib/rabbitmq/rq$i/enabled_plugins \
    rabbitmq-plugins -n "rq$i@localhost" -q enable rabbitmq_event_exchange >/dev/null
}

case "${1:-start}" in
  start)
    # Launch all before waiting: a restarted cluster node waits for its peers.
    for i in 1 2 3; do launch "$i"; done
    for i in 1 2 3; do await_node "$i"; done
    pids=(); for i in 1 2 3; do enable_events "$i" & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid"; done
    for i in 2 3; do
      if ! rabbitmqctl -n rq1@localhost -q cluster_status 2>/dev/null | grep -q "rq$i@localhost"; then
        rabbitmqctl -n "rq$i@localhost" -q stop_app
        rabbitmqctl -n "rq$i@localhost" -q join_cluster rq1@localhost
        rabbitmqctl -n "rq$i@localhost" -q start_app
      fi
    done
    echo "cluster up: amqp://guest:guest@127.0.0.1:5701/ 5702 5703 (guest works from localhost only)";;
  start-node) launch "$2"; await_node "$2"; enable_events "$2";;
  stop) for i in 3 2 1; do rabbitmqctl -n "rq$i@localhost" -q stop >/dev/null 2>&1 || true; done;;
  fresh)
    for i in 3 2 1; do rabbitmqctl -n "rq$i@localhost" -q stop >/dev/null 2>&1 || true; done
    for i in 1 2 3; do
      if [[ -f /var/lib/rabbitmq/rq$i/pid ]] && kill -0 "$(cat /var/lib/rabbitmq/rq$i/pid)" 2>/dev/null; then
        echo "rq$i is still running (pid $(cat /var/lib/rabbitmq/rq$i/pid)); not wiping it" >&2; exit 1
      fi
      rm -rf "/var/lib/rabbitmq/rq$i"
    done
    exec "$0" start;;
  *) echo "usage: $0 start|start-node N|stop|fresh" >&2; exit 2;;
esac
