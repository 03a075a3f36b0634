"""Real HTTP servers on loopback that stand in for the web and for SerpAPI in tests and benchmarks.

Each runs an aiohttp application on its own event loop in a background thread, on a free
port of 127.0.0.1, and records every request it receives so tests can count attempts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Hit:
    path: str
    at: float
    query: dict[str, str] = field(default_factory=dict)


class LoopbackServer:
    """Start an aiohttp app on 127.0.0.1:<free port> in a thread; stop it on exit."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.hits: list[Hit] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

        @web.middleware
        async def record(request: web.Request, handler: Callable) -> web.StreamResponse:
            self.hits.append(Hit(request.path, time.monotonic(), dict(request.query)))
            return await handler(request)

        app.middlewares.append(record)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, path: str) -> int:
        return sum(1 for hit in self.hits if hit.path == path)

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def pdf_host(pdfs: dict[str, bytes], latency_s: float = 0.0) -> LoopbackServer:
    """A web host with good PDFs at /pdf/<name> and every failure a crawler meets.

    /slow.pdf sleeps 5 s before answering; /flaky-500.pdf and /flaky-reset.pdf fail on the
    first request (the reset one on the first two: aiohttp itself retries a dropped pooled
    connection once) and then serve a PDF; /rate-limited.pdf answers 429 with Retry-After: 1
    once; /missing.pdf 404; /always-500.pdf 500; /html.pdf HTML labelled as a PDF;
    /truncated.pdf a PDF cut in half; /huge.pdf streams 8 MiB without a Content-Length;
    /huge-declared.pdf declares 8 MiB; /redirect.pdf → /pdf/<first>; /redirect-loop.pdf
    loops; /redirect-private.pdf → http://localhost:<port>/pdf/<first> (a hostname, so the
    resolver guard is what refuses it).
    """
    first = next(iter(pdfs.values()))
    attempts: dict[str, int] = defaultdict(int)
    app = web.Application()
    server = LoopbackServer(app)

    async def delay() -> None:
        if latency_s:
            await asyncio.sleep(latency_s)

    async def good(request: web.Request) -> web.Response:
        await delay()
        name = request.match_info["name"]
        if name not in pdfs:
            raise web.HTTPNotFound()
        return web.Response(body=pdfs[name], content_type="application/pdf")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=first, content_type="application/pdf")

    def flaky(failure: Callable[[web.Request], web.StreamResponse], failures: int = 1):
        async def handler(request: web.Request) -> web.StreamResponse:
            attempts[request.path] += 1
            if attempts[request.path] <= failures:
                return failure(request)
            return web.Response(body=first, content_type="application/pdf")
        return handler

    def reset(request: web.Request) -> web.StreamResponse:
        request.transport.close()
        return web.Response(status=200)

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="failure")

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/pdf"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"%PDF-1.4\n")
        block = b"0" * 65536
        try:
            for _ in range(128):
                await response.write(block)
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    async def huge_declared(request: web.Request) -> web.Response:
        return web.Response(body=b"%PDF-1.4\n" + b"0" * (8 * 1024 * 1024), content_type="application/pdf")

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>Not a PDF</body></html>", content_type="application/pdf")

    async def truncated(request: web.Request) -> web.Response:
        return web.Response(body=first[: len(first) // 2], content_type="application/pdf")

    def redirect(target: Callable[[], str]):
        async def handler(request: web.Request) -> web.Response:
            raise web.HTTPFound(target())
        return handler

    first_name = next(iter(pdfs))
    app.router.add_get("/pdf/{name}", good)
    app.router.add_get("/slow.pdf", slow)
    app.router.add_get("/flaky-500.pdf", flaky(lambda r: web.Response(status=503, text="busy")))
    app.router.add_get("/flaky-reset.pdf", flaky(reset, failures=2))
    app.router.add_get("/rate-limited.pdf", flaky(lambda r: web.Response(status=429, headers={"Retry-After": "1"})))
    app.router.add_get("/status/{code}.pdf", status)
    app.router.add_get("/html.pdf", html)
    app.router.add_get("/truncated.pdf", truncated)
    app.router.add_get("/huge.pdf", huge)
    app.router.add_get("/huge-declared.pdf", huge_declared)
    app.router.add_get("/redirect.pdf", redirect(lambda: f"/pdf/{first_name}"))
    app.router.add_get("/redirect-loop.pdf", redirect(lambda: "/redirect-loop.pdf"))
    app.router.add_get("/redirect-private.pdf", redirect(lambda: f"http://localhost:{server.port}/pdf/{first_name}"))
    return server


def fake_serpapi(links: list[str], api_key: str, page_size_cap: int = 10) -> LoopbackServer:
    """SerpAPI's /search.json contract: ``q``, ``num``, ``start``, ``api_key``; organic_results + pagination.

    A wrong key gets SerpAPI's 401 ``{"error": "Invalid API key..."}``; a page past the end
    gets its 200 ``{"error": "Google hasn't returned any results for this query."}``.
    """
    app = web.Application()

    async def search(request: web.Request) -> web.Response:
        if request.query.get("api_key") != api_key:
            return web.json_response({"error": "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key"},
                                     status=401)
        start = int(request.query.get("start", 0))
        num = min(int(request.query.get("num", 10)), page_size_cap)
        page = links[start:start + num]
        if not page:
            return web.json_response({"search_metadata": {"status": "Success"},
                                      "error": "Google hasn't returned any results for this query."})
        body = {
            "search_metadata": {"status": "Success"},
            "search_parameters": {"q": request.query.get("q"), "engine": request.query.get("engine")},
            "organic_results": [{"position": start + i + 1, "title": f"Result {start + i + 1}", "link": link}
                                for i, link in enumerate(page)],
        }
        if start + num < len(links):
            body["serpapi_pagination"] = {"current": start // num + 1, "next": f"{request.url}&start={start + num}"}
        return web.json_response(body)

    app.router.add_get("/search", search)
    return LoopbackServer(app)
