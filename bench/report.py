"""docs/benchmarks.md, written a section at a time: each benchmark replaces its own
`## ` section (by its title's start) and keeps the others; `bench.suite` writes the head.
"""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, title: str, section: str) -> None:
    """Put `section` (which starts with its `## ` heading) where the section whose heading
    starts with `title` is, or at the end if there is none; keep everything else."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head, found, rest = text.partition(f"\n{title}")
    tail = rest.partition("\n## ")[2] if found else ""
    path.write_text(
        head.rstrip() + "\n\n" + section.rstrip() + "\n" + ("\n## " + tail if tail else "")
    )


def replace_head(path: Path, head: str) -> None:
    """Replace what comes before the first `## ` heading by `head`."""
    text = path.read_text() if path.exists() else ""
    rest = text[text.index("\n## ") + 1 :] if "\n## " in text else ""
    path.write_text(head.rstrip() + "\n\n" + rest)
