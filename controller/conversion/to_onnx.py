"""ONNX target: offline ONNX Runtime graph optimisation saved to file (operator fusion).

Why offline: a Raspberry Pi or RISC-V board should not spend its start-up time
(and RAM) fusing Conv+BN+ReLU, GELU, LayerNorm and attention subgraphs on every
load; the controller does it once and ships the fused graph, which the agent
loads with optimisation disabled-or-cheap. Level ``extended`` is the default
because its fused ops (``com.microsoft`` contrib ops: FusedConv, Gelu,
SkipLayerNormalization, Attention, QLinear*) exist in every ORT CPU build on
every arch; level ``all`` adds layout transforms (NCHWc) that depend on the
*build host's* CPU, so it is only used when the profile's arch matches this
host (ORT's own guidance for offline optimisation).

Also: opset conversion (``onnx.version_converter``) for devices pinned to an
older ORT, optional ``onnxslim`` (constant folding / dead-node removal),
and external data for large initializers (the 2 GB protobuf limit).
"""

from __future__ import annotations

import logging
import platform
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from controller.conversion.errors import ConversionError, MissingDependencyError, UnsupportedOpError
from controller.conversion.registry import Artifact, ConversionContext, register_converter

if TYPE_CHECKING:
    from common.profiles import DeviceProfile
    from controller.conversion.source import SourceModel

log = logging.getLogger(__name__)

_ORT_NOT_IMPLEMENTED = re.compile(r"implementation for (\w+)\((\d+)\) node with name '([^']*)'")
_ORT_NO_OP = re.compile(r"(?:No Op registered for|op_type=)\s*(\w+).*?(?:node name:|Node \()\s*'?([^')\s]*)", re.S)
_KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.ms.internal.nhwc"}
_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


@dataclass(frozen=True)
class OnnxOptions:
    """How to produce the ONNX artifact.

    Attributes:
        optimization: ORT graph optimisation level baked into the file
            (``none``, ``basic``, ``extended``, ``all``; ``all`` only for a profile of this host's arch).
        opset: convert the default domain to this opset first (None keeps the source's).
        slim: run ``onnxslim`` before ORT optimisation (needs the ``onnxslim`` package).
        external_data_threshold_mb: save initializers to a ``.data`` file beside the
            model when their total size exceeds this (protobuf cannot hold > 2 GB).
    """

    version: int = 1
    optimization: Literal["none", "basic", "extended", "all"] = "extended"
    opset: int | None = None
    slim: bool = False
    external_data_threshold_mb: float = 1024.0


def check_onnx_ops(model: Any, target: str, allowed_domains: set[str] | None = None) -> None:
    """Fail before any runtime does when a node's op has no schema: name the op and the node.

    Why: ORT reports an unknown op only when a session is created, with the
    node name buried in a long message; this names it up front, for every target.
    """
    import onnx

    domains = _KNOWN_DOMAINS if allowed_domains is None else allowed_domains
    opsets = {o.domain: o.version for o in model.opset_import}
    local = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        if (node.domain, node.op_type) in local:
            continue
        if node.domain not in domains:
            raise UnsupportedOpError(target, f"{node.domain}:{node.op_type}", node.name or node.output[0],
                                     f"domain {node.domain!r} is not available on the device runtime")
        if node.domain in ("", "ai.onnx", "ai.onnx.ml"):
            try:
                onnx.defs.get_schema(node.op_type, opsets.get(node.domain, 1), node.domain)
            except onnx.defs.SchemaError as exc:
                raise UnsupportedOpError(target, node.op_type, node.name or node.output[0],
                                         f"not an ONNX op at opset {opsets.get(node.domain)}") from exc


def detect_precision(model: Any) -> str:
    """``int8`` for a QDQ / QLinear model, ``fp16`` when most weights are half, else ``fp32``."""
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
              "ConvInteger", "DynamicQuantizeLinear", "MatMulNBits"}:
        return "int8"
    dtypes = Counter(i.data_type for i in model.graph.initializer)
    return "fp16" if dtypes.get(10, 0) > dtypes.get(1, 0) else "fp32"


