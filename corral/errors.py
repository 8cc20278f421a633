"""What the Corral SDK raises. Every error's text is a sentence a human can act on.

::

    CorralError
     ├── ApiFailure          the master answered and refused (code, message, field)
     ├── InvalidSpec         a job spec given as a mapping does not validate (also ValueError)
     ├── InvalidUrl          the AMQP URL is malformed (also ValueError)
     ├── NoMaster            no master takes requests, or none answered on corral.api in time
     │    └── NoCluster      corral.api does not exist: no Corral cluster on that vhost
     ├── BrokerUnreachable   RabbitMQ cannot be reached, or the connection dropped
     └── WaitTimeout         Job.wait ran out of time (also TimeoutError)

URLs in messages never show a password (see `redact_url`), of one URL or of several.
"""

from __future__ import annotations

from urllib.parse import unquote

from bus import topology
from bus.params import split_urls


def _split_password(url: str) -> tuple[str, str, str] | None:
    """(before, password, after) if `url` has `user:password@` in its authority, else None.

    Parsed by hand, not with urlsplit, so that a malformed URL (no scheme, a bad
    port, a raw `/` in the password) is redacted too: those are the ones that
    end up in error messages. When in doubt it hides too much, never too little.
    """
    start = url.find("//")
    start = 0 if start < 0 else start + 2
    rest = url[start:]
    authority = rest.split("/", 1)[0]
    at = authority.rfind("@") if "@" in authority else rest.rfind("@")
    colon = rest.find(":", 0, at)
    if at < 0 or colon < 0:
        return None
    return url[: start + colon + 1], rest[colon + 1 : at], rest[at:]


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***`: amqp://guest:***@host:5672/. Of several
    comma-separated URLs (`bus.params.split_urls`), every one's password.

    Total: any string is accepted, a malformed URL included.
    """
    return ",".join(_redact_one(one) for one in split_urls(url))


def _redact_one(url: str) -> str:
    parts = _split_password(url)
    if parts is None or not parts[1]:
        return url
    before, _password, after = parts
    return f"{before}***{after}"


def scrub(text: str, url: str) -> str:
    """`text` with any copy of `url`, of one of its URLs, or of a password in them, replaced
    by the redacted form."""
    text = text.replace(url, redact_url(url))
    for one in split_urls(url):
        text = text.replace(one, _redact_one(one))
        parts = _split_password(one)
        password = parts[1] if parts is not None else ""
        for form in {password, unquote(password)}:
            if len(form) > 2:
                text = text.replace(form, "***")
    return text


class CorralError(Exception):
    """Base of every error the SDK raises on purpose."""


class ApiFailure(CorralError):
    """The master refused a request. `code` is stable for programs.

    Codes: not_found, conflict, invalid, invalid_message, forbidden (not the caller's
    job, or not its role), unavailable, too_large, internal.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        self.code = code
        self.message = message
        self.field = field
        super().__init__(self._sentence())

    def _sentence(self) -> str:
        text = self.message or f"the master refused the request ({self.code})"
        if self.code.startswith("invalid") and self.field and self.field not in text:
            text = f"{self.field}: {text}"
        if self.code == "internal":
            text = f"the master failed to handle the request: {text}"
        return text


class InvalidSpec(CorralError, ValueError):
    """A job spec that does not validate; the text names each field and the problem."""


class InvalidUrl(CorralError, ValueError):
    """A malformed AMQP URL; the text shows it (password hidden), what is wrong, and the form."""

    EXPECTED = "amqp://USER:PASSWORD@HOST:PORT/VHOST"

    def __init__(
        self, url: str, problem: str, *, option: str = "AMQP", several: bool = False
    ) -> None:
        self.url = redact_url(url)
        self.problem = scrub(problem, url)
        expected = f"{self.EXPECTED}, several separated by commas" if several else self.EXPECTED
        super().__init__(f"invalid {option} URL {self.url!r} ({self.problem}): expected {expected}")


class NoMaster(CorralError):
    """No master takes requests.

    With `timeout`, a request got no reply within that many seconds (the master
    is stuck or overloaded, or has just gone); without, nothing consumes
    corral.api at all, found out at once.
    """

    def __init__(self, url: str, timeout: float | None = None) -> None:
        self.url = redact_url(url)
        self.timeout = timeout
        super().__init__(self._sentence())

    def _sentence(self) -> str:
        if self.timeout is None:
            return (
                f"no master is running: nothing takes requests from {topology.API_QUEUE}"
                f" on {self.url}; start `corral master` against it"
            )
        return (
            f"no master answered on {topology.API_QUEUE} within {self.timeout:g} s"
            f" — is `corral master` running against {self.url}?"
        )


class NoCluster(NoMaster):
    """The vhost has no Corral cluster: the corral.api queue does not exist."""

    def _sentence(self) -> str:
        return (
            f"no Corral cluster runs on {self.url}: the queue {topology.API_QUEUE} does not"
            " exist; start `corral master` against it, or check the vhost in --amqp /"
            " CORRAL_AMQP_URL"
        )


class BrokerUnreachable(CorralError):
    """RabbitMQ cannot be reached or refused us (`refused`), or the connection dropped (`lost`)."""

    def __init__(self, url: str, detail: str, *, lost: bool = False, refused: bool = False) -> None:
        self.url = redact_url(url)
        detail = scrub(detail, url).strip().rstrip(":").strip()
        if ":" not in detail:  # pika's AMQPConnectionError often says nothing more
            detail = f"{detail or 'no answer'} (nothing listens there, or it is not RabbitMQ)"
        if lost:
            text = f"lost the connection to RabbitMQ at {self.url}: {detail}"
        elif refused:
            text = (
                f"RabbitMQ at {self.url} refused us: {detail}; check the user, password"
                " and vhost in --amqp / CORRAL_AMQP_URL"
            )
        else:
            text = (
                f"cannot reach RabbitMQ at {self.url} : {detail}; start it, "
                "or pass --amqp / set CORRAL_AMQP_URL"
            )
        super().__init__(text)


class WaitTimeout(CorralError, TimeoutError):
    """Job.wait gave up. `state` and `reason` are the job's last known ones."""

    def __init__(self, job_id: str, timeout: float, state: str, reason: str = "") -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.state = state
        self.reason = reason
        text = f"job {job_id} is still {state} after {timeout:g} s"
        if reason:
            text += f" ({reason})"
        super().__init__(text)
