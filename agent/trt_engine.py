"""TensorRT on the device: fingerprint the stack, build the engine from the artifact's recipe, cache it.

Why on the device: an engine only loads on the TensorRT version, JetPack/CUDA stack and GPU it was
built on, so the controller ships ONNX plus a signed recipe (``common.tensorrt_recipe``) and the
agent builds once per device fingerprint. :func:`prepare` picks one of two paths per load:

* **native** — the ``tensorrt`` module (JetPack's ``python3-libnvinfer``) *and* a CUDA binding
  (``cuda-python``, for device buffers) import: build with the TensorRT builder per the recipe
  (FP16/INT8 flags, workspace pool, optimisation profiles for dynamic inputs), store the engine in
  ``<engines>/<key>/engine.plan`` with ``meta.json`` written last, run it with the TensorRT runtime.
  A cached engine whose bytes differ from its metadata or that no longer deserializes is rebuilt.
* **ONNX Runtime** — otherwise: the same ONNX on the best providers ORT has, in the profile's order
  (TensorRT EP → CUDA EP → CPU); the TensorRT EP gets the recipe's options with its engine cache in
  ``<engines>/<key>/ort`` (never the path the controller suggested).

The session reports what actually ran (``tensorrt`` or ``onnxruntime:<first provider ORT kept>``);
the benchmark puts it in ``BenchMetrics.runtime``. Nothing here imports tensorrt, cuda or
onnxruntime at module import, so the agent installs and runs without them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from agent.atomic import atomic_write_bytes
from agent.errors import BenchmarkError
from common.compat import UTC
from common.errors import ReasonCode
from common.profiles import select_execution_providers
from common.tensorrt_recipe import TensorrtRecipe, engine_cache_key

log = logging.getLogger(__name__)

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
"""L4T release file of a Jetson; its release/revision identifies the JetPack stack."""
CUDA_VERSION_FILE = Path("/usr/local/cuda/version.json")
ENGINE_FILE = "engine.plan"
META_FILE = "meta.json"
ORT_CACHE_DIR = "ort"
NONE = "none"
TRT_EP = "TensorrtExecutionProvider"

# --- what is installed -------------------------------------------------------------------------


def tensorrt_module() -> Any | None:
    """The ``tensorrt`` module, or None where it is not installed (or its libraries do not load)."""
    try:
        return importlib.import_module("tensorrt")
    except (ImportError, OSError):
        return None


def cuda_runtime() -> Any | None:
    """cuda-python's CUDA runtime binding (``cuda.bindings.runtime``, older ``cuda.cudart``), or None."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except (ImportError, OSError):
            continue
    return None


