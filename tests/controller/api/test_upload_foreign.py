"""REST uploads of models as users have them (zip of .onnx + .data), held-out eval samples and the metric field."""

from __future__ import annotations

import zipfile
from pathlib import Path

import httpx
import numpy as np
import onnx

from tests.controller.api.conftest import Controller, tiny_onnx, wait_job


def _external(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    model = onnx.load(str(tiny_onnx(tmp_path / "src.onnx", seed=3)))
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    return folder / "model.onnx"


def _post(api: httpx.Client, name: str, files: dict) -> httpx.Response:
    return api.post("/compression/models", data={"name": name}, files=files)


def test_zip_of_onnx_and_data_is_stored_as_one_runnable_file(api: httpx.Client, tmp_path: Path) -> None:
    import onnxruntime as ort

    graph = _external(tmp_path)
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(graph, "model.onnx")
        zf.write(graph.parent / "model.onnx.data", "model.onnx.data")
    r = _post(api, "zipped", {"file": ("model.zip", archive.read_bytes(), "application/zip")})
    assert r.status_code == 201, r.text
    version = r.json()["data"]["version"]
    blob = api.get(f"/compression/models/zipped/versions/{version['id']}/download").content
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    stored = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    original = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(stored, original, rtol=1e-6)
    assert version["size"] > (graph.parent / "model.onnx.data").stat().st_size  # weights are in it


def test_graph_without_its_weights_is_refused_without_server_paths(controller: Controller, api: httpx.Client,
                                                                   tmp_path: Path) -> None:
    graph = _external(tmp_path)
    r = _post(api, "graphonly", {"file": ("model.onnx", graph.read_bytes(), "application/octet-stream")})
    assert r.status_code == 422, r.text
    message = r.json()["message"]
    assert "field 'file'" in message and "model.onnx.data" in message and ".zip" in message
    assert str(controller.workspace) not in message and "/tmp" not in message
    assert not list((controller.workspace / "uploads").glob("*"))


def test_eval_samples_field_is_checked_and_used_by_a_job(controller: Controller, api: httpx.Client,
                                                         tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx", seed=5)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", input=rng.standard_normal((24, 16)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", input=rng.standard_normal((10, 16)).astype(np.float32))
    np.savez(tmp_path / "bad.npz", input=rng.standard_normal((10, 15)).astype(np.float32))
    files = {"file": ("m.onnx", model.read_bytes(), "application/octet-stream"),
             "samples": ("calib.npz", (tmp_path / "calib.npz").read_bytes(), "application/octet-stream")}
    bad = _post(api, "withbad", {**files, "eval_samples": ("bad.npz", (tmp_path / "bad.npz").read_bytes(), "x")})
    assert bad.status_code == 422 and "field 'eval_samples'" in bad.json()["message"], bad.text
    assert str(controller.workspace) not in bad.json()["message"]
    r = _post(api, "witheval", {**files, "eval_samples": ("eval.npz", (tmp_path / "eval.npz").read_bytes(), "x")})
    assert r.status_code == 201, r.text
    vid = r.json()["data"]["version"]["id"]
    refused = api.post("/compression/quantize", json={"version_id": vid, "technique": "int8-static",
                                                      "metric": "no_such_module:f"})
    assert refused.status_code == 422 and "metric" in refused.json()["message"]
    job = api.post("/compression/quantize", json={"version_id": vid, "technique": "int8-static",
                                                  "config": {"calibration_samples": 16}, "metric": "cosine",
                                                  "allow_slower": True})
    assert job.status_code == 202, job.text
    done = wait_job(api, job.json()["data"]["id"], timeout=120)
    assert done["state"] == "succeeded", done
    metrics = done["result"]["metrics"]
    assert metrics["eval"]["held_out"] is True and metrics["eval"]["samples"] == 10
    assert metrics["eval"]["metric"] == "cosine" and metrics["quality_on_calibration_data"] is False


def test_client_cli_uploads_samples_and_eval_samples(controller: Controller, tmp_path: Path, monkeypatch,
                                                      capsys) -> None:
    import json

    from controller.cli import main

    monkeypatch.setenv("EDGEFLEET_URL", controller.url)
    monkeypatch.setenv("EDGEFLEET_API_KEY", controller.keys["admin"])
    model = tiny_onnx(tmp_path / "m.onnx", seed=9)
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "c.npz", input=rng.standard_normal((8, 16)).astype(np.float32))
    np.savez(tmp_path / "e.npz", input=rng.standard_normal((5, 16)).astype(np.float32))
    code = main(["models", "upload", "cli-eval", str(model), "--samples", str(tmp_path / "c.npz"),
                 "--eval-samples", str(tmp_path / "e.npz")])
    out = capsys.readouterr().out
    assert code == 0, out
    config = json.loads(out)["version"]["config"]
    assert config["samples"] == 8 and config["eval_samples"] == 5 and config["eval_samples_sha256"]
