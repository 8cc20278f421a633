"""The web dashboard over a large cluster: its CPU and memory, and whether the page keeps up.

    python -m bench.dashboard [--nodes 1000] [--tasks 20000] [--jobs 20] [--step 200]
                              [--seconds 30] [--churn 100] [--samples 10] [--no-browser]
                              [--quick]
                              [--write docs/benchmarks.md]

On a fresh vhost: an active master and a standby (journal on) and a simulated fleet of
`--nodes` nodes (bench/fleet.py), running `--jobs` services of `--tasks / --jobs`
replicas (grown `--step` replicas at a time). Then, in turn:

1. `corral.live.LiveCluster` alone, in this process: the time to its first complete
   view, the memory it added, what a `view()` costs;
2. `corral dashboard` as a process: the time until /api/state shows every task, then one
   event stream reader (as a browser's EventSource) and a headless Chromium on the page
   (selenium; `--no-browser` leaves it out): the time until the page shows every task;
3. two windows of `--seconds`: idle, then churning (a service scaled down by `--churn`
   replicas and back up each second, so about `--churn` task changes a second). In each:
   the dashboard's CPU (user + system seconds per wall second, /proc/PID/stat), its
   peak RSS (VmRSS), the live model's thread in this process; the time to fetch / and
   /api/state; the delay from scaling a probe job (0 <-> 1 replica) and from the task's
   status event (its `sent_at`, on this machine's clock) until the task's row arrives on
   the event stream; the page's script round trip.

Correctness is asserted: the dashboard, the live model and the master agree on the
nodes (all ready) and the tasks by state, after the load and again after the churn
(once the replicas are back). Timing never is. `--quick`: 100 nodes, 2,000 tasks, 10 s
windows (a smoke test; writes nothing unless `--write` is given).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.dashboard_probes import (
    PROBE,
    Browser,
    Churn,
    Meter,
    Stream,
    Usage,
    fetch_times,
    ms,
    probe_delays,
    rss,
    say,
)
from bench.fleet import BenchCluster
from bench.heartbeats import cpu_seconds
from bench.placement import spec
from bench.report import replace_section
from bench.suite import machine
from corral import Client
from corral.live import LiveCluster, View
from tests.cluster import Cluster, wait_until
from tests.conftest import Broker

SECTION = "## Dashboard (a simulated fleet of 1,000 nodes, 20,000 tasks)"
MiB = 1024**2


def submit_in_steps(bench: BenchCluster, jobs: int, replicas: int, step: int) -> None:
    """`jobs` services of `replicas`, grown `step` replicas at a time, each step running on
    the fleet before the next: the master's placement of 20,000 tasks at once stalls it
    for seconds (bench.placement measures that), which is not what this measures."""
    client = bench.cluster.client
    for size in range(step, replicas + step, step):
        size = min(size, replicas)
        for index in range(jobs):
            if size <= step:
                client.submit(spec(f"j{index}", size))
            else:
                client.scale(f"j{index}", size)
        wanted = jobs * size
        wait_until(
            functools.partial(fleet_runs, bench, wanted),
            timeout=600,
            what=f"{wanted} tasks running",
        )


def fleet_runs(bench: BenchCluster, tasks: int) -> bool:
    return bench.report()["running"] >= tasks


def master_tasks(client: Client) -> Counter[str]:
    """The current attempt of each slot, by state, as the master lists them."""
    return Counter(task.state for task in client.tasks(current=True))


def agree(cluster: Cluster, live: LiveCluster, base: str, nodes: int, timeout: float) -> float:
    """Wait until the dashboard, the live model and the master count the same tasks by
    state and every node ready; the seconds it took. AssertionError naming the three
    counts otherwise (they are also printed every 10 s while they differ)."""
    started = time.monotonic()
    said = started

    def same() -> bool:
        nonlocal said
        with Client(cluster.client_url, timeout=120, role=cluster.client_role) as client:
            master = dict(master_tasks(client))
            ready = sum(node.state == "ready" for node in client.nodes())
        summary = httpx.get(base + "/api/state", timeout=60).json()["summary"]
        view = live.view()
        if (
            master == summary["tasks"] == dict(view.task_counts)
            and ready == nodes
            and summary["nodes"] == {"ready": nodes} == dict(view.node_counts)
        ):
            return True
        counts = f"master {master}, dashboard {summary['tasks']}, live model {view.task_counts}"
        if time.monotonic() - said >= 10:
            say(f"the counts differ: {counts}")
            said = time.monotonic()
        if time.monotonic() - started > timeout:
            raise AssertionError(f"the counts never agreed: {counts}")
        return False

    wait_until(same, timeout=timeout + 60, interval=1.0, what="the same counts everywhere")
    return time.monotonic() - started


def window(ctx: dict[str, Any], seconds: float, churn: int, samples: int) -> dict[str, Any]:
    """One measuring window (with `churn` replicas moved a second, or idle)."""
    args = ctx["args"]
    meter = Meter({"dashboard": ctx["dashboard"].pid, "master": ctx["master"]}, ctx["live_threads"])
    started = time.monotonic()
    churner = Churn(ctx["cluster"], args.jobs, args.tasks // args.jobs, churn) if churn else None
    result: dict[str, Any] = {}
    say(f"window: {'churning ' + str(churn) + ' replicas a second' if churn else 'idle'}")
    result["page"], _ = fetch_times(ctx["base"], "/", samples)
    result["state"], result["state_bytes"] = fetch_times(ctx["base"], "/api/state", samples)
    say(f"GET /: {ms(result['page'])}, GET /api/state: {ms(result['state'])}")
    result |= probe_delays(ctx["cluster"], ctx["stream"], 2 * samples)
    browser = ctx.get("browser")
    result["script"] = browser.round_trips(2 * samples) if browser else []
    time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    if churner is not None:
        churner.stop()
        result["rate"] = churner.changes / (time.monotonic() - started)
    result["usage"] = meter.finish()
    result["seconds"] = time.monotonic() - started
    result["heap"] = browser.heap() if browser else 0
    say(f"window done: {usage_cells(result['usage'])} (dashboard CPU, RSS, live thread CPU)")
    return result


def start_dashboard(cluster: Cluster, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "CORRAL_ROLE": cluster.client_role or ""}
    if not cluster.client_role:
        env.pop("CORRAL_ROLE")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "corral", "dashboard"),
            *("--listen", f"127.0.0.1:{port}", "--amqp", cluster.client_url),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "dashboard.log", "wb"),  # noqa: SIM115 (the process keeps it)
        env=env,
    )
    return process, f"http://127.0.0.1:{port}"


def shows_all(base: str, tasks: int, nodes: int) -> bool:
    try:
        state = httpx.get(base + "/api/state", timeout=60).json()
    except (httpx.HTTPError, ValueError):
        return False
    return (
        len(state.get("tasks", [])) == tasks
        and state["summary"]["tasks"].get("running") == tasks
        and state["summary"]["nodes"] == {"ready": nodes}
        and len(state["nodes"]) == nodes
    )


def load_live(cluster: Cluster, tasks: int, nodes: int) -> tuple[LiveCluster, dict[str, float]]:
    """LiveCluster in this process: until it shows every task and node."""
    before = rss()
    live = LiveCluster(lambda: Client(cluster.client_url, timeout=120, role=cluster.client_role))
    started = time.monotonic()
    live.start()
    view: View = live.view()
    while not (view.task_counts.get("running") == tasks and len(view.nodes) == nodes):
        assert time.monotonic() - started < 300, f"the live model never showed it all: {view}"
        view = live.wait(view.version, 1.0)
    loaded = time.monotonic() - started
    calls = 10000
    clock = time.perf_counter()
    for _ in range(calls):
        live.view()
    per_view = (time.perf_counter() - clock) / calls
    return live, {"load": loaded, "rss": rss() - before, "view": per_view}


def measure(broker: Broker, args: argparse.Namespace) -> dict[str, Any]:
    with BenchCluster(broker, nodes=args.nodes) as bench:
        cluster = bench.cluster
        submit_in_steps(bench, args.jobs, args.tasks // args.jobs, args.step)
        cluster.client.submit(spec(PROBE, 0))
        cluster.client.close()  # idle from now on: it would miss its heartbeats
        say(f"{args.tasks} tasks running on {args.nodes} nodes")
        live, alone = load_live(cluster, args.tasks, args.nodes)
        say(f"live model: all shown after {alone['load']:.1f} s")
        started = time.monotonic()
        dashboard, base = start_dashboard(cluster, bench.workdir)
        ctx: dict[str, Any] = {"args": args, "cluster": cluster, "dashboard": dashboard}
        threads = {"live": live._thread, "live reader": live._reader}
        ctx["base"] = base
        ctx["master"] = cluster.processes[bench.active].pid
        ctx["live_threads"] = {
            name: t.native_id for name, t in threads.items() if t and t.native_id
        }
        try:
            wait_until(
                lambda: shows_all(base, args.tasks, args.nodes),
                timeout=300,
                interval=1.0,
                what="the dashboard showing every task",
            )
            load = {
                "seconds": time.monotonic() - started,
                "cpu": cpu_seconds(dashboard.pid),
                "rss": rss(dashboard.pid),
            }
            say(f"dashboard: all shown after {load['seconds']:.1f} s, {load['cpu']:.1f} CPU s")
            agree(cluster, live, base, args.nodes, timeout=60)
            ctx["stream"] = Stream(base, PROBE)
            if args.browser:
                ctx["browser"] = Browser()
                load["page"] = ctx["browser"].open(base + "/", f"tasks: {args.tasks} running")
                say(f"browser: all shown after {load['page']:.1f} s")
            idle = window(ctx, args.seconds, 0, args.samples)
            churn = window(ctx, args.seconds, args.churn, args.samples)
            agreed = agree(cluster, live, base, args.nodes, timeout=180)
            say(f"the dashboard, the live model and the master agree ({agreed:.0f} s)")
            return {"alone": alone, "load": load, "idle": idle, "churn": churn, "agreed": agreed}
        finally:
            if "browser" in ctx:
                ctx["browser"].close()
            if "stream" in ctx:
                ctx["stream"].close()
            dashboard.terminate()
            dashboard.wait(timeout=30)
            live.stop()


def usage_cells(usage: dict[str, Usage]) -> str:
    board, master = usage["dashboard"], usage["master"]
    live = sum(used.cpu for name, used in usage.items() if name.startswith("live"))
    return f"{board.cpu:.1%} | {board.rss / MiB:,.0f} MiB | {live:.1%} | {master.cpu:.0%}"


def table(figures: dict[str, Any], args: argparse.Namespace) -> str:
    load, idle, churn = (figures[k] for k in ("load", "idle", "churn"))
    rate = churn.get("rate", 0.0)
    lines = [
        "| window | dashboard CPU (of one core) | dashboard RSS (peak) | live model threads"
        " CPU | active master CPU |",
        "|---|---|---|---|---|",
        f"| start: until /api/state shows all {args.tasks:,} tasks, {load['seconds']:.1f} s"
        f" | {load['cpu']:.1f} CPU seconds | {load['rss'] / MiB:,.0f} MiB | - | - |",
        f"| idle, {idle['seconds']:.0f} s | {usage_cells(idle['usage'])} |",
        f"| churn: {rate:,.0f} task changes/s, {churn['seconds']:.0f} s"
        f" | {usage_cells(churn['usage'])} |",
        "",
        "| responsiveness (median / p95) | idle | churn |",
        "|---|---|---|",
        f"| GET / (the page) | {ms(idle['page'])} | {ms(churn['page'])} |",
        f"| GET /api/state ({idle['state_bytes'] / MiB:.1f} MiB of JSON)"
        f" | {ms(idle['state'])} | {ms(churn['state'])} |",
        f"| scale request -> the master's answer | {ms(idle['answer'])} | {ms(churn['answer'])} |",
        f"| scale request -> the task's row on the event stream | {ms(idle['scale'])}"
        f" | {ms(churn['scale'])} |",
        f"| status event sent -> the task's row on the event stream | {ms(idle['event'])}"
        f" | {ms(churn['event'])} |",
        f"| the page's script round trip (headless Chromium) | {ms(idle['script'])}"
        f" | {ms(churn['script'])} |",
    ]
    return "\n".join(lines)


def summary(figures: dict[str, Any]) -> str:
    """The page's and the live model's own figures, as a paragraph."""
    load, idle, churn, alone = (figures[k] for k in ("load", "idle", "churn", "alone"))
    page = f"{load['page']:.1f} s" if "page" in load else "-"
    text = (
        f"The page showed every task {page} after it was opened; its JavaScript heap was"
        f" {idle['heap'] / MiB:.0f} MiB idle, {churn['heap'] / MiB:.0f} MiB after the churn."
        f" `LiveCluster` alone (in the benchmark's process): its first complete view after"
        f" {alone['load']:.1f} s, about {alone['rss'] / MiB:,.0f} MiB more resident memory,"
        f" `view()` {alone['view'] * 1e6:.1f} µs. After the churn, the dashboard, the live"
        f" model and the master counted the same tasks by state {figures['agreed']:.0f} s"
        " after it stopped."
    )
    return wrap(text)


def wrap(text: str) -> str:
    """A paragraph of the document: lines of at most 88 characters."""
    return textwrap.fill(text, 88, break_on_hyphens=False)


NOTES = (
    "The delay from the status event is what the dashboard adds: the live model applies"
    " an event as it arrives (a new View at once after a quiet spell, at most every 0.1 s"
    " in a burst) and the dashboard's hub sends changes at most every 0.3 s. The delay"
    " from the scale request adds the master's answer, its placement and the fleet's"
    " report: under churn the probe's requests wait at the active master behind the"
    " churn's (the answer row), and the churn itself goes no faster than the master"
    " answers. Listings are read on the live model's reader thread, so a slow one never"
    " holds the events up; idle, the model reads only the nodes, masters and (up to 500)"
    " jobs every 5 s, and everything again every minute, or ten times as long as that"
    " listing took."
)


def write(path: Path, body: str, args: argparse.Namespace, load: float) -> None:
    intro = (
        f"Measured {datetime.date.today().isoformat()} on {machine()} (load average"
        f" {load:.1f} before). An active master and a standby (journal on), {args.nodes:,}"
        f" simulated nodes in a process of their own, {args.jobs} services of"
        f" {args.tasks // args.jobs:,} replicas (grown {args.step} at a time);"
        " `corral dashboard` as a process with one"
        " event-stream reader and one headless Chromium on the page, and the live model"
        " (`corral.live.LiveCluster`) in the benchmark's process. Each window is at least"
        f" {args.seconds:.0f} s (the probes may make it longer); the churn scales a service"
        f" down by {args.churn} replicas, then back, a request a second. The run asserts"
        " that the dashboard, the live model and the master count the same nodes and tasks"
        " by state, after the start and after the churn."
    )
    section = (
        f"{SECTION}\n\n"
        f"    python -m bench.dashboard --nodes {args.nodes} --tasks {args.tasks} "
        "--write docs/benchmarks.md\n\n"
        f"{wrap(intro)}\n\n{body}\n\n{wrap(NOTES)}\n"
    )
    replace_section(path, SECTION, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--management", default="http://127.0.0.1:15672")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--churn", type=int, default=100, help="replicas moved a second")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--step", type=int, default=200, help="replicas added per round")
    parser.add_argument("--no-browser", dest="browser", action="store_false")
    parser.add_argument("--quick", action="store_true", help="100 nodes, 2,000 tasks, 10 s")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.tasks, args.jobs, args.seconds = 100, 2000, 10, 10.0
        args.churn, args.samples, args.step = 10, 4, 100
    args.browser = args.browser and Browser.available()
    broker = Broker(args.amqp, args.management)
    load = os.getloadavg()[0]
    try:
        figures = measure(broker, args)
    finally:
        broker.close()
    body = f"{table(figures, args)}\n\n{summary(figures)}"
    print(body)
    if args.write is not None:
        write(args.write, body, args, load)


if __name__ == "__main__":
    main()
