"""Request body limit, enforced before the body is parsed or spooled to disk."""
from __future__ import annotations

import json


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413 — at once when Content-Length says
    so, else as soon as the streamed body passes the limit (the app then sees a disconnect and
    nothing it answers is sent)."""

    def __init__(self, app, limit: int, shown: str,
                 routes: dict[tuple[str, str], tuple[int, str]] | None = None):
        self.app, self.limit, self.shown = app, limit, shown  # shown: the limit in words
        self.routes = routes or {}  # (method, path) → its own (limit, shown): uploads

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, shown = self.routes.get((scope.get("method"), scope.get("path")),
                                       (self.limit, self.shown))
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._reject(send, int(length), shown)
        seen, rejected = 0, False

        async def limited():
            nonlocal seen, rejected
            msg = await receive()
            if msg["type"] == "http.request" and not rejected:
                seen += len(msg.get("body", b""))
                if seen > limit:
                    rejected = True
                    await self._reject(send, None, shown)
                    return {"type": "http.disconnect"}
            return msg

        async def guarded(msg):
            if not rejected:
                await send(msg)

        await self.app(scope, limited, guarded)

    async def _reject(self, send, length: int | None, shown: str) -> None:
        size = f"is {length} bytes" if length is not None else "goes past that"
        body = json.dumps({"detail": f"uploads are limited to {shown}; this request body "
                                     f"{size}"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
