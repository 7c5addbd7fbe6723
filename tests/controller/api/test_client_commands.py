"""The client's fleet and job commands against a real controller + mosquitto: rollouts, A/B, conversions,
pipelines, deploy, fleet status over REST — tables by default, --json for scripts, errors on stderr."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from controller.broker import BrokerHandle
from controller.cli import main
from tests.controller.api.conftest import Controller, InProcessController, make_controller, tiny_onnx

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory, mosquitto: BrokerHandle) -> Iterator[Controller]:
    base = make_controller(tmp_path_factory.mktemp("client"), EDGEFLEET_BROKER_HOST=mosquitto.host,
                           EDGEFLEET_BROKER_PORT=str(mosquitto.port),
                           EDGEFLEET_BROKER_PASSWORD=mosquitto.credentials.users["controller"],
                           EDGEFLEET_FLEET="clienttest")
    c = InProcessController(url=base.url, workspace=base.workspace, env=base.env, port=base.port, keys=base.keys)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cli(ctl: Controller, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("EDGEFLEET_URL", ctl.url)
    monkeypatch.setenv("EDGEFLEET_API_KEY", ctl.keys["admin"])

    def run(*args: str, ok: bool = True) -> tuple[str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        assert (code == 0) == ok, err + out
        return out, err

    return run


def test_upload_by_name_rollouts_ab_and_fleet_status(cli, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    samples = tmp_path / "s.npz"
    np.savez(samples, input=np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32))
    up = json.loads(cli("models", "upload", "cm", str(model), "--samples", str(samples), "--json")[0])
    vid = up["version"]["id"]
    assert up["version"]["config"]["samples"] == 8
    for dev, profile in (("cd-1", "rpi4"), ("cd-2", "rpi5")):
        cli("devices", "register", dev, "--profile", profile)

    # a rollout by model name to devices that are not connected: created, listed, paused, cancelled
    r = json.loads(cli("rollouts", "create", "cm", "cd-1", "cd-2", "--canary", "1", "--waves", "1",
                       "--json")[0])
    assert r["state"] == "running" and vid in json.dumps(r["target"])
    assert r["id"] in cli("rollouts", "list")[0]
    shown = json.loads(cli("rollouts", "show", r["id"], "--json")[0])
    assert shown["waves"] == 2 and any(e["kind"] == "created" for e in shown["events"])
    assert json.loads(cli("rollouts", "pause", r["id"], "--json")[0])["state"] == "paused"
    assert "409" in cli("rollouts", "pause", r["id"], ok=False)[1]
    assert json.loads(cli("rollouts", "resume", r["id"], "--json")[0])["state"] == "running"
    assert json.loads(cli("rollouts", "cancel", r["id"], "--rollback", "--json")[0])["state"] in (
        "cancelled", "rolling_back", "rolled_back")

    err = cli("ab", "start", "cm@nope", "cm", "cd-1", "cd-2", ok=False)[1]
    assert "no tag 'nope'" in err
    cli("models", "tag", "cm", "production", vid)
    started = json.loads(cli("ab", "start", "cm@production", "cm", "cd-1", "cd-2", "--json")[0])
    assert started["kind"] == "ab"
    verdict = json.loads(cli("ab", "verdict", started["id"], "--json")[0])
    assert verdict["winner"] is None  # no device reported: no verdict
    assert "409" in cli("ab", "promote", started["id"], ok=False)[1]

    table = cli("fleet", "status")[0]
    assert "cd-1" in table and "cd-2" in table and "rpi5" in table  # over REST, not the registry file
    assert {d["id"] for d in json.loads(cli("fleet", "status", "--json")[0])} >= {"cd-1", "cd-2"}
    deps = cli("deploy", "list")[0]
    assert "rollback" in deps or "deploy" in deps


def test_compress_pipeline_and_conversion_jobs_by_model_name(cli, tmp_path: Path) -> None:
    cli("models", "upload", "cj", str(tiny_onnx(tmp_path / "j.onnx", seed=3)))
    done = json.loads(cli("models", "compress", "quantize", "cj", "--technique", "quant-test-slow", "-p",
                          "seconds=0.2", "--watch", "--json")[0])
    assert done["version_id"]
    piped = json.loads(cli("pipeline", "run", "cj", "--step", "quant-test-slow:seconds=0.1", "--step",
                           "quant-test-slow:seconds=0.1", "--watch", "--json")[0])
    assert len(json.dumps(piped)) > 2  # the pipeline's result: its versions
    job = json.loads(cli("conversions", "create", "cj", "--profile", "x86-edge", "--target", "onnx", "--json")[0])
    assert job["kind"] == "conversion"
    out = cli("jobs", "list")[0]
    assert "conversion" in out and "{" not in out.splitlines()[0]
    assert "HTTP 404" in cli("deploy", "create", "ghost-model", "cd-1", ok=False)[1]
