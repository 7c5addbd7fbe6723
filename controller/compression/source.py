"""What ``compress`` works on: a resolved model (zoo name, ONNX file or torch module) and its data.

User ONNX files get their input names, dtypes and shapes discovered from the graph; calibration
data comes from a ``.npz`` whose keys are those input names (arrays stacked along the batch axis)
and is checked name by name, dtype by dtype and dim by dim before any technique sees it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from controller.compression.errors import CalibrationError, InvalidModelError, UnsupportedModelError

Inputs = dict[str, np.ndarray]
CalibrationSource = str | Path | Sequence[Mapping[str, np.ndarray]]

_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
                10: np.float16, 11: np.float64}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One graph input: name, numpy dtype and shape (``None`` or a string for a dynamic dim)."""

    name: str
    dtype: Any
    shape: tuple[int | str | None, ...]

    def check(self, array: np.ndarray, where: str) -> None:
        """Raise CalibrationError when ``array`` cannot be fed to this input."""
        if array.dtype != self.dtype:
            raise CalibrationError(f"{where}: input {self.name!r} has dtype {array.dtype}, the model expects "
                                   f"{np.dtype(self.dtype).name}")
        if array.ndim != len(self.shape):
            raise CalibrationError(f"{where}: input {self.name!r} has shape {array.shape}, the model expects rank "
                                   f"{len(self.shape)} {self.shape}")
        for axis, (got, want) in enumerate(zip(array.shape, self.shape, strict=True)):
            if isinstance(want, int) and want > 0 and axis > 0 and got != want:
                raise CalibrationError(f"{where}: input {self.name!r} has shape {array.shape}, the model expects "
                                       f"{self.shape} (axis {axis})")


def input_specs(onnx_path: Path) -> list[InputSpec]:
    """Graph inputs that are not initializers, with dtypes and shapes."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tensor = inp.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        specs.append(InputSpec(inp.name, _ONNX_DTYPES.get(tensor.elem_type, np.float32), dims))
    return specs


def check_onnx(path: Path) -> None:
    """Raise InvalidModelError unless ``path`` is an ONNX file that passes ``onnx.checker``."""
    import onnx

    if not path.exists():
        raise InvalidModelError(f"model file {path} does not exist")
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as exc:  # onnx raises ValidationError, DecodeError, OSError...
        kind = "is not an ONNX model" if "pars" in str(exc).lower() or "decode" in str(exc).lower() else \
            "fails onnx.checker"
        raise InvalidModelError(f"{path} {kind}: {str(exc).splitlines()[0][:300]}") from None


@dataclasses.dataclass
class ModelSource:
    """A resolved model: the FP32 ONNX plus, where known, the zoo entry and torch module."""

    onnx_path: Path
    name: str
    zoo: Any = None  # controller.zoo.ZooModel
    torch_module: Any = None
    example_inputs: tuple[Any, ...] | None = None

    @property
    def specs(self) -> list[InputSpec]:
        """Graph input specs of the FP32 model."""
        return input_specs(self.onnx_path)

    @property
    def quality_metric(self) -> str:
        """``cosine`` or ``top1``: the zoo's choice, else top1 for a 2-D float output, else cosine."""
        if self.zoo is not None:
            return self.zoo.quality_metric
        return "cosine"

    def torch_model(self, technique: str) -> Any:
        """A fresh torch module to train/prune, or UnsupportedModelError for plain ONNX files."""
        import copy

        if self.zoo is not None:
            return self.zoo.torch_model()
        if self.torch_module is not None:
            return copy.deepcopy(self.torch_module).eval()
        from controller.zoo import ZOO_NAMES

        raise UnsupportedModelError(
            f"technique {technique!r} trains or restructures a torch module; an ONNX file has none. "
            f"Use a zoo model ({', '.join(ZOO_NAMES)}) or pass an nn.Module, or pick an ONNX technique "
            "(int8-static, int8-dynamic, int4-weight, fp16, mixed, prune-unstructured, svd)")


def resolve_model(model: Any, workdir: Path) -> ModelSource:
    """Turn a zoo name, ONNX path, ZooModel or ``(nn.Module, example_inputs)`` into a ModelSource."""
    from controller import zoo

    if isinstance(model, zoo.ZooModel):
        return ModelSource(model.onnx_path, model.name, zoo=model)
    if isinstance(model, str) and model in zoo.ZOO_NAMES:
        entry = zoo.load(model)
        return ModelSource(entry.onnx_path, entry.name, zoo=entry)
    if isinstance(model, tuple) and len(model) == 2 and hasattr(model[0], "state_dict"):
        from controller.zoo.export import export_onnx

        module, example = model
        example = tuple(example) if isinstance(example, list | tuple) else (example,)
        names = [f"input{i}" if len(example) > 1 else "input" for i in range(len(example))]
        path = export_onnx(module, example, workdir / "fp32.onnx", input_names=names, output_names=["output"],
                           dynamic_axes={n: {0: "batch"} for n in [*names, "output"]})
        return ModelSource(path, type(module).__name__, torch_module=module, example_inputs=example)
    path = Path(model)
    if path.suffix in (".pt", ".pth"):
        raise InvalidModelError(f"{path}: a torch checkpoint has no architecture; pass (nn.Module, example_inputs) "
                                "or export it to ONNX first")
    if not path.exists() and isinstance(model, str) and "/" not in model and not path.suffix:
        raise InvalidModelError(f"{model!r} is neither a zoo model ({', '.join(zoo.ZOO_NAMES)}) nor a file")
    check_onnx(path)
    return ModelSource(path.resolve(), path.stem)


def load_calibration(source: CalibrationSource, specs: list[InputSpec], limit: int | None = None) -> list[Inputs]:
    """Per-sample input dicts (batch 1) from a ``.npz`` or a list of dicts, validated against ``specs``."""
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"{path}: not a readable .npz ({exc})") from None
        _check_names(set(arrays), specs, str(path))
        counts = {k: len(v) for k, v in arrays.items() if v.ndim > 0}
        if len(set(counts.values())) != 1:
            raise CalibrationError(f"{path}: arrays have different sample counts {counts}")
        n = next(iter(counts.values()))
        samples = [{s.name: arrays[s.name][i : i + 1] for s in specs} for i in range(n)]
    else:
        samples = [dict(s) for s in source]
        if not samples:
            raise CalibrationError("calibration data is empty")
        _check_names(set(samples[0]), specs, "calibration sample 0")
    if limit is not None:
        samples = samples[:limit]
    for i, sample in enumerate(samples):
        for spec in specs:
            spec.check(np.asarray(sample[spec.name]), f"calibration sample {i}")
    return samples


def _check_names(got: set[str], specs: list[InputSpec], where: str) -> None:
    want = {s.name for s in specs}
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        detail = (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else "")
        raise CalibrationError(f"{where}: keys must be the model's input names {sorted(want)}{detail}")


def synthetic_inputs(specs: list[InputSpec], n: int, seed: int = 0) -> list[Inputs]:
    """Random inputs matching ``specs`` (dynamic dims → 1): used only to *run* a model, never to judge it."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        sample = {}
        for s in specs:
            shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in s.shape)
            if np.issubdtype(s.dtype, np.floating):
                sample[s.name] = rng.standard_normal(shape).astype(s.dtype)
            else:
                sample[s.name] = rng.integers(0, 2, shape).astype(s.dtype)
        out.append(sample)
    return out
