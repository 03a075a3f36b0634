"""Real HTTP servers on loopback that stand in for the web and for SerpAPI in tests and benchmarks.

Each runs an aiohttp application on its own event loop in a background thread, on a free
port of 127.0.0.1, and records every request it receives so tests can count attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from aiohttp import web


@dataclass
class Hit:
    path: str
    at: float
    query: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on right now (for servers run as separate processes)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LoopbackServer:
    """Start an aiohttp app on 127.0.0.1:<free port> in a thread; stop it on exit."""

    def __init__(self, app: web.Application, port: int = 0) -> None:
        self.app = app
        self.hits: list[Hit] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = port

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
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop serving (idempotent: a test may stop a server early to simulate a crash)."""
        if not self._thread.is_alive():
            return
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
    resolver guard is what refuses it). ``server.most_in_flight`` is the most /pdf/ requests
    served at once.
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


class LLMFaults:
    """A queue of failures served to the next requests, in order; then normal answers.

    "429" (Retry-After: 1), "500", "timeout" (answers after 3 s), "malformed" (not JSON),
    "partial" (pairs without answers), "ungrounded" (answers not in the source), "401".
    ``outage`` makes every request a 503 until it is switched off.
    """

    def __init__(self, faults: list[str] | None = None) -> None:
        self.queue = list(faults or [])
        self.outage = False

    def next(self) -> str | None:
        if self.outage:
            return "503"
        return self.queue.pop(0) if self.queue else None


def fake_llm(kind: str, api_key: str | None = None, faults: LLMFaults | None = None,
             latency_s: float = 0.0) -> LoopbackServer:
    """A loopback LLM speaking Gemini's generateContent or OpenAI's chat completions protocol.

    Normal answers come from the project's deterministic extractive generator, so they are
    valid and grounded; every request's prompt is recorded (``server.prompts``) so tests can
    count calls per group.
    """
    import json as _json

    from tasks import offline_llm

    faults = faults or LLMFaults()
    app = web.Application()
    server = LoopbackServer(app)
    server.prompts = []  # type: ignore[attr-defined]
    server.bodies = []  # type: ignore[attr-defined]

    def error(status: int, message: str, headers: dict | None = None) -> web.Response:
        if kind == "gemini":
            body = {"error": {"code": status, "message": message, "status": "UNAVAILABLE"}}
        else:
            body = {"error": {"message": message, "type": "server_error", "code": status}}
        return web.json_response(body, status=status, headers=headers)

    async def answer(prompt: str, authorised: bool) -> tuple[str | None, web.Response | None]:
        if latency_s:
            await asyncio.sleep(latency_s)
        if not authorised:
            return None, error(401, "API key not valid. Please pass a valid API key.")
        fault = faults.next()
        if fault in ("429", "500", "503", "401"):
            return None, error(int(fault), f"injected {fault}", {"Retry-After": "1"} if fault == "429" else None)
        if fault == "timeout":
            await asyncio.sleep(3)
        if fault == "malformed":
            return "Sure! Here are some questions: {pairs: [", None
        if fault == "partial":
            return _json.dumps({"pairs": [{"question": "What is it?"}, {"question": "Why?", "type": "why"}]}), None
        if fault == "ungrounded":
            return _json.dumps({"pairs": [{"question": "What is the capital of Mars?",
                                           "answer": "Olympus City on the red volcanic plains.", "type": "what"}]}), None
        return offline_llm.respond(prompt), None

    async def gemini(request: web.Request) -> web.Response:
        body = await request.json()
        server.bodies.append(body)
        prompt = "".join(part.get("text", "") for content in body["contents"] for part in content["parts"])
        server.prompts.append(prompt)
        text, failure = await answer(prompt, api_key is None or request.headers.get("x-goog-api-key") == api_key)
        if failure is not None:
            return failure
        return web.json_response({
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": len(prompt.split()), "candidatesTokenCount": len(text.split()),
                              "totalTokenCount": len(prompt.split()) + len(text.split())},
            "modelVersion": request.match_info["model"],
        })

    async def openai(request: web.Request) -> web.Response:
        body = await request.json()
        server.bodies.append(body)
        prompt = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        server.prompts.append(prompt)
        authorised = api_key is None or request.headers.get("Authorization") == f"Bearer {api_key}"
        text, failure = await answer(prompt, authorised)
        if failure is not None:
            return failure
        return web.json_response({
            "id": f"chatcmpl-{len(server.prompts)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())},
        })

    app.router.add_post(r"/{version:v1(?:beta)?}/models/{model:[^/:]+}:generateContent", gemini)
    app.router.add_post("/v1/chat/completions", openai)
    return server


