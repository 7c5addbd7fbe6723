"""``edgefleet build``: recipe → compression → conversion → check → registry lineage, on a tiny ONNX model."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")

from controller.cli import main  # noqa: E402
from controller.conversion.build import build  # noqa: E402


def test_build_int8_onnx_for_rpi4_records_lineage(tiny_cnn_onnx, tmp_path):
    from controller.registry import Registry

    reg = Registry(tmp_path / "ws")
    report = build(tiny_cnn_onnx, "rpi4", out_dir=tmp_path / "out", registry=reg, golden_samples=8, check=False,
                   allow_synthetic=True)
    assert report.data["synthetic"] is True
    assert report.plan["compression"][0] == "int8-static"
    assert report.compression["config"]["reduce_range"] is True
    assert report.conversion["precision"] == "int8" and report.artifact.exists()
    assert report.conversion["check"]["outputs"][0]["cosine"] > 0.999  # artifact vs its (compressed) source
    assert report.compression["check"]["outputs"][0]["cosine"] > 0.9  # compressed vs FP32
    chain = reg.lineage(version_id=report.versions[-1])
    assert [v.technique for v in chain] == ["fp32", "int8-static", "int8-static"]
    assert chain[-1].profile == "rpi4" and chain[-1].parent_id == chain[1].id
    saved = json.loads((tmp_path / "out" / "tiny_cnn.rpi4.build.json").read_text())
    assert saved["profile"] == "rpi4"


def test_build_cli_for_jetson(tiny_cnn_onnx, tmp_path, capsys):
    rc = main(["build", "--model", str(tiny_cnn_onnx), "--profile", "jetson-orin-nano", "--out", str(tmp_path),
               "--golden-samples", "4", "--allow-synthetic"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ok" in out and "fp16" in out and (tmp_path / "tiny_cnn.jetson-orin-nano.trt.json").exists()
    assert "SYNTHETIC" in out.splitlines()[0] and "summary" in out and "next:" in out
    from controller.registry import Registry

    rc = main(["build", "--model", str(tiny_cnn_onnx), "--profile", "jetson-orin-nano", "--out", str(tmp_path),
               "--golden-samples", "4", "--workspace", str(tmp_path / "ws"), "--allow-synthetic"])
    reg = Registry(tmp_path / "ws")
    versions = reg.list_versions(model_id=reg.get_model(name="tiny_cnn").id)
    converted = next(v for v in versions if v.profile == "jetson-orin-nano")
    assert rc == 0 and converted.config["tensorrt_recipe"]["precision"] == "fp16"
    # deploying that version ships the recipe inside the signed manifest, for the agent to build from
    from common.keys import load_or_create_private_key
    from common.manifest import verify_manifest
    from controller.artifacts import build_artifact

    from .conftest import cnn_golden

    key = load_or_create_private_key(tmp_path / "ctl.key")
    manifest, _ = build_artifact(reg, converted.id, profile="jetson-orin-nano", reference_onnx=tiny_cnn_onnx,
                                 golden_inputs=[{"input": x[None]} for x in cnn_golden(2)["input"]],
                                 quality_metric="cosine", signing_key=key)
    verify_manifest(manifest, key.public_key())
    assert manifest.tensorrt_recipe.onnx_sha256 == manifest.blob("model").sha256 == converted.sha256
    assert manifest.tensorrt_recipe.precision == "fp16" and manifest.tensorrt_recipe.shapes[0].name == "input"


def test_convert_cli_reports_unsupported_op(custom_op_onnx, tmp_path, capsys):
    rc = main(["convert", str(custom_op_onnx), "--target", "onnx", "--profile", "rpi5", "--out",
               str(tmp_path / "x.onnx")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "MysteryOp" in err and "block3/mystery" in err


def test_tflite_build_falls_back_to_a_precision_within_tolerance(tiny_cnn, tmp_path):
    """A profile too strict for full-integer INT8: the build walks the ladder and says what it tried."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    import torch

    from common.profiles import load_profile_file, profiles_dir

    model, args = tiny_cnn
    pt2 = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, args), str(pt2))
    strict = tmp_path / "strict-phone.toml"
    text = (profiles_dir() / "android-arm64.toml").read_text().replace('id = "android-arm64"', 'id = "strict-phone"')
    strict.write_text(text + "\n[tolerance]\nmin_cosine = 0.999999\n")
    report = build(pt2, load_profile_file(strict), out_dir=tmp_path / "out", golden_samples=4, check=True,
                   allow_synthetic=True)
    tried = [a["precision"] for a in report.attempts if a["stage"] == "conversion"]
    assert tried[0] == "int8" and not report.attempts[0]["ok"]
    assert report.ok and report.attempts[-1]["ok"] and report.conversion["precision"] == tried[-1] != "int8"


