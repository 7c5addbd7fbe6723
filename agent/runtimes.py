"""Inference runtimes keyed by artifact format: one small adapter per runtime, imported lazily.

The manifest's ``format`` picks the runtime. Each adapter exposes the same tiny surface
(input/output names and shapes, ``run(feeds)``) so the benchmark and golden-set checks are
written once. Heavy imports happen inside ``open`` so ``python -m agent --help`` stays fast
and a device without LiteRT still runs ONNX.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.errors import BenchmarkError, UnsupportedFormatError
from common.errors import ReasonCode
from common.profiles import OrtTuning


class Session(Protocol):
    """A loaded model ready to run."""

    input_names: list[str]
    output_names: list[str]

    def input_shape(self, name: str) -> list[int | str | None]:
        """Declared shape of one input (symbolic/unknown dims as str/None)."""

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run once; returns every output by name."""


@dataclass(frozen=True)
class Runtime:
    """A registered runtime: the format it serves, how to tell it is installed, how to open a model."""

    format: str
    name: str
    available: Callable[[], bool]
    open: Callable[[Path, int, list[str]], Session]
    preload: Callable[[], object] = lambda: None
    """Import the runtime library (so a benchmark can take its memory baseline after it)."""


_REGISTRY: dict[str, Runtime] = {}


def register_runtime(runtime: Runtime) -> Runtime:
    """Add a runtime to the registry (one per format)."""
    _REGISTRY[runtime.format] = runtime
    return runtime


def _importable(*modules: str) -> bool:
    for name in modules:
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def tensorrt_installed() -> bool:
    """The ``tensorrt`` Python module is installed (checked without importing it: it loads CUDA)."""
    return _importable("tensorrt")


def available_formats() -> list[str]:
    """Formats this machine can run right now."""
    return sorted(fmt for fmt, rt in _REGISTRY.items() if rt.available())


_RUNTIME_MODULES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime",),
    "tflite": ("ai_edge_litert", "tflite_runtime"),
    "litert": ("ai_edge_litert", "tflite_runtime"),
    "tensorrt": ("tensorrt",),
}
"""Profile runtime names → the Python modules that provide them (any one is enough)."""

_NO_WHEEL = {
    ("onnxruntime", "riscv64"): "onnxruntime publishes no riscv64 wheel (PyPI) and Debian 12 has no package: "
                                "build it from source on or for the board (docs/devices.md)",
    ("tflite", "riscv64"): "ai-edge-litert and tflite-runtime publish no riscv64 wheel: build LiteRT from "
                           "source (docs/devices.md)",
}
_INSTALL = {
    "onnxruntime": "pip install 'edgefleet[agent]' (onnxruntime)",
    "tflite": "pip install 'edgefleet[agent,tflite]' (ai-edge-litert)",
    "litert": "pip install 'edgefleet[agent,tflite]' (ai-edge-litert)",
    "tensorrt": "TensorRT comes with the vendor's OS image (JetPack); ONNX runs on onnxruntime meanwhile",
}


def missing_runtimes(runtimes: list[str], arch: str) -> dict[str, str]:
    """Runtimes a profile names that this machine lacks, each with what to do about it.

    Why: a profile says what a device needs (``runtimes = ["onnxruntime"]``); an agent started
    without it must say so in words at start-up and in its caps, not fail later with an import
    traceback in a benchmark. On RISC-V the message is the truth: there is no wheel to install.

    Example:
        >>> missing_runtimes(["onnxruntime"], "riscv64")  # doctest: +SKIP
        {'onnxruntime': 'onnxruntime publishes no riscv64 wheel (PyPI) ...'}
    """
    missing: dict[str, str] = {}
    for name in runtimes:
        modules = _RUNTIME_MODULES.get(name)
        if modules is None:
            missing[name] = f"the agent has no adapter for {name!r}; an application on the device runs it"
        elif not _importable(*modules):
            key = "tflite" if name == "litert" else name
            missing[name] = _NO_WHEEL.get((key, arch), _INSTALL.get(name, f"install {name}"))
    return missing


def get_runtime(fmt: str) -> Runtime:
    """The runtime for a format, or UnsupportedFormatError naming what is supported."""
    runtime = _REGISTRY.get(fmt)
    if runtime is None or not runtime.available():
        raise UnsupportedFormatError(fmt, available_formats())
    return runtime


# --- ONNX Runtime -----------------------------------------------------------------------------

_ORT_TUNING: OrtTuning = OrtTuning()


def set_ort_tuning(tuning: OrtTuning) -> None:
    """Session tuning for every ONNX session this process opens from now on.

    Process-wide on purpose: the benchmark child measures one model with its device profile's
    ``[onnxruntime]`` tuning, and the runtime registry's ``open`` signature stays format-neutral.
    """
    global _ORT_TUNING
    _ORT_TUNING = tuning



