"""The gateway app factory: ``create_app(settings, backend)``.

Cross-cutting concerns live here (request ids, metrics, request logs, error mapping, start-up
warm-up); the routes are in ``serving.routes``. No client ever gets a traceback: backend
errors map to 503/504/404, anything unexpected to a 500 with the request id to quote.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.asgi import with_full_allow
from core.gateway import GatewaySettings
from core.naming import version_label
from core.prompts import conversation, system_prompt
from serving.backends import Backend, BackendRefused, BackendTimeout, BackendUnavailable, Sampling, UnknownModel
from serving.errors import is_openai, openai_error
from serving.logs import Logs, configure_logging
from serving.metrics import GatewayMetrics
from serving.routes import admin, chat, public

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
WARMUP_ATTEMPTS = 5


@dataclass
class GatewayState:
    settings: GatewaySettings
    backend: Backend
    metrics: GatewayMetrics
    logs: Logs
    system: str
    active: str | None
    warmed: bool = False
    warmup_error: str | None = None
    in_flight: Counter = field(default_factory=Counter)
    started: int = field(default_factory=lambda: int(time.time()))

    @property
    def log(self) -> structlog.stdlib.BoundLogger:
        return self.logs.api

    @property
    def served_model(self) -> str:
        return self.active or self.settings.base_model

    def resolve(self, model: str) -> str:
        """The alias answers with the active version (and follows rollouts); any other name is the backend's."""
        return self.served_model if model == self.settings.alias else model

    def publish_model_info(self) -> None:
        self.metrics.set_model(self.backend.kind, self.settings.base_model, self.active or "",
                               version_label(self.active) or "")


async def _warm_up(state: GatewayState) -> None:
    """Load what the settings name and send one request, so /ready means a first request will be fast."""
    s = state.settings
    try:
        await state.backend.start()
        load = s.adapter_path is not None and s.adapter_name
        if load or s.warmup_on_start:
            while not await state.backend.ready():  # vLLM may still be loading the base model
                await asyncio.sleep(0.5)
        if load and s.adapter_name not in await state.backend.models():  # a restarted gateway finds it loaded
            await state.backend.load_adapter(s.adapter_name, s.adapter_path)
        for attempt in range(WARMUP_ATTEMPTS if s.warmup_on_start else 0):
            try:  # a first generation can outlast a short request timeout on a busy machine: try again
                await state.backend.chat(state.served_model, conversation(state.system, "Hello"), Sampling(4))
                break
            except BackendTimeout as error:
                state.warmup_error = f"{error} (warm-up attempt {attempt + 1} of {WARMUP_ATTEMPTS})"
                if attempt + 1 == WARMUP_ATTEMPTS:
                    raise
        state.warmup_error = None
        state.warmed = True
        state.log.info("gateway_ready", backend=state.backend.kind, model=state.served_model)
    except Exception as error:
        state.warmup_error = str(error)
        state.log.error("warmup_failed", error=str(error), cause=repr(error.__cause__) if error.__cause__ else None)


