"""On-device serving: the active model, callable by applications on the device.

The agent deploys models; this module is what makes them useful. ``ModelHost`` keeps the
active slot's model loaded and swaps it after a commit or a (fleet) rollback: the new
session is opened and run once *before* it replaces the old one, and requests already
running keep the session they started with, so a swap never fails a request. ``LiveStats``
counts the real inferences and measures their latency, which is what the agent's
telemetry reports (count, errors, p50/p95 over the telemetry interval) instead of the
benchmark figure stored at commit time. ``ServingEndpoint`` is a stdlib HTTP server on a
Unix socket (file permissions decide which local users may call it) and optionally on a
loopback TCP port: the agent has no web framework and must not grow one.

Protocol (HTTP/1.1, keep-alive):
    * ``POST /v1/infer`` with ``Content-Type: application/x-npz`` (``numpy.savez`` of the
      inputs by name; the answer is an ``.npz`` of the outputs, model in ``X-Edgefleet-*``
      headers) or ``application/json`` (``{"inputs": {"x": [[...]]}}`` → ``{"outputs": ...}``);
    * ``GET /v1/model`` (active model, inputs and outputs), ``GET /v1/stats``, ``GET /v1/health``.
``agent.client.InferenceClient`` speaks it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import socketserver
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.runtimes import Session, get_runtime, set_ort_tuning
from agent.slots import SlotStore, model_ref
from common.messages import ModelRef
from common.profiles import DeviceProfile

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
LATENCY_SAMPLES = 20_000
"""Latencies kept per telemetry window (the newest win): bounds memory at any request rate."""
NPZ = "application/x-npz"
_THREAD_SAFE_FORMATS = {"onnx"}
"""ONNX Runtime sessions may run concurrently; a LiteRT interpreter may not (one lock per model)."""


class ServingError(Exception):
    """A request the endpoint cannot serve; ``status`` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted values; None when empty.

    Example:
        >>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50)
        3.0
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least the first value
    return ordered[int(min(rank, len(ordered))) - 1]


@dataclass
class WindowFigures:
    """Real inferences since the previous telemetry sample."""

    inferences: int
    errors: int
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    window_s: float


class LiveStats:
    """Counters and latencies of real inferences; thread-safe.

    Totals live as long as the agent; the window is what :meth:`take_window` returns and
    clears (one telemetry interval). :meth:`model_changed` drops the window's latencies so
    a figure never mixes two models (the controller compares before/after activation).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.total_errors = 0
        self._count = 0
        self._errors = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._since = time.monotonic()

    def record(self, latency_ms: float | None, *, ok: bool) -> None:
        """One inference that reached the model (``ok`` False: the runtime raised)."""
        with self._lock:
            self.total += 1
            self._count += 1
            if ok and latency_ms is not None:
                self._latencies.append(latency_ms)
            else:
                self.total_errors += 1
                self._errors += 1

    def model_changed(self) -> None:
        """The active model was swapped: later latencies belong to the new one."""
        with self._lock:
            self._latencies.clear()

    def peek(self) -> WindowFigures:
        """The current window without clearing it (``/v1/stats``)."""
        with self._lock:
            return self._figures()

    def take_window(self) -> WindowFigures:
        """The window's figures, then start a new window (telemetry)."""
        with self._lock:
            figures = self._figures()
            self._count = self._errors = 0
            self._latencies.clear()
            self._since = time.monotonic()
            return figures

    def _figures(self) -> WindowFigures:
        values = list(self._latencies)
        p50, p95 = percentile(values, 50), percentile(values, 95)
        return WindowFigures(
            inferences=self._count,
            errors=self._errors,
            latency_ms_p50=round(p50, 3) if p50 is not None else None,
            latency_ms_p95=round(p95, 3) if p95 is not None else None,
            window_s=round(time.monotonic() - self._since, 3),
        )


@dataclass
class LoadedModel:
    """One opened model: what it is, the session, and a lock where the runtime is not thread-safe."""

    ref: ModelRef
    session: Session
    input_dtypes: dict[str, str]
    lock: threading.Lock | None = None
    loaded_at: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        """JSON form for ``/v1/model``."""
        return {
            **self.ref.model_dump(mode="json"),
            "inputs": [{"name": n, "shape": self.session.input_shape(n), "dtype": self.input_dtypes.get(n)}
                       for n in self.session.input_names],
            "outputs": list(self.session.output_names),
            "loaded_at": self.loaded_at,
        }

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """One inference, serialised when the runtime needs it."""
        if self.lock is None:
            return self.session.run(feeds)
        with self.lock:
            return self.session.run(feeds)


def _input_dtypes(session: Session) -> dict[str, str]:
    """Numpy dtype name per input, where the runtime tells (JSON requests are cast to it)."""
    probe = getattr(session, "input_dtype", None)
    if probe is None:
        return {}
    return {name: probe(name) for name in session.input_names}


