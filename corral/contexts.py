"""Named contexts: a broker (its URLs, and TLS files for amqps://) saved under a name,
so that `corral context use prod` points every later command at it.

The contexts live in one YAML file, `$XDG_CONFIG_HOME/corral/contexts.yaml`
(`~/.config/corral/contexts.yaml` without XDG_CONFIG_HOME). Their URLs carry
passwords, so the file is written mode 0600 (in a directory made 0700), and
atomically: a new file beside it, renamed over it. A change (`update`) reads and
writes it holding an exclusive lock on `contexts.yaml.lock` beside it, so two
`corral context add` at once both land: neither writes over what the other read.

Which broker a command talks to, first match wins:

1. `--amqp URL` on the command line;
2. CORRAL_AMQP_URL;
3. the context named by `corral --context NAME` or CORRAL_CONTEXT;
4. the current context (`corral context use NAME`);
5. amqp://guest:guest@127.0.0.1:5672/.

`default` names no context at all (rule 5): `corral context use default` forgets the
current one, `--context default` skips it once.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus.tls import Tls
from corral.client import TLS_ENV
from corral.errors import CorralError

CONTEXT_ENV = "CORRAL_CONTEXT"
DEFAULT_CONTEXT = "default"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
FILE_NAME = "contexts.yaml"
LOCK_SUFFIX = ".lock"
HEADER = (
    "# Corral's named contexts, written by `corral context add`.\n"
    "# The URLs carry passwords: keep this file to yourself (mode 0600).\n"
)


class ContextError(CorralError):
    """The contexts file cannot be read, or names no such context. `usage`: the name
    came from the command line (or CORRAL_CONTEXT), so the command line is wrong."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amqp: list[str] = Field(min_length=1)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current: str | None = None
    contexts: dict[str, _Entry] = Field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """One broker under a name: its URLs (the nodes of one cluster) and TLS files."""

    name: str
    urls: tuple[str, ...]
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def tls(self, environ: Mapping[str, str] = os.environ) -> Tls | None:
        """Its TLS files, each overridden by its variable (CORRAL_TLS_CA, ...) if set;
        None when there are none."""
        mine = (self.tls_ca, self.tls_cert, self.tls_key)
        files = [environ.get(var) or own for var, own in zip(TLS_ENV, mine, strict=True)]
        tls = Tls(ca_file=files[0], cert_file=files[1], key_file=files[2])
        return tls if tls.given else None


@dataclass
class Contexts:
    """The contents of the contexts file: every context by name, and the current one."""

    contexts: dict[str, Context] = field(default_factory=dict)
    current: str | None = None

    def get(self, name: str, path: Path, *, usage: bool = True) -> Context:
        """The context called `name`; ContextError naming the fix if there is none."""
        if name in self.contexts:
            return self.contexts[name]
        known = ", ".join(sorted(self.contexts)) or "none yet"
        raise ContextError(
            f"no context is called {name!r} in {path} (contexts: {known}): `corral context"
            f" add {name} --amqp URL` adds it, `corral context list` lists them",
            usage=usage,
        )

    def with_context(self, context: Context) -> Contexts:
        return replace(self, contexts={**self.contexts, context.name: context})


def check_name(name: str) -> str | None:
    """What is wrong with `name` as a context name, or None."""
    if name == DEFAULT_CONTEXT:
        return f"{DEFAULT_CONTEXT!r} stands for no context; pick another name"
    if not re.fullmatch(NAME_PATTERN, name):
        return "use letters, digits, '.', '_' and '-' (up to 63, a letter or digit first)"
    return None


def contexts_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the contexts file is: under $XDG_CONFIG_HOME, else ~/.config."""
    base = environ.get("XDG_CONFIG_HOME") or ""
    if not os.path.isabs(base):  # the XDG spec: a relative path is to be ignored
        home = environ.get("HOME") or str(Path.home())
        base = os.path.join(home, ".config")
    return Path(base) / "corral" / FILE_NAME


def load(path: Path) -> Contexts:
    """The contexts in `path` (none if it does not exist); ContextError if it is not a
    contexts file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Contexts()
    except (OSError, UnicodeDecodeError) as exc:
        raise _corrupt(path, str(exc)) from None
    return parse(text, path)


def parse(text: str, path: Path) -> Contexts:
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f"line {where.line + 1}: " if where is not None else ""
        raise _corrupt(path, f"{line}not YAML") from None
    try:
        parsed = _File.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise _corrupt(path, f"{at}: {first['msg']}") from None
    contexts = {
        name: Context(name, tuple(entry.amqp), entry.tls_ca, entry.tls_cert, entry.tls_key)
        for name, entry in parsed.contexts.items()
    }
    return Contexts(contexts, parsed.current)


def _corrupt(path: Path, problem: str) -> ContextError:
    return ContextError(
        f"{path} is not a contexts file ({problem}): fix it, or move it away and add the"
        " contexts again with `corral context add NAME --amqp URL`"
    )


def render(contexts: Contexts) -> str:
    """The file's text for `contexts`."""
    document: dict[str, Any] = {"current": contexts.current, "contexts": {}}
    for name, context in sorted(contexts.contexts.items()):
        entry: dict[str, Any] = {"amqp": list(context.urls)}
        for key in ("tls_ca", "tls_cert", "tls_key"):
            if getattr(context, key):
                entry[key] = getattr(context, key)
        document["contexts"][name] = entry
    return HEADER + yaml.safe_dump(document, sort_keys=False)


def save(path: Path, contexts: Contexts) -> None:
    """Write `contexts` to `path` atomically, mode 0600 (its directory made 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{FILE_NAME}.")  # 0600
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(render(contexts))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the contexts file `path` for the block: an flock on
    `path` + ".lock" (made 0600, its directory 0700), blocking until whoever holds it
    is done. Released when the block ends, or by the OS when the process dies. Not
    reentrant: within the block, do not take it again."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle = os.open(f"{path}{LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def update(path: Path, change: Callable[[Contexts], Contexts]) -> Contexts:
    """Read the contexts in `path`, write `change(contexts)` back (see `save`), and
    return it, all under `locked(path)`: concurrent updates (`corral context add`,
    `use`, `remove` at once) are applied one after the other, and none is lost.
    What `change` or `load` raises (ContextError) leaves the file as it was."""
    with locked(path):
        changed = change(load(path))
        save(path, changed)
    return changed


def chosen(name: str | None, path: Path) -> Context | None:
    """The context in effect when no URL is given: `name` (from --context or
    CORRAL_CONTEXT) if set, else the current one; None for none (or `default`).
    ContextError if it does not exist or the file is unreadable."""
    if name == DEFAULT_CONTEXT:
        return None
    contexts = load(path)
    if name:
        return contexts.get(name, path)
    if contexts.current is None:
        return None
    try:
        return contexts.get(contexts.current, path, usage=False)
    except ContextError:
        raise ContextError(
            f"the current context {contexts.current!r} is not in {path}: `corral context use"
            " NAME` picks another (`corral context use default`: none)"
        ) from None
