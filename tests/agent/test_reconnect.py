"""The MQTT session keeps going: broker restart -> backoff, reconnect with a new session id, re-subscribe."""

from __future__ import annotations

import time

import pytest

from agent.config import AgentConfig
from agent.daemon import Agent
from controller.broker import Credentials, start_mosquitto
from fleetsim.controller_stub import ControllerStub

from .artifacts import make_artifact

pytestmark = pytest.mark.timeout(120)


def test_broker_restart_reconnects_and_resubscribes(tmp_path, keypair, reference):
    creds = Credentials()
    broker = start_mosquitto(tmp_path / "broker1", creds)
    password = broker.add_user("edge-rc")
    cfg = AgentConfig(
        device_id="edge-rc", fleet="rc", profile_id="x86-edge", data_dir=tmp_path / "edge-rc",
        controller_key=keypair[1], broker_host=broker.host, broker_port=broker.port, username="edge-rc",
        password=password, threads=1, bench_runs=5, bench_warmup=1, backoff_min_s=0.2, backoff_max_s=1.0,
    )
    agent = Agent(cfg)
    second = stub = None
    try:
        agent.start()
        assert agent.connected.wait(10)
        first_session = agent.session_id
        broker.stop()
        deadline = time.monotonic() + 10
        while agent.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not agent.connected.is_set()
        time.sleep(1.0)  # a few failed attempts with backoff
        second = start_mosquitto(tmp_path / "broker2", creds, port=broker.port)
        assert agent.connected.wait(15), "agent did not reconnect"
        assert agent.session_id != first_session
        stub = ControllerStub(second.host, second.port, creds.users["controller"], "rc", key=keypair[0])
        stub.wait_for(lambda: "edge-rc" in stub.states and stub.states["edge-rc"].session_id == agent.session_id,
                      10, f"birth with the new session id {agent.session_id} {stub.states}")
        art = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1")
        stub.deploy("edge-rc", art, "d-after-restart")  # only works if desired + chunks were re-subscribed
        assert [r.state for r in stub.wait_outcome("edge-rc", "d-after-restart")][-2:] == ["commit", "idle"]
    finally:
        agent.stop()
        if stub:
            stub.close()
        for b in (broker, second):
            if b:
                b.stop()
