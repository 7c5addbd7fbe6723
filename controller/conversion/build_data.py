"""The data ``edgefleet build`` calibrates and checks a user's model on — real, or refused.

Why: ``build`` on a user's ONNX used to calibrate INT8 and run its cross-runtime check on random
N(0, 1) inputs and print "ok … top1 0.969" — a number about noise, not about the user's inputs.
Now calibration comes from ``--calibration`` and the check from ``--eval`` (held out) or, flagged,
from the calibration data; random inputs are used only with ``--allow-synthetic``, and then the
build report and every line the CLI prints say so. Files follow ``edgefleet compress``'s input
contract (:mod:`controller.compression.inputs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from controller.conversion.errors import ConversionError


class BuildDataError(ConversionError):
    """Missing or unusable calibration / evaluation data for a user's model."""


def _stack(samples: list[dict[str, np.ndarray]], flag: str) -> dict[str, np.ndarray]:
    """Per-sample feeds → the golden layout (samples on axis 0, one batch row each)."""
    first = samples[0]
    odd = sorted(k for k, v in first.items() if np.ndim(v) == 0 or np.shape(v)[0] != 1)
    if odd:
        raise BuildDataError(f"{flag}: inputs {odd} have no batch axis of 1 (recurrent states, scalars); the "
                             "cross-runtime check of build feeds one batch row per sample. Use `edgefleet compress` "
                             "for such models (its evaluation feeds every sample as stored)")
    return {k: np.concatenate([s[k] for s in samples], axis=0) for k in first}


def user_data(path: Path, *, needs_calibration: bool, calibration: Path | None, eval_data: Path | None,
              allow_synthetic: bool, golden_samples: int, calibration_samples: int,
              synth: Any) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]], dict[str, Any]]:
    """(golden, calibration samples, provenance) for a user's ONNX file, or BuildDataError naming the flags.

    ``synth()`` returns the synthetic golden dict, used only when ``allow_synthetic``.
    """
    from controller.compression.errors import CalibrationError
    from controller.compression.inputs import load_samples
    from controller.compression.source import input_specs

    specs = input_specs(path) if path.suffix == ".onnx" else None
    if (calibration or eval_data) and specs is None:
        raise BuildDataError(f"--calibration/--eval: data files are read against an ONNX model's inputs; {path.name} "
                             "is not an .onnx file")
    try:
        calib = load_samples(calibration, specs, limit=calibration_samples, flag="--calibration") \
            if calibration else []
        held = load_samples(eval_data, specs, limit=golden_samples, flag="--eval") if eval_data else []
    except CalibrationError as exc:
        raise BuildDataError(str(exc)) from None
    missing = []
    if needs_calibration and not calib:
        missing.append("--calibration FILE (real inputs to calibrate INT8 on)")
    if not held and not calib:
        missing.append("--eval FILE (held-out real inputs to check the artifact against FP32)")
    if missing and not allow_synthetic:
        raise BuildDataError(f"{path.name} is not a zoo model, so build needs your data: pass {' and '.join(missing)}"
                             " — .npz with the input names as keys, samples on axis 0 (see `edgefleet compress "
                             "--help`). --allow-synthetic calibrates/checks on random inputs instead (every report "
                             "line then says so)")
    synthetic_golden = synth() if missing else None
    if held:
        golden, check = _stack(held, "--eval"), {"data": f"--eval {eval_data}", "held_out": True}
    elif calib:
        golden = _stack(calib[:golden_samples], "--calibration")
        check = {"data": f"--calibration {calibration}", "held_out": False}
    else:
        golden, check = synthetic_golden, {"data": "synthetic N(0,1)", "held_out": False, "synthetic": True}
    if calib:
        cal_origin: dict[str, Any] = {"data": f"--calibration {calibration}", "samples": len(calib)}
    else:
        n = len(next(iter(golden.values())))
        calib = [{k: v[i:i + 1] for k, v in (synthetic_golden or golden).items()} for i in range(n)]
        cal_origin = {"data": "synthetic N(0,1)", "samples": len(calib), "synthetic": True}
    check["samples"] = len(next(iter(golden.values())))
    return golden, calib, {"calibration": cal_origin, "check": check,
                           "synthetic": bool(cal_origin.get("synthetic") and needs_calibration)
                           or bool(check.get("synthetic"))}
