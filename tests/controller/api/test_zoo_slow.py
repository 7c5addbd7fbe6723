"""The real thing through the API: import a zoo model, then prune → quantize as a pipeline, and decompose.

Marked slow: it uses the real MNIST CNN (trained once and cached under ``$EDGEFLEET_CACHE``) and
techniques that fine-tune a torch module.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.controller.api.conftest import make_controller, wait_job

pytestmark = pytest.mark.slow


def test_zoo_import_pipeline_and_decompose(tmp_path: Path) -> None:
    cache = os.environ.get("EDGEFLEET_CACHE", str(Path.home() / ".cache" / "edgefleet"))
    ctl = make_controller(tmp_path, EDGEFLEET_CACHE=cache, MAX_COMPRESSION_JOBS="2",
                          EDGEFLEET_JOB_PRIORITY="low").start()
    try:
        with ctl.client() as api:
            job = api.post("/compression/models/import", json={"name": "mnist", "zoo": "mnist-cnn"}).json()["data"]
            imported = wait_job(api, job["id"], timeout=600)
            assert imported["state"] == "succeeded", imported["error"]
            root = imported["result"]["version_id"]

            r = api.post("/compression/pipeline", json={"version_id": root, "profile": "rpi4", "steps": [
                {"technique": "prune-structured", "config": {"ratio": 0.25, "finetune_epochs": 1}},
                {"technique": "int8-static", "config": {"calibration_samples": 32}}]})
            assert r.status_code == 202, r.text
            svd = api.post("/compression/decompose", json={"version_id": root, "technique": "svd",
                                                           "config": {"finetune_epochs": 0}})
            assert svd.status_code == 202, svd.text
            pipe = wait_job(api, r.json()["data"]["id"], timeout=900)
            assert pipe["state"] == "succeeded", pipe["error"]
            pruned, int8 = pipe["result"]["steps"]
            assert pruned["parent_id"] == root and int8["parent_id"] == pruned["version_id"]
            assert int8["metrics"]["quality_score"] > 0.9 and int8["metrics"]["size_ratio"] < 0.5
            lineage = api.get(f"/compression/models/mnist/versions/{int8['version_id']}").json()["data"]["lineage"]
            assert [v["technique"] for v in lineage] == ["fp32", "prune-structured", "int8-static"]
            dec = wait_job(api, svd.json()["data"]["id"], timeout=900)
            assert dec["state"] == "succeeded", dec["error"]
            assert dec["result"]["technique"] == "svd" and dec["result"]["parent_id"] == root

            # a torch technique on a derived (ONNX-only) version is refused up front
            r = api.post("/compression/prune", json={"version_id": int8["version_id"],
                                                     "technique": "prune-structured"})
            assert r.status_code == 422 and root in r.json()["message"]
    finally:
        ctl.stop()
