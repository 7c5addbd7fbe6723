"""Report intake: every message a device publishes, decoded by its topic's declared type and handled.

The table is topic kind → handler; the payload type of each kind comes from
:data:`common.topics.TOPICS`, the same table the agent and the simulator publish with.
Anything malformed, spoofed (payload names another device than its topic), duplicated or
aimed at an unknown deployment is logged and counted, never raised into paho's network
thread. Every applied report notifies :class:`controller.fleet.changes.ChangeNotifier`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from common import topics
from common.errors import ProtocolError, ReasonCode
from common.messages import BenchReport, ChunkRequest, DeviceCaps, DeviceState, JobReport, Message, Telemetry, decode
from common.topics import ParsedTopic, TopicError, TopicKind
from controller.fleet.changes import ChangeNotifier
from controller.fleet.chunks import ChunkServer
from controller.fleet.counters import Counters
from controller.fleet.telemetry import TelemetryStore
from controller.registry import Registry, ReportOutcome

log = logging.getLogger(__name__)

Handler = Callable[[ParsedTopic, Any], None]


class ReportIntake:
    """Decodes and stores what the devices of one fleet send.

    Args:
        registry: where presence, capabilities and reports are recorded.
        fleet: fleet id; messages of other fleets are ignored.
        telemetry: the telemetry store samples are queued to.
        chunks: the chunk server chunk requests go to.
        changes: notified after every applied report or state change.
        counters: ``rx_<kind>``, ``malformed``, ``spoofed``, ``duplicate``, ``stale``, ...
    """

    def __init__(
        self,
        registry: Registry,
        fleet: str,
        *,
        telemetry: TelemetryStore,
        chunks: ChunkServer,
        changes: ChangeNotifier,
        counters: Counters,
    ) -> None:
        self.registry = registry
        self.fleet = fleet
        self.telemetry = telemetry
        self.chunks = chunks
        self.changes = changes
        self.counters = counters
        self._active_sha: dict[str, str | None] = {}
        self.handlers: dict[TopicKind, Handler] = {
            TopicKind.STATE: self._on_state,
            TopicKind.CAPS: self._on_caps,
            TopicKind.JOB: self._on_job,
            TopicKind.BENCH: self._on_bench,
            TopicKind.TELEMETRY: self._on_telemetry,
            TopicKind.CHUNK_REQUEST: self._on_chunk_request,
        }

    def subscriptions(self) -> list[tuple[str, int]]:
        """(filter, QoS) for every kind a device sends, as declared in :data:`common.topics.TOPICS`."""
        return [(topics.fleet_filter(self.fleet, s.kind), s.qos) for s in topics.sent_by("device")]

    def on_message(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Handle one message from paho's network thread; never raises.

        ``retained``: the broker delivered its stored retained message (on subscribe), i.e. the newest
        state it holds for that topic, as opposed to a live publish.
        """
        self._retained = retained
        try:
            parsed = topics.parse(topic)
            handler = self.handlers.get(parsed.kind)
            if handler is None or parsed.fleet != self.fleet:
                self.counters.count("ignored_topic")
                return
            self.counters.count(f"rx_{parsed.kind.value}")
            message = self._decode(parsed, payload)
            if message is not None:
                handler(parsed, message)
        except (ProtocolError, TopicError) as exc:
            self.counters.count("malformed")
            self.counters.count(f"rejected_{exc.reason.value if isinstance(exc, ProtocolError) else 'bad_topic'}")
            log.warning("malformed message on %s: %s", topic[:200], str(exc)[:500])
        except Exception:  # noqa: BLE001 - a bad report must never kill the network thread
            self.counters.count("handler_errors")
            log.exception("error handling message on %s", topic)

    def _decode(self, parsed: ParsedTopic, payload: bytes) -> Message | None:
        """The payload as its declared type; None for what is dropped before handling (empty, spoofed)."""
        if not payload and parsed.kind in (TopicKind.STATE, TopicKind.CAPS):  # a retained message was cleared
            if parsed.kind is TopicKind.STATE:
                self.counters.count("empty_state")
            return None
        message_type = topics.spec(parsed.kind).payload
        assert message_type is not None  # every kind a device sends is a JSON message
        message = decode(message_type, payload)
        device_id = getattr(message, "device_id", None)
        if device_id is not None and device_id != parsed.device:
            self.counters.count("spoofed")
            log.warning("payload claims device %r on %s's topic; ignored", device_id, parsed.device)
            return None
        deployment_id = getattr(message, "deployment_id", None)
        if parsed.deployment is not None and deployment_id != parsed.deployment:
            raise _mismatch(parsed.kind.value, str(deployment_id), parsed)
        if parsed.sha256 is not None and getattr(message, "sha256", None) != parsed.sha256:
            raise _mismatch(parsed.kind.value, str(getattr(message, "sha256", None)), parsed)
        return message

    def active_sha(self, device_id: str) -> str | None:
        """The model sha256 a device last said it runs (telemetry drift is measured per model)."""
        return self._active_sha.get(device_id)

    # ------------------------------------------------------------------ handlers, by topic kind
    def _on_state(self, parsed: ParsedTopic, state: DeviceState) -> None:
        if not self.registry.devices.record_device_state(state=state, retained=self._retained):
            self.counters.count("stale_state")
            log.info("ignored stale state of %s (session %s)", state.device_id, state.session_id)
        elif state.online:
            self._active_sha[state.device_id] = state.active.sha256 if state.active else None
        self.changes.notify()

    def _on_caps(self, parsed: ParsedTopic, caps: DeviceCaps) -> None:
        self.registry.devices.record_device_caps(caps=caps)

    def _on_job(self, parsed: ParsedTopic, report: JobReport) -> None:
        result = self.registry.reports.record_job_report(report=report)
        log.info(
            "job %s %s seq=%d %s -> %s",
            report.device_id,
            report.deployment_id,
            report.seq,
            report.state,
            result.device_state,
        )
        self._outcome("job", parsed, result.outcome)

    def _on_bench(self, parsed: ParsedTopic, report: BenchReport) -> None:
        result = self.registry.reports.record_bench_report(report=report)
        self._outcome("bench", parsed, result.outcome)

    def _on_telemetry(self, parsed: ParsedTopic, sample: Telemetry) -> None:
        self.telemetry.put(sample, self._active_sha.get(sample.device_id))

    def _on_chunk_request(self, parsed: ParsedTopic, req: ChunkRequest) -> None:
        self.chunks.on_request(parsed.device, req)

    def _outcome(self, what: str, parsed: ParsedTopic, outcome: ReportOutcome) -> None:
        if outcome is not ReportOutcome.APPLIED:
            self.counters.count(outcome.value)
            if outcome in (ReportOutcome.UNKNOWN_DEPLOYMENT, ReportOutcome.NOT_TARGETED):
                log.warning("%s report from %s for deployment %s: %s", what, parsed.device, parsed.deployment, outcome)
        self.changes.notify()


def _mismatch(what: str, value: str, parsed: ParsedTopic) -> ProtocolError:
    return ProtocolError(
        ReasonCode.MALFORMED_PAYLOAD, f"{what} payload says {value!r} but was published on topic for {parsed}"
    )
