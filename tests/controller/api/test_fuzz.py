"""Schema-driven fuzzing (schemathesis) of the whole OpenAPI schema against a real controller: zero 5xx.

Bounded to ~20 s of generation with a fixed seed so it fits the default suite. A second, stateful
run (~20 s) seeds a model first and steers half of the generated ``version_id``s (and compression
techniques) onto it (``schemathesis_hooks.py``), so jobs are really accepted and the job paths
(queue, status, cancel, lineage) are fuzzed too. The controller
talks to a real mosquitto so the deployment endpoints are fuzzed too (without a broker they
answer 503 by design). Checked: no server error, status codes,
content types and response bodies match the schema. Not checked on purpose:
``positive_data_acceptance`` (a schema-valid but unknown technique or version id is a 422 by
design).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controller.broker import BrokerHandle
from tests.controller.api.conftest import REPO, make_controller, tiny_onnx

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_schemathesis_finds_no_server_errors(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.fail("schemathesis is required for this test: pip install schemathesis")
    controller = make_controller(tmp_path, EDGEFLEET_BROKER_HOST=mosquitto.host,
                                 EDGEFLEET_BROKER_PORT=str(mosquitto.port),
                                 EDGEFLEET_BROKER_PASSWORD=mosquitto.credentials.users["controller"]).start()
    try:
        proc = _fuzz(st, controller.url, controller.keys["admin"], tmp_path)
    finally:
        controller.stop()
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "Server error" not in proc.stdout


def test_schemathesis_stateful_run_gets_jobs_accepted(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.fail("schemathesis is required for this test: pip install schemathesis")
    controller = make_controller(tmp_path, EDGEFLEET_BROKER_HOST=mosquitto.host,
                                 EDGEFLEET_BROKER_PORT=str(mosquitto.port),
                                 EDGEFLEET_BROKER_PASSWORD=mosquitto.credentials.users["controller"]).start()
    try:
        with controller.client("admin") as api:
            model = tiny_onnx(tmp_path / "seed.onnx")
            r = api.post("/compression/models", data={"name": "seed"}, files={"file": ("m.onnx", model.read_bytes())})
            assert r.status_code == 201, r.text
            version = r.json()["data"]["version"]["id"]
        config = tmp_path / "schemathesis.toml"
        config.write_text(f'[parameters]\n"path.model" = "seed"\n"path.version_id" = "{version}"\n')
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.controller.api.schemathesis_hooks",
               "EDGEFLEET_FUZZ_VERSION": version, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [st, "--config-file", str(config), "run", controller.url + "/openapi.json", "--checks", CHECKS,
             "--phases", "fuzzing,stateful", "--exclude-method", "DELETE",  # deletes would drop the seed
             "--max-time", "20", "--seed", "2", "--max-examples", "30", "--workers", "1",
             "--generation-database", "none", "--request-timeout", "10",
             "-H", f"Authorization: Bearer {controller.keys['admin']}", "--no-color"],
            capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
        with controller.client("admin") as api:
            jobs = api.get("/compression/jobs", params={"page_size": 500}).json()["data"]
    finally:
        controller.stop()
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "Server error" not in proc.stdout
    assert jobs["total"] >= 3, "the fuzzer never got a job accepted"
    assert "Stateful" in proc.stdout


def _fuzz(st: str, url: str, key: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [st, "run", url + "/openapi.json", "--checks", CHECKS, "--max-time", "20", "--seed", "1",
         "--max-examples", "30", "--workers", "1", "--generation-database", "none", "--request-timeout", "10",
         "-H", f"Authorization: Bearer {key}", "--no-color"],
        capture_output=True, text=True, timeout=120, cwd=cwd)
