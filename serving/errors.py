"""The error bodies the API documents, so its OpenAPI schema says every status a client can get.

Ours: ``{"detail": "<reason>", "request_id": "..."}``. A refused field is a 422 in FastAPI's own
shape (a list of errors naming the field), whether pydantic or a gateway limit refused it.
Under /v1 (the OpenAI-compatible API), OpenAI's: ``{"error": {"message", "type", "param", "code"}}``
with the status OpenAI uses (a refused field is a 400), so its SDKs raise the matching exception.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel


class ErrorBody(BaseModel):
    detail: str
    request_id: str | None = None


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIError


OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 500: "server_error", 503: "service_unavailable", 504: "timeout"}


def is_openai(path: str) -> bool:
    return path.startswith("/v1/")


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": OPENAI_TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


def openai_documented(*statuses: int) -> dict[int | str, dict]:
    reasons = {400: "A parameter is invalid or not honoured (param names it)", 401: "Missing or wrong bearer token",
               404: "No such model here (GET /v1/models lists them)", 500: "Internal error",
               503: "Backend unavailable", 504: "Backend timed out"}
    return {status: {"model": OpenAIErrorBody, "description": reasons[status]} for status in statuses}


def documented(*statuses: int) -> dict[int | str, dict]:
    reasons = {400: "The body is not JSON", 401: "Missing or wrong bearer token", 403: "The admin API is closed",
               404: "No such adapter loaded", 409: "Conflicts with what is served",
               500: "Internal error (quote the request id)", 503: "Backend unavailable", 504: "Backend timed out"}
    return {status: {"model": ErrorBody, "description": reasons[status]} for status in statuses}


def invalid(field: str, value: object, message: str) -> RequestValidationError:
    """A 422 for ``field`` in the body, shaped like pydantic's own."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}])
