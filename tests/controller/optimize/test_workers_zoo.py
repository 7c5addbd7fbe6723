"""Several workers on one study, and a real zoo search with a sub-network stage (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from controller.optimize import Budget, BuildOptions, Constraints, optimize

REPO = Path(__file__).resolve().parents[3]

WORKER = textwrap.dedent("""
    import sys
    from controller.optimize import Budget, BuildOptions, Constraints, optimize
    model, calib, ev, out, storage = sys.argv[1:6]
    optimize(model, "rpi4", ("quality", "latency", "size"), Constraints(quality_floor=0.9), "tpe",
             Budget(trials=6), out=out, calibration=calib, eval_data=ev, storage=storage, study_name="shared",
             precisions=("fp32", "int8", "int4"), seed=None,
             options=BuildOptions(latency_budget_s=0.2, measure_memory=False, calibration_samples=16))
""")


def test_two_worker_processes_share_one_study(tiny, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    mlp = tiny["mlp"]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(mlp["onnx"]), str(mlp["calib"]), str(mlp["eval"]),
                               str(tmp_path / "out"), storage], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=500)
        assert p.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 6 <= len(finished) <= 8  # the budget is shared: each worker may finish the trial it had started
    workers = {t.user_attrs["worker"] for t in finished}
    assert len(workers) == 2, workers
    assert len({t.number for t in finished}) == len(finished)


@pytest.mark.slow
def test_mnist_search_with_subnetworks_records_lineage(tmp_path) -> None:
    from controller import zoo
    from controller.optimize.lineage import record_front
    from controller.registry import Registry

    out = tmp_path / "opt"
    result = optimize("mnist-cnn", "rpi4", ("quality", "latency", "size"), Constraints(quality_floor=0.95),
                      "nsga2", Budget(trials=5), out=out, metric="accuracy", archs=["none", "width:0.5"],
                      precisions=["fp32", "int8"], eval_limit=500,
                      options=BuildOptions(finetune_epochs=1, max_samples=1000, measure_memory=False,
                                           latency_budget_s=0.5))
    pruned = [p for p in result.points if p["config"]["candidate"]["arch"] == "width:0.5"]
    assert pruned, "the sub-network was never sampled"
    for p in pruned:
        assert p["config"]["stages"][0]["technique"] == "prune-structured"
        assert p["size_ratio"] < 0.5 and p["quality"] > 0.9  # fine-tuned on real digits, judged on held-out ones
    with Registry(tmp_path / "ws") as registry:
        record_front(result, out, registry, fp32=zoo.load("mnist-cnn").onnx_path, zoo="mnist-cnn",
                     model_name="mnist-cnn")
        for p in result.front:
            chain = registry.lineage(version_id=p["version_id"])
            techniques = [v.technique for v in chain]
            if p["config"]["candidate"]["arch"] == "width:0.5":
                assert techniques[:2] == ["fp32", "prune-structured"]
            assert chain[0].config == {"source": "zoo", "zoo": "mnist-cnn"}
