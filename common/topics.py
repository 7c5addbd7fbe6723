"""MQTT topic builders and parsers: the only place a topic string is assembled.

Every topic lives under ``fl/v1/<fleet>/dev/<device>/...`` so one ACL line
(``pattern readwrite fl/v1/+/dev/%u/#``) confines a device to its own subtree.
Identifiers are validated so a device id can never smuggle ``/``, ``+`` or
``#`` into a topic and reach another device's subtree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from common.messages import (
    BenchReport,
    ChunkRequest,
    Desired,
    DeviceCaps,
    DeviceState,
    JobReport,
    Message,
    Telemetry,
)

ROOT = "fl/v1"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class TopicError(ValueError):
    """A topic or an identifier inside one is not valid."""


class TopicKind(StrEnum):
    """What a device-scoped topic carries; values are wire names and never change."""

    STATE = "state"
    CAPS = "caps"
    DESIRED = "desired"
    CHUNK = "chunk"
    CHUNK_REQUEST = "req"
    JOB = "job"
    BENCH = "bench"
    TELEMETRY = "tm"


@dataclass(frozen=True)
class TopicSpec:
    """How one kind of topic is used: who sends it, what it carries, with which QoS and retain flag.

    Declared once here (:data:`TOPICS`) and read by the agent, the controller's report
    intake and subscriptions, and the fleet simulator, so the three can never disagree.
    """

    kind: TopicKind
    payload: type[Message] | None
    """The :mod:`common.messages` model carried (None: raw bytes, an artifact chunk)."""
    qos: int
    retain: bool
    sender: str
    """``"device"`` or ``"controller"``."""


TOPICS: dict[TopicKind, TopicSpec] = {
    spec.kind: spec
    for spec in (
        TopicSpec(TopicKind.STATE, DeviceState, qos=1, retain=True, sender="device"),
        TopicSpec(TopicKind.CAPS, DeviceCaps, qos=1, retain=True, sender="device"),
        TopicSpec(TopicKind.JOB, JobReport, qos=1, retain=False, sender="device"),
        TopicSpec(TopicKind.BENCH, BenchReport, qos=1, retain=False, sender="device"),
        TopicSpec(TopicKind.CHUNK_REQUEST, ChunkRequest, qos=1, retain=False, sender="device"),
        TopicSpec(TopicKind.TELEMETRY, Telemetry, qos=0, retain=False, sender="device"),
        TopicSpec(TopicKind.DESIRED, Desired, qos=1, retain=True, sender="controller"),
        TopicSpec(TopicKind.CHUNK, None, qos=1, retain=False, sender="controller"),
    )
}
"""Topic kind → payload type, QoS and retain: the one table of the protocol's delivery rules."""


def spec(kind: TopicKind | str) -> TopicSpec:
    """The delivery rules of one topic kind.

    Example:
        >>> spec("tm").qos
        0
    """
    return TOPICS[TopicKind(kind)]


def sent_by(sender: str) -> tuple[TopicSpec, ...]:
    """Every topic kind one side publishes (what the other side subscribes to)."""
    return tuple(s for s in TOPICS.values() if s.sender == sender)


def validate_id(value: str, what: str = "id") -> str:
    """Reject identifiers that could escape their topic level or a file path.

    Example:
        >>> validate_id("rpi4-01")
        'rpi4-01'
    """
    if not isinstance(value, str) or not _ID_RE.match(value) or ".." in value:
        raise TopicError(
            f"invalid {what} {value!r}: use 1-64 characters from [A-Za-z0-9_.-], "
            "starting with a letter or digit, without '..'"
        )
    return value


def validate_sha(value: str) -> str:
    """Artifact ids are lowercase hex sha256 digests, nothing else."""
    if not isinstance(value, str) or not _SHA_RE.match(value):
        raise TopicError(f"invalid sha256 {value!r}: expected 64 lowercase hex characters")
    return value


def device_root(fleet: str, device: str) -> str:
    """Base of one device's subtree."""
    return f"{ROOT}/{validate_id(fleet, 'fleet')}/dev/{validate_id(device, 'device id')}"


def state(fleet: str, device: str) -> str:
    """Retained presence/state topic, also the last-will topic."""
    return f"{device_root(fleet, device)}/state"


def caps(fleet: str, device: str) -> str:
    """Retained capabilities topic."""
    return f"{device_root(fleet, device)}/caps"


def desired(fleet: str, device: str) -> str:
    """Retained desired-model topic written by the controller."""
    return f"{device_root(fleet, device)}/desired"


