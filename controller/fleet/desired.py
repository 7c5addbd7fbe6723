"""Desired-state publisher: each device's retained ``desired`` message, and waiting for the broker's acks.

The registry says which deployment each device should run; this publishes it (the signed
manifest of the device's own artifact), clears it, and re-publishes all of it after a
reconnect in case the broker lost its retained messages.
"""

from __future__ import annotations

import logging
import time

import paho.mqtt.client as mqtt

from common import topics
from common.grant import Grant
from common.manifest import Manifest
from common.messages import Desired
from common.topics import TopicKind
from controller.fleet.counters import Counters
from controller.fleet.grants import GrantIssuer
from controller.registry import DeploymentRecord, NotFoundError, Registry

log = logging.getLogger(__name__)


class DesiredPublisher:
    """Publishes retained ``Desired`` messages of one fleet with the controller's paho client.

    Args:
        registry: the source of desired deployments and manifests.
        client: the controller's connected paho client.
        fleet: fleet id.
        publish_timeout: how long to wait for the broker's acks before logging and moving on
            (anything unconfirmed is re-sent on the next connect).
        counters: where ``desired_republished`` is counted.
        grants: signs the grant each desired carries (:mod:`common.grant`); None = no grant
            (agents refuse such a desired unless started with ``--accept-ungranted``).
    """

    def __init__(
        self, registry: Registry, client: mqtt.Client, fleet: str, *, publish_timeout: float, counters: Counters,
        grants: GrantIssuer | None = None,
    ) -> None:
        self.registry = registry
        self.grants = grants
        self.client = client
        self.fleet = fleet
        self.publish_timeout = publish_timeout
        self.counters = counters
        self._spec = topics.spec(TopicKind.DESIRED)

    def publish(self, dep: DeploymentRecord, device_ids: list[str]) -> None:
        """Publish each device's Desired (its own artifact's manifest), retained, and wait for the acks."""
        wanted = set(device_ids)
        manifests: dict[str, Manifest] = {}
        infos = []
        for d in dep.devices:
            if d.device_id not in wanted:
                continue
            if d.artifact_id not in manifests:
                manifests[d.artifact_id] = self.registry.artifacts.manifest(artifact_id=d.artifact_id)
            kind = "rollback" if dep.kind == "rollback" else "deploy"
            payload = Desired(
                deployment_id=dep.id,
                manifest=manifests[d.artifact_id],
                issued_at=dep.created_at,
                kind=kind,
                grant=self._grant(dep.id, d.device_id, manifests[d.artifact_id], kind),
            ).to_bytes()
            infos.append(self._send(d.device_id, payload))
        self.await_acks(infos, f"desired of deployment {dep.id}")

    def _grant(self, deployment_id: str, device_id: str, manifest: Manifest, kind: str) -> Grant | None:
        """The signed grant binding this manifest to this deployment and device (None without a key).

        A fleet rollback, or a deployment of a version older than the one the device reports running
        (an A/B promotion, an operator's choice), carries ``rollback_to``: the controller's signed
        permission for that one model to go below the device's version floor. Without it the agent
        refuses an older version (``rollback_refused``), which is what stops a replayed old instruction.
        """
        if self.grants is None:
            return None
        created_ms = self._created_ms(manifest.version)
        model_sha = manifest.blob("model").sha256
        rollback_to = model_sha if kind == "rollback" else None
        try:
            active = self.registry.devices.get_device(device_id=device_id).active or {}
        except NotFoundError:
            active = {}
        if (rollback_to is None and active.get("model_id") == manifest.model_id
                and active.get("version") not in (None, manifest.version)
                and self._created_ms(str(active["version"])) > created_ms > 0):
            rollback_to = model_sha
            log.info("deployment %s takes %s back to the older %s@%s", deployment_id, device_id, manifest.model_id,
                     manifest.version)
        return self.grants.grant(fleet=self.fleet, device_id=device_id, deployment_id=deployment_id,
                                 manifest=manifest, kind=kind, version_created_ms=created_ms, rollback_to=rollback_to)

    def _created_ms(self, version_id: str) -> int:
        try:
            return int(self.registry.get_version(version_id=version_id).created_at.timestamp() * 1000)
        except NotFoundError:
            return 0

    def clear(self, device_id: str) -> None:
        """Clear a device's retained desired (it keeps what it runs)."""
        self.await_acks([self._send(device_id, b"")], f"clearing desired of {device_id}")

    def republish_all(self) -> None:
        """Re-send every device's desired deployment (after a reconnect); never raises."""
        try:
            by_dep: dict[str, list[str]] = {}
            for device_id, dep_id in self.registry.devices.desired_deployments().items():
                by_dep.setdefault(dep_id, []).append(device_id)
            for dep_id, devices in by_dep.items():
                self.publish(self.registry.deployments.get_deployment(deployment_id=dep_id), devices)
            self.counters.count("desired_republished", sum(len(v) for v in by_dep.values()))
        except Exception:  # noqa: BLE001 - never let this kill a thread silently
            log.exception("re-publishing desired state failed")

    def _send(self, device_id: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self.client.publish(
            topics.desired(self.fleet, device_id), payload, qos=self._spec.qos, retain=self._spec.retain
        )

    def await_acks(self, infos: list[mqtt.MQTTMessageInfo], what: str) -> None:
        """Wait (bounded by ``publish_timeout`` in all) for the broker to confirm these publishes."""
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
