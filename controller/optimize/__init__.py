"""Automatic optimisation for a device: model + profile + quality floor → measured Pareto front.

One door::

    from controller.optimize import optimize, Constraints, Budget

    result = optimize("mnist-cnn", "rpi4", constraints=Constraints(quality_floor=0.98),
                      strategy="nsga2", budget=Budget(trials=12), out="build/opt-mnist")
    result.recommended            # fastest point meeting the floor and the profile's SLO (or None)
    result.front                  # non-dominated points: quality, latency/size/memory ratios vs FP32
    result.write("build/opt-mnist")   # pareto.json + search.json

The space is compositions of the existing techniques (``controller.compression``): an
architecture stage (width / depth pruning, narrow student, low-rank — each recovered by
fine-tuning or distillation) then a precision stage (FP32, FP16, static INT8 with calibration
method and per-layer fall-backs, dynamic INT8, INT4 weight-only), limited by what the profile
runs. Candidates are measured on this host with the profile's ONNX Runtime tuning. Strategies:
``nsga2``, ``tpe``, ``random`` (optuna samplers) and ``rl`` (a REINFORCE policy for per-layer
precision). See docs/optimize.md.
"""

from controller.optimize.errors import CandidateFailed, InvalidSearchError, OptimizeError, UnsupportedProfileError
from controller.optimize.measure import BuildOptions
from controller.optimize.metrics import QualityMetric, get_metric, metric_names, register_metric
from controller.optimize.problem import OBJECTIVES, STRATEGIES, Budget, Constraints
from controller.optimize.result import SearchResult
from controller.optimize.search import optimize
from controller.optimize.space import Candidate, SearchSpace, build_space

__all__ = [
    "OBJECTIVES", "STRATEGIES", "Budget", "BuildOptions", "Candidate", "CandidateFailed", "Constraints",
    "InvalidSearchError", "OptimizeError", "QualityMetric", "SearchResult", "SearchSpace",
    "UnsupportedProfileError", "build_space", "get_metric", "metric_names", "optimize", "register_metric",
]
