"""Build tiny real ONNX models, golden sets and signed manifests for agent tests (test-side only: uses onnx)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common.grant import grant_for
from common.manifest import Manifest, Thresholds, sha256_file
from common.messages import Desired
from common.tensorrt_recipe import TensorrtRecipe
from tests.manifests import signed_manifest

IN_DIM = 64
OUT_DIM = 32
SAMPLES = 16


def linear_model(weight: np.ndarray, bias: np.ndarray) -> bytes:
    """y = x @ W + b with a symbolic batch axis."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", weight.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", weight.shape[1]])
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [x],
        [y],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def slow_linear_model(weight: np.ndarray, bias: np.ndarray, width: int = 1024) -> bytes:
    """Same outputs as :func:`linear_model` plus 0 x an input-dependent ~0.3 GFLOP branch: a latency regression
    with perfect quality (ONNX Runtime cannot constant-fold it away)."""
    rng = np.random.default_rng(5)
    v1 = (rng.standard_normal((weight.shape[0], width)) * 0.1).astype(np.float32)
    v2 = (rng.standard_normal((width, 256)) * 0.1).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", weight.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", weight.shape[1]])
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["lin"]),
        helper.make_node("MatMul", ["x", "V1"], ["h"]),
        helper.make_node("Tanh", ["h"], ["ht"]),
        helper.make_node("Transpose", ["ht"], ["htt"], perm=[1, 0]),
        helper.make_node("MatMul", ["htt", "ht"], ["outer"]),
        helper.make_node("MatMul", ["outer", "V2"], ["heavy"]),
        helper.make_node("ReduceMean", ["heavy"], ["m"], keepdims=0),
        helper.make_node("Tanh", ["m"], ["mt"]),
        helper.make_node("Mul", ["mt", "zero"], ["nothing"]),
        helper.make_node("Add", ["lin", "nothing"], ["y"]),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((weight, "W"), (bias, "b"), (v1, "V1"), (v2, "V2"), (np.array(0.0, np.float32), "zero"))]
    graph = helper.make_graph(nodes, "slow_linear", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tflite_linear(weight: np.ndarray, bias: np.ndarray) -> bytes:
    """The same y = x @ W + b as a .tflite flatbuffer (FULLY_CONNECTED), built with LiteRT's schema object API."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def buf(arr: np.ndarray | None = None):
        b = s.BufferT()
        if arr is not None:
            b.data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=np.uint8).tolist()
        return b

    def tensor(name: str, shape, buffer: int):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), s.TensorType.FLOAT32, buffer
        return t

    model = s.ModelT()
    model.version = 3
    model.buffers = [buf(), buf(weight.T), buf(bias), buf(), buf()]
    code = s.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = s.BuiltinOperator.FULLY_CONNECTED, 9, 1
    model.operatorCodes = [code]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.FullyConnectedOptions, s.FullyConnectedOptionsT()
    graph = s.SubGraphT()
    graph.name = "main"
    graph.tensors = [
        tensor("x", [1, weight.shape[0]], 3),
        tensor("W", weight.T.shape, 1),
        tensor("b", bias.shape, 2),
        tensor("y", [1, weight.shape[1]], 4),
    ]
    graph.inputs, graph.outputs, graph.operators = [0], [3], [op]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflite_linear_int8(weight: np.ndarray, bias: np.ndarray, x_absmax: float, y_absmax: float) -> bytes:
    """Full-integer y = x @ W + b: int8 input/output with scales, int8 weights, int32 bias, and tensor
    names like a converter produces (so the golden set's "x"/"y" do not match by name)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def quant(scale: float):
        p = s.QuantizationParametersT()
        p.scale, p.zeroPoint = [float(scale)], [0]
        return p

    def buf(arr: np.ndarray | None = None):
        b = s.BufferT()
        if arr is not None:
            b.data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=np.uint8).tolist()
        return b

    def tensor(name: str, shape, buffer: int, ttype: int, scale: float):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer, t.quantization = name, list(shape), ttype, buffer, quant(scale)
        return t

    sx, sw, sy = x_absmax / 127, float(np.abs(weight).max()) / 127, y_absmax / 127
    wq = np.clip(np.round(weight.T / sw), -127, 127).astype(np.int8)
    bq = np.round(bias / (sx * sw)).astype(np.int32)
    model = s.ModelT()
    model.version = 3
    model.buffers = [buf(), buf(wq), buf(bq), buf(), buf()]
    code = s.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = s.BuiltinOperator.FULLY_CONNECTED, 9, 4
    model.operatorCodes = [code]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.FullyConnectedOptions, s.FullyConnectedOptionsT()
    graph = s.SubGraphT()
    graph.name = "main"
    graph.tensors = [
        tensor("serving_default_args_0", [1, weight.shape[0]], 3, s.TensorType.INT8, sx),
        tensor("W", wq.shape, 1, s.TensorType.INT8, sw),
        tensor("b", bq.shape, 2, s.TensorType.INT32, sx * sw),
        tensor("serving_default_output_0", [1, weight.shape[1]], 4, s.TensorType.INT8, sy),
    ]
    graph.inputs, graph.outputs, graph.operators = [0], [3], [op]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def linear_recipe(model_path: Path, precision: str = "fp16", workspace_mb: int = 256) -> TensorrtRecipe:
    """A TensorRT recipe for the linear test model, as the controller's tensorrt converter writes one
    (dynamic batch axis → one shape profile)."""
    return TensorrtRecipe(
        onnx=model_path.name,
        onnx_sha256=sha256_file(model_path),
        precision=precision,
        engine=model_path.with_suffix(".engine").name,
        workspace_mb=workspace_mb,
        shapes=[{"name": "x", "min": [1, IN_DIM], "opt": [1, IN_DIM], "max": [4, IN_DIM]}],
        trtexec=["trtexec", f"--onnx={model_path.name}", f"--memPoolSize=workspace:{workspace_mb}M"],
        ort_tensorrt_options={"trt_fp16_enable": precision in ("fp16", "int8"), "trt_int8_enable": precision == "int8",
                              "trt_max_workspace_size": workspace_mb * 2**20},
        inputs=[{"name": "x", "shape": ["N", IN_DIM], "dtype": "float32"}],
    )


@dataclass
class Reference:
    """The 'true' model: weights and a golden set of its real outputs."""

    weight: np.ndarray
    bias: np.ndarray
    inputs: np.ndarray

    @classmethod
    def make(cls, seed: int = 0) -> Reference:
        rng = np.random.default_rng(seed)
        return cls(
            weight=rng.standard_normal((IN_DIM, OUT_DIM)).astype(np.float32),
            bias=rng.standard_normal(OUT_DIM).astype(np.float32),
            inputs=rng.standard_normal((SAMPLES, IN_DIM)).astype(np.float32),
        )

    def outputs(self) -> np.ndarray:
        return self.inputs @ self.weight + self.bias

    def write_golden(self, path: Path) -> Path:
        np.savez(path, **{"input:x": self.inputs, "output:y": self.outputs()})
        return path

    def good_model(self) -> bytes:
        return linear_model(self.weight, self.bias)

    def degraded_model(self, noise: float = 3.0, seed: int = 99) -> bytes:
        """Weights so perturbed that outputs disagree with the golden set (quality regression)."""
        rng = np.random.default_rng(seed)
        return linear_model(self.weight + noise * rng.standard_normal(self.weight.shape).astype(np.float32), self.bias)

    def good_tflite(self) -> bytes:
        return tflite_linear(self.weight, self.bias)

    def int8_tflite(self) -> bytes:
        return tflite_linear_int8(self.weight, self.bias, float(np.abs(self.inputs).max()),
                                  float(np.abs(self.outputs()).max()))

    def degraded_tflite(self, noise: float = 3.0, seed: int = 99) -> bytes:
        rng = np.random.default_rng(seed)
        return tflite_linear(self.weight + noise * rng.standard_normal(self.weight.shape).astype(np.float32), self.bias)

    def slightly_perturbed_model(self, noise: float = 1e-4) -> bytes:
        """A different build (different sha256) with practically the same outputs, like a good INT8 model."""
        rng = np.random.default_rng(7)
        return linear_model(self.weight + noise * rng.standard_normal(self.weight.shape).astype(np.float32), self.bias)


@dataclass
class Artifact:
    """A signed manifest plus the files it describes, by role."""

    manifest: Manifest
    paths: dict[str, Path]

    @property
    def model_sha(self) -> str:
        return self.manifest.blob("model").sha256


def make_artifact(
    out_dir: Path,
    model_bytes: bytes,
    reference: Reference,
    key,
    *,
    version: str,
    profile: str = "x86-edge",
    quality_metric: str = "cosine",
    chunk_size: int = 1024,
    thresholds: Thresholds | None = None,
    model_id: str = "linear",
    fmt: str = "onnx",
    tensorrt: bool = False,
) -> Artifact:
    """Write model + golden into ``out_dir/<version>`` and sign a manifest for them (with ``tensorrt``,
    plus a TensorRT build recipe for the model, as Jetson artifacts have)."""
    folder = out_dir / f"{model_id}-{version}-{profile}-{fmt}"
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"model.{fmt}"
    model_path.write_bytes(model_bytes)
    golden_path = reference.write_golden(folder / "golden.npz")
    manifest = signed_manifest(
        model_path, golden_path, key=key, chunk_size=chunk_size,
        model_id=model_id, version=version, profile=profile, format=fmt, technique="fp32",
        quality_metric=quality_metric,
        thresholds=thresholds or Thresholds(latency_slack_ms=5.0, memory_slack_mb=64.0),
        tensorrt_recipe=linear_recipe(model_path) if tensorrt else None,
    )
    return Artifact(manifest, {"model": model_path, "golden": golden_path})


class Recorder:
    """Stands in for the daemon's callbacks: records job and bench reports and chunk requests."""

    def __init__(self) -> None:
        self.jobs: list = []
        self.benches: list = []
        self.requests: list[tuple[str, str, list[int]]] = []  # (deployment id, blob sha256, chunk indexes)

    def job(self, report) -> None:
        self.jobs.append(report)

    def bench(self, report) -> None:
        self.benches.append(report)

    def state_changed(self) -> None:
        pass

    def request_chunks(self, deployment_id, sha256, missing) -> None:
        self.requests.append((deployment_id, sha256, list(missing)))


_SERIALS = itertools.count(int(time.time() * 1000))


def granted(desired: Desired, key, device_id: str, fleet: str, *, counter: int = 1, rollback_to: str | None = None,
            ttl: timedelta = timedelta(hours=1), serial: int | None = None) -> Desired:
    """The desired with the controller's signed grant for this device (what ``FleetService`` adds)."""
    grant = grant_for(manifest=desired.manifest, deployment_id=desired.deployment_id, kind=desired.kind,
                      fleet=fleet, device_id=device_id, counter=counter,
                      serial=serial if serial is not None else next(_SERIALS), private_key=key,
                      ttl_s=ttl.total_seconds(), rollback_to=rollback_to)
    return desired.model_copy(update={"grant": grant})
