"""Hostile uploads (issue #13 A, B, H): samples bombs, lying ``.npy`` headers, and model checks that
must not hold the file in memory several times over.

Each case is refused with a 4xx naming the problem, before anything is decompressed or loaded.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from controller.api.errors import ApiError
from controller.api.upload_checks import NpzLimits, check_onnx, check_samples, inspect_npz
from tests.controller.api.conftest import REPO, Controller, InProcessController, make_controller, tiny_onnx


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A version 1.0 ``.npy`` header, padded as numpy pads it."""
    body = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    pad = 64 - (10 + len(body) + 1) % 64
    body += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


def bomb_npz(path: Path, name: str, shape: tuple[int, ...]) -> Path:
    """An honest but huge ``.npz``: zeros compress ~1000:1, so a few hundred KB inflate to ``shape``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open(f"{name}.npy", "w",
                                                                                     force_zip64=True) as out:
        out.write(npy_header(shape))
        row = np.zeros(shape[1:], np.float32).tobytes()
        block = row * max(1, (1 << 20) // len(row))
        left = int(np.prod(shape)) * 4
        while left > 0:
            piece = block[:left]
            out.write(piece)
            left -= len(piece)
    return path


def lying_npz(path: Path, shape: tuple[int, ...]) -> Path:
    """A tiny ``.npz`` whose header claims ``shape`` (issue #13 B: (1e11, 16) gave a 500 MemoryError)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("input.npy", npy_header(shape) + b"\0" * 16)
    return path


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    tmp = tmp_path_factory.mktemp("hostile")
    base = make_controller(tmp, EDGEFLEET_SAMPLES_MAX_MB="8", EDGEFLEET_SAMPLES_MAX_ARRAYS="4")
    ctl = InProcessController(url=base.url, workspace=base.workspace, env=base.env, port=base.port, keys=base.keys)
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


def upload(ctl: Controller, name: str, model: Path, samples: bytes) -> httpx.Response:
    with ctl.client("admin") as api:
        return api.post("/compression/models", data={"name": name},
                        files={"file": ("m.onnx", model.read_bytes()), "samples": ("s.npz", samples)})


def test_samples_bomb_is_refused_413_before_inflating(limited: Controller, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    bomb = bomb_npz(tmp_path / "bomb.npz", "input", (1 << 20, 16))  # 64 MiB inflated, ~70 KB on the wire
    assert bomb.stat().st_size < 1024 * 1024
    r = upload(limited, "bomb", model, bomb.read_bytes())
    assert r.status_code == 413, r.text
    assert r.json()["data"]["code"] == "too_large" and "EDGEFLEET_SAMPLES_MAX_MB" in r.json()["message"]
    with limited.client("admin") as api:
        assert api.get("/compression/models/bomb").status_code == 404  # nothing stored


def test_npz_header_claiming_1e11_rows_is_a_4xx_not_500(limited: Controller, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    liar = lying_npz(tmp_path / "liar.npz", (10**11, 16))
    assert liar.stat().st_size < 1024
    r = upload(limited, "liar", model, liar.read_bytes())
    assert r.status_code in (413, 422), r.text
    assert r.json()["data"]["code"] in ("too_large", "invalid_input")
    assert "(100000000000, 16)" in r.json()["message"]


def test_too_many_arrays_and_pickles_are_refused(limited: Controller, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    many = io.BytesIO()
    np.savez(many, **{f"a{i}": np.zeros((2, 16), np.float32) for i in range(5)})
    r = upload(limited, "many", model, many.getvalue())
    assert r.status_code == 413 and "EDGEFLEET_SAMPLES_MAX_ARRAYS" in r.json()["message"], r.text
    pickled = io.BytesIO()
    np.savez(pickled, input=np.array([{"x": 1}, None], dtype=object))
    r = upload(limited, "pickled", model, pickled.getvalue())
    assert r.status_code == 422 and "pickle" in r.json()["message"], r.text


def test_valid_samples_still_accepted(limited: Controller, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    good = io.BytesIO()
    np.savez_compressed(good, input=np.random.default_rng(0).standard_normal((12, 16)).astype(np.float32))
    r = upload(limited, "good", model, good.getvalue())
    assert r.status_code == 201, r.text
    assert r.json()["data"]["version"]["config"]["samples"] == 12


def test_inspect_npz_reads_headers_and_checks_sizes(tmp_path: Path) -> None:
    path = tmp_path / "ok.npz"
    np.savez(path, input=np.zeros((3, 16), np.float32), mask=np.ones((3, 16), np.int64))
    heads = inspect_npz(path)
    assert heads["input"].shape == (3, 16) and heads["mask"].dtype == "<i8" and heads["input"].nbytes == 192
    assert check_samples(path, {"input": (-1, 16), "mask": (-1, 16)}) == 3
    with pytest.raises(ApiError) as exc:  # header shorter than the data it comes with
        inspect_npz(lying_npz(tmp_path / "short.npz", (3, 3)))
    assert exc.value.http_status == 422 and "member holds" in exc.value.message
    with pytest.raises(ApiError) as exc:
        inspect_npz(path, NpzLimits(max_bytes=300, max_arrays=8))
    assert exc.value.http_status == 413
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ApiError) as exc:
        inspect_npz(tmp_path / "junk.npz")
    assert exc.value.http_status == 422


# ------------------------------------------------------------------------------------------ models
def test_check_onnx_describes_a_model_like_onnx_load(tmp_path: Path) -> None:
    info = check_onnx(tiny_onnx(tmp_path / "m.onnx"))
    assert info["inputs"] == ["input"] and info["outputs"] == ["output"] and info["nodes"] == 4
    assert info["opset"] == 17 and info["input_shapes"] == {"input": (-1, 16)}
    assert not list(tmp_path.glob(".skeleton-*"))  # the temporary skeleton is gone


def big_onnx(path: Path, mb: int) -> Path:
    """A valid ONNX with ``mb`` MiB of FP32 weights (raw_data initializers)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = mb * 1024 * 1024 // 4 // 1024
    w = numpy_helper.from_array(np.ones((1024, n), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_check_onnx_peak_memory_is_a_fraction_of_the_file(tmp_path: Path) -> None:
    """Issue #13 H: a valid 200 MB model took the controller to 730 MB; the check must not load weights."""
    path = big_onnx(tmp_path / "big.onnx", 96)
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import onnx\n"
        "from controller.api.upload_checks import check_onnx\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM'): return int(line.split()[1]) * 1024\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = hwm()\n"
        "info = check_onnx(Path(sys.argv[1]))\n"
        "print(json.dumps({'growth': hwm() - before, 'nodes': info['nodes']}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(path)], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    size = path.stat().st_size
    assert result["nodes"] == 1
    assert result["growth"] < 0.25 * size, f"check grew RSS by {result['growth'] / 2**20:.0f} MiB for a " \
                                           f"{size / 2**20:.0f} MiB model"


def test_check_onnx_refuses_lying_weights_external_data_and_garbage(tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(big_onnx(tmp_path / "b.onnx", 1)))
    model.graph.initializer[0].dims[1] = 300  # 1 MiB of bytes, but dims now say 1.2 MiB
    (tmp_path / "lie.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ApiError) as exc:
        check_onnx(tmp_path / "lie.onnx")
    assert exc.value.http_status == 422 and "needs" in exc.value.message

    model = onnx.load(str(tiny_onnx(tmp_path / "t.onnx")))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    with pytest.raises(ApiError) as exc:
        check_onnx(tmp_path / "ext.onnx")
    assert exc.value.http_status == 422 and "external data" in exc.value.message

    whole = tiny_onnx(tmp_path / "whole.onnx").read_bytes()
    for name, data in [("trunc.onnx", whole[: len(whole) // 2]), ("junk.onnx", b"\xff" * 300),
                       ("text.onnx", b"hello world, not a model")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ApiError) as exc:
            check_onnx(tmp_path / name)
        assert exc.value.http_status == 422, name


def test_check_onnx_graph_limit(tmp_path: Path) -> None:
    with pytest.raises(ApiError) as exc:
        check_onnx(tiny_onnx(tmp_path / "m.onnx"), max_graph_bytes=64)
    assert exc.value.http_status == 413 and "EDGEFLEET_MAX_GRAPH_MB" in exc.value.message
