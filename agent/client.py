"""Python client of the agent's serving endpoint, for applications on the device.

Stdlib ``http.client`` plus numpy: an application needs neither the agent's dependencies
nor a web client library. Tensors travel as ``.npz`` (exact dtypes and shapes, no pickle).
One client holds one keep-alive connection: use one client per thread.

Example:
    >>> from agent.client import InferenceClient  # doctest: +SKIP
    >>> client = InferenceClient(socket_path="/var/lib/edgefleet/serve.sock")  # doctest: +SKIP
    >>> result = client.infer({"x": batch})  # doctest: +SKIP
    >>> result.outputs["y"], result.version  # doctest: +SKIP
"""

from __future__ import annotations

import http.client
import io
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

NPZ = "application/x-npz"


class InferenceError(RuntimeError):
    """The endpoint refused or failed a request; ``status`` is its HTTP status (0: unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass(frozen=True)
class InferenceResult:
    """Outputs by name and which model produced them (it changes when the fleet deploys)."""

    outputs: dict[str, Any]
    model_id: str
    version: str
    sha256: str
    latency_ms: float


class InferenceClient:
    """Calls the active model on this device over the agent's Unix socket or loopback port.

    Args:
        socket_path: the agent's ``--serve-socket`` (default ``<data-dir>/serve.sock``).
        url: ``http://127.0.0.1:PORT`` when the agent runs with ``--serve-port``.
        timeout: seconds per request.
    """

    def __init__(self, socket_path: str | Path | None = None, url: str | None = None,
                 timeout: float = 30.0) -> None:
        if (socket_path is None) == (url is None):
            raise ValueError("give exactly one of socket_path or url")
        self._socket_path = str(socket_path) if socket_path is not None else None
        self._url = urlsplit(url) if url else None
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._socket_path is not None:
                self._conn = _UnixConnection(self._socket_path, self.timeout)
            else:
                assert self._url is not None
                self._conn = http.client.HTTPConnection(self._url.hostname or "127.0.0.1", self._url.port or 80,
                                                        timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        """Close the keep-alive connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request; a keep-alive connection the server closed meanwhile is reopened once."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt == 2:
                    raise InferenceError(0, f"the agent closed the connection: {exc}") from exc
            except OSError as exc:
                self.close()
                raise InferenceError(0, f"cannot reach the agent's serving endpoint: {exc}") from exc
        raise AssertionError("unreachable")

    def _json(self, path: str) -> dict[str, Any]:
        status, _, data = self._request("GET", path)
        body = json.loads(data or b"{}")
        if status >= 400:
            raise InferenceError(status, body.get("error", "") if isinstance(body, dict) else str(body))
        return body

    def infer(self, inputs: Mapping[str, Any]) -> InferenceResult:
        """Run the active model once on ``inputs`` (graph input name → array with the batch axis).

        Raises:
            InferenceError: no model active yet (503), inputs the model does not take (400),
                the runtime failed (500), or the agent is not running (status 0).
        """
        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, **{name: np.asarray(value) for name, value in inputs.items()})
        status, headers, data = self._request("POST", "/v1/infer", buf.getvalue(), {"Content-Type": NPZ})
        if status != 200:
            try:
                message = json.loads(data).get("error", "")
            except ValueError:
                message = data[:200].decode(errors="replace")
            raise InferenceError(status, message)
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            outputs = {name: arrays[name] for name in arrays.files}
        return InferenceResult(
            outputs=outputs,
            model_id=headers.get("x-edgefleet-model", ""),
            version=headers.get("x-edgefleet-version", ""),
            sha256=headers.get("x-edgefleet-sha256", ""),
            latency_ms=float(headers.get("x-edgefleet-latency-ms", "nan")),
        )

    def model(self) -> dict[str, Any]:
        """The active model: id, version, sha256, format, inputs (name, shape, dtype), outputs."""
        return self._json("/v1/model")

    def stats(self) -> dict[str, Any]:
        """Inference counters and the current window's latency percentiles."""
        return self._json("/v1/stats")

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "model": ...}``; raises InferenceError 503 before the first commit."""
        return self._json("/v1/health")
