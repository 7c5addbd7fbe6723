"""The controller's MQTT side: device presence, desired state, chunk server, report intake.

One paho-mqtt (v2 callbacks) client logged in as ``controller``. Everything a
device sends is decoded with :func:`common.messages.decode` and written to the
registry; anything malformed, spoofed, duplicated or aimed at an unknown
deployment is logged and counted in :attr:`FleetService.stats`, never raised into
paho's network thread. The registry is the source of truth, so a restarted
controller picks up where it left off (and re-publishes the retained desired
state on every connect, in case the broker lost its retained messages).

Threads: paho's network thread runs the callbacks (registry writes, short); a
chunk-sender thread reads blobs and publishes chunks with a bounded in-flight
window so a large artifact never blocks report intake or floods memory.

Example:
    >>> with FleetService(reg, host=b.host, port=b.port, password=pw, fleet="demo") as fleet:  # doctest: +SKIP
    ...     dep = fleet.deploy(version_id=v.id, device_ids=["pi-1", "pi-2"])  # or a signed Manifest
    ...     print(fleet.wait_for(dep, timeout=300).as_dict())
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common import topics
from common.errors import ProtocolError
from common.grant import Grant
from common.manifest import BlobRef, Manifest, Thresholds, read_chunk
from common.messages import BenchReport, ChunkRequest, Desired, DeviceCaps, DeviceState, JobReport, Telemetry, decode
from common.topics import ParsedTopic, TopicError, TopicKind
from controller.fleet.errors import FleetError
from controller.fleet.grants import GrantIssuer
from controller.fleet.telemetry import TelemetryStore
from controller.registry import (
    DeploymentRecord,
    InvalidInputError,
    NotFoundError,
    Registry,
    ReportOutcome,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from controller.artifacts import ArtifactBuilder

log = logging.getLogger(__name__)

SUBSCRIPTIONS: tuple[tuple[TopicKind, int], ...] = (
    (TopicKind.STATE, 1),
    (TopicKind.CAPS, 1),
    (TopicKind.JOB, 1),
    (TopicKind.BENCH, 1),
    (TopicKind.CHUNK_REQUEST, 1),
    (TopicKind.TELEMETRY, 0),
)


@dataclass(frozen=True)
class DeploymentSummary:
    """What :meth:`FleetService.wait_for` returns: the deployment and whether waiting timed out."""

    deployment: DeploymentRecord
    timed_out: bool

    @property
    def done(self) -> bool:
        """Every target device reached a terminal state."""
        return self.deployment.done

    def device_states(self) -> dict[str, str]:
        """Device id → per-device state value (``committed``, ``rolled_back``, ...)."""
        return {d.device_id: d.state.value for d in self.deployment.devices}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the demo's summary.json and the REST API."""
        dep = self.deployment
        return {
            "deployment_id": dep.id,
            "version_id": dep.version_id,
            "kind": dep.kind,
            "rollback_of": dep.rollback_of,
            "state": dep.state.value,
            "done": self.done,
            "timed_out": self.timed_out,
            "counts": dep.counts(),
            "devices": {
                d.device_id: {
                    "state": d.state.value,
                    "reason": d.reason,
                    "detail": d.detail,
                    "last_job_state": d.last_job_state,
                    "bench": d.bench,
                }
                for d in dep.devices
            },
        }


_REPUBLISH = object()
"""Sender-queue marker: re-publish every device's retained desired state."""


@dataclass(frozen=True)
class _ChunkJob:
    device_id: str
    ref: BlobRef
    indices: list[int]


