"""A tiny scripted device for fleet tests: a real paho client with a device login, no agent logic.

It publishes exactly what a test tells it to and records what the controller sends,
so the tests pin the controller's side of the protocol without depending on the
real agent. Its messages are built and published with :mod:`fleetsim.wire`, like the
simulated agents' (same QoS and retain flags, from :data:`common.topics.TOPICS`).
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from common import topics
from common.errors import ReasonCode
from common.messages import BenchMetrics, BenchReport, ChunkRequest, Desired, Message, ModelRef, decode
from common.topics import TopicKind
from common.update_states import UpdateState
from fleetsim import wire
from fleetsim.waiting import wait_until


class Broker(Protocol):
    """What a scripted device needs of the test broker: its address and a way to add a login."""

    host: str
    port: int

    def add_user(self, username: str) -> str: ...


class ScriptedDevice:
    """One device login on the test broker."""

    def __init__(self, broker: Broker, fleet: str, device_id: str, profile: str = "rpi4") -> None:
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
        c = wire.login(self.device_id, self.password, client_id=f"{self.device_id}-{self.session_id[:6]}")
        wire.will(c, self.fleet, wire.device_state(
            self.device_id, session_id=self.session_id, seq=0, online=False, profile=self.profile,
            ts=self.connected_at,
        ))
        c.on_message = self._on_message
        return c

    def connect(self, birth: bool = True) -> ScriptedDevice:
        """Connect (with the offline will) and, unless ``birth=False``, publish state and caps."""
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
            caps = wire.device_caps(self.device_id, self.profile, arch="aarch64", cores=4, ram_mb=4096)
            self.send(TopicKind.CAPS, topics.caps(self.fleet, self.device_id), caps)
        return self

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/desired"):
            self.desired.put(msg.payload)
            return
        parsed = topics.parse(msg.topic)
        with self.chunk_event:
            self.chunks.setdefault(parsed.sha256, {})[parsed.index] = msg.payload
            self.chunk_event.notify_all()

    def publish(self, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> None:
        """Publish raw bytes (malformed or spoofed payloads) and wait for the ack."""
        assert self.client is not None
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def send(self, kind: TopicKind, topic: str, message: Message) -> None:
        """Publish a well-formed message as the agent would (QoS/retain from the topic table)."""
        assert self.client is not None
        wire.publish(self.client, kind, topic, message).wait_for_publish(5)

    def state(
        self,
        online: bool = True,
        session_id: str | None = None,
        seq: int | None = None,
        ts: datetime | None = None,
        **kw: Any,
    ) -> None:
        """Publish a DeviceState (next seq of this session unless given)."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        msg = wire.device_state(
            self.device_id, session_id=session_id or self.session_id, seq=seq, online=online, profile=self.profile,
            ts=ts, **kw,
        )
        self.send(TopicKind.STATE, topics.state(self.fleet, self.device_id), msg)

    def job(self, deployment_id: str, seq: int, state: UpdateState | str, reason: ReasonCode = ReasonCode.OK) -> None:
        """Publish one JobReport."""
        rep = wire.job_report(self.device_id, deployment_id, seq, state, reason)
        self.send(TopicKind.JOB, topics.job(self.fleet, self.device_id, deployment_id), rep)

    def bench(self, deployment_id: str, sha256: str, decision: str, reasons: list[str] | None = None) -> None:
        """Publish a BenchReport with fixed, fast figures and the given decision."""
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
        self.send(TopicKind.BENCH, topics.bench(self.fleet, self.device_id, deployment_id), rep)

    def request_chunks(self, deployment_id: str, sha256: str, missing: list[int] | None = None) -> None:
        """Ask the controller's chunk server for chunks (all of them by default)."""
        req = ChunkRequest(deployment_id=deployment_id, sha256=sha256, missing=missing or [])
        self.send(TopicKind.CHUNK_REQUEST, topics.chunk_request(self.fleet, self.device_id, sha256), req)

    def next_desired(self, timeout: float = 5.0) -> Desired:
        """The next retained/new Desired the controller published to this device."""
        return decode(Desired, self.desired.get(timeout=timeout))

    def wait_chunks(self, sha256: str, count: int, timeout: float = 10.0) -> dict[int, bytes]:
        """Chunks of one blob received so far, once ``count`` arrived or the timeout passed."""
        with self.chunk_event:
            with contextlib.suppress(AssertionError):  # the timeout returns what arrived so far
                wait_until(lambda: len(self.chunks.get(sha256, {})) >= count, timeout, "chunks", 0.1,
                           condition=self.chunk_event)
            return dict(self.chunks.get(sha256, {}))

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes the last-will."""
        assert self.client is not None
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        """Disconnect cleanly (no will)."""
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def assemble(chunks: dict[int, bytes]) -> bytes:
    """A blob from its chunks, in index order."""
    return b"".join(chunks[i] for i in sorted(chunks))


def sha(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()
