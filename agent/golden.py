"""Golden-set handling: feeding reference inputs to a model and scoring its outputs against references.

The golden set travels with the artifact as an ``.npz`` (loaded with ``allow_pickle=False``:
a device never unpickles data from the network). Keys are ``input:<graph input name>`` and
``output:<graph output name>``, first axis = samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import BenchmarkError
from agent.runtimes import Session
from common.errors import ReasonCode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoldenSet:
    """Reference inputs and outputs, by graph tensor name."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    @property
    def samples(self) -> int:
        """Number of samples (first axis)."""
        return int(next(iter(self.inputs.values())).shape[0])

    def feed(self, session: Session, index: int) -> dict[str, np.ndarray]:
        """Inputs of one sample shaped for the session (batch of 1, or unbatched when the graph has no batch axis)."""
        feeds = {}
        for name in session.input_names:
            arr = self.inputs[name]
            rank = len(session.input_shape(name))
            feeds[name] = arr[index : index + 1] if rank == arr.ndim else arr[index]
        return feeds


def read_golden(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a golden ``.npz`` (never unpickles).

    Raises:
        BenchmarkError: unreadable file or pickled content.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise BenchmarkError(ReasonCode.BENCHMARK_FAILED, f"golden set {path.name} unreadable: {exc}") from exc


def load_golden(path: Path | dict[str, np.ndarray], session: Session) -> GoldenSet:
    """Read (or take already read arrays) and check a golden set against the model's graph.

    Raises:
        BenchmarkError: missing keys, ragged sample counts, or a pickled/unreadable file.
    """
    arrays = read_golden(path) if isinstance(path, Path) else path
    inputs = _match(
        {k.removeprefix("input:"): v for k, v in arrays.items() if k.startswith("input:")}, session.input_names, "input"
    )
    outputs = _match(
        {k.removeprefix("output:"): v for k, v in arrays.items() if k.startswith("output:")},
        session.output_names,
        "output",
    )
    counts = {a.shape[0] for a in [*inputs.values(), *outputs.values()] if a.ndim}
    if len(counts) != 1 or 0 in counts:
        raise BenchmarkError(ReasonCode.BENCHMARK_FAILED, f"golden arrays disagree on sample count: {counts}")
    return GoldenSet(inputs={n: inputs[n] for n in session.input_names}, outputs=outputs)


def _match(arrays: dict[str, np.ndarray], names: list[str], kind: str) -> dict[str, np.ndarray]:
    """Golden arrays keyed by the model's tensor names.

    Names match for ONNX artifacts. A converted model (e.g. ``.tflite``) renames its tensors
    (``serving_default_args_0``); when the counts agree the golden arrays are taken in order,
    which is unambiguous for the usual one-input/one-output model.
    """
    if kind == "input" and all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    if kind == "output" and arrays and all(n in names for n in arrays):
        return arrays
    if len(arrays) == len(names) and arrays:
        log.info("golden %s names %s differ from the model's %s; matching by position", kind, list(arrays), names)
        return dict(zip(names, arrays.values()))
    if kind == "input":
        missing = [n for n in names if n not in arrays]
        raise BenchmarkError(ReasonCode.BENCHMARK_FAILED, f"golden set lacks inputs {missing}; it has {sorted(arrays)}")
    raise BenchmarkError(
        ReasonCode.BENCHMARK_FAILED, f"golden outputs {sorted(arrays)} do not match model outputs {names}"
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0 or not np.isfinite(na * nb):
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _top1(a: np.ndarray, b: np.ndarray) -> float:
    a2 = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    b2 = b.reshape(-1, b.shape[-1]) if b.ndim else b.reshape(1, 1)
    return float(np.mean(a2.argmax(-1) == b2.argmax(-1)))


METRICS = {"cosine": _cosine, "top1": _top1}


def score(golden: GoldenSet, produced: list[dict[str, Any]], metric: str) -> float:
    """Mean agreement over samples and golden outputs (1.0 = identical to the reference).

    Raises:
        BenchmarkError: unknown metric or an output of the wrong size.
    """
    if metric not in METRICS:
        raise BenchmarkError(ReasonCode.BENCHMARK_FAILED, f"unknown quality metric {metric!r}; use {sorted(METRICS)}")
    fn = METRICS[metric]
    scores = []
    for name, ref in golden.outputs.items():
        for i, outs in enumerate(produced):
            got = np.asarray(outs[name])
            if got.size != ref[i].size:
                raise BenchmarkError(
                    ReasonCode.BENCHMARK_FAILED,
                    f"output {name!r} has shape {list(got.shape)}, reference sample has {list(ref[i].shape)}",
                )
            scores.append(fn(got.reshape(ref[i].shape), ref[i]))
    return float(np.mean(scores))
