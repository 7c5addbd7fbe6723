"""Fleet simulator: many lightweight agents in one process, each a real MQTT client with its own login.

For tests and benchmarks at fleet scale (100–1,000 devices on a 2-core machine). Every
simulated agent speaks the real protocol against the real broker and controller: its own
client id, username/password (the broker ACL confines it to its subtree), retained state +
last-will with a session id, retained caps, chunk requests, per-chunk sha256 checks against
the signed manifest, JobReports with increasing seq, BenchReports, QoS0 telemetry.

What is shared ("lightweight mode"): one I/O thread drives every client through paho's
external-loop API (``loop_read``/``loop_write``/``loop_misc`` over one selector) instead of one
thread per client; the Ed25519 signature check is cached per manifest; the benchmark is
*simulated* — a ``bench`` callable maps a manifest to on-device figures (default: from the
``technique``) — or, with ``real_bench_dir``, *real*: the received files are assembled (one copy
per blob) and measured with the agent's own benchmark code once per model — and the decision
is taken by the agent's real gate (:func:`agent.compare.decide`)
including the fleet-rollback rule (``Desired.kind="rollback"`` to a model committed before).
Chunks are checked and counted; only real mode keeps them (one copy per blob).

Example:
    >>> sim = FleetSimulator(host, port, fleet="demo", public_key=pub)  # doctest: +SKIP
    >>> sim.add("sim-0001", password, profile="x86-edge"); sim.start(); sim.wait_connected(30)
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import random
import selectors
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.compare import decide
from common import topics
from common.errors import ProtocolError, ReasonCode
from common.manifest import Manifest, verify_manifest
from common.messages import (
    BenchMetrics,
    BenchReport,
    ChunkRequest,
    Desired,
    DeviceState,
    Message,
    ModelRef,
    Telemetry,
    decode,
)
from common.topics import TopicKind
from common.update_states import UpdateState
from fleetsim import wire
from fleetsim.waiting import wait_until

log = logging.getLogger(__name__)

BenchFn = Callable[[Manifest, str], BenchMetrics]
"""(manifest, device id) → simulated on-device figures."""


def default_bench(manifest: Manifest, device_id: str) -> BenchMetrics:
    """Figures by technique: ``int8*`` faster, ``regressed*``/``slow*`` 3x slower, ``degraded*`` low quality."""
    rnd = random.Random(f"{device_id}:{manifest.version}")
    tech = manifest.technique.lower()
    p95 = 10.0 * (0.4 if tech.startswith("int8") else 3.0 if tech.startswith(("regress", "slow")) else 1.0)
    quality = 0.5 if tech.startswith("degrad") else 0.999
    p95 *= rnd.uniform(0.97, 1.03)
    return BenchMetrics(latency_p50_ms=p95 * 0.8, latency_p95_ms=p95, load_ms=20.0, peak_rss_delta_mb=50.0,
                        quality=quality, quality_metric=manifest.quality_metric, runs=20, runtime="simulated")


def _ref(manifest: Manifest) -> ModelRef:
    return ModelRef(model_id=manifest.model_id, version=manifest.version, sha256=manifest.blob("model").sha256,
                    format=manifest.format)


@dataclass
class _Download:
    desired: Desired
    missing: dict[str, set[int]]
    last_progress: float = field(default_factory=time.monotonic)


@dataclass
class SimAgent:
    """One simulated device: identity, active/previous model, update bookkeeping."""

    device_id: str
    password: str
    profile: str
    client: mqtt.Client | None = None
    session_id: str = ""
    online: bool = False
    active: Manifest | None = None
    active_metrics: BenchMetrics | None = None
    previous: Manifest | None = None
    committed: list[str] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    job_seq: int = 0
    state_seq: int = 0
    update_state: UpdateState = UpdateState.IDLE
    deployment_id: str | None = None
    download: _Download | None = None
    local: set[str] = field(default_factory=set)


class FleetSimulator:
    """Hosts many :class:`SimAgent` s on one I/O thread. See the module docstring.

    Args:
        host, port: the broker.
        fleet: fleet id.
        public_key: the controller key the agents pin (signatures are really checked).
        bench: simulated benchmark (manifest, device id) → figures.
        bench_s: simulated benchmark duration.
        telemetry_interval_s: QoS0 telemetry period per agent (0 = none).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        fleet: str,
        public_key: Ed25519PublicKey,
        bench: BenchFn = default_bench,
        bench_s: float = 0.05,
        telemetry_interval_s: float = 0.0,
        rerequest_s: float = 3.0,
        real_bench_dir: Path | None = None,
        real_bench_runs: int = 20,
    ) -> None:
        self.host, self.port, self.fleet = host, port, fleet
        self.public_key = public_key
        self.bench = bench
        self.bench_s = bench_s
        self.telemetry_interval_s = telemetry_interval_s
        self.rerequest_s = rerequest_s
        self.real_bench_dir = real_bench_dir
        self.real_bench_runs = real_bench_runs
        self._received: dict[str, dict[int, bytes]] = {}
        self._measured: dict[str, BenchMetrics] = {}
        if real_bench_dir is not None:
            real_bench_dir.mkdir(parents=True, exist_ok=True)
            self.bench = self._real_bench
        self.agents: dict[str, SimAgent] = {}
        self.stats: Counter[str] = Counter()
        self._sel = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._tick = itertools.count()
        self._dirty: set[mqtt.Client] = set()
        self._commands: list[Callable[[], None]] = []
        self._cmd_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._verified: dict[str, bool] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ control (any thread)
    def add(self, device_id: str, password: str, *, profile: str = "x86-edge") -> SimAgent:
        """Register an agent (connects on :meth:`start`, or at once if already started)."""
        agent = SimAgent(device_id=device_id, password=password, profile=profile)
        self.agents[device_id] = agent
        if self._thread is not None:
            self._call(lambda: self._connect(agent))
        return agent

    def start(self) -> FleetSimulator:
        """Connect every agent and start the I/O thread."""
        self._thread = threading.Thread(target=self._loop, name="fleet-sim", daemon=True)
        for agent in self.agents.values():
            self._connect(agent)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Disconnect every agent cleanly and stop the thread."""
        self._call(self._disconnect_all)
        time.sleep(0.2)
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(10)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def set_offline(self, device_id: str) -> None:
        """Drop one agent's connection without a clean disconnect: the broker publishes its last-will."""
        self._call(lambda: self._drop(self.agents[device_id]))

    def set_online(self, device_id: str) -> None:
        """Reconnect an agent (new session id); it reconciles to its retained desired."""
        self._call(lambda: self._connect(self.agents[device_id]))

    def wait_connected(self, timeout: float) -> bool:
        """True once every agent has its CONNACK."""
        try:
            wait_until(lambda: all(a.online for a in self.agents.values()), timeout, "every CONNACK", 0.05)
        except AssertionError:
            return False
        return True

    def active_versions(self) -> Counter[str]:
        """How many agents run each model version (``"-"`` = none)."""
        return Counter(a.active.version if a.active else "-" for a in self.agents.values())

    def _call(self, fn: Callable[[], None]) -> None:
        with self._cmd_lock:
            self._commands.append(fn)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread after ``delay`` seconds (I/O thread only)."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._tick), fn))

    # ------------------------------------------------------------------ I/O loop
    def _loop(self) -> None:
        last_misc = 0.0
        while not self._stop.is_set():
            timeout = 0.05
            if self._timers:
                timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
            for key, _ in self._sel.select(timeout):
                if key.data is None:
                    self._drain_wake()
                    continue
                self._io(key.data.loop_read, key.data, max_packets=64)
            self._run_commands()
            self._run_timers()
            for client in list(self._dirty):
                self._io(client.loop_write, client)
                if not client.want_write():
                    self._dirty.discard(client)
            if time.monotonic() - last_misc > 1.0:
                last_misc = time.monotonic()
                for agent in self.agents.values():
                    if agent.client is not None and agent.online:
                        self._io(agent.client.loop_misc, agent.client)

    def _io(self, fn: Callable[..., Any], client: mqtt.Client, **kw: Any) -> None:
        try:
            rc = fn(**kw)
        except Exception:  # noqa: BLE001 - one broken client must not stop the fleet
            self.stats["io_errors"] += 1
            log.exception("simulated agent I/O failed")
            return
        if rc not in (mqtt.MQTT_ERR_SUCCESS, None):
            self.stats["io_rc_errors"] += 1

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _run_commands(self) -> None:
        with self._cmd_lock:
            commands, self._commands = self._commands, []
        for fn in commands:
            fn()

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            try:
                fn()
            except Exception:  # noqa: BLE001
                self.stats["timer_errors"] += 1
                log.exception("simulated agent timer failed")

    # ------------------------------------------------------------------ connection
    def _connect(self, agent: SimAgent) -> None:
        agent.session_id = uuid.uuid4().hex
        c = wire.login(agent.device_id, agent.password, client_id=agent.device_id)
        wire.will(c, self.fleet, self._state(agent, online=False))
        c.max_inflight_messages_set(100)
        c.on_connect = lambda cl, ud, fl, rc, pr, a=agent: self._on_connect(a, rc)
        c.on_message = lambda cl, ud, msg, a=agent: self._on_message(a, msg)
        c.on_socket_register_write = lambda cl, ud, sock: self._dirty.add(cl)
        c.on_socket_unregister_write = lambda cl, ud, sock: None
        c.on_socket_close = lambda cl, ud, sock, a=agent: self._on_close(a, cl, sock)
        agent.client = c
        try:
            c.connect(self.host, self.port, keepalive=60)
        except OSError as exc:
            self.stats["connect_errors"] += 1
            log.warning("simulated agent %s could not connect: %s", agent.device_id, exc)
            return
        self._sel.register(c.socket(), selectors.EVENT_READ, c)
        self._dirty.add(c)

    def _on_close(self, agent: SimAgent, client: mqtt.Client, sock: Any) -> None:
        agent.online = False
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        self._dirty.discard(client)

    def _drop(self, agent: SimAgent) -> None:
        """Close the socket without DISCONNECT (a device losing power): the will fires."""
        if agent.client is None:
            return
        sock = agent.client.socket()
        agent.online = False
        agent.download = None  # the real agent resumes downloads; the simulator restarts them
        if sock is not None:
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self._dirty.discard(agent.client)
        agent.client = None

    def _disconnect_all(self) -> None:
        for agent in self.agents.values():
            if agent.client is not None and agent.online:
                self._publish(agent, TopicKind.STATE, topics.state(self.fleet, agent.device_id),
                              self._state(agent, online=False))
                agent.client.disconnect()
                self._dirty.add(agent.client)

    def _on_connect(self, agent: SimAgent, rc: Any) -> None:
        if rc.is_failure:
            self.stats["connack_refused"] += 1
            log.warning("simulated agent %s refused: %s", agent.device_id, rc)
            return
        c = agent.client
        assert c is not None
        c.subscribe([(topics.desired(self.fleet, agent.device_id), topics.spec(TopicKind.DESIRED).qos),
                     (topics.device_chunk_filter(self.fleet, agent.device_id), topics.spec(TopicKind.CHUNK).qos)])
        caps = wire.device_caps(agent.device_id, agent.profile, runtimes=["simulated"], formats=["onnx"])
        self._publish(agent, TopicKind.CAPS, topics.caps(self.fleet, agent.device_id), caps)
        agent.online = True
        self._publish_state(agent)
        if self.telemetry_interval_s > 0:
            self.after(random.uniform(0, self.telemetry_interval_s), lambda: self._telemetry(agent, agent.session_id))

    # ------------------------------------------------------------------ publishing
    def _publish(self, agent: SimAgent, kind: TopicKind, topic: str, payload: Message) -> None:
        if agent.client is None:
            return
        wire.publish(agent.client, kind, topic, payload)
        self._dirty.add(agent.client)

    def _state(self, agent: SimAgent, *, online: bool) -> DeviceState:
        agent.state_seq = max(agent.state_seq + 1, int(time.time() * 1000))
        return wire.device_state(
            agent.device_id, session_id=agent.session_id or "none", seq=agent.state_seq, online=online,
            agent_version="sim", profile=agent.profile, active=_ref(agent.active) if agent.active else None,
            previous=_ref(agent.previous) if agent.previous else None, update_state=agent.update_state,
            deployment_id=agent.deployment_id,
        )

    def _publish_state(self, agent: SimAgent) -> None:
        topic = topics.state(self.fleet, agent.device_id)
        self._publish(agent, TopicKind.STATE, topic, self._state(agent, online=True))

    def _job(self, agent: SimAgent, dep: str, state: UpdateState, reason: ReasonCode = ReasonCode.OK,
             detail: str = "") -> None:
        agent.job_seq += 1
        report = wire.job_report(agent.device_id, dep, agent.job_seq, state, reason, detail)
        self._publish(agent, TopicKind.JOB, topics.job(self.fleet, agent.device_id, dep), report)
        self.stats["reports_sent"] += 1

    def _telemetry(self, agent: SimAgent, session: str) -> None:
        if not agent.online or agent.session_id != session:
            return
        tm = Telemetry(device_id=agent.device_id, cpu_percent=random.uniform(5, 30), mem_percent=40.0, rss_mb=60.0,
                       inferences=random.randint(0, 50),
                       latency_ms_p50=agent.active_metrics.latency_p50_ms if agent.active_metrics else None)
        self._publish(agent, TopicKind.TELEMETRY, topics.telemetry(self.fleet, agent.device_id), tm)
        self.stats["telemetry_sent"] += 1
        self.after(self.telemetry_interval_s, lambda: self._telemetry(agent, session))

    # ------------------------------------------------------------------ protocol
    def _on_message(self, agent: SimAgent, msg: mqtt.MQTTMessage) -> None:
        try:
            parsed = topics.parse(msg.topic)
            if parsed.kind is topics.TopicKind.DESIRED:
                self._on_desired(agent, msg.payload)
            elif parsed.kind is topics.TopicKind.CHUNK:
                self._on_chunk(agent, parsed.sha256 or "", parsed.index or 0, msg.payload)
        except Exception:  # noqa: BLE001
            self.stats["handler_errors"] += 1
            log.exception("simulated agent %s failed on %s", agent.device_id, msg.topic)

    def _verify(self, manifest: Manifest) -> None:
        sig = manifest.signature
        if sig not in self._verified:
            try:
                verify_manifest(manifest, self.public_key)
                self._verified[sig] = True
            except ProtocolError:
                self._verified[sig] = False
        if not self._verified[sig]:
            raise ProtocolError(ReasonCode.SIGNATURE_INVALID, "manifest signature does not verify")

    def _on_desired(self, agent: SimAgent, payload: bytes) -> None:
        if not payload:
            return
        try:
            desired = decode(Desired, payload)
            self._verify(desired.manifest)
            if desired.manifest.profile != agent.profile:
                raise ProtocolError(ReasonCode.WRONG_PROFILE, f"artifact for {desired.manifest.profile}")
        except ProtocolError as exc:
            self.stats["desired_rejected"] += 1
            dep = _guess_dep(payload)
            if dep and dep not in agent.finished:
                agent.finished.add(dep)
                self._job(agent, dep, UpdateState.FAILURE, exc.reason, exc.detail)
            return
        dep = desired.deployment_id
        if dep in agent.finished or dep == agent.deployment_id:
            return
        if agent.active is not None and _ref(agent.active) == _ref(desired.manifest):
            agent.finished.add(dep)
            self._job(agent, dep, UpdateState.COMMIT, detail="already active")
            return
        if agent.download is not None and agent.deployment_id:
            self._end(agent, agent.deployment_id, ReasonCode.SUPERSEDED, f"superseded by {dep}")
        self._start(agent, desired)

    def _start(self, agent: SimAgent, desired: Desired) -> None:
        agent.deployment_id = desired.deployment_id
        agent.update_state = UpdateState.DOWNLOAD
        self._job(agent, desired.deployment_id, UpdateState.DOWNLOAD)
        missing = {ref.sha256: set(range(ref.chunk_count)) for ref in desired.manifest.files
                   if ref.sha256 not in agent.local}
        agent.download = _Download(desired, missing)
        self._request(agent)
        self._maybe_done(agent)
        self.after(self.rerequest_s, lambda: self._rerequest(agent, desired.deployment_id))

    def _request(self, agent: SimAgent) -> None:
        dl = agent.download
        if dl is None:
            return
        for sha, missing in dl.missing.items():
            if missing:
                req = ChunkRequest(deployment_id=dl.desired.deployment_id, sha256=sha, missing=sorted(missing))
                topic = topics.chunk_request(self.fleet, agent.device_id, sha)
                self._publish(agent, TopicKind.CHUNK_REQUEST, topic, req)
                self.stats["chunk_requests"] += 1

    def _rerequest(self, agent: SimAgent, dep: str) -> None:
        dl = agent.download
        if dl is None or dl.desired.deployment_id != dep or not agent.online:
            return
        if time.monotonic() - dl.last_progress >= self.rerequest_s:
            self._request(agent)
        self.after(self.rerequest_s, lambda: self._rerequest(agent, dep))

    def _on_chunk(self, agent: SimAgent, sha: str, index: int, data: bytes) -> None:
        dl = agent.download
        if dl is None or index not in dl.missing.get(sha, ()):
            self.stats["chunks_ignored"] += 1
            return
        ref = next(r for r in dl.desired.manifest.files if r.sha256 == sha)
        if index >= ref.chunk_count or hashlib.sha256(data).hexdigest() != ref.chunk_sha256[index]:
            self.stats["chunks_corrupt"] += 1
            return
        dl.missing[sha].discard(index)
        if self.real_bench_dir is not None:  # shared store: one copy per blob for the whole process
            self._received.setdefault(sha, {}).setdefault(index, bytes(data))
        dl.last_progress = time.monotonic()
        self.stats["chunks_received"] += 1
        self.stats["bytes_received"] += len(data)
        self._maybe_done(agent)

    def _maybe_done(self, agent: SimAgent) -> None:
        dl = agent.download
        if dl is None or any(dl.missing.values()):
            return
        agent.download = None
        dep = dl.desired.deployment_id
        for state in (UpdateState.VERIFY, UpdateState.INSTALL, UpdateState.BENCHMARK):
            agent.update_state = state
            self._job(agent, dep, state)
        agent.local.update(ref.sha256 for ref in dl.desired.manifest.files)
        self.after(self.bench_s, lambda: self._bench_done(agent, dl.desired))

    def _bench_done(self, agent: SimAgent, desired: Desired) -> None:
        if agent.deployment_id != desired.deployment_id:
            return
        m = desired.manifest
        try:
            metrics = self.bench(m, agent.device_id)
        except Exception as exc:  # noqa: BLE001 - a model that does not load or run is a failed benchmark
            self._end(agent, desired.deployment_id, getattr(exc, "reason", ReasonCode.BENCHMARK_FAILED), str(exc))
            return
        reinstating = desired.kind == "rollback" and m.blob("model").sha256 in agent.committed
        verdict = decide(metrics, agent.active_metrics, m.thresholds, reinstating=reinstating)
        bench = BenchReport(device_id=agent.device_id, deployment_id=desired.deployment_id, candidate=_ref(m),
                            candidate_metrics=metrics, baseline=_ref(agent.active) if agent.active else None,
                            baseline_metrics=agent.active_metrics, decision=verdict.decision,  # type: ignore[arg-type]
                            reasons=verdict.reasons)
        self._publish(agent, TopicKind.BENCH, topics.bench(self.fleet, agent.device_id, desired.deployment_id), bench)
        self.stats["reports_sent"] += 1
        if verdict.commit:
            agent.previous, agent.active, agent.active_metrics = agent.active, m, metrics
            sha = m.blob("model").sha256
            agent.committed = [s for s in agent.committed if s != sha][-15:] + [sha]
            self._job(agent, desired.deployment_id, UpdateState.COMMIT)
            self._finish(agent, desired.deployment_id)
        else:
            detail = "; ".join(r for r in verdict.reasons if not r.startswith("ok:"))
            self._end(agent, desired.deployment_id, verdict.reason, detail)

    def _blob_path(self, manifest: Manifest, role: str) -> Path:
        """The assembled, hash-checked file of one manifest entry (written once per blob)."""
        assert self.real_bench_dir is not None
        ref = manifest.blob(role)
        path = self.real_bench_dir / ref.sha256
        if not path.exists():
            chunks = self._received.get(ref.sha256, {})
            data = b"".join(chunks[i] for i in range(ref.chunk_count))
            if hashlib.sha256(data).hexdigest() != ref.sha256:
                raise ProtocolError(ReasonCode.HASH_MISMATCH, f"{role} file does not match its manifest")
            path.write_bytes(data)
        return path

    def _real_bench(self, manifest: Manifest, device_id: str) -> BenchMetrics:
        """Real on-CPU benchmark with the agent's own code (load, warm-up, timed runs, golden-set quality),
        measured once per model and shared by every simulated agent (the 'shared runtime')."""
        from agent.bench import BenchSpec, measure

        sha = manifest.blob("model").sha256
        if sha not in self._measured:
            spec = BenchSpec(self._blob_path(manifest, "model"), self._blob_path(manifest, "golden"), manifest.format,
                             manifest.quality_metric, threads=1, runs=self.real_bench_runs, warmup=2)
            self._measured[sha] = measure(spec)
        return self._measured[sha]

    def _end(self, agent: SimAgent, dep: str, reason: ReasonCode, detail: str) -> None:
        agent.download = None
        self._job(agent, dep, UpdateState.ROLLBACK, reason, detail)
        self._job(agent, dep, UpdateState.FAILURE, reason, detail)
        self._finish(agent, dep)

    def _finish(self, agent: SimAgent, dep: str) -> None:
        agent.finished.add(dep)
        agent.update_state = UpdateState.IDLE
        agent.deployment_id = None
        self._job(agent, dep, UpdateState.IDLE)
        self._publish_state(agent)


def _guess_dep(payload: bytes) -> str | None:
    try:
        dep = json.loads(payload).get("deployment_id")
        return topics.validate_id(dep, "deployment") if isinstance(dep, str) else None
    except (ValueError, AttributeError, topics.TopicError):
        return None
