"""Schemathesis hooks (``SCHEMATHESIS_HOOKS``): steer part of the generated bodies onto a seeded model.

Random UUIDs never name a stored version, so without this every job request stopped at 422 and the
job paths (queue, runner, cancel, lineage) were never fuzzed. Three in four bodies that carry a
``version_id`` get the seeded one, and half of the compression requests get a technique that is
installed (the test plug-in's ``quant-test-slow`` with ``seconds=0``), so jobs are really accepted.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import schemathesis

SEED_VERSION = os.environ.get("EDGEFLEET_FUZZ_VERSION", "")


def _coin(body: Any, salt: str, percent: int = 50) -> bool:
    digest = hashlib.sha256((salt + json.dumps(body, sort_keys=True, default=str)).encode()).digest()
    return digest[0] * 100 < percent * 256


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if not isinstance(body, dict) or not SEED_VERSION:
        return body
    if "version_id" in body and _coin(body, "v", 75):
        body = {**body, "version_id": SEED_VERSION}
        path = getattr(getattr(context, "operation", None), "path", "")
        if path.startswith("/api/v1/compression/") and "technique" in body and _coin(body, "t"):
            body = {"version_id": SEED_VERSION, "technique": "quant-test-slow", "config": {"seconds": 0}}
    return body