def chunk(fleet: str, device: str, sha256: str, index: int) -> str:
    """One artifact chunk for one device."""
    if index < 0:
        raise TopicError(f"chunk index must be >= 0, got {index}")
    return f"{device_root(fleet, device)}/art/{validate_sha(sha256)}/chunk/{index}"


def chunk_request(fleet: str, device: str, sha256: str) -> str:
    """Agent asks for (missing) chunks of one blob; this is what makes downloads resumable."""
    return f"{device_root(fleet, device)}/art/{validate_sha(sha256)}/req"


def job(fleet: str, device: str, deployment: str) -> str:
    """Update state transitions of one deployment on one device."""
    return f"{device_root(fleet, device)}/job/{validate_id(deployment, 'deployment id')}"


def bench(fleet: str, device: str, deployment: str) -> str:
    """Benchmark report of one deployment on one device."""
    return f"{device_root(fleet, device)}/bench/{validate_id(deployment, 'deployment id')}"


def telemetry(fleet: str, device: str) -> str:
    """Periodic QoS0 telemetry."""
    return f"{device_root(fleet, device)}/tm"


def device_filter(fleet: str, device: str) -> str:
    """Subscription filter for everything in one device's subtree."""
    return f"{device_root(fleet, device)}/#"


def fleet_filter(fleet: str, kind: TopicKind | str) -> str:
    """Subscription filter the controller uses for one kind of agent message across a fleet."""
    kind = TopicKind(kind)
    base = f"{ROOT}/{validate_id(fleet, 'fleet')}/dev/+"
    if kind in (TopicKind.JOB, TopicKind.BENCH):
        return f"{base}/{kind.value}/+"
    if kind is TopicKind.CHUNK_REQUEST:
        return f"{base}/art/+/req"
    if kind is TopicKind.CHUNK:
        return f"{base}/art/+/chunk/+"
    return f"{base}/{kind.value}"


@dataclass(frozen=True)
class ParsedTopic:
    """A device-scoped topic taken apart."""

    fleet: str
    device: str
    kind: TopicKind
    sha256: str | None = None
    index: int | None = None
    deployment: str | None = None


def _parse_tail(tail: list[str]) -> tuple[TopicKind, dict[str, object]]:
    if len(tail) == 1 and tail[0] in {"state", "caps", "desired", "tm"}:
        return TopicKind(tail[0]), {}
    if len(tail) == 2 and tail[0] in {"job", "bench"}:
        return TopicKind(tail[0]), {"deployment": validate_id(tail[1], "deployment id")}
    if len(tail) == 3 and tail[0] == "art" and tail[2] == "req":
        return TopicKind.CHUNK_REQUEST, {"sha256": validate_sha(tail[1])}
    if len(tail) == 4 and tail[0] == "art" and tail[2] == "chunk" and tail[3].isdigit():
        return TopicKind.CHUNK, {"sha256": validate_sha(tail[1]), "index": int(tail[3])}
    raise TopicError(f"unknown topic tail {'/'.join(tail)!r}")


def parse(topic: str) -> ParsedTopic:
    """Take a device-scoped topic apart; raises TopicError for anything we did not build.

    Example:
        >>> parse("fl/v1/demo/dev/pi-1/job/d1").deployment
        'd1'
    """
    parts = topic.split("/")
    if len(parts) < 6 or parts[0] != "fl" or parts[1] != "v1" or parts[3] != "dev":
        raise TopicError(f"not an edgefleet topic: {topic!r}")
    fleet = validate_id(parts[2], "fleet")
    device = validate_id(parts[4], "device id")
    kind, extra = _parse_tail(parts[5:])
    return ParsedTopic(fleet=fleet, device=device, kind=kind, **extra)  # type: ignore[arg-type]


def matches(pattern: str, topic: str) -> bool:
    """MQTT wildcard match (``+`` one level, ``#`` the rest), used by the in-process routers."""
    p_parts = pattern.split("/")
    t_parts = topic.split("/")
    for i, p in enumerate(p_parts):
        if p == "#":
            return True
        if i >= len(t_parts):
            return False
        if p != "+" and p != t_parts[i]:
            return False
    return len(p_parts) == len(t_parts)


def device_chunk_filter(fleet: str, device: str) -> str:
    """Subscription filter an agent uses for every artifact chunk sent to it (any blob, any index)."""
    return f"{device_root(fleet, device)}/art/+/chunk/+"
