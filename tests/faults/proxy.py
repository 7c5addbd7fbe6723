"""A loopback TCP proxy the tests control: drop every connection, stall traffic, slow the link.

No existing package fitted (toxiproxy needs its own server binary, not in these registries): this
is ~100 lines of sockets and threads. Agents connect to the proxy, the proxy to the broker.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port`` with fault knobs.

    Example:
        >>> with TcpProxy(broker.port) as proxy:  # doctest: +SKIP
        ...     proxy.drop_all(); proxy.stalled = True; proxy.bytes_per_s = 20_000
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self.stalled = False
        self.refuse = False
        self.bytes_per_s: float | None = None
        self.connections = 0
        self.drops = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self.drop_all(count=False)

    def drop_all(self, *, count: bool = True) -> int:
        """Close every open connection (both sides see a reset/EOF); returns how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        if count:
            self.drops += len(pairs)
        return len(pairs)

    @contextmanager
    def stall(self) -> Iterator[None]:
        """Forward nothing while inside (connections stay open: keep-alives go unanswered)."""
        self.stalled = True
        try:
            yield
        finally:
            self.stalled = False

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                while self.stalled and not self._stop.is_set():
                    time.sleep(0.05)
                data = src.recv(16384)
                if not data:
                    break
                while self.stalled and not self._stop.is_set():
                    time.sleep(0.05)
                rate = self.bytes_per_s
                if rate:
                    for i in range(0, len(data), 1024):
                        dst.sendall(data[i:i + 1024])
                        time.sleep(1024 / rate)
                else:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
