"""Cross-runtime check: the same golden inputs through reference and artifact, compared per output.

Why: converters change outputs silently (layout transposes, FP16 overflow,
INT8 saturation, a fused op with a different epsilon). Nothing ships until its
outputs agree with the reference within the device profile's tolerance, and a
failure reads as a per-output table, not a stack trace. For ONNX artifacts the
check can also expose every intermediate tensor of both graphs and name the
first node whose output diverges (the per-layer drift table), which is where a
quantization or fusion problem must be fixed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from controller.conversion.errors import CrossRuntimeMismatchError

if TYPE_CHECKING:
    from common.profiles import Tolerance
    from controller.conversion.registry import Runner


@dataclass
class OutputCheck:
    """Agreement of one output between reference and artifact over all golden samples."""

    name: str
    artifact_name: str
    shape: list[int]
    max_abs_error: float
    mean_abs_error: float
    cosine: float
    min_cosine: float
    top1_agreement: float | None
    ok: bool = True
    reasons: list[str] = field(default_factory=list)


@dataclass
class LayerDrift:
    """Drift of one intermediate tensor present in both ONNX graphs (reference order)."""

    index: int
    node: str
    op_type: str
    tensor: str
    cosine: float
    max_abs_error: float
    mean_abs_error: float
    artifact_node: str = ""  # producer of the same tensor in the artifact (e.g. the FusedConv that absorbed it)


@dataclass
class CheckReport:
    """Result of one cross-runtime check; ``render()`` gives the human table."""

    target: str
    profile: str
    samples: int
    executed: bool
    outputs: list[OutputCheck] = field(default_factory=list)
    tolerance: dict[str, Any] = field(default_factory=dict)
    quality_metric: str = "cosine"
    structural: dict[str, Any] = field(default_factory=dict)
    drift: list[LayerDrift] | None = None
    first_divergent: LayerDrift | None = None

    @property
    def ok(self) -> bool:
        """True when every output is within tolerance (and structural checks, if any, passed)."""
        return all(o.ok for o in self.outputs) and self.structural.get("ok", True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form stored with the conversion result and the model version's lineage."""
        return asdict(self) | {"ok": self.ok}

    def render(self) -> str:
        """Readable per-output report (and drift table) for logs and error messages."""
        state = "ok" if self.ok else "FAILED"
        lines = [f"cross-runtime check {state}: target={self.target} profile={self.profile} "
                 f"samples={self.samples} tolerance={self.tolerance}"]
        if not self.executed:
            lines.append(f"  artifact not executed on this host; structural checks: {self.structural}")
        lines.append(f"  {'output':<24} {'max_abs':>10} {'mean_abs':>10} {'cosine':>8} {'min_cos':>8} "
                     f"{'top1':>6}  verdict")
        for o in self.outputs:
            top1 = "-" if o.top1_agreement is None else f"{o.top1_agreement:.3f}"
            verdict = "ok" if o.ok else "FAIL: " + "; ".join(o.reasons)
            lines.append(f"  {o.name[:24]:<24} {o.max_abs_error:>10.3g} {o.mean_abs_error:>10.3g} "
                         f"{o.cosine:>8.5f} {o.min_cosine:>8.5f} {top1:>6}  {verdict}")
        if self.drift:
            lines.append(render_drift(self.drift, self.first_divergent))
        return "\n".join(lines)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a2 = a.reshape(a.shape[0], -1).astype(np.float64) if a.ndim else a.reshape(1, 1).astype(np.float64)
    b2 = b.reshape(a2.shape).astype(np.float64)
    num = (a2 * b2).sum(1)
    den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    both_zero = den == 0
    cos = np.where(both_zero, 1.0, num / np.where(both_zero, 1.0, den))
    return np.where(both_zero & (np.abs(a2 - b2).max(1) > 0), 0.0, cos)


