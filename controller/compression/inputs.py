"""The input contract for calibration and evaluation data of any ONNX model a user brings.

Data is either one ``.npz`` whose keys are the graph's input names with the samples stacked on
axis 0, or a directory holding one ``.npz`` per sample (sorted by file name). Each sample of an
input is then fed to the graph like this:

* its rank already equals the graph input's rank → fed **as is** (recurrent states whose batch
  axis is not axis 0, e.g. ``state`` stored as (N, 2, 1, 128) for a (2, batch, 128) input;
  scalars, e.g. ``sr`` stored as (N,) for a rank-0 input);
* its rank is one less → a batch axis of 1 is added in front (an image stored as (N, 3, 224, 224)
  for a (batch, 3, 224, 224) input — fixed or dynamic batch alike);
* anything else is refused, naming the input, the file, both shapes and how to store it.

Integer and bool inputs (token ids, masks, sample rates) pass through untouched; a dtype of the
same kind (float64 for float32, int32 for int64) is cast, other dtypes are refused.

Why the rank rule: the old "always add a batch axis" contract could not express a stateful audio
model (a (2, 1, 128) state plus an int64 scalar) at all, and batching such samples together
along axis 0 would silently mix states; see ``can_batch``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from controller.compression.errors import CalibrationError

Inputs = dict[str, np.ndarray]
DataSource = str | Path | Sequence[Mapping[str, np.ndarray]]

CONTRACT = ("an .npz whose keys are the model's input names with samples stacked on axis 0, or a directory of "
            "one .npz per sample; a sample whose rank equals the graph input's rank is fed as is (recurrent "
            "states, scalars), otherwise a batch axis of 1 is added")


def _read_npz(path: Path, flag: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise CalibrationError(f"{flag} {path}: not a readable .npz ({str(exc)[:200]}); expected {CONTRACT}") \
            from None


def _check_names(got: set[str], specs: Sequence[Any], where: str) -> None:
    want = {s.name for s in specs}
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        detail = (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else "")
        raise CalibrationError(f"{where}: keys must be the model's input names {sorted(want)}{detail}")


def _raw_samples(source: DataSource, specs: Sequence[Any], flag: str) -> tuple[list[Inputs], str]:
    """Per-sample arrays as stored (no batch axis logic yet) and a label for messages."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix == ".npz")
            if not files:
                raise CalibrationError(f"{flag} {path}: directory holds no .npz files; expected {CONTRACT}")
            samples = []
            for f in files:
                arrays = _read_npz(f, flag)
                _check_names(set(arrays), specs, f"{flag} {f}")
                samples.append(arrays)
            return samples, f"{flag} {path}"
        if not path.exists():
            raise CalibrationError(f"{flag} {path}: no such file; expected {CONTRACT}")
        arrays = _read_npz(path, flag)
        _check_names(set(arrays), specs, f"{flag} {path}")
        scalars = sorted(k for k, v in arrays.items() if v.ndim == 0)
        if scalars:
            raise CalibrationError(f"{flag} {path}: {scalars} stored as a single scalar; store one value per sample "
                                   f"as an array of shape (N,)")
        counts = {k: len(v) for k, v in arrays.items()}
        if len(set(counts.values())) != 1:
            raise CalibrationError(f"{flag} {path}: inputs hold different sample counts on axis 0 {counts}; every "
                                   "array needs the same N (store per-sample states as (N, *state_shape))")
        n = next(iter(counts.values()))
        return [{k: v[i] for k, v in arrays.items()} for i in range(n)], f"{flag} {path}"
    samples = [dict(s) for s in source]
    if not samples:
        raise CalibrationError(f"{flag}: the data holds no samples")
    _check_names(set(samples[0]), specs, f"{flag} sample 0")
    return samples, flag


def feed_form(array: np.ndarray, spec: Any, where: str) -> np.ndarray:
    """One stored sample of one input, shaped and typed the way the graph input takes it."""
    array = np.asarray(array)
    rank = len(spec.shape)
    added = array.ndim == rank - 1
    if added:
        array = array[None]
    elif array.ndim != rank:
        raise CalibrationError(
            f"{where}: input {spec.name!r} sample has shape {array.shape} (rank {array.ndim}); the model input is "
            f"{_shape_text(spec.shape)} (rank {rank}). Store it as (N, *{_shape_text(spec.shape[1:])}) to get a "
            f"batch axis of 1 added, or as (N, *{_shape_text(spec.shape)}) to feed each sample as is")
    for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
        if isinstance(want, int) and want > 0 and got != want:
            hint = (f"; a batch axis of 1 was added to the stored {array.shape[1:]}: to feed each sample as is, "
                    f"store it as (N, *{_shape_text(spec.shape).replace('batch', '1')})") if added else ""
            raise CalibrationError(f"{where}: input {spec.name!r} sample fed as {array.shape}, the model expects "
                                   f"{_shape_text(spec.shape)} (axis {axis} must be {want}){hint}")
    want_dtype = np.dtype(spec.dtype)
    if array.dtype != want_dtype:
        same_kind = (array.dtype.kind in "iu" and want_dtype.kind in "iu") or (
            array.dtype.kind == "f" and want_dtype.kind == "f") or (array.dtype.kind == want_dtype.kind)
        if not same_kind:
            raise CalibrationError(f"{where}: input {spec.name!r} has dtype {array.dtype}, the model expects "
                                   f"{want_dtype.name}; convert it with .astype(np.{want_dtype.name})")
        if want_dtype.kind in "iu" and array.size and not (
                np.iinfo(want_dtype).min <= array.min() and array.max() <= np.iinfo(want_dtype).max):
            raise CalibrationError(f"{where}: input {spec.name!r} values do not fit {want_dtype.name}")
        array = array.astype(want_dtype)
    return array.copy(order="C")  # (np.ascontiguousarray would turn a scalar into shape (1,))


def _shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) and d > 0 else (str(d) if d else "?") for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


def load_samples(source: DataSource, specs: Sequence[Any], *, limit: int | None = None,
                 flag: str = "--calibration") -> list[Inputs]:
    """Per-sample feed dicts from ``source`` under the contract above, validated against ``specs``.

    ``flag`` names where the data came from in every error (``--calibration``, ``--eval``, a REST
    field), so the message tells the user which argument to fix.
    """
    raw, where = _raw_samples(source, specs, flag)
    if limit is not None:
        raw = raw[:limit]
    return [{s.name: feed_form(sample[s.name], s, f"{where} sample {i}") for s in specs}
            for i, sample in enumerate(raw)]


def can_batch(session_inputs: Sequence[Any], sample: Mapping[str, np.ndarray]) -> bool:
    """True when samples may be concatenated on axis 0: every input has a dynamic leading axis of 1.

    A fixed leading dim (a (2, batch, 128) recurrent state) or a scalar input means axis 0 is not
    a batch axis, and concatenating would feed a different model than the one measured.
    """
    for inp in session_inputs:
        shape = list(getattr(inp, "shape", []) or [])
        if not shape or isinstance(shape[0], int):
            return False
        arr = sample.get(inp.name)
        if arr is None or np.ndim(arr) == 0 or np.shape(arr)[0] != 1:
            return False
    return True
