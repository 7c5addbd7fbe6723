"""The model being converted: an ONNX file, a saved ``torch.export`` program, or a live ``nn.Module``.

Why one wrapper: every converter needs the same three things from the source,
whatever form it came in: its input/output signature, a way to run it as the
reference for the cross-runtime check, and a way to reach the representation
the converter consumes (ONNX for ORT/TensorRT; a torch module for litert-torch
and coremltools, which cannot read ONNX). Converting torch → ONNX happens here,
once, with names the golden set can rely on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from controller.conversion.errors import UnsupportedSourceError

log = logging.getLogger(__name__)

_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or a string for a dynamic dimension) and numpy dtype name of one I/O tensor."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for results and manifests."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class SourceModel:
    """A model to convert plus what is known about its signature.

    Build with :func:`load_source`. ``kind`` is ``"onnx"`` (``path`` set) or
    ``"torch"`` (``module`` + ``example_inputs`` set; ``path`` set when loaded
    from a ``.pt2`` file).
    """

    kind: Literal["onnx", "torch"]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    path: Path | None = None
    module: Any = None
    example_inputs: tuple[Any, ...] = ()
    _onnx_cache: dict[str, Path] = field(default_factory=dict, repr=False)

    @property
    def input_names(self) -> list[str]:
        """Input names in positional order."""
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """Output names in positional order."""
        return [t.name for t in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the source itself: the reference every artifact is compared against."""
        if self.kind == "onnx":
            from controller.conversion.check import onnx_runner

            return onnx_runner(self.path)(feeds)  # type: ignore[arg-type]
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]
        with torch.no_grad():
            out = self.module(*args)
        return [t.detach().cpu().numpy() for t in _flatten(out)]

    def torch_program(self, target: str) -> tuple[Any, tuple[Any, ...]]:
        """The torch module and example args, for converters that trace torch (TFLite, Core ML)."""
        if self.kind != "torch":
            raise UnsupportedSourceError(
                f"{target}: needs the torch model (an nn.Module or a torch.export .pt2 file), got ONNX "
                f"{self.path}; ONNX→{target} would need TensorFlow/onnx-tf, which this project does not ship"
            )
        return self.module, self.example_inputs

    def onnx_path(self, workdir: Path, *, opset: int | None = None) -> Path:
        """An ONNX file of the source: the file itself, or a one-time export of the torch module.

        The legacy TorchScript exporter is tried first because its node names
        carry the module path (``/features/3/conv/Conv``), which makes the
        per-layer drift table readable; the dynamo exporter is the fallback.
        """
        if self.kind == "onnx":
            return self.path  # type: ignore[return-value]
        key = f"opset{opset}"
        if key in self._onnx_cache:
            return self._onnx_cache[key]
        import torch

        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / "source.onnx"
        kwargs = {"input_names": self.input_names, "output_names": self.output_names}
        try:
            torch.onnx.export(self.module, self.example_inputs, str(out), dynamo=False,
                              opset_version=opset or 17, do_constant_folding=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any exporter failure: try the other exporter
            log.info("legacy ONNX export failed (%s); trying dynamo exporter", exc)
            torch.onnx.export(self.module, self.example_inputs, str(out), dynamo=True, external_data=False,
                              opset_version=opset or 18, **kwargs)
        self._onnx_cache[key] = out
        return out


def _flatten(out: Any) -> list[Any]:
    import torch
    from torch.utils._pytree import tree_flatten

    if hasattr(out, "to_tuple"):  # transformers ModelOutput
        out = out.to_tuple()
    leaves, _ = tree_flatten(out)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def onnx_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs of an ONNX file (initializer-backed inputs excluded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
        return TensorSpec(v.name, dims, _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)))

    ins = [spec(v) for v in model.graph.input if v.name not in inits]
    return ins, [spec(v) for v in model.graph.output]


