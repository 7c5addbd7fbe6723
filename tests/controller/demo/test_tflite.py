"""The demo's TFLite side without the converter: cache, convert-venv subprocess, skip, lineage, table.

The real conversion runs in the convert venv (``test_demo.py``'s slow TFLite demo and
``tests/controller/conversion``); here a stand-in interpreter plays the convert venv so
the caching, failure and skip paths are checked in a second.
"""

from __future__ import annotations

import io
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from controller.demo import tflite
from controller.demo.build import register_tflite
from controller.demo.run import check_outcome, prepare_tflite, results_table, tflite_line
from controller.demo.scenario import DEFAULT_PROFILES, DemoOptions, DemoRun, StageResult, delivered_format
from controller.demo.tflite_build import BUILDS, DEGRADE_TARGET, damaged_copy, perturb_weights
from controller.registry import Registry

FAKE_BUILD = """\
#!{python}
import json, pathlib, sys
args = sys.argv[sys.argv.index("-m") + 2:]
opts = dict(zip(args[::2], args[1::2]))
pathlib.Path({counter!r}).open("a").write("run\\n")
if {fail}:
    print("converter exploded: boom", flush=True)
    sys.exit(1)
out = pathlib.Path(opts["--out"])
out.mkdir(parents=True, exist_ok=True)
builds = {{}}
for name, precision in (("fp32", "fp32"), ("int8", "int8-dynamic"), ("degraded", "int8-dynamic")):
    (out / f"{{opts['--model']}}-{{name}}.tflite").write_bytes(name.encode() * 100)
    builds[name] = {{"file": f"{{opts['--model']}}-{{name}}.tflite", "precision": precision, "size_bytes": 400,
                    "sha256": "0" * 64, "notes": [], "seconds": 0.1,
                    "vs_fp32": {{"ok": name != "degraded", "cosine": 0.93 if name == "degraded" else 0.999}}}}
(out / "tflite.json").write_text(json.dumps({{"schema_version": 1, "model": opts["--model"],
    "profile": opts["--profile"], "degradation": {{"relative_to_weight_std": 0.12}},
    "tool_versions": {{"litert-torch": "fake"}}, "builds": builds}}))
"""


@pytest.fixture
def fake_convert_venv(tmp_path, monkeypatch):
    """A stand-in for ``.venv-convert/bin/python``; returns (counter file, set_failing(bool))."""
    monkeypatch.setenv("EDGEFLEET_CACHE", str(tmp_path / "cache"))
    counter = tmp_path / "runs.txt"
    script = tmp_path / "convert-python"

    def write(fail: bool) -> None:
        script.write_text(FAKE_BUILD.format(python=sys.executable, counter=str(counter), fail=fail))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    write(False)
    monkeypatch.setenv(tflite.CONVERT_PYTHON_ENV, str(script))
    return counter, write


def _runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_android_is_the_tflite_profile_of_the_demo():
    assert "android-arm64" in DEFAULT_PROFILES
    assert tflite.tflite_profiles(DEFAULT_PROFILES) == ("android-arm64",)
    assert delivered_format("android-arm64") == "tflite"
    assert delivered_format("jetson-orin-nano") == "onnx"  # the demo ships ONNX there (TensorRT's fallback)
    assert delivered_format("no-such-profile") is None


def test_build_runs_in_the_convert_venv_once_then_comes_from_the_cache(fake_convert_venv, tmp_path):
    counter, _ = fake_convert_venv
    assert tflite.unavailable_reason("minilm", "android-arm64") is None
    first = tflite.ensure_tflite_set("minilm", "android-arm64", log_path=tmp_path / "build.log")
    assert _runs(counter) == 1
    assert first.directory == tflite.cache_path("minilm", "android-arm64")
    assert {name: first.path(name).read_bytes()[:4] for name, _ in BUILDS} == {
        "fp32": b"fp32", "int8": b"int8", "degraded": b"degr"}
    again = tflite.ensure_tflite_set("minilm", "android-arm64", log_path=tmp_path / "build.log")
    assert _runs(counter) == 1 and again == first
    # nothing half-written is left beside the cache entry
    assert [p.name for p in first.directory.parent.iterdir()] == [first.directory.name]
    assert "cos 0.9990" in tflite_line(first.report)


def test_a_failed_build_says_why_and_leaves_no_cache(fake_convert_venv, tmp_path):
    counter, write = fake_convert_venv
    write(True)
    with pytest.raises(tflite.TfliteBuildError, match="boom"):
        tflite.ensure_tflite_set("minilm", "android-arm64", log_path=tmp_path / "build.log")
    assert tflite.cached_set("minilm", "android-arm64") is None
    assert list(tflite.cache_path("minilm", "android-arm64").parent.iterdir()) == []
    # in the demo: the TFLite device is left out and the failure is a problem (non-zero exit)
    run = DemoRun(DemoOptions(workdir=tmp_path / "demo", profiles=("rpi4", "android-arm64")))
    problems = prepare_tflite(run, lambda msg: None)
    assert len(problems) == 1 and "TFLite build failed" in problems[0] and "boom" in problems[0]
    assert run.device_profiles() == {"rpi4-01": "rpi4"}


