"""What the server checks before it parses anything: the API key, the body size, and how long headers may take.

``RequestGuard`` is a plain ASGI middleware that wraps the whole application:

* ``/v1/...`` needs a known API key (policy or admin key). Without one the answer is 401 at once: the body is
  never read, and the connection is closed so the client cannot keep streaming it.
* A declared ``Content-Length`` above the limit is answered 413 before reading; a chunked body is counted as
  its chunks arrive and refused (413) the moment it passes the limit, so at most ``max_body_bytes`` of an
  authenticated request is ever held. Endpoints outside ``/v1`` (``/health``, ``/docs``) take no body at all.
* Error bodies are short and never echo what the client sent.

``header_timeout_protocol`` is a uvicorn HTTP protocol that closes a connection whose request line and headers
have not all arrived within a few seconds (uvicorn's own keep-alive timeout covers idle connections only
between requests), so slow clients cannot pile up open connections.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MAX_DETAIL_CHARS = 300  # longest single message in an error body


def short(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def api_key_from_headers(headers: dict[str, str]) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


async def send_error(send, status: int, detail: str, extra_headers: dict[str, str] | None = None, close: bool = True) -> None:
    body = json.dumps({"detail": short(detail)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the body is not wanted: end the connection instead of draining it
        headers.append((b"connection", b"close"))
    headers += [(k.encode(), v.encode()) for k, v in (extra_headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """ASGI middleware: authentication and body limits before the application sees the request."""

    def __init__(self, app, is_known_key: Callable[[str | None], bool], max_body_bytes: int, protected_prefix: str = "/v1"):
        self.app = app
        self.is_known_key = is_known_key
        self.max_body_bytes = max_body_bytes
        self.prefix = protected_prefix

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        path = scope.get("path", "")
        protected = path == self.prefix or path.startswith(self.prefix + "/")
        if protected and not self.is_known_key(api_key_from_headers(headers)):
            return await send_error(send, 401, "missing or unknown API key (send 'Authorization: Bearer KEY')", {"www-authenticate": "Bearer"})
        limit = self.max_body_bytes if protected else 0
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if declared is not None:
            if not declared.strip().isdigit():
                return await send_error(send, 400, "invalid Content-Length header")
            if int(declared) > limit:
                what = f"{limit} bytes" if limit else "no body on this endpoint"
                return await send_error(send, 413, f"request body of {int(declared)} bytes is too large (limit: {what})")
            if int(declared) == 0 and not chunked:
                return await self.app(scope, receive, send)
        elif not chunked:
            return await self.app(scope, receive, send)
        if limit == 0:  # a chunked body where none is taken: refuse without waiting for it
            return await send_error(send, 413, "this endpoint takes no request body")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > limit:
                what = f"{limit} bytes" if limit else "no body on this endpoint"
                return await send_error(send, 413, f"request body is larger than the limit ({what})")
            if not message.get("more_body", False):
                break
        return await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive) -> Callable[[], Any]:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def validation_error_body(errors: list[dict[str, Any]], keep: int = 3) -> dict[str, Any]:
    """A bounded 422 body: the first few errors' location and message, never the input that caused them."""
    detail = [{"loc": [short(str(part), 40) for part in err.get("loc", ())][:6], "msg": short(str(err.get("msg", "")), 200),
               "type": short(str(err.get("type", "")), 40)} for err in errors[:keep]]
    return {"detail": detail, "errors": len(errors)}


def header_timeout_protocol(seconds: float):
    """A uvicorn h11 protocol class that drops connections whose request headers take longer than ``seconds``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):
        _header_timer = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(seconds, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def _awaiting_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            awaiting = self._awaiting_headers()
            previous = self.cycle
            super().data_received(data)
            if self.cycle is not previous and self.cycle is not None:  # a new request's headers are complete
                self._disarm()
            elif awaiting and self._awaiting_headers():
                self._arm()  # still waiting for a request line + headers: the clock keeps running

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # between requests uvicorn's keep-alive timeout applies; the next bytes re-arm us

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutH11Protocol
