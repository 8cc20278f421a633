"""Deleting a benchmark's vhost and waiting until the broker has done it.

Deleting a vhost of thousands of queues takes the broker minutes of CPU after the
management API's call has given up (`Broker.delete_vhost` waits 10 s): a benchmark that
left one behind would load the broker under the next one's figures.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse

from tests.conftest import Broker

RETRY_EVERY = 30.0  # s between delete calls while the vhost is still there


def drop_vhost(broker: Broker, vhost: str, timeout: float = 900.0) -> None:
    """Delete `vhost` and wait (at most `timeout` s) until the broker no longer lists it."""
    path = f"vhosts/{urllib.parse.quote(vhost, safe='')}"
    deadline = time.monotonic() + timeout
    asked = -RETRY_EVERY
    while time.monotonic() < deadline:
        if time.monotonic() - asked >= RETRY_EVERY:
            broker.delete_vhost(vhost)
            asked = time.monotonic()
        try:
            broker.api("GET", path)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return
        except (urllib.error.URLError, OSError):
            pass  # busy or restarting: ask again
        time.sleep(1.0)
    print(f"warning: vhost {vhost} still there after {timeout:g} s", flush=True)
