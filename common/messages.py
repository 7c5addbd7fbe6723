"""Pydantic models for every MQTT payload; each carries ``schema_version``.

Decoding goes through :func:`decode`, which turns bad JSON, an unknown schema
version or a field error into a :class:`ProtocolError` with a reason code, so
neither side ever crashes on a malformed message.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.compat import UTC
from common.errors import ProtocolError, ReasonCode
from common.grant import Grant
from common.manifest import Manifest
from common.update_states import UpdateState

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 1 * 1024 * 1024
"""Largest JSON control message accepted (chunks are binary and bounded separately)."""

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
"""Sequence numbers end up in SQLite INTEGER columns (signed 64 bit): larger ones are refused at decode."""
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def utcnow() -> datetime:
    """All timestamps are timezone-aware UTC."""
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of all payloads: strict about unknown fields so typos surface."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        """Compact JSON for the wire."""
        return self.model_dump_json().encode()


class ModelRef(BaseModel):
    """Which model build a slot holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_id: Id
    version: Id
    sha256: Sha256
    format: str


class DeviceState(Message):
    """Retained presence + state; the last-will is the same message with online=False.

    ``session_id`` changes on every connect: the controller ignores an offline will
    whose session is older than the birth it already has (Sparkplug-style).
    """

    device_id: Id
    session_id: str = Field(max_length=128)
    seq: Seq = 0
    online: bool
    agent_version: str = ""
    profile: str = ""
    active: ModelRef | None = None
    previous: ModelRef | None = None
    update_state: UpdateState = UpdateState.IDLE
    deployment_id: str | None = None
    ts: datetime = Field(default_factory=utcnow)


class DeviceCaps(Message):
    """What the device can run, published retained once per connect."""

    device_id: Id
    profile: str
    arch: str
    isa_features: list[str] = []
    cores: int
    ram_mb: int
    runtimes: list[str] = []
    execution_providers: list[str] = []
    formats: list[str] = []
    missing_runtimes: list[str] = []
    """Runtimes the profile names that this machine lacks (e.g. onnxruntime on a RISC-V board: no
    riscv64 wheel exists); with none of its formats runnable the device can take no deployment."""
    emulated: str | None = None
    """Set (``"qemu-user"``) when the agent runs under a CPU emulator: its latency is not the device's."""

    def to_bytes(self) -> bytes:
        """Wire JSON; the two additive fields are left out at their defaults, so controllers built
        before they existed (which forbid unknown fields) still accept caps from ordinary devices."""
        return self.model_dump_json(exclude=_defaults_excluded(self, ("missing_runtimes", "emulated"))).encode()


class Desired(Message):
    """Retained desired model for a device; an agent that was offline reconciles to it on return.

    ``kind="rollback"`` marks a fleet-level rollback: the agent then reinstates the model
    without the relative latency/memory gate, but *only* if it committed that exact model
    (sha256) itself before; any other "rollback" target is gated like a new candidate.

    ``grant`` (schema 2) is the controller's signed instruction binding the manifest to this
    deployment, fleet and device, with an expiry and the anti-rollback counters
    (:mod:`common.grant`). Schema 2 is a deliberate bump of this one message: an agent built
    before it answers ``unsupported_schema`` rather than silently installing without the checks,
    and a current agent refuses a schema 1 desired (no grant) unless started with
    ``--accept-ungranted`` during an upgrade.
    """

    schema_version: Literal[1, 2] = 2  # type: ignore[assignment]
    deployment_id: Id
    manifest: Manifest
    kind: Literal["deploy", "rollback"] = "deploy"
    issued_at: datetime = Field(default_factory=utcnow)
    grant: Grant | None = None

    def to_bytes(self) -> bytes:
        """Wire JSON; ``kind`` is left out when it is the default (as schema 1 did), ``grant`` when absent."""
        exclude = ({"kind"} if self.kind == "deploy" else set()) | ({"grant"} if self.grant is None else set())
        return self.model_dump_json(exclude=exclude or None).encode()


class ChunkRequest(Message):
    """Agent asks for the chunks it is missing; an empty list means 'all'."""

    deployment_id: Id
    sha256: Sha256
    missing: list[Count] = Field(default=[], max_length=1 << 20)


class JobReport(Message):
    """One update state transition; idempotent on (deployment_id, seq)."""

    device_id: Id
    deployment_id: Id
    seq: Seq
    state: UpdateState
    reason: ReasonCode = ReasonCode.OK
    detail: str = ""
    ts: datetime = Field(default_factory=utcnow)


