"""The progress line while `--wait` runs: on a terminal one line rewritten in place,
elsewhere a new line only when the text changes; on stderr, ended before the outcome."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from corral import waiting
from corral.waiting import Progress
from schemas.api import JobInfo
from schemas.job import JobSpec
from schemas.messages import JobState

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_off_a_terminal_each_new_text_is_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    progress: Progress[int] = Progress(
        lambda n: None if n < 0 else f"{n // 2}/3 healthy", terminal=False
    )
    with progress:
        for n in (-1, 0, 1, 2, 3, 4, 5, 6):
            progress(n)
    err = capsys.readouterr().err
    assert err == "0/3 healthy\n1/3 healthy\n2/3 healthy\n3/3 healthy\n"
    assert progress.last == 6


def test_on_a_terminal_one_line_is_rewritten(capsys: pytest.CaptureFixture[str]) -> None:
    texts = iter(["web: 0/3 healthy (pending)", "web: 1/3 healthy", "web: 1/3 healthy", "w"])
    progress: Progress[None] = Progress(lambda _: next(texts), terminal=True)
    with progress:
        for _ in range(4):
            progress(None)
    err = capsys.readouterr().err
    assert err == (
        "\rweb: 0/3 healthy (pending)"
        "\rweb: 1/3 healthy          "  # padded over the longer line before it
        "\rw               "
        "\n"  # ended, so the outcome starts on a line of its own
    )


def test_progress_text_from_the_broker_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    progress: Progress[None] = Progress(lambda _: "web: \x1b[2J\nx", terminal=True)
    progress(None)
    assert capsys.readouterr().err == "\rweb: \\x1b[2J\\nx"


@pytest.mark.parametrize(("terminal", "escapes"), [(True, True), (False, False)])
def test_a_pseudo_terminal_gets_the_rewritten_line_and_a_pipe_plain_lines(
    terminal: bool, escapes: bool
) -> None:
    script = (
        "from corral.waiting import Progress\n"
        "p = Progress(str)\n"
        "with p:\n"
        "    for n in ('1/3', '2/3', '2/3', '3/3'): p(n)\n"
    )
    err = _stderr_of(script, terminal)
    assert ("\r" in err) is escapes
    assert err.replace("\r\n", "\n") == ("\r1/3\r2/3\r3/3\n" if terminal else "1/3\n2/3\n3/3\n")


def _stderr_of(script: str, terminal: bool) -> str:
    """What `script` writes on stderr, a pseudo-terminal's or a pipe's."""
    if not terminal:
        argv = [sys.executable, "-c", script]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stderr
    parent, child = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", script], stderr=child, check=True)
    finally:
        os.close(child)
    try:
        return os.read(parent, 4096).decode()
    finally:
        os.close(parent)


def info(state: JobState, running: int, reason: str = "") -> JobInfo:
    spec = JobSpec(name="hello", image="img")
    return JobInfo(job_id="hello", state=state, spec=spec, submitted_at=NOW, reason=reason,
                   task_counts={"running": running})  # fmt: skip


@dataclass
class Waiting:
    """A Job whose wait reports `seen` to on_change and ends with the last of them."""

    seen: list[JobInfo]
    id: str = "hello"
    on_change: object = None
    last: JobInfo | None = None
    calls: list[str] = field(default_factory=list)

    def wait(self, timeout: float | None = None) -> JobInfo:
        for item in self.seen:
            self.on_change(item)  # type: ignore[operator]
        return self.seen[-1]

    def exit_codes(self, info: JobInfo) -> dict[int, int | None]:
        return {0: 0}


def test_a_batch_job_shows_progress_on_a_terminal_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    states = [info("pending", 0, "no node has room"), info("running", 1), info("complete", 0)]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    waiting.wait_and_report(Waiting(states), None)  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert err == (
        "\rhello: pending, 0/1 running (no node has room)"
        "\rhello: running, 1/1 running                   \n"
    )
    assert out.startswith("job hello: complete\n")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    waiting.wait_and_report(Waiting(states), None)  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""  # a script gets the outcome alone
