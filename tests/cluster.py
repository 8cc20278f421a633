"""A real local cluster for integration and chaos tests: a master and workers as processes.

Each cluster lives on its own vhost, names its nodes after a run id, and tags
every container it makes with `corral.test-run`; `close()` stops its
processes (by PID) and removes its containers (by label).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import docker.errors

from bus import Bus
from corral import Client
from corral.errors import NoCluster, NoMaster
from tests.accounts import accounts_of, as_user
from worker.hostnet import Firewall, HostNetError

T = TypeVar("T")
LEAD_PATTERN = re.compile(r"takes the lead with epoch (\d+)")
RUN_LABEL = "corral-test-run"

# Each cluster gets a cluster CIDR of its own (a /20: 16 nodes of a /24), so that live
# clusters never make bridges with the same subnet: each xdist process picks among 16 of
# its own, one that no live cluster of its holds and no Docker network overlaps (a
# cluster's bridges are removed when it closes).
TEST_CIDRS = list(ipaddress.IPv4Network("10.212.0.0/14").subnets(new_prefix=20))
CIDRS_PER_PROCESS = 16
_clusters = itertools.count()
_cidrs_in_use: set[str] = set()
# Nothing listens there: names the cluster does not know fail at once, and no test
# container's query ever leaves this machine.
NO_UPSTREAM = "127.0.0.1:9"


def pick_cidr(engine: Any) -> str:
    """A free test CIDR of this process's share; released by `Cluster.close`."""
    process = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(process[2:]) if process[2:].isdigit() else 0
    base = index * CIDRS_PER_PROCESS % len(TEST_CIDRS)
    taken = [
        ipaddress.IPv4Network(pool["Subnet"])
        for network in engine.networks.list()
        for pool in (network.attrs.get("IPAM") or {}).get("Config") or []
        if ":" not in pool.get("Subnet", ":")
    ]
    start = next(_clusters)  # in turn: a CIDR just freed is taken last
    for step in range(CIDRS_PER_PROCESS):
        cidr = TEST_CIDRS[base + (start + step) % CIDRS_PER_PROCESS]
        if str(cidr) not in _cidrs_in_use and not any(cidr.overlaps(net) for net in taken):
            _cidrs_in_use.add(str(cidr))
            return str(cidr)
    raise RuntimeError(f"no free test CIDR among {CIDRS_PER_PROCESS} of process {process}")


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:g} s waiting for {what or probe}: last {last!r}"
    )


@contextmanager
def running_cluster(
    amqp_url: str, workdir: Path, *, workers: int = 3, master_extra: tuple[str, ...] = ()
) -> Iterator[Cluster]:
    """A master (with `master_extra` options) and workers w1..wN, all ready; closed after,
    its logs printed (pytest shows them when the test failed)."""
    cluster = Cluster(amqp_url, workdir)
    try:
        cluster.start_master(extra=master_extra)
        for index in range(1, workers + 1):
            cluster.start_worker(f"w{index}")
        cluster.wait_nodes_ready(workers)
        yield cluster
    finally:
        print(cluster.logs())
        cluster.close()


