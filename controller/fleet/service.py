"""The controller's MQTT side for one fleet: the session, and the doors to deploy, roll back and wait.

One paho-mqtt (v2 callbacks) client logged in as ``controller``; the work is split along
its seams, each in its own module:

* :mod:`controller.fleet.intake` — report intake, a table topic kind → handler (payload
  types, QoS and retain come from :data:`common.topics.TOPICS`);
* :mod:`controller.fleet.chunks` — the chunk server and its sender thread;
* :mod:`controller.fleet.desired` — the retained desired-state publisher;
* :mod:`controller.fleet.targets` — manifest / artifact / version id → artifact per device;
* :mod:`controller.fleet.changes` — the change notification the waits and the rollout engine use;
* :mod:`controller.fleet.homeassistant` — Home Assistant discovery configs.

The registry is the source of truth, so a restarted controller picks up where it left
off (and re-publishes the retained desired state on every connect, in case the broker
lost its retained messages).

Example:
    >>> with FleetService(reg, host=b.host, port=b.port, password=pw, fleet="demo") as fleet:  # doctest: +SKIP
    ...     dep = fleet.deploy(version_id=v.id, device_ids=["pi-1", "pi-2"])  # or a signed Manifest
    ...     print(fleet.wait_for(dep, timeout=300).as_dict())
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common import topics
from common.manifest import Manifest, Thresholds
from controller.fleet.changes import ChangeNotifier
from controller.fleet.chunks import ChunkServer
from controller.fleet.counters import Counters
from controller.fleet.desired import DesiredPublisher
from controller.fleet.errors import FleetError
from controller.fleet.grants import GrantIssuer
from controller.fleet.intake import ReportIntake
from controller.fleet.targets import TargetResolver
from controller.fleet.telemetry import TelemetryStore
from controller.registry import DeploymentRecord, InvalidInputError, Registry

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from controller.artifacts import ArtifactBuilder

log = logging.getLogger(__name__)


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
            :class:`controller.fleet.telemetry.TelemetryStore` on the registry's database.
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
        self.republish_desired_on_connect = republish_desired_on_connect
        self.counters = Counters()
        self.changes = ChangeNotifier()
        self.telemetry = telemetry or TelemetryStore(registry.db)
        self.targets = TargetResolver(registry, artifact_builder)
        self._subscribed = threading.Event()
        self._pending_subs: set[int] = set()
        self._stopping = False
        self.client = _mqtt_client(client_id or f"edgefleet-controller-{self.fleet}", persistent_session,
                                   username, password, tls_ca)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.max_inflight_messages_set(max(20, chunk_window))
        self.chunks = ChunkServer(
            registry, self.client, self.fleet, window=chunk_window, publish_timeout=publish_timeout,
            counters=self.counters,
        )
        key = signing_key or (artifact_builder.signing_key if artifact_builder is not None else None)
        self.desired = DesiredPublisher(registry, self.client, self.fleet, publish_timeout=publish_timeout,
                                        counters=self.counters, grants=GrantIssuer.for_key(registry, key, grant_ttl))
        self.intake = ReportIntake(
            registry, self.fleet, telemetry=self.telemetry, chunks=self.chunks, changes=self.changes,
            counters=self.counters,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, msg: self.intake.on_message(msg.topic, msg.payload, msg.retain)

    @property
    def artifact_builder(self) -> ArtifactBuilder | None:
        """The builder deployments by version id use (see :class:`controller.fleet.targets.TargetResolver`)."""
        return self.targets.artifact_builder

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> FleetService:
        """Connect, subscribe, start the chunk sender; returns once subscriptions are acknowledged."""
        self._stopping = False
        self.telemetry.start()
        self.chunks.start()
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
        self.chunks.stop()
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - best effort on shutdown
            log.debug("disconnect raised", exc_info=True)
        self.client.loop_stop()
        self.telemetry.stop()

    def __enter__(self) -> FleetService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        """True from :meth:`stop` until the next :meth:`start` (the rollout engine then idles)."""
        return self._stopping

    @property
    def connected(self) -> bool:
        """True while the MQTT session is up and subscribed."""
        return self._subscribed.is_set() and self.client.is_connected()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: messages per kind, ``malformed``, ``duplicate``, ``unknown_deployment``, ``chunks_sent``, ..."""
        return self.counters.snapshot()

    def telemetry_lag(self) -> dict[str, float]:
        """Device timestamp → stored, over the last 100k samples (seconds): is intake keeping up?"""
        return self.telemetry.lag()

    # ------------------------------------------------------------------ paho session callbacks
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the controller: %s", reason_code)
            self.counters.count("connect_refused")
            return
        self.counters.count("connects")
        result, mid = client.subscribe(self.intake.subscriptions())
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
            self.counters.count("subscribe_refused")
        if self.republish_desired_on_connect:
            self.chunks.defer(self.desired.republish_all)  # on the sender thread: never block paho's thread
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._subscribed.clear()
        if not self._stopping:
            self.counters.count("disconnects")
            log.warning("lost the broker (%s); paho reconnects with backoff", reason_code)

    # ------------------------------------------------------------------ deployments
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
            device_ids: devices known to the registry (connected once, or ``registry.devices.register_device``).
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
        mapping = self.targets.artifacts_for(target, list(device_ids), thresholds, actor, per_profile)
        dep = self.registry.deployments.create_deployment(
            device_ids=list(device_ids),
            device_artifacts=mapping,
            actor=actor,
            allow_profile_mismatch=allow_profile_mismatch,
        )
        self.desired.publish(dep, list(device_ids))
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
        deployments = self.registry.deployments
        plan = deployments.mark_deployment_rolled_back(deployment_id=deployment_id, reason=reason, actor=actor)
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
                self.registry.devices.clear_desired(device_id=device, actor=actor)
                self.desired.clear(device)
        back = {d: a for d, a in plan.items() if a is not None}
        self.changes.notify()
        if not back:
            return None
        dep = self.registry.deployments.create_deployment(
            device_ids=list(back),
            device_artifacts=back,
            actor=actor,
            kind="rollback",
            rollback_of=rollback_of,
            allow_profile_mismatch=True,
        )
        self.desired.publish(dep, list(back))
        return dep

    def publish_ha_discovery(self, device_ids: list[str] | None = None, *, prefix: str = "homeassistant") -> int:
        """Publish retained Home Assistant discovery configs for devices (default: every known one).

        Returns the number of configs published. See :mod:`controller.fleet.homeassistant`.
        """
        from controller.fleet.homeassistant import discovery_messages

        known = self.registry.devices
        devices = [known.get_device(device_id=d) for d in device_ids] if device_ids else known.list_devices()
        infos = [
            self.client.publish(topic, payload, qos=1, retain=True)
            for dev in devices
            for topic, payload in discovery_messages(self.fleet, dev.id, profile=dev.profile, prefix=prefix)
        ]
        self.desired.await_acks(infos, "Home Assistant discovery configs")
        return len(infos)

    # ------------------------------------------------------------------ waiting
    def wait_for(self, deployment_id: str | DeploymentRecord, timeout: float) -> DeploymentSummary:
        """Block until every device of the deployment is terminal, or ``timeout`` seconds pass."""
        if isinstance(deployment_id, DeploymentRecord):
            deployment_id = deployment_id.id
        deadline = time.monotonic() + timeout
        while True:
            dep = self.registry.deployments.get_deployment(deployment_id=deployment_id)
            remaining = deadline - time.monotonic()
            if dep.done or remaining <= 0:
                return DeploymentSummary(dep, timed_out=not dep.done)
            self.changes.wait(min(remaining, 1.0))

    def wait_for_devices(self, device_ids: list[str], timeout: float, *, online: bool = True) -> bool:
        """Block until all the devices are known with the given presence; False on timeout."""
        deadline = time.monotonic() + timeout
        wanted = set(device_ids)
        while True:
            have = {d.id for d in self.registry.devices.list_devices(online=online)}
            if wanted <= have:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changes.wait(min(remaining, 1.0))


def _mqtt_client(client_id: str, persistent: bool, username: str, password: str, tls_ca: Path | None) -> mqtt.Client:
    """The controller's paho client.

    A stable client id with a persistent session (clean_session=False): while the controller is down
    (crash, kill -9, restart) the broker queues the QoS1 reports devices send and delivers them when it
    comes back; with a random id and a clean session those reports were lost.
    """
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=not persistent)
    client.username_pw_set(username, password)
    if tls_ca is not None:
        client.tls_set(ca_certs=str(tls_ca))
    return client
