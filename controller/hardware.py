"""Host profiler: describe this machine as a device profile and find the closest shipped one.

Why: a user bringing a new board wants to know which artifact to build for it
without hand-writing a profile. ``edgefleet profile-host`` reads what the
kernel and the installed runtimes report (``/proc/cpuinfo`` flags, core count,
``/proc/meminfo``, ONNX Runtime execution providers, LiteRT / TensorRT / Core ML
presence), emits it in the same TOML-validated format as ``profiles/*.toml``
and ranks the shipped profiles by similarity, so the recommendation is a
profile id whose recipe can be built as is.

Pure stdlib at import time; runtime probes import their packages lazily and
treat a missing package as "runtime absent".
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from common.profiles import DeviceProfile, Recipe, Slo, list_profiles

# Flags that matter for kernel selection, normalised to the names profiles use.
# x86 reports avx512_vnni / avx_vnni; aarch64 reports asimddp (= dotprod) and i8mm.
_INTERESTING_FLAGS = {
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
    "amx_tile",
    "neon",
    "asimd",
    "asimddp",
    "asimdhp",
    "fphp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "crc32",
    "rv64gc",
    "rvv",
    "v",
}
_ARCH_ALIASES = {
    "amd64": "x86_64",
    "x86_64": "x86_64",
    "arm64": "aarch64",
    "aarch64": "aarch64",
    "armv7l": "armv7",
    "riscv64": "riscv64",
}


@dataclass(frozen=True)
class HostReport:
    """What was probed, the profile built from it, and the ranked shipped profiles."""

    profile: DeviceProfile
    raw_flags: frozenset[str]
    ranking: list[tuple[str, float]]

    @property
    def closest(self) -> str | None:
        """Id of the most similar shipped profile, or None when no profile shares the arch."""
        return self.ranking[0][0] if self.ranking and self.ranking[0][1] > 0 else None


def read_cpu_flags(cpuinfo: str) -> tuple[str, frozenset[str]]:
    """CPU model name and the flag set from the text of ``/proc/cpuinfo`` (x86, Arm or RISC-V layout)."""
    model, flags = "unknown", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "cpu model", "hardware", "uarch") and model == "unknown" and value:
            model = value
        elif key in ("flags", "features"):
            flags.update(value.split())
        elif key == "isa":  # RISC-V: "rv64imafdc_zicsr..." ; G = IMAFD
            base = value.split("_")[0]
            if base.startswith("rv64") and all(c in base for c in "imafd"):
                flags.add("rv64gc")
            if "v" in base[4:]:
                flags.add("rvv")
    return model, frozenset(flags)


def normalise_features(flags: frozenset[str]) -> list[str]:
    """Profile-style ISA feature names: the interesting subset plus the aliases profiles use."""
    feats = {f for f in flags if f in _INTERESTING_FLAGS}
    if "avx512_vnni" in feats or "avx_vnni" in feats:
        feats.add("vnni")
    if "asimddp" in feats:
        feats.add("dotprod")
    if "asimd" in feats:
        feats.add("neon")
    return sorted(feats)


def _ram_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)


def probe_runtimes() -> tuple[list[str], list[str]]:
    """Installed runtimes (profile names) and ONNX Runtime's available execution providers."""
    runtimes, providers = [], []
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        runtimes.append("onnxruntime")
        providers = list(ort.get_available_providers())
    if importlib.util.find_spec("tensorrt") is not None or "TensorrtExecutionProvider" in providers:
        runtimes.insert(0, "tensorrt")
    if any(importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime")):
        runtimes.append("tflite")
    if platform.system() == "Darwin" and importlib.util.find_spec("coremltools") is not None:
        runtimes.append("coreml")  # Core ML predicts only on macOS
    return runtimes, providers or ["CPUExecutionProvider"]


def _recipe_for(features: list[str], runtimes: list[str], providers: list[str]) -> tuple[Recipe, list[str], list[str]]:
    formats = [
        f for f, r in (("onnx", "onnxruntime"), ("tflite", "tflite"), ("coreml", "coreml")) if r in runtimes
    ] or ["onnx"]
    int8_dot = bool({"vnni", "dotprod", "asimddp"} & set(features))
    fast = ["int8", "fp32"] if int8_dot else ["fp32", "int8"]
    if "avx512_bf16" in features or "bf16" in features:
        fast.append("bf16")
    if "tensorrt" in runtimes or "CUDAExecutionProvider" in providers:
        return Recipe(technique="fp16", format="onnx", params={"tensorrt": True}), formats, ["fp16", *fast]
    params: dict[str, str | int | float | bool] = {"per_channel": True}
    if not int8_dot:
        params["reduce_range"] = True  # 7-bit weights avoid int16 overflow without a dot-product unit
    return Recipe(technique="int8-static", format="onnx", params=params), formats, fast


def profile_host(profile_id: str = "this-host", cpuinfo_path: Path = Path("/proc/cpuinfo")) -> HostReport:
    """Probe this machine and rank the shipped profiles by similarity.

    Example:
        >>> report = profile_host()
        >>> report.profile.arch, report.closest  # doctest: +SKIP
        ('x86_64', 'x86-edge')
    """
    try:
        text = cpuinfo_path.read_text()
    except OSError:
        text = ""
    model, flags = read_cpu_flags(text)
    features = normalise_features(flags)
    runtimes, providers = probe_runtimes()
    recipe, formats, fast = _recipe_for(features, runtimes, providers)
    arch = _ARCH_ALIASES.get(platform.machine().lower(), "x86_64")
    cores = os.cpu_count() or 1
    ram = _ram_mb()
    storage = shutil.disk_usage(Path.home()).free // 2**20
    profile = DeviceProfile(
        id=profile_id,
        name=f"{platform.node() or 'host'} ({model})",
        arch=arch,  # type: ignore[arg-type]
        cpu=f"{model}, {cores} cores",
        isa_features=features,
        cores=cores,
        ram_mb=max(ram, 64),
        storage_mb=max(int(storage), 16),
        runtimes=runtimes or ["onnxruntime"],
        formats=formats,  # type: ignore[arg-type]
        execution_providers=providers,
        fast_dtypes=fast,  # type: ignore[arg-type]
        slo=Slo(latency_p95_ms=100, memory_mb=max(64, ram // 4)),
        recipe=recipe,
    )
    return HostReport(profile=profile, raw_flags=flags, ranking=rank_profiles(profile, list_profiles()))


def similarity(host: DeviceProfile, candidate: DeviceProfile) -> float:
    """Score in [0, 1]: 0 for another architecture; else ISA overlap, runtimes, then size.

    Why this order: an artifact built for another arch cannot run at all; ISA
    features decide which kernels (and so which precision) are fast; runtimes
    decide the format; cores/RAM only tune budgets.
    """
    if host.arch != candidate.arch:
        return 0.0
    a, b = set(host.isa_features), set(candidate.isa_features)
    isa = len(a & b) / len(a | b) if a | b else 1.0
    dot_match = 1.0 if host.has_int8_dot == candidate.has_int8_dot else 0.0
    runtimes = len(set(host.runtimes) & set(candidate.runtimes)) / max(len(candidate.runtimes), 1)
    size = min(host.ram_mb, candidate.ram_mb) / max(host.ram_mb, candidate.ram_mb)
    return round(0.1 + 0.35 * isa + 0.25 * dot_match + 0.2 * runtimes + 0.1 * size, 4)


def rank_profiles(host: DeviceProfile, profiles: list[DeviceProfile]) -> list[tuple[str, float]]:
    """Shipped profiles sorted by :func:`similarity` to the host, best first."""
    return sorted(((p.id, similarity(host, p)) for p in profiles), key=lambda t: -t[1])


def profile_to_toml(profile: DeviceProfile) -> str:
    """The profile as a TOML file that :func:`common.profiles.load_profile_file` accepts back."""

    def val(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{key(k)} = {val(x)}" for k, x in v.items()) + " }"
        return str(v)

    def key(k: str) -> str:  # dotted keys (ORT's "session.x") must be quoted or TOML nests them
        return k if k.replace("_", "").replace("-", "").isalnum() else val(k)

    data = profile.model_dump(mode="json", exclude_none=True)
    tables = {k: data.pop(k) for k in ("slo", "recipe", "tolerance", "onnxruntime")}
    lines = [f"{k} = {val(v)}" for k, v in data.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {val(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"