class FakeHub:
    """The Hugging Face Hub API as huggingface_hub 2.x uses it to list, create and commit to model repos.

    ``/api/models`` (author/search/cardData), ``/api/repos/create``, ``/api/models/<repo>/preupload/<rev>``
    (every file "regular", so uploads are inline base64 in the commit) and ``/api/models/<repo>/commit/<rev>``
    (NDJSON). Bearer token checked on every call; repos and their files are kept in ``repos``.
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, dict] = {}
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/api/models", self._list)
        app.router.add_post("/api/repos/create", self._create)
        app.router.add_post("/api/validate-yaml", self._validate_yaml)
        app.router.add_post("/api/models/{owner}/{name}/preupload/{revision}", self._preupload)
        app.router.add_post("/api/models/{owner}/{name}/commit/{revision}", self._commit)
        self.server = LoopbackServer(app)

    def __enter__(self) -> FakeHub:
        self.server.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.__exit__(*exc_info)

    @property
    def url(self) -> str:
        return self.server.url

    def _denied(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "Invalid credentials in Authorization header"}, status=401)
        return None

    async def _list(self, request: web.Request) -> web.Response:
        from huggingface_hub import ModelCard

        if denied := self._denied(request):
            return denied
        author, search = request.query.get("author", ""), request.query.get("search", "")
        found = []
        for repo_id, repo in self.repos.items():
            owner = repo_id.split("/")[0]
            if (not author or owner == author) and search in repo_id:
                item = {"id": repo_id, "_id": repo_id, "private": repo["private"], "tags": []}
                if request.query.get("cardData") and "README.md" in repo["files"]:
                    item["cardData"] = ModelCard(repo["files"]["README.md"].decode()).data.to_dict()
                found.append(item)
        return web.json_response(found)

    async def _create(self, request: web.Request) -> web.Response:
        if denied := self._denied(request):
            return denied
        body = await request.json()
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if repo_id in self.repos:
            return web.json_response({"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"},
                                     status=409)
        self.repos[repo_id] = {"private": body.get("visibility", "public") == "private" or bool(body.get("private")),
                               "files": {}, "commits": []}
        return web.json_response({"url": f"{self.url}/{repo_id}", "name": repo_id})

    async def _validate_yaml(self, request: web.Request) -> web.Response:
        import yaml

        content = (await request.json())["content"]
        try:
            metadata = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
        except yaml.YAMLError as error:
            return web.json_response({"errors": [{"message": f"invalid YAML: {error}"}]}, status=400)
        if not isinstance(metadata, dict):
            return web.json_response({"errors": [{"message": "metadata must be a mapping"}]}, status=400)
        return web.json_response({"warnings": [] if metadata else [{"message": "empty or missing yaml metadata"}]})

    async def _preupload(self, request: web.Request) -> web.Response:
        if denied := self._denied(request):
            return denied
        body = await request.json()
        return web.json_response({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                            for f in body["files"]]})

    async def _commit(self, request: web.Request) -> web.Response:
        import base64
        import json as _json

        if denied := self._denied(request):
            return denied
        repo_id = f"{request.match_info['owner']}/{request.match_info['name']}"
        if repo_id not in self.repos:
            return web.json_response({"error": "Repository not found"}, status=404)
        summary, files = "", {}
        for line in (await request.read()).splitlines():
            entry = _json.loads(line)
            if entry["key"] == "header":
                summary = entry["value"]["summary"]
            elif entry["key"] == "file":
                files[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
        repo = self.repos[repo_id]
        repo["files"].update(files)
        oid = f"{len(repo['commits']) + 1:040x}"
        repo["commits"].append({"summary": summary, "files": sorted(files), "oid": oid})
        return web.json_response({"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                                  "pullRequestUrl": None})


@dataclass
class VLLMFaults:
    latency_s: float = 0.0
    refuse_load: set[str] = field(default_factory=set)   # adapter names whose load fails like a bad adapter
    healthy: bool = True                                   # False: /health 503 and chat 503 (engine dead)
    empty_answers: set[str] = field(default_factory=set)  # adapters that answer "" (a broken adapter)


def fake_vllm(base_model: str, faults: VLLMFaults | None = None, port: int = 0) -> LoopbackServer:
    """vLLM's OpenAI-compatible server with runtime LoRA updating, answering deterministically.

    /health, /metrics, /v1/models (base + loaded adapters), /v1/chat/completions (404 for a model
    not loaded), /v1/load_lora_adapter and /v1/unload_lora_adapter with vLLM's error shapes.
    The answer names the model that produced it, so a test can tell base and adapters apart.
    """
    faults = faults or VLLMFaults()
    app = web.Application()
    adapters: dict[str, str] = {}
    requests: list[dict] = []

    def error(message: str, status: int, kind: str = "BadRequestError") -> web.Response:
        return web.json_response({"object": "error", "message": message, "type": kind, "code": status}, status=status)

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200 if faults.healthy else 503)

    async def models(request: web.Request) -> web.Response:
        data = [{"id": base_model, "object": "model", "owned_by": "vllm", "root": base_model, "parent": None}]
        data += [{"id": name, "object": "model", "owned_by": "vllm", "root": path, "parent": base_model}
                 for name, path in adapters.items()]
        return web.json_response({"object": "list", "data": data})

    async def chat(request: web.Request) -> web.Response:
        if not faults.healthy:
            return error("engine is dead", 503, "ServiceUnavailableError")
        body = await request.json()
        model = body["model"]
        if model != base_model and model not in adapters:
            return error(f"The model `{model}` does not exist.", 404, "NotFoundError")
        if faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        requests.append({"model": model, "system": system, "question": user,
                                "max_tokens": body.get("max_tokens"), "temperature": body.get("temperature")})
        answer = "" if model in faults.empty_answers else f"[{model}] {user}"
        return web.json_response({
            "id": f"chatcmpl-{len(requests)}", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len((system + user).split()), "completion_tokens": len(answer.split()),
                      "total_tokens": len((system + user + answer).split())}})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="# TYPE vllm:num_requests_running gauge\n"
                                 f'vllm:num_requests_running{{model_name="{base_model}"}} 0\n'
                                 "# TYPE vllm:request_success_total counter\n"
                                 f'vllm:request_success_total{{model_name="{base_model}"}} {len(requests)}\n',
                            content_type="text/plain")

    async def load(request: web.Request) -> web.Response:
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        if name in adapters:
            return error(f"The lora adapter '{name}' has already been loaded.", 400)
        if name in faults.refuse_load:
            return error(f"Loading lora {name} failed: No adapter found for {path}", 400)
        adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload(request: web.Request) -> web.Response:
        name = (await request.json()).get("lora_name")
        if adapters.pop(name, None) is None:
            return error(f"The lora adapter '{name}' cannot be found.", 404, "NotFoundError")
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/load_lora_adapter", load)
    app.router.add_post("/v1/unload_lora_adapter", unload)
    server = LoopbackServer(app, port)
    server.adapters, server.requests, server.faults = adapters, requests, faults
    return server


class GatewayProcess:
    """``python -m serving`` as a real process on a free loopback port; waits for /health, stops on exit."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...] = (), cwd: str | None = None,
                 ready_timeout_s: float = 120) -> None:
        import os

        self.port = free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.args, self.cwd, self.ready_timeout_s = args, cwd, ready_timeout_s
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GatewayProcess:
        import subprocess
        import sys

        import httpx

        from tests.conftest import REPO

        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            cwd=self.cwd or REPO, env={**self.env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}: {self.process.stdout.read()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("gateway did not come up")

    def wait_ready(self, timeout_s: float = 120) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"gateway not ready after {timeout_s} s: {httpx.get(f'{self.url}/ready').json()}")

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except Exception:
                self.process.kill()
                self.process.wait(timeout=5)


