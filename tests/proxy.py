"""A TCP front for the broker that can play dead: it accepts connections and never answers.

Stands for a broker that accepts sockets but is slow to finish the AMQP handshake (as
RabbitMQ is while it recovers its queues). `forward()` makes it a plain proxy to the
real broker; connections held until then are closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class HangingThenForwarding:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._forwarding = threading.Event()
        self._closed = threading.Event()
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def forward(self) -> None:
        """From now on, pipe new connections to the target; drop the held ones."""
        self._forwarding.set()
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        self.forward()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            if not self._forwarding.is_set():
                with self._lock:
                    self._held.append(client)  # accepted, never answered
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
