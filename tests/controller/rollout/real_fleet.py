"""The controller side of the real-agent rollout tests: registry, signed artifacts, fleet service, engine.

One set-up for every test that runs real agent processes against a rollout, so they all judge devices
against the same 16-sample golden set and the same signing key (``tmp_path/keys/ctl.pub`` for the agents).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from common.keys import load_or_create_private_key
from controller.artifacts import ArtifactBuilder
from controller.fleet import FleetService
from controller.registry import Registry
from controller.rollout import RolloutEngine


def start_real_controller(mosquitto, tmp_path: Path) -> tuple[str, Registry, FleetService, RolloutEngine,
                                                              np.random.Generator]:
    """A started fleet service and rollout engine on a fresh fleet; returns (fleet, registry, service, engine, rng).

    The rng is the one the golden set was drawn from, handed back so a test's own inputs continue its stream.
    """
    fleet = f"t{uuid.uuid4().hex[:8]}"
    key = load_or_create_private_key(tmp_path / "keys" / "ctl.key")
    reg = Registry(tmp_path / "ws")
    rng = np.random.default_rng(3)
    golden = [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(16)]

    def golden_source(model, version, root):
        return golden, reg.blob_path(sha256=root.sha256), "cosine"

    builder = ArtifactBuilder(reg, signing_key=key, golden_source=golden_source, chunk_size=1024)
    svc = FleetService(reg, host=mosquitto.host, port=mosquitto.port,
                       password=mosquitto.credentials.users["controller"], fleet=fleet,
                       artifact_builder=builder).start()
    engine = RolloutEngine(svc, tick_s=0.1).start()
    return fleet, reg, svc, engine, rng
