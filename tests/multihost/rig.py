"""A rig of Docker-in-Docker "hosts" for multi-host tests.

Each host is a container of `local/corral-host` (scripts/host-image.sh) with a network
namespace and a Docker engine of its own, and Corral at /opt/corral (a venv built once
from the wheels of scripts/wheel.sh, `python -m build`'s, mounted read-only); the hosts
share one bridge network of the outer engine, the LAN. The broker stays outside, on this
machine: the hosts reach it at the LAN's gateway address.

    outer machine: RabbitMQ :5672, Corral master (tests/cluster.py)
      |
      +-- LAN (Linux bridge Rig.bridge), 10.249.N.0/24, gateway .1 = Rig.gateway
            |-- host h1 (.2): dockerd (docker0 10.248.255.1/24), corral worker
            |-- host h2 (.3): dockerd (docker0 10.248.255.1/24), corral worker

Everything a rig makes (host containers, their /var/lib/docker volumes, the LAN) is
named `<prefix>-...` with `prefix = corral-rig-<8 hex>` and carries the labels
`corral.rig=<prefix>` and `corral.rig.owner=<pid>:<start time>` of the test process.
`Rig.close()` removes its own by label; a new `Rig` first removes what earlier runs
whose process is gone left behind (a crashed session), never another live run's.

Only the docker CLI is used (no SDK: tests outside worker/runtime.py do not import it).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST_IMAGE = "local/corral-host:latest"
TEST_IMAGE = "local/busybox:latest"
WHEEL_CACHE = Path(os.environ.get("CORRAL_RIG_WHEELS", "/var/cache/corral/wheels"))

LABEL = "corral.rig"  # the run's prefix
OWNER_LABEL = "corral.rig.owner"  # "<pid>:<start time in clock ticks>" of the test process

LAN_RANGE = ipaddress.IPv4Network("10.249.0.0/16")  # one /24 of it per rig
# Clear of Corral's cluster network (10.210.0.0/16 by default) and of the LAN:
INNER_BIP = "10.248.255.1/24"  # each inner engine's docker0
INNER_POOL = "base=10.247.0.0/16,size=24"  # the inner engines' own user-defined networks

DOCKERD_READY_S = 60.0
STOP_WORKER_S = 15.0

# The host's PID 1 (under docker-init). Cgroups: Docker mounts the host container's own
# cgroup read-only. On a cgroup v1 machine each hierarchy is made writable again, so the
# inner engine nests its containers' cgroups under the host's and CPU and memory limits
# work. On a pure cgroup v2 machine (private cgroupns) the host's processes move to a
# child group so that the controllers can be delegated (as moby's hack/dind does).
# /proc/sys is writable so that the inner dockerd can set its sysctls.
_ENTRY = """
set -e
mount -o remount,rw /proc/sys
mount -o remount,rw /sys
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mount -o remount,rw /sys/fs/cgroup
    mkdir -p /sys/fs/cgroup/init
    xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs || :
    sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers \
        > /sys/fs/cgroup/cgroup.subtree_control
