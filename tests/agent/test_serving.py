"""On-device serving: applications call the active model; commits and rollbacks swap it without failed requests.

Real mosquitto, real agent, real ONNX Runtime; the requests go through the agent's Unix socket
(and its loopback port for the JSON form) exactly as an application on the device would send them.
"""

from __future__ import annotations

import http.client
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agent.client import InferenceClient, InferenceError
from agent.serving import LiveStats, ModelHost, percentile
from agent.slots import SlotStore
from common.profiles import load_profile

from .artifacts import make_artifact

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def sock_dir():
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    folder = Path(tempfile.mkdtemp(prefix="efs", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Load:
    """Requests from a few threads until stopped: every outcome and the model that answered."""

    def __init__(self, socket_path: Path, inputs: np.ndarray, threads: int = 3, pause_s: float = 0.01) -> None:
        self.socket_path, self.inputs, self.pause_s = socket_path, inputs, pause_s
        self.ok = 0
        self.failures: list[str] = []
        self.versions: list[str] = []
        self.max_error = 0.0
        self.expected: dict[str, np.ndarray] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self, index: int) -> None:
        with InferenceClient(socket_path=self.socket_path) as client:
            i = index
            while not self._stop.is_set():
                x = self.inputs[i % len(self.inputs)][None]
                i += 1
                try:
                    res = client.infer({"x": x})
                except InferenceError as exc:
                    with self._lock:
                        self.failures.append(str(exc))
                    continue
                with self._lock:
                    self.ok += 1
                    if not self.versions or self.versions[-1] != res.version:
                        self.versions.append(res.version)
                    ref = self.expected.get(res.version)
                    if ref is not None:
                        want = x @ ref[0] + ref[1]
                        self.max_error = max(self.max_error, float(np.abs(res.outputs["y"] - want).max()))
                time.sleep(self.pause_s)


def test_serving_swaps_on_commit_and_rollback_without_failed_requests(
        controller, start_agent, reference, keypair, tmp_path, sock_dir):
    key = keypair[0]
    sock = sock_dir / "serve.sock"
    agent = start_agent("app-1", serve_socket=sock, serve_port=0)
    client = InferenceClient(socket_path=sock)
    with pytest.raises(InferenceError) as before:
        client.infer({"x": reference.inputs[:1]})
    assert before.value.status == 503 and "no model is active" in str(before.value)

    v1 = make_artifact(tmp_path, reference.good_model(), reference, key, version="v1")
    v2 = make_artifact(tmp_path, reference.slightly_perturbed_model(), reference, key, version="v2")
    v3 = make_artifact(tmp_path, reference.degraded_model(), reference, key, version="v3")
    controller.deploy("app-1", v1, "s-v1")
    assert [r.state for r in controller.wait_outcome("app-1", "s-v1")][-2] == "commit"
    controller.wait_for(lambda: agent.serving.current and agent.serving.current.ref.version == "v1", 10, "v1 served")

    res = client.infer({"x": reference.inputs[:4]})
    assert res.version == "v1" and res.sha256 == v1.model_sha
    np.testing.assert_allclose(res.outputs["y"], reference.outputs()[:4], rtol=1e-4, atol=1e-4)
    info = client.model()
    assert info["inputs"] == [{"name": "x", "shape": ["N", 64], "dtype": "float32"}] and info["outputs"] == ["y"]

    # JSON over the loopback port: what a non-Python application would send
    assert agent.endpoint is not None and agent.endpoint.port
    conn = http.client.HTTPConnection("127.0.0.1", agent.endpoint.port, timeout=10)
    conn.request("POST", "/v1/infer", body=json.dumps({"inputs": {"x": reference.inputs[:2].tolist()}}),
                 headers={"Content-Type": "application/json"})
    body = json.loads(conn.getresponse().read())
    np.testing.assert_allclose(np.array(body["outputs"]["y"]), reference.outputs()[:2], rtol=1e-4, atol=1e-4)
    assert body["model"]["version"] == "v1"
    conn.close()

    # requests the model cannot take are refused with the reason, and are not model errors
    with pytest.raises(InferenceError) as wrong:
        client.infer({"images": reference.inputs[:1]})
    assert wrong.value.status == 400 and "missing ['x']" in str(wrong.value)

    load = Load(sock, reference.inputs).start()
    load.expected = {"v1": (reference.weight, reference.bias)}
    try:
        controller.deploy("app-1", v2, "s-v2")              # commit → swap to v2
        assert [r.state for r in controller.wait_outcome("app-1", "s-v2")][-2] == "commit"
        controller.wait_for(lambda: "v2" in load.versions, 20, "v2 answering requests")
        controller.deploy("app-1", v3, "s-v3")              # quality regression → rolled back, never served
        assert "rollback" in [r.state for r in controller.wait_outcome("app-1", "s-v3")]
        controller.deploy("app-1", v1, "s-back", kind="rollback")  # fleet rollback → swap back to v1
        assert [r.state for r in controller.wait_outcome("app-1", "s-back")][-2] == "commit"
        controller.wait_for(lambda: load.versions[-1] == "v1", 20, "v1 answering again")
        time.sleep(0.5)
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]
    assert load.ok > 50
    assert load.versions == ["v1", "v2", "v1"], load.versions  # v3 never answered a request
    assert load.max_error < 1e-3

    # telemetry reports the real inferences, not the stored benchmark figure
    def live_sample():
        return [t for t in controller.telemetry["app-1"] if t.inferences > 0 and t.latency_ms_p50 is not None]

    samples = controller.wait_for(live_sample, 15, "telemetry with live inferences")
    assert samples[-1].latency_ms_p95 >= samples[-1].latency_ms_p50 > 0
    assert sum(t.inferences for t in controller.telemetry["app-1"]) >= 1
    stats = client.stats()
    assert stats["inferences_total"] >= load.ok and stats["swaps"] == 3
    client.close()


