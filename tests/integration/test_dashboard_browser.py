"""`corral dashboard` in a real browser (Debian's chromium, driven by Selenium through
chromium-driver) against a real cluster: it shows both nodes, a job submitted with the
CLI shows `running` within 2 s, and a worker killed with `kill -9` shows `down` with its
tasks moved to the other node, all without a reload. Then `--login` against the broker.

The test leaves a screenshot of the page in its tmp dir; with CORRAL_UPDATE_SCREENSHOT=1
it writes docs/dashboard.png (the README's) instead.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from bus import Bus
from corral.dashboard.login import Verdict, broker_verdict
from tests.accounts import accounts_of, as_user
from tests.cluster import Cluster, running_cluster, wait_until
from tests.conftest import TEST_IMAGE, _unavailable

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).parents[2] / "docs" / "dashboard.png"
AGENT_GRACE = 2.0  # a killed worker's tasks are replaced after this long


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless chromium, 1400x900; quit afterwards."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _unavailable("chromium and chromium-driver are not installed: run scripts/bootstrap.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def two_workers(vhost_url: str, tmp_path: Path, docker_engine: None) -> Iterator[Cluster]:
    """A master whose agent grace is AGENT_GRACE, and workers w1, w2."""
    extra = ("--agent-grace", str(AGENT_GRACE))
    with running_cluster(vhost_url, tmp_path, workers=2, master_extra=extra) as cluster:
        yield cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def status(url: str, login: tuple[str, str] | None = None) -> int:
    """The HTTP status of GET `url` (with basic credentials); 0 if nothing answers."""
    request = urllib.request.Request(url)
    if login is not None:
        token = base64.b64encode(":".join(login).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


@contextlib.contextmanager
def dashboard(amqp_url: str, workdir: Path, *extra: str) -> Iterator[str]:
    """`corral dashboard` on a free port, its log in `workdir`; its URL. Stopped with
    SIGTERM after, which must end it cleanly within seconds even with a page open."""
    port = free_port()
    log = open(workdir / "dashboard.log", "ab")  # noqa: SIM115 - closed below
    command = [sys.executable, "-m", "corral", "dashboard", "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [*command, *extra, "--amqp", amqp_url],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: process.poll() is not None or status(url) != 0, what="the dashboard")
        assert process.poll() is None, "the dashboard exited"
        yield url
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def cells(driver: WebDriver, selector: str) -> list[str]:
    """The text of every element matching `selector` (empty while the page redraws it)."""
    try:
        return [element.text for element in driver.find_elements(By.CSS_SELECTOR, selector)]
    except StaleElementReferenceException:
        return []


def until(driver: WebDriver, probe: Callable[[], object], timeout: float, what: str) -> None:
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda _: probe())
    except WebDriverException as exc:
        raise AssertionError(f"the page did not show {what} within {timeout:g} s") from exc


def node_state(driver: WebDriver, node_id: str) -> str:
    found = cells(driver, f'#nodes tr[data-id="{node_id}"] td.state')
    return found[0] if found else ""


def task_rows(driver: WebDriver, job: str) -> list[tuple[str, str]]:
    """(node, state) of each task row of `job` shown."""
    rows = cells(driver, f'#tasks tr[data-job="{job}"]')
    nodes = cells(driver, f'#tasks tr[data-job="{job}"] td.node')
    states = cells(driver, f'#tasks tr[data-job="{job}"] td.state')
    if not (len(rows) == len(nodes) == len(states)):
        return []
    return [
        (node, state.split()[0] if state else "") for node, state in zip(nodes, states, strict=True)
    ]


def test_the_dashboard_follows_a_job_and_a_killed_worker_live(
    two_workers: Cluster, browser: WebDriver, tmp_path: Path
) -> None:
    cluster = two_workers
    w1, w2 = cluster.node_id("w1"), cluster.node_id("w2")
    started = time.monotonic()
    with dashboard(cluster.client_url, cluster.workdir) as url:
        browser.get(url)
        until(
            browser,
            lambda: node_state(browser, w1) == node_state(browser, w2) == "ready",
            30,
            "both nodes ready",
        )
        browser.execute_script("window.notReloaded = true")

        result = cluster.cli(
            "run", "--name", "web", "--kind", "service", "--replicas", "2", "--cpu", "0.1",
            "--wait", "--timeout", "60", TEST_IMAGE, "sleep", "3600",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        returned = time.monotonic()
        job_state = '#jobs tr[data-id="web"] td.state'
        until(browser, lambda: cells(browser, job_state) == ["running"], 2.0, "web running")
        shown_after = time.monotonic() - returned
        until(
            browser,
            lambda: sorted(task_rows(browser, "web")) == [(w1, "running"), (w2, "running")],
            5,
            "a task of web on each node",
        )
        # Work that cannot be placed shows with its reason.
        big = cluster.cli("run", "--name", "big", "--cpu", "16", TEST_IMAGE, "sleep", "1")
        assert big.returncode == 0, big.stdout + big.stderr
        until(browser, lambda: "big" in " ".join(cells(browser, "#pending td")), 10, "big pending")

        cluster.stop("w1", hard=True)  # kill -9
        killed = time.monotonic()
        until(browser, lambda: node_state(browser, w1) == "down", 30, f"{w1} down")
        until(
            browser,
            lambda: task_rows(browser, "web") == [(w2, "running"), (w2, "running")],
            30,
            "web's tasks running on w2",
        )
        moved_after = time.monotonic() - killed
        replicas = '#jobs tr[data-id="web"] td:nth-child(3)'
        until(browser, lambda: cells(browser, job_state) == ["running"], 10, "web running again")
        until(browser, lambda: cells(browser, replicas) == ["2/2"], 15, "web healthy again")
        # The nodes' use comes with the next listing (every 5 s): a calm picture to keep.
        w1_tasks = f'#nodes tr[data-id="{w1}"] td.num'
        until(browser, lambda: cells(browser, w1_tasks) == ["0"], 15, f"no task on {w1}")
        assert browser.execute_script("return window.notReloaded") is True
        # Nothing refused by the page's own policy (CSP), no script error.
        console = browser.execute("getLog", {"type": "browser"})["value"]
        errors = [entry for entry in console if entry["level"] == "SEVERE"]
        assert errors == []
        screenshot = SCREENSHOT if os.environ.get("CORRAL_UPDATE_SCREENSHOT") else None
        browser.save_screenshot(str(screenshot or tmp_path / "dashboard.png"))
    print(
        f"web shown running {shown_after:.2f} s after `run --wait` returned; w1 down and its"
        f" task moved {moved_after:.1f} s after kill -9; {time.monotonic() - started:.0f} s in all"
    )


def test_the_login_is_the_brokers_and_needs_the_right_to_read_status(
    vhost_url: str, tmp_path: Path
) -> None:
    topology = Bus(vhost_url, name="tests (topology)")  # declared, as `admin bootstrap` does
    try:
        topology.connect(attempts=5)
    finally:
        topology.close()
    found = accounts_of(vhost_url)
    assert found is not None
    accounts, vhost = found
    admin = accounts.admin_login()
    node = f"dash-{os.getpid()}"
    worker = accounts.worker_login(vhost, node)
    try:
        assert broker_verdict(as_user(vhost_url, *admin), None) is Verdict.OK
        assert broker_verdict(as_user(vhost_url, admin[0], "wrong"), None) is Verdict.DENIED
        assert broker_verdict(as_user(vhost_url, "nobody", "x"), None) is Verdict.DENIED
        # A worker's user may log in to the broker, but not read the status topic.
        assert broker_verdict(as_user(vhost_url, *worker), None) is Verdict.DENIED
        with dashboard(as_user(vhost_url, *admin), tmp_path, "--login") as url:
            assert status(url) == 401
            assert status(url + "api/state", (admin[0], "wrong")) == 401
            assert status(url + "api/state", worker) == 401
            assert status(url + "api/state", admin) == 200
    finally:
        accounts.remove_worker(node)
    nowhere = f"amqp://{admin[0]}:{admin[1]}@127.0.0.1:{free_port()}/"
    assert broker_verdict(nowhere, None) is Verdict.UNAVAILABLE
