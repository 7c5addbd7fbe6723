"""Artifacts with a TensorRT recipe on the agent: ORT fallback for real on this CPU host; the TensorRT
path (fingerprint, engine build, cache reuse, corrupt-cache rebuild, execution) against fakes of the
``tensorrt`` module and cuda-python, since no GPU or TensorRT is installed here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from agent import trt_engine
from agent.bench import BenchSpec, measure, run_benchmark
from agent.config import AgentConfig
from agent.device import build_caps
from agent.errors import BenchmarkError
from agent.trt_engine import ENGINE_FILE, META_FILE, EngineCache, device_fingerprint, prepare
from agent.update.machine import UpdateMachine
from common.errors import ReasonCode
from common.manifest import read_chunk, sign_manifest
from common.messages import Desired
from common.profiles import load_profile
from common.tensorrt_recipe import engine_cache_key

from .artifacts import Recorder, granted, linear_recipe, make_artifact
from .fake_tensorrt import FakeCudart, FakeTensorrt

JETSON_EPS = load_profile("jetson-orin-nano").execution_providers
TEGRA = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 2025\n"
no_real_tensorrt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                                      reason="a real tensorrt is installed: the CPU fallback is not what runs")


@pytest.fixture
def art(tmp_path, reference, keypair):
    return make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1",
                         profile="jetson-orin-nano", tensorrt=True)


@pytest.fixture
def bare_host(monkeypatch, tmp_path):
    """No TensorRT, no CUDA, no Jetson release file, whatever this machine has."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(trt_engine, "cuda_runtime", lambda: None)
    monkeypatch.setattr(trt_engine, "NV_TEGRA_RELEASE", tmp_path / "no-release")
    monkeypatch.setattr(trt_engine, "CUDA_VERSION_FILE", tmp_path / "no-version.json")
    monkeypatch.setattr(trt_engine.shutil, "which", lambda name: None)
    monkeypatch.delenv("CUDA_VERSION", raising=False)


@pytest.fixture
def jetson(monkeypatch, tmp_path, reference, bare_host):
    """A fake Jetson: tensorrt + cuda-python fakes, an L4T release file. Returns the fake tensorrt."""
    fake = FakeTensorrt(reference.weight, reference.bias)
    cudart = FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_engine, "cuda_runtime", lambda: cudart)
    release = tmp_path / "nv_tegra_release"
    release.write_text(TEGRA)
    monkeypatch.setattr(trt_engine, "NV_TEGRA_RELEASE", release)
    return fake


# --- fingerprint -------------------------------------------------------------------------------


def test_fingerprint_of_a_host_without_gpu_stack(bare_host):
    assert device_fingerprint(trt_engine.tensorrt_module(), trt_engine.cuda_runtime()) == {
        "tensorrt_version": "none", "jetpack_version": "none", "cuda_version": "none", "gpu_name": "none",
        "compute_capability": "none"}


