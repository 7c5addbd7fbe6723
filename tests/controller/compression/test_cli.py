"""``edgefleet compress`` end to end on a user's ONNX + .npz, and its bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from controller.cli import main


def test_compress_user_onnx_with_npz(tiny_models, tmp_path, capsys):
    m = tiny_models["mlp"]
    out = tmp_path / "mlp-int8.onnx"
    rc = main(["compress", "--model", str(m["onnx"]), "--technique", "int8-static", "--calibration", str(m["npz"]),
               "--param", "calibration_samples=16", "--param", "calibration_method=minmax", "--out", str(out),
               "--no-memory", "--allow-slower"])
    assert rc == 0 and out.exists()
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["config"]["calibration_samples"] == 16 and report["metrics"]["size_ratio"] < 0.5
    captured = capsys.readouterr()
    assert "size" in captured.out and "100%" in captured.err


@pytest.mark.parametrize(("argv", "message"), [
    (["--technique", "int3"], "UnsupportedTechniqueError"),
    (["--technique", "int8-static", "--param", "bogus=1"], "InvalidConfigError"),
    (["--technique", "int8-static", "--param", "calibration_samples"], "KEY=VALUE"),
])
def test_bad_technique_and_params(tiny_models, tmp_path, capsys, argv, message):
    rc = main(["compress", "--model", str(tiny_models["mlp"]["onnx"]), "--out", str(tmp_path / "o.onnx"), *argv])
    assert rc == 2 and message in capsys.readouterr().err


def test_list_names_every_technique(capsys):
    assert main(["compress", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("int8-static", "qat", "tucker", "prune-structured"):
        assert name in out


def test_cli_module_imports_without_torch():
    code = ("import sys, controller.compression.cli; "
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
