"""Property-based fuzzing of every payload the agent consumes (issue #13 E + item 6): ``desired`` and chunks.

Through the daemon's paho callback and its worker dispatch into a real ``UpdateMachine``: nothing
raises, the active model stays, and every refused desired is counted by reason code.
"""

from __future__ import annotations

import json
import logging
import threading

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import AgentConfig
from agent.daemon import Agent
from agent.slots import SlotStore
from common import topics
from common.errors import ProtocolError
from common.messages import Desired, decode
from tests.payload_strategies import deep, payloads

from .artifacts import granted, make_artifact


@pytest.fixture(scope="module")
def agent(tmp_path_factory, keypair, reference):
    tmp = tmp_path_factory.mktemp("fuzz-agent")
    cfg = AgentConfig(device_id="fz-1", fleet="fz", profile_id="x86-edge", data_dir=tmp / "data",
                      controller_key=keypair[1], threads=1, bench_runs=3, bench_warmup=1)
    v1 = make_artifact(tmp, reference.good_model(), reference, keypair[0], version="v1")
    slots = SlotStore(cfg.slots_dir)
    slots.slots["a"].install(v1.manifest, v1.paths)
    slots.activate("a")
    valid = json.loads(granted(Desired(deployment_id="d-valid", manifest=v1.manifest), keypair[0], "fz-1",
                               "fz").to_bytes())
    return Agent(cfg), valid  # never started: the callbacks are driven directly


def _feed(agent: Agent, topic: str, payload: bytes) -> None:
    msg = mqtt.MQTTMessage(topic=topic.encode())
    msg.payload = payload
    agent._on_message(agent.client, None, msg)  # noqa: SLF001 - the paho callback under test
    while not agent.events.empty():
        agent._dispatch(agent.events.get_nowait())  # noqa: SLF001 - what the worker thread does


def _decodes(payload: bytes) -> bool:
    try:
        decode(Desired, payload)
    except ProtocolError:
        return False
    return True


def test_hostile_desired_payloads_are_refused_and_counted(agent, caplog: pytest.LogCaptureFixture) -> None:
    daemon, valid = agent
    topic = topics.desired("fz", "fz-1")

    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(payload=payloads(valid))
    def check(payload: bytes) -> None:
        before = sum(daemon.machine.rejected.values())
        _feed(daemon, topic, payload)
        assert daemon.machine.active().version == "v1"
        assert daemon.machine.state.value == "idle"
        if payload and not _decodes(payload):  # decodable ones are judged further (signature, grant) or ignored
            assert sum(daemon.machine.rejected.values()) == before + 1, payload[:200]

    with caplog.at_level(logging.WARNING):
        check()
    assert not [r for r in _mine(caplog) if r.exc_info or "Traceback" in r.getMessage()]


def test_reported_nesting_bomb_is_malformed_not_a_traceback(agent, caplog: pytest.LogCaptureFixture) -> None:
    daemon, _ = agent
    before = daemon.machine.rejected["malformed_payload"]
    with caplog.at_level(logging.WARNING):
        _feed(daemon, topics.desired("fz", "fz-1"), deep(200_000))
        _feed(daemon, topics.desired("fz", "fz-1"), deep(50_000, "{"))
    assert daemon.machine.rejected["malformed_payload"] == before + 2
    assert not [r for r in _mine(caplog) if r.exc_info or "Traceback" in r.getMessage()]


@given(index=st.integers(min_value=0, max_value=10**6), payload=st.binary(max_size=2048),
       sha=st.sampled_from(["ab" * 32, "00" * 32]))
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_stray_chunks_are_dropped(agent, index: int, payload: bytes, sha: str) -> None:
    daemon, _ = agent
    _feed(daemon, topics.chunk("fz", "fz-1", sha, index), payload)
    assert daemon.machine.active().version == "v1"


def _mine(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records logged by this test's own thread (threads other tests left behind log too)."""
    return [r for r in caplog.records if r.thread == threading.get_ident()]
