"""Liveness, readiness, models, metrics and the question endpoint."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from core.naming import version_label
from core.prompts import conversation
from serving.answering import answer, answer_streamed
from serving.auth import require_token
from serving.backends import BackendTimeout, BackendUnavailable, Sampling
from serving.errors import documented, invalid

router = APIRouter()


def json_number(value: object) -> object:
    """64 and 64.0 are the same JSON integer; true and "64" are not numbers."""
    if isinstance(value, bool | str):
        raise ValueError("must be a number")
    return value


class AskRequest(BaseModel):
    """Strict: ``temperature: false`` or ``max_tokens: "64"`` is a 422, not a silent 0.0 or 64; unknown fields too."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: str = Field(min_length=1, description="the user's question")
    max_tokens: Annotated[int, Field(gt=0, strict=False), BeforeValidator(json_number)] | None = Field(
        None, description="answer length cap (default from settings; at most the gateway's max_tokens_limit)")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy, as at evaluation time")
    adapter: str | None = Field(None, description="a loaded adapter other than the active one (smoke tests, A/B)")
    stream: bool = Field(False, description="the answer as server-sent events in OpenAI's chunk format, as the "
                                            "engine writes it, ending in data: [DONE]")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class AskResponse(BaseModel):
    answer: str
    model: str
    adapter: str | None
    adapter_version: str | None
    usage: Usage
    latency_ms: float
    request_id: str


class Ready(BaseModel):
    ready: bool
    backend: str
    backend_reachable: bool
    warmed_up: bool
    model: str
    warmup_error: str | None


class Models(BaseModel):
    backend: str
    base_model: str
    active_adapter: str | None
    adapter_version: str | None
    loaded: list[str]


@router.get("/health", summary="Liveness: the gateway process is up")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: backend reachable, model loaded, warm-up done", response_model=Ready,
            responses={503: {"model": Ready, "description": "Not ready: the body says what is missing"}})
async def ready(request: Request, response: Response) -> dict:
    state = request.app.state.gateway
    backend_ok = await state.backend.ready()
    error = state.warmup_error
    if backend_ok and state.warmed and state.active:
        try:
            missing = state.active not in await state.backend.models()
        except (BackendUnavailable, BackendTimeout) as failure:
            backend_ok, missing = False, False
            error = str(failure)
        if missing:
            error = (f"the active adapter '{state.active}' is not loaded in the backend (was it restarted?): restart "
                     "the gateway, which loads its configured adapter, or roll out again (pipeline.py --stage 6)")
    is_ready = backend_ok and state.warmed and error is None
    if not is_ready:
        response.status_code = 503
    return {"ready": is_ready, "backend": state.backend.kind, "backend_reachable": backend_ok, "warmed_up": state.warmed,
            "model": state.served_model, "warmup_error": error}


@router.get("/models", summary="The base model, the adapters the backend has loaded, and the active one among them",
            response_model=Models,
            responses=documented(503, 504))
async def models(request: Request) -> dict:
    state = request.app.state.gateway
    loaded = await state.backend.models()  # the backend's own list: an adapter it lacks is not claimed as active
    active = state.active if state.active in loaded else None
    return {"backend": state.backend.kind, "base_model": state.settings.base_model, "active_adapter": active,
            "adapter_version": version_label(active), "loaded": loaded}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text"}})
async def metrics(request: Request) -> Response:
    return Response(request.app.state.gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.post("/ask", response_model=AskResponse, dependencies=[Depends(require_token)],
             responses={**documented(400, 401, 404, 500, 503, 504),
                        200: {"content": {"text/event-stream": {}}, "description": "The answer (with stream: true, "
                              "as server-sent events)"}},
             summary="Answer a question in the domain, in the trained ANSWER STYLE")
async def ask(body: AskRequest, request: Request) -> JSONResponse:
    state = request.app.state.gateway
    s = state.settings
    if len(body.question) > s.max_question_chars:
        raise invalid("question", body.question[:100] + "…", f"question is {len(body.question)} characters; "
                                                              f"the limit is {s.max_question_chars}")
    if body.max_tokens is not None and body.max_tokens > s.max_tokens_limit:
        raise invalid("max_tokens", body.max_tokens, f"max_tokens {body.max_tokens} is over this gateway's limit of "
                                                     f"{s.max_tokens_limit} ({state.backend.kind} backend)")
    model = body.adapter or state.served_model
    messages = conversation(state.system, body.question.strip())
    sampling = Sampling(body.max_tokens or s.default_max_tokens, body.temperature)
    if body.stream:
        return await answer_streamed(request, model, messages, sampling, include_usage=True)
    started = time.perf_counter()
    completion = await answer(request, model, messages, sampling)
    adapter = model if model != s.base_model else None
    # built here, not through response_model: the schema documents it, a second validation would only cost time
    return JSONResponse({"answer": completion.text, "model": s.base_model, "adapter": adapter,
                         "adapter_version": version_label(adapter),
                         "usage": {"prompt_tokens": completion.prompt_tokens,
                                   "completion_tokens": completion.completion_tokens},
                         "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                         "request_id": request.state.request_id})