class FleetService:
    """Controller-side MQTT client for one fleet.

    Args:
        registry: where devices, deployments and reports are stored.
        host, port: the broker.
        password: the ``controller`` user's password (``BrokerHandle.credentials.users["controller"]``).
        fleet: fleet id, the ``<fleet>`` topic level.
        username: broker login (default ``controller``).
        chunk_window: QoS1 chunks in flight before the sender waits for acks.
        republish_desired_on_connect: re-send every device's retained desired on (re)connect.
        actor: audit-log name for deployments made through this service.
        artifact_builder: finds/builds per-profile artifacts when deploying by version id
            (:class:`controller.artifacts.ArtifactBuilder`); without it only ready artifacts deploy.
        telemetry: where telemetry goes (batched writer, retention, anomaly events); default one
            :class:`controller.fleet.telemetry.TelemetryStore` on the registry.
        signing_key: signs the per-device grants (:mod:`common.grant`); default the artifact
            builder's key. Without any, desired states carry no grant (current agents refuse them).
        grant_ttl: how long a grant is valid (an agent refuses an expired one as ``expired``).
        tls_ca: CA certificate (PEM) of the broker's TLS listener: connect with TLS, hostname verified.
        persistent_session: keep one broker session per fleet (client id ``edgefleet-controller-<fleet>``,
            clean_session=False) so reports sent while the controller is down are queued, not lost.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        host: str,
        port: int,
        password: str,
        fleet: str = "default",
        username: str = "controller",
        client_id: str | None = None,
        chunk_window: int = 32,
        republish_desired_on_connect: bool = True,
        publish_timeout: float = 10.0,
        actor: str = "controller",
        artifact_builder: ArtifactBuilder | None = None,
        telemetry: TelemetryStore | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        grant_ttl: timedelta = timedelta(days=7),
        tls_ca: Path | None = None,
        persistent_session: bool = True,
    ) -> None:
        self.registry = registry
        self.fleet = topics.validate_id(fleet, "fleet")
        self.host, self.port = host, port
        self.actor = actor
        self.chunk_window = max(1, chunk_window)
        self.republish_desired_on_connect = republish_desired_on_connect
        self.publish_timeout = publish_timeout
        self.artifact_builder = artifact_builder
        key = signing_key or (artifact_builder.signing_key if artifact_builder is not None else None)
        self.grants = GrantIssuer(registry.workspace / "grants.sqlite", key, ttl=grant_ttl) if key else None
        if self.grants is None:
            log.warning("fleet service without a signing key: desired states carry no grant, and current agents "
                        "refuse them (pass signing_key= or an artifact_builder)")
        self._stats: Counter[str] = Counter()
        self.telemetry = telemetry or TelemetryStore(registry)
        self._active_sha: dict[str, str | None] = {}
        self._stats_lock = threading.Lock()
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._pending_subs: set[int] = set()
        self._chunks: queue.Queue[_ChunkJob | object | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        self._window: deque[mqtt.MQTTMessageInfo] = deque()
        self._queued: dict[tuple[str, str], set[int]] = {}
        self._queued_lock = threading.Lock()
        self._authorized: dict[tuple[str, str], BlobRef] = {}
        self._stopping = False
        self._handlers: dict[TopicKind, Callable[[ParsedTopic, bytes], None]] = {
            TopicKind.STATE: self._on_state,
            TopicKind.CAPS: self._on_caps,
            TopicKind.JOB: self._on_job,
            TopicKind.BENCH: self._on_bench,
            TopicKind.TELEMETRY: self._on_telemetry,
            TopicKind.CHUNK_REQUEST: self._on_chunk_request,
        }
        # A stable client id with a persistent session (clean_session=False): while the controller is
        # down (crash, kill -9, restart) the broker queues the QoS1 reports devices send, and delivers
        # them when it comes back; with a random id and a clean session those reports were lost.
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"edgefleet-controller-{self.fleet}",
            clean_session=not persistent_session,
        )
        self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.max_inflight_messages_set(max(20, self.chunk_window))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    @classmethod
    def from_settings(
        cls,
        *,
        settings: Any,
        registry: Registry,
        password: str | None = None,
        signing_key_path: Path | None = None,
    ) -> FleetService:
        """Build from :class:`controller.settings.Settings` (broker host/port/user, fleet, workspace).

        The signing key defaults to ``<COMPRESSION_WORKSPACE>/keys/controller.key`` (created on
        first use, public half beside it as ``controller.pub`` for agents to pin).
        """
        from common.keys import load_or_create_private_key
        from controller.artifacts import ArtifactBuilder

        if not settings.broker_host:
            raise FleetError("no broker configured: set EDGEFLEET_BROKER_HOST (and _PORT, _PASSWORD)")
        key_path = signing_key_path or Path(settings.compression_workspace) / "keys" / "controller.key"
        builder = ArtifactBuilder(registry, signing_key=load_or_create_private_key(key_path))
        return cls(
            registry,
            host=settings.broker_host,
            port=settings.broker_port,
            username=settings.broker_username,
            password=password or "",
            fleet=settings.fleet,
            artifact_builder=builder,
            tls_ca=getattr(settings, "broker_tls_ca", None),
            grant_ttl=timedelta(hours=getattr(settings, "grant_ttl_hours", 168.0)),
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> FleetService:
        """Connect, subscribe, start the chunk sender; returns once subscriptions are acknowledged."""
        self._stopping = False
        self.telemetry.start()
        self._sender = threading.Thread(target=self._send_chunks, name="fleet-chunks", daemon=True)
        self._sender.start()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise FleetError(
                f"could not connect and subscribe to the broker at {self.host}:{self.port} within {timeout:.0f}s; "
                "check that it runs and that the controller password is right"
            )
        return self

    def stop(self) -> None:
        """Disconnect and stop both threads (idempotent)."""
        self._stopping = True
        self._chunks.put(None)
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - best effort on shutdown
            log.debug("disconnect raised", exc_info=True)
        self.client.loop_stop()
        if self._sender is not None:
            self._sender.join(timeout=10)
            self._sender = None
        self.telemetry.stop()

    def __enter__(self) -> FleetService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        """True while the MQTT session is up and subscribed."""
        return self._subscribed.is_set() and self.client.is_connected()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: messages per kind, ``malformed`` (and ``rejected_<reason code>`` for each), ``duplicate``,
        ``unknown_deployment``, ``chunks_sent``, ..."""
        with self._stats_lock:
            return dict(self._stats)

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the controller: %s", reason_code)
            self._count("connect_refused")
            return
        self._count("connects")
        result, mid = client.subscribe([(topics.fleet_filter(self.fleet, k), qos) for k, qos in SUBSCRIPTIONS])
        if result != mqtt.MQTT_ERR_SUCCESS:
            log.error("subscribe failed: %s", mqtt.error_string(result))
            return
        self._pending_subs.add(mid)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if mid not in self._pending_subs:
            return
        self._pending_subs.discard(mid)
        refused = [rc for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("broker refused %d subscriptions (ACL?): %s", len(refused), refused)
            self._count("subscribe_refused")
        if self.republish_desired_on_connect:
            self._chunks.put(_REPUBLISH)  # on the sender thread: never block paho's network thread
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._subscribed.clear()
        if not self._stopping:
            self._count("disconnects")
            log.warning("lost the broker (%s); paho reconnects with backoff", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            parsed = topics.parse(msg.topic)
            handler = self._handlers.get(parsed.kind)
            if handler is None or parsed.fleet != self.fleet:
                self._count("ignored_topic")
                return
            self._count(f"rx_{parsed.kind.value}")
            handler(parsed, msg.payload)
        except (ProtocolError, TopicError) as exc:
            self._count("malformed")
            self._count(f"rejected_{exc.reason.value if isinstance(exc, ProtocolError) else 'bad_topic'}")
            log.warning("malformed message on %s: %s", msg.topic[:200], str(exc)[:500])
        except Exception:  # noqa: BLE001 - a bad report must never kill the network thread
            self._count("handler_errors")
            log.exception("error handling message on %s", msg.topic)

    # ------------------------------------------------------------------ handlers
    def _check_sender(self, parsed: ParsedTopic, device_id: str) -> bool:
        if device_id != parsed.device:
            self._count("spoofed")
            log.warning("payload claims device %r on %s's topic; ignored", device_id, parsed.device)
            return False
        return True

    def _check_outcome(self, what: str, parsed: ParsedTopic, outcome: ReportOutcome) -> None:
        if outcome is not ReportOutcome.APPLIED:
            self._count(outcome.value)
            if outcome in (ReportOutcome.UNKNOWN_DEPLOYMENT, ReportOutcome.NOT_TARGETED):
                log.warning("%s report from %s for deployment %s: %s", what, parsed.device, parsed.deployment, outcome)
        self._notify()

    def _on_state(self, parsed: ParsedTopic, payload: bytes) -> None:
        if not payload:
            self._count("empty_state")
            return
        state = decode(DeviceState, payload)
        if not self._check_sender(parsed, state.device_id):
            return
        if not self.registry.record_device_state(state=state):
            self._count("stale_state")
            log.info("ignored stale state of %s (session %s)", state.device_id, state.session_id)
        elif state.online:
            self._active_sha[state.device_id] = state.active.sha256 if state.active else None
        self._notify()

    def _on_caps(self, parsed: ParsedTopic, payload: bytes) -> None:
        if not payload:
            return
        caps = decode(DeviceCaps, payload)
        if self._check_sender(parsed, caps.device_id):
            self.registry.record_device_caps(caps=caps)

    def _on_job(self, parsed: ParsedTopic, payload: bytes) -> None:
        report = decode(JobReport, payload)
        if not self._check_sender(parsed, report.device_id):
            return
        if report.deployment_id != parsed.deployment:
            raise _mismatch("job", report.deployment_id, parsed)
        result = self.registry.record_job_report(report=report)
        log.info(
            "job %s %s seq=%d %s -> %s",
            report.device_id,
            report.deployment_id,
            report.seq,
            report.state,
            result.device_state,
        )
        self._check_outcome("job", parsed, result.outcome)

    def _on_bench(self, parsed: ParsedTopic, payload: bytes) -> None:
        report = decode(BenchReport, payload)
        if not self._check_sender(parsed, report.device_id):
            return
        if report.deployment_id != parsed.deployment:
            raise _mismatch("bench", report.deployment_id, parsed)
        result = self.registry.record_bench_report(report=report)
        self._check_outcome("bench", parsed, result.outcome)

    def _on_telemetry(self, parsed: ParsedTopic, payload: bytes) -> None:
        tm = decode(Telemetry, payload)
        if self._check_sender(parsed, tm.device_id):
            self.telemetry.put(tm, self._active_sha.get(tm.device_id))

    def telemetry_lag(self) -> dict[str, float]:
        """Device timestamp → stored, over the last 100k samples (seconds): is intake keeping up?"""
        return self.telemetry.lag()

    def _on_chunk_request(self, parsed: ParsedTopic, payload: bytes) -> None:
        req = decode(ChunkRequest, payload)
        if req.sha256 != parsed.sha256:
            raise _mismatch("chunk request", req.sha256, parsed)
        key = (parsed.device, req.sha256)
        ref = self._authorized.get(key)
        if ref is None:  # positives are cached: a blob once deployed to a device stays deployable to it
            ref = self.registry.blob_for_device(device_id=parsed.device, sha256=req.sha256)
            if ref is not None:
                self._authorized[key] = ref
        if ref is None:
            self._count("chunk_refused")
            log.warning("refused chunks of %s to %s: not part of any deployment to it", req.sha256[:12], parsed.device)
            return
        wanted = req.missing or list(range(ref.chunk_count))
        indices = sorted({i for i in wanted if 0 <= i < ref.chunk_count})
        if len(indices) != len(set(wanted)):
            self._count("chunk_bad_index")
        with self._queued_lock:  # a re-request for chunks still queued adds nothing but load
            queued = self._queued.setdefault(key, set())
            fresh = [i for i in indices if i not in queued]
            queued.update(fresh)
        if len(fresh) < len(indices):
            self._count("chunks_coalesced", len(indices) - len(fresh))
        if fresh:
            self._chunks.put(_ChunkJob(parsed.device, ref, fresh))

    # ------------------------------------------------------------------ chunk sender
    def _send_chunks(self) -> None:
        while True:
            job = self._chunks.get()
            if job is None or self._stopping:
                return
            if job is _REPUBLISH:
                self._republish_desired()
                continue
            try:
                self._send_job(job)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - the agent re-requests what it did not get
                self._count("chunk_errors")
                log.exception("sending chunks of %s to %s failed", job.ref.sha256[:12], job.device_id)

    def _send_job(self, job: _ChunkJob) -> None:
        """Publish the chunks of one request; the in-flight window spans requests.

        Waiting for every request's last ack before the next one made a 1,000-device rollout
        serial on round trips (one per request); the shared window bounds memory the same way.
        """
        path = self.registry.blob_path(sha256=job.ref.sha256)
        window = self._window
        queued = self._queued.get((job.device_id, job.ref.sha256), set())
        for index in job.indices:
            if self._stopping:
                return
            with self._queued_lock:
                queued.discard(index)
            data = read_chunk(path, index, job.ref.chunk_size)
            info = self.client.publish(topics.chunk(self.fleet, job.device_id, job.ref.sha256, index), data, qos=1)
            window.append(info)
            self._count("chunks_sent")
            while len(window) >= self.chunk_window:
                window.popleft().wait_for_publish(self.publish_timeout)
        while window and window[0].is_published():
            window.popleft()

    # ------------------------------------------------------------------ desired state
    def _publish_desired(self, dep: DeploymentRecord, device_ids: list[str]) -> None:
        """Publish each device's Desired (its own artifact's manifest), retained, and wait for the acks."""
        wanted = set(device_ids)
        manifests: dict[str, Manifest] = {}
        infos = []
        for d in dep.devices:
            if d.device_id not in wanted:
                continue
            if d.artifact_id not in manifests:
                manifests[d.artifact_id] = self.registry.manifest(artifact_id=d.artifact_id)
            kind = "rollback" if dep.kind == "rollback" else "deploy"
            payload = Desired(
                deployment_id=dep.id,
                manifest=manifests[d.artifact_id],
                issued_at=dep.created_at,
                kind=kind,
                grant=self._grant(dep.id, d.device_id, manifests[d.artifact_id], kind),
            ).to_bytes()
            infos.append(self.client.publish(topics.desired(self.fleet, d.device_id), payload, qos=1, retain=True))
        self._await(infos, f"desired of deployment {dep.id}")

    def _grant(self, deployment_id: str, device_id: str, manifest: Manifest, kind: str) -> Grant | None:
        """The signed grant binding this manifest to this deployment and device (None without a key)."""
        if self.grants is None:
            return None
        try:
            created = self.registry.get_version(version_id=manifest.version).created_at
            created_ms = int(created.timestamp() * 1000)
        except NotFoundError:
            created_ms = 0
        return self.grants.grant(fleet=self.fleet, device_id=device_id, deployment_id=deployment_id,
                                 manifest=manifest, kind=kind, version_created_ms=created_ms)

    def _await(self, infos: list[mqtt.MQTTMessageInfo], what: str) -> None:
        deadline = time.monotonic() + self.publish_timeout
        for info in infos:
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                log.warning("publishing %s not confirmed (%s); it is re-sent on reconnect", what, exc)
                return
            if not info.is_published():
                log.warning(
                    "publishing %s not confirmed within %.0fs; it is re-sent on reconnect", what, self.publish_timeout
                )
                return

    def _republish_desired(self) -> None:
        try:
            by_dep: dict[str, list[str]] = {}
            for device_id, dep_id in self.registry.desired_deployments().items():
                by_dep.setdefault(dep_id, []).append(device_id)
            for dep_id, devices in by_dep.items():
                self._publish_desired(self.registry.get_deployment(deployment_id=dep_id), devices)
            self._count("desired_republished", sum(len(v) for v in by_dep.values()))
        except Exception:  # noqa: BLE001 - never let this kill a thread silently
            log.exception("re-publishing desired state failed")

    def _artifacts_for(
        self,
        target: Manifest | str | None,
        device_ids: list[str],
        thresholds: Thresholds | None,
        actor: str,
        per_profile: dict[str, Manifest | str] | None = None,
    ) -> dict[str, str]:
        """Device id → artifact id: one given artifact for all, or each profile's artifact.

        ``per_profile`` (profile id → manifest, artifact id or version id) overrides ``target`` for
        the devices of those profiles: one deployment can then carry an ONNX artifact to some devices
        and a TFLite one to others, which a single version (one format) cannot.
        """
        if not per_profile and target is not None and not self._is_version(target):
            return dict.fromkeys(device_ids, self._artifact_of(target, None, thresholds, actor))
        mapping: dict[str, str] = {}
        resolved: dict[str, str] = {}  # profile → artifact id: the chosen target depends on the profile only
        for device_id in device_ids:
            profile = self.registry.get_device(device_id=device_id).profile
            if not profile:
                raise InvalidInputError(f"device {device_id} has not reported its profile yet; wait for it to connect")
            chosen = (per_profile or {}).get(profile, target)
            if chosen is None:
                raise InvalidInputError(
                    f"nothing to deploy to device {device_id} (profile {profile!r}): per_profile names "
                    f"{sorted(per_profile or {})} and no default target was given"
                )
            if profile not in resolved:
                resolved[profile] = self._artifact_of(chosen, profile, thresholds, actor)
            mapping[device_id] = resolved[profile]
        return mapping

    def _is_version(self, target: Manifest | str) -> bool:
        """A string that is no artifact id is taken as a version id (resolved per profile)."""
        if isinstance(target, Manifest):
            return False
        try:
            self.registry.get_artifact(artifact_id=target)
        except NotFoundError:
            return True
        return False

    def _artifact_of(self, target: Manifest | str, profile: str | None, thresholds: Thresholds | None,
                     actor: str) -> str:
        """Artifact id of a manifest (recorded if new), an artifact id, or a version id's artifact for ``profile``."""
        if isinstance(target, Manifest):
            art = self.registry.find_artifact(manifest=target) or self.registry.add_artifact(
                manifest=target, actor=actor
            )
            return art.id
        if not self._is_version(target):
            return target
        version = self.registry.get_version(version_id=target)
        if profile is None:
            raise InvalidInputError(f"version {version.id} needs the device's profile to pick its artifact")
        return self._artifact_for_profile(version.id, profile, thresholds, actor)

    def _artifact_for_profile(self, version_id: str, profile: str, thresholds: Thresholds | None, actor: str) -> str:
        if self.artifact_builder is not None:
            return self.artifact_builder.artifact_for(
                version_id=version_id, profile=profile, thresholds=thresholds, actor=actor
            ).id
        for art in self.registry.list_artifacts(version_id=version_id, profile=profile):
            if thresholds is None or art.manifest.get("thresholds") == thresholds.model_dump():
                return art.id
        raise InvalidInputError(
            f"version {version_id} has no artifact for profile {profile!r}; build one with "
            "controller.artifacts.build_artifact or give the fleet service an ArtifactBuilder"
        )

    def deploy(
        self,
        target: Manifest | str | None = None,
        device_ids: list[str] | None = None,
        *,
        version_id: str | None = None,
        thresholds: Thresholds | dict[str, float] | None = None,
        per_profile: dict[str, Manifest | str] | None = None,
        actor: str | None = None,
        allow_profile_mismatch: bool = False,
    ) -> DeploymentRecord:
        """Roll out to devices: record the deployment, then publish a retained QoS1 ``Desired`` per device.

        Args:
            target: a signed Manifest (recorded as an artifact if new), an artifact id, or a
                version id (same as ``version_id=``): each device then gets the version's
                artifact for its profile, found or built by the ``artifact_builder``.
            device_ids: devices known to the registry (connected once, or ``register_device``).
            thresholds: regression gate for artifacts built here (a dict of ``Thresholds`` fields).
            per_profile: profile id → manifest, artifact id or version id for the devices of that
                profile, overriding ``target`` (which may then be None if every device's profile is
                named). One deployment then reaches devices that need different formats, e.g.
                ``deploy(onnx_int8.id, ids, per_profile={"android-arm64": tflite_int8.id})``.
            allow_profile_mismatch: for tests that check agents refuse a wrong-profile artifact.

        Returns:
            The deployment record (``.id`` is the UUID4 to follow with :meth:`wait_for`).
        """
        actor = actor or self.actor
        target = target if target is not None else version_id
        if (target is None and not per_profile) or not device_ids:
            raise InvalidInputError(
                "deploy needs a manifest, artifact id or version id (or per_profile=), and at least one device id"
            )
        if isinstance(thresholds, dict):
            try:
                thresholds = Thresholds(**thresholds)
            except ValueError as exc:  # pydantic.ValidationError is a ValueError
                raise InvalidInputError(f"invalid thresholds: {exc}") from exc
        mapping = self._artifacts_for(target, list(device_ids), thresholds, actor, per_profile)
        dep = self.registry.create_deployment(
            device_ids=list(device_ids),
            device_artifacts=mapping,
            actor=actor,
            allow_profile_mismatch=allow_profile_mismatch,
        )
        self._publish_desired(dep, list(device_ids))
        log.info("deployment %s: version %s to %s", dep.id, dep.version_id, ", ".join(device_ids))
        return dep

    def rollback(self, deployment_id: str, *, actor: str | None = None, reason: str = "") -> DeploymentRecord | None:
        """Fleet-level rollback: send every device of a deployment back to the artifact it had before.

        One new deployment (``kind="rollback"``, ``rollback_of=deployment_id``) re-publishes each
        device's previous signed manifest; devices with nothing before get their retained desired
        cleared and keep what they run. Returns the new deployment, or None if no device had a
        previous one. ConflictError if the deployment was already rolled back.
        """
        actor = actor or self.actor
        plan = self.registry.mark_deployment_rolled_back(deployment_id=deployment_id, reason=reason, actor=actor)
        return self.send_back(plan, rollback_of=deployment_id, actor=actor)

    def send_back(
        self, plan: dict[str, str | None], *, rollback_of: str, actor: str | None = None
    ) -> DeploymentRecord | None:
        """Send devices back to given artifacts (device id → artifact id, None = clear its desired).

        The one place a ``kind="rollback"`` deployment is made; rollouts call it with the artifact
        each device ran *before the rollout* (retries inside a rollout make "the previous
        deployment" the rollout's own first attempt, so they cannot use :meth:`rollback`).
        """
        actor = actor or self.actor
        for device, previous in plan.items():
            if previous is None:
                self.registry.clear_desired(device_id=device, actor=actor)
                info = self.client.publish(topics.desired(self.fleet, device), b"", qos=1, retain=True)
                self._await([info], f"clearing desired of {device}")
        back = {d: a for d, a in plan.items() if a is not None}
        self._notify()
        if not back:
            return None
        dep = self.registry.create_deployment(
            device_ids=list(back),
            device_artifacts=back,
            actor=actor,
            kind="rollback",
            rollback_of=rollback_of,
            allow_profile_mismatch=True,
        )
        self._publish_desired(dep, list(back))
        return dep

    def publish_ha_discovery(self, device_ids: list[str] | None = None, *, prefix: str = "homeassistant") -> int:
        """Publish retained Home Assistant discovery configs for devices (default: every known one).

        Returns the number of configs published. See :mod:`controller.fleet.homeassistant`.
        """
        from controller.fleet.homeassistant import discovery_messages

        devices = [self.registry.get_device(device_id=d) for d in device_ids] if device_ids else \
            self.registry.list_devices()
        infos = []
        for dev in devices:
            for topic, payload in discovery_messages(self.fleet, dev.id, profile=dev.profile, prefix=prefix):
                infos.append(self.client.publish(topic, payload, qos=1, retain=True))
        self._await(infos, "Home Assistant discovery configs")
        return len(infos)

    # ------------------------------------------------------------------ waiting
    def wait_for(self, deployment_id: str | DeploymentRecord, timeout: float) -> DeploymentSummary:
        """Block until every device of the deployment is terminal, or ``timeout`` seconds pass."""
        if isinstance(deployment_id, DeploymentRecord):
            deployment_id = deployment_id.id
        deadline = time.monotonic() + timeout
        while True:
            dep = self.registry.get_deployment(deployment_id=deployment_id)
            remaining = deadline - time.monotonic()
            if dep.done or remaining <= 0:
                return DeploymentSummary(dep, timed_out=not dep.done)
            with self._changed:
                self._changed.wait(min(remaining, 1.0))

    def wait_for_devices(self, device_ids: list[str], timeout: float, *, online: bool = True) -> bool:
        """Block until all the devices are known with the given presence; False on timeout."""
        deadline = time.monotonic() + timeout
        wanted = set(device_ids)
        while True:
            have = {d.id for d in self.registry.list_devices(online=online)}
            if wanted <= have:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                self._changed.wait(min(remaining, 1.0))


def _mismatch(what: str, value: str, parsed: ParsedTopic) -> ProtocolError:
    from common.errors import ReasonCode

    return ProtocolError(
        ReasonCode.MALFORMED_PAYLOAD, f"{what} payload says {value!r} but was published on topic for {parsed}"
    )
