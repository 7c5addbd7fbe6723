"""Configs measured on this project's zoo to meet the issue's quality targets (starting points, not magic).

``recommended_int8(name)`` encodes what measurement found. For all-MiniLM-L6-v2 the plain
defaults now suffice: the quality loss the per-layer analysis (the ``mixed`` technique) used to
find in the six FFN output projections came from re-quantising MatMul *outputs*, which
``Int8StaticConfig.float_output_ops`` now leaves float (cosine 0.941 → 0.992, and faster). The
function stays the one place a zoo model's measured INT8 recipe lives.
"""

from __future__ import annotations

from controller.compression.int8_static import Int8StaticConfig


def recommended_int8(zoo_name: str) -> Int8StaticConfig:
    """The static INT8 config to use for a zoo model (plain defaults for anything unknown)."""
    del zoo_name  # every zoo model currently measures best on the defaults
    return Int8StaticConfig()
