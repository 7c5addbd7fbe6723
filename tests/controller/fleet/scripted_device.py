"""A tiny scripted device for fleet tests: a real paho client with a device login, no agent logic.

It publishes exactly what a test tells it to and records what the controller sends,
so the tests pin the controller's side of the protocol without depending on the
real agent.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
import uuid
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common import topics
from common.errors import ReasonCode
from common.messages import (
    BenchMetrics,
    BenchReport,
    ChunkRequest,
    Desired,
    DeviceCaps,
    DeviceState,
    JobReport,
    ModelRef,
    decode,
)


class ScriptedDevice:
    """One device login on the test broker."""

    def __init__(self, broker, fleet: str, device_id: str, profile: str = "rpi4") -> None:
        self.fleet, self.device_id, self.profile = fleet, device_id, profile
        self.password = broker.add_user(device_id)
        self.host, self.port = broker.host, broker.port
        self.session_id = uuid.uuid4().hex
        self.connected_at = datetime.now(UTC)
        self.seq = 0
        self.desired: queue.Queue[bytes] = queue.Queue()
        self.chunks: dict[str, dict[int, bytes]] = {}
        self.chunk_event = threading.Condition()
        self.client: mqtt.Client | None = None

    def _make_client(self) -> mqtt.Client:
        # the broker binds a device account to client id = device id (refuses any other)
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=self.device_id)
        c.username_pw_set(self.device_id, self.password)
        will = DeviceState(
            device_id=self.device_id,
            session_id=self.session_id,
            seq=0,
            online=False,
            profile=self.profile,
            ts=self.connected_at,
        )
        c.will_set(topics.state(self.fleet, self.device_id), will.to_bytes(), qos=1, retain=True)
        c.on_message = self._on_message
        return c

    def connect(self, birth: bool = True) -> ScriptedDevice:
        subscribed = threading.Event()
        self.client = self._make_client()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(self.host, self.port, keepalive=10)
        self.client.loop_start()
        root = topics.device_root(self.fleet, self.device_id)
        self.client.subscribe([(topics.desired(self.fleet, self.device_id), 1), (f"{root}/art/+/chunk/+", 1)])
        assert subscribed.wait(5), "device subscription not acknowledged"
        if birth:
            self.state(online=True)
            self.publish(
                topics.caps(self.fleet, self.device_id),
                DeviceCaps(
                    device_id=self.device_id, profile=self.profile, arch="aarch64", cores=4, ram_mb=4096
                ).to_bytes(),
                retain=True,
            )
        return self

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/desired"):
            self.desired.put(msg.payload)
            return
        parsed = topics.parse(msg.topic)
        with self.chunk_event:
            self.chunks.setdefault(parsed.sha256, {})[parsed.index] = msg.payload
            self.chunk_event.notify_all()

    def publish(self, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> None:
        assert self.client is not None
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def state(
        self,
        online: bool = True,
        session_id: str | None = None,
        seq: int | None = None,
        ts: datetime | None = None,
        **kw,
    ) -> None:
        if seq is None:
            self.seq += 1
            seq = self.seq
        msg = DeviceState(
            device_id=self.device_id,
            session_id=session_id or self.session_id,
            seq=seq,
            online=online,
            profile=self.profile,
            ts=ts or datetime.now(UTC),
            **kw,
        )
        self.publish(topics.state(self.fleet, self.device_id), msg.to_bytes(), retain=True)

    def job(self, deployment_id: str, seq: int, state: str, reason: ReasonCode = ReasonCode.OK) -> None:
        rep = JobReport(device_id=self.device_id, deployment_id=deployment_id, seq=seq, state=state, reason=reason)
        self.publish(topics.job(self.fleet, self.device_id, deployment_id), rep.to_bytes())

    def bench(self, deployment_id: str, sha256: str, decision: str, reasons: list[str] | None = None) -> None:
        m = BenchMetrics(
            latency_p50_ms=1.0,
            latency_p95_ms=1.5,
            load_ms=3.0,
            peak_rss_delta_mb=2.0,
            quality=0.999,
            quality_metric="cosine",
            runs=20,
        )
        rep = BenchReport(
            device_id=self.device_id,
            deployment_id=deployment_id,
            decision=decision,
            candidate=ModelRef(model_id="m", version="v", sha256=sha256, format="onnx"),
            candidate_metrics=m,
            reasons=reasons or [],
        )
        self.publish(topics.bench(self.fleet, self.device_id, deployment_id), rep.to_bytes())

    def request_chunks(self, deployment_id: str, sha256: str, missing: list[int] | None = None) -> None:
        req = ChunkRequest(deployment_id=deployment_id, sha256=sha256, missing=missing or [])
        self.publish(topics.chunk_request(self.fleet, self.device_id, sha256), req.to_bytes())

    def next_desired(self, timeout: float = 5.0) -> Desired:
        return decode(Desired, self.desired.get(timeout=timeout))

    def wait_chunks(self, sha256: str, count: int, timeout: float = 10.0) -> dict[int, bytes]:
        deadline = time.monotonic() + timeout
        with self.chunk_event:
            while len(self.chunks.get(sha256, {})) < count and time.monotonic() < deadline:
                self.chunk_event.wait(0.1)
            return dict(self.chunks.get(sha256, {}))

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes the last-will."""
        assert self.client is not None
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def assemble(chunks: dict[int, bytes]) -> bytes:
    return b"".join(chunks[i] for i in sorted(chunks))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
