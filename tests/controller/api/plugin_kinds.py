"""Test-only plug-ins loaded by the controller under test via EDGEFLEET_JOB_PLUGINS.

``quant-test-slow`` is a real compression technique registered the way every technique is
(config dataclass + ``@register_handler``): it copies the model while reporting progress in
small steps for ``seconds``, which gives the restart and cancellation tests a job that is
reliably mid-way when they act.
"""

from __future__ import annotations

import dataclasses
import shutil
import time

from controller.compression import CompressionConfig, TechniqueFamily, register_handler
from controller.compression.errors import InvalidConfigError


@dataclasses.dataclass(frozen=True)
class SlowCopyConfig(CompressionConfig):
    technique = "quant-test-slow"
    family = TechniqueFamily.QUANTIZE
    version: int = 1
    seconds: float = 2.0
    fail: bool = False

    def _validate(self) -> None:
        if not 0 <= self.seconds <= 600:
            raise InvalidConfigError(f"seconds={self.seconds!r} must be in [0, 600]")


@register_handler(SlowCopyConfig)
def _slow_copy(source, config: SlowCopyConfig, ctx) -> dict:
    steps = max(1, int(config.seconds / 0.05))
    for i in range(steps):
        ctx.progress(i / steps, f"copying ({i}/{steps})")
        time.sleep(config.seconds / steps)
        if config.fail and i > steps // 2:
            raise RuntimeError("quant-test-slow was asked to fail")
    shutil.copyfile(source.onnx_path, ctx.output)
    return {"copied": True}


JOB_KINDS: dict = {}
