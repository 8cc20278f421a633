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
    return subprocess.Popen(
        [spy, "record", "-p", str(pid), "-f", "raw", "-r", str(rate), "-o", str(path)],
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
