"""What a py-spy profile (`py-spy record -f raw`: one line per stack, `frame;frame;... N`)
says: the share of samples in each function, by itself and with what it calls; and
`record` / `stop`, which take one from a running process (the benchmarks' `--profile`).

    python -m bench.spy PROFILE.txt [--top 25] [--match master/]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


def record(pid: int, path: Path, rate: int = 50) -> subprocess.Popen[bytes]:
    """Start sampling process `pid` with py-spy, `rate` times a second, into `path`
    (raw format) until `stop`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    argv = [spy, "record", "-p", str(pid), "-f", "raw", "-r", str(rate), "--nolineno"]
    return subprocess.Popen(
        [*argv, "-o", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(spy: subprocess.Popen[bytes] | None) -> None:
    """End a `record`: py-spy writes its file on SIGINT."""
    if spy is not None and spy.poll() is None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def load_if_any(path: Path) -> list[tuple[list[str], int]]:
    """`load`, or nothing if there is no such profile (py-spy could not sample)."""
    try:
        return load(path)
    except OSError:
        return []


def shares(stacks: list[tuple[list[str], int]], match: str) -> tuple[Counter[str], Counter[str]]:
    """(self, inclusive) samples per frame; inclusive counts only frames containing
    `match` (e.g. the project's own code), each once per stack."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
        for frame in set(frames):
            if match in frame:
                inclusive[frame] += count
    return own, inclusive


def innermost(stacks: list[tuple[list[str], int]], match: str | tuple[str, ...]) -> Counter[str]:
    """Samples per innermost frame containing `match`: where in the project's own code each
    sample was, with what that function called (the libraries, the interpreter) counted
    in it. Stacks with no such frame count under "(elsewhere)"."""
    matches = (match,) if isinstance(match, str) else match
    where: Counter[str] = Counter()
    for frames, count in stacks:
        mine = [frame for frame in frames if any(part in frame for part in matches)]
        where[mine[-1] if mine else "(elsewhere)"] += count
    return where


# A stack whose innermost frame is one of these waits (for I/O, a lock, a queue, time).
IDLE = frozenset({"poll", "select", "wait", "sleep", "get", "_wait_for_tstate_lock"})


def waiting(frames: list[str]) -> bool:
    return frames[-1].split(" (")[0].rsplit(".", 1)[-1] in IDLE


def summary(
    path: Path, match: str | tuple[str, ...], top: int = 8
) -> tuple[int, float, list[tuple[str, float]]]:
    """(samples, the share of them waiting, and the `top` functions matching `match` by
    their share of the busy samples, as the innermost such frame: see `innermost`) of a
    profile; (0, 0.0, []) if there is none."""
    stacks = load_if_any(path)
    total = sum(count for _, count in stacks)
    busy = [(frames, count) for frames, count in stacks if not waiting(frames)]
    busy_total = sum(count for _, count in busy)
    if not total or not busy_total:
        return total, 1.0 if total else 0.0, []
    where = innermost(busy, match)
    shares = [(frame, n / busy_total) for frame, n in where.most_common(top)]
    return total, 1 - busy_total / total, shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="/work/")
    args = parser.parse_args()
    stacks = load(args.profile)
    total = sum(count for _, count in stacks) or 1
    own, inclusive = shares(stacks, args.match)
    print(f"{total} samples")
    print("self:")
    for frame, count in own.most_common(args.top):
        print(f"  {count / total:6.1%}  {frame}")
    print(f"inclusive (frames matching {args.match!r}):")
    for frame, count in inclusive.most_common(args.top):
        print(f"  {count / total:6.1%}  {frame}")


if __name__ == "__main__":
    main()
