"""A benchmark's cluster on a fresh vhost: an active master and a standby (journal on),
and a simulated fleet (bench/sim.py) in a process of its own, every node ready and the
heartbeat interval settled. Used as a context manager; it stops what it started.

    with BenchCluster(broker, nodes=1000, workdir=path) as bench:
        bench.cluster.client_url, bench.fleet.pid, bench.report()
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from bench.vhosts import drop_vhost
from tests.cluster import Cluster, wait_until
from tests.conftest import Broker

# The leader announces the fleet's heartbeat interval every 5 s; the fleet settles on it.
SETTLE = 12.0


def fleet_report(path: Path) -> dict[str, int]:
    """The simulated fleet's last report (bench/sim.py's --report), or zeros if none yet."""
    try:
        report: dict[str, int] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"running": 0, "distinct": 0, "twice": 0, "beats": 0}
    return report


class BenchCluster:
    def __init__(
        self,
        broker: Broker,
        *,
        nodes: int,
        connections: int = 8,
        workdir: Path | None = None,
        start_delay: float = 0.0,
    ) -> None:
        self.broker = broker
        self.nodes = nodes
        self.connections = connections
        self.start_delay = start_delay
        self.vhost = f"corral-bench-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="corral-bench-"))
        self.report_path = self.workdir / "fleet.json"
        self.cluster = Cluster(broker.create_vhost(self.vhost), self.workdir)
        self.fleet: subprocess.Popen[bytes] | None = None
        self.active = ""

    def __enter__(self) -> BenchCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Masters m1 and m2, then the fleet; returns once every node is ready."""
        cluster = self.cluster
        cluster.declare_topology()
        cluster.start_master("m1")
        cluster.start_master("m2")  # a standby, tailing the journal
        self.fleet = subprocess.Popen(
            [
                sys.executable,
                *("-m", "bench.sim", "--amqp", cluster.amqp_url),
                *("--nodes", str(self.nodes), "--connections", str(self.connections)),
                *("--prefix", f"sim{uuid.uuid4().hex[:4]}", "--cpus", "64", "--memory", "512g"),
                *("--start-delay", str(self.start_delay), "--report", str(self.report_path)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "fleet.log", "wb"),  # noqa: SIM115 (the process keeps it)
        )
        cluster.wait_nodes_ready(self.nodes, timeout=300)
        self.active = wait_until(lambda: next(iter(cluster.leaders()), None), what="a leader")
        time.sleep(SETTLE)

    def report(self) -> dict[str, int]:
        """What the fleet runs now (see bench/sim.py's --report)."""
        return fleet_report(self.report_path)

    def close(self) -> None:
        """Stop the fleet and the masters and delete the vhost, whatever fails."""
        try:
            if self.fleet is not None:
                self.fleet.terminate()
                try:
                    self.fleet.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.fleet.kill()
                    self.fleet.wait()
                self.fleet = None
        finally:
            try:
                self.cluster.close()
            finally:
                drop_vhost(self.broker, self.vhost)
