"""The TensorRT build recipe inside the signed manifest: validation, signing, compatibility, cache key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.errors import ProtocolError, ReasonCode
from common.manifest import Manifest, blob_ref, sign_manifest, verify_manifest
from common.messages import Desired, decode
from common.tensorrt_recipe import FINGERPRINT_FIELDS, TensorrtRecipe, engine_cache_key
from tests.manifests import make_manifest

FP = {"tensorrt_version": "10.3.0", "jetpack_version": "R36.4.3", "cuda_version": "12.6",
      "gpu_name": "Orin (nvgpu)", "compute_capability": "8.7"}


def recipe_dict(sha: str, precision: str = "fp16", workspace_mb: int = 1024) -> dict:
    """A recipe as controller.conversion.to_tensorrt.build_recipe writes it (dynamic batch input)."""
    return {
        "schema_version": 1, "kind": "tensorrt-build-recipe", "onnx": "m.onnx", "onnx_sha256": sha,
        "precision": precision, "engine": "m.engine", "workspace_mb": workspace_mb, "builder_optimization_level": 3,
        "shapes": [{"name": "input", "min": [1, 3, 16, 16], "opt": [1, 3, 16, 16], "max": [4, 3, 16, 16]}],
        "trtexec": ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", f"--memPoolSize=workspace:{workspace_mb}M",
                    "--fp16", "--minShapes=input:1x3x16x16", "--optShapes=input:1x3x16x16",
                    "--maxShapes=input:4x3x16x16"],
        "ort_tensorrt_options": {"trt_fp16_enable": precision in ("fp16", "int8"),
                                 "trt_int8_enable": precision == "int8", "trt_engine_cache_enable": True,
                                 "trt_engine_cache_path": "engines/", "trt_timing_cache_enable": True,
                                 "trt_max_workspace_size": workspace_mb * 2**20,
                                 "trt_builder_optimization_level": 3},
        "fingerprint_fields": list(FINGERPRINT_FIELDS),
        "fallback_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "inputs": [{"name": "input", "shape": ["N", 3, 16, 16], "dtype": "float32"}],
    }


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(bytes(range(256)) * 40)
    return path


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def jetson_manifest(model: Path, recipe: dict | None, **kw) -> Manifest:
    return make_manifest(model, **{"profile": "jetson-orin-nano", "tensorrt_recipe": recipe, **kw})


def test_manifest_with_recipe_round_trips_over_the_wire_and_verifies(model, key):
    sha = blob_ref("model", model).sha256
    signed = sign_manifest(jetson_manifest(model, recipe_dict(sha)), key)
    wire = Desired(deployment_id="d1", manifest=signed).to_bytes()
    again = decode(Desired, wire).manifest
    verify_manifest(again, key.public_key())
    assert again == signed
    assert again.tensorrt_recipe.precision == "fp16" and again.tensorrt_recipe.workspace_mb == 1024
    assert again.tensorrt_recipe.shapes[0].max == [4, 3, 16, 16]
    assert json.loads(again.signing_bytes())["tensorrt_recipe"]["onnx_sha256"] == sha  # the recipe is signed


def test_manifest_without_recipe_is_unchanged_on_the_wire(model, key):
    """Additive field: absent from JSON and signed bytes, so agents predating it accept these manifests."""
    plain = sign_manifest(jetson_manifest(model, None), key)
    assert "tensorrt_recipe" not in plain.model_dump_json()
    assert "tensorrt_recipe" not in plain.signing_bytes().decode()
    assert "tensorrt_recipe" not in Desired(deployment_id="d1", manifest=plain).to_bytes().decode()
    verify_manifest(Manifest.model_validate_json(plain.model_dump_json()), key.public_key())


@pytest.mark.parametrize("change", [
    {"precision": "int8", "ort_tensorrt_options": {"trt_fp16_enable": True, "trt_int8_enable": True,
                                                   "trt_max_workspace_size": 2**30}},
    {"workspace_mb": 4096, "ort_tensorrt_options": {"trt_fp16_enable": True, "trt_max_workspace_size": 4096 * 2**20}},
    {"shapes": [{"name": "input", "min": [1, 3, 16, 16], "opt": [8, 3, 16, 16], "max": [64, 3, 16, 16]}]},
])
def test_tampered_recipe_fails_the_signature(model, key, change):
    sha = blob_ref("model", model).sha256
    signed = sign_manifest(jetson_manifest(model, recipe_dict(sha)), key)
    recipe = signed.tensorrt_recipe.model_dump() | change
    tampered = signed.model_copy(update={"tensorrt_recipe": TensorrtRecipe.model_validate(recipe)})
    with pytest.raises(ProtocolError) as err:
        verify_manifest(tampered, key.public_key())
    assert err.value.reason is ReasonCode.SIGNATURE_INVALID


def test_unsigned_manifest_with_recipe_is_refused(model, key):
    sha = blob_ref("model", model).sha256
    with pytest.raises(ProtocolError, match="not signed") as err:
        verify_manifest(jetson_manifest(model, recipe_dict(sha)), key.public_key())
    assert err.value.reason is ReasonCode.SIGNATURE_INVALID


def _invalid_cases(sha: str) -> dict[str, tuple[dict, dict]]:
    base = recipe_dict(sha)
    return {
        "other model": ({**base, "onnx_sha256": "0" * 64}, {}),
        "tflite artifact": (base, {"format": "tflite"}),
        "fp16 flag contradicts int8": ({**base, "precision": "int8"}, {}),
        "workspace disagrees": ({**base, "workspace_mb": 2048}, {}),
        "unknown precision": ({**base, "precision": "int4"}, {}),
        "unknown field": ({**base, "shell": "rm -rf /"}, {}),
        "not a trtexec line": ({**base, "trtexec": ["sh", "-c", "reboot"]}, {}),
        "path in file name": ({**base, "onnx": "../m.onnx"}, {}),
        "min > max": ({**base, "shapes": [{"name": "input", "min": [8, 3], "opt": [8, 3], "max": [4, 3]}]}, {}),
        "unknown fingerprint field": ({**base, "fingerprint_fields": [*FINGERPRINT_FIELDS, "hostname"]}, {}),
    }


@pytest.mark.parametrize("case", list(_invalid_cases("0" * 64)))
def test_invalid_recipe_is_a_malformed_payload(model, key, case):
    sha = blob_ref("model", model).sha256
    recipe, manifest_change = _invalid_cases(sha)[case]
    good = sign_manifest(jetson_manifest(model, recipe_dict(sha)), key)
    payload = json.loads(Desired(deployment_id="d1", manifest=good).to_bytes())
    payload["manifest"]["tensorrt_recipe"] = recipe
    payload["manifest"].update(manifest_change)
    with pytest.raises(ProtocolError) as err:
        decode(Desired, json.dumps(payload).encode())
    assert err.value.reason is ReasonCode.MALFORMED_PAYLOAD
    assert "tensorrt_recipe" in err.value.detail or case == "tflite artifact"


def test_recipe_written_before_shapes_and_workspace_fields_still_validates():
    old = recipe_dict("a" * 64)
    for name in ("workspace_mb", "builder_optimization_level", "shapes"):
        del old[name]
    recipe = TensorrtRecipe.model_validate(old)
    assert recipe.workspace_mb == 1024 and recipe.builder_optimization_level == 3
    assert [(s.name, s.min, s.opt, s.max) for s in recipe.shapes] == [
        ("input", [1, 3, 16, 16], [1, 3, 16, 16], [4, 3, 16, 16])]


def test_for_model_file_renames_the_onnx_in_the_trtexec_line():
    recipe = TensorrtRecipe.model_validate(recipe_dict("a" * 64)).for_model_file("model.onnx")
    assert recipe.onnx == "model.onnx" and recipe.engine == "model.engine"
    assert "--onnx=model.onnx" in recipe.trtexec and "--saveEngine=model.engine" in recipe.trtexec
    assert "--onnx=m.onnx" not in recipe.trtexec


def test_engine_cache_key_covers_model_build_and_every_fingerprint_field():
    recipe = TensorrtRecipe.model_validate(recipe_dict("a" * 64))
    key = engine_cache_key(recipe, FP)
    assert key == engine_cache_key(TensorrtRecipe.model_validate(recipe_dict("a" * 64)), dict(FP))
    others = {engine_cache_key(recipe, FP | {f: FP[f] + "x"}) for f in FINGERPRINT_FIELDS}
    others |= {engine_cache_key(TensorrtRecipe.model_validate(recipe_dict("b" * 64)), FP),
               engine_cache_key(TensorrtRecipe.model_validate(recipe_dict("a" * 64, precision="int8")), FP),
               engine_cache_key(TensorrtRecipe.model_validate(recipe_dict("a" * 64, workspace_mb=512)), FP),
               engine_cache_key(recipe.model_copy(update={"shapes": []}), FP)}
    assert key not in others and len(others) == len(FINGERPRINT_FIELDS) + 4
    with pytest.raises(ValueError, match="jetpack_version"):
        engine_cache_key(recipe, {k: v for k, v in FP.items() if k != "jetpack_version"})
