"""``optimize`` on tiny real models: measured points, front, recommendation, failures, resume, RL."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from controller.optimize import Budget, BuildOptions, Constraints, optimize
from controller.optimize.errors import CandidateFailed
from controller.optimize.measure import Evaluator

FAST = BuildOptions(latency_budget_s=0.3, measure_memory=False, calibration_samples=16)
POINT_KEYS = {"path", "version_id", "config", "quality", "latency_ratio", "size_ratio", "memory_ratio", "pareto",
              "recommended", "measured_on"}


def _run(tiny: dict, out: Path, **kw) -> object:
    args = {"objectives": ("quality", "latency", "size"), "constraints": Constraints(quality_floor=0.9),
            "strategy": "random", "budget": Budget(trials=4), "calibration": tiny["mlp"]["calib"],
            "eval_data": tiny["mlp"]["eval"], "options": FAST, "precisions": ("fp32", "int8", "int4")}
    args.update(kw)
    return optimize(tiny["mlp"]["onnx"], "rpi4", out=out, **args)


def test_search_measures_points_and_recommends_the_fastest_feasible(tiny, opt_dir) -> None:
    result = _run(tiny, opt_dir)
    assert result.meta["trials"] == 4 and result.points
    for p in result.points:
        c = p["config"]["candidate"]
        assert 0.5 <= p["quality"] <= 1.0 + 1e-6 and p["latency_ratio"] > 0
        if c["precision"] == "fp32":
            assert p["size_ratio"] > 0.9
        elif c["precision"] == "int4" or c["fallback_layers"] == 0 or c["fallback"] == "weight-only":
            assert p["size_ratio"] < 0.5  # every weight is stored in 8 or 4 bits
        assert (opt_dir / p["path"]).exists()
        assert p["measured_on"][0].startswith("host:") and "rpi4" in p["measured_on"][0]
    feasible = [p for p in result.points if p["feasible"] and p["repeat_of"] is None]
    rec = result.recommended
    assert rec is not None and rec["pareto"] and rec["quality"] >= 0.9
    assert rec["latency_ratio"] == min(p["latency_ratio"] for p in feasible)
    files = result.write(opt_dir)
    points = json.loads(files["pareto"].read_text())
    assert points and all(POINT_KEYS <= set(p) for p in points)
    assert sum(p["recommended"] for p in points) == 1
    # files of points off the front are dropped, front points keep theirs
    for p in points:
        assert (opt_dir / p["path"]).exists() == p["path_kept"]
        if p["pareto"]:
            assert p["path_kept"]


def test_restart_resumes_the_stored_study(tiny, opt_dir) -> None:
    first = _run(tiny, opt_dir, budget=Budget(trials=2))
    seconds = {p["trial"]: p["seconds"] for p in first.points}
    again = _run(tiny, opt_dir, budget=Budget(trials=4))
    assert again.meta["trials"] == 4  # 2 stored + 2 new, not 4 new
    for p in again.points:
        if p["trial"] in seconds:
            assert p["seconds"] == seconds[p["trial"]]  # not measured again
    done = _run(tiny, opt_dir, budget=Budget(trials=4))
    assert done.meta["trials"] == 4 and done.meta["seconds_this_run"] < 30


def test_infeasible_constraints_give_the_closest_point(tiny, opt_dir) -> None:
    result = _run(tiny, opt_dir, constraints=Constraints(quality_floor=0.9, max_size_ratio=0.001),
                  budget=Budget(trials=3))
    assert result.recommended is None and result.closest is not None
    assert "no candidate meets" in result.message and "max_size_ratio" in result.message
    assert result.closest["violations"]["max_size_ratio"] > 0


def test_a_crashing_technique_is_a_failed_trial_not_a_failed_search(tiny, opt_dir, monkeypatch) -> None:
    import controller.compression as compression

    real = compression.compress

    def flaky(model, config, **kw):
        if config.technique == "int4-weight":
            raise RuntimeError("simulated kernel crash in int4 packing")
        return real(model, config, **kw)

    monkeypatch.setattr(compression, "compress", flaky)
    result = _run(tiny, opt_dir, precisions=("fp32", "int4"), budget=Budget(trials=4), strategy="nsga2")
    assert result.failed, "int4 was never sampled"
    assert all("simulated kernel crash" in f["reason"] for f in result.failed)
    assert all(p["config"]["candidate"]["precision"] == "fp32" for p in result.points)
    assert result.recommended is not None


def test_collapsed_candidate_is_refused_with_its_reason(tiny, tmp_path) -> None:
    from common.profiles import load_profile
    from controller.compression.source import resolve_model
    from controller.optimize.data import search_data
    from controller.optimize.metrics import get_metric
    from tests.tiny_models import tiny_linear_onnx

    ref = tiny_linear_onnx(tmp_path / "ref.onnx")
    flipped = tiny_linear_onnx(tmp_path / "flipped.onnx", scale=-1.0)  # relu(-xW): unrelated outputs
    import numpy as np

    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32))
    source = resolve_model(ref, tmp_path)
    ev = Evaluator(ref, source, load_profile("rpi4"), get_metric("cosine"),
                   search_data(source, tmp_path / "x.npz"), tmp_path / "w", FAST)
    assert ev.measure(ref).quality == pytest.approx(1.0)
    with pytest.raises(CandidateFailed, match="collapsed"):
        ev.measure(flipped)


def test_time_budget_stops_with_best_so_far(tiny, opt_dir) -> None:
    messages = []
    result = _run(tiny, opt_dir, budget=Budget(trials=None, time_s=0.1),
                  progress=lambda done, total, msg: messages.append((done, total, msg)))
    assert 1 <= result.meta["trials"] <= 2  # optuna checks the clock between trials
    assert messages and "best so far" in messages[-1][2]


def test_rl_controller_decides_per_layer(tiny, opt_dir) -> None:
    result = _run(tiny, opt_dir, strategy="rl", precisions=("int8",), budget=Budget(trials=4))
    assert result.meta["trials"] == 4 and result.points
    layered = [p for p in result.points if p["config"]["candidate"]["layers"]]
    assert layered, "RL episodes carry per-layer decisions"
    nodes = set(layered[0]["config"]["candidate"]["layers"])
    assert len(nodes) >= 3  # the MLP's three MatMul/Gemm layers
    for p in layered:  # the built INT8 config follows the decisions
        cfg = p["config"]["stages"][-1]["config"]
        decided = p["config"]["candidate"]["layers"]
        assert set(cfg["exclude_nodes"]) == {n for n, c in decided.items() if c == "fp32"}
        assert set(cfg["weight_only_nodes"]) == {n for n, c in decided.items() if c == "weight-only"}
    study = optuna.load_study(study_name=result.meta["study"], storage=result.meta["storage"])
    assert len(study.trials) == 4
