"""``edgefleet optimize``: files a user gets (pareto.json, report.html, recommended.onnx) and registry lineage."""

from __future__ import annotations

import json
import re

from controller.cli import main
from controller.registry import Registry


def test_cli_writes_front_report_and_versions(tiny, opt_dir, tmp_path, monkeypatch, capsys) -> None:
    workspace = tmp_path / "ws"
    monkeypatch.setenv("COMPRESSION_WORKSPACE", str(workspace))
    argv = ["optimize", "--model", str(tiny["mlp"]["onnx"]), "--profile", "rpi4", "--calibration",
            str(tiny["mlp"]["calib"]), "--eval", str(tiny["mlp"]["eval"]), "--quality-floor", "0.95",
            "--metric", "top1", "--trials", "3", "--strategy", "tpe", "--precisions", "fp32,int8,int4",
            "--no-memory", "--out", str(opt_dir)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "recommended:" in printed.out and "[3/3]" in printed.err
    points = json.loads((opt_dir / "pareto.json").read_text())
    rec = next(p for p in points if p["recommended"])
    assert (opt_dir / "recommended.onnx").read_bytes() == (opt_dir / rec["path"]).read_bytes()
    html = (opt_dir / "report.html").read_text()
    assert "<svg" in html and "Pareto front" in html and rec["label"] in html
    assert not re.search(r"<script|src=\"http|href=\"http", html)  # self-contained, offline
    assert "edgefleet compress" in html or "FP32 model itself" in html
    assert (opt_dir / "calibration.npz").exists()
    with Registry(workspace) as registry:
        for p in points:
            if not p["pareto"]:
                continue
            assert p["version_id"], "every front point is a registry version"
            chain = registry.lineage(version_id=p["version_id"])
            assert chain[0].technique == "fp32" and chain[0].parent_id is None
            if p["config"]["stages"]:
                v = chain[-1]
                assert v.config == p["config"]["stages"][-1]["config"]
                assert v.metrics["quality"] == p["quality"]
                assert v.metrics["optimize"]["trial"] == p["trial"]
        model_id = registry.get_version(version_id=rec["version_id"]).model_id
        assert registry.tags.get_tag(model_id=model_id, tag="optimized-rpi4").id == rec["version_id"]
    # again: the stored study is complete, nothing new is measured, the same root version is reused
    assert main(argv) == 0
    with Registry(workspace) as registry:
        roots = [v for v in registry.list_versions(model_id=model_id) if v.parent_id is None]
        assert len(roots) == 1


def test_cli_reports_bad_input(tiny, opt_dir, capsys) -> None:
    argv = ["optimize", "--model", str(tiny["mlp"]["onnx"]), "--profile", "rpi4", "--quality-floor", "0.9",
            "--out", str(opt_dir), "--no-registry"]
    assert main(argv) == 2
    assert "--calibration" in capsys.readouterr().err
    assert main([*argv, "--calibration", str(tiny["mlp"]["calib"]), "--profile", "iphone"]) == 2
    assert "coreml" in capsys.readouterr().err
