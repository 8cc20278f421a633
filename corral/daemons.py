"""`corral master` and `corral worker`: build the settings at the edge, then serve.

The daemon packages are imported only when their command runs, so the rest of
the CLI starts fast and works without them.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from corral.clitools import (
    DEFAULT_URLS,
    DaemonAmqpUrls,
    LogLevel,
    TlsCaOpt,
    TlsCertOpt,
    TlsKeyOpt,
    fail,
    parse_pairs,
    parse_size_option,
    setup_logging,
    tls_option,
    usage_error,
)
from corral.errors import redact_url, scrub
from corral.urls import join_urls
from master.settings import MasterSettings
from schemas.envelope import describe_errors
from worker.settings import DEFAULT_STATE_DIR, WorkerSettings

LogLevelOpt = Annotated[LogLevel, typer.Option(help="How much to log.")]


def master(
    name: Annotated[str, typer.Option(help="This master's name (in logs and messages).")] = (
        "master"
    ),
    heartbeat_interval: Annotated[
        float, typer.Option(metavar="S", help="Expected worker heartbeat interval.")
    ] = 1.0,
    suspect_after: Annotated[
        float, typer.Option(metavar="S", help="A silent node is suspect after this long.")
    ] = 2.0,
    dead_after: Annotated[
        float, typer.Option(metavar="S", help="A silent node is down after this long.")
    ] = 3.0,
    agent_grace: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="A node whose agent disconnected keeps its tasks this long before they are"
            " replaced (a job's agent_grace overrides it).",
        ),
    ] = 30.0,
    keep_ended_jobs: Annotated[
        int, typer.Option(metavar="N", help="Ended jobs kept for listings (oldest go first).")
    ] = 1000,
    keep_attempts: Annotated[
        int, typer.Option(metavar="N", help="Ended attempts kept per slot besides the current.")
    ] = 5,
    ended_job_ttl: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", help="An ended job is forgotten, its containers removed, after this."
        ),
    ] = 86400.0,
    keep_containers: Annotated[
        int,
        typer.Option(
            metavar="N", help="Containers of ended attempts kept per slot, for `logs --previous`."
        ),
    ] = 2,
    remember_requests: Annotated[
        int, typer.Option(metavar="N", help="Requests remembered so a redelivery is not redone.")
    ] = 10_000,
    unroutable_hold: Annotated[
        float,
        typer.Option(metavar="S", help="Seconds a node with an unconsumed queue gets no tasks."),
    ] = 30.0,
    forget_down_nodes_after: Annotated[
        float, typer.Option(metavar="S", help="Forget a node down this long with no tasks.")
    ] = 600.0,
    max_heartbeats: Annotated[
        float,
        typer.Option(
            metavar="N",
            help="Heartbeats a second the whole fleet may send; a larger one beats less often.",
        ),
    ] = 500.0,
    standby_hold: Annotated[
        float,
        typer.Option(
            metavar="S",
            help="A suspect node's replacements wait paused elsewhere this long; 0: none.",
        ),
    ] = 10.0,
    amqp_heartbeat: Annotated[
        int,
        typer.Option(metavar="S", help="AMQP heartbeat: a frozen master loses the lead after ~2x."),
    ] = 2,
    ping_interval: Annotated[
        float, typer.Option(metavar="S", help="How often each master pings corral.leader.")
    ] = 0.2,
    takeover_grace: Annotated[
        float, typer.Option(metavar="S", help="A new leader waits this long to judge nodes.")
    ] = 3.0,
    snapshot_every: Annotated[
        int, typer.Option(metavar="N", help="Write a snapshot after this many journal batches.")
    ] = 1000,
    snapshot_max_age: Annotated[
        float, typer.Option(metavar="S", help="…or after this long, if anything was journaled.")
    ] = 3600.0,
    cluster_cidr: Annotated[
        str,
        typer.Option(metavar="CIDR", help="The cluster network; each node gets a subnet of it."),
    ] = "10.210.0.0/16",
    node_prefix: Annotated[
        int, typer.Option(metavar="N", help="The size of each node's subnet (/N).")
    ] = 24,
    amqp: DaemonAmqpUrls = DEFAULT_URLS,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    log_level: LogLevelOpt = LogLevel.info,
) -> None:
    """Run a master until SIGTERM or Ctrl-C. Run several (different --name) for a standby:
    one is active, the others take over within seconds."""
    try:
        settings = MasterSettings(
            amqp_url=join_urls(amqp),
            tls=tls_option(tls_ca, tls_cert, tls_key),
            name=name,
            heartbeat_interval=heartbeat_interval,
            suspect_after=suspect_after,
            dead_after=dead_after,
            agent_grace=agent_grace,
            keep_ended_jobs=keep_ended_jobs,
            keep_attempts=keep_attempts,
            ended_job_ttl=ended_job_ttl,
            keep_containers=keep_containers,
            remember_requests=remember_requests,
            unroutable_hold=unroutable_hold,
            forget_down_nodes_after=forget_down_nodes_after,
            standby_hold=standby_hold,
            max_heartbeats=max_heartbeats,
            amqp_heartbeat=amqp_heartbeat,
            ping_interval=ping_interval,
            takeover_grace=takeover_grace,
            snapshot_every=snapshot_every,
            snapshot_max_age=snapshot_max_age,
            cluster_cidr=cluster_cidr,
            node_prefix=node_prefix,
        )
    except ValidationError as exc:
        usage_error(f"invalid master settings: {describe_errors(exc)}")
    setup_logging(log_level.value)
    from master.daemon import serve

    _run_daemon(lambda: serve(settings), settings.amqp_url)


def worker(
    node_id: Annotated[
        str | None, typer.Option(metavar="ID", help="Node id (default: kept in --state-dir).")
    ] = None,
    cpus: Annotated[
        float | None, typer.Option(metavar="N", help="CPUs to offer (default: all).")
    ] = None,
    memory: Annotated[
        str | None, typer.Option(metavar="SIZE", help="Memory to offer, e.g. 4g (default: all).")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option(metavar="K=V", help="Node label (for constraints).")
    ] = None,
    state_dir: Annotated[
        Path, typer.Option(metavar="DIR", help="Where the node keeps its id.")
    ] = DEFAULT_STATE_DIR,
    heartbeat_interval: Annotated[
        float, typer.Option(metavar="S", help="Seconds between heartbeats.")
    ] = 1.0,
    container_label: Annotated[
        list[str] | None,
        typer.Option(metavar="K=V", help="Extra label on every container (tests use it)."),
    ] = None,
    start_threads: Annotated[
        int, typer.Option(metavar="N", help="Container creates and starts made at once.")
    ] = 8,
    stop_threads: Annotated[
        int, typer.Option(metavar="N", help="Container stops and removals made at once.")
    ] = 4,
    log_streams: Annotated[
        int, typer.Option(metavar="N", help="Log streams served at once (more: 'busy').")
    ] = 4,
    leave_on_terminate: Annotated[
        bool,
        typer.Option(
            help="On SIGTERM or Ctrl-C, leave the cluster: the master moves this node's tasks"
            " away, then the worker exits. Without it only the agent stops; its containers run on."
        ),
    ] = False,
    leave_timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="How long a leave waits for the master before stopping the containers itself.",
        ),
    ] = 120.0,
    master_user: Annotated[
        str,
        typer.Option(
            envvar="CORRAL_MASTER_USER",
            help="The master's broker user: commands and log requests from any other user"
            " (but this worker's own) are refused.",
        ),
    ] = "corral-master",
    network: Annotated[
        bool,
        typer.Option(
            help="Take part in the cluster network: a bridge with this node's subnet, routes"
            " to the other nodes, DNS for the containers (docs/networking.md)."
        ),
    ] = True,
    advertise_addr: Annotated[
        str | None,
        typer.Option(
            metavar="IP",
            help="The address other nodes route this node's subnet through (default: that of"
            " the interface holding the default route).",
        ),
    ] = None,
    dns_upstream: Annotated[
        list[str] | None,
        typer.Option(
            metavar="IP[:PORT]",
            help="Where the containers' DNS forwards names that are not the cluster's"
            " (default: the host's /etc/resolv.conf).",
        ),
    ] = None,
    cleanup: Annotated[
        bool,
        typer.Option(
            help="On exit, remove this node's routes, firewall rules and bridge (if no"
            " container is left on it)."
        ),
    ] = False,
    amqp: DaemonAmqpUrls = DEFAULT_URLS,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    log_level: LogLevelOpt = LogLevel.info,
) -> None:
    """Run a worker (the node agent that runs containers) until SIGTERM or Ctrl-C."""
    try:
        settings = WorkerSettings(
            amqp_url=join_urls(amqp),
            tls=tls_option(tls_ca, tls_cert, tls_key),
            node_id=node_id,
            cpus=cpus,
            memory=parse_size_option(memory, "--memory"),
            labels=parse_pairs(label, "--label"),
            state_dir=state_dir,
            heartbeat_interval=heartbeat_interval,
            container_labels=parse_pairs(container_label, "--container-label"),
            start_threads=start_threads,
            stop_threads=stop_threads,
            log_streams=log_streams,
            leave_on_terminate=leave_on_terminate,
            leave_timeout=leave_timeout,
            master_user=master_user,
            network=network,
            advertise_addr=advertise_addr,
            dns_upstreams=[parse_upstream(u) for u in dns_upstream or ()],
            cleanup=cleanup,
        )
    except ValidationError as exc:
        usage_error(f"invalid worker settings: {describe_errors(exc)}")
    setup_logging(log_level.value)
    from worker.agent import serve

    _run_daemon(lambda: serve(settings), settings.amqp_url)


def parse_upstream(text: str) -> tuple[str, int]:
    """`IP` or `IP:PORT` (--dns-upstream) as (ip, port); a usage error otherwise."""
    host, _, port = text.partition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port or 53)
        if not 0 < number < 65536:
            raise ValueError(port)
    except ValueError:
        usage_error(f"--dns-upstream {text!r}: give an IPv4 address, optionally :PORT")
    return host, number


def _run_daemon(serve: Callable[[], None], amqp: str) -> None:
    """Run a daemon; a fault an operator must fix ends it with one clear line, not a trace."""
    from bus.errors import BusError
    from worker.hostnet import HostNetError
    from worker.identity import IdentityError
    from worker.runtime import RuntimeUnavailable

    try:
        with contextlib.suppress(KeyboardInterrupt):
            serve()
    except BusError as exc:
        message = scrub(str(exc), amqp)
        fail(message if redact_url(amqp) in message else f"{message} ({redact_url(amqp)})")
    except RuntimeUnavailable as exc:
        fail(f"the Docker engine does not answer: {exc}; start it (scripts/bootstrap.sh)")
    except IdentityError as exc:
        fail(str(exc))
    except HostNetError as exc:
        fail(f"the cluster network cannot be set up: {exc} (--advertise-addr, or --no-network)")


def register_daemons(app: typer.Typer) -> None:
    app.command()(master)
    app.command()(worker)
