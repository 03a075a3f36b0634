"""OpenAI's Chat Completions protocol: /v1/models and /v1/chat/completions, whole or streamed.

What the openai SDK, LangChain, LiteLLM, Open WebUI or lm-evaluation-harness send, behind the same
token, limits, metrics and request logs as /ask. ``model`` is the alias (the active version:
it follows rollouts), a version's name (pinned) or the base model. Without a system message the
request gets the ANSWER STYLE prompt the adapter was trained and evaluated with; a request's own
wins. A parameter the gateway cannot honour is a 400 naming it, never silently ignored.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from serving.answering import answer, answer_streamed
from serving.auth import require_token
from serving.backends import Sampling
from serving.errors import openai_documented, openai_error
from serving.routes.public import json_number

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_token)])
OWNER = "domain-llm-gateway"
MAX_MESSAGES = MAX_PARTS = 64


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(max_length=MAX_PARTS)] = Field(
        description="text, or text parts; each at most the gateway's max_question_chars")

    def as_template(self) -> dict[str, str]:
        """What the chat template takes: text (parts joined), and ``developer`` as the system role it stands for."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False


Tokens = Annotated[int, Field(gt=0, strict=False), BeforeValidator(json_number)]


class ChatRequest(BaseModel):
    """Strict as /ask is: a wrong type or an unknown parameter is refused, never coerced or dropped."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, description="the alias (active version), a version's name, or the base model")
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: Tokens | None = Field(None, description="answer length cap (default from settings)")
    max_completion_tokens: Tokens | None = Field(None, description="OpenAI's newer name for it (both given: the "
                                                                   "smaller cap holds)")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="omitted: 0, greedy, as evaluated")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: Annotated[int, Field(ge=1, le=1, strict=False), BeforeValidator(json_number)] | None = Field(
        None, description="1 only: one answer a request")
    stream: bool = False
    stream_options: StreamOptions | None = Field(None, description="include_usage: a last chunk with the usage "
                                                 "(unstreamed answers always have it)")
    user: str | None = Field(None, max_length=256, description="the end user's id, written to the request log")


def describe(errors: list[dict], backend: str) -> tuple[str | None, str]:
    """pydantic's errors as OpenAI's (param, message): the first field named, every reason said."""
    param, reasons = None, []
    for error in errors:
        field = ".".join(str(part) for part in error["loc"][1:]) or None
        param = param or field
        if error["type"] == "extra_forbidden":
            reasons.append(f"unsupported parameter '{field}': this gateway ({backend} backend) does not honour it, "
                           "so it refuses it rather than ignore it; remove it")
        else:
            reasons.append(f"{field}: {error['msg']}" if field else error["msg"])
    return param, "; ".join(reasons)


def _refused(param: str, message: str) -> JSONResponse:
    return JSONResponse(openai_error(400, message, param), status_code=400)


@router.get("/models", summary="The models this gateway answers as, in OpenAI's shape",
            responses=openai_documented(401, 503, 504))
async def models(request: Request) -> dict:
    state = request.app.state.gateway
    base = state.settings.base_model
    loaded = await state.backend.models()
    active = state.active if state.active in loaded else None

    def entry(name: str, root: str, parent: str | None) -> dict:
        return {"id": name, "object": "model", "created": state.started, "owned_by": OWNER, "root": root,
                "parent": parent}

    data = [entry(state.settings.alias, active or base, base if active else None), entry(base, base, None)]
    data += [entry(name, name, base) for name in loaded if name != base]
    return {"object": "list", "data": data}


@router.post("/chat/completions", summary="Chat Completions (OpenAI's protocol), whole or streamed as events",
             responses={**openai_documented(400, 401, 404, 500, 503, 504),
                        200: {"content": {"application/json": {}, "text/event-stream": {}},
                              "description": "A chat.completion, or with stream: true chat.completion.chunk events "
                                             "ending in data: [DONE]"}})
async def chat_completions(body: ChatRequest, request: Request):
    state = request.app.state.gateway
    s = state.settings
    caps = {"max_tokens": body.max_tokens, "max_completion_tokens": body.max_completion_tokens}
    for param, cap in caps.items():
        if cap is not None and cap > s.max_tokens_limit:
            return _refused(param, f"{param} {cap} is over this gateway's limit of {s.max_tokens_limit} "
                                   f"({state.backend.kind} backend)")
    max_tokens = min((cap for cap in caps.values() if cap is not None), default=s.default_max_tokens)
    for n, message in enumerate(body.messages):
        texts = [message.content] if isinstance(message.content, str) else [p.text for p in message.content]
        if (size := max(map(len, texts), default=0)) > s.max_question_chars:
            return _refused(f"messages.{n}.content", f"a text of {size} characters; the limit is {s.max_question_chars}")
    messages = [m.as_template() for m in body.messages]
    if not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": state.system})  # as trained and evaluated
    if body.user is not None:
        request.state.usage = {"user": body.user}
    model = state.resolve(body.model)
    sampling = Sampling(max_tokens, body.temperature or 0.0, body.top_p)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return await answer_streamed(request, model, messages, sampling, include_usage)
    completion = await answer(request, model, messages, sampling)
    return JSONResponse({
        "id": f"chatcmpl-{request.state.request_id}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text}, "logprobs": None,
                     "finish_reason": completion.finish_reason}],
        "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                  "total_tokens": completion.prompt_tokens + completion.completion_tokens}})

