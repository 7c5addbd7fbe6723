"""A whole fleet on loopback for tests and benchmarks: mosquitto, registry, fleet service, rollout engine,
simulated agents.

Every simulated device gets its own broker login up front (one password-file write instead
of a SIGHUP per device). Artifacts are real signed manifests over real blobs in the registry,
so the chunk server, the per-device chunk authorisation and the agents' per-chunk sha256
checks all run for real.

Example:
    >>> with SimHarness(tmp, agents=100) as h:  # doctest: +SKIP
    ...     old = h.artifact(size=5 << 20, technique="fp32")
    ...     r = h.engine.create(artifact_id=old.id, device_ids=h.device_ids, plan=RolloutPlan(strategy="all_at_once"))
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from common.keys import generate_keypair
from common.manifest import Manifest, Thresholds, blob_ref, sign_manifest
from controller.broker import BrokerHandle, Credentials, start_mosquitto
from controller.fleet.service import FleetService
from controller.registry import ArtifactRecord, Registry
from controller.rollout.engine import RolloutEngine
from fleetsim.simulator import FleetSimulator


class SimHarness:
    """Start everything with :meth:`start` (or ``with``); :meth:`stop` leaves no process behind.

    Args:
        workdir: scratch folder (broker config, registry, keys).
        agents: number of simulated devices (ids ``sim-0000`` …).
        profile: their device profile id.
        simulator_kw: passed to :class:`FleetSimulator` (``bench``, ``bench_s``, ``telemetry_interval_s``).
        service_kw: passed to :class:`FleetService`.
        broker: reuse a running broker (its credentials get the device logins before start is not
            possible then, so each is added with ``add_user``); default: start a new mosquitto.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        agents: int = 10,
        profile: str = "x86-edge",
        fleet: str | None = None,
        simulator_kw: dict[str, Any] | None = None,
        service_kw: dict[str, Any] | None = None,
        engine_tick_s: float = 0.1,
    ) -> None:
        self.workdir = Path(workdir)
        self.fleet = fleet or f"sim{uuid.uuid4().hex[:6]}"
        self.profile = profile
        self.device_ids = [f"sim-{i:04d}" for i in range(agents)]
        self.simulator_kw = simulator_kw or {}
        self.service_kw = service_kw or {}
        self.engine_tick_s = engine_tick_s
        self.key = generate_keypair(self.workdir / "keys" / "ctl.key", self.workdir / "keys" / "ctl.pub")
        self.broker: BrokerHandle | None = None
        self.registry: Registry | None = None
        self.service: FleetService | None = None
        self.engine: RolloutEngine | None = None
        self.sim: FleetSimulator | None = None
        self._artifacts = 0

    def start(self, *, connect_timeout: float = 60.0) -> SimHarness:
        """Broker with every login, registry, fleet service, rollout engine, agents connected and known."""
        creds = Credentials()
        for dev in self.device_ids:
            creds.add(dev)
        self.broker = start_mosquitto(self.workdir / "broker", creds)
        self.registry = Registry(self.workdir / "ws")
        self.start_controller()
        self.sim = FleetSimulator(self.broker.host, self.broker.port, fleet=self.fleet,
                                  public_key=self.key.public_key(), **self.simulator_kw)
        for dev in self.device_ids:
            self.sim.add(dev, creds.users[dev], profile=self.profile)
        self.sim.start()
        if not self.sim.wait_connected(connect_timeout):
            raise TimeoutError("simulated agents did not all connect")
        assert self.service is not None
        if not self.service.wait_for_devices(self.device_ids, timeout=connect_timeout):
            raise TimeoutError("the controller did not see every simulated agent")
        return self

    def start_controller(self) -> None:
        """(Re)start the controller side: fleet service + rollout engine (a restart test calls this twice)."""
        assert self.broker is not None and self.registry is not None
        self.service = FleetService(self.registry, host=self.broker.host, port=self.broker.port,
                                    password=self.broker.credentials.users["controller"], fleet=self.fleet,
                                    **self.service_kw).start()
        self.engine = RolloutEngine(self.service, tick_s=self.engine_tick_s).start()

    def stop_controller(self) -> None:
        """Stop the rollout engine and the fleet service (the registry and the agents stay)."""
        if self.engine is not None:
            self.engine.stop()
            self.engine = None
        if self.service is not None:
            self.service.stop()
            self.service = None

    def stop(self) -> None:
        """Stop everything, agents first."""
        if self.sim is not None:
            self.sim.stop()
        self.stop_controller()
        if self.registry is not None:
            self.registry.close()
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> SimHarness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def artifact(
        self,
        *,
        size: int = 64 << 10,
        technique: str = "fp32",
        chunk_size: int = 128 << 10,
        thresholds: Thresholds | None = None,
        model_bytes: bytes | None = None,
        golden_bytes: bytes | None = None,
    ) -> ArtifactRecord:
        """A signed artifact over ``size`` random bytes (the simulated benchmark reads ``technique``),
        or over a real model + golden set (for ``real_bench_dir`` simulators)."""
        assert self.registry is not None
        self._artifacts += 1
        reg = self.registry
        model = reg.ensure_model(name="simmodel")
        version = reg.add_version(model_id=model.id, data=model_bytes or os.urandom(size), technique=technique)
        golden = reg.put_blob(data=golden_bytes or os.urandom(4096))
        files = [
            blob_ref("model", reg.blob_path(sha256=version.sha256), chunk_size, filename="model.onnx"),
            blob_ref("golden", Path(golden.path), chunk_size, filename="golden.npz"),
        ]
        manifest = Manifest(model_id=model.id, version=version.id, profile=self.profile, format="onnx",
                            technique=technique, quality_metric="cosine", files=files,
                            thresholds=thresholds or Thresholds())
        return reg.artifacts.add_artifact(manifest=sign_manifest(manifest, self.key))