def _ort_level(name: str) -> Any:
    import onnxruntime as ort

    return {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[name]


def translate_ort_error(exc: Exception, target: str) -> Exception:
    """Turn an ORT load/optimisation failure into an :class:`UnsupportedOpError` naming op and node."""
    text = str(exc)
    m = _ORT_NOT_IMPLEMENTED.search(text)
    if m:
        return UnsupportedOpError(target, f"{m.group(1)}(opset {m.group(2)})", m.group(3),
                                  "no ONNX Runtime kernel for this op/type on the CPU provider")
    m = _ORT_NO_OP.search(text)
    if m:
        return UnsupportedOpError(target, m.group(1), m.group(2) or "?", text)
    return ConversionError(f"{target}: ONNX Runtime could not load the model: {text[:500]}")


def ort_optimize(src: Path, dst: Path, level: str, *, external_threshold_mb: float) -> None:
    """Let ORT optimise ``src`` at ``level`` and write the optimised graph to ``dst``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = _ort_level(level)
    opts.optimized_model_filepath = str(dst)
    size_mb = sum(p.stat().st_size for p in src.parent.glob(src.name + "*")) / 2**20
    if size_mb > external_threshold_mb:
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", dst.name + ".data")
        opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    try:
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated exception types
        raise translate_ort_error(exc, "onnx") from exc


def prepare_onnx(source: SourceModel, workdir: Path, options: OnnxOptions, target: str) -> tuple[Any, Path]:
    """Load (or export) the source ONNX, check its ops, convert opset, slim, and save to ``workdir``."""
    import onnx

    src = source.onnx_path(workdir, opset=options.opset)
    model = onnx.load(str(src))
    check_onnx_ops(model, target)
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if options.opset and current and current != options.opset:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, options.opset)
        except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError/ValueError variants
            m = re.search(r"No Adapter (?:From|To) Version \$?(\d+) for (\w+)", str(exc))
            why = f"no opset adapter for {m.group(2)} (version {m.group(1)})" if m else str(exc)[:300]
            raise ConversionError(f"{target}: cannot convert opset {current} -> {options.opset}: {why}; "
                                  "re-export the model from torch at that opset instead") from exc
    if options.slim:
        try:
            import onnxslim
        except ImportError as exc:
            raise MissingDependencyError("onnx: slim=True needs the 'onnxslim' package (pip install onnxslim)") from exc
        model = onnxslim.slim(model)
    work = workdir / "prepared.onnx"
    big = model.ByteSize() > options.external_data_threshold_mb * 2**20
    onnx.save(model, str(work), save_as_external_data=big, location=work.name + ".data" if big else None)
    return model, work


@register_converter("onnx", options=OnnxOptions, needs=("onnx", "onnxruntime"))
def convert_onnx(source: SourceModel, profile: DeviceProfile, options: OnnxOptions, out: Path,
                 ctx: ConversionContext) -> Artifact:
    """Produce an ORT-optimised ONNX file for ``profile`` (see module docstring for the choices)."""
    import onnx

    from controller.conversion.check import onnx_runner
    from controller.conversion.source import onnx_specs

    model, work = prepare_onnx(source, ctx.workdir, options, "onnx")
    level = options.optimization
    host = _HOST_ARCH.get(platform.machine().lower())
    notes: list[str] = []
    if level == "all" and host != profile.arch:
        notes.append(f"optimization 'all' bakes {host} layouts; used 'extended' for {profile.arch}")
        level = "extended"
    out.parent.mkdir(parents=True, exist_ok=True)
    if level == "none":
        shutil.copy(work, out)
        if (work.parent / (work.name + ".data")).exists():
            shutil.copy(work.parent / (work.name + ".data"), out.parent / (work.name + ".data"))
    else:
        ort_optimize(work, out, level, external_threshold_mb=options.external_data_threshold_mb)
    optimised = onnx.load(str(out), load_external_data=False)
    before = Counter(n.op_type for n in model.graph.node)
    after = Counter(n.op_type for n in optimised.graph.node)
    fused = {k: v for k, v in (after - before).items()}
    notes.append(f"ORT {level}: {sum(before.values())} -> {sum(after.values())} nodes; new fused ops {fused}")
    ins, outs = onnx_specs(out)
    extra = [p for p in out.parent.glob(out.name + ".data")]
    return Artifact(out, "onnx", detect_precision(optimised), [t.to_dict() for t in ins],
                    [t.to_dict() for t in outs], runner=onnx_runner(out), extra_files=extra, notes=notes,
                    structural={"nodes_before": sum(before.values()), "nodes_after": sum(after.values()),
                                "fused_ops": fused, "optimization": level})
