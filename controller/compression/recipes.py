"""Configs measured on this project's zoo to meet the issue's quality targets (starting points, not magic).

``recommended_int8(name)`` encodes what the per-layer sensitivity analysis (the ``mixed``
technique) found: in all-MiniLM-L6-v2 the six FFN output projections (after GELU, whose
activations carry outliers) cost 0.5-1.5 points of cosine each when their activations are
quantised, so they keep INT8 weights with float activations (cosine 0.946 → 0.992, size unchanged).
"""

from __future__ import annotations

from controller.compression.int8_static import Int8StaticConfig

MINILM_FFN_OUTPUT_NODES = tuple(f"/bert/encoder/layer.{i}/output/dense/MatMul" for i in range(6))


def recommended_int8(zoo_name: str) -> Int8StaticConfig:
    """The static INT8 config to use for a zoo model (plain defaults for anything unknown)."""
    if zoo_name == "minilm":
        return Int8StaticConfig(weight_only_nodes=MINILM_FFN_OUTPUT_NODES)
    return Int8StaticConfig()
