"""What bench.dashboard measures with: a process's CPU and memory, the dashboard's event
stream read as a browser reads it, page fetches, a headless browser on the page, the
probe job's delays, and the churn.
"""

from __future__ import annotations

import functools
import http.client
import json
import shutil
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.heartbeats import TICK, cpu_seconds
from corral import Client
from corral.errors import CorralError
from tests.cluster import Cluster

PROBE = "probe"  # the job scaled 0 <-> 1 whose task's rows are timed on the stream


def rss(pid: int | str = "self") -> int:
    """Resident memory in bytes (VmRSS); 0 for a process that is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def thread_cpu_seconds(native_id: int) -> float:
    """CPU seconds of one thread of this process (Linux /proc)."""
    with open(f"/proc/self/task/{native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Usage:
    cpu: float  # a share of one core over the window
    rss: int  # the most resident memory sampled, bytes


class Meter:
    """CPU and peak RSS of some processes (and threads of this one) from now to `finish`."""

    def __init__(self, pids: dict[str, int], threads: dict[str, int] | None = None) -> None:
        self.pids = pids
        self.threads = threads or {}
        self.started = time.monotonic()
        self.cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.cpu |= {name: thread_cpu_seconds(tid) for name, tid in self.threads.items()}
        self.peak = {name: rss(pid) for name, pid in pids.items()}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss(pid))

    def finish(self) -> dict[str, Usage]:
        self._stop.set()
        self._sampler.join()
        wall = time.monotonic() - self.started
        used = {
            name: Usage((cpu_seconds(pid) - self.cpu[name]) / wall, self.peak[name])
            for name, pid in self.pids.items()
        }
        for name, tid in self.threads.items():
            used[name] = Usage((thread_cpu_seconds(tid) - self.cpu[name]) / wall, 0)
        return used


def ms(samples: list[float]) -> str:
    median, p95 = quantiles(samples)
    return f"{median * 1000:,.0f} / {p95 * 1000:,.0f} ms" if samples else "-"


def quantiles(samples: list[float]) -> tuple[float, float]:
    """(median, p95) of `samples`; (nan, nan) without any."""
    if not samples:
        return float("nan"), float("nan")
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def fetch_times(base: str, path: str, count: int) -> tuple[list[float], int]:
    """Seconds to fetch `path` whole, `count` times, each on a new connection (as a
    browser opening the page); and the size of the last answer in bytes. (Plain
    http.client: an httpx call would add the making of its TLS context, ~0.1 s.)"""
    where = urllib.parse.urlsplit(base)
    times: list[float] = []
    size = 0
    for _ in range(count):
        started = time.monotonic()
        connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=60)
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            body = answer.read()
        finally:
            connection.close()
        if answer.status != 200:
            raise AssertionError(f"GET {path}: {answer.status}")
        size = len(body)
        times.append(time.monotonic() - started)
    return times, size


class Stream:
    """The dashboard's /api/stream read on a thread of its own, as a browser's EventSource
    reads it: keeps the snapshot's columns and, for one job, each task row that arrives
    with the time (time.time()) it arrived."""

    def __init__(self, base: str, job: str) -> None:
        self.base = base
        self.job = job
        self.columns: dict[str, list[str]] = {}
        self.rows: list[tuple[float, dict[str, Any]]] = []
        self.snapshot_at = 0.0
        self.changes = 0
        self.bytes = 0
        self._seen = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="sse", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with httpx.stream("GET", self.base + "/api/stream", timeout=None) as answer:
            event = ""
            for line in answer.iter_lines():
                if self._stop.is_set():
                    return
                self.bytes += len(line) + 1
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    self._take(event, json.loads(line[6:]), time.time())

    def _take(self, event: str, message: dict[str, Any], arrived: float) -> None:
        if event == "snapshot":
            self.columns = message["columns"]
            self.snapshot_at = arrived
            tasks = message.get("tasks", [])
        else:
            self.changes += 1
            tasks = message.get("upsert", {}).get("tasks", [])
        names = self.columns.get("tasks", [])
        job = names.index("job") if "job" in names else 1
        with self._seen:
            for row in tasks:
                if row[job] == self.job:
                    self.rows.append((arrived, dict(zip(names, row, strict=False))))
            self._seen.notify_all()

    def wait_row(
        self, wanted: Callable[[dict[str, Any]], bool], after: int, timeout: float = 60.0
    ) -> tuple[float, dict[str, Any], int]:
        """The first row from index `after` on for which `wanted` holds: (arrival time,
        row, its index)."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for index in range(after, len(self.rows)):
                    arrived, row = self.rows[index]
                    if wanted(row):
                        return arrived, row, index
                after = len(self.rows)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such task row of {self.job} on the stream")
                self._seen.wait(left)

    def close(self) -> None:
        self._stop.set()


