"""The data a search judges candidates on: calibration inputs, held-out inputs and labels.

Zoo models bring their own disjoint calibration / held-out splits. A user's ONNX file needs a
calibration ``.npz`` (keys = graph input names, samples stacked on axis 0) and, for a quality
figure that means something, a held-out ``.npz`` of the same form, optionally with a ``labels``
array for the ``accuracy`` metric. Without a held-out file the calibration samples are used and
the search result says so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from controller.optimize.errors import InvalidSearchError

Inputs = dict[str, np.ndarray]
ZOO_EVAL_SAMPLES = {"minilm": 200, "mobilenetv2": 300, "mnist-cnn": 1000}
ZOO_CALIBRATION_SAMPLES = 128


@dataclasses.dataclass
class SearchData:
    """Calibration + held-out inputs (batch 1 per dict), labels aligned with ``eval_inputs``."""

    calibration: list[Inputs]
    eval_inputs: list[Inputs]
    labels: np.ndarray | None
    origin: str
    user_calibration: bool = False  # calibration came from the user (passed on to every technique)


def _npz_samples(path: Path, specs: Any) -> tuple[list[Inputs], np.ndarray | None]:
    from controller.compression.source import load_calibration

    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise InvalidSearchError(f"{path}: not a readable .npz ({exc})") from None
    labels = arrays.pop("labels", None)
    if not arrays:
        raise InvalidSearchError(f"{path}: holds no input arrays")
    n = len(next(iter(arrays.values())))
    samples = load_calibration([{k: v[i:i + 1] for k, v in arrays.items()} for i in range(n)], specs)
    if labels is not None and len(labels) != len(samples):
        raise InvalidSearchError(f"{path}: {len(labels)} labels for {len(samples)} samples")
    return samples, labels


def search_data(source: Any, calibration: Path | str | None = None, eval_data: Path | str | None = None,
                *, eval_limit: int | None = None) -> SearchData:
    """Resolve the data for ``source`` (a ``controller.compression.ModelSource``)."""
    zoo = source.zoo
    if zoo is not None and calibration is None and eval_data is None:
        n = eval_limit or ZOO_EVAL_SAMPLES.get(zoo.name, 200)
        return SearchData(zoo.calibration_inputs(ZOO_CALIBRATION_SAMPLES), zoo.eval_inputs(n), zoo.eval_labels(n),
                          f"zoo {zoo.name}: held-out split ({n} samples)")
    if calibration is None:
        if zoo is None:
            raise InvalidSearchError("an ONNX model needs --calibration F.npz (keys = its input names, samples on "
                                     "axis 0): INT8 calibration and fine-tuning need real inputs")
        calib = zoo.calibration_inputs(ZOO_CALIBRATION_SAMPLES)
        user_calib = False
    else:
        calib, _ = _npz_samples(Path(calibration), source.specs)
        user_calib = True
    if eval_data is not None:
        held, labels = _npz_samples(Path(eval_data), source.specs)
        origin = f"held-out data {Path(eval_data).name} ({len(held)} samples)"
    elif zoo is not None:
        n = eval_limit or ZOO_EVAL_SAMPLES.get(zoo.name, 200)
        held, labels, origin = zoo.eval_inputs(n), zoo.eval_labels(n), f"zoo {zoo.name}: held-out split"
    else:
        held, labels = calib, None
        origin = "calibration data (no held-out set given: quality is measured on the calibration samples)"
    if eval_limit:
        held = held[:eval_limit]
        labels = labels[:eval_limit] if labels is not None else None
    return SearchData(calib, held, labels, origin, user_calibration=user_calib)
