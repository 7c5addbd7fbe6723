"""Property-based fuzzing of every payload the controller consumes over MQTT (issue #13 E + item 6).

Each generated payload goes through ``FleetService._on_message`` (the paho callback) with a real
registry: no exception may escape (``handler_errors`` stays 0, no traceback in the log), and every
payload that does not decode is counted under ``rejected_<reason code>``.
"""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import topics
from common.errors import ProtocolError
from common.messages import BenchReport, ChunkRequest, DeviceCaps, DeviceState, JobReport, Telemetry, decode
from controller.fleet.service import FleetService
from controller.registry import Registry
from tests.payload_strategies import SHA, deep, payloads, valid_examples

FLEET = "fz"
DEVICE = "dev-1"
KINDS = {
    "state": (topics.state(FLEET, DEVICE), DeviceState),
    "caps": (topics.caps(FLEET, DEVICE), DeviceCaps),
    "job": (topics.job(FLEET, DEVICE, "d-1"), JobReport),
    "bench": (topics.bench(FLEET, DEVICE, "d-1"), BenchReport),
    "tm": (topics.telemetry(FLEET, DEVICE), Telemetry),
    "req": (topics.chunk_request(FLEET, DEVICE, SHA), ChunkRequest),
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    reg = Registry(tmp_path_factory.mktemp("fuzz") / "ws")
    svc = FleetService(reg, host="127.0.0.1", port=1, password="", fleet=FLEET)  # never connects
    svc.telemetry.start()
    yield svc
    svc.telemetry.stop()
    reg.close()


def _deliver(svc: FleetService, topic: str, payload: bytes) -> None:
    msg = mqtt.MQTTMessage(topic=topic.encode())
    msg.payload = payload
    svc.client.on_message(svc.client, None, msg)  # the paho callback is the unit under test


def _rejected(stats: dict[str, int]) -> int:
    return sum(v for k, v in stats.items() if k.startswith("rejected_"))


def _decodes(model: type, payload: bytes) -> bool:
    try:
        decode(model, payload)
    except ProtocolError:
        return False
    return True


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_no_payload_escapes_and_every_bad_one_is_counted(fleet: FleetService, kind: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    topic, model = KINDS[kind]
    valid = valid_examples(DEVICE)[kind]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow], database=None)
    @given(payload=payloads(valid))
    def check(payload: bytes) -> None:
        before = fleet.stats
        _deliver(fleet, topic, payload)
        after = fleet.stats
        assert after.get("handler_errors", 0) == 0, payload[:200]
        if not _decodes(model, payload) and payload:
            assert _rejected(after) == _rejected(before) + 1, payload[:200]

    with caplog.at_level(logging.WARNING):
        check()
    assert not [r for r in _mine(caplog) if r.exc_info or "Traceback" in r.getMessage()]


def test_reported_e_cases_are_malformed_with_a_reason(fleet: FleetService, caplog: pytest.LogCaptureFixture) -> None:
    """The two payloads of issue #13 E: 400 KB of nesting (RecursionError) and seq >= 2^63 (OverflowError)."""
    bomb = deep(200_000)
    assert len(bomb) == 400_000
    huge_seq = valid_examples(DEVICE)["job"] | {"seq": 2**63}
    import json

    before = fleet.stats
    with caplog.at_level(logging.WARNING):
        for topic, _ in KINDS.values():
            _deliver(fleet, topic, bomb)
        _deliver(fleet, KINDS["job"][0], json.dumps(huge_seq).encode())
        _deliver(fleet, KINDS["state"][0], json.dumps(valid_examples(DEVICE)["state"] | {"seq": 2**64}).encode())
    after = fleet.stats
    assert after.get("handler_errors", 0) == before.get("handler_errors", 0) == 0
    assert after["rejected_malformed_payload"] - before.get("rejected_malformed_payload", 0) == len(KINDS) + 2
    assert not [r for r in _mine(caplog) if r.exc_info or "Traceback" in r.getMessage()]


@given(topic=st.text(max_size=120), payload=st.binary(max_size=64))
@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_topic_is_ignored_or_counted(fleet: FleetService, topic: str, payload: bytes) -> None:
    if "\x00" in topic:
        return  # not a valid MQTT topic: the broker never delivers it
    _deliver(fleet, topic, payload)
    assert fleet.stats.get("handler_errors", 0) == 0


def _mine(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records logged by this test's own thread (threads other tests left behind log too)."""
    return [r for r in caplog.records if r.thread == threading.get_ident()]
