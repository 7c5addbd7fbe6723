"""Bad input on ``edgefleet compress``: each message names the flag, the file, what was expected and what to do;
no traceback; nothing written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from controller.cli import main


def _no_output(tmp_path):
    return not (tmp_path / "out").exists()


def test_text_file_as_model(tmp_path, capsys):
    model = tmp_path / "notes.onnx"
    model.write_text("these are my notes, not a model\n" * 20)
    rc = main(["compress", "--model", str(model), "--technique", "int8-static",
               "--out", str(tmp_path / "out" / "o.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "--model" in err and "notes.onnx" in err and "not an ONNX model" in err
    assert "torch.onnx.export" in err and "Traceback" not in err and "ir_version not set" not in err
    assert _no_output(tmp_path)


def test_unknown_exclude_nodes_are_refused(tiny_models, tmp_path, capsys):
    m = tiny_models["mlp"]
    rc = main(["compress", "--model", str(m["onnx"]), "--technique", "int8-static", "--calibration", str(m["npz"]),
               "--param", "exclude_nodes=/no/such/node", "--out", str(tmp_path / "out" / "o.onnx"), "--no-eval"])
    err = capsys.readouterr().err
    assert rc == 2 and "/no/such/node" in err and "node names look like" in err and _no_output(tmp_path)


def test_svd_on_an_onnx_file_lists_the_techniques_that_work(tiny_models, tmp_path, capsys):
    m = tiny_models["mlp"]
    rc = main(["compress", "--model", str(m["onnx"]), "--technique", "svd", "--calibration", str(m["npz"]),
               "--out", str(tmp_path / "out" / "o.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "--technique svd" in err and "int8-static" in err
    listed = err[err.index("works on ONNX files:"):]
    assert "svd" not in listed and "tucker" not in listed and _no_output(tmp_path)


def test_eval_file_with_wrong_layout(tiny_models, tmp_path, capsys):
    m = tiny_models["mlp"]
    np.savez(tmp_path / "heldout.npz", input=np.zeros((4, 31), np.float32))
    rc = main(["compress", "--model", str(m["onnx"]), "--technique", "int8-static", "--calibration", str(m["npz"]),
               "--eval", str(tmp_path / "heldout.npz"), "--out", str(tmp_path / "out" / "o.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "--eval" in err and "heldout.npz" in err and "axis 1 must be 32" in err and _no_output(tmp_path)


@pytest.mark.parametrize("flag", ["--threads", "--batches"])
def test_bad_grid_values(tiny_models, tmp_path, capsys, flag):
    m = tiny_models["mlp"]
    rc = main(["compress", "--model", str(m["onnx"]), "--technique", "fp16", flag, "one",
               "--out", str(tmp_path / "out" / "o.onnx")])
    assert rc == 2 and flag in capsys.readouterr().err and _no_output(tmp_path)


def test_compress_without_the_controller_libraries(tiny_models, tmp_path):
    """What an agent-only install sees: a one-line hint, not a ModuleNotFoundError traceback."""
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['onnxruntime.quantization'] = None\n"
            "from controller.cli import main\n"
            f"sys.exit(main(['compress', '--model', {str(tiny_models['mlp']['onnx'])!r}, '--technique', 'fp16', "
            f"'--out', {str(tmp_path / 'out' / 'o.onnx')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "edgefleet[controller]" in proc.stderr and "Traceback" not in proc.stderr and _no_output(tmp_path)
