"""Mixed precision: per-layer sensitivity of static INT8, then float fallback until a quality target is met.

1. Quantise everything (``int8-static``) and measure, per quantised node, the local signal-to-
   quantisation-noise ratio (SQNR, dB) of its activation input (QDQ output vs the tensor entering
   the QuantizeLinear, on a few calibration samples) and of its weight (dequantised INT8 vs FP32).
   A node's sensitivity is the lower of the two: low SQNR = the 8-bit grid fits its data badly.
2. Walk down that ranking, falling back the k most sensitive nodes (k = 0, 1, 2, 4, 8, …) and
   re-measuring real quality on a validation split (calibration-disjoint for the zoo, never the
   held-out evaluation data) until ``quality_target`` is reached. Nodes with a weight fall back to
   *weight-only INT8* (float activations, size kept) unless ``fallback="float"``.
3. Output the model and the per-layer table (node, op, SQNRs, chosen precision). If the target
   cannot be reached within ``max_fallback`` nodes the best model is written and the report says
   ``target_met: false`` with a warning — never silently.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from controller.compression.config import CompressionConfig, TechniqueFamily, check_range, register_handler
from controller.compression.source import Inputs, ModelSource


@dataclasses.dataclass(frozen=True)
class MixedPrecisionConfig(CompressionConfig):
    """INT8 with per-layer fallback.

    Attributes:
        quality_target: mean cosine (embeddings) or top-1 agreement (classifiers) vs FP32 on validation data.
        calibration_samples: samples for calibration.
        validation_samples: samples used to check the target while choosing fallbacks.
        max_fallback: most nodes allowed out of INT8.
        fallback: ``weight-only`` (INT8 weights, float activations) or ``float`` (FP32 node).
        calibration_method: as in ``int8-static``.
    """

    technique: ClassVar[str] = "mixed"
    speed_guarded: ClassVar[bool] = True
    family: ClassVar[TechniqueFamily] = TechniqueFamily.QUANTIZE
    quality_target: float = 0.99
    calibration_samples: int = 64
    validation_samples: int = 64
    max_fallback: int = 32
    fallback: Literal["weight-only", "float"] = "weight-only"
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    version: int = 1

    def _validate(self) -> None:
        check_range("quality_target", self.quality_target, 0.0, 1.0)
        check_range("calibration_samples", self.calibration_samples, 1, 100_000)
        check_range("validation_samples", self.validation_samples, 1, 100_000)
        check_range("max_fallback", self.max_fallback, 0, 10_000)


def _sqnr_db(ref: np.ndarray, noisy: np.ndarray) -> float:
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    noise = float(np.sum((ref.astype(np.float64) - noisy.astype(np.float64)) ** 2))
    if noise == 0:
        return 200.0
    return 10.0 * np.log10(max(signal, 1e-30) / noise)


def sensitivity_table(qdq_path: Path, float_path: Path, samples: list[Inputs], workdir: Path) -> list[dict[str, Any]]:
    """Per quantised node: activation-input SQNR, weight SQNR and their minimum (ascending = most sensitive)."""
    import onnx
    from onnx import helper, numpy_helper


    model = onnx.load(str(qdq_path))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    float_inits = {i.name: i for i in onnx.load(str(float_path)).graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    rows, probes = [], {}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        act, weight = [], []
        for name in node.input:
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            src = dq.input[0]
            if src in inits:  # weight: dequantise offline and compare with the float weight it replaced
                q = inits[src].astype(np.float32)
                scale = inits[dq.input[1]]
                zp = inits[dq.input[2]].astype(np.float32) if len(dq.input) > 2 and dq.input[2] in inits else 0.0
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
                shape = [1] * q.ndim
                if np.ndim(scale):
                    shape[axis] = -1
                deq = (q - np.reshape(zp, shape)) * np.reshape(scale, shape)
                float_name = src.removesuffix("_quantized")
                if float_name not in float_inits:
                    continue
                weight.append(_sqnr_db(numpy_helper.to_array(float_inits[float_name]).astype(np.float32), deq))
            else:
                q_node = producer.get(src)
                if q_node is not None and q_node.op_type == "QuantizeLinear" and q_node.input[1] in inits:
                    scale = float(np.asarray(inits[q_node.input[1]]).reshape(-1)[0])
                    zp = inits.get(q_node.input[2]) if len(q_node.input) > 2 else None
                    zp = zp if zp is not None else np.zeros(1, np.uint8)
                    info = np.iinfo(zp.dtype)
                    rng = ((info.min - float(zp.reshape(-1)[0])) * scale, (info.max - float(zp.reshape(-1)[0])) * scale)
                    probes[(node.name, name)] = (q_node.input[0], name)
                    act.append((q_node.input[0], name, rng))
        if act or weight:
            rows.append({"node": node.name, "op": node.op_type, "weight_sqnr_db": min(weight) if weight else None,
                         "_act": act, "has_weight": bool(weight)})
    wanted = sorted({t for pair in probes.values() for t in pair})
    existing = {o.name for o in graph.output}
    graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in wanted
                        if t not in existing)
    probe_path = workdir / "sensitivity-probe.onnx"
    onnx.save(model, str(probe_path))
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # fusions would alter probes
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(probe_path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    sums: dict[str, list[np.ndarray]] = {t: [] for t in wanted}
    for sample in samples:
        values = dict(zip(names, sess.run(None, sample), strict=True))
        for t in wanted:
            sums[t].append(np.asarray(values[t], np.float32).ravel())
    for row in rows:
        # the float side is clamped to the Q range: ORT folds ReLU/ReLU6 into that clamp, which is not noise
        act_db = [_sqnr_db(np.clip(np.concatenate(sums[a]), *rng), np.concatenate(sums[b]))
                  for a, b, rng in row.pop("_act")]
        row["activation_sqnr_db"] = min(act_db) if act_db else None
        scores = [v for v in (row["activation_sqnr_db"], row["weight_sqnr_db"]) if v is not None]
        row["sensitivity_sqnr_db"] = min(scores)
    return sorted(rows, key=lambda r: r["sensitivity_sqnr_db"])


def _quality(reference: Path, candidate: Path, samples: list[Inputs], metric: str) -> float:
    from controller.evaluation import agreement, quality_score, run_all, session

    return quality_score(agreement(run_all(session(reference, 2), samples), run_all(session(candidate, 2), samples),
                                   metric), metric)


@register_handler(MixedPrecisionConfig)
def mixed(source: ModelSource, config: MixedPrecisionConfig, ctx: Any) -> dict[str, Any]:  # noqa: C901
    """Rank nodes by INT8 sensitivity and fall back the worst until the quality target holds."""
    import shutil

    from controller.compression.int8_static import Int8StaticConfig, quantize_qdq
    from controller.compression.speed_guard import NOT_SLOWER, latency_ratio
    from controller.evaluation.metrics import higher_is_better

    n_cal = config.calibration_samples
    pool = ctx.calibration(n_cal + config.validation_samples)
    calib, validation = (pool[:n_cal], pool[n_cal:]) if len(pool) > n_cal + 4 else (pool, pool)
    if validation is calib:
        ctx.warn("not enough calibration data for a separate validation split: the target is checked on the "
                 "calibration samples themselves")
    metric = ctx.quality_metric
    better = higher_is_better(metric)
    base = Int8StaticConfig(calibration_samples=len(calib), calibration_method=config.calibration_method)
    full = ctx.workdir / "mixed-0.onnx"
    ctx.progress(0.05, "quantising every layer")
    quantize_qdq(source.onnx_path, full, calib, base, ctx.workdir, lambda f, m: None)
    ctx.progress(0.25, "measuring per-layer sensitivity")
    table = sensitivity_table(full, ctx.workdir / "preprocessed.onnx", calib[:8], ctx.workdir)
    tried: list[dict[str, Any]] = []
    best: tuple[float, int, Path] | None = None
    k, step = 0, 0
    while True:
        path = _candidate(source, config, base, table, k, calib, ctx, full)
        quality = _quality(source.onnx_path, path, validation, metric)
        speed = latency_ratio(source.onnx_path, path, calib)
        not_slower = speed <= NOT_SLOWER
        tried.append({"fallback_nodes": k, "validation_quality": quality, "latency_ratio": round(speed, 3),
                      "not_slower": not_slower})
        ctx.progress(0.3 + 0.6 * min(1.0, step / 7),
                     f"{k} node(s) in higher precision: quality {quality:.4f}, {speed:.2f}x FP32 latency")
        improves = best is None or (quality > best[0] + 1e-9 if better else quality < best[0] - 1e-9)
        if not_slower and improves:
            best = (quality, k, path)
        meets = quality >= config.quality_target if better else quality <= config.quality_target
        if (not_slower and meets) or k >= min(config.max_fallback, len(table)):
            break
        if k and not not_slower:  # more float layers only add Q/DQ boundaries: stop before getting slower still
            break
        k = min(max(1, 2 * k), config.max_fallback, len(table))
        step += 1
    if best is None:  # even full INT8 is slower than FP32: the engine's speed guard decides what ships
        best = (tried[0]["validation_quality"], 0, full)
        ctx.warn(f"every mixed-precision candidate was slower than FP32 on this host (full INT8 "
                 f"{tried[0]['latency_ratio']:.2f}x)")
    quality, k, path = best
    shutil.copy(path, ctx.output)
    fallback_kind = {r["node"]: _fallback_kind(r, config) for r in table[:k]}
    for row in table:
        row["precision"] = fallback_kind.get(row["node"], "int8")
    met = quality >= config.quality_target if better else quality <= config.quality_target
    if not met:
        ctx.warn(f"quality target {config.quality_target} not reached without being slower than FP32: best "
                 f"{quality:.4f} with {k} node(s) out of INT8 (max_fallback={config.max_fallback}); the model "
                 "written is that best one")
    return {"quality_target": config.quality_target, "target_met": met, "validation_quality": quality,
            "metric": metric, "fallback_nodes": k, "search": tried, "per_layer": table,
            "speed_rule": "a layer goes back to higher precision only while the model stays no slower than FP32"}


def _fallback_kind(row: dict[str, Any], config: MixedPrecisionConfig) -> str:
    weight_only = config.fallback == "weight-only" and row["has_weight"] and row["op"] in ("MatMul", "Gemm", "Conv")
    return "weight-only" if weight_only else "float"


def _candidate(source: ModelSource, config: MixedPrecisionConfig, base: Any, table: list[dict[str, Any]], k: int,
               calib: list[Inputs], ctx: Any, full: Path) -> Path:
    """The INT8 model with the ``k`` most sensitive nodes in higher precision."""
    from controller.compression.int8_static import quantize_qdq

    if not k:
        return full
    chosen = table[:k]
    weight_only = tuple(r["node"] for r in chosen if _fallback_kind(r, config) == "weight-only")
    exclude = tuple(r["node"] for r in chosen if r["node"] not in weight_only)
    cfg = dataclasses.replace(base, weight_only_nodes=weight_only, exclude_nodes=exclude)
    path = ctx.workdir / f"mixed-{k}.onnx"
    quantize_qdq(source.onnx_path, path, calib, cfg, ctx.workdir, lambda f, m: None)
    return path
