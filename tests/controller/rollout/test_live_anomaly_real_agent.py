"""Live telemetry drives the rollback: a build that passes the on-device benchmark but fails the
application's real requests is rolled back by the controller's error-rate rule.

The new build was exported with a fixed batch size of 1; the golden set feeds one sample at a
time, so the agent's benchmark passes and it commits. The application on the device sends
batches of 4: every request fails on the new model, the agent's telemetry reports those errors,
the controller raises ``error_rate`` and the rollout engine rolls the device back; the
application's requests succeed again, on the old model.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from controller.rollout import RolloutPlan
from fleetsim.waiting import wait_until
from tests.controller.rollout.real_fleet import start_real_controller
from tests.tiny_models import tiny_linear_onnx

agent_daemon = pytest.importorskip("agent.daemon")
agent_config = pytest.importorskip("agent.config")
agent_client = pytest.importorskip("agent.client")

pytestmark = pytest.mark.timeout(180)


def _fixed_batch(src: Path, dest: Path) -> Path:
    """The same model with its batch axis fixed to 1 (what a careless re-export produces)."""
    import onnx

    model = onnx.load(str(src))
    for value in (*model.graph.input, *model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 1
    onnx.save(model, str(dest))
    return dest


def test_error_rate_on_real_requests_rolls_the_rollout_back(mosquitto, tmp_path):
    fleet, reg, svc, engine, rng = start_real_controller(mosquitto, tmp_path)
    dev, other = f"{fleet}-app", f"{fleet}-other"  # the canary (first) runs the application
    sock_dir = Path(tempfile.mkdtemp(prefix="efs", dir="/tmp"))
    agents = []
    for name in (dev, other):
        cfg = agent_config.AgentConfig(
            device_id=name, fleet=fleet, profile_id="x86-edge", data_dir=tmp_path / name,
            controller_key=tmp_path / "keys" / "ctl.pub", broker_host=mosquitto.host, broker_port=mosquitto.port,
            username=name, password=mosquitto.add_user(name), bench_runs=8, bench_warmup=2,
            rerequest_interval_s=1.0, telemetry_interval_s=1.0, threads=1, serve_socket=sock_dir / f"{name[-3:]}.sock")
        agents.append(agent_daemon.Agent(cfg))
    agent = agents[0]
    cfg = agent.cfg
    outcomes: list[tuple[float, str, bool]] = []
    stop = threading.Event()

    def application() -> None:
        with agent_client.InferenceClient(socket_path=cfg.serving_socket) as client:
            batch = rng.standard_normal((4, 8)).astype(np.float32)
            while not stop.is_set():
                try:
                    res = client.infer({"x": batch})
                    outcomes.append((time.monotonic(), res.version, True))
                except agent_client.InferenceError as exc:
                    outcomes.append((time.monotonic(), str(exc.status), False))
                time.sleep(0.03)

    app = threading.Thread(target=application, daemon=True)
    try:
        for a in agents:
            a.start()
        assert svc.wait_for_devices([dev, other], timeout=15)
        model = reg.create_model(name="tiny")
        v1 = reg.add_version(model_id=model.id, path=tiny_linear_onnx(tmp_path / "v1.onnx"))
        v2 = reg.add_version(model_id=model.id, path=_fixed_batch(tmp_path / "v1.onnx", tmp_path / "v2.onnx"),
                             technique="fixed-batch", parent_id=v1.id)
        gate = {"min_quality": 0.95}
        r = engine.create(version_id=v1.id, device_ids=[dev, other], plan=RolloutPlan(strategy="all_at_once",
                                                                               thresholds=gate))
        assert engine.wait(r.id, 60).state == "succeeded"
        assert wait_until(lambda: agent.serving.current is not None and agent.serving.current.ref.version == v1.id,
                          30.0)
        app.start()
        assert wait_until(lambda: sum(ok for _, _, ok in outcomes) >= 20, 30.0)

        plan = RolloutPlan(canary_count=1, waves=1, bake_s=60, thresholds=gate)
        r = engine.create(version_id=v2.id, device_ids=[dev, other], plan=plan)
        r = engine.wait(r.id, 90, until=("rolled_back", "succeeded", "failed"))
        assert r.state == "rolled_back", engine.events(r.id)
        anomaly = next(e for e in engine.events(r.id) if e["kind"] == "anomaly")
        assert anomaly["figures"]["rate"] >= 0.05 and anomaly["figures"]["inferences"] >= 20
        assert svc.telemetry.events(device_id=dev)[0]["kind"] == "error_rate"
        # the device is back on v1 and the application's requests succeed again
        assert wait_until(lambda: (reg.devices.get_device(device_id=dev).active or {}).get("version") == v1.id, 60)
        t_back = time.monotonic()
        assert wait_until(lambda: any(ok and t > t_back for t, _, ok in outcomes), 20)
        failed = [o for o in outcomes if not o[2]]
        assert failed and {status for _, status, _ in failed} == {"500"}  # the new model failed, never the endpoint
        assert outcomes[-1][1] == v1.id and outcomes[-1][2]
        assert (reg.devices.get_device(device_id=other).active or {}).get("version") == v1.id  # never got v2
    finally:
        stop.set()
        if app.is_alive():
            app.join(10)
        for a in agents:
            a.stop()
        engine.stop()
        svc.stop()
        reg.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
