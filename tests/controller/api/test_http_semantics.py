"""HTTP semantics the fuzzers flagged (issue #13 I): a 405 lists every method the path serves."""

from __future__ import annotations

import re

import httpx

from tests.controller.api.conftest import Controller

CANDIDATES = ("PATCH", "PUT", "DELETE", "POST", "GET")


def test_every_405_lists_the_complete_allow_header(controller: Controller) -> None:
    schema = httpx.get(controller.url + "/openapi.json").json()
    checked = 0
    with controller.client("admin") as api:
        for path, ops in schema["paths"].items():
            served = {m.upper() for m in ops if m in ("get", "post", "put", "delete", "patch")}
            if "GET" in served:
                served.add("HEAD")
            method = next(m for m in CANDIDATES if m not in served)
            url = re.sub(r"\{[^}]+\}", "x1", path)
            r = api.request(method, controller.url + url)
            assert r.status_code == 405, (method, url, r.status_code)
            allow = set(r.headers["allow"].split(", "))
            assert served <= allow, (method, url, r.headers["allow"])  # complete ...
            assert r.json()["data"]["code"] == "method_not_allowed"
            for other in allow - {"HEAD"} - served:  # ... and truthful (another route serves the literal path)
                assert api.request(other, controller.url + url).status_code != 405, (other, url)
            checked += 1
    assert checked >= 30
