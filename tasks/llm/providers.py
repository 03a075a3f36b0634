"""LLM providers behind one small interface: prompt in, JSON text and token usage out.

Three implementations, chosen explicitly in the config (``dataset_generator.provider``):
Gemini through google-genai (structured JSON output against a pydantic schema), any
OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama) through the openai client,
and the deterministic offline generator. Errors are sorted into transient (retry after a
backoff or the server's Retry-After), permanent for this request, and fatal for the stage
(authentication), so callers never guess from exception types.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
from pydantic import BaseModel, SecretStr

from core.config import DatasetGenerator, Secrets
from tasks.common.retry import parse_retry_after
from tasks.llm import offline as offline_llm

_TRANSIENT_STATUS = {408, 409, 429, 500, 502, 503, 504}
_AUTH_STATUS = {401, 403}


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int


class LLMError(Exception):
    """A request failed for a reason that retrying will not fix (bad request, content refused)."""


class TransientLLMError(LLMError):
    """Worth asking again later. ``kind`` says why, and whether asking less at once helps: ``timeout`` (no token
    for the request timeout), ``rate_limited`` (429), ``overloaded`` (503) are a saturated server;
    ``unreachable`` and ``server_error`` are not."""

    SATURATED = frozenset({"timeout", "rate_limited", "overloaded"})

    def __init__(self, message: str, retry_after: float | None = None, kind: str = "server_error") -> None:
        super().__init__(message)
        self.retry_after, self.kind = retry_after, kind

    @property
    def saturated(self) -> bool:
        return self.kind in self.SATURATED


class LLMAuthError(LLMError):
    """The provider rejected our credentials: every request would fail, so the stage stops."""


def classify_status(provider: str, status: int, message: str, retry_after: str | None) -> LLMError:
    text = f"{provider} returned HTTP {status}: {message[:300]}"
    if status in _AUTH_STATUS:
        return LLMAuthError(text)
    if status in _TRANSIENT_STATUS or status >= 500:
        kind = {429: "rate_limited", 503: "overloaded", 408: "timeout", 504: "timeout"}.get(status, "server_error")
        return TransientLLMError(text, parse_retry_after(retry_after), kind)
    return LLMError(text)


_NETWORK_ERRORS = (TimeoutError, asyncio.TimeoutError, aiohttp.ClientError, httpx.TransportError)


def _network_kind(error: BaseException) -> str:
    """By class name too: the openai SDK's transport may be a fork of httpx (httpx2) with classes of its own."""
    names = {cls.__name__ for cls in type(error).__mro__}
    if isinstance(error, TimeoutError) or names & {"TimeoutException", "ServerTimeoutError"}:
        return "timeout"
    return "unreachable" if names & {"ConnectError", "ClientConnectorError"} else "server_error"


class LLMProvider(Protocol):
    name: str
    model: str

    async def complete(self, system: str, prompt: str, schema: type[BaseModel]) -> Completion: ...

    async def aclose(self) -> None: ...


class GeminiProvider:
    name = "gemini"

    def __init__(self, api_key: SecretStr, model: str, base_url: str | None = None, timeout_s: float = 60.0,
                 temperature: float = 0.3) -> None:
        from google import genai
        from google.genai import types

        self.model = model
        self._types = types
        self._temperature = temperature
        options = types.HttpOptions(base_url=base_url, timeout=int(timeout_s * 1000),
                                    retry_options=types.HttpRetryOptions(attempts=1))
        self._client = genai.Client(api_key=api_key.get_secret_value(), http_options=options)

    async def complete(self, system: str, prompt: str, schema: type[BaseModel]) -> Completion:
        from google.genai import errors

        config = self._types.GenerateContentConfig(
            system_instruction=system, temperature=self._temperature,
            response_mime_type="application/json", response_schema=schema)
        try:
            response = await self._client.aio.models.generate_content(model=self.model, contents=prompt, config=config)
        except errors.APIError as error:
            headers = getattr(error.response, "headers", None) or {}
            raise classify_status("Gemini", error.code, error.message or str(error), headers.get("Retry-After")) from None
        except _NETWORK_ERRORS as error:
            raise TransientLLMError(f"Gemini request failed: {type(error).__name__}: {error}",
                                    kind=_network_kind(error)) from None
        usage = response.usage_metadata
        return Completion(text=response.text or "",
                          input_tokens=(usage.prompt_token_count or 0) if usage else 0,
                          output_tokens=(usage.candidates_token_count or 0) if usage else 0)

    async def aclose(self) -> None:
        await self._client.aio.aclose()


