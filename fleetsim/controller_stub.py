"""A minimal controller for agent tests: publishes Desired, serves chunks, records reports.

Real MQTT (paho against the test mosquitto, logged in as the ``controller`` user); the
knobs (corrupt, truncate, withhold, duplicate, reverse) produce the bad inputs the agent
must survive. Logins, decoding and publishing go through :mod:`fleetsim.wire` and the
topic table, like the simulated agents.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import topics
from common.grant import grant_for
from common.manifest import Manifest, read_chunk
from common.messages import (
    BenchReport,
    ChunkRequest,
    Desired,
    DeviceCaps,
    DeviceState,
    JobReport,
    Telemetry,
    decode,
)
from common.topics import TopicKind
from fleetsim import wire
from fleetsim.waiting import wait_until


class Offered(Protocol):
    """A built artifact the stub can serve: its signed manifest and each role's file."""

    manifest: Manifest
    paths: dict[str, Path]


class ControllerStub:
    """Logged in as ``controller`` on one fleet; records every report and serves offered blobs."""

    def __init__(self, host: str, port: int, password: str, fleet: str,
                 key: Ed25519PrivateKey | None = None) -> None:
        self.fleet = fleet
        self.key = key  # signs the grant of every Desired published without one, as FleetService does
        self._serials = itertools.count(int(time.time() * 1000))
        self.blobs: dict[str, tuple[Path, int]] = {}
        self.jobs: dict[str, list[JobReport]] = defaultdict(list)
        self.benches: dict[str, list[BenchReport]] = defaultdict(list)
        self.states: dict[str, DeviceState] = {}
        self.caps: dict[str, DeviceCaps] = {}
        self.telemetry: dict[str, list[Telemetry]] = defaultdict(list)
        self.requests: list[tuple[str, ChunkRequest]] = []
        self.corrupt_once: set[tuple[str, int]] = set()
        self.truncate_once: set[tuple[str, int]] = set()
        self.withhold: Callable[[str, int], bool] = lambda sha, idx: False
        self.duplicate = False
        self.reverse = False
        self.served = 0
        self._cond = threading.Condition()
        self.client = wire.login("controller", password, client_id=f"ctl-stub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: connected.set()
        self.client.connect(host, port)
        self.client.loop_start()
        assert connected.wait(10), "controller stub could not connect"
        subs = [(topics.fleet_filter(fleet, spec.kind), 1) for spec in topics.sent_by("device")]
        result, mid = self.client.subscribe(subs)
        assert result == mqtt.MQTT_ERR_SUCCESS
        time.sleep(0.2)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()

    # -- controller actions

    def offer(self, artifact: Offered) -> None:
        """Serve this artifact's blobs to whoever asks."""
        for ref in artifact.manifest.files:
            self.blobs[ref.sha256] = (artifact.paths[ref.role], ref.chunk_size)

    def publish_desired(self, device: str, desired: Desired | bytes) -> None:
        """Publish (retained) a Desired, or raw bytes for malformed-input tests.

        A Desired without a grant gets one signed with ``key`` (version counter 1, a fresh serial),
        as the controller's fleet service adds it.
        """
        if isinstance(desired, Desired) and desired.grant is None and self.key is not None:
            desired = desired.model_copy(update={"grant": grant_for(
                manifest=desired.manifest, deployment_id=desired.deployment_id, kind=desired.kind, fleet=self.fleet,
                device_id=device, counter=1, serial=next(self._serials), private_key=self.key)})
        wire.publish(self.client, TopicKind.DESIRED, topics.desired(self.fleet, device), desired).wait_for_publish(5)

    def deploy(self, device: str, artifact: Offered, deployment_id: str, kind: str = "deploy") -> None:
        """Offer the artifact and publish its Desired to one device."""
        self.offer(artifact)
        self.publish_desired(device, Desired(deployment_id=deployment_id, manifest=artifact.manifest, kind=kind))

    def clear_desired(self, device: str) -> None:
        """Clear a device's retained desired."""
        wire.publish(self.client, TopicKind.DESIRED, topics.desired(self.fleet, device), b"").wait_for_publish(5)

    # -- waiting

    def wait_for(self, predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
        """The predicate's first truthy value, re-checked on every received message; AssertionError on timeout."""
        with self._cond:
            return wait_until(predicate, timeout, lambda: f"{what}; jobs={dict(self.jobs)}", 0.2, condition=self._cond)

    def job_reports(self, device: str, deployment: str) -> list[JobReport]:
        """Job reports one device sent for one deployment, in arrival order."""
        return [r for r in self.jobs[device] if r.deployment_id == deployment]

    def wait_outcome(self, device: str, deployment: str, timeout: float = 45.0) -> list[JobReport]:
        """Reports of a deployment once it reached idle (commit path) or a failure/rejection."""

        def done() -> list[JobReport] | None:
            reps = self.job_reports(device, deployment)
            states = [r.state for r in reps]
            # back to idle (commit or rollback path), or a one-shot answer (rejected / already active)
            return reps if "idle" in states or (states and "download" not in states) else None

        return self.wait_for(done, timeout, f"{device}/{deployment} to finish")  # type: ignore[return-value]

    # -- MQTT

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = topics.parse(msg.topic)
        if parsed.kind is topics.TopicKind.CHUNK_REQUEST:
            self._serve(parsed.device, decode(ChunkRequest, msg.payload))
        elif parsed.kind is topics.TopicKind.JOB:
            self._record(self.jobs[parsed.device], decode(JobReport, msg.payload))
        elif parsed.kind is topics.TopicKind.BENCH:
            self._record(self.benches[parsed.device], decode(BenchReport, msg.payload))
        elif parsed.kind is topics.TopicKind.CAPS:
            self.caps[parsed.device] = decode(DeviceCaps, msg.payload)
        elif parsed.kind is topics.TopicKind.TELEMETRY:
            self._record(self.telemetry[parsed.device], decode(Telemetry, msg.payload))
        elif parsed.kind is topics.TopicKind.STATE and msg.payload:
            with self._cond:
                self.states[parsed.device] = decode(DeviceState, msg.payload)
                self._cond.notify_all()

    def _record(self, bucket: list[Any], item: object) -> None:
        with self._cond:
            bucket.append(item)
            self._cond.notify_all()

    def _serve(self, device: str, request: ChunkRequest) -> None:
        with self._cond:
            self.requests.append((device, request))
            self._cond.notify_all()
        if request.sha256 not in self.blobs:
            return
        path, chunk_size = self.blobs[request.sha256]
        count = -(-path.stat().st_size // chunk_size)
        indices = request.missing or list(range(count))
        if self.reverse:
            indices = list(reversed(indices))
        for idx in indices:
            if self.withhold(request.sha256, idx):
                continue
            data = read_chunk(path, idx, chunk_size)
            key = (request.sha256, idx)
            if key in self.corrupt_once:
                self.corrupt_once.discard(key)
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            elif key in self.truncate_once:
                self.truncate_once.discard(key)
                data = data[: len(data) // 2]
            topic = topics.chunk(self.fleet, device, request.sha256, idx)
            for _ in range(2 if self.duplicate else 1):
                wire.publish(self.client, TopicKind.CHUNK, topic, data)
                self.served += 1