class ModelHost:
    """Keeps the active slot's model loaded and swaps it without failing requests.

    Example:
        >>> host = ModelHost(SlotStore(data_dir / "slots"), profile, threads=1)  # doctest: +SKIP
        >>> host.refresh(); host.infer({"x": batch})  # doctest: +SKIP
    """

    def __init__(self, slots: SlotStore, profile: DeviceProfile, *, threads: int = 1,
                 stats: LiveStats | None = None) -> None:
        self.slots = slots
        self.profile = profile
        self.threads = threads
        self.stats = stats or LiveStats()
        self.swaps = 0
        self.last_error: str | None = None
        self._current: LoadedModel | None = None
        self._refresh_lock = threading.Lock()
        set_ort_tuning(profile.onnxruntime)

    @property
    def current(self) -> LoadedModel | None:
        """The model requests run on now (a plain attribute read: swapping is one assignment)."""
        return self._current

    def refresh(self) -> bool:
        """Load the active slot's model if it is not the one served; True when a swap happened.

        Called after every update-state change (commit and rollback included). A model that
        fails to load or to run its first golden sample is not swapped in: the previous one
        keeps serving and ``last_error`` says why.
        """
        with self._refresh_lock:
            slot = self.slots.current()
            manifest = slot.manifest() if slot is not None else None
            if slot is None or manifest is None:
                return False
            ref = model_ref(manifest)
            if self._current is not None and self._current.ref.sha256 == ref.sha256:
                return False
            try:
                loaded = self._open(slot.file("model"), slot.file("golden"), ref)
            except (AgentError, OSError, ValueError, KeyError) as exc:
                self.last_error = f"could not load {ref.model_id}@{ref.version}: {exc}"
                log.error("serving: %s; still serving %s", self.last_error,
                          self._current.ref.version if self._current else "nothing")
                return False
            self._current = loaded
            self.swaps += 1
            self.last_error = None
            self.stats.model_changed()
            log.info("serving %s@%s (%s)", ref.model_id, ref.version, ref.format)
            return True

    def _open(self, model_path: Path, golden_path: Path, ref: ModelRef) -> LoadedModel:
        runtime = get_runtime(ref.format)
        session = runtime.open(model_path, self.threads, list(self.profile.execution_providers))
        lock = None if ref.format in _THREAD_SAFE_FORMATS else threading.Lock()
        loaded = LoadedModel(ref=ref, session=session, input_dtypes=_input_dtypes(session), lock=lock)
        _smoke_test(loaded, golden_path)
        return loaded

    def infer(self, feeds: dict[str, Any]) -> tuple[dict[str, Any], LoadedModel, float]:
        """Run the active model on ``feeds``; returns outputs, the model that ran and the latency (ms).

        Raises:
            ServingError: 503 without an active model, 400 for inputs the model does not take,
                500 when the runtime fails (counted as an inference error).
        """
        model = self._current  # one read: a concurrent swap cannot change the model under this request
        if model is None:
            raise ServingError(503, "no model is active on this device yet (nothing committed)")
        missing = [n for n in model.session.input_names if n not in feeds]
        unknown = [n for n in feeds if n not in model.session.input_names]
        if missing or unknown:
            raise ServingError(400, f"inputs {sorted(feeds)} do not match the model's "
                                    f"{model.session.input_names} (missing {missing}, unknown {unknown})")
        start = time.perf_counter()
        try:
            outputs = model.run(feeds)
        except Exception as exc:  # noqa: BLE001 - every runtime raises its own types
            self.stats.record(None, ok=False)
            raise ServingError(500, f"{model.ref.model_id}@{model.ref.version} failed: {exc}") from exc
        latency = (time.perf_counter() - start) * 1000
        self.stats.record(latency, ok=True)
        return outputs, model, latency


def _smoke_test(model: LoadedModel, golden_path: Path) -> None:
    """Run the first golden sample: a model that loads but cannot run is never swapped in."""
    from agent.golden import load_golden

    golden = load_golden(golden_path, model.session)
    model.run(golden.feed(model.session, 0))


# ---------------------------------------------------------------- HTTP

def _decode_npz(body: bytes) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise ServingError(400, f"body is not a valid .npz: {exc}") from exc


