"""The gateway app factory: ``create_app(settings, backend)``.

Cross-cutting concerns live here (request ids, metrics, request logs, error mapping, start-up
warm-up); the routes are in ``serving.routes``. No client ever gets a traceback: backend
errors map to 503/504/404, anything unexpected to a 500 with the request id to quote.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.backends import Backend, BackendTimeout, BackendUnavailable, UnknownModel
from serving.logs import configure_logging
from serving.metrics import GatewayMetrics
from serving.routes import admin, public
from serving.settings import GatewaySettings, version_of
from tasks.prompts import system_prompt

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass
class GatewayState:
    settings: GatewaySettings
    backend: Backend
    metrics: GatewayMetrics
    log: structlog.stdlib.BoundLogger
    request_log: structlog.stdlib.BoundLogger
    system: str
    active: str | None
    warmed: bool = False
    warmup_error: str | None = None
    in_flight: Counter = field(default_factory=Counter)
    drained: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def served_model(self) -> str:
        return self.active or self.settings.base_model

    def publish_model_info(self) -> None:
        self.metrics.model.info({"backend": self.backend.kind, "base_model": self.settings.base_model,
                                 "adapter": self.active or "", "adapter_version": version_of(self.active) or ""})


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
        if s.warmup_on_start:
            await state.backend.chat(state.served_model, state.system, "Hello", 4, 0.0)
        state.warmed = True
        state.log.info("gateway_ready", backend=state.backend.kind, model=state.served_model)
    except Exception as error:
        state.warmup_error = str(error)
        state.log.error("warmup_failed", error=str(error))


def create_app(settings: GatewaySettings, backend: Backend) -> FastAPI:
    metrics = GatewayMetrics()
    log, request_log = configure_logging(settings.logs_dir, settings.log_max_bytes, settings.log_backups)
    state = GatewayState(settings, backend, metrics, log, request_log, system_prompt(settings.domain),
                         settings.adapter_name)
    state.publish_model_info()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        warmup = asyncio.create_task(_warm_up(state))
        yield
        warmup.cancel()
        await backend.close()
        log.info("gateway_stopped")

    app = FastAPI(title="Domain LLM gateway", version="1.0", lifespan=lifespan,
                  description="Ask the fine-tuned domain model; health, readiness and Prometheus metrics.")
    app.state.gateway = state

    @app.middleware("http")
    async def observe(request: Request, call_next):
        incoming = request.headers.get("x-request-id", "")
        request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        request.state.request_id = request_id
        request.state.usage = None
        metrics.in_flight.inc()
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as error:
            log.exception("unhandled_error", path=request.url.path, error_type=type(error).__name__)
            metrics.errors.labels("internal").inc()
            response = JSONResponse({"detail": "internal error", "request_id": request_id}, status_code=500)
        finally:
            metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        route = request.scope.get("route")
        route_name = route.path if route is not None else "unmatched"
        metrics.requests.labels(route_name, request.method, str(response.status_code)).inc()
        metrics.latency.labels(route_name).observe(elapsed)
        usage = request.state.usage or {}
        request_log.info("request", route=route_name, method=request.method, status=response.status_code,
                         latency_ms=round(elapsed * 1000, 2), prompt_tokens=usage.get("prompt_tokens"),
                         completion_tokens=usage.get("completion_tokens"), model=usage.get("model"))
        response.headers["X-Request-ID"] = request_id
        structlog.contextvars.unbind_contextvars("request_id")
        return response

    def error(request: Request, status: int, kind: str, detail: str) -> JSONResponse:
        metrics.errors.labels(kind).inc()
        log.warning("request_failed", kind=kind, detail=detail)
        return JSONResponse({"detail": detail, "request_id": request.state.request_id}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("invalid_request").inc()
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(BackendUnavailable)
    async def unavailable(request: Request, exc: BackendUnavailable) -> JSONResponse:
        return error(request, 503, "backend_unavailable", str(exc))

    @app.exception_handler(BackendTimeout)
    async def timed_out(request: Request, exc: BackendTimeout) -> JSONResponse:
        return error(request, 504, "backend_timeout", str(exc))

    @app.exception_handler(UnknownModel)
    async def unknown(request: Request, exc: UnknownModel) -> JSONResponse:
        return error(request, 404, "unknown_model", str(exc))

    app.include_router(public.router)
    app.include_router(admin.router)
    return app