class OrtSession:
    """onnxruntime InferenceSession behind the Session surface.

    ``runtime_label`` is what the benchmark reports as ``BenchMetrics.runtime``: ``onnxruntime``, or
    with ``label_provider`` (artifacts with a TensorRT recipe, where it matters which provider won)
    ``onnxruntime:<provider>`` naming the first provider ORT actually kept: ORT silently drops a
    provider whose libraries fail to load, so the requested list is not proof of what ran.
    """

    def __init__(self, path: Path, threads: int, providers: list[str], *,
                 provider_options: dict[str, dict[str, Any]] | None = None, label_provider: bool = False) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        disabled = _ORT_TUNING.apply(opts)
        usable = [p for p in providers if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
        options = provider_options or {}
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=usable,
                                              provider_options=[options.get(p, {}) for p in usable],
                                              disabled_optimizers=disabled)
        except Exception as exc:  # noqa: BLE001 - ORT raises several untyped errors for bad models
            raise BenchmarkError(ReasonCode.LOAD_FAILED, f"onnxruntime could not load {path.name}: {exc}") from exc
        self.providers = list(self._sess.get_providers())
        self.runtime_label = f"onnxruntime:{self.providers[0]}" if label_provider else "onnxruntime"
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self.output_names = [o.name for o in self._sess.get_outputs()]
        self._shapes = {i.name: list(i.shape) for i in self._sess.get_inputs()}

    def input_shape(self, name: str) -> list[int | str | None]:
        """Declared input shape."""
        return self._shapes[name]

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """One inference."""
        return dict(zip(self.output_names, self._sess.run(self.output_names, feeds), strict=True))


def ort_providers() -> list[str]:
    """Execution providers of the installed onnxruntime (empty when it is missing)."""
    if not _importable("onnxruntime"):
        return []
    import onnxruntime as ort

    return list(ort.get_available_providers())


register_runtime(
    Runtime(
        format="onnx",
        name="onnxruntime",
        available=lambda: _importable("onnxruntime"),
        open=lambda path, threads, providers: OrtSession(path, threads, providers),
        preload=lambda: importlib.import_module("onnxruntime"),
    )
)


# --- LiteRT / TFLite --------------------------------------------------------------------------


def _tflite_interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]
    except ImportError:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]
    return Interpreter


class TfliteSession:
    """LiteRT (ai-edge-litert, else tflite_runtime) interpreter behind the Session surface."""

    def __init__(self, path: Path, threads: int, providers: list[str]) -> None:
        interpreter_cls = _tflite_interpreter_class()
        try:
            self._interp = interpreter_cls(model_path=str(path), num_threads=threads)
            self._interp.allocate_tensors()
        except Exception as exc:  # noqa: BLE001 - LiteRT raises RuntimeError/ValueError for bad models
            raise BenchmarkError(ReasonCode.LOAD_FAILED, f"LiteRT could not load {path.name}: {exc}") from exc
        self._inputs = {d["name"]: d for d in self._interp.get_input_details()}
        self._outputs = {d["name"]: d for d in self._interp.get_output_details()}
        self.input_names = list(self._inputs)
        self.output_names = list(self._outputs)

    def input_shape(self, name: str) -> list[int | str | None]:
        """Declared input shape."""
        return [int(d) for d in self._inputs[name]["shape"]]

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """One inference. Float data is quantized for integer inputs and integer outputs are dequantized,
        so a full-integer model is judged on the same float golden set as its FP32 reference."""
        for name, value in feeds.items():
            detail = self._inputs[name]
            if list(value.shape) != list(detail["shape"]):
                self._interp.resize_tensor_input(detail["index"], list(value.shape))
                self._interp.allocate_tensors()
            self._interp.set_tensor(detail["index"], _quantize(value, detail))
        self._interp.invoke()
        return {name: _dequantize(self._interp.get_tensor(d["index"]), d) for name, d in self._outputs.items()}


def _quantize(value: Any, detail: dict[str, Any]) -> Any:
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and scale and np.asarray(value).dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.round(value / scale + zero), info.min, info.max).astype(dtype)
    return np.asarray(value).astype(dtype, copy=False)


def _dequantize(value: Any, detail: dict[str, Any]) -> Any:
    import numpy as np

    scale, zero = detail.get("quantization", (0.0, 0))
    if np.asarray(value).dtype.kind in "iu" and scale:
        return (value.astype(np.float32) - zero) * scale
    return value


register_runtime(
    Runtime(
        format="tflite",
        name="litert",
        available=lambda: _importable("ai_edge_litert", "tflite_runtime"),
        open=lambda path, threads, providers: TfliteSession(path, threads, providers),
        preload=_tflite_interpreter_class,
    )
)
