"""Is this agent running under a CPU emulator? Then its timings describe the emulator, not the device.

Why it matters: CI and the demo run one agent as a real aarch64 process under ``qemu-aarch64``
(``controller.demo.aarch64``). Its outputs come from the real ARM kernels, so its golden-set quality
is a true figure; its latency is the emulator's and must never be compared with a device's. The
agent marks such figures (``DeviceCaps.emulated``, ``BenchMetrics.emulated``) and its regression
gate does not judge latency from them.

Detection needs no configuration: under qemu-user the kernel still sees the *emulator* process, so
``/proc/self/comm`` reads ``qemu-aarch64-st…`` while Python runs; failing that, an ARM or RISC-V
``platform.machine()`` next to an x86 CPU in ``/proc/cpuinfo`` gives it away.
"""

from __future__ import annotations

import functools
import platform

_X86_VENDORS = ("GenuineIntel", "AuthenticAMD", "HygonGenuine")


def _read(path: str, limit: int = 4096) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read(limit)
    except OSError:
        return ""


def detect(comm: str | None = None, machine: str | None = None, cpuinfo: str | None = None) -> str | None:
    """The emulator's name (``"qemu-user"``) or None on real hardware; arguments override what is read.

    Example:
        >>> detect(comm="qemu-aarch64-st", machine="aarch64", cpuinfo="")
        'qemu-user'
        >>> detect(comm="python3", machine="x86_64", cpuinfo="vendor_id : GenuineIntel")
    """
    comm = _read("/proc/self/comm").strip() if comm is None else comm
    if comm.startswith("qemu-"):
        return "qemu-user"
    machine = platform.machine() if machine is None else machine
    if machine.startswith(("aarch64", "arm", "riscv")):
        info = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
        if any(vendor in info for vendor in _X86_VENDORS):
            return "qemu-user"
    return None


@functools.cache
def emulator() -> str | None:
    """:func:`detect` for this process, read once."""
    return detect()
