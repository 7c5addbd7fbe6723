"""Core ML target: torch → ``.mlpackage`` (ML program) with coremltools weight compression.

Weights: ``int8`` (linear symmetric per-channel, ``constexpr_affine_dequantize``),
``palettize`` (k-means look-up table of ``nbits``, ``constexpr_lut_to_dense``) or
``fp16`` (the ML program default). Compute precision FP16 by default: the
Neural Engine computes in FP16 only.

Why structural validation: Core ML predicts only on macOS; on the Linux
controller the check loads the package's spec (which fails on a corrupt
package), verifies the input/output names and shapes match the source, and
counts the compressed-weight ops so "INT8 weights" is proven rather than
assumed. The numeric check runs on a Mac (or on the device) with the same
golden set.
"""

from __future__ import annotations

import platform
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from controller.conversion.errors import ConversionError, UnsupportedOpError
from controller.conversion.registry import Artifact, ConversionContext, Runner, register_converter

if TYPE_CHECKING:
    from common.profiles import DeviceProfile
    from controller.conversion.source import SourceModel

_UNSUPPORTED = re.compile(r"(?:fx node |convert function for op '|Torch `|converting ')(\w+)")
_COMPRESSED_OPS = {"int8": ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"),
                   "palettize": ("constexpr_lut_to_dense",)}


@dataclass(frozen=True)
class CoremlOptions:
    """How to produce the ``.mlpackage``.

    Attributes:
        weights: ``fp16`` (default ML program weights), ``int8`` (linear) or ``palettize`` (LUT).
        nbits: palette size in bits for ``palettize`` (2, 3, 4, 6 or 8).
        compute_precision: ``fp16`` (Neural Engine) or ``fp32`` (CPU/GPU only).
        minimum_deployment_target: iOS release the package needs (iOS17 supports every option here).
        weight_threshold: tensors with fewer elements stay FP16 (biases, tiny layers: no gain, some loss).
    """

    version: int = 1
    weights: Literal["fp16", "int8", "palettize"] = "int8"
    nbits: int = 6
    compute_precision: Literal["fp16", "fp32"] = "fp16"
    minimum_deployment_target: Literal["iOS16", "iOS17", "iOS18"] = "iOS17"
    weight_threshold: int = 2048


def _translate(exc: Exception, module: Any, args: tuple[Any, ...]) -> Exception:
    from controller.conversion.source import locate_torch_op

    text = str(exc)
    m = _UNSUPPORTED.search(text)
    if m and isinstance(exc, NotImplementedError | ValueError | RuntimeError | KeyError):
        return UnsupportedOpError("coreml", m.group(1), locate_torch_op(module, args, m.group(1)), text)
    return ConversionError(f"coreml: coremltools failed: {type(exc).__name__}: {text[:500]}")


def mil_op_histogram(spec: Any) -> dict[str, int]:
    """Op types in every function/block of an ML program spec."""
    ops: Counter[str] = Counter()
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            ops.update(op.type for op in block.operations)
    return dict(ops)


def _feature_shape(feature: Any) -> list[int]:
    arr = feature.type.multiArrayType
    return [int(d) for d in arr.shape]


def validate_mlpackage(path: Path, source: SourceModel, weights: str) -> dict[str, Any]:
    """Structural check (works on Linux): spec loads, I/O names/shapes match, compression ops present."""
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    ins = {f.name: _feature_shape(f) for f in spec.description.input}
    outs = {f.name: _feature_shape(f) for f in spec.description.output}
    problems = []
    for s in source.inputs:
        if s.name not in ins:
            problems.append(f"input {s.name!r} missing (package has {sorted(ins)})")
        elif [d for d in s.shape if isinstance(d, int)] != ins[s.name]:
            problems.append(f"input {s.name!r} shape {ins[s.name]} != source {list(s.shape)}")
    for s in source.outputs:
        if s.name not in outs:
            problems.append(f"output {s.name!r} missing (package has {sorted(outs)})")
        elif outs[s.name] and outs[s.name] != [d for d in s.shape if isinstance(d, int)]:
            problems.append(f"output {s.name!r} shape {outs[s.name]} != source {list(s.shape)}")
    ops = mil_op_histogram(spec)
    compressed = sum(ops.get(op, 0) for op in _COMPRESSED_OPS.get(weights, ()))
    if weights in _COMPRESSED_OPS and compressed == 0:
        problems.append(f"no {weights} compressed weights found ({_COMPRESSED_OPS[weights]})")
    return {"ok": not problems, "problems": problems, "inputs": ins, "outputs": outs,
            "compressed_weight_ops": compressed, "spec_version": spec.specificationVersion, "ops": ops}


