"""The fault campaign's fleet: a real mosquitto, ``edgefleet controller`` as a process, real agent processes.

Everything goes through the product's own doors: models are uploaded and deployed over the REST
API, agents are ``python -m agent`` processes with their own logins and data dirs, and the broker
is restarted on the same port. Each fault test ends by checking that every device runs a working
model and that every job report an agent logged as sent is in the controller's registry.
Each outcome is appended (one JSON line) to ``$EDGEFLEET_RELIABILITY_OUT`` when it is set, which
is how ``benchmarks/reliability.py`` collects the figures.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

from controller.broker import BrokerHandle, Credentials, free_port, start_mosquitto
from tests.controller.api.conftest import REPO, Controller, make_controller
from tests.faults.proxy import TcpProxy

FAST_AGENT = ["--threads", "1", "--bench-runs", "6", "--bench-warmup", "1", "--rerequest-interval", "1",
              "--telemetry-interval", "5", "--download-timeout", "120"]
LOOSE = {"max_latency_ratio": 4.0, "latency_slack_ms": 50.0, "max_memory_ratio": 4.0, "memory_slack_mb": 512.0,
         "min_quality": 0.9}
"""The campaign judges delivery under faults, not speed on a loaded 2-core machine."""


def mlp_onnx(path: Path, hidden: int, seed: int) -> Path:
    """input[batch,16] -> MatMul(16,hidden) -> Relu -> MatMul(hidden,8): ~hidden*96 bytes of weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((16, hidden)) * 0.1).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((hidden, 8)) * 0.1).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["h1"]),
             helper.make_node("MatMul", ["h1", "w2"], ["output"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", 8])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@dataclass
class FaultOutcome:
    """One run of one fault: what the reliability table reports."""

    fault: str
    devices: int
    reports_sent: int
    reports_received: int
    devices_without_working_model: int
    recover_s: float
    detail: str = ""
    runs: int = 1
    extra: dict = field(default_factory=dict)

    def record(self) -> None:
        out = os.environ.get("EDGEFLEET_RELIABILITY_OUT")
        if out:
            with open(out, "a") as fh:
                fh.write(json.dumps(asdict(self)) + "\n")


class AgentProc:
    """``python -m agent`` with its own login, data dir and log; optionally under libfaketime."""

    def __init__(self, fleet: Fleet, device_id: str, data_dir: Path | None = None) -> None:
        self.fleet, self.device_id = fleet, device_id
        self.data_dir = data_dir or fleet.tmp / "agents" / device_id
        self.log = fleet.tmp / "agents" / f"{device_id}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.password_file = fleet.tmp / "agents" / f"{device_id}.pw"
        self.password_file.write_text(fleet.broker.add_user(device_id))
        self.proc: subprocess.Popen | None = None

    def start(self, *, port: int | None = None, faketime: str | None = None) -> AgentProc:
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        if faketime is not None:
            env.update(LD_PRELOAD=FAKETIME_LIB, FAKETIME=faketime)
        args = ["--device-id", self.device_id, "--fleet", self.fleet.name, "--profile", "x86-edge",
                "--broker", f"127.0.0.1:{port or self.fleet.agent_port}", "--password-file", str(self.password_file),
                "--data-dir", str(self.data_dir), "--controller-key", str(self.fleet.controller_pub), *FAST_AGENT]
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", *args], stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def reports_sent(self, deployment_id: str) -> set[int]:
        """Seqs of the job reports this agent published for a deployment (from its log)."""
        pattern = re.compile(rf"job {re.escape(deployment_id)} seq=(\d+) ")
        return {int(m.group(1)) for m in pattern.finditer(self.log.read_text(errors="replace"))}


FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


class Fleet:
    """Broker + controller process + agents for one fault test."""

    def __init__(self, tmp: Path, name: str = "faults", *, devices: int = 2) -> None:
        self.tmp, self.name = tmp, name
        self.creds = Credentials()
        self.broker_port = free_port()
        self.broker: BrokerHandle = start_mosquitto(tmp / "broker-0", self.creds, port=self.broker_port)
        self.broker_starts = 1
        self.proxy = TcpProxy(self.broker_port).start()  # agents reach the broker through it: drops, stalls, slow links
        self.agent_port = self.proxy.port
        self.controller: Controller = make_controller(
            tmp, EDGEFLEET_BROKER_HOST="127.0.0.1", EDGEFLEET_BROKER_PORT=str(self.broker_port),
            EDGEFLEET_BROKER_PASSWORD=self.creds.users["controller"], EDGEFLEET_FLEET=name,
            EDGEFLEET_MAX_UPLOAD_MB="16").start()
        self.controller_pub = self.controller.workspace / "keys" / "controller.pub"
        self.device_ids = [f"{name}-{i}" for i in range(devices)]
        self.agents: dict[str, AgentProc] = {}
        self._models = 0

    # ----------------------------------------------------------------- lifecycle
    def start_agents(self, **kwargs: object) -> None:
        for dev in self.device_ids:
            self.agents.setdefault(dev, AgentProc(self, dev)).start(**kwargs)  # type: ignore[arg-type]
        self.wait_online(self.device_ids)

    def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        self.controller.stop()
        self.proxy.close()
        self.broker.stop()

    def restart_broker(self, down_s: float = 1.0) -> None:
        self.broker.stop()
        time.sleep(down_s)
        self.broker = start_mosquitto(self.tmp / f"broker-{self.broker_starts}", self.creds, port=self.broker_port)
        self.broker_starts += 1

    def kill_controller(self) -> None:
        self.controller.stop(signal.SIGKILL)

    def start_controller(self) -> None:
        self.controller.start()

    # ----------------------------------------------------------------- REST
    def api(self) -> httpx.Client:
        return self.controller.client("admin", timeout=60)

    def upload(self, hidden: int = 4096) -> str:
        """A new model version (with samples, so the deployment builds its golden set from them)."""
        self._models += 1
        model = mlp_onnx(self.tmp / f"m{self._models}.onnx", hidden, seed=self._models)
        samples = io.BytesIO()
        np.savez(samples, input=np.random.default_rng(self._models).standard_normal((8, 16)).astype(np.float32))
        with self.api() as api:
            r = api.post("/compression/models", data={"name": "campaign"},
                         files={"file": ("m.onnx", model.read_bytes()), "samples": ("s.npz", samples.getvalue())})
        assert r.status_code == 201, r.text
        return r.json()["data"]["version"]["id"]

    def deploy(self, version_id: str, devices: list[str] | None = None) -> str:
        with self.api() as api:
            r = api.post("/deployments", json={"version_id": version_id, "device_ids": devices or self.device_ids,
                                               "thresholds": LOOSE})
        assert r.status_code == 202, r.text
        return r.json()["data"]["id"]

    def deployment(self, deployment_id: str) -> dict:
        with self.api() as api:
            return api.get(f"/deployments/{deployment_id}").json()["data"]

    def devices(self) -> dict[str, dict]:
        with self.api() as api:
            return {d["id"]: d for d in api.get("/devices").json()["data"]}

    def wait_online(self, devices: list[str], timeout: float = 60) -> None:
        self.wait(lambda: all(self.devices().get(d, {}).get("online") for d in devices), timeout,
                  f"devices {devices} online")

    def wait_done(self, deployment_id: str, timeout: float = 180) -> dict:
        return self.wait(lambda: (d := self.deployment(deployment_id)) and d.get("done") and d, timeout,
                         f"deployment {deployment_id} done")

    def slow_deploy(self, version_id: str, bytes_per_s: float = 1_000_000) -> str:
        """Deploy over a slow link so a fault can land mid-download; returns once a device downloads."""
        self.proxy.bytes_per_s = bytes_per_s
        dep = self.deploy(version_id)
        self.wait_state(dep, {"download"})
        return dep

    def wait_state(self, deployment_id: str, states: set[str], timeout: float = 60) -> None:
        """Until some device of the deployment reports one of ``states`` (e.g. ``{"download"}``)."""
        def seen() -> bool:
            devices = self.deployment(deployment_id).get("devices", [])
            return any(d.get("last_job_state") in states for d in devices)
        self.wait(seen, timeout, f"a device of {deployment_id} in {states}")

    @staticmethod
    def wait(predicate, timeout: float, what: str):  # noqa: ANN001, ANN205 - test helper
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except (httpx.HTTPError, KeyError, TypeError) as exc:  # the controller may be restarting
                last_error = exc
            time.sleep(0.3)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")

    # ----------------------------------------------------------------- verdict
    def verdict(self, fault: str, deployments: list[str], started: float, *, want_version: str | None,
                detail: str = "", tolerate_lost_transitions: bool = False) -> FaultOutcome:
        """Every device on a working model (``want_version`` if given), every sent report received.

        ``tolerate_lost_transitions``: only for a broker restart while the controller is down, where
        reports queued in the broker for the controller's session are lost unless the broker persists
        them (mosquitto ``persistence true``); the last report of each device must still arrive.
        """
        devices = self.devices()
        without = [d for d in self.device_ids if not (devices.get(d, {}).get("active") or {}).get("version")]
        wrong = [d for d in self.device_ids
                 if want_version and (devices.get(d, {}).get("active") or {}).get("version") != want_version]
        recover_s = time.monotonic() - started
        sent = received = 0
        missing: dict[str, list[int]] = {}
        from controller.registry import Registry

        reg = Registry(self.controller.workspace)
        try:
            for dep in deployments:
                for dev in self.device_ids:
                    mine = self.agents[dev].reports_sent(dep)
                    got = {r["seq"] for r in reg.reports.job_reports(deployment_id=dep, device_id=dev)}
                    sent += len(mine)
                    received += len(mine & got)
                    lost = mine - got
                    if lost and not (tolerate_lost_transitions and mine and max(mine) in got):
                        missing[f"{dev}/{dep[:8]}"] = sorted(lost)
        finally:
            reg.close()
        outcome = FaultOutcome(fault=fault, devices=len(self.device_ids), reports_sent=sent,
                               reports_received=received, devices_without_working_model=len(without),
                               recover_s=round(recover_s, 1), detail=detail)
        outcome.record()
        assert not without, f"{fault}: devices without a working model: {without}"
        assert not wrong, f"{fault}: devices not on {want_version}: {[(d, devices[d].get('active')) for d in wrong]}"
        assert not missing, f"{fault}: job reports sent but never received: {missing}"
        assert sent > 0
        return outcome
