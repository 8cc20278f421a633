"""The error a master answers a request with."""

from __future__ import annotations


class ApiProblem(Exception):
    """A request the master refuses; `code` is stable, the text is for humans.

    `field` names the request field at fault, when there is one (`name`, `job_id`,
    `cursor`, ...).
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
