"""The agent process: MQTT session, worker thread running the update machine, telemetry.

Threads:
    * network: owns the paho client (connect with a fresh Sparkplug-style session id and a
      matching last-will, ``loop()``, jittered backoff on failure, telemetry timer);
    * worker: the only thread touching the update machine; fed by a queue from ``on_message``
      so a long benchmark never blocks MQTT keep-alives.

Only the network thread touches the paho client: without paho's own ``loop_start`` thread,
``publish`` from another thread would write to the socket concurrently with ``loop()``. The
worker therefore hands messages to an outbox the network thread drains after every
``loop()``. QoS1 messages published while disconnected are queued by paho and sent after the
next connect.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent import __version__
from agent.backoff import Backoff
from agent.bench import BenchCancelled
from agent.config import AgentConfig
from agent.device import build_caps, read_telemetry
from agent.emulation import emulator
from agent.runtimes import missing_runtimes
from agent.update.machine import UpdateMachine
from common import topics
from common.keys import load_public_key
from common.messages import BenchReport, ChunkRequest, DeviceState, JobReport, Message
from common.topics import TopicKind

log = logging.getLogger(__name__)

TICK_S = 0.5
LOOP_S = 0.05
"""Longest a message from the worker waits in the outbox before the network thread sends it."""


class Agent:
    """One device's agent.

    Example:
        >>> agent = Agent(cfg)  # doctest: +SKIP
        >>> agent.start(); ...; agent.stop()  # doctest: +SKIP
    """

    def __init__(self, config: AgentConfig) -> None:
        self.cfg = config
        self.stop_event = threading.Event()
        self._net_stop = threading.Event()
        self.connected = threading.Event()
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.session_id = ""
        self._state_seq = 0
        self._seq_lock = threading.Lock()
        self._backoff = Backoff(config.backoff_min_s, config.backoff_max_s)
        self._threads: list[threading.Thread] = []
        self._birth_due = False
        self._outbox: queue.SimpleQueue[tuple[str, bytes, int, bool]] = queue.SimpleQueue()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.device_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        if config.tls_ca is not None:
            self.client.tls_set(ca_certs=str(config.tls_ca))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.machine = UpdateMachine(
            config, reporter=self, public_key=load_public_key(config.controller_key), cancel=self.stop_event
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the network and worker threads and return."""
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.say_what_is_missing()
        for name, target in (("mqtt", self._network_loop), ("worker", self._worker_loop)):
            thread = threading.Thread(target=target, name=f"agent-{self.cfg.device_id}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Publish offline state, disconnect, join threads (a running benchmark is killed and redone later)."""
        self.stop_event.set()
        self.events.put(("stop",))  # wake the worker now rather than at its next tick
        # Worker first, so its last reports are in the outbox before the network thread says goodbye.
        for thread in reversed(self._threads):
            if thread.name.endswith("-mqtt"):
                self._net_stop.set()
            thread.join(timeout)
        self._net_stop.set()
        self._threads.clear()

    def run_forever(self) -> int:
        """Block until :meth:`stop` or ``stop_event`` (set by the SIGTERM handler)."""
        self.start()
        while not self.stop_event.wait(0.5):
            pass
        self.stop()
        return 0

    def say_what_is_missing(self) -> None:
        """Name, in words, each runtime the profile needs that is not installed (and the emulator, if any):
        an agent that can run none of its formats still connects and reports it in its caps."""
        profile = self.cfg.device_profile
        missing = missing_runtimes(list(profile.runtimes), profile.arch)
        level = logging.WARNING if self.machine.formats else logging.ERROR
        for name, hint in missing.items():
            log.log(level, "profile %s needs runtime %s, which is not installed here: %s", profile.id, name, hint)
        if not self.machine.formats:
            log.error("this device runs none of its profile's formats (%s): every deployment will be refused "
                      "with unsupported_format until a runtime is installed", ", ".join(profile.formats))
        if emulator():
            log.warning("running under %s: benchmark latency is the emulator's (marked emulated, not gated); "
                        "quality figures are real", emulator())

    # ------------------------------------------------------------------ network thread

    def _network_loop(self) -> None:
        next_telemetry = time.monotonic() + min(5.0, self.cfg.telemetry_interval_s)
        socket_open = False
        while not self._net_stop.is_set():
            if not socket_open:
                socket_open = self._connect()
                if not socket_open:
                    self._net_stop.wait(self._backoff.next())
                    continue
            rc = self.client.loop(timeout=LOOP_S)
            self._drain_outbox()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                socket_open = False
                self.connected.clear()
                delay = self._backoff.next()
                log.warning("mqtt connection lost (%s); reconnecting in %.1fs", mqtt.error_string(rc), delay)
                self._net_stop.wait(delay)
                continue
            if self._birth_due:
                self._birth_due = False
                self._publish(TopicKind.CAPS, topics.caps(self.cfg.fleet, self.cfg.device_id), build_caps(self.cfg))
                self.state_changed()
            if self.connected.is_set() and time.monotonic() >= next_telemetry:
                next_telemetry = time.monotonic() + self.cfg.telemetry_interval_s
                self._publish_telemetry()
        self._goodbye(socket_open)

    def _connect(self) -> bool:
        """Open the socket with a new session id and the matching offline will."""
        self.session_id = uuid.uuid4().hex[:16]
        will = self._device_state(online=False)
        state = topics.spec(TopicKind.STATE)
        self.client.will_set(
            topics.state(self.cfg.fleet, self.cfg.device_id), will.to_bytes(), qos=state.qos, retain=state.retain
        )
        try:
            self.client.connect(self.cfg.broker_host, self.cfg.broker_port, keepalive=self.cfg.keepalive_s)
        except (OSError, ValueError) as exc:
            log.warning("cannot reach broker %s:%d: %s", self.cfg.broker_host, self.cfg.broker_port, exc)
            return False
        return True

    def _drain_outbox(self) -> None:
        while True:
            try:
                topic, payload, qos, retain = self._outbox.get_nowait()
            except queue.Empty:
                return
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))

    def _goodbye(self, socket_open: bool) -> None:
        self._drain_outbox()
        if socket_open and self.connected.is_set():
            info = self.client.publish(
                topics.state(self.cfg.fleet, self.cfg.device_id),
                self._device_state(online=False).to_bytes(),
                qos=topics.spec(TopicKind.STATE).qos,
                retain=topics.spec(TopicKind.STATE).retain,
            )
            deadline = time.monotonic() + 3
            while not info.is_published() and time.monotonic() < deadline:
                if self.client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                    break
            self.client.disconnect()
            self.client.loop(timeout=0.1)
        self.connected.clear()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused connection: %s", reason_code)
            return
        self._backoff.reset()
        fleet, dev = self.cfg.fleet, self.cfg.device_id
        client.subscribe([
            (topics.desired(fleet, dev), topics.spec(TopicKind.DESIRED).qos),
            (topics.device_chunk_filter(fleet, dev), topics.spec(TopicKind.CHUNK).qos),
        ])
        # The birth is sent from the network loop *after* this callback: paho re-sends QoS1 messages left
        # un-acked by the previous session after on_connect returns, and a stale state must not land last.
        self._birth_due = True
        self.connected.set()
        log.info("connected to %s:%d as %s (session %s)", self.cfg.broker_host, self.cfg.broker_port, dev,
                 self.session_id)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        self.connected.clear()
        if not self._net_stop.is_set():
            log.warning("disconnected from broker: %s", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            parsed = topics.parse(msg.topic)
        except topics.TopicError as exc:
            log.warning("ignoring message on unexpected topic %r: %s", msg.topic, exc)
            return
        if parsed.device != self.cfg.device_id or parsed.fleet != self.cfg.fleet:
            log.warning("ignoring message for another device on %r", msg.topic)
        elif parsed.kind is topics.TopicKind.DESIRED:
            self.events.put(("desired", bytes(msg.payload)))
        elif parsed.kind is topics.TopicKind.CHUNK:
            self.events.put(("chunk", parsed.sha256, parsed.index, bytes(msg.payload)))
        else:
            log.warning("ignoring %s message on %r", parsed.kind.value, msg.topic)

    # ------------------------------------------------------------------ worker thread

    def _worker_loop(self) -> None:
        deadline = time.monotonic() + 10  # reports made offline are queued anyway; this just orders them
        while not self.connected.wait(0.1) and not self.stop_event.is_set() and time.monotonic() < deadline:
            pass
        if self.stop_event.is_set():
            return
        try:
            self.machine.resume()
        except BenchCancelled:
            return
        except Exception:  # noqa: BLE001 - the agent must keep running its current model
            log.exception("resume failed; will retry on the next tick")
        last_tick = time.monotonic()
        while not self.stop_event.is_set():
            try:
                event = self.events.get(timeout=TICK_S)
            except queue.Empty:
                event = None
            try:
                if event is not None:
                    self._dispatch(event)
                if event is None or time.monotonic() - last_tick >= TICK_S:
                    last_tick = time.monotonic()
                    self.machine.tick()
            except BenchCancelled:
                return
            except Exception:  # noqa: BLE001 - one bad event must not stop the agent
                log.exception("error handling %s", event[0] if event else "tick")

    def _dispatch(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "desired":
            self.machine.handle_desired(event[1])
        elif kind == "chunk":
            self.machine.handle_chunk(event[1], event[2], event[3])

    # ------------------------------------------------------------------ Reporter (called on the worker)

    def job(self, report: JobReport) -> None:
        """Publish a JobReport (QoS1)."""
        log.info("job %s seq=%d %s %s %s", report.deployment_id, report.seq, report.state, report.reason.value,
                 report.detail)
        self._publish(TopicKind.JOB, topics.job(self.cfg.fleet, self.cfg.device_id, report.deployment_id), report)

    def bench(self, report: BenchReport) -> None:
        """Publish a BenchReport (QoS1)."""
        log.info("bench %s decision=%s %s", report.deployment_id, report.decision, report.reasons)
        self._publish(TopicKind.BENCH, topics.bench(self.cfg.fleet, self.cfg.device_id, report.deployment_id), report)

    def request_chunks(self, deployment_id: str, sha256: str, missing: list[int]) -> None:
        """Publish a ChunkRequest (QoS1)."""
        request = ChunkRequest(deployment_id=deployment_id, sha256=sha256, missing=missing)
        topic = topics.chunk_request(self.cfg.fleet, self.cfg.device_id, sha256)
        self._publish(TopicKind.CHUNK_REQUEST, topic, request)

    def state_changed(self) -> None:
        """Publish the retained DeviceState."""
        topic = topics.state(self.cfg.fleet, self.cfg.device_id)
        self._publish(TopicKind.STATE, topic, self._device_state(online=True))

    # ------------------------------------------------------------------ helpers

    def _device_state(self, *, online: bool) -> DeviceState:
        with self._seq_lock:
            # Milliseconds since the epoch, forced monotonic: increases across restarts without persisting.
            self._state_seq = max(self._state_seq + 1, int(time.time() * 1000))
            seq = self._state_seq
        machine = self.machine
        return DeviceState(
            device_id=self.cfg.device_id,
            session_id=self.session_id,
            seq=seq,
            online=online,
            agent_version=__version__,
            profile=self.cfg.device_profile.id,
            active=machine.active(),
            previous=machine.previous(),
            update_state=machine.data.state,
            deployment_id=machine.data.deployment_id,
        )

    def _publish(self, kind: TopicKind, topic: str, message: Message) -> None:
        """Queue for the network thread (the only thread that may drive the paho client)."""
        spec = topics.spec(kind)  # QoS and retain as the protocol table declares them
        self._outbox.put((topic, message.to_bytes(), spec.qos, spec.retain))

    def _publish_telemetry(self) -> None:
        active = self.machine.slots.current()
        baseline = active.baseline() if active else None
        sample = read_telemetry(self.cfg.device_id, baseline.latency_p50_ms if baseline else None)
        self._publish(TopicKind.TELEMETRY, topics.telemetry(self.cfg.fleet, self.cfg.device_id), sample)