def _cuda_result(cudart: Any, result: Any, what: str) -> Any:
    """cuda-python returns ``(err, value...)``: raise on an error, return the value (or None)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA {what} failed: {err}")
    return values[0] if values else None


# --- fingerprint -------------------------------------------------------------------------------


def jetpack_version(release_file: Path | None = None) -> str:
    """L4T release of this Jetson from ``/etc/nv_tegra_release`` (``R36.4.3`` ↔ JetPack 6.2), else ``none``.

    The L4T release is used as is rather than mapped to a JetPack name: the mapping goes stale,
    and the key only needs something that changes whenever the stack does. An unparsable file
    contributes its first line, so a change still changes the key.
    """
    path = release_file or NV_TEGRA_RELEASE
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return NONE
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)", text)
    if match:
        return f"R{match.group(1)}.{match.group(2).rstrip('.')}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first[:80] or "unparsable"


def cuda_version(cudart: Any | None = None) -> str:
    """CUDA runtime version: from the binding, else ``/usr/local/cuda/version.json``, else ``$CUDA_VERSION``."""
    if cudart is not None:
        try:
            value = int(_cuda_result(cudart, cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
            return f"{value // 1000}.{(value % 1000) // 10}"
        except (RuntimeError, TypeError, ValueError, AttributeError):
            log.debug("cudaRuntimeGetVersion failed", exc_info=True)
    try:
        return str(json.loads(CUDA_VERSION_FILE.read_text())["cuda"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return os.environ.get("CUDA_VERSION", NONE)


def gpu_identity(cudart: Any | None = None) -> tuple[str, str]:
    """(GPU name, compute capability) of device 0: from the binding, else ``nvidia-smi``, else ``none``."""
    if cudart is not None:
        try:
            props = _cuda_result(cudart, cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
            name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
            return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"
        except (RuntimeError, AttributeError):
            log.debug("cudaGetDeviceProperties failed", exc_info=True)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            name, _, cap = out.strip().splitlines()[0].rpartition(",")
            return name.strip(), cap.strip()
        except (OSError, subprocess.SubprocessError, IndexError):
            log.debug("nvidia-smi query failed", exc_info=True)
    return NONE, NONE


def device_fingerprint(trt: Any | None = None, cudart: Any | None = None) -> dict[str, str]:
    """What a TensorRT engine is tied to, on this device (``common.tensorrt_recipe.FINGERPRINT_FIELDS``).

    Example:
        >>> device_fingerprint()  # on this x86 test host  # doctest: +SKIP
        {'tensorrt_version': 'none', 'jetpack_version': 'none', 'cuda_version': 'none', ...}
    """
    name, capability = gpu_identity(cudart)
    return {
        "tensorrt_version": str(getattr(trt, "__version__", NONE)) if trt is not None else NONE,
        "jetpack_version": jetpack_version(),
        "cuda_version": cuda_version(cudart),
        "gpu_name": name,
        "compute_capability": capability,
    }


# --- the cache ---------------------------------------------------------------------------------


class EngineCache:
    """Engines on disk, one folder per key: ``engine.plan`` and ``meta.json`` (written last = complete).

    ``meta.json`` records the engine's size and sha256 and the model it was built from, so a torn
    or bit-rotted engine is detected before TensorRT is handed garbage, and :meth:`prune` can drop
    engines of models no slot holds any more.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, key: str) -> Path:
        """Folder of one cache entry."""
        return self.root / key

    def meta(self, key: str) -> dict[str, Any] | None:
        """The entry's metadata, or None when missing or unreadable."""
        try:
            data = json.loads((self.folder(key) / META_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def lookup(self, key: str, valid: Callable[[bytes], bool]) -> Path | None:
        """The cached engine if it is intact and ``valid(bytes)``; a broken entry is removed."""
        folder = self.folder(key)
        meta = self.meta(key)
        engine = folder / ENGINE_FILE
        if meta is None:
            if folder.exists():
                log.warning("engine cache entry %s has no metadata (interrupted build?); removing it", key[:12])
                shutil.rmtree(folder, ignore_errors=True)
            return None
        try:
            data = engine.read_bytes()
        except OSError:
            data = b""
        if len(data) != meta.get("size") or hashlib.sha256(data).hexdigest() != meta.get("engine_sha256"):
            problem = "does not match its metadata"
        elif not valid(data):
            problem = "does not deserialize"
        else:
            return engine
        log.warning("cached engine %s %s; rebuilding it", key[:12], problem)
        shutil.rmtree(folder, ignore_errors=True)
        return None

    def store(self, key: str, data: bytes, meta: dict[str, Any]) -> Path:
        """Write an engine, then its metadata (the entry counts only once both are on disk)."""
        folder = self.folder(key)
        engine = folder / ENGINE_FILE
        atomic_write_bytes(engine, data)
        full = {**meta, "key": key, "size": len(data), "engine_sha256": hashlib.sha256(data).hexdigest(),
                "created_at": datetime.now(UTC).isoformat()}
        atomic_write_bytes(folder / META_FILE, json.dumps(full, indent=2).encode())
        return engine

    def get_or_build(self, key: str, build: Callable[[], bytes], valid: Callable[[bytes], bool],
                     meta: dict[str, Any]) -> tuple[Path, bool]:
        """The cached engine, else a freshly built and stored one; returns (path, built now).

        Raises:
            BenchmarkError: (load_failed) the fresh engine does not deserialize either.
        """
        cached = self.lookup(key, valid)
        if cached is not None:
            return cached, False
        data = build()
        if not valid(data):
            raise BenchmarkError(ReasonCode.LOAD_FAILED, "TensorRT built an engine that does not deserialize")
        return self.store(key, data, meta), True

    def reserve(self, key: str, meta: dict[str, Any]) -> Path:
        """An entry for a cache someone else fills (ORT's TensorRT EP): metadata now, files by ORT."""
        folder = self.folder(key)
        if self.meta(key) is None:
            atomic_write_bytes(folder / META_FILE, json.dumps({**meta, "key": key}, indent=2).encode())
        (folder / ORT_CACHE_DIR).mkdir(parents=True, exist_ok=True)
        return folder / ORT_CACHE_DIR

    def prune(self, keep_models: set[str]) -> list[str]:
        """Remove entries built from models not in ``keep_models`` (sha256s); returns the removed keys."""
        removed = []
        if not self.root.is_dir():
            return removed
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            meta = self.meta(folder.name)
            if meta is None or meta.get("model_sha256") not in keep_models:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed


# --- native TensorRT ---------------------------------------------------------------------------


def _network_flags(trt: Any) -> int:
    """TensorRT < 10 needs the explicit-batch flag; 10 made it the only mode (and deprecated the flag)."""
    major = int(str(getattr(trt, "__version__", "10")).split(".")[0] or 10)
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "EXPLICIT_BATCH", None)
    return 1 << int(flag) if major < 10 and flag is not None else 0


def _add_shape_profile(trt_builder: Any, network: Any, config: Any, recipe: TensorrtRecipe) -> None:
    """One optimisation profile covering every dynamic input, from the recipe (TensorRT requires it)."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t for t in inputs if any(int(d) < 0 for d in t.shape)]
    if not dynamic:
        return
    shapes = {s.name: s for s in recipe.shapes}
    profile = trt_builder.create_optimization_profile()
    for tensor in dynamic:
        shape = shapes.get(tensor.name)
        if shape is None:
            raise BenchmarkError(ReasonCode.LOAD_FAILED, f"input {tensor.name!r} has dynamic dims {list(tensor.shape)} "
                                 "and the TensorRT recipe gives no shape profile for it")
        profile.set_shape(tensor.name, shape.min, shape.opt, shape.max)
    config.add_optimization_profile(profile)


def build_engine(trt: Any, onnx_path: Path, recipe: TensorrtRecipe) -> bytes:
    """Build a serialized engine from the ONNX exactly as the recipe says (what ``trtexec`` would do).

    Raises:
        BenchmarkError: (load_failed) the parser or the builder refused the model.
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BenchmarkError(ReasonCode.LOAD_FAILED,
                             f"TensorRT could not parse {onnx_path.name}: {'; '.join(errors[:3]) or 'no detail'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, recipe.workspace_mb * 2**20)
    if hasattr(config, "builder_optimization_level"):  # TensorRT >= 8.6
        config.builder_optimization_level = recipe.builder_optimization_level
    if recipe.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if recipe.precision == "int8":  # explicit QDQ in the ONNX; no calibrator
        config.set_flag(trt.BuilderFlag.INT8)
    _add_shape_profile(builder, network, config, recipe)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BenchmarkError(ReasonCode.LOAD_FAILED,
                             f"TensorRT builder produced no engine for {onnx_path.name} (see the agent log)")
    return bytes(serialized)


def deserializes(trt: Any, data: bytes) -> bool:
    """True when this device's TensorRT accepts the engine bytes."""
    try:
        engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(data)
    except Exception:  # noqa: BLE001 - TensorRT raises several types for bad engines
        return False
    return engine is not None


class TrtSession:
    """A TensorRT engine behind the agent's Session surface; device buffers through cuda-python.

    TensorRT 10 tensor API: ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``.
    Buffers are kept between runs and grown when a larger input arrives.
    """

    runtime_label = "tensorrt"

    def __init__(self, engine_path: Path, trt: Any, cudart: Any) -> None:
        import numpy as np

        self._np, self._cuda = np, cudart
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise BenchmarkError(ReasonCode.LOAD_FAILED, f"TensorRT could not deserialize {engine_path}")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = {n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        self.input_names = [n for n in names if n in inputs]
        self.output_names = [n for n in names if n not in inputs]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._stream = _cuda_result(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}

    def input_shape(self, name: str) -> list[int | str | None]:
        """Declared input shape (dynamic dims as None)."""
        return [int(d) if int(d) >= 0 else None for d in self._engine.get_tensor_shape(name)]

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _cuda_result(self._cuda, self._cuda.cudaFree(ptr), "cudaFree")
            ptr = int(_cuda_result(self._cuda, self._cuda.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """One inference: copy inputs in, execute on the stream, copy outputs out."""
        np, cuda = self._np, self._cuda
        kinds = cuda.cudaMemcpyKind
        keep = []
        for name in self.input_names:
            arr = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
            keep.append(arr)
            self._context.set_input_shape(name, tuple(arr.shape))
            ptr = self._buffer(name, max(arr.nbytes, 1))
            _cuda_result(cuda, cuda.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, kinds.cudaMemcpyHostToDevice,
                                                    self._stream), "cudaMemcpyAsync")
            self._context.set_tensor_address(name, ptr)
        outputs = {}
        for name in self.output_names:
            out = np.empty(tuple(int(d) for d in self._context.get_tensor_shape(name)), dtype=self._dtypes[name])
            self._context.set_tensor_address(name, self._buffer(name, max(out.nbytes, 1)))
            outputs[name] = out
        if not self._context.execute_async_v3(self._stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for name, out in outputs.items():
            _cuda_result(cuda, cuda.cudaMemcpyAsync(out.ctypes.data, self._buffers[name][0], out.nbytes,
                                                    kinds.cudaMemcpyDeviceToHost, self._stream), "cudaMemcpyAsync")
        _cuda_result(cuda, cuda.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return outputs


# --- choosing the path -------------------------------------------------------------------------


@dataclass(frozen=True)
class EnginePlan:
    """How a recipe artifact will be run here, decided (and any engine built) before timing starts."""

    backend: Literal["tensorrt", "onnxruntime"]
    key: str | None = None
    engine_path: Path | None = None
    built: bool = False
    providers: list[str] = field(default_factory=list)
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""

    def open(self, model_path: Path, threads: int, providers: list[str] | None = None) -> Any:
        """Load the model per this plan; the session has ``runtime_label`` saying what runs it."""
        if self.backend == "tensorrt":
            trt, cudart = tensorrt_module(), cuda_runtime()
            if trt is None or cudart is None or self.engine_path is None:
                raise BenchmarkError(ReasonCode.LOAD_FAILED, "TensorRT went away between build and load")
            return TrtSession(self.engine_path, trt, cudart)
        from agent.runtimes import OrtSession

        return OrtSession(model_path, threads, self.providers, provider_options=self.provider_options,
                          label_provider=True)


def _meta(recipe: TensorrtRecipe, fingerprint: dict[str, str], backend: str) -> dict[str, Any]:
    return {"model_sha256": recipe.onnx_sha256, "precision": recipe.precision, "backend": backend,
            "fingerprint": fingerprint, "build_settings": recipe.build_settings()}


def _ort_plan(model_path: Path, recipe: TensorrtRecipe, preferred: list[str], cache: EngineCache,
              note: str) -> EnginePlan:
    """ONNX Runtime on the best providers it has; the TensorRT EP gets the recipe's options."""
    import onnxruntime as ort

    wanted = preferred or [TRT_EP, *recipe.fallback_providers]
    providers = select_execution_providers(wanted, ort.get_available_providers())
    if TRT_EP not in providers:
        return EnginePlan("onnxruntime", providers=providers, note=note)
    # ORT's own engine files do not encode the TensorRT or ORT version: both go into the folder's key.
    fingerprint = device_fingerprint(tensorrt_module(), cuda_runtime())
    fingerprint["tensorrt_version"] += f"+onnxruntime-{ort.__version__}"
    key = engine_cache_key(recipe, fingerprint)
    folder = cache.reserve(key, _meta(recipe, fingerprint, "onnxruntime-tensorrt-ep"))
    options = recipe.ort_tensorrt_options.model_dump() | {
        "trt_engine_cache_path": str(folder), "trt_timing_cache_path": str(folder)}
    plan = EnginePlan("onnxruntime", key=key, providers=providers, provider_options={TRT_EP: options}, note=note)
    # Build (or load) ORT's engine now, so the timed load that follows measures a warm cache.
    plan.open(model_path, 1)
    return plan


def prepare(model_path: Path, recipe: TensorrtRecipe, preferred_providers: list[str],
            cache_root: Path) -> EnginePlan:
    """Decide how to run a recipe artifact here and build or find its engine (before any timing).

    Args:
        model_path: the installed ONNX (already re-hashed against the manifest by the caller).
        recipe: the signed recipe from the manifest.
        preferred_providers: the device profile's execution providers, in order.
        cache_root: ``<data-dir>/engines``.

    Raises:
        BenchmarkError: (load_failed) TensorRT is present but cannot build this model.
    """
    cache = EngineCache(cache_root)
    trt = tensorrt_module()
    if trt is None:
        return _ort_plan(model_path, recipe, preferred_providers, cache, "tensorrt module not installed")
    cudart = cuda_runtime()
    if cudart is None:
        return _ort_plan(model_path, recipe, preferred_providers, cache,
                         "tensorrt found but no CUDA binding for device buffers (pip install cuda-python)")
    fingerprint = device_fingerprint(trt, cudart)
    key = engine_cache_key(recipe, fingerprint)
    path, built = cache.get_or_build(key, lambda: build_engine(trt, model_path, recipe),
                                     lambda data: deserializes(trt, data), _meta(recipe, fingerprint, "tensorrt"))
    log.info("TensorRT engine %s %s (%s)", key[:12], "built" if built else "reused from cache", fingerprint)
    return EnginePlan("tensorrt", key=key, engine_path=path, built=built, note="built" if built else "cached")
