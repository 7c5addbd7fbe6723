"""Secure by default (issue #13 J): reads need a key unless EDGEFLEET_OPEN_READS is on, with a warning."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.api.auth import KeyRing
from controller.api.server import warn_open_reads
from controller.settings import Settings
from tests.controller.api.conftest import Controller, InProcessController, make_controller, tiny_onnx

READS = ["/audit", "/devices", "/compression/models", "/compression/jobs", "/deployments", "/profiles"]


def _start(tmp: Path, **env: str) -> Controller:
    base = make_controller(tmp, **env)
    return InProcessController(url=base.url, workspace=base.workspace, env=base.env, port=base.port,
                               keys=base.keys).start()


@pytest.fixture(scope="module")
def stored(controller: Controller, tmp_path_factory: pytest.TempPathFactory) -> dict:
    model = tiny_onnx(tmp_path_factory.mktemp("m") / "m.onnx")
    with controller.client("admin") as api:
        r = api.post("/compression/models", data={"name": "secret"}, files={"file": ("m.onnx", model.read_bytes())})
    assert r.status_code == 201, r.text
    return r.json()["data"]


def test_reads_need_a_key_by_default(controller: Controller, stored: dict) -> None:
    download = f"/compression/models/secret/versions/{stored['version']['id']}/download"
    with controller.client(None) as anon, controller.client("viewer") as viewer:
        for path in [*READS, download]:
            r = anon.get(path)
            assert r.status_code == 401 and "EDGEFLEET_OPEN_READS" in r.json()["message"], path
            assert viewer.get(path).status_code == 200, path
        assert httpx.get(controller.url + "/metrics").status_code == 401
        assert anon.get("/health").status_code == 200  # liveness stays open for load balancers


@pytest.fixture(scope="module")
def open_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    ctl = _start(tmp_path_factory.mktemp("open"), EDGEFLEET_OPEN_READS="true")
    try:
        yield ctl
    finally:
        ctl.stop()


def test_open_reads_is_explicit_and_warned(open_controller: Controller, caplog: pytest.LogCaptureFixture) -> None:
    with open_controller.client(None) as anon:
        for path in READS:
            assert anon.get(path).status_code == 200, path
        assert anon.post("/devices", json={"id": "x", "profile": "rpi4"}).status_code == 401  # writes never open
    keys = KeyRing.from_settings(open_controller.env["EDGEFLEET_API_KEYS"], None)
    with caplog.at_level(logging.WARNING, logger="controller.api.server"):
        assert warn_open_reads(Settings(open_reads=True), keys)
        assert not warn_open_reads(Settings(open_reads=False), keys)
    assert "EDGEFLEET_OPEN_READS is on" in caplog.text