def load_source(
    model: Path | str | Any,
    *,
    example_inputs: tuple[Any, ...] | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
) -> SourceModel:
    """Wrap ``model`` (``.onnx`` path, ``.pt2`` path, ``nn.Module`` or a ``SourceModel``).

    Example:
        >>> src = load_source(Path("mobilenetv2.onnx"))  # doctest: +SKIP
        >>> src = load_source(net, example_inputs=(torch.randn(1, 3, 224, 224),), input_names=["input"])
    """
    if isinstance(model, SourceModel):
        return model
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.exists():
            raise UnsupportedSourceError(f"source model {path} does not exist")
        if path.suffix == ".onnx":
            ins, outs = onnx_specs(path)
            return SourceModel("onnx", ins, outs, path=path)
        if path.suffix == ".pt2":
            import torch

            program = torch.export.load(str(path))
            args = example_inputs or getattr(program, "example_inputs", None)
            args = args[0] if isinstance(args, tuple) and len(args) == 2 and isinstance(args[1], dict) else args
            if not args:
                raise UnsupportedSourceError(f"{path}: no example inputs saved; pass example_inputs=")
            src = _torch_source(program.module(), tuple(args), input_names, output_names)
            src.path = path
            return src
        raise UnsupportedSourceError(f"unsupported source {path}: expected .onnx, .pt2 or an nn.Module")
    if example_inputs is None:
        raise UnsupportedSourceError("a torch module needs example_inputs=(tensor, ...) to trace it")
    return _torch_source(model, tuple(example_inputs), input_names, output_names)


def _torch_source(module: Any, args: tuple[Any, ...], input_names: list[str] | None,
                  output_names: list[str] | None) -> SourceModel:
    import torch

    try:
        module.eval()
    except (AttributeError, NotImplementedError):
        pass  # a module from torch.export.load() is already in inference form and refuses eval()
    names = input_names or (["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))])
    if len(names) != len(args):
        raise UnsupportedSourceError(f"{len(names)} input names for {len(args)} example inputs")
    ins = [TensorSpec(n, tuple(a.shape), str(a.numpy().dtype)) for n, a in zip(names, args, strict=True)]
    with torch.no_grad():
        outs = _flatten(module(*args))
    onames = output_names or (["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))])
    if len(onames) != len(outs):
        raise UnsupportedSourceError(f"{len(onames)} output names for {len(outs)} model outputs")
    out_specs = [TensorSpec(n, tuple(t.shape), str(t.detach().numpy().dtype))
                 for n, t in zip(onames, outs, strict=True)]
    return SourceModel("torch", ins, out_specs, module=module, example_inputs=args)


def synth_golden(inputs: list[TensorSpec], n: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic golden inputs from the signature when the caller has no real data.

    Float inputs get N(0, 1); integer inputs that look like masks get ones and
    ``token_type_ids`` zeros; other integer inputs (token ids) get values in
    [0, 1000). Dynamic batch → 1 per sample (samples stack on axis 0); other
    dynamic dims → 16. Real golden data (photos, sentences) should be passed
    instead whenever the caller has it: random inputs under-exercise INT8 ranges.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        dims = [1 if i == 0 and not isinstance(d, int) else (d if isinstance(d, int) and d > 0 else 16)
                for i, d in enumerate(spec.shape)]
        dims[0] = n * (dims[0] if dims else 1)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(dims).astype(dtype)
        elif "mask" in spec.name:
            feeds[spec.name] = np.ones(dims, dtype)
        elif "type" in spec.name:
            feeds[spec.name] = np.zeros(dims, dtype)
        else:
            feeds[spec.name] = rng.integers(0, 1000, dims).astype(dtype)
    return feeds


def locate_torch_op(module: Any, args: tuple[Any, ...], op: str) -> str:
    """The layer holding ``op`` in the exported graph: node name and owning module path.

    Why: backends report an unsupported op by ATen name (``aten.special_bessel_j0``)
    or by fx node name; users fix models by module (``features.3.act``). Falls
    back to the op name when the graph cannot be exported or the op is not found.
    """
    import torch

    short = op.split(".")[1] if op.startswith("aten.") else op.split(".")[0]
    try:
        program = torch.export.export(module, args)
    except Exception:  # noqa: BLE001 - export failure is reported by the caller's own error
        return op
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        if short in (node.name, target) or f".{short}." in f".{target}." or node.name.startswith(short):
            stack = node.meta.get("nn_module_stack") or {}
            path, cls = list(stack.values())[-1] if stack else ("", "")
            owner = f" in module '{path}' ({getattr(cls, '__name__', cls)})" if path else ""
            return f"{node.name}{owner}"
    return op