class Cluster:
    def __init__(self, amqp_url: str, workdir: Path) -> None:
        self.amqp_url = amqp_url
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._client: Client | None = None
        # The role users (tests.accounts) when `amqp_url` is a test master's: workers then
        # log in as worker-<node id>, clients as an admin user. Else all share the URL.
        self.accounts = accounts_of(amqp_url)
        self._worker_nodes: list[str] = []
        self.cidr = pick_cidr(self.docker)

    @property
    def client_url(self) -> str:
        """The URL clients (the SDK, the CLI) use: the admin user's, or the cluster's."""
        if self.accounts is None:
            return self.amqp_url
        return as_user(self.amqp_url, *self.accounts[0].admin_login())

    @property
    def client_role(self) -> str | None:
        return "admin" if self.accounts is not None else None

    # -- processes --

    def node_id(self, name: str) -> str:
        return f"t{self.run_id}-{name}"

    def _spawn(self, name: str, args: list[str], url: str | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [sys.executable, "-m", "corral", *args, "--amqp", url or self.amqp_url],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.processes[name] = process
        return process

    def start_master(
        self, name: str = "master", *, dead_after: float = 3.0, extra: tuple[str, ...] = ()
    ) -> None:
        suspect_after = min(2.0, dead_after)
        self._spawn(
            name,
            [
                "master",
                "--name",
                name,
                "--suspect-after",
                str(suspect_after),
                "--dead-after",
                str(dead_after),
                *(("--cluster-cidr", self.cidr) if "--cluster-cidr" not in extra else ()),
                *extra,
            ],
        )

    def leaders(self) -> dict[str, int]:
        """Each running master that took the lead, with its newest epoch (from its own log)."""
        found = {}
        for name, process in self.processes.items():
            path = self.workdir / f"{name}.log"
            if process.poll() is not None or not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                match = LEAD_PATTERN.search(line)
                if match:
                    found[name] = int(match.group(1))
        return found

    def active_master(self, *, after: int = -1, timeout: float = 20.0) -> tuple[str, int]:
        """The running master that leads now (the highest epoch claimed), newer than `after`."""

        def newest() -> tuple[str, int] | None:
            leaders = self.leaders()
            if not leaders:
                return None
            name, epoch = max(leaders.items(), key=lambda item: item[1])
            return (name, epoch) if epoch > after else None

        return wait_until(newest, timeout=timeout, what=f"a leader with an epoch above {after}")

    def signal(self, name: str, signum: int) -> None:
        self.processes[name].send_signal(signum)

    def rss(self, name: str) -> int:
        """Resident memory of one of our processes, in bytes (Linux /proc)."""
        status = Path(f"/proc/{self.processes[name].pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) * 1024

    def start_worker(
        self,
        name: str,
        *,
        cpus: float = 2,
        memory: str = "1g",
        labels: tuple[str, ...] = (),
        start_threads: int = 8,
        dns_upstream: str = NO_UPSTREAM,
        extra: tuple[str, ...] = (),
    ) -> None:
        args = [
            "worker",
            "--node-id",
            self.node_id(name),
            "--cpus",
            str(cpus),
            "--memory",
            memory,
            "--state-dir",
            str(self.workdir / name),
            "--container-label",
            f"{RUN_LABEL}={self.run_id}",
            "--start-threads",
            str(start_threads),
            "--dns-upstream",
            dns_upstream,
            *extra,
        ]
        for label in labels:
            args += ["--label", label]
        url = None
        if self.accounts is not None:
            accounts, vhost = self.accounts
            url = as_user(self.amqp_url, *accounts.worker_login(vhost, self.node_id(name)))
            args += ["--master-user", accounts.master.user]
            self._worker_nodes.append(self.node_id(name))
        self._spawn(name, args, url)

    def declare_topology(self) -> None:
        """As `corral admin bootstrap` does: Corral's exchanges and queues exist before any
        process starts (workers only declare their own queues, and would wait for them)."""
        bus = Bus(self.amqp_url, name="tests (topology)", max_backoff=1.0)
        try:
            bus.connect(attempts=5)
        finally:
            bus.close()

    def stop(self, name: str, *, hard: bool = False) -> None:
        """SIGTERM (or SIGKILL if `hard`) one of our processes and wait for it."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def start(self, workers: int = 2, *, dead_after: float = 3.0, **worker_options: Any) -> Cluster:
        self.declare_topology()
        self.start_master(dead_after=dead_after)
        for index in range(1, workers + 1):
            self.start_worker(f"w{index}", **worker_options)
        self.wait_nodes_ready(workers)
        return self

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        for name in list(self.processes):
            self.stop(name)
        for container in self.containers():
            container.remove(force=True)
        for network in self.docker.networks.list(filters={"label": f"{RUN_LABEL}={self.run_id}"}):
            with contextlib.suppress(docker.errors.APIError):
                network.remove()
        with contextlib.suppress(HostNetError):
            Firewall(self.cidr).remove()
        _cidrs_in_use.discard(self.cidr)
        self.docker.close()
        if self.accounts is not None:
            for node_id in self._worker_nodes:
                self.accounts[0].remove_worker(node_id)

    # -- views --

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.client_url, timeout=10, role=self.client_role)
        return self._client

    @property
    def docker(self) -> Any:
        import docker

        if not hasattr(self, "_docker"):
            self._docker = docker.from_env()
        return self._docker

    def containers(self, job: str | None = None, *, all: bool = True) -> list[Any]:
        """The run's containers (of `job`); `all=False`: those running, not paused (a warm
        standby, master/standby.py, is paused until it is needed)."""
        filters: dict[str, Any] = {"label": [f"{RUN_LABEL}={self.run_id}"]}
        if job is not None:
            filters["label"].append(f"corral.job={job}")
        if not all:
            filters["status"] = "running"
        import docker.errors

        for _ in range(5):  # a container may vanish between docker's list and its inspect
            try:
                return list(self.docker.containers.list(all=True, filters=filters))
            except docker.errors.NotFound:
                continue
        return list(self.docker.containers.list(all=True, filters=filters))

    def wait_nodes_ready(self, count: int, timeout: float = 30.0) -> None:
        def ready() -> bool:
            try:
                nodes = self.client.nodes()
            except (NoMaster, NoCluster):  # the master is still starting
                return False
            return sum(1 for n in nodes if n.state == "ready") >= count

        wait_until(ready, timeout=timeout, what=f"{count} ready nodes")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "corral", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={
                **os.environ,
                "CORRAL_AMQP_URL": self.client_url,
                **({"CORRAL_ROLE": self.client_role} if self.client_role else {}),
            },
        )

    def logs(self) -> str:
        """Every process log, for a failing test's report."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"----- {path.name} -----\n{text[-6000:]}")
        return "\n".join(parts)