def _decode_json(body: bytes, dtypes: dict[str, str]) -> dict[str, Any]:
    import numpy as np

    try:
        data = json.loads(body)
        inputs = data["inputs"]
        if not isinstance(inputs, dict):
            raise TypeError("'inputs' must be an object of input name -> nested list")
        return {name: np.asarray(value, dtype=dtypes.get(name, "float32")) for name, value in inputs.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ServingError(400, f'expected JSON {{"inputs": {{"<name>": [[...]]}}}}: {exc}') from exc


def _encode_npz(outputs: dict[str, Any]) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **{name: np.asarray(value) for name, value in outputs.items()})
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    host: ModelHost  # set on the subclass made per endpoint

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("serving: " + format, *args)

    def address_string(self) -> str:
        return "unix" if isinstance(self.client_address, (str, bytes)) else str(self.client_address[0])

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        model = self.host.current
        if self.path == "/v1/health":
            self._json(200 if model else 503, {"status": "ok" if model else "no_model",
                                               "model": model.ref.model_dump(mode="json") if model else None})
        elif self.path == "/v1/model":
            if model is None:
                self._json(503, {"error": "no model is active on this device yet"})
            else:
                self._json(200, model.describe())
        elif self.path == "/v1/stats":
            window = self.host.stats.peek()
            self._json(200, {"inferences_total": self.host.stats.total, "errors_total": self.host.stats.total_errors,
                             "swaps": self.host.swaps, "last_load_error": self.host.last_error,
                             "window": window.__dict__})
        else:
            self._json(404, {"error": f"no such path {self.path}; try POST /v1/infer or GET /v1/model"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        try:
            if self.path != "/v1/infer":
                raise ServingError(404, f"no such path {self.path}; POST /v1/infer")
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY_BYTES:
                raise ServingError(413 if length > 0 else 411, f"body must be 1..{MAX_BODY_BYTES} bytes")
            body = self.rfile.read(length)
            binary = (self.headers.get("Content-Type") or "").startswith(NPZ)
            model = self.host.current
            feeds = _decode_npz(body) if binary else _decode_json(body, model.input_dtypes if model else {})
            outputs, ran, latency = self.host.infer(feeds)
        except ServingError as exc:
            self._json(exc.status, {"error": exc.message})
            return
        headers = {"X-Edgefleet-Model": ran.ref.model_id, "X-Edgefleet-Version": ran.ref.version,
                   "X-Edgefleet-Sha256": ran.ref.sha256, "X-Edgefleet-Latency-Ms": f"{latency:.3f}"}
        if binary:
            self._send(200, _encode_npz(outputs), NPZ, headers)
        else:
            body = {"model": ran.ref.model_dump(mode="json"), "latency_ms": latency,
                    "outputs": {k: v.tolist() for k, v in outputs.items()}}
            self._send(200, json.dumps(body).encode(), "application/json", headers)


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False


class _TcpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


UNIX_PATH_MAX = 107


class ServingEndpoint:
    """The HTTP endpoint(s) in background threads: a Unix socket and/or a loopback TCP port.

    Example:
        >>> ep = ServingEndpoint(host, socket_path=Path("/run/edgefleet/serve.sock")).start()  # doctest: +SKIP
        >>> ep.stop()  # doctest: +SKIP
    """

    def __init__(self, host: ModelHost, *, socket_path: Path | None = None, port: int | None = None,
                 socket_mode: int = 0o660) -> None:
        if socket_path is None and port is None:
            raise ValueError("serving needs a socket path or a port")
        if socket_path is not None and len(str(socket_path)) > UNIX_PATH_MAX:
            raise ValueError(f"serving socket path is {len(str(socket_path))} characters; Unix sockets allow "
                             f"{UNIX_PATH_MAX}: choose a shorter --serve-socket")
        self.host = host
        self.socket_path = socket_path
        self.port = port
        self.socket_mode = socket_mode
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> ServingEndpoint:
        """Bind and serve; a stale socket file of a previous run is replaced."""
        handler = type("Handler", (_Handler,), {"host": self.host})
        if self.socket_path is not None:
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            if self.socket_path.is_socket():
                self.socket_path.unlink()
            server: socketserver.BaseServer = _UnixServer(str(self.socket_path), handler)
            os.chmod(self.socket_path, self.socket_mode)
            self._servers.append(server)
        if self.port is not None:
            tcp = _TcpServer(("127.0.0.1", self.port), handler)
            self.port = int(tcp.server_address[1])
            self._servers.append(tcp)
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                      name="agent-serving", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("serving the active model on %s", self.describe())
        return self

    def describe(self) -> str:
        """Where applications connect."""
        parts = [f"unix:{self.socket_path}"] if self.socket_path else []
        return ", ".join(parts + ([f"http://127.0.0.1:{self.port}"] if self.port is not None else []))

    def stop(self) -> None:
        """Stop accepting, close the sockets and remove the socket file."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)
        self._servers.clear()
        self._threads.clear()
        if self.socket_path is not None:
            try:
                if self.socket_path.is_socket():
                    self.socket_path.unlink()
            except OSError:
                pass


def socket_reachable(path: Path, timeout: float = 1.0) -> bool:
    """True when something accepts connections on the Unix socket (used by tests and the install check)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True
