"""Artifact builds: golden set computed by the FP32 reference, signed manifest, blobs in the registry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from common.keys import load_or_create_private_key, load_public_key
from common.manifest import Thresholds, read_chunk, verify_manifest
from controller.artifacts import ArtifactBuilder, ArtifactBuildError, build_artifact, export_artifact
from controller.registry import NotFoundError, Registry
from tests.tiny_models import tiny_linear_onnx


@pytest.fixture
def env(tmp_path: Path):
    reg = Registry(tmp_path / "ws")
    key = load_or_create_private_key(tmp_path / "keys" / "controller.key")
    fp32 = tiny_linear_onnx(tmp_path / "fp32.onnx")
    yield reg, key, fp32, tmp_path
    reg.close()


def _inputs(n: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(n)]


def test_build_from_file_registers_version_and_golden(env):
    reg, key, fp32, tmp = env
    samples = _inputs()
    manifest, files = build_artifact(
        reg,
        fp32,
        model_name="tiny",
        profile="rpi4",
        golden_inputs=samples,
        reference_onnx=fp32,
        quality_metric="cosine",
        signing_key=key,
        thresholds=Thresholds(min_quality=0.9),
        chunk_size=1024,
    )
    verify_manifest(manifest, load_public_key(tmp / "keys" / "controller.pub"))
    assert [f.role for f in manifest.files] == ["model", "golden"]
    model_ref, golden_ref = manifest.files
    assert model_ref.sha256 == hashlib.sha256(fp32.read_bytes()).hexdigest()
    assert files["model"].read_bytes() == fp32.read_bytes()
    assert golden_ref.chunk_size == 1024 and golden_ref.chunk_count == -(-golden_ref.size // 1024)
    assert hashlib.sha256(read_chunk(files["golden"], 0, 1024)).hexdigest() == golden_ref.chunk_sha256[0]
    version = reg.get_version(version_id=manifest.version)
    assert version.sha256 == model_ref.sha256 and manifest.model_id == version.model_id
    assert manifest.thresholds.min_quality == 0.9 and manifest.profile == "rpi4"
    with np.load(files["golden"], allow_pickle=False) as data:
        assert sorted(data.files) == ["input:x", "output:y"]
        x, y = data["input:x"], data["output:y"]
    assert x.shape == (6, 8) and y.shape == (6, 4)
    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], y, rtol=1e-5)
    art = reg.artifacts.find_artifact(manifest=manifest)
    assert art is not None and art.profile == "rpi4"
    out = export_artifact(reg, manifest, tmp / "export")
    assert (tmp / "export" / "golden.npz").read_bytes() == files["golden"].read_bytes()
    assert out["manifest"].exists()


def test_candidate_version_uses_fp32_reference(env):
    reg, key, fp32, tmp = env
    m = reg.create_model(name="tiny")
    base = reg.add_version(model_id=m.id, path=fp32)
    degraded = tiny_linear_onnx(tmp / "bad.onnx", scale=3.0)
    cand = reg.add_version(model_id=m.id, path=degraded, technique="perturbed", parent_id=base.id)
    manifest, files = build_artifact(
        reg,
        cand.id,
        profile="x86-edge",
        golden_inputs=_inputs(3),
        reference_onnx=fp32,
        quality_metric="top1",
        signing_key=key,
    )
    assert manifest.version == cand.id and manifest.parent_version == base.id
    assert manifest.technique == "perturbed" and manifest.quality_metric == "top1"
    assert files["model"].read_bytes() == degraded.read_bytes()
    with np.load(files["golden"], allow_pickle=False) as data:
        ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"x": data["input:x"]})
        np.testing.assert_allclose(ref[0], data["output:y"], rtol=1e-5)


def test_bad_inputs_are_refused(env):
    reg, key, fp32, _ = env
    kw = dict(profile="rpi4", reference_onnx=fp32, quality_metric="cosine", signing_key=key)
    with pytest.raises(ArtifactBuildError, match="expects"):
        build_artifact(reg, fp32, model_name="t", golden_inputs=[{"wrong": np.zeros((1, 8), np.float32)}], **kw)
    with pytest.raises(ArtifactBuildError, match="empty"):
        build_artifact(reg, fp32, model_name="t", golden_inputs=[], **kw)
    with pytest.raises(ArtifactBuildError, match="model_name"):
        build_artifact(reg, fp32, golden_inputs=_inputs(1), **kw)
    with pytest.raises(NotFoundError):
        build_artifact(reg, "no-such-version", golden_inputs=_inputs(1), **kw)
    assert reg.artifacts.list_artifacts() == []
    assert reg.list_models() == []


def test_artifact_builder_reuses_artifacts_and_lineage_golden(env):
    reg, key, fp32, tmp = env
    calls = []

    def source(model, version, root):
        calls.append(version.id)
        return _inputs(4), reg.blob_path(sha256=root.sha256), "top1"

    builder = ArtifactBuilder(reg, signing_key=key, golden_source=source, chunk_size=2048)
    m = reg.create_model(name="tiny")
    base = reg.add_version(model_id=m.id, path=fp32)
    child = reg.add_version(model_id=m.id, path=tiny_linear_onnx(tmp / "c.onnx", seed=3), parent_id=base.id)
    a1 = builder.artifact_for(version_id=base.id, profile="rpi4")
    assert builder.artifact_for(version_id=base.id, profile="rpi4").id == a1.id
    a2 = builder.artifact_for(version_id=child.id, profile="x86-edge")
    strict = builder.artifact_for(version_id=child.id, profile="x86-edge", thresholds=Thresholds(min_quality=0.5))
    assert len({a1.id, a2.id, strict.id}) == 3
    assert strict.manifest["thresholds"]["min_quality"] == 0.5
    golden = {a["files"][1]["sha256"] for a in (a1.manifest, a2.manifest, strict.manifest)}
    assert len(golden) == 1 and calls == [base.id]
    assert a2.manifest["quality_metric"] == "top1" and a2.manifest["files"][0]["chunk_size"] == 2048


def test_zoo_golden_source_refuses_unknown_models(env):
    reg, key, fp32, _ = env
    builder = ArtifactBuilder(reg, signing_key=key)
    m = reg.create_model(name="not-in-zoo")
    v = reg.add_version(model_id=m.id, path=fp32)
    with pytest.raises(ArtifactBuildError, match="not a zoo model"):
        builder.artifact_for(version_id=v.id, profile="rpi4")


def _jetson_version(reg: Registry, fp32: Path, tmp: Path):
    """A Jetson build as ``edgefleet build`` records it: the ONNX plus its recipe in the version config."""
    from common.profiles import load_profile
    from controller.conversion.to_tensorrt import TensorrtOptions, build_recipe

    onnx_file = tmp / "tiny.jetson-orin-nano.onnx"
    onnx_file.write_bytes(fp32.read_bytes())
    recipe = build_recipe(onnx_file, [{"name": "x", "shape": ["batch", 8], "dtype": "float32"}],
                          TensorrtOptions(workspace_mb=512), load_profile("jetson-orin-nano"))
    m = reg.create_model(name="tiny")
    version = reg.add_version(model_id=m.id, path=onnx_file, technique="fp16", format="onnx",
                              profile="jetson-orin-nano", config={"tensorrt_recipe": recipe})
    return version, recipe


def test_jetson_artifact_carries_the_signed_tensorrt_recipe(env):
    reg, key, fp32, tmp = env
    version, recipe = _jetson_version(reg, fp32, tmp)
    manifest, files = build_artifact(reg, version.id, profile="jetson-orin-nano", golden_inputs=_inputs(2),
                                     reference_onnx=fp32, quality_metric="cosine", signing_key=key)
    verify_manifest(manifest, load_public_key(tmp / "keys" / "controller.pub"))
    carried = manifest.tensorrt_recipe
    assert carried is not None and carried.onnx_sha256 == manifest.blob("model").sha256 == recipe["onnx_sha256"]
    assert carried.workspace_mb == 512 and carried.precision == "fp16"
    assert carried.onnx == "model.onnx" and "--onnx=model.onnx" in carried.trtexec  # named as in the artifact
    assert carried.shapes[0].name == "x" and carried.shapes[0].max == [4, 8]
    stored = reg.artifacts.manifest(artifact_id=reg.artifacts.find_artifact(manifest=manifest).id)
    assert stored == manifest  # what the fleet sends is what was signed
    out = export_artifact(reg, manifest, tmp / "export")
    assert json.loads(out["trt-recipe"].read_text())["onnx"] == "model.onnx"
    assert out["trt-recipe"].name == "model.trt.json"


def test_plain_artifacts_have_no_recipe(env):
    reg, key, fp32, _ = env
    manifest, _ = build_artifact(reg, fp32, model_name="plain", profile="rpi4", golden_inputs=_inputs(2),
                                 reference_onnx=fp32, quality_metric="cosine", signing_key=key)
    assert manifest.tensorrt_recipe is None and "tensorrt_recipe" not in manifest.model_dump_json()


def test_recipe_for_another_model_or_an_invalid_recipe_is_refused(env):
    reg, key, fp32, tmp = env
    version, recipe = _jetson_version(reg, fp32, tmp)
    kw = dict(profile="jetson-orin-nano", golden_inputs=_inputs(1), reference_onnx=fp32, quality_metric="cosine",
              signing_key=key)
    with pytest.raises(ArtifactBuildError, match="written for ONNX"):
        build_artifact(reg, version.id, tensorrt_recipe=recipe | {"onnx_sha256": "0" * 64}, **kw)
    with pytest.raises(ArtifactBuildError, match="precision"):
        build_artifact(reg, version.id, tensorrt_recipe=recipe | {"precision": "int4"}, **kw)
    assert reg.artifacts.list_artifacts(version_id=version.id) == []
