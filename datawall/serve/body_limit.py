"""An ASGI middleware that refuses request bodies over a byte limit before anything parses them.

A 10 MB prompt used to be read, parsed as JSON, validated and tokenized on the event loop before its length
was checked, and every other request waited behind it. Here a body whose Content-Length is over the limit
is answered at once, without reading it; a body without one is counted chunk by chunk as it arrives (the
loop serves others between chunks) and answered as soon as it passes the limit. The answer closes the
connection, so the rest of the upload is never parsed (reading it to keep the connection cost the server
4x more per refused 10 MB body): httpx (so the openai client), urllib3 and curl read the 413 after their
write fails, as servers that answer early expect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Answers `too_large(size)` (HTTP 413; size None when not known) for a body over max_bytes and passes the
    others on, replayed from memory."""

    def __init__(self, app: ASGIApp, max_bytes: int, too_large: Callable[[int | None], Response]):
        self.app, self.max_bytes, self.too_large = app, max_bytes, too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _closing(self.too_large(declared))(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away mid-upload
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await _closing(self.too_large(None))(scope, receive, send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _closing(response: Response) -> Response:
    response.headers["connection"] = "close"  # uvicorn closes after it instead of parsing the unread body
    return response


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A receive that gives the buffered body once, then the client's own messages (its disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