def test_no_serve_option_opens_no_socket(start_agent, sock_dir):
    sock = sock_dir / "off.sock"
    agent = start_agent("quiet-1", serve=False, serve_socket=sock)
    assert agent.endpoint is None and not sock.exists()


def test_live_stats_window_and_percentiles():
    stats = LiveStats()
    for ms in range(1, 101):
        stats.record(float(ms), ok=True)
    stats.record(None, ok=False)
    window = stats.take_window()
    assert (window.inferences, window.errors) == (101, 1)
    assert window.latency_ms_p50 == 50.0 and window.latency_ms_p95 == 95.0
    empty = stats.take_window()
    assert (empty.inferences, empty.latency_ms_p50) == (0, None)
    assert stats.total == 101 and stats.total_errors == 1
    stats.record(7.0, ok=True)
    stats.model_changed()  # latencies of the previous model are dropped, the count stays
    assert stats.peek().latency_ms_p50 is None and stats.peek().inferences == 1
    assert percentile([], 50) is None and percentile([3.0], 95) == 3.0


def test_a_model_that_cannot_load_is_not_swapped_in(tmp_path, reference, keypair):
    key = keypair[0]
    store = SlotStore(tmp_path / "slots")
    host = ModelHost(store, load_profile("x86-edge"))
    assert host.refresh() is False and host.current is None  # nothing committed yet

    good = make_artifact(tmp_path, reference.good_model(), reference, key, version="v1")
    store.slots["a"].install(good.manifest, good.paths)
    store.activate("a")
    assert host.refresh() is True and host.current.ref.version == "v1"
    assert host.refresh() is False  # same model: no reload

    broken = make_artifact(tmp_path, b"not an onnx model", reference, key, version="v2")
    store.slots["b"].install(broken.manifest, broken.paths)
    store.activate("b")
    assert host.refresh() is False
    assert host.current.ref.version == "v1" and "could not load" in host.last_error
    outputs, ran, latency = host.infer({"x": reference.inputs[:1]})
    assert ran.ref.version == "v1" and latency > 0