class BenchMetrics(BaseModel):
    """On-device figures for one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    latency_p50_ms: float
    latency_p95_ms: float
    load_ms: float
    peak_rss_delta_mb: float
    quality: float
    quality_metric: str
    runs: int
    runtime: str = "onnxruntime"
    emulated: str | None = None
    """Measured under a CPU emulator (``"qemu-user"``): the latency and memory figures describe the
    emulator and are not comparable with any device's; quality is real (the device's own kernels ran)."""


class BenchReport(Message):
    """The benchmark of a candidate against the active model, with the decision taken."""

    device_id: Id
    deployment_id: Id
    candidate: ModelRef
    candidate_metrics: BenchMetrics
    baseline: ModelRef | None = None
    baseline_metrics: BenchMetrics | None = None
    decision: Literal["commit", "rollback"]
    reasons: list[str] = []
    ts: datetime = Field(default_factory=utcnow)

    def to_bytes(self) -> bytes:
        """Wire JSON; ``emulated`` is left out of metrics measured on real hardware (older controllers
        forbid unknown fields)."""
        exclude: dict[str, Any] = {}
        for name in ("candidate_metrics", "baseline_metrics"):
            metrics = getattr(self, name)
            if metrics is not None and metrics.emulated is None:
                exclude[name] = {"emulated"}
        return self.model_dump_json(exclude=exclude or None).encode()


class Telemetry(Message):
    """Periodic QoS0 telemetry for dashboards."""

    device_id: Id
    cpu_percent: float
    mem_percent: float
    rss_mb: float
    temperature_c: float | None = None
    inferences: Count = 0
    """Real inferences served since the previous sample (``agent.serving``)."""
    errors: Count = 0
    """Of those, how many failed in the runtime."""
    latency_ms_p50: float | None = None
    """p50 latency of those inferences; None when there were none."""
    latency_ms_p95: float | None = None
    ts: datetime = Field(default_factory=utcnow)


M = TypeVar("M", bound=BaseModel)


def _defaults_excluded(message: BaseModel, names: tuple[str, ...]) -> set[str] | None:
    """Of ``names``, the fields still at their default value (to leave additive fields off the wire)."""
    fields = type(message).model_fields
    left_out = {n for n in names if getattr(message, n) == fields[n].get_default(call_default_factory=True)}
    return left_out or None


def _load_json(payload: bytes | str) -> Any:
    if isinstance(payload, (bytes, bytearray, str)) and len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(ReasonCode.SIZE_EXCEEDED, f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    depth = nesting_depth(payload)
    if depth > MAX_NESTING:
        raise ProtocolError(ReasonCode.MALFORMED_PAYLOAD, f"JSON nested {depth} levels deep (at most {MAX_NESTING})")
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(ReasonCode.MALFORMED_PAYLOAD, f"not JSON: {type(exc).__name__}: {exc}") from exc


MAX_NESTING = 32
"""Deepest JSON nesting any payload needs is 5; 32 leaves room and stays far from the recursion limit."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def nesting_depth(payload: bytes | str) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text (strings skipped); stops counting past :data:`MAX_NESTING`.

    Why a scan before ``json.loads``: a 400 KB payload of brackets made the parser raise
    RecursionError with a full traceback on both sides; refusing it by depth keeps it an
    ordinary ``malformed_payload``. Strings are cut out and brackets found by regex (in C), so
    the Python loop only sees bracket characters.

    Example:
        >>> nesting_depth(b'{"a": [1, {"b": "[[["}]}')
        3
    """
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", data)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_NESTING:
                    break
        else:
            depth -= 1
    return deepest


def schema_versions(model: type[BaseModel]) -> tuple[int, ...]:
    """The ``schema_version`` values a message type accepts (from its ``Literal`` annotation)."""
    from typing import get_args

    field = model.model_fields.get("schema_version")
    return tuple(get_args(field.annotation)) if field is not None else (SCHEMA_VERSION,)


def decode(model: type[M], payload: bytes | str) -> M:
    """Parse and validate one payload; every failure becomes a ProtocolError with a reason code.

    Example:
        >>> decode(ChunkRequest, b'{"schema_version":1,"deployment_id":"d1","sha256":"' + b"a" * 64 + b'"}').missing
        []
    """
    data = _load_json(payload)
    if not isinstance(data, dict):
        raise ProtocolError(ReasonCode.MALFORMED_PAYLOAD, "payload is not a JSON object")
    version = data.get("schema_version")
    spoken = schema_versions(model)
    if version not in spoken or isinstance(version, bool):
        raise ProtocolError(
            ReasonCode.UNSUPPORTED_SCHEMA,
            f"{model.__name__} schema_version {version!r} not supported (this side speaks "
            f"{', '.join(map(str, spoken))})",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProtocolError(
            ReasonCode.MALFORMED_PAYLOAD, f"{model.__name__}.{where}: {first['msg']}"
        ) from exc
