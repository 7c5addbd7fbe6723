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


def check_onnx(path: Path, flag: str = "--model") -> None:
    """Raise InvalidModelError unless ``path`` is an ONNX file that passes ``onnx.checker``.

    Messages name the flag, the file, what was expected and what to do: a text file handed over
    as a model used to surface as onnx's "ir_version not set properly".
    """
    import onnx
    from google.protobuf.message import DecodeError

    from controller.onnx_files import missing_external_data

    if not path.is_file():
        raise InvalidModelError(f"{flag} {path}: no such file; expected an .onnx model (or a .zip holding one "
                                "with its weight files)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise InvalidModelError(f"{flag} {path}: not an ONNX model (it does not parse as an ONNX protobuf: "
                                f"{str(exc)[:120]}); export it with torch.onnx.export or pass a zoo name") from None
    if not model.graph.node or model.ir_version <= 0:
        raise InvalidModelError(f"{flag} {path}: not an ONNX model (no graph / no ir_version: is it a text or "
                                "other file renamed .onnx?); export it with torch.onnx.export")
    missing = missing_external_data(path)
    if missing:
        raise InvalidModelError(f"{flag} {path}: the graph keeps its weights in {missing}, which are not beside "
                                "it; put the .onnx and its .data file(s) in one folder (or pass a .zip of both)")
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as exc:  # onnx raises ValidationError, DecodeError, OSError...
        raise InvalidModelError(f"{flag} {path} fails onnx.checker: {str(exc).splitlines()[0][:300]}; re-export "
                                "the model with a current exporter") from None


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
        from controller.compression.config import techniques
        from controller.zoo import ZOO_NAMES

        onnx_ones = ", ".join(name for name, cls in techniques().items() if not cls.needs_torch)
        raise UnsupportedModelError(
            f"--technique {technique}: trains or restructures a torch module; an ONNX file has none. "
            f"Use a zoo model ({', '.join(ZOO_NAMES)}) or pass an nn.Module from Python, or pick a technique that "
            f"works on ONNX files: {onnx_ones}")


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
        raise InvalidModelError(f"--model {model!r} is neither a zoo model ({', '.join(zoo.ZOO_NAMES)}) nor a file")
    if path.suffix.lower() == ".zip":
        from controller.onnx_files import ModelFileError, unpack_model

        if not path.is_file():
            raise InvalidModelError(f"--model {path}: no such file")
        try:
            inner = unpack_model(path, workdir)
        except ModelFileError as exc:
            raise InvalidModelError(f"--model {exc}") from None
        check_onnx(inner)
        return ModelSource(inner, path.stem)
    check_onnx(path)
    return ModelSource(path.resolve(), path.stem)


def load_calibration(source: CalibrationSource, specs: list[InputSpec], limit: int | None = None,
                     flag: str = "--calibration") -> list[Inputs]:
    """Per-sample feed dicts from an ``.npz``, a directory of per-sample ``.npz`` or a list of dicts.

    The contract (rank rule, dtype casting) lives in :mod:`controller.compression.inputs`.
    """
    from controller.compression.inputs import load_samples

    return load_samples(source, specs, limit=limit, flag=flag)


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