else
    for d in /sys/fs/cgroup/*; do
        if mountpoint -q "$d"; then mount -o remount,bind,rw "$d"; fi
    done
fi
exec dockerd "$@"
"""
_DOCKERD_ARGS = ("--bip", INNER_BIP, "--default-address-pool", INNER_POOL)

# Worker processes: the shell writes its PID, then becomes the worker.
_WORKER = 'echo $$ > "$1"; log=$2; shift 2; exec "$@" > "$log" 2>&1'
_STOP = """
pid=$(cat "$1" 2>/dev/null) || exit 0
kill -TERM "$pid" 2>/dev/null || { rm -f "$1"; exit 0; }
deadline=$(( $(date +%s) + $2 ))
while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then kill -KILL "$pid" 2>/dev/null || :; fi
    sleep 0.1
done
rm -f "$1"
"""
_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")
_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")  # of a URL, in an error message


class RigError(RuntimeError):
    """A docker command of the rig failed; the message carries its stderr."""


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` (output captured, decoded leniently); RigError if `check` and it fails.
    subprocess.TimeoutExpired after `timeout` s (the process is killed)."""
    raw = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout, check=False)
    done = subprocess.CompletedProcess(
        raw.args,
        raw.returncode,
        raw.stdout.decode(errors="replace"),
        raw.stderr.decode(errors="replace"),
    )
    if check and done.returncode != 0:
        shown = _PASSWORD.sub(r"\1***@", shlex.join(argv))
        raise RigError(
            f"{shown[:300]} exited {done.returncode}: {(done.stderr or done.stdout)[-2000:]}"
        )
    return done


def docker(
    *argv: str, check: bool = True, timeout: float = 60, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """The outer engine's CLI."""
    return run(["docker", *argv], check=check, timeout=timeout, input=input)


def broker_url_for(url: str, gateway: str) -> str:
    """`url` (one AMQP URL or several, comma-separated) with each host replaced by
    `gateway`; user, password, port, vhost and query are kept."""
    rewritten = []
    for one in url.split(","):
        parts = urllib.parse.urlsplit(one.strip())
        login, at, _ = parts.netloc.rpartition("@")
        port = f":{parts.port}" if parts.port is not None else ""
        netloc = f"{login}{at}{gateway}{port}"
        rewritten.append(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
    return ",".join(rewritten)


# -- wheels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Wheels:
    """Where the wheels are (scripts/wheel.sh): `root`, its cache, holds the dependencies'
    wheels in `deps` and the corral wheel in `corral` (and the venvs `build_venv` makes of
    them)."""

    root: Path
    deps: Path
    corral: Path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (scripts/wheel.sh takes the same one on the cache's
    .lock): concurrent test processes build a venv once."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_wheels(root: Path = ROOT, cache: Path = WHEEL_CACHE) -> Wheels:
    """The wheel of corral (`python -m build`) and those of its dependencies, from
    scripts/wheel.sh, the same that the compose image installs. It keeps them in `cache`,
    corral's keyed by its sources and the dependencies' by their list, so it blocks for
    a minute or so the first time and for a second or two after."""
    script = root / "scripts" / "wheel.sh"
    done = run(["env", f"CORRAL_WHEEL_CACHE={cache}", "bash", str(script)], timeout=900)
    where = dict(
        line.split("=", 1)
        for line in done.stdout.splitlines()
        if line.startswith(("corral_wheel=", "deps="))
    )
    if set(where) != {"corral_wheel", "deps"}:
        raise RigError(f"{script} did not say where the wheels are:\n{done.stdout[-2000:]}")
    return Wheels(cache, Path(where["deps"]), Path(where["corral_wheel"]).parent)


def build_venv(wheels: Wheels, image: str = HOST_IMAGE) -> Path:
    """A virtualenv for /opt/corral with corral installed from `wheels`, made once in a
    container of `image` (some 15 s) and kept in `wheels.root` beside them: every host
    mounts it read-only at /opt/corral instead of installing the wheels again (some
    12 s each; a copy would still take 5). Keyed by the corral wheel and the image;
    venvs and wheels unused for a day are removed."""
    image_id = docker("image", "inspect", "-f", "{{.Id}}", image).stdout.strip()
    key = f"{wheels.corral.name.removeprefix('corral-')}-{image_id.removeprefix('sha256:')[:12]}"
    venv = wheels.root / f"venv-{key}"
    with _locked(wheels.root / ".lock"):
        if not venv.is_dir():
            _make_venv(wheels, image, venv)
        _prune(wheels.root, keep={venv, wheels.deps, wheels.corral})
    return venv


_INSTALL = """
set -e
python3 -m venv /opt/corral
/opt/corral/bin/pip install -q --disable-pip-version-check --no-index \
    --find-links "$1" --find-links "$2" corral
/opt/corral/bin/corral --help > /dev/null
cp -a /opt/corral/. /out/
"""


def _make_venv(wheels: Wheels, image: str, venv: Path) -> None:
    scratch = Path(tempfile.mkdtemp(dir=wheels.root, prefix=".venv-"))
    try:
        links = [f"/wheels/{d.relative_to(wheels.root)}" for d in (wheels.deps, wheels.corral)]
        docker(
            "run", "--rm", "--network", "none",
            "-v", f"{wheels.root}:/wheels:ro", "-v", f"{scratch}:/out",
            image, "sh", "-c", _INSTALL, "install", *links,
            timeout=600,
        )  # fmt: skip
        scratch.chmod(0o755)
        scratch.rename(venv)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _prune(root: Path, keep: set[Path], max_age: float = 86400) -> None:
    """Remove the wheel and venv directories of `root` but `keep` unused for `max_age` s
    (each use of one of `keep` marks it used)."""
    now = time.time()
    for path in keep:
        os.utime(path)
    for pattern in ("deps-*", "corral-*", "venv-*"):
        for path in root.glob(pattern):
            if path not in keep and now - path.stat().st_mtime > max_age:
                shutil.rmtree(path, ignore_errors=True)


# -- hosts ----------------------------------------------------------------------------


class Host:
    """One host of a rig: a container with its own network namespace and Docker engine.

    `exec` and `docker` block until the command ends (at most `timeout` s) and raise
    RigError if it fails and `check` is set; a worker runs in the background."""

    def __init__(self, name: str, container: str, lan_addr: str) -> None:
        self.name = name
        self.container = container
        self.lan_addr = lan_addr

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.lan_addr})"

    def exec(
        self, *argv: str, check: bool = True, timeout: float = 60, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the host (as root, its PATH), stdin from `input` if given."""
        interactive = ("-i",) if input is not None else ()
        return docker(
            "exec", *interactive, self.container, *argv, check=check, timeout=timeout, input=input
        )

    def docker(
        self, *argv: str, check: bool = True, timeout: float = 60, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The host's own engine's CLI."""
        return self.exec("docker", *argv, check=check, timeout=timeout, input=input)

    @staticmethod
    def _pidfile(node_id: str) -> str:
        return f"/run/corral-worker-{node_id}.pid"

    @staticmethod
    def _logfile(node_id: str) -> str:
        return f"/tmp/worker-{node_id}.log"

    def start_worker(self, node_id: str, amqp_url: str, *args: str) -> None:
        """Start `corral worker --node-id NODE --amqp URL ARGS...` in the background
        (state in /var/lib/corral/NODE unless ARGS say otherwise; output to
        /tmp/worker-NODE.log). Returns once its PID is written, not once it is ready."""
        argv = [
            "/opt/corral/bin/corral",
            "worker",
            "--node-id",
            node_id,
            "--state-dir",
            f"/var/lib/corral/{node_id}",
            "--amqp",
            amqp_url,
            *args,
        ]
        pidfile = self._pidfile(node_id)
        docker(
            "exec",
            "-d",
            "-e",
            "PYTHONUNBUFFERED=1",
            self.container,
            "sh",
            "-c",
            _WORKER,
            "sh",
            pidfile,
            self._logfile(node_id),
            *argv,
        )
        deadline = time.monotonic() + 10
        while self.exec("test", "-s", pidfile, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RigError(f"worker {node_id} on {self.name} wrote no PID to {pidfile}")
            time.sleep(0.05)

    def stop_worker(self, node_id: str, timeout: float = STOP_WORKER_S) -> None:
        """SIGTERM the worker and wait until it is gone (SIGKILL after `timeout` s).
        Nothing happens if it is not running."""
        argv = ("sh", "-c", _STOP, "sh", self._pidfile(node_id), str(int(timeout)))
        self.exec(*argv, timeout=timeout + 15)

    def worker_log(self, node_id: str) -> str:
        """The worker's output so far ("" if it never started or the host is gone)."""
        return self.exec("cat", self._logfile(node_id), check=False).stdout

    def dockerd_log(self) -> str:
        """The inner engine's output (the host container's log)."""
        done = docker("logs", "--tail", "200", self.container, check=False)
        return done.stdout + done.stderr

    def kill(self) -> None:
        """Kill the whole host at once, its engine, containers and workers with it: a lost
        host. The container stays (stopped) until the rig removes it."""
        docker("kill", self.container, check=False)


# -- the rig --------------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), or None if there is none:
    with the PID, it tells a live owner from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _owner() -> str:
    return f"{os.getpid()}:{_process_start(os.getpid())}"


def _owner_alive(owner: str) -> bool:
    pid, _, start = owner.partition(":")
    return pid.isdigit() and _process_start(int(pid)) == start


def remove_labelled(label: str) -> None:
    """Remove the containers (with their anonymous volumes), the volumes and the networks
    carrying `label` (KEY or KEY=VALUE), in that order."""
    found = docker("ps", "-aq", "--filter", f"label={label}").stdout.split()
    if found:
        docker("rm", "-f", "-v", *found, check=False, timeout=120)
    volumes = docker("volume", "ls", "-q", "--filter", f"label={label}").stdout.split()
    if volumes:
        docker("volume", "rm", "-f", *volumes, check=False, timeout=120)
    networks = docker("network", "ls", "-q", "--filter", f"label={label}").stdout.split()
    if networks:
        docker("network", "rm", *networks, check=False)


def remove_leftovers() -> list[str]:
    """Remove what rigs of processes that are gone left behind (containers, volumes,
    networks, work directories); their prefixes."""
    owners: dict[str, str] = {}
    template = f'{{{{.Label "{LABEL}"}}}} {{{{.Label "{OWNER_LABEL}"}}}}'
    for kind in (("ps", "-a"), ("volume", "ls"), ("network", "ls")):
        listed = docker(*kind, "--filter", f"label={LABEL}", "--format", template).stdout
        for line in listed.splitlines():
            prefix, _, owner = line.partition(" ")
            owners.setdefault(prefix, owner)
    workdirs = Path(tempfile.gettempdir()).glob("corral-rig-*-*/owner")
    found = {path.parent: path.read_text().strip() for path in workdirs}
    stale = [prefix for prefix, owner in owners.items() if prefix and not _owner_alive(owner)]
    for prefix in stale:
        remove_labelled(f"{LABEL}={prefix}")
    for workdir, owner in found.items():
        if not _owner_alive(owner):
            shutil.rmtree(workdir, ignore_errors=True)
    return stale


