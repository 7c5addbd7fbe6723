"""Serving benchmark: failed requests while the fleet commits and rolls back under load.

Everything on loopback and real: mosquitto (password file + ACL), the controller's registry
+ FleetService + ArtifactBuilder in this process, one agent as its own OS process
(``python -m agent``, serving on a Unix socket), and an application in this process that
calls the agent through ``agent.client.InferenceClient`` at a fixed rate (open loop: each
client thread has a schedule of send times and never waits for a slow answer to catch up).

One cycle = deploy a new build (the agent downloads, benchmarks, commits → the endpoint swaps
to it) + fleet rollback of that deployment (the agent reinstates the previous build from its
other slot → swaps back). Counted: requests sent, failed (any non-200 or transport error),
which build answered each request, client-side latency overall and within ±1 s of each swap.

Usage: ``.venv/bin/python benchmarks/serving.py [--cycles 10] [--rate 50]``
→ ``benchmarks/results/serving.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.client import InferenceClient, InferenceError  # noqa: E402
from common.keys import load_or_create_private_key  # noqa: E402
from controller.artifacts import ArtifactBuilder  # noqa: E402
from controller.broker import Credentials, start_mosquitto  # noqa: E402
from controller.fleet import FleetService  # noqa: E402
from controller.registry import Registry  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
IN, HIDDEN, OUT = 256, 512, 16


def mlp_onnx(path: Path, scale: float = 1.0) -> Path:
    """A 256→512→512→16 MLP (dynamic batch): ~0.4 MFLOP per sample, a small real workload."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((IN, HIDDEN)) * 0.05 * scale).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, HIDDEN)) * 0.05).astype(np.float32)
    w3 = (rng.standard_normal((HIDDEN, OUT)) * 0.05).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h1"]), helper.make_node("Relu", ["h1"], ["a1"]),
             helper.make_node("MatMul", ["a1", "W2"], ["h2"]), helper.make_node("Relu", ["h2"], ["a2"]),
             helper.make_node("MatMul", ["a2", "W3"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", IN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUT])],
                              initializer=[numpy_helper.from_array(w, n) for w, n in
                                           ((w1, "W1"), (w2, "W2"), (w3, "W3"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


class Application:
    """Open-loop load: ``threads`` clients, each sending at ``rate / threads`` requests per second."""

    def __init__(self, socket_path: Path, rate: float, threads: int = 4) -> None:
        self.socket_path, self.rate, self.threads = socket_path, rate, threads
        self.records: list[tuple[float, float, str, str]] = []  # (sent at, latency ms, version | "", error)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> Application:
        for w in self._workers:
            w.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(30)

    def _run(self, index: int) -> None:
        interval = self.threads / self.rate
        rng = np.random.default_rng(index)
        x = rng.standard_normal((1, IN)).astype(np.float32)
        next_at = time.monotonic() + index * interval / self.threads
        with InferenceClient(socket_path=self.socket_path, timeout=10) as client:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += interval
                sent = time.monotonic()
                try:
                    res = client.infer({"x": x})
                    rec = (sent, (time.monotonic() - sent) * 1000, res.version, "")
                except InferenceError as exc:
                    rec = (sent, (time.monotonic() - sent) * 1000, "", str(exc))
                with self._lock:
                    self.records.append(rec)


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def run(cycles: int, rate: float, workdir: Path) -> dict[str, Any]:  # noqa: PLR0915 - one linear scenario
    broker = start_mosquitto(workdir / "mosquitto", Credentials())
    key = load_or_create_private_key(workdir / "keys" / "ctl.key")
    reg = Registry(workdir / "ws")
    rng = np.random.default_rng(1)
    golden = [{"x": rng.standard_normal((1, IN)).astype(np.float32)} for _ in range(16)]
    builder = ArtifactBuilder(reg, signing_key=key, golden_source=lambda m, v, root: (
        golden, reg.blob_path(sha256=root.sha256), "cosine"), chunk_size=64 * 1024)
    fleet, device = "bench", "app-dev-1"
    svc = FleetService(reg, host=broker.host, port=broker.port, password=broker.credentials.users["controller"],
                       fleet=fleet, artifact_builder=builder).start()
    pw_file = workdir / "dev.pw"
    pw_file.write_text(broker.add_user(device))
    sock = Path(tempfile.mkdtemp(prefix="efb", dir="/tmp")) / "serve.sock"
    log_path = workdir / "agent.log"
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "--device-id", device, "--fleet", fleet, "--profile", "x86-edge",
         "--broker", f"{broker.host}:{broker.port}", "--password-file", str(pw_file), "--data-dir",
         str(workdir / "agent"), "--controller-key", str(workdir / "keys" / "ctl.pub"), "--threads", "1",
         "--bench-runs", "20", "--bench-warmup", "3", "--telemetry-interval", "2", "--serve-socket", str(sock)],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO)
    swaps: list[dict[str, Any]] = []
    app: Application | None = None
    try:
        assert svc.wait_for_devices([device], timeout=30), "agent did not connect"
        model = reg.create_model(name="mlp")
        base = reg.add_version(model_id=model.id, path=mlp_onnx(workdir / "v0.onnx"))
        builds = [reg.add_version(model_id=model.id, path=mlp_onnx(workdir / f"v{i}.onnx", 1.0 + 1e-4 * i),
                                  technique=f"build-{i}", parent_id=base.id) for i in range(1, cycles + 1)]
        dep = svc.deploy(version_id=base.id, device_ids=[device])
        assert svc.wait_for(dep, 120).as_dict()["state"] == "succeeded"
        probe = InferenceClient(socket_path=sock)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                probe.health()
                break
            except InferenceError:
                time.sleep(0.2)
        app = Application(sock, rate).start()
        time.sleep(3)
        started = time.monotonic()
        for i, build in enumerate(builds, 1):
            for label in ("commit", "rollback"):
                t0 = time.monotonic()
                dep_now = (svc.deploy(version_id=build.id, device_ids=[device]) if label == "commit"
                           else svc.rollback(dep.id, reason="benchmark cycle"))
                summary = svc.wait_for(dep_now, 120).as_dict()
                want = build.id if label == "commit" else base.id
                while time.monotonic() - t0 < 60 and probe.model()["version"] != want:
                    time.sleep(0.05)
                swaps.append({"cycle": i, "kind": label, "deployment_state": summary["state"],
                              "seconds": round(time.monotonic() - t0, 2), "at": time.monotonic(),
                              "served": probe.model()["version"] == want})
                if label == "commit":
                    dep = dep_now
                time.sleep(1.0)
        elapsed = time.monotonic() - started
        time.sleep(2)
        app.stop()
        stats = probe.stats()
        probe.close()
    finally:
        if app is not None:
            app.stop()
        agent.terminate()
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
        svc.stop()
        reg.close()
        broker.stop()
        import shutil

        shutil.rmtree(sock.parent, ignore_errors=True)
    recs = app.records
    in_run = [r for r in recs if started <= r[0] <= started + elapsed]
    failed = [r for r in recs if r[3]]
    near_swap = [r for r in recs if any(abs(r[0] - s["at"]) <= 1.0 for s in swaps)]
    versions: list[str] = []
    for r in sorted(recs):
        if r[2] and (not versions or versions[-1] != r[2]):
            versions.append(r[2])
    ok_lat = [r[1] for r in recs if not r[3]]
    return {
        "cycles": cycles,
        "target_rate_per_s": rate,
        "achieved_rate_per_s": round(len(in_run) / elapsed, 2),
        "requests": len(recs),
        "failed": len(failed),
        "failures": [r[3] for r in failed[:10]],
        "swaps_seen_by_agent": stats["swaps"],
        "version_changes_seen_by_application": len(versions) - 1,
        "all_swaps_served": all(s["served"] for s in swaps),
        "deployments": [{k: v for k, v in s.items() if k != "at"} for s in swaps],
        "latency_ms": {"p50": _pct(ok_lat, 50), "p95": _pct(ok_lat, 95), "p99": _pct(ok_lat, 99),
                       "max": round(max(ok_lat), 3) if ok_lat else None},
        "latency_ms_within_1s_of_swap": {"requests": len(near_swap), "p50": _pct([r[1] for r in near_swap], 50),
                                         "p95": _pct([r[1] for r in near_swap], 95),
                                         "max": round(max((r[1] for r in near_swap), default=0), 3)},
        "agent_window": stats["window"],
        "seconds": round(elapsed, 1),
    }


def write(result: dict[str, Any], note: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(result, indent=2))
    lat, near = result["latency_ms"], result["latency_ms_within_1s_of_swap"]
    commit_s = [d["seconds"] for d in result["deployments"] if d["kind"] == "commit"]
    back_s = [d["seconds"] for d in result["deployments"] if d["kind"] == "rollback"]
    lines = [
        "# Serving under commit/rollback cycles",
        "",
        f"{note}",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| cycles (commit + fleet rollback) | {result['cycles']} |",
        f"| target / achieved rate | {result['target_rate_per_s']} / {result['achieved_rate_per_s']} req/s |",
        f"| requests | {result['requests']} |",
        f"| **failed requests** | **{result['failed']}** |",
        f"| swaps (agent) / build changes seen by the application | {result['swaps_seen_by_agent']} / "
        f"{result['version_changes_seen_by_application']} |",
        f"| client latency p50 / p95 / p99 / max (ms) | {lat['p50']} / {lat['p95']} / {lat['p99']} / {lat['max']} |",
        f"| within ±1 s of a swap: requests, p50 / p95 / max (ms) | {near['requests']}, {near['p50']} / "
        f"{near['p95']} / {near['max']} |",
        f"| deploy → new build serving (s), median | {sorted(commit_s)[len(commit_s) // 2]} |",
        f"| fleet rollback → old build serving (s), median | {sorted(back_s)[len(back_s) // 2]} |",
        "",
        "The commit time includes download, verification and the on-device benchmark (20 runs); the",
        "rollback reinstates the other slot's model without a transfer. Latency is measured by the",
        "application (Unix socket, .npz, one 256-float sample per request), not by the agent.",
    ]
    (RESULTS / "serving.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ef-serving-") as tmp:
        result = run(args.cycles, args.rate, Path(tmp))
    load = os.getloadavg()
    note = (f"Run {datetime.now().isoformat(timespec='minutes')} on {platform.machine()}, {os.cpu_count()} CPUs "
            f"shared with other sessions (load average {load[0]:.1f} at the end), `nice -n 10`; one agent "
            f"(1 inference thread), controller and mosquitto on the same machine.")
    result["environment"] = note
    write(result, note)
    print(json.dumps({k: result[k] for k in ("requests", "failed", "achieved_rate_per_s", "latency_ms")}))
    return 0 if result["failed"] == 0 and result["all_swaps_served"] else 1


if __name__ == "__main__":
    sys.exit(main())