class Observe:
    """Request id, metrics and one log line per request, as plain ASGI.

    Not ``BaseHTTPMiddleware``: that runs each request through a task and a memory stream,
    which costs the gateway a share of its throughput under load.
    """

    def __init__(self, app: ASGIApp, state: GatewayState, routes: list) -> None:
        self.app, self.state, self.routes = app, state, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {}).update(request_id=request_id, usage=None)
        header = (b"x-request-id", request_id.encode())
        status, responded = 500, False
        metrics, started = self.state.metrics, time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                headers = [*message.get("headers", ()), header]
                if status == 405:
                    headers = with_full_allow(headers, self.routes, scope["path"])
                message["headers"] = headers
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if not responded:
                status = 499  # nginx's "client closed request": cancelled before any answer
            raise
        except Exception as error:
            self.state.log.exception("unhandled_error", path=scope["path"], error_type=type(error).__name__)
            metrics.errors.labels("internal").inc()
            status = 500
            if not responded:  # else the client sees the connection close mid-response
                body = (openai_error(500, f"internal error (request id {request_id})") if is_openai(scope["path"])
                        else {"detail": "internal error", "request_id": request_id})
                await JSONResponse(body, status_code=500, headers={"X-Request-ID": request_id})(scope, receive, send)
        finally:  # also when the request is cancelled (its server stopping, a test client closing a stream)
            metrics.in_flight.dec()
            structlog.contextvars.unbind_contextvars("request_id")
            self._record(scope, status, time.perf_counter() - started, request_id)

    def _record(self, scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        metrics = self.state.metrics
        route = scope.get("route")
        route_name = route.path if route is not None else "unmatched"
        metrics.requests.labels(route_name, scope["method"], str(status)).inc()
        metrics.latency.labels(route_name).observe(elapsed)
        usage = scope["state"].get("usage") or {}
        self.state.logs.requests.info("request", request_id=request_id, route=route_name, method=scope["method"],
                                      status=status, latency_ms=round(elapsed * 1000, 2),
                                      prompt_tokens=usage.get("prompt_tokens"),
                                      completion_tokens=usage.get("completion_tokens"), model=usage.get("model"),
                                      **{k: usage[k] for k in ("stream", "user") if k in usage})


def create_app(settings: GatewaySettings, backend: Backend) -> FastAPI:
    metrics = GatewayMetrics()
    logs = configure_logging(settings.logs_dir, settings.log_max_bytes, settings.log_backups,
                             f"-{os.getpid()}" if settings.workers > 1 else "")
    state = GatewayState(settings, backend, metrics, logs, system_prompt(settings.domain), settings.adapter_name)
    state.publish_model_info()
    log = state.log

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        warmup = asyncio.create_task(_warm_up(state))
        yield
        warmup.cancel()
        await backend.close()
        log.info("gateway_stopped")
        logs.close()

    app = FastAPI(title="Domain LLM gateway", version="1.0", lifespan=lifespan,
                  description="Ask the fine-tuned domain model; health, readiness and Prometheus metrics.")
    app.state.gateway = state
    app.add_middleware(Observe, state=state, routes=app.router.routes)

    def error(request: Request, status: int, kind: str, detail: str, code: str | None = None) -> JSONResponse:
        metrics.errors.labels(kind).inc()
        log.warning("request_failed", kind=kind, detail=detail)
        if is_openai(request.url.path):
            return JSONResponse(openai_error(status, detail, code=code), status_code=status)
        return JSONResponse({"detail": detail, "request_id": request.state.request_id}, status_code=status)

    @app.exception_handler(TimeoutError)
    async def over_time(request: Request, exc: TimeoutError) -> JSONResponse:
        return error(request, 504, "backend_timeout",
                     f"no answer within the gateway's request timeout ({settings.request_timeout_s:g} s)")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("invalid_request").inc()
        if is_openai(request.url.path):
            param, message = chat.describe(exc.errors(), backend.kind)
            return JSONResponse(openai_error(400, message, param), status_code=400)
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> JSONResponse:
        if is_openai(request.url.path):
            code = "invalid_api_key" if exc.status_code == 401 else None
            return JSONResponse(openai_error(exc.status_code, str(exc.detail), code=code), status_code=exc.status_code,
                                headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(BackendRefused)
    async def backend_refused(request: Request, exc: BackendRefused) -> JSONResponse:
        return error(request, 400, "backend_refused", str(exc))

    @app.exception_handler(BackendUnavailable)
    async def unavailable(request: Request, exc: BackendUnavailable) -> JSONResponse:
        return error(request, 503, "backend_unavailable", str(exc))

    @app.exception_handler(BackendTimeout)
    async def timed_out(request: Request, exc: BackendTimeout) -> JSONResponse:
        return error(request, 504, "backend_timeout", str(exc))

    @app.exception_handler(UnknownModel)
    async def unknown(request: Request, exc: UnknownModel) -> JSONResponse:
        return error(request, 404, "unknown_model", f"{exc}: GET /v1/models lists the models this gateway serves",
                     "model_not_found")

    app.include_router(public.router)
    app.include_router(chat.router)
    app.include_router(admin.router)

    def openapi() -> dict:
        if app.openapi_schema is None:
            _document_limits(FastAPI.openapi(app), settings)
        return app.openapi_schema

    app.openapi = openapi
    return app


def _document_limits(schema: dict, settings: GatewaySettings) -> None:
    """The limits settings decide, in the schema too, so a client (or a fuzzer) sees what is accepted."""
    components = schema["components"]["schemas"]
    ask = components["AskRequest"]["properties"]
    ask["question"]["maxLength"] = settings.max_question_chars
    ask["max_tokens"]["anyOf"][0]["maximum"] = settings.max_tokens_limit
    chat_request = components["ChatRequest"]["properties"]
    for name in ("max_tokens", "max_completion_tokens"):
        chat_request[name]["anyOf"][0]["maximum"] = settings.max_tokens_limit
    components["Message"]["properties"]["content"]["anyOf"][0]["maxLength"] = settings.max_question_chars
    components["TextPart"]["properties"]["text"]["maxLength"] = settings.max_question_chars
    components["LoadAdapter"]["properties"]["source"]["pattern"] = admin.source_pattern(settings.backend)