def _routed_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks this machine routes to, and the outer engine's networks."""
    nets = []
    routes = run(["ip", "-o", "-4", "route", "show"], check=False).stdout
    for line in routes.splitlines():
        first = line.split()[0]
        if first != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(first, strict=False))
    ids = docker("network", "ls", "-q").stdout.split()
    if ids:
        subnets = docker(
            "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *ids
        ).stdout
        for subnet in subnets.split():
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(subnet, strict=False))
    return nets


class Rig:
    """A LAN of the outer engine and the hosts on it. Constructing one removes earlier
    runs' leftovers and creates the LAN; `close()` removes everything of this rig.
    `add_host` may be called from several threads at once."""

    def __init__(
        self, wheels: Wheels, *, image: str = HOST_IMAGE, test_image: str = TEST_IMAGE
    ) -> None:
        self.wheels = wheels
        self.image = image
        self.prefix = f"corral-rig-{uuid.uuid4().hex[:8]}"
        self.lan = self.prefix
        self.bridge = f"rig{self.prefix[-8:]}"  # the LAN's Linux bridge (<= 15 characters)
        self.hosts: dict[str, Host] = {}
        self._lock = threading.Lock()
        self._labels = ("--label", f"{LABEL}={self.prefix}", "--label", f"{OWNER_LABEL}={_owner()}")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        (self.workdir / "owner").write_text(_owner())
        try:
            remove_leftovers()
            self.venv = build_venv(wheels, image)
            self.subnet, self.gateway = self._create_lan()
            docker("save", "-o", str(self.workdir / "test-image.tar"), test_image, timeout=120)
        except BaseException:
            self.close()
            raise

    def _create_lan(self) -> tuple[str, str]:
        taken = _routed_networks()
        start = int(self.prefix[-8:], 16)
        candidates = list(LAN_RANGE.subnets(new_prefix=24))
        for index in range(len(candidates)):
            subnet = candidates[(start + index) % len(candidates)]
            if any(subnet.overlaps(net) for net in taken):
                continue
            gateway = str(subnet.network_address + 1)
            created = docker(
                "network", "create", "--driver", "bridge", *self._labels,
                "--subnet", str(subnet), "--gateway", gateway,
                "-o", f"com.docker.network.bridge.name={self.bridge}",
                self.lan, check=False,
            )  # fmt: skip
            if created.returncode == 0:
                return str(subnet), gateway
            if "overlap" not in created.stderr:  # else a concurrent rig took it just now
                raise RigError(f"docker network create {self.lan}: {created.stderr.strip()}")
        raise RigError(f"no free /24 in {LAN_RANGE} for the LAN")

    def add_host(self, name: str) -> Host:
        """Start host `name` and return it once its engine answers and holds the test
        image (some 2 s; Corral is in /opt/corral, read-only, from `build_venv`).
        RigError on failure, after removing what was started."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"host name {name!r}: lowercase letters, digits and '-'")
        container = f"{self.prefix}-{name}"
        with self._lock:
            if name in self.hosts:
                raise ValueError(f"host {name!r} exists already")
            self.hosts[name] = host = Host(name, container, "")
        try:
            self._start(host)
            self._wait_dockerd(host)
            host.docker("load", "-q", "-i", "/rig/test-image.tar", timeout=120)
        except BaseException:
            self.remove_host(host)
            raise
        return host

    def _start(self, host: Host) -> None:
        volume = f"{host.container}-docker"
        docker("volume", "create", *self._labels, volume)
        docker(
            "run", "-d", "--init", "--name", host.container, "--hostname", host.name,
            *self._labels, "--network", self.lan,
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "-v", f"{volume}:/var/lib/docker",
            "-v", f"{self.venv}:/opt/corral:ro",
            "-v", f"{self.workdir}:/rig:ro",
            "--tmpfs", "/run", "--tmpfs", "/tmp",
            self.image, "sh", "-c", _ENTRY, "entry", *_DOCKERD_ARGS,
        )  # fmt: skip
        address = f'{{{{(index .NetworkSettings.Networks "{self.lan}").IPAddress}}}}'
        host.lan_addr = docker("inspect", "-f", address, host.container).stdout.strip()

    def add_hosts(self, *names: str) -> list[Host]:
        """`add_host` for each name, all at once; the hosts in the order given."""
        with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
            return list(pool.map(self.add_host, names))

    def _wait_dockerd(self, host: Host) -> None:
        deadline = time.monotonic() + DOCKERD_READY_S
        while host.docker("info", check=False, timeout=20).returncode != 0:
            running = docker("inspect", "-f", "{{.State.Running}}", host.container, check=False)
            if running.stdout.strip() != "true":
                raise RigError(f"host {host.name} exited:\n{host.dockerd_log()}")
            if time.monotonic() > deadline:
                raise RigError(
                    f"the engine of host {host.name} did not answer within "
                    f"{DOCKERD_READY_S:g} s:\n{host.dockerd_log()}"
                )
            time.sleep(0.2)

    def remove_host(self, host: Host) -> None:
        """Remove the host's container and its /var/lib/docker volume."""
        with self._lock:
            self.hosts.pop(host.name, None)
        docker("rm", "-f", "-v", host.container, check=False, timeout=120)
        docker("volume", "rm", "-f", f"{host.container}-docker", check=False, timeout=120)

    def close(self) -> None:
        """Remove every host, its volume and the LAN (by label) and the work directory."""
        remove_labelled(f"{LABEL}={self.prefix}")
        self.hosts.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