def test_onnx_build_without_a_passing_compression_ships_fp32(tiny_cnn_onnx, tmp_path, monkeypatch):
    """INT8 (and mixed) outside tolerance: the enforced build ships the FP32 model and says so."""
    from common.profiles import load_profile
    from controller.conversion import build as build_mod

    strict = load_profile("rpi5").model_copy(update={"tolerance": load_profile("rpi5").tolerance.model_copy(
        update={"min_cosine": 0.9999999})})
    monkeypatch.setattr(build_mod, "compression_ladder", lambda plan, prof, metric: [plan.compression])
    report = build(tiny_cnn_onnx, strict, out_dir=tmp_path, golden_samples=4, check=True, allow_synthetic=True,
                   never_slower=False)
    assert [(a["stage"], a["precision"]) for a in report.attempts] == [
        ("compression", "int8-static"), ("conversion", "fp32")]
    assert not report.attempts[0]["ok"] and report.compression is None
    assert report.conversion["precision"] == "fp32" and report.ok


def test_build_refuses_synthetic_data_for_a_user_model(tiny_cnn_onnx, tmp_path, capsys):
    from controller.conversion.build_data import BuildDataError

    with pytest.raises(BuildDataError, match=r"--calibration FILE.*--eval FILE.*--allow-synthetic"):
        build(tiny_cnn_onnx, "rpi4", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    rc = main(["build", "--model", str(tiny_cnn_onnx), "--profile", "rpi5", "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert rc == 1 and "--calibration" in err and "Traceback" not in err


def test_build_with_real_data_per_profile_files_and_summary(tiny_cnn_onnx, tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", input=rng.standard_normal((16, 3, 16, 16)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", input=rng.standard_normal((8, 3, 16, 16)).astype(np.float32))
    rc = main(["build", "--model", str(tiny_cnn_onnx), "--profile", "rpi4", "--profile", "rpi5", "--out",
               str(tmp_path / "out"), "--calibration", str(tmp_path / "calib.npz"), "--eval",
               str(tmp_path / "eval.npz"), "--calibration-samples", "16", "--golden-samples", "8", "--allow-slower"])
    out = capsys.readouterr().out
    assert rc == 0, out
    # each profile's compressed model is its own file: rpi4's reduce_range build is not overwritten by rpi5's
    rpi4, rpi5 = (tmp_path / "out" / f"tiny_cnn.{p}.int8-static.onnx" for p in ("rpi4", "rpi5"))
    assert rpi4.exists() and rpi5.exists() and rpi4.read_bytes() != rpi5.read_bytes()
    saved = json.loads((tmp_path / "out" / "tiny_cnn.rpi4.build.json").read_text())
    assert saved["compression"]["path"] == str(rpi4) and saved["data"]["check"]["held_out"] is True
    assert saved["data"]["synthetic"] is False and saved["host_latency_ratio"] > 0
    lines = out[out.index("summary"):].splitlines()
    assert any(line.strip().startswith("rpi4") and "x FP32" in line and "--eval" in line for line in lines)
    assert any(line.strip().startswith("rpi5") for line in lines) and "SYNTHETIC" not in out
    assert lines[-1].startswith("next:")