class LoadGenerator:
    """Keeps ``concurrency`` clients asking the gateway until stopped; counts statuses and answering adapters,
    and keeps each request's latency (s)."""

    def __init__(self, url: str, concurrency: int = 16) -> None:
        self.url, self.concurrency = url, concurrency
        self.statuses: Counter = Counter()
        self.adapters: Counter = Counter()
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self, client: httpx.AsyncClient, n: int) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                reply = await client.post(f"{self.url}/ask", json={"question": f"Question {n}?"})
                self.latencies.append(time.perf_counter() - started)
                self.statuses[reply.status_code] += 1
                if reply.status_code == 200:
                    self.adapters[reply.json()["adapter"]] += 1
            except httpx.HTTPError as error:
                self.statuses[type(error).__name__] += 1

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(*(self._client(client, n) for n in range(self.concurrency)))

    def __enter__(self) -> LoadGenerator:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


class PrefectServer:
    """A real Prefect API server (SQLite under ``home``) on a free loopback port; stopped with its children on exit."""

    def __init__(self, home) -> None:
        import os

        self.port = free_port()
        self.env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{self.port}/api",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                    "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(self.port)}
        self.process = None

    @property
    def api_url(self) -> str:
        return self.env["PREFECT_API_URL"]

    def __enter__(self) -> PrefectServer:
        import subprocess
        import sys

        import httpx

        self.process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                         "--port", str(self.port)], env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.3)
        self.__exit__()
        raise RuntimeError("the Prefect server did not start in 120 s")

    def __exit__(self, *exc_info: object) -> None:
        import os
        import signal
        import subprocess

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


