"""TFLite target: torch → ``.tflite`` through litert-torch (no TensorFlow), run with ai-edge-litert.

Precisions:
* ``fp32``: straight conversion.
* ``fp16``: FP32 conversion, then ai-edge-quantizer's float-casting recipe stores
  weights as FP16 (half the download; XNNPACK computes in FP16 where the CPU has it).
* ``int8-dynamic``: dynamic-range INT8 (ai-edge-quantizer ``dynamic_wi8_afp32``): INT8
  weights, activations quantized on the fly by the kernels. The fallback for models
  whose activations do not survive full-integer INT8 (transformers: LayerNorm, GELU,
  softmax), at near-INT8 size and most of its speed.
* ``int8``: full-integer static quantization with the PT2E flow (litert-torch's
  XNNPACK-style quantizer, per-channel weights), calibrated on a representative
  dataset; the model's I/O become INT8 with scale/zero-point, which
  :func:`tflite_runner` (and the agent) apply.

Why litert-torch rather than ONNX→TF→TFLite: no TensorFlow dependency, and the
PT2E quantizer sees the torch graph, so per-channel depthwise scales and fused
conv+relu patterns come out right for XNNPACK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from controller.conversion.errors import ConversionError, UnsupportedOpError
from controller.conversion.registry import Artifact, ConversionContext, Runner, register_converter

if TYPE_CHECKING:
    from common.profiles import DeviceProfile
    from controller.conversion.source import SourceModel

_LOWERING = re.compile(r"Lowering not found: (\S+)|(aten\.\w+)(?:\.default)?")


@dataclass(frozen=True)
class TfliteOptions:
    """How to produce the ``.tflite`` artifact.

    Attributes:
        precision: ``fp32``, ``fp16`` (weights), ``int8-dynamic`` (weights, dynamic-range
            kernels) or ``int8`` (full integer, PT2E static).
        per_channel: per-output-channel INT8 weight scales (needed for depthwise convs).
        calibration_samples: at most this many representative samples for INT8.
        num_threads: interpreter threads for the check (the agent uses the profile's cores).
    """

    version: int = 1
    precision: Literal["fp32", "fp16", "int8-dynamic", "int8"] = "fp32"
    per_channel: bool = True
    calibration_samples: int = 64
    num_threads: int = 1


def tflite_runner(path: Path, num_threads: int = 1, input_names: list[str] | None = None) -> Runner:
    """Run a ``.tflite`` with ai-edge-litert, feeding inputs positionally through the default signature.

    Quantized (INT8/UINT8) I/O tensors are quantized / dequantized with their
    scale and zero point, so callers always feed and receive float32 (and
    integer token ids are cast to the tensor's int type).
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=num_threads)
    runner = interp.get_signature_runner()
    in_details = runner.get_input_details()
    out_details = runner.get_output_details()
    in_names = sorted(in_details, key=_arg_index)
    out_names = sorted(out_details, key=_arg_index)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = {}
        values = [feeds[n] for n in input_names] if input_names else list(feeds.values())
        for name, value in zip(in_names, values, strict=True):
            d = in_details[name]
            scale, zero = d["quantization"]
            if scale and np.issubdtype(d["dtype"], np.integer) and value.dtype.kind == "f":
                info = np.iinfo(d["dtype"])
                value = np.clip(np.round(value / scale) + zero, info.min, info.max)
            args[name] = np.asarray(value).astype(d["dtype"])
        res = runner(**args)
        outs = []
        for name in out_names:
            d, v = out_details[name], res[name]
            scale, zero = d["quantization"]
            outs.append((v.astype(np.float32) - zero) * scale if scale else v)
        return outs

    return run


def _arg_index(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else 0, name)


def _translate(exc: Exception, module: Any, args: tuple[Any, ...]) -> Exception:
    from controller.conversion.source import locate_torch_op

    text = str(exc)
    m = _LOWERING.search(text)
    if m:
        op = (m.group(1) or m.group(2)).removesuffix(".default")
        return UnsupportedOpError("tflite", op, locate_torch_op(module, args, op), text)
    return ConversionError(f"tflite: litert-torch failed: {type(exc).__name__}: {text[:500]}")


def _quantize_int8(module: Any, args: tuple[Any, ...], options: TfliteOptions,
                   calibration: list[dict[str, np.ndarray]], names: list[str]) -> tuple[Any, Any]:
    import torch
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = pq.PT2EQuantizer().set_global(
        pq.get_symmetric_quantization_config(is_per_channel=options.per_channel, is_dynamic=False))
    graph = torch.export.export(module, args).module()
    graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for sample in calibration[: options.calibration_samples]:
            graph(*[torch.from_numpy(np.ascontiguousarray(sample[n])) for n in names])
    graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
    return graph, QuantConfig(pt2e_quantizer=quantizer)


def _dynamic_int8(src: Path, dst: Path) -> None:
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(src), recipe.dynamic_wi8_afp32())
    qt.quantize().export_model(str(dst), overwrite=True)


def _fp16_weights(src: Path, dst: Path) -> None:
    from ai_edge_quantizer import qtyping, quantizer

    qt = quantizer.Quantizer(str(src))
    qt.update_quantization_recipe(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
    qt.quantize().export_model(str(dst), overwrite=True)


@register_converter("tflite", options=TfliteOptions, needs=("litert_torch", "ai_edge_litert"))
def convert_tflite(source: SourceModel, profile: DeviceProfile, options: TfliteOptions, out: Path,
                   ctx: ConversionContext) -> Artifact:
    """Convert the torch source to ``out`` (.tflite) at ``options.precision``."""
    import litert_torch

    module, args = source.torch_program("tflite")
    out.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    try:
        if options.precision == "int8":
            if not ctx.calibration:
                raise ConversionError("tflite: int8 needs a representative dataset (calibration=)")
            graph, qcfg = _quantize_int8(module, args, options, ctx.calibration, source.input_names)
            edge = litert_torch.convert(graph, args, quant_config=qcfg)
            notes.append(f"PT2E static INT8, {min(len(ctx.calibration), options.calibration_samples)} "
                         f"calibration samples, per_channel={options.per_channel}")
        else:
            edge = litert_torch.convert(module, args)
    except (ConversionError, UnsupportedOpError):
        raise
    except Exception as exc:  # noqa: BLE001 - litert-torch raises AssertionError/RuntimeError/... on lowering
        raise _translate(exc, module, args) from exc
    if options.precision in ("fp16", "int8-dynamic"):
        fp32 = ctx.workdir / "fp32.tflite"
        edge.export(str(fp32))
        if options.precision == "fp16":
            _fp16_weights(fp32, out)
            notes.append("FP16 weights via ai-edge-quantizer float casting")
        else:
            _dynamic_int8(fp32, out)
            notes.append("dynamic-range INT8 via ai-edge-quantizer dynamic_wi8_afp32")
    else:
        edge.export(str(out))
    runner = tflite_runner(out, options.num_threads, source.input_names)
    ops = _op_histogram(out)
    inputs = [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in source.inputs]
    return Artifact(out, "tflite", options.precision, inputs,
                    [{"name": s.name, "shape": list(s.shape), "dtype": "float32"} for s in source.outputs],
                    runner=runner, notes=notes, structural={"ops": ops})


def _op_histogram(path: Path) -> dict[str, int]:
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    return dict(Counter(d["op_name"] for d in interp._get_ops_details()))  # noqa: SLF001 - only public op list
