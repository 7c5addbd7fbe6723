"""One real model the project has never seen: PP-OCRv4's CTC text recogniser, shipped in the
rapidocr-onnxruntime wheel (opset 12, dynamic width, 6625-class per-step softmax), calibrated and judged
on text strips of scikit-image's scanned page. The wheel is fetched with ``pip download --no-deps`` (PyPI
is the one registry CI reaches) and cached in ``$EDGEFLEET_CACHE``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from controller.compression import Int8StaticConfig, compress

WHEEL = "rapidocr-onnxruntime==1.4.4"
MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"


@pytest.fixture(scope="module")
def ocr_model() -> Path:
    from controller.zoo.cache import cache_dir

    cache = cache_dir() / "foreign-models"
    dest = cache / "pp-ocrv4-rec" / Path(MEMBER).name
    if not dest.exists():
        wheels = cache / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels),
                               WHEEL], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.skip(f"cannot fetch {WHEEL} from the package registry: {proc.stderr.strip()[-200:]}")
        wheel = next(wheels.glob("rapidocr_onnxruntime-*.whl"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            dest.write_bytes(zf.read(MEMBER))
    return dest


def _strips(img: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Text strips resized the way RapidOCR feeds its recogniser: height 48, padded to width 320, [-1, 1]."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    out = np.zeros((n, 3, 48, 320), np.float32)
    for i in range(n):
        height, width = int(rng.integers(16, 29)), int(rng.integers(img.shape[1] // 4, img.shape[1]))
        top, left = int(rng.integers(0, img.shape[0] - height)), int(rng.integers(0, img.shape[1] - width + 1))
        crop = img[top:top + height, left:left + width].astype(np.float32) / 255.0
        new_w = min(320, max(8, round(48 * width / height)))
        out[i, :, :, :new_w] = (resize(crop, (48, new_w), anti_aliasing=True)[None] - 0.5) / 0.5
    return out


@pytest.mark.slow
def test_opset12_ctc_recogniser_quantises_and_is_judged_on_held_out_text(ocr_model, tmp_path):
    from skimage import data

    page = data.page()
    half = page.shape[0] // 2
    np.savez(tmp_path / "calib.npz", x=_strips(page[:half], 16, 0))
    np.savez(tmp_path / "eval.npz", x=_strips(page[half:], 12, 1))
    r = compress(ocr_model, Int8StaticConfig(calibration_samples=16), out=tmp_path / "rec.onnx",
                 calibration=tmp_path / "calib.npz", eval_data=tmp_path / "eval.npz", metric="sequence_agreement",
                 memory=False)
    onnx.checker.check_model(str(r.output))
    assert r.report["opset"]["from"] == 12 and r.report["opset"]["converted"] and r.report["per_channel"]
    assert r.metrics["eval"]["held_out"] and r.metrics["eval"]["metric"] == "sequence_agreement"
    assert r.metrics["quality"]["sequence_agreement"] > 0.5  # per-step argmax over 40 steps × 12 held-out strips
    guard = r.report["speed_guard"]
    assert guard["delivered"] in ("int8-static", "fp16", "int4-weight", "fp32")
    if guard["delivered"] != "int8-static":
        assert guard["measured"][0]["latency_ratio"] > 1.0 and guard["reason"]
