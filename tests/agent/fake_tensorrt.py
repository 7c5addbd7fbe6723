"""Stand-ins for the ``tensorrt`` module and cuda-python's runtime binding (no GPU on the test host).

They implement the slice of the real APIs that ``agent.trt_engine`` calls (TensorRT 10 builder,
ONNX parser, runtime and tensor-address execution; cudaMalloc/cudaMemcpyAsync on a dict of
bytearrays), record what the agent asked for, and compute ``y = x @ W + b`` for the linear test
model, so the agent's glue (build flags, cache, buffers, shapes) is exercised end to end. They
prove nothing about real TensorRT, which was not run here.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import json
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np

MAGIC = b"FAKETRT|"


class FakeTensorrt(types.ModuleType):
    """``import tensorrt`` while installed in ``sys.modules``; ``builds`` counts engine builds."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, version: str = "10.3.0") -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        self.weight, self.bias = weight, bias
        self.builds: list[dict] = []
        self.parse_errors: list[str] = []
        self.Logger = type("Logger", (), {"WARNING": 2, "ERROR": 1, "__init__": lambda s, level=2: None})
        self.NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
        self.BuilderFlag = SimpleNamespace(FP16="fp16", INT8="int8")
        self.TensorIOMode = SimpleNamespace(INPUT="input", OUTPUT="output")
        fake = self

        class Builder:
            def __init__(self, logger) -> None:
                pass

            def create_network(self, flags: int) -> SimpleNamespace:
                return SimpleNamespace(num_inputs=1, flags=flags,
                                       get_input=lambda i: SimpleNamespace(name="x", shape=(-1, weight.shape[0])))

            def create_builder_config(self) -> SimpleNamespace:
                cfg = SimpleNamespace(flags=set(), pools={}, profiles=[], builder_optimization_level=None)
                cfg.set_flag = cfg.flags.add
                cfg.set_memory_pool_limit = lambda pool, size: cfg.pools.__setitem__(pool, size)
                cfg.add_optimization_profile = cfg.profiles.append
                return cfg

            def create_optimization_profile(self) -> SimpleNamespace:
                prof = SimpleNamespace(shapes={})
                prof.set_shape = lambda name, lo, mid, hi: prof.shapes.__setitem__(
                    name, (list(lo), list(mid), list(hi)))
                return prof

            def build_serialized_network(self, network, config) -> bytes:
                record = {"onnx_sha256": network.onnx_sha256, "flags": sorted(config.flags),
                          "workspace": config.pools.get("workspace"), "level": config.builder_optimization_level,
                          "profiles": [p.shapes for p in config.profiles]}
                fake.builds.append(record)
                return MAGIC + fake.__version__.encode() + b"|" + json.dumps(record).encode()

        class OnnxParser:
            def __init__(self, network, logger) -> None:
                self.network = network
                self.num_errors = 0

            def parse_from_file(self, path: str) -> bool:
                self.network.onnx_sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                self.num_errors = len(fake.parse_errors)
                return not fake.parse_errors

            def get_error(self, i: int) -> str:
                return fake.parse_errors[i]

        class Runtime:
            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
                # an engine of another TensorRT version does not load, as with the real one
                if not bytes(data).startswith(MAGIC + fake.__version__.encode() + b"|"):
                    return None
                return FakeEngine(fake.weight, fake.bias)

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime

    @staticmethod
    def nptype(dtype: str) -> type:
        return np.float32


class FakeEngine:
    """Two I/O tensors, x (input) and y (output), with a dynamic batch axis."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight, self.bias = weight, bias
        self.num_io_tensors = 2

    def get_tensor_name(self, i: int) -> str:
        return ["x", "y"][i]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name == "x" else "output"

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, self.weight.shape[0]) if name == "x" else (-1, self.weight.shape[1])

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        self.shapes[name] = tuple(shape)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.shapes["x"][0], self.engine.weight.shape[1]) if name == "y" else self.shapes[name]

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def execute_async_v3(self, stream: int) -> bool:
        memory = FakeCudart.memory
        n = int(np.prod(self.shapes["x"]))
        x = np.frombuffer(bytes(memory[self.addresses["x"]][: n * 4]), np.float32).reshape(self.shapes["x"])
        y = (x @ self.engine.weight + self.engine.bias).astype(np.float32)
        memory[self.addresses["y"]][: y.nbytes] = y.tobytes()
        return True


class FakeCudart:
    """cuda-python's ``cudart``: calls return ``(err, value...)``; device memory is a dict of bytearrays."""

    memory: dict[int, bytearray] = {}
    cudaError_t = SimpleNamespace(cudaSuccess=0)  # noqa: N815 - the binding's names
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)  # noqa: N815

    def __init__(self) -> None:
        FakeCudart.memory = {}
        self._next = 0x1000

    def cudaRuntimeGetVersion(self) -> tuple[int, int]:  # noqa: N802
        return 0, 12060

    def cudaGetDeviceProperties(self, device: int) -> tuple[int, SimpleNamespace]:  # noqa: N802
        return 0, SimpleNamespace(name=b"Orin (nvgpu)\x00\x00\x00", major=8, minor=7)

    def cudaStreamCreate(self) -> tuple[int, int]:  # noqa: N802
        return 0, 7

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:  # noqa: N802
        return (0,)

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:  # noqa: N802
        self._next += 0x1000 + nbytes
        self.memory[self._next] = bytearray(nbytes)
        return 0, self._next

    def cudaFree(self, ptr: int) -> tuple[int]:  # noqa: N802
        del self.memory[ptr]
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: int, stream: int) -> tuple[int]:  # noqa: N802
        if kind == 1:
            self.memory[dst][:count] = ctypes.string_at(src, count)
        else:
            ctypes.memmove(dst, bytes(self.memory[src][:count]), count)
        return (0,)