def compare_output(name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerance, *,
                   artifact_name: str = "", quality_metric: str = "cosine") -> OutputCheck:
    """Metrics for one output; ``ok`` and ``reasons`` apply the tolerance.

    Cosine is per sample then averaged (what the agent reports as quality);
    top-1 compares argmax over the last axis and is enforced only when the
    model's quality metric is ``top1`` (a classifier).
    """
    reasons: list[str] = []
    if ref.shape != cand.shape:
        if ref.size == cand.size:  # e.g. (1, 10) vs (10,): same data, squeezed by the runtime
            cand = cand.reshape(ref.shape)
        else:
            return OutputCheck(name, artifact_name or name, list(ref.shape), math.inf, math.inf, 0.0, 0.0,
                               None, False, [f"shape {list(cand.shape)} != reference {list(ref.shape)}"])
    ref32, cand32 = ref.astype(np.float64), cand.astype(np.float64)
    err = np.abs(ref32 - cand32)
    finite = bool(np.isfinite(cand32).all())
    cos = _cosines(ref32, cand32)
    top1 = None
    if ref.ndim >= 2 and ref.shape[-1] > 1:
        top1 = float((ref32.argmax(-1) == cand32.argmax(-1)).mean())
    check = OutputCheck(name, artifact_name or name, list(ref.shape), float(err.max(initial=0.0)),
                        float(err.mean()) if err.size else 0.0, float(cos.mean()), float(cos.min()), top1)
    if not finite:
        reasons.append("artifact produced NaN/Inf")
    if check.cosine < tol.min_cosine:
        reasons.append(f"cosine {check.cosine:.5f} < {tol.min_cosine}")
    if quality_metric == "top1" and top1 is not None and top1 < tol.min_top1_agreement:
        reasons.append(f"top-1 agreement {top1:.3f} < {tol.min_top1_agreement}")
    if tol.max_abs_error is not None and check.max_abs_error > tol.max_abs_error:
        reasons.append(f"max abs error {check.max_abs_error:.3g} > {tol.max_abs_error}")
    check.ok, check.reasons = not reasons, reasons
    return check


def run_batched(runner: Runner, golden: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``runner`` one sample at a time (artifacts often have a static batch of 1) and stack."""
    n = len(next(iter(golden.values())))
    per_sample = [runner({k: v[i:i + 1] for k, v in golden.items()}) for i in range(n)]
    return [np.concatenate([s[j] for s in per_sample], axis=0) for j in range(len(per_sample[0]))]


def cross_runtime_check(
    reference: Runner,
    artifact: Runner | None,
    golden: dict[str, np.ndarray],
    tolerance: Tolerance,
    *,
    target: str = "",
    profile: str = "",
    output_names: list[str] | None = None,
    artifact_output_names: list[str] | None = None,
    quality_metric: str = "cosine",
    structural: dict[str, Any] | None = None,
) -> CheckReport:
    """Compare reference and artifact on ``golden``; the report says per output what agrees.

    ``artifact=None`` means the runtime cannot execute here (Core ML on Linux):
    the report then carries only the structural checks and says so.
    """
    n = len(next(iter(golden.values())))
    report = CheckReport(target, profile, n, artifact is not None, tolerance=tolerance.model_dump(),
                         quality_metric=quality_metric, structural=structural or {})
    if artifact is None:
        return report
    ref_out, cand_out = run_batched(reference, golden), run_batched(artifact, golden)
    if len(ref_out) != len(cand_out):
        report.structural = {"ok": False, "error": f"{len(cand_out)} outputs, reference has {len(ref_out)}"}
        return report
    names = output_names or [f"output_{i}" for i in range(len(ref_out))]
    anames = artifact_output_names or names
    report.outputs = [compare_output(names[i], r, c, tolerance, artifact_name=anames[i],
                                     quality_metric=quality_metric)
                      for i, (r, c) in enumerate(zip(ref_out, cand_out, strict=True))]
    return report


def raise_if_failed(report: CheckReport) -> CheckReport:
    """Raise :class:`CrossRuntimeMismatchError` carrying the report when it is not ok."""
    if not report.ok:
        raise CrossRuntimeMismatchError(report)
    return report


# ---- ONNX: runner and per-layer drift -------------------------------------------------------------


def onnx_runner(path: Path | bytes, *, optimize: bool = True, providers: list[str] | None = None) -> Runner:
    """A runner over an ONNX file on ONNX Runtime (the same runtime the agent uses)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path if isinstance(path, bytes) else str(path), opts,
                                providers=providers or ["CPUExecutionProvider"])
    names = {i.name: i.type for i in sess.get_inputs()}

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return sess.run(None, {k: v for k, v in feeds.items() if k in names})

    return run


