"""SerpAPI's search endpoint, paging and key check included (stage 1's search)."""

from __future__ import annotations

from aiohttp import web

from harness.loopback import LoopbackServer


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
