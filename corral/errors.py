"""What the Corral SDK raises. Every error's text is a sentence a human can act on.

::

    CorralError
     ├── ApiFailure          the master answered and refused (code, message, field)
     ├── InvalidSpec         a job spec given as a mapping does not validate (also ValueError)
     ├── NoMaster            nobody answered on corral.api in time
     ├── BrokerUnreachable   RabbitMQ cannot be reached, or the connection dropped
     └── WaitTimeout         Job.wait ran out of time (also TimeoutError)

URLs in messages never show a password (see `redact_url`).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from bus import topology


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***`: amqp://guest:***@host:5672/."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def scrub(text: str, url: str) -> str:
    """`text` with any copy of `url` (or its password) replaced by the redacted form."""
    text = text.replace(url, redact_url(url))
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password and len(password) > 2:
        text = text.replace(password, "***")
    return text


class CorralError(Exception):
    """Base of every error the SDK raises on purpose."""


class ApiFailure(CorralError):
    """The master refused a request. `code` is stable for programs.

    Codes: not_found, conflict, invalid, invalid_message, internal.
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


class NoMaster(CorralError):
    """A request got no reply in time: no active master, or it is overloaded."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = redact_url(url)
        self.timeout = timeout
        super().__init__(
            f"no master answered on {topology.API_QUEUE} within {timeout:g} s"
            f" — is `corral master` running against {self.url}?"
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