def test_without_the_convert_venv_the_tflite_device_is_skipped_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(tflite.CONVERT_PYTHON_ENV, str(tmp_path / "no-such-venv" / "bin" / "python"))
    reason = tflite.unavailable_reason("minilm", "android-arm64")
    assert reason is not None and ".venv-convert" in reason and "make demo" in reason
    said: list[str] = []
    run = DemoRun(DemoOptions(workdir=tmp_path / "demo", profiles=("rpi4", "android-arm64")))
    assert prepare_tflite(run, said.append) == []  # not a failure: the ONNX story still runs
    assert run.skipped == {"android-arm64": reason}
    assert run.device_profiles() == {"rpi4-01": "rpi4"}
    assert any("skipped" in line and "android-arm64" in line for line in said)


def test_tflite_versions_form_a_lineage_under_the_fp32_onnx_root(fake_convert_venv, tmp_path):
    tset = tflite.ensure_tflite_set("minilm", "android-arm64", log_path=tmp_path / "build.log")
    reg = Registry(tmp_path / "ws")
    try:
        model = reg.ensure_model(name="minilm")
        root = reg.add_version(model_id=model.id, data=b"onnx fp32", technique="fp32", config={"zoo": "minilm"})
        versions = register_tflite(reg, model_id=model.id, root_id=root.id, tflite=tset)
        assert [versions[n].technique for n in ("fp32", "int8", "degraded")] == [
            "fp32", "int8-dynamic", "int8-dynamic-degraded"]
        assert {v.format for v in versions.values()} == {"tflite"}
        assert {v.profile for v in versions.values()} == {None}  # any TFLite profile may get them
        lineage = [v.id for v in reg.lineage(version_id=versions["degraded"].id)]
        assert lineage == [root.id, versions["fp32"].id, versions["int8"].id, versions["degraded"].id]
        assert versions["int8"].metrics["vs_fp32"]["cosine"] == 0.999
        assert versions["degraded"].config["perturbation"] == {"relative_to_weight_std": 0.12}
    finally:
        reg.close()


def test_damaged_copy_falls_under_the_target_and_leaves_the_original_alone():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    before = [p.clone() for p in net.parameters()]
    golden = {"x": np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)}
    for metric in ("cosine", "top1"):
        inputs = SimpleNamespace(golden=golden, input_names=["x"], quality_metric=metric)
        damaged, info = damaged_copy(net, inputs)
        assert info["torch_quality_vs_fp32"] <= DEGRADE_TARGET[metric] and info["weight_tensors"] == 2
        assert damaged is not net
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    with pytest.raises(ValueError, match="no Linear or Conv"):
        perturb_weights(torch.nn.ReLU(), noise=0.1)


def _stage(name: str, expect: str, per_profile: dict[str, str], states: dict[str, tuple[str, str]]) -> StageResult:
    stage = StageResult(name, "", "x", expect, per_profile=per_profile)
    for device, (state, fmt) in states.items():
        stage.devices[device] = {"state": state, "format": fmt, "technique": "int8-dynamic", "reason": "",
                                 "bench": {"candidate_metrics": {"latency_p95_ms": 6.5, "quality": 0.9985},
                                           "baseline_metrics": {"latency_p95_ms": 26.0}}}
    return stage


def test_outcome_and_table_show_each_device_format(tmp_path):
    run = DemoRun(DemoOptions(workdir=tmp_path, profiles=("rpi4", "android-arm64")))
    run.stages = [
        _stage("int8", "commit", {"rpi4": "v-onnx", "android-arm64": "v-tfl"},
               {"rpi4-01": ("committed", "onnx"), "android-arm64-01": ("committed", "tflite")}),
        _stage("degraded", "rollback", {"rpi4": "d-onnx", "android-arm64": "d-tfl"},
               {"rpi4-01": ("rolled_back", "onnx"), "android-arm64-01": ("rolled_back", "tflite")}),
    ]
    final = {"rpi4-01": {"profile": "rpi4", "active": {"version": "v-onnx"}},
             "android-arm64-01": {"profile": "android-arm64", "active": {"version": "v-tfl"}}}
    assert check_outcome(run, final) == []
    final["android-arm64-01"]["active"] = {"version": "d-tfl"}
    assert check_outcome(run, final) == ["android-arm64-01 runs version d-tfl, expected INT8 v-tfl"]
    out = io.StringIO()
    Console(file=out, width=200).print(results_table(run))
    text = out.getvalue()
    assert "tflite int8-dynamic" in text and "onnx int8-dynamic" in text and "×0.25" in text
