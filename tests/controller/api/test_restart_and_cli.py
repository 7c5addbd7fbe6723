"""Controller restart mid-job, the unsafe-bind refusal, and the client CLI against a real controller."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.api.auth import KeyRing
from controller.api.server import UnsafeBindError, check_bind
from tests.controller.api.conftest import REPO, make_controller, tiny_onnx, wait_job


def test_shutdown_then_crash_mid_job(tmp_path: Path) -> None:
    """Graceful stop fails the running job ("shutdown"); a crash leaves it to the restart ("restart")."""
    ctl = make_controller(tmp_path, MAX_COMPRESSION_JOBS="1").start()
    try:
        with ctl.client() as api:
            path = tiny_onnx(tmp_path / "m.onnx")
            vid = api.post("/compression/models", data={"name": "m"},
                           files={"file": ("m.onnx", path.read_bytes())}).json()["data"]["version"]["id"]
            body = {"version_id": vid, "technique": "quant-test-slow"}
            first = api.post("/compression/quantize", json={**body, "config": {"seconds": 60}}).json()["data"]
            wait_job(api, first["id"], states=("running",))
        ctl.stop(signal.SIGTERM)

        ctl.start()
        with ctl.client() as api:
            after = api.get(f"/compression/jobs/{first['id']}").json()["data"]
            assert after["state"] == "failed" and after["error"] == "interrupted by controller shutdown"
            running = api.post("/compression/quantize", json={**body, "config": {"seconds": 60}}).json()["data"]
            queued = api.post("/compression/quantize", json={**body, "config": {"seconds": 0.2}}).json()["data"]
            deadline = time.monotonic() + 30
            while api.get(f"/compression/jobs/{running['id']}").json()["data"]["progress"] < 3:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert api.get(f"/compression/jobs/{queued['id']}").json()["data"]["state"] == "queued"
        ctl.stop(signal.SIGKILL)  # a crash: nothing gets to clean up

        ctl.start()
        with ctl.client() as api:
            dead = api.get(f"/compression/jobs/{running['id']}").json()["data"]
            assert dead["state"] == "failed" and dead["error"] == "interrupted by controller restart"
            done = wait_job(api, queued["id"])
            assert done["state"] == "succeeded" and done["result"]["parent_id"] == vid
            versions = api.get("/compression/models/m/versions").json()["data"]["items"]
            assert len(versions) == 2  # only the queued job recorded a version; the interrupted ones none
    finally:
        ctl.stop()


def test_compression_disabled_and_chunked_upload_limit(tmp_path: Path) -> None:
    ctl = make_controller(tmp_path, MODEL_COMPRESSION_ENABLED="false").start()
    try:
        with ctl.client() as api:
            r = api.post("/compression/quantize", json={"version_id": "x"})
            assert r.status_code == 503 and "MODEL_COMPRESSION_ENABLED" in r.json()["message"]
            assert api.get("/health").json()["data"]["compression_enabled"] is False

            def chunks():  # no Content-Length: the cap must hold while the body streams
                head = (b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n--b\r\n'
                        b'Content-Disposition: form-data; name="file"; filename="f.onnx"\r\n\r\n')
                yield head
                for _ in range(4):
                    yield b"\0" * (1024 * 1024)
                yield b"\r\n--b--\r\n"

            r = api.post("/compression/models", content=chunks(),
                         headers={"Content-Type": "multipart/form-data; boundary=b"})
            assert r.status_code == 413 and r.json()["status"] == "error"
            assert api.get("/compression/models").json()["data"]["total"] == 0
    finally:
        ctl.stop()


def test_refuses_public_bind_without_key(tmp_path: Path) -> None:
    with pytest.raises(UnsafeBindError, match="refusing to listen"):
        check_bind("0.0.0.0", KeyRing([]))
    check_bind("127.0.0.1", KeyRing([]))
    check_bind("::1", KeyRing([]))
    ctl = make_controller(tmp_path)
    env = {**ctl.env, "EDGEFLEET_API_KEYS": ""}
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "controller", "--host", "0.0.0.0", "--port",
                           str(ctl.port)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "refusing to listen" in proc.stderr


def test_client_cli_models_jobs_watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli import main

    ctl = make_controller(tmp_path).start()
    monkeypatch.setenv("EDGEFLEET_URL", ctl.url)
    monkeypatch.setenv("EDGEFLEET_API_KEY", ctl.keys["admin"])

    def cli(*args: str, ok: bool = True) -> tuple[str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        assert (code == 0) == ok, err + out
        return out, err

    try:
        path = tiny_onnx(tmp_path / "m.onnx")
        vid = json.loads(cli("models", "upload", "cli-model", str(path), "--json")[0])["version"]["id"]
        job = json.loads(cli("models", "compress", "quantize", vid, "--technique", "quant-test-slow",
                             "-p", "seconds=0.5", "--json")[0])
        # the console script end to end, in its own process, with the live progress bar
        env = {**ctl.env, "EDGEFLEET_URL": ctl.url, "EDGEFLEET_API_KEY": ctl.keys["admin"]}
        proc = subprocess.run([sys.executable, "-m", "controller.cli", "jobs", "watch", job["id"], "--json"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["state"] == "succeeded"  # stdout: only the result
        assert "succeeded" in proc.stderr and "100.0%" in proc.stderr  # the live bar is on stderr
        assert "INFO" not in proc.stderr and "httpx" not in proc.stderr  # no library log noise
        assert json.loads(cli("jobs", "list", "--json")[0])["total"] == 1
        assert json.loads(cli("jobs", "show", job["id"], "--json")[0])["progress"] == 100
        assert len(json.loads(cli("models", "versions", "cli-model", "--json")[0])["items"]) == 2
        assert json.loads(cli("models", "list", "--name", "cli", "--json")[0])["total"] == 1
        # tables by default: a person sees rows and columns, not JSON
        table = cli("models", "versions", "cli-model")[0]
        assert "{" not in table and vid in table and "technique" in table
        cli("models", "tag", "cli-model", "production", vid, "--expect", "none")
        out = tmp_path / "dl.onnx"
        cli("models", "download", "cli-model", vid, "-o", str(out))
        assert out.read_bytes() == path.read_bytes()
        assert "HTTP 404" in cli("models", "show", "ghost", ok=False)[1]
        assert "HTTP 409" in cli("jobs", "cancel", job["id"], ok=False)[1]
        cli("devices", "register", "dev-1", "--profile", "rpi4")
        assert json.loads(cli("devices", "show", "dev-1", "--json")[0])["profile"] == "rpi4"
        assert "dev-1" in cli("devices", "list")[0]
        assert "503" in cli("deploy", "create", vid, "dev-1", ok=False)[1]
        assert "503" in cli("rollouts", "create", vid, "dev-1", "--canary", "1", ok=False)[1]
        key = cli("apikey", "ci", "--read-only")[0]
        assert ":ro:" in key and "efk_" in key
    finally:
        ctl.stop()
