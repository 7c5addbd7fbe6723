"""Request body size cap as pure ASGI middleware, so an oversized upload is refused while it streams.

The upload route checks ``Content-Length`` up front, but a chunked request has none and
Starlette would spool the whole body to disk before the route runs. This middleware counts
bytes as they are received and answers 413 (in the envelope) as soon as the cap is passed.
"""

from __future__ import annotations

import json
from typing import Any

from controller.api.envelope import error_body


class BodyTooLarge(BaseException):  # noqa: N818 - a signal, not an error surfaced to callers
    """Raised from ``receive`` once the body passes the cap.

    A ``BaseException`` on purpose: FastAPI turns any ``Exception`` raised while parsing a
    form into a generic 400, and this must reach the middleware to become a 413.
    """


class BodySizeLimit:
    """Reject request bodies larger than ``max_bytes`` with a 413 envelope."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            body = json.dumps(error_body("too_large", f"request body exceeds the limit of {self.max_bytes} bytes "
                                                      "(EDGEFLEET_MAX_UPLOAD_MB)")).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
