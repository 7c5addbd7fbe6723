"""What the agent says about the machine it runs on: capabilities (once per connect) and telemetry."""

from __future__ import annotations

import os
import platform

import psutil

from agent.config import AgentConfig
from agent.emulation import emulator
from agent.runtimes import available_formats, missing_runtimes, ort_providers, tensorrt_installed
from common.messages import DeviceCaps, Telemetry

_PROCESS = psutil.Process()


def build_caps(cfg: AgentConfig) -> DeviceCaps:
    """Capabilities: the profile's claims plus what this machine actually has installed."""
    profile = cfg.device_profile
    formats = [f for f in profile.formats if f in available_formats()]
    runtimes = (["onnxruntime"] if "onnx" in formats else []) + (["litert"] if "tflite" in formats else [])
    if "onnx" in formats and tensorrt_installed():  # builds engines from artifacts with a TensorRT recipe
        runtimes.append("tensorrt")
    return DeviceCaps(
        device_id=cfg.device_id,
        profile=profile.id,
        arch=platform.machine() or profile.arch,
        isa_features=list(profile.isa_features),
        cores=os.cpu_count() or profile.cores,
        ram_mb=int(psutil.virtual_memory().total / 2**20),
        runtimes=runtimes,
        execution_providers=[p for p in ort_providers() if p in profile.execution_providers] or ort_providers(),
        formats=formats,
        missing_runtimes=sorted(missing_runtimes(list(profile.runtimes), profile.arch)),
        emulated=emulator(),
    )


def temperature_c() -> float | None:
    """Highest current temperature sensor reading, where the OS exposes one."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        readings = [t.current for entries in reader().values() for t in entries if t.current]
    except (OSError, RuntimeError):
        return None
    return max(readings) if readings else None


def read_telemetry(device_id: str, latency_ms_p50: float | None = None) -> Telemetry:
    """One telemetry sample (CPU since the previous sample, memory, this process's RSS)."""
    return Telemetry(
        device_id=device_id,
        cpu_percent=psutil.cpu_percent(interval=None),
        mem_percent=psutil.virtual_memory().percent,
        rss_mb=round(_PROCESS.memory_info().rss / 2**20, 2),
        temperature_c=temperature_c(),
        latency_ms_p50=latency_ms_p50,
    )
