"""Starlette answers a 405 with an Allow header naming the methods of the first route whose path matched, not of
every route on that path (one route a method: PUT and DELETE on one path answer "Allow: PUT"). HTTP clients and
schemathesis read Allow as the full list. Shared by the gateway (inside its one middleware) and the review app."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def allowed_methods(routes: list, path: str) -> bytes:
    """Every method some route takes on ``path``, as an Allow header's value."""
    methods = {m for r in routes if getattr(r, "methods", None) and r.path_regex.match(path) for m in r.methods}
    return ", ".join(sorted(methods)).encode()


def with_full_allow(headers: list, routes: list, path: str) -> list:
    return [(k, v) for k, v in headers if k.lower() != b"allow"] + [(b"allow", allowed_methods(routes, path))]


class FullAllowHeader:
    """Middleware: every 405 names all the methods its path takes."""

    def __init__(self, app: ASGIApp, routes: list) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                message["headers"] = with_full_allow(list(message.get("headers", ())), self.routes, scope["path"])
            await send(message)

        await self.app(scope, receive, send_allow)