def strict_schema(model: type[BaseModel]) -> dict:
    """``model``'s JSON schema as strict structured output takes it: every object closed and all its fields required
    (OpenAI's strict mode and vLLM's guided decoding then only ever produce replies of that shape)."""

    def close(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    schema = model.model_json_schema()
    close(schema)
    return schema


class OpenAICompatibleProvider:
    """Structured output as the OpenAI API defines it: ``response_format: json_schema`` (strict) from the reply's
    pydantic model, and ``max_tokens``, so a small model cannot write until the timeout (vLLM, llama.cpp and
    Ollama guide decoding by the schema). A server that refuses json_schema gets ``json_object`` from then on,
    said once in the log. Replies are streamed: the timeout is the longest wait for the next token, so a slow
    server that is still writing is never taken for a dead one, however long the whole reply."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: SecretStr | None = None, timeout_s: float = 60.0,
                 temperature: float = 0.3, max_output_tokens: int = 1024) -> None:
        import openai

        self.model = model
        self._openai = openai
        self._temperature, self._max_tokens, self._timeout_s = temperature, max_output_tokens, timeout_s
        self._json_schema = True
        key = api_key.get_secret_value() if api_key else "not-needed"
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout_s)

    async def complete(self, system: str, prompt: str, schema: type[BaseModel]) -> Completion:
        try:
            return await self._create(system, prompt, schema)
        except _SchemaRefused as refusal:
            if self._json_schema:  # concurrent requests may all be refused: say it once
                self._json_schema = False
                logging.getLogger(__name__).warning(
                    "the OpenAI-compatible endpoint refused response_format json_schema (%s): asking for json_object "
                    "from now on (replies are still checked against the schema)", refusal)
            return await self._create(system, prompt, schema)

    async def _create(self, system: str, prompt: str, schema: type[BaseModel]) -> Completion:
        openai = self._openai
        response_format = ({"type": "json_schema", "json_schema": {"name": schema.__name__, "strict": True,
                                                                   "schema": strict_schema(schema)}}
                           if self._json_schema else {"type": "json_object"})
        pieces, usage = [], None
        try:
            stream = await self._client.chat.completions.create(
                model=self.model, temperature=self._temperature, max_tokens=self._max_tokens,
                response_format=response_format, stream=True, stream_options={"include_usage": True},
                messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}])
            async with stream:
                async for chunk in stream:
                    usage = chunk.usage or usage
                    pieces += [c.delta.content for c in chunk.choices if c.delta.content]
        except openai.APIStatusError as error:
            if response_format["type"] == "json_schema" and error.status_code in (400, 422):
                raise _SchemaRefused(f"HTTP {error.status_code}: {str(error.message)[:200]}") from None
            raise classify_status("OpenAI-compatible endpoint", error.status_code, str(error.message),
                                  error.response.headers.get("Retry-After")) from None
        except openai.APITimeoutError:
            raise TransientLLMError(f"OpenAI-compatible endpoint wrote no token for {self._timeout_s:g} s",
                                    kind="timeout") from None
        except openai.APIConnectionError as error:
            cause = error.__cause__ or error
            raise TransientLLMError(f"OpenAI-compatible endpoint failed: {type(cause).__name__}",
                                    kind=_network_kind(cause)) from None
        except openai.APIError as error:  # an error event mid-stream
            raise TransientLLMError(f"OpenAI-compatible endpoint failed mid-reply: {str(error)[:300]}") from None
        except _NETWORK_ERRORS as error:
            raise TransientLLMError(f"OpenAI-compatible endpoint failed: {type(error).__name__}",
                                    kind=_network_kind(error)) from None
        return Completion(text="".join(pieces), input_tokens=usage.prompt_tokens if usage else 0,
                          output_tokens=usage.completion_tokens if usage else 0)

    async def aclose(self) -> None:
        await self._client.close()


class _SchemaRefused(Exception):
    """The server rejected the json_schema request (400/422): asked again with json_object."""


class OfflineProvider:
    """Deterministic extractive generator (see tasks.llm.offline); token usage is counted in words."""

    name = "offline"
    model = offline_llm.MODEL_NAME

    async def complete(self, system: str, prompt: str, schema: type[BaseModel]) -> Completion:
        text = offline_llm.respond(prompt)
        return Completion(text=text, input_tokens=len((system + prompt).split()), output_tokens=len(text.split()))

    async def aclose(self) -> None:
        return None


def make_provider(g: DatasetGenerator) -> LLMProvider:
    """The configured provider; gemini without its key is refused here, naming the fix (the stage's preflight)."""
    if g.provider == "offline":
        return OfflineProvider()
    if g.provider == "gemini":
        key = Secrets().require("gemini_api_key", "dataset_generator.provider: gemini",
                                "use provider: openai (a local OpenAI-compatible server) or provider: offline")
        return GeminiProvider(key, g.model, g.base_url, g.request_timeout_s, g.temperature)
    return OpenAICompatibleProvider(g.base_url, g.model, Secrets().openai_api_key, g.request_timeout_s, g.temperature,
                                    g.max_output_tokens)
