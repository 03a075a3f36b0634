"""A web host serving good PDFs, web pages and every failure a crawler meets (stage 1's downloads)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from aiohttp import web

from harness.loopback import LoopbackServer

PAGE = (b"<!DOCTYPE html><html><head><title>Iron in Pregnancy &amp; After</title></head><body>"
        b"<nav><a href='/'>Home</a> | <a href='/guides'>Guides</a></nav><main><h1>Iron in pregnancy</h1>"
        b"<p>Iron carries oxygen in the blood; pregnancy nearly doubles the amount the body needs.</p>"
        b"<h2>Food sources</h2><p>Red meat, lentils, beans and fortified cereals are good sources of iron.</p>"
        b"</main><footer>&copy; Example Health Service</footer></body></html>")


def pdf_host(pdfs: dict[str, bytes], latency_s: float = 0.0) -> LoopbackServer:
    """A web host with good PDFs at /pdf/<name> and every failure a crawler meets.

    /slow.pdf sleeps 5 s before answering; /flaky-500.pdf and /flaky-reset.pdf fail on the
    first request (the reset one on the first two: aiohttp itself retries a dropped pooled
    connection once) and then serve a PDF; /rate-limited.pdf answers 429 with Retry-After: 1
    once; /missing.pdf 404; /always-500.pdf 500; /html.pdf HTML labelled as a PDF;
    /truncated.pdf a PDF cut in half; /huge.pdf streams 8 MiB without a Content-Length;
    /huge-declared.pdf declares 8 MiB; /redirect.pdf → /pdf/<first>; /redirect-loop.pdf
    loops; /redirect-private.pdf → http://localhost:<port>/pdf/<first> (a hostname, so the
    resolver guard is what refuses it). ``server.most_in_flight`` is the most /pdf/ requests
    served at once.

    Web pages, each served as ``text/html``: /page/guide.html a page (``PAGE``), /page/moved.html
    → /page/guide.html, /page/binary.html a PNG's bytes, /page/empty.html nothing, /page/report.html
    the first PDF.
    """
    first = next(iter(pdfs.values()))
    attempts: dict[str, int] = defaultdict(int)
    app = web.Application()
    server = LoopbackServer(app)
    server.in_flight = server.most_in_flight = 0  # type: ignore[attr-defined]

    async def delay() -> None:
        if latency_s:
            await asyncio.sleep(latency_s)

    async def good(request: web.Request) -> web.Response:
        server.in_flight += 1  # type: ignore[attr-defined]
        server.most_in_flight = max(server.most_in_flight, server.in_flight)  # type: ignore[attr-defined]
        try:
            await delay()
        finally:
            server.in_flight -= 1  # type: ignore[attr-defined]
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

    def served_as_html(body: bytes):
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="text/html")
        return handler

    first_name = next(iter(pdfs))
    app.router.add_get("/page/guide.html", served_as_html(PAGE))
    app.router.add_get("/page/moved.html", redirect(lambda: "/page/guide.html"))
    app.router.add_get("/page/binary.html", served_as_html(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8))
    app.router.add_get("/page/empty.html", served_as_html(b""))
    app.router.add_get("/page/report.html", served_as_html(first))
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
