"""How fast a lost master is replaced: kill -9 of the active master, again and again.

    python -m bench.failover [--kills 12] [--write docs/benchmarks.md]

Runs three masters and one worker (as processes) on a fresh vhost. Each round
kills the active master with SIGKILL, submits a small batch job at once, and
measures two times from the kill:

- until a master accepts the submission (the client gets its reply);
- until that master's first assignment reaches the worker's queue (a tap on
  `corral.assignments`, carrying the new epoch).

The killed master is started again, so three masters run in every round. The
baseline, measured in the same run with no kill, is the same submission ->
reply and submission -> assignment with a healthy leader. Correctness is
asserted (each job exists exactly once, every new epoch is higher, every job
completes); timing never is.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.report import replace_section
from bench.vhosts import drop_vhost
from bus import topology
from corral import Client
from corral.errors import ApiFailure, CorralError
from schemas.envelope import decode
from schemas.messages import StartTask
from tests.cluster import Cluster, wait_until
from tests.conftest import TEST_IMAGE, Broker
from tests.rawamqp import Tap


def spec(name: str) -> dict[str, object]:
    return {
        "name": name,
        "image": TEST_IMAGE,
        "command": ["true"],
        "kind": "batch",
        "cpu": 0.05,
        "memory": "16m",
        "stop_grace": 0,
    }


def submit(client: Client, name: str, deadline: float) -> float:
    """Submit until a master takes it; the time it was accepted (perf_counter)."""
    while time.monotonic() < deadline:
        try:
            client.submit(spec(name))
            return time.perf_counter()
        except ApiFailure as failure:
            if failure.code == "conflict":  # an earlier try got through
                return time.perf_counter()
            raise
        except CorralError:
            time.sleep(0.01)
    raise AssertionError(f"no master accepted {name}")


def assigned(tap: Tap, name: str, after_epoch: int) -> float:
    def wanted(body: bytes) -> bool:
        message = decode(body)
        payload = message.payload
        return (
            isinstance(payload, StartTask)
            and payload.job_id == name
            and (message.envelope.epoch or 0) > after_epoch
        )

    tap.first(wanted, timeout=30)
    return time.perf_counter()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--management", default="http://127.0.0.1:15672")
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()

    broker = Broker(args.amqp, args.management)
    vhost = f"corral-bench-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(broker.create_vhost(vhost), Path(tempfile.mkdtemp(prefix="corral-bench-")))
    accept, assign, base_accept, base_assign = [], [], [], []
    names: list[str] = []
    try:
        for name in ("m1", "m2", "m3"):
            cluster.start_master(name)
        cluster.start_worker("w1", cpus=16, memory="8g")
        cluster.wait_nodes_ready(1)
        client = Client(cluster.amqp_url, timeout=10)
        tap = Tap(cluster.amqp_url, topology.ASSIGN_EXCHANGE, cluster.node_id("w1"))
        _, epoch = cluster.active_master()
        for index in range(args.kills):
            name = f"base{index}"
            names.append(name)
            started = time.perf_counter()
            base_accept.append(submit(client, name, time.monotonic() + 30) - started)
            base_assign.append(assigned(tap, name, epoch - 1) - started)

            leader, epoch = cluster.active_master()
            cluster.stop(leader, hard=True)
            killed = time.perf_counter()
            name = f"kill{index}"
            names.append(name)
            accept.append(submit(client, name, time.monotonic() + 30) - killed)
            assign.append(assigned(tap, name, epoch) - killed)
            new_leader, new_epoch = cluster.active_master(after=epoch)
            assert new_leader != leader and new_epoch > epoch
            epoch = new_epoch
            cluster.start_master(leader)  # three masters again
            time.sleep(1.0)  # it catches up as a standby
            print(
                f"kill {index + 1}: accepted after {accept[-1]:.2f} s, "
                f"first assignment after {assign[-1]:.2f} s"
            )

        def complete() -> bool:
            jobs = {job.job_id: job.state for job in client.jobs()}
            return all(jobs.get(name) == "complete" for name in names)

        wait_until(complete, timeout=120, what="every job complete")
        counted = [job.job_id for job in client.jobs()]
        assert all(counted.count(name) == 1 for name in names)
        tap.close()
        client.close()
    finally:
        print(cluster.logs()[-3000:] if not accept else "")
        cluster.close()
        drop_vhost(broker, vhost)
        broker.close()  # the role users it made

    def row(what: str, base: list[float], failed: list[float]) -> str:
        b50, f50, f95 = statistics.median(base), statistics.median(failed), percentile(failed, 0.95)
        return (
            f"| {what} | {b50 * 1000:.0f} ms | {f50 * 1000:.0f} ms | {f95 * 1000:.0f} ms "
            f"| {max(failed) * 1000:.0f} ms | {f50 / b50:.0f}x | p95 < 2000 ms |"
        )

    table = "\n".join(
        [
            "| from the kill -9 until | no kill (baseline), median | failover, median "
            "| failover, p95 | failover, max | median ratio | target |",
            "|---|---|---|---|---|---|---|",
            row("a master accepts a submission", base_accept, accept),
            row("its first assignment reaches the worker's queue", base_assign, assign),
        ]
    )
    print(table)
    if args.write is not None:
        section = (
            "## Master failover (kill -9 of the active master)\n\n"
            f"{args.kills} kills of the active master, three masters and one worker, with:\n\n"
            "    python -m bench.failover --write docs/benchmarks.md\n\n"
            f"{table}\n\n"
            "The baseline is the same submission with a healthy leader (from the submit, not\n"
            "from a kill). Every job is checked to exist exactly once and to complete, and\n"
            "every new leader's epoch to be higher than the last.\n"
        )
        replace_section(args.write, "## Master failover", section)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
