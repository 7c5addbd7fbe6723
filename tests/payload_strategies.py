"""Hypothesis strategies for hostile MQTT payloads, shared by the controller and agent fuzz tests.

Three families, mixed: raw bytes (not JSON at all), arbitrary JSON values (wrong shapes), and
*near-valid* messages: a valid payload of the right type with one field replaced by a hostile
value (huge integers, deep nesting, long strings, wrong types, NaN), which is what gets past the
first checks and into the registry or the update machine.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

SHA = "ab" * 32

HOSTILE_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63 - 2, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-1),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),  # native libs may set flush-to-zero
    st.text(max_size=40), st.text(min_size=2000, max_size=5000),
)
JSON = st.recursive(HOSTILE_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)), max_leaves=20)


def deep(depth: int, opener: str = "[") -> bytes:
    """``depth`` nested arrays or objects: the 400 KB RecursionError payload of issue #13 E, scaled."""
    if opener == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def valid_examples(device: str = "dev-1", deployment: str = "d-1") -> dict[str, dict[str, Any]]:
    """One valid payload (as JSON dicts) per message kind a side consumes."""
    metrics = {"latency_p50_ms": 1.0, "latency_p95_ms": 2.0, "load_ms": 3.0, "peak_rss_delta_mb": 4.0,
               "quality": 0.99, "quality_metric": "cosine", "runs": 5}
    ref = {"model_id": "m", "version": "v1", "sha256": SHA, "format": "onnx"}
    return {
        "state": {"schema_version": 1, "device_id": device, "session_id": "s1", "seq": 1, "online": True,
                  "profile": "rpi4", "active": ref},
        "caps": {"schema_version": 1, "device_id": device, "profile": "rpi4", "arch": "aarch64", "cores": 4,
                 "ram_mb": 4096},
        "job": {"schema_version": 1, "device_id": device, "deployment_id": deployment, "seq": 3,
                "state": "download"},
        "bench": {"schema_version": 1, "device_id": device, "deployment_id": deployment, "candidate": ref,
                  "candidate_metrics": metrics, "decision": "commit"},
        "tm": {"schema_version": 1, "device_id": device, "cpu_percent": 1.0, "mem_percent": 2.0, "rss_mb": 3.0},
        "req": {"schema_version": 1, "deployment_id": deployment, "sha256": SHA, "missing": [0, 1]},
    }


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    """A valid message with one field replaced, added or dropped."""
    data = dict(valid)
    action = draw(st.sampled_from(["replace", "add", "drop", "nest"]))
    key = draw(st.sampled_from(sorted(data)))
    if action == "replace":
        data[key] = draw(JSON)
    elif action == "add":
        data[draw(st.text(min_size=1, max_size=10))] = draw(JSON)
    elif action == "drop":
        del data[key]
    else:
        data[key] = json.loads(deep(draw(st.integers(min_value=20, max_value=200))))
    return json.dumps(data, allow_nan=True).encode()


def payloads(valid: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Bytes, JSON values, near-valid messages and deep nesting, for one message kind."""
    return st.one_of(
        st.binary(max_size=300),
        JSON.map(lambda v: json.dumps(v, allow_nan=True).encode()),
        mutated(valid),
        st.integers(min_value=30, max_value=30_000).map(deep),
        st.integers(min_value=30, max_value=30_000).map(lambda n: deep(n, "{")),
    )