def _compress(mlmodel: Any, options: CoremlOptions) -> Any:
    import coremltools.optimize.coreml as cto

    if options.weights == "int8":
        cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                          weight_threshold=options.weight_threshold)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=cfg))
    if options.weights == "palettize":
        if options.nbits not in (1, 2, 3, 4, 6, 8):
            raise ConversionError(f"coreml: palettize nbits must be 1, 2, 3, 4, 6 or 8, got {options.nbits}")
        cfg = cto.OpPalettizerConfig(mode="kmeans", nbits=options.nbits, weight_threshold=options.weight_threshold)
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=cfg))
    return mlmodel


def _rename_io(mlmodel: Any, source: SourceModel) -> Any:
    """Give the package the source's I/O names, so one golden set serves every artifact."""
    import coremltools as ct

    spec = mlmodel.get_spec()
    pairs = [*zip([f.name for f in spec.description.input], source.input_names, strict=False),
             *zip([f.name for f in spec.description.output], source.output_names, strict=False)]
    for old, new in pairs:
        if old != new:
            ct.utils.rename_feature(spec, old, new)
    return ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)


def _mac_runner(path: Path, source: SourceModel) -> Runner | None:
    if platform.system() != "Darwin":
        return None
    import coremltools as ct

    model = ct.models.MLModel(str(path))

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        res = model.predict({k: feeds[k] for k in source.input_names})
        return [np.asarray(res[n]) for n in source.output_names]

    return run


@register_converter("coreml", options=CoremlOptions, needs=("coremltools",))
def convert_coreml(source: SourceModel, profile: DeviceProfile, options: CoremlOptions, out: Path,
                   ctx: ConversionContext) -> Artifact:
    """Convert the torch source to ``out`` (.mlpackage), compress weights, validate structurally."""
    import logging

    logging.getLogger("coremltools").setLevel(logging.ERROR)  # version-support chatter, not errors
    import coremltools as ct
    import torch

    module, args = source.torch_program("coreml")
    if out.suffix != ".mlpackage":
        raise ConversionError(f"coreml: output must end in .mlpackage, got {out.name}")
    kwargs = {"convert_to": "mlprogram",
              "minimum_deployment_target": getattr(ct.target, options.minimum_deployment_target),
              "compute_precision": ct.precision.FLOAT16 if options.compute_precision == "fp16"
              else ct.precision.FLOAT32}
    notes: list[str] = []
    exported = torch.export.export(module, args)
    try:
        # Empty table first: high-level ops (layer_norm, gelu, sdpa) map to fused MIL ops.
        mlmodel = ct.convert(exported.run_decompositions({}), **kwargs)
    except Exception as first:  # noqa: BLE001 - coremltools raises many types on an unsupported op
        err = _translate(first, module, args)
        if not isinstance(err, UnsupportedOpError):
            raise err from first
        try:  # e.g. BERT's aten.new_ones: the core-ATen decompositions lower it to ops coremltools has
            mlmodel = ct.convert(exported.run_decompositions(), **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, module, args) from exc
        notes.append(f"{err.op} unsupported as is; converted after core-ATen decompositions")
    mlmodel = _rename_io(_compress(mlmodel, options), source)
    out.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(out))
    structural = validate_mlpackage(out, source, options.weights)
    runner = _mac_runner(out, source)
    if runner is None:
        notes.append("Core ML prediction needs macOS: validated structurally on this host")
    precision = {"int8": "int8", "palettize": f"lut{options.nbits}"}.get(options.weights, options.compute_precision)
    return Artifact(out, "coreml", precision,
                    [{"name": n, "shape": s} for n, s in structural["inputs"].items()],
                    [{"name": n, "shape": s} for n, s in structural["outputs"].items()],
                    runner=runner, notes=notes, structural=structural)
