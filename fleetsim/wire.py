"""What every fake end of the protocol shares: a paho login, the device's birth messages, publishing by kind.

Publishing goes through :data:`common.topics.TOPICS`, so a simulated device or a stub
controller uses exactly the QoS and retain flag the real agent and controller use.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common import topics
from common.errors import ReasonCode
from common.messages import DeviceCaps, DeviceState, JobReport, Message
from common.topics import TopicKind
from common.update_states import UpdateState


def login(username: str, password: str, *, client_id: str | None = None) -> mqtt.Client:
    """A paho v2 client logged in as one broker user (a device id, or ``controller``)."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id or f"{username}-{uuid.uuid4().hex[:6]}"
    )
    client.username_pw_set(username, password)
    return client


def publish(client: mqtt.Client, kind: TopicKind, topic: str, payload: Message | bytes) -> mqtt.MQTTMessageInfo:
    """Publish with the QoS and retain flag :data:`common.topics.TOPICS` declares for this kind."""
    spec = topics.spec(kind)
    data = payload if isinstance(payload, bytes) else payload.to_bytes()
    return client.publish(topic, data, qos=spec.qos, retain=spec.retain)


def will(client: mqtt.Client, fleet: str, state: DeviceState) -> None:
    """Set the offline DeviceState as the last-will (retained, like the birth it replaces)."""
    spec = topics.spec(TopicKind.STATE)
    client.will_set(topics.state(fleet, state.device_id), state.to_bytes(), qos=spec.qos, retain=spec.retain)


def device_state(
    device_id: str, *, session_id: str, seq: int, online: bool, profile: str, ts: datetime | None = None, **kw: Any
) -> DeviceState:
    """A presence/state message as an agent sends it."""
    return DeviceState(
        device_id=device_id, session_id=session_id, seq=seq, online=online, profile=profile,
        ts=ts or datetime.now(UTC), **kw,
    )


def device_caps(device_id: str, profile: str, *, arch: str = "x86_64", cores: int = 1, ram_mb: int = 1024,
                **kw: Any) -> DeviceCaps:
    """A capabilities message (retained once per connect)."""
    return DeviceCaps(device_id=device_id, profile=profile, arch=arch, cores=cores, ram_mb=ram_mb, **kw)


def job_report(device_id: str, deployment_id: str, seq: int, state: UpdateState | str,
               reason: ReasonCode = ReasonCode.OK, detail: str = "") -> JobReport:
    """One update-state transition report."""
    return JobReport(device_id=device_id, deployment_id=deployment_id, seq=seq, state=UpdateState(state),
                     reason=reason, detail=detail)