class Browser:
    """Headless Chromium on the page (selenium): how long until it shows every task, how
    fast its main thread answers, and the JavaScript heap it uses."""

    def __init__(self) -> None:
        from selenium import webdriver

        options = webdriver.ChromeOptions()
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(argument)
        driver = shutil.which("chromedriver")
        service = webdriver.ChromeService(executable_path=driver) if driver else None
        self.driver = webdriver.Chrome(options=options, service=service)

    @staticmethod
    def available() -> bool:
        return shutil.which("chromedriver") is not None

    def open(self, url: str, shows: str, timeout: float = 180.0) -> float:
        """Seconds from opening `url` until the page's summary contains `shows`."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        started = time.monotonic()
        self.driver.get(url)
        WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
            lambda driver: shows in driver.find_element(By.ID, "summary").text
        )
        return time.monotonic() - started

    def round_trips(self, count: int, pause: float = 0.2) -> list[float]:
        """Seconds for the page's main thread to run a trivial script, `count` times."""
        times = []
        for _ in range(count):
            started = time.monotonic()
            self.driver.execute_script("return performance.now()")
            times.append(time.monotonic() - started)
            time.sleep(pause)
        return times

    def heap(self) -> int:
        """The page's used JavaScript heap, bytes (Chromium's performance.memory)."""
        used = self.driver.execute_script("return performance.memory.usedJSHeapSize")
        return int(used or 0)

    def close(self) -> None:
        self.driver.quit()


class Churn:
    """Scales the services down by `step` and back, one request a second (or as fast as
    the master answers), on a thread of its own; `changes` counts the replicas moved."""

    def __init__(self, cluster: Cluster, jobs: int, replicas: int, step: int) -> None:
        self.cluster, self.jobs, self.replicas, self.step = cluster, jobs, replicas, step
        self.changes = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            started = time.monotonic()
            down = turn % 2 == 0
            if self._scale(f"j{turn // 2 % self.jobs}", self.replicas - self.step * down):
                self.changes += self.step
                turn += 1
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))
        if turn % 2:  # the last service scaled down goes back up
            self._scale(f"j{(turn - 1) // 2 % self.jobs}", self.replicas)

    def _scale(self, job: str, replicas: int) -> bool:
        """One request with a client of its own (none is left idle to miss heartbeats);
        False if the master could not be asked (counted, tried again)."""
        try:
            with Client(self.cluster.client_url, timeout=120, role=self.cluster.client_role) as c:
                c.scale(job, replicas)
            return True
        except CorralError as exc:
            self.errors += 1
            say(f"churn: could not scale {job}: {exc}")
            return False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def in_state(state: str, row: dict[str, Any]) -> bool:
    return bool(row["state"] == state)


def probe_delays(cluster: Cluster, stream: Stream, samples: int) -> dict[str, list[float]]:
    """Scale the probe job to 1 and back to 0, `samples` times in all: seconds from the
    scale request to the master's answer ("answer") and to its task's row on the stream
    ("scale"), and from the task's status event to the same ("event"). A client per
    request: one left idle while a row is awaited would miss its heartbeats."""
    answered: list[float] = []
    from_scale: list[float] = []
    from_event: list[float] = []
    after = len(stream.rows)
    for index in range(samples):
        up = index % 2 == 0
        state = "running" if up else "stopped"
        with Client(cluster.client_url, timeout=120, role=cluster.client_role) as client:
            client.check_master()  # connected before the clock starts
            started = time.time()
            client.scale(PROBE, 1 if up else 0)
            answered.append(time.time() - started)
        arrived, row, after = stream.wait_row(functools.partial(in_state, state), after)
        after += 1
        from_scale.append(arrived - started)
        from_event.append(arrived - float(row["updated_at"]))
    say(f"probe: {ms(from_scale)} from the request, {ms(from_event)} from the event")
    return {"answer": answered, "scale": from_scale, "event": from_event}


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)