def test_fingerprint_of_a_jetson(jetson, tmp_path, monkeypatch):
    fp = device_fingerprint(trt_engine.tensorrt_module(), trt_engine.cuda_runtime())
    assert fp == {"tensorrt_version": "10.3.0", "jetpack_version": "R36.4.3", "cuda_version": "12.6",
                  "gpu_name": "Orin (nvgpu)", "compute_capability": "8.7"}
    odd = tmp_path / "odd_release"
    odd.write_text("custom BSP build 7\n")
    assert trt_engine.jetpack_version(odd) == "custom BSP build 7"
    monkeypatch.setattr(trt_engine, "cuda_runtime", lambda: None)  # no binding: version.json, then $CUDA_VERSION
    monkeypatch.setenv("CUDA_VERSION", "12.2.140")
    assert device_fingerprint(jetson, None)["cuda_version"] == "12.2.140"
    (tmp_path / "version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}))
    monkeypatch.setattr(trt_engine, "CUDA_VERSION_FILE", tmp_path / "version.json")
    assert device_fingerprint(jetson, None)["cuda_version"] == "12.6.68"


# --- native path with the fakes -----------------------------------------------------------------


def test_engine_is_built_per_recipe_then_reused(jetson, art, tmp_path):
    recipe = art.manifest.tensorrt_recipe
    cache = tmp_path / "engines"
    first = prepare(art.paths["model"], recipe, JETSON_EPS, cache)
    assert first.backend == "tensorrt" and first.built
    assert [first.key] == [p.name for p in cache.iterdir()]
    fp = device_fingerprint(jetson, trt_engine.cuda_runtime())
    assert first.key == engine_cache_key(recipe, fp)
    build = jetson.builds[0]
    assert build["onnx_sha256"] == art.model_sha and build["flags"] == ["fp16"]
    assert build["workspace"] == 256 * 2**20 and build["level"] == 3
    assert build["profiles"] == [{"x": ([1, 64], [1, 64], [4, 64])}]
    meta = json.loads((cache / first.key / META_FILE).read_text())
    assert meta["model_sha256"] == art.model_sha and meta["fingerprint"] == fp
    again = prepare(art.paths["model"], recipe, JETSON_EPS, cache)
    assert not again.built and again.engine_path == first.engine_path and len(jetson.builds) == 1


@pytest.mark.parametrize("damage", ["truncated", "flipped", "no_metadata", "other_tensorrt"])
def test_broken_cache_entry_is_rebuilt_not_fatal(damage, jetson, art, tmp_path):
    recipe = art.manifest.tensorrt_recipe
    cache = tmp_path / "engines"
    plan = prepare(art.paths["model"], recipe, JETSON_EPS, cache)
    engine = cache / plan.key / ENGINE_FILE
    data = engine.read_bytes()
    if damage == "truncated":
        engine.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        engine.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    elif damage == "no_metadata":  # build interrupted between engine and metadata
        (cache / plan.key / META_FILE).unlink()
    else:  # intact bytes, metadata matches, but this TensorRT cannot deserialize them
        engine.write_bytes(b"FAKETRT|9.0.0|{}")
        meta = json.loads((cache / plan.key / META_FILE).read_text())
        import hashlib

        meta.update(size=len(engine.read_bytes()), engine_sha256=hashlib.sha256(engine.read_bytes()).hexdigest())
        (cache / plan.key / META_FILE).write_text(json.dumps(meta))
    again = prepare(art.paths["model"], recipe, JETSON_EPS, cache)
    assert again.built and again.key == plan.key and len(jetson.builds) == 2
    assert engine.read_bytes() == data


def test_new_tensorrt_or_jetpack_means_a_new_engine(jetson, art, tmp_path, monkeypatch):
    recipe = art.manifest.tensorrt_recipe
    cache = tmp_path / "engines"
    keys = {prepare(art.paths["model"], recipe, JETSON_EPS, cache).key}
    jetson.__version__ = "10.7.0"
    keys.add(prepare(art.paths["model"], recipe, JETSON_EPS, cache).key)
    trt_engine.NV_TEGRA_RELEASE.write_text(TEGRA.replace("REVISION: 4.3", "REVISION: 4.4"))
    keys.add(prepare(art.paths["model"], recipe, JETSON_EPS, cache).key)
    assert len(keys) == 3 and len(jetson.builds) == 3 and len(list(cache.iterdir())) == 3


def test_int8_recipe_sets_int8_and_fp16(jetson, art, tmp_path):
    recipe = linear_recipe(art.paths["model"], precision="int8")
    prepare(art.paths["model"], recipe, JETSON_EPS, tmp_path / "engines")
    assert jetson.builds[0]["flags"] == ["fp16", "int8"]


def test_parser_failure_is_load_failed_and_leaves_no_entry(jetson, art, tmp_path):
    jetson.parse_errors = ["In node 3 (MysteryOp): UNSUPPORTED_NODE"]
    with pytest.raises(BenchmarkError, match="MysteryOp") as err:
        prepare(art.paths["model"], art.manifest.tensorrt_recipe, JETSON_EPS, tmp_path / "engines")
    assert err.value.reason is ReasonCode.LOAD_FAILED
    assert not (tmp_path / "engines").exists() or not list((tmp_path / "engines").iterdir())


def test_native_engine_runs_the_golden_set(jetson, art, tmp_path):
    """measure() end to end on the TensorRT path: engine built, buffers copied, outputs scored."""
    spec = BenchSpec(art.paths["model"], art.paths["golden"], "onnx", "cosine", runs=3, warmup=1,
                     providers=list(JETSON_EPS), tensorrt_recipe=art.manifest.tensorrt_recipe.model_dump(mode="json"),
                     engine_cache_dir=tmp_path / "engines")
    metrics = measure(spec)
    assert metrics.runtime == "tensorrt" and metrics.quality > 0.99999
    assert len(jetson.builds) == 1 and measure(spec).runtime == "tensorrt" and len(jetson.builds) == 1


def test_tensorrt_without_cuda_binding_uses_onnxruntime(jetson, art, tmp_path, monkeypatch):
    monkeypatch.setattr(trt_engine, "cuda_runtime", lambda: None)
    plan = prepare(art.paths["model"], art.manifest.tensorrt_recipe, JETSON_EPS, tmp_path / "engines")
    assert plan.backend == "onnxruntime" and "cuda-python" in plan.note and not jetson.builds


# --- ONNX Runtime fallback ---------------------------------------------------------------------


@no_real_tensorrt
def test_cpu_fallback_runs_the_onnx_and_reports_the_provider(art, tmp_path):
    """This host: no TensorRT, ORT without TensorRT/CUDA EPs. The recipe artifact still runs, on CPU,
    in the real benchmark subprocess, and says so."""
    spec = BenchSpec(art.paths["model"], art.paths["golden"], "onnx", "cosine", runs=5, warmup=1,
                     providers=list(JETSON_EPS), tensorrt_recipe=art.manifest.tensorrt_recipe.model_dump(mode="json"),
                     engine_cache_dir=tmp_path / "engines")
    metrics = run_benchmark(spec, timeout_s=120)
    assert metrics.runtime == "onnxruntime:CPUExecutionProvider"
    assert metrics.quality > 0.99999 and metrics.latency_p95_ms > 0
    assert not (tmp_path / "engines").exists()  # no TensorRT EP, so no engine cache


class _FakeOrtSession:
    """onnxruntime.InferenceSession that records its arguments; ``kept`` = providers ORT really registered."""

    kept: list[str] = []
    calls: list[dict] = []

    def __init__(self, path, sess_options=None, providers=None, provider_options=None, **_: object) -> None:
        _FakeOrtSession.calls.append({"providers": providers, "provider_options": provider_options})
        io = types.SimpleNamespace
        self._inputs, self._outputs = [io(name="x", shape=["N", 64])], [io(name="y", shape=["N", 32])]

    def get_providers(self) -> list[str]:
        return list(_FakeOrtSession.kept)

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs


@pytest.mark.parametrize("kept", [["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                                  ["CUDAExecutionProvider", "CPUExecutionProvider"]])
def test_ort_tensorrt_ep_gets_the_recipe_options_and_a_cache_under_the_data_dir(kept, bare_host, art, tmp_path,
                                                                                 monkeypatch):
    """onnxruntime-gpu with the TensorRT EP (faked: ORT here is CPU-only). The label is what ORT kept,
    not what was asked for: ORT drops a provider whose libraries fail to load."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: [*JETSON_EPS, "AzureExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", _FakeOrtSession)
    monkeypatch.setattr(_FakeOrtSession, "kept", kept)
    monkeypatch.setattr(_FakeOrtSession, "calls", [])
    cache = tmp_path / "engines"
    plan = prepare(art.paths["model"], art.manifest.tensorrt_recipe, JETSON_EPS, cache)
    assert plan.providers == list(JETSON_EPS)
    options = plan.provider_options["TensorrtExecutionProvider"]
    assert options["trt_engine_cache_path"] == str(cache / plan.key / "ort") and (cache / plan.key / "ort").is_dir()
    assert options["trt_fp16_enable"] is True and options["trt_int8_enable"] is False
    assert options["trt_max_workspace_size"] == 256 * 2**20
    assert json.loads((cache / plan.key / META_FILE).read_text())["model_sha256"] == art.model_sha
    assert len(_FakeOrtSession.calls) == 1  # the warm-up that builds ORT's engine before timing
    session = plan.open(art.paths["model"], 1)
    assert session.runtime_label == f"onnxruntime:{kept[0]}"
    assert _FakeOrtSession.calls[-1]["provider_options"][0]["trt_engine_cache_path"].startswith(str(cache))


def test_prune_keeps_only_engines_of_installed_models(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    cache.store("k1", b"engine-1", {"model_sha256": "a" * 64})
    cache.store("k2", b"engine-2", {"model_sha256": "b" * 64})
    (tmp_path / "engines" / "k3").mkdir()  # interrupted build, no metadata
    assert sorted(cache.prune({"a" * 64})) == ["k2", "k3"]
    assert [p.name for p in (tmp_path / "engines").iterdir()] == ["k1"]


# --- the agent as a whole ------------------------------------------------------------------------




def _deliver(machine: UpdateMachine, artifact) -> None:
    for ref in artifact.manifest.files:
        for i in range(ref.chunk_count):
            machine.handle_chunk(ref.sha256, i, read_chunk(artifact.paths[ref.role], i, ref.chunk_size))


@no_real_tensorrt
def test_jetson_agent_commits_a_recipe_artifact_and_refuses_bad_recipes(tmp_path, keypair, reference, art):
    cfg = AgentConfig(device_id="jet-1", fleet="unit", profile_id="jetson-orin-nano", data_dir=tmp_path / "jet",
                      controller_key=keypair[1], threads=1, bench_runs=5, bench_warmup=1)
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=keypair[0].public_key())
    machine.handle_desired(granted(Desired(deployment_id="d-trt", manifest=art.manifest), keypair[0], "jet-1",
                                   "unit").to_bytes())
    _deliver(machine, art)
    assert [j.state for j in rec.jobs] == ["download", "verify", "install", "benchmark", "commit", "idle"], rec.jobs
    assert rec.benches[0].candidate_metrics.runtime == "onnxruntime:CPUExecutionProvider"
    assert machine.slots.current().manifest().tensorrt_recipe == art.manifest.tensorrt_recipe

    v2 = make_artifact(tmp_path, reference.slightly_perturbed_model(), reference, keypair[0], version="v2",
                       profile="jetson-orin-nano", tensorrt=True)
    recipe = v2.manifest.tensorrt_recipe
    bigger = [recipe.shapes[0].model_copy(update={"opt": [64, 64], "max": [64, 64]})]  # valid, but not signed
    tampered = v2.manifest.model_copy(update={"tensorrt_recipe": recipe.model_copy(update={"shapes": bigger})})
    payload = json.loads(granted(Desired(deployment_id="d-invalid", manifest=v2.manifest), keypair[0], "jet-1",
                                 "unit").to_bytes())
    payload["manifest"]["tensorrt_recipe"]["ort_tensorrt_options"]["trt_int8_enable"] = True
    unsigned = v2.manifest.model_copy(update={"signature": ""})
    other_model = sign_manifest(v2.manifest.model_copy(update={"tensorrt_recipe": art.manifest.tensorrt_recipe}),
                                keypair[0])
    cases = {"d-tampered": Desired(deployment_id="d-tampered", manifest=tampered).to_bytes(),
             "d-unsigned": Desired(deployment_id="d-unsigned", manifest=unsigned).to_bytes(),
             "d-invalid": json.dumps(payload).encode()}
    expected = {"d-tampered": ReasonCode.SIGNATURE_INVALID, "d-unsigned": ReasonCode.SIGNATURE_INVALID,
                "d-invalid": ReasonCode.MALFORMED_PAYLOAD}
    for dep, raw in cases.items():
        rec.jobs.clear()
        machine.handle_desired(raw)
        assert [(j.deployment_id, j.state, j.reason) for j in rec.jobs] == [(dep, "failure", expected[dep])], rec.jobs
    rec.jobs.clear()  # signed, but the recipe is another model's (model_copy skipped validation; decode must not)
    machine.handle_desired(json.dumps({**json.loads(granted(Desired(deployment_id="d-other", manifest=v2.manifest),
                                                             keypair[0], "jet-1", "unit").to_bytes()),
                                       "manifest": json.loads(other_model.model_dump_json())}).encode())
    assert [(j.state, j.reason) for j in rec.jobs] == [("failure", ReasonCode.MALFORMED_PAYLOAD)]
    assert "onnx_sha256" in rec.jobs[0].detail
    assert all(dep == "d-trt" for dep, _, _ in rec.requests), "downloaded a refused artifact"
    assert machine.active().version == "v1"


def test_caps_name_tensorrt_only_where_it_is_installed(jetson, keypair, tmp_path, monkeypatch):
    cfg = AgentConfig(device_id="jet-2", fleet="unit", profile_id="jetson-orin-nano", data_dir=tmp_path / "j2",
                      controller_key=keypair[1])
    assert build_caps(cfg).runtimes == ["onnxruntime", "tensorrt"]
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed
    assert build_caps(cfg).runtimes == ["onnxruntime"]


BLOCKED = """
import sys
for name in ("torch", "onnx", "fastapi", "transformers", "tensorrt", "cuda"):
    sys.modules[name] = None  # any import of these now raises ImportError
import agent.trt_engine, agent.bench, agent.runtimes, agent.update.machine, agent.daemon
loaded = [m for m in ("onnxruntime",) if m in sys.modules]
assert not loaded, f"imported at module import: {loaded}"
from agent.bench import BenchSpec, measure
print(measure(BenchSpec.from_json(sys.argv[1])).runtime)
"""


@no_real_tensorrt
def test_recipe_artifact_runs_with_torch_tensorrt_and_cuda_blocked(art, tmp_path):
    """The agent needs neither torch nor TensorRT nor cuda-python to run a Jetson artifact."""
    spec = BenchSpec(art.paths["model"], art.paths["golden"], "onnx", "cosine", runs=2, warmup=0,
                     providers=list(JETSON_EPS), tensorrt_recipe=art.manifest.tensorrt_recipe.model_dump(mode="json"),
                     engine_cache_dir=tmp_path / "engines")
    proc = subprocess.run([sys.executable, "-c", BLOCKED, spec.to_json()], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "onnxruntime:CPUExecutionProvider"


def test_wrong_engine_output_is_scored_as_a_quality_failure(jetson, art, tmp_path):
    """The TensorRT path is scored like any other: a wrong model is a quality failure, not a pass."""
    jetson.weight = jetson.weight + 3.0 * np.random.default_rng(1).standard_normal(jetson.weight.shape).astype(
        np.float32)
    spec = BenchSpec(art.paths["model"], art.paths["golden"], "onnx", "cosine", runs=2, warmup=0,
                     providers=list(JETSON_EPS), tensorrt_recipe=art.manifest.tensorrt_recipe.model_dump(mode="json"),
                     engine_cache_dir=tmp_path / "engines")
    assert measure(spec).quality < 0.9
