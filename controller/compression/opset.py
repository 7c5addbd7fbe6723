"""Raise a model's opset to what a technique needs, with onnx's version converter, and check the result.

Why: per-channel QDQ writes ``DequantizeLinear(axis=...)``, which exists from opset 13. A CTC text
recogniser exported at opset 11 came back from ORT's quantiser as a graph that fails
``onnx.checker`` ("Unrecognized attribute: axis for operator DequantizeLinear"). The converter is
tried first; when it cannot convert the graph (an op without an adapter), the caller falls back
(per-tensor weights) and says so in the report — never a silent change of technique.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Per-channel DequantizeLinear (the ``axis`` attribute) needs opset 13.
PER_CHANNEL_MIN_OPSET = 13


def model_opset(path: Path) -> int:
    """The default-domain (``ai.onnx``) opset the model imports."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def ensure_opset(src: Path, minimum: int, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """``src`` itself when its opset is ≥ ``minimum``, else a converted, checked copy in ``workdir``.

    Returns ``(path, info)``; ``info`` has ``from``, ``to`` and ``converted`` (False with ``error``
    when the converter or the checks failed, in which case ``path`` is ``src`` unchanged).
    """
    import onnx
    from onnx import version_converter

    current = model_opset(src)
    info: dict[str, Any] = {"from": current, "to": current, "required": minimum, "converted": False}
    if current >= minimum:
        return src, info
    dst = workdir / f"opset{minimum}.onnx"
    try:
        model = onnx.load(str(src))
        converted = version_converter.convert_version(model, minimum)
        onnx.checker.check_model(converted)
        onnx.save(converted, str(dst))
        _check_runs(dst)
    except Exception as exc:  # noqa: BLE001 - any converter/checker/runtime failure means "cannot upgrade"
        dst.unlink(missing_ok=True)
        info["error"] = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return src, info
    info.update(to=minimum, converted=True, method="onnx.version_converter, onnx.checker and an ORT session")
    return dst, info


def _check_runs(path: Path) -> None:
    """Raise when ONNX Runtime cannot build a session for ``path`` (converted graphs can be checker-clean
    yet refused by the runtime)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
