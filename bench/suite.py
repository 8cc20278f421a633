"""Every benchmark of issue 10, one after the other, into docs/benchmarks.md.

    ./scripts/bench.sh [--only a,c] [--quick]        (= python -m bench.suite, after the
                                                      bootstrap and the venv)

| | benchmark | module |
|---|---|---|
| a | placement throughput: 1,000 simulated nodes, 20,000 tasks, two shapes | bench.placement |
| b | heartbeat capacity: an idle simulated fleet, 1 Hz and adaptive | bench.heartbeats |
| b | what a worker costs the broker, and the fleet one broker node holds | bench.footprint |
| c | the master's scaling curve, with its plot (docs/scaling.png) | bench.curve |
| d, e | submit -> running and 200 container starts, against raw docker-py | bench.start_latency |
| f | failover: kill -9 of the active master; host loss | bench.failover, bench.hostloss |

Each runs as a process of its own and replaces its own section of the document (the
others stay); each asserts its own correctness and exits non-zero if it fails, and the
suite then goes on with the next and exits non-zero at the end. This writes the head of
the document: the command, the machine and the date. `--quick` runs smaller sizes (a
smoke test of the suite: minutes, not an hour); its figures are not written.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.report import replace_head

DOC = Path("docs/benchmarks.md")

# (key, what, full arguments, quick arguments): `--write` is added to the full ones.
BENCHMARKS: list[tuple[str, str, list[str], list[str]]] = [
    (
        "d",
        "submit -> running and container starts (real Docker)",
        ["bench.start_latency"],
        ["bench.start_latency", "--rounds", "3", "--burst", "8"],
    ),
    (
        "a",
        "placement throughput",
        ["bench.placement"],
        ["bench.placement", "--nodes", "50", "--tasks", "500", "--jobs", "5"],
    ),
    (
        "b",
        "heartbeat capacity",
        ["bench.heartbeats"],
        ["bench.heartbeats", "--nodes", "100", "--seconds", "5"],
    ),
    (
        "b",
        "broker footprint per worker",
        ["bench.footprint"],
        ["bench.footprint", "--nodes", "100"],
    ),
    (
        "c",
        "scaling curve",
        ["bench.curve", "--plot", "docs/scaling.png"],
        ["bench.curve", "--nodes", "100,1000", "--tasks", "1000,10000", "--rounds", "1"],
    ),
    ("f", "master failover", ["bench.failover"], ["bench.failover", "--kills", "2"]),
    ("f", "host loss", ["bench.hostloss"], ["bench.hostloss", "--runs", "2"]),
    ("dashboard", "the web dashboard", ["bench.dashboard"], ["bench.dashboard", "--quick"]),
]


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    versions = []
    for name, argv in (
        ("RabbitMQ", ["rabbitmqctl", "version"]),
        ("Docker", ["docker", "version", "--format", "{{.Server.Version}}"]),
    ):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        versions.append(f"{name} {out or 'unknown'}")
    return (
        f"{cpus} CPUs ({model or 'unknown model'}), {mem_kib / 1024**2:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        + ", ".join(versions)
    )


def head(keys: list[str], minutes: float) -> str:
    today = datetime.date.today().isoformat()
    return (
        "# Benchmarks\n\n"
        "Every figure below comes from one command, on a clean checkout (it installs and\n"
        "starts RabbitMQ and Docker as the test command does):\n\n"
        "    ./scripts/bench.sh\n\n"
        f"Last run: {today}, benchmarks {', '.join(keys)}, {minutes:.0f} minutes, on {machine()}.\n"
        "Each section names the command that measures it alone, and each benchmark checks\n"
        "its own correctness (each task placed once, nothing lost, no false `down`); a\n"
        "figure is never an assertion. Ratios compare with a baseline measured in the same\n"
        "run. Sections without a `bench.suite` benchmark (the soak test, a long history)\n"
        "were measured by the command they name.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="keys to run, e.g. a,c (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes; writes nothing")
    args = parser.parse_args()
    wanted = {"d" if key == "e" else key for key in args.only.split(",")} - {""}  # d, e: one
    started = time.monotonic()
    failed: list[str] = []
    ran: list[str] = []
    for key, what, full, quick in BENCHMARKS:
        if wanted and key not in wanted:
            continue
        argv = [sys.executable, "-m", *(quick if args.quick else [*full, "--write", str(DOC)])]
        print(f"==> {key}: {what}: {' '.join(argv[2:])}", flush=True)
        t0 = time.monotonic()
        code = subprocess.run(argv, check=False).returncode
        print(f"    {key}: exit code {code} after {time.monotonic() - t0:.0f} s", flush=True)
        if code != 0:
            failed.append(f"{key} ({what})")
        if key not in ran:
            ran.append(key)
    minutes = (time.monotonic() - started) / 60
    if not args.quick:
        keys = ["d, e" if key == "d" else key for key in ran]
        replace_head(DOC, head(keys, minutes))
        print(f"==> wrote {DOC}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