class DockerEngine:
    """The project's private Docker engine (scripts/docker_engine.sh) with the local base image made.

    Started (and the engine installed) when it is not running; stopped on exit only if this started it,
    so a developer's running engine is left alone. ``host`` is its DOCKER_HOST.
    """

    BASE_IMAGE = "local/python:3.11-bookworm"

    def __init__(self) -> None:
        import os
        from pathlib import Path

        self.script = Path(__file__).resolve().parent.parent / "scripts" / "docker_engine.sh"
        self.started_here = not (Path(os.environ.get("DOCKER_ENGINE_RUN", "/tmp/domain-llm-docker")) / "dockerd.pid").is_file()
        self.host = ""

    def _run(self, command: str) -> str:
        import os
        import subprocess

        result = subprocess.run(["bash", str(self.script), command], capture_output=True, text=True, timeout=900,
                                env={**os.environ, **({"DOCKER_HOST": self.host} if self.host else {})})
        if result.returncode != 0:
            raise RuntimeError(f"docker_engine.sh {command}: {result.stderr[-3000:]}")
        return result.stdout

    def __enter__(self) -> DockerEngine:
        self.host = self._run("start").strip().split("DOCKER_HOST=", 1)[1]
        try:
            self._run("base")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.started_here:
            self._run("stop")


@contextlib.contextmanager
def cpu_torch_buildargs():
    """Build args that give Dockerfile.gpu the CPU torch build: this machine's wheel (not on any index)
    served on loopback as find-links when it is there, else PyTorch's CPU index."""
    import subprocess
    import sys
    from pathlib import Path

    wheels = Path("/opt/wheels")
    if not any(wheels.glob("torch-*+cpu-*.whl")):
        yield {"PIP_EXTRA_INDEX_URL": "https://download.pytorch.org/whl/cpu"}
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(wheels)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield {"PIP_FIND_LINKS": f"http://127.0.0.1:{port}/"}
    finally:
        server.terminate()
        server.wait(timeout=10)