def _expose_all(path: Path) -> tuple[bytes, list[tuple[str, str, str]]]:
    """The model with every float intermediate tensor added as a graph output, and their producers."""
    import onnx

    model = onnx.load(str(path))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - contrib ops (ORT-optimised graphs) may defeat inference
        inferred = model
    typed = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    existing = {o.name for o in model.graph.output}
    order: list[tuple[str, str, str]] = []
    for node in model.graph.node:
        for out in node.output:
            if not out:
                continue
            order.append((node.name or out, node.op_type, out))
            if out in existing:
                continue
            if out in typed and typed[out].type.tensor_type.elem_type in (1, 10, 11):
                model.graph.output.append(typed[out])
            else:  # type unknown: declare it float and let ORT fill the shape
                model.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString(), order


def _run_exposed(path: Path, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[tuple[str, str, str]]]:
    import onnxruntime as ort

    blob, order = _expose_all(path)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - a wrongly-typed exposed output: drop the guessed ones
        import onnx

        model = onnx.load_from_string(blob)
        keep = [o for o in model.graph.output if o.type.tensor_type.HasField("shape") or o.name in
                {x.name for x in onnx.load(str(path), load_external_data=False).graph.output}]
        del model.graph.output[:]
        model.graph.output.extend(keep)
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    values = sess.run(names, {k: v for k, v in feeds.items() if k in inputs})
    return dict(zip(names, values, strict=True)), order


def layer_drift(reference: Path, candidate: Path, feeds: dict[str, np.ndarray]) -> list[LayerDrift]:
    """Per-layer drift between two ONNX graphs of the same model (e.g. FP32 vs INT8 QDQ, or pre/post fusion).

    Every float intermediate tensor whose name exists in both graphs with the
    same shape is compared, in the reference's topological order. Tensor names
    survive QDQ insertion (the producer keeps its output name) and most ORT
    fusions (a fused node keeps its last output's name), so the overlap covers
    the layers a user can act on. Run on a few samples: it materialises every
    intermediate.
    """
    ref_vals, order = _run_exposed(reference, feeds)
    cand_vals, cand_order = _run_exposed(candidate, feeds)
    producer = {tensor: f"{node} ({op})" for node, op, tensor in cand_order}
    table: list[LayerDrift] = []
    for node, op_type, tensor in order:
        a, b = ref_vals.get(tensor), cand_vals.get(tensor)
        if a is None or b is None or a.shape != b.shape or a.dtype.kind != "f" or b.dtype.kind != "f":
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        err = np.abs(a64 - b64)
        cos = float(_cosines(a64.reshape(1, -1), b64.reshape(1, -1))[0]) if a.size else 1.0
        table.append(LayerDrift(len(table), node, op_type, tensor, cos, float(err.max(initial=0.0)),
                                float(err.mean()) if err.size else 0.0, producer.get(tensor, "")))
    return table


def first_divergent(table: list[LayerDrift], tolerance: Tolerance) -> LayerDrift | None:
    """The first layer (reference order) whose output is outside the tolerance, or None."""
    for row in table:
        if row.cosine < tolerance.min_cosine or (
            tolerance.max_abs_error is not None and row.max_abs_error > tolerance.max_abs_error
        ):
            return row
    return None


def render_drift(table: list[LayerDrift], first: LayerDrift | None = None, limit: int = 40) -> str:
    """The drift table as text: the rows around the first divergent layer and the worst ones."""
    if not table:
        return "  per-layer drift: no common intermediate tensors"
    worst = sorted(table, key=lambda r: r.cosine)[:5]
    start = max(0, (first.index if first else 0) - 3)
    rows = {r.index: r for r in [*table[start:start + limit // 2], *worst]}
    lines = [f"  per-layer drift ({len(table)} common tensors; first divergent: "
             f"{first.node + ' (' + first.op_type + ')' if first else 'none'})",
             f"  {'#':>4} {'node':<36} {'op':<14} {'cosine':>9} {'max_abs':>10}  artifact node"]
    for i in sorted(rows):
        r = rows[i]
        mark = " <== first divergent" if first and r.index == first.index else ""
        lines.append(f"  {r.index:>4} {r.node[:36]:<36} {r.op_type[:14]:<14} {r.cosine:>9.5f} "
                     f"{r.max_abs_error:>10.3g}  {r.artifact_node[:40]}{mark}")
    return "\n".join(lines)
