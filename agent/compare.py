"""The regression gate: candidate vs the active model's baseline, both measured on this device.

One function, :func:`decide`, turns two sets of figures and the manifest's Thresholds into
commit or rollback with reasons a person can read (they carry the numbers). Ratios handle
scale; slacks keep timer and allocator noise on tiny models from causing rollbacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import ReasonCode
from common.manifest import Thresholds
from common.messages import BenchMetrics


@dataclass(frozen=True)
class Verdict:
    """Outcome of the gate; ``reason`` is the first failing check (OK when committing)."""

    commit: bool
    reason: ReasonCode
    reasons: list[str] = field(default_factory=list)

    @property
    def decision(self) -> str:
        """Wire value for BenchReport.decision."""
        return "commit" if self.commit else "rollback"

    @property
    def latency_only(self) -> bool:
        """Rejected for latency alone: the one check timer noise (a busy CPU) can fail, worth confirming."""
        failed = [r for r in self.reasons if not r.startswith("ok:") and ":" in r]
        return not self.commit and all(r.startswith(ReasonCode.REGRESSION_LATENCY.value) for r in failed)


def decide(
    candidate: BenchMetrics, baseline: BenchMetrics | None, thresholds: Thresholds, *, reinstating: bool = False
) -> Verdict:
    """Apply the thresholds.

    Without a baseline (first model on the device) only the absolute quality floor applies.
    ``reinstating`` (a fleet rollback to a model this device committed before): only the
    absolute quality floor applies too, because the model being abandoned is not the
    reference a rollback must beat; a rollback is never refused for being slower or bigger.
    Figures measured under an emulator (``BenchMetrics.emulated``) are not judged on latency:
    quality and memory still gate, and the reasons say latency was not compared.

    Example:
        >>> m = BenchMetrics(latency_p50_ms=1, latency_p95_ms=2, load_ms=5, peak_rss_delta_mb=10,
        ...                  quality=0.999, quality_metric="cosine", runs=10)
        >>> decide(m, m, Thresholds()).decision
        'commit'
    """
    failures: list[tuple[ReasonCode, str]] = []
    passes: list[str] = []

    def check(ok: bool, code: ReasonCode, text: str) -> None:
        if ok:
            passes.append(f"ok: {text}")
        else:
            failures.append((code, f"{code.value}: {text}"))

    t = thresholds
    check(
        candidate.quality >= t.min_quality,
        ReasonCode.REGRESSION_QUALITY,
        f"quality {candidate.quality:.4f} ({candidate.quality_metric}) vs floor {t.min_quality:.4f}",
    )
    if reinstating:
        passes.append(
            "rollback to a model this device committed before: relative latency/memory/quality gate not applied"
        )
    elif baseline is not None:
        q_floor = baseline.quality - t.max_quality_drop
        check(
            candidate.quality >= q_floor,
            ReasonCode.REGRESSION_QUALITY,
            f"quality {candidate.quality:.4f} vs baseline {baseline.quality:.4f} - {t.max_quality_drop} "
            f"= {q_floor:.4f}",
        )
        lat_limit = baseline.latency_p95_ms * t.max_latency_ratio + t.latency_slack_ms
        emulated = candidate.emulated or baseline.emulated
        if emulated:
            # An emulator's timings rank kernels by how well it translates them (qemu does floating
            # point in software: FP32 ran 5-8x slower than INT8 there), not by what the device would see.
            passes.append(
                f"latency not gated: measured under {emulated} (p95 {candidate.latency_p95_ms:.1f} ms vs "
                f"{baseline.latency_p95_ms:.1f} ms, emulated, not comparable)"
            )
        else:
            check(
                candidate.latency_p95_ms <= lat_limit,
                ReasonCode.REGRESSION_LATENCY,
                f"latency p95 {candidate.latency_p95_ms:.3f} ms vs limit {lat_limit:.3f} ms "
                f"(baseline {baseline.latency_p95_ms:.3f} x {t.max_latency_ratio} + {t.latency_slack_ms})",
            )
        mem_limit = baseline.peak_rss_delta_mb * t.max_memory_ratio + t.memory_slack_mb
        check(
            candidate.peak_rss_delta_mb <= mem_limit,
            ReasonCode.REGRESSION_MEMORY,
            f"peak RSS delta {candidate.peak_rss_delta_mb:.1f} MB vs limit {mem_limit:.1f} MB "
            f"(baseline {baseline.peak_rss_delta_mb:.1f} x {t.max_memory_ratio} + {t.memory_slack_mb})",
        )
    else:
        passes.append("no active model on this device: only the absolute quality floor applies")
    if failures:
        return Verdict(False, failures[0][0], [text for _, text in failures] + passes)
    return Verdict(True, ReasonCode.OK, passes)
