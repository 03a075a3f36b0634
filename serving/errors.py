"""The error bodies the API documents, so its OpenAPI schema says every status a client can get.

Ours: ``{"detail": "<reason>", "request_id": "..."}``. A refused field is a 422 in FastAPI's own
shape (a list of errors naming the field), whether pydantic or a gateway limit refused it.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel


class ErrorBody(BaseModel):
    detail: str
    request_id: str | None = None


def documented(*statuses: int) -> dict[int | str, dict]:
    reasons = {400: "The body is not JSON", 401: "Missing or wrong bearer token", 403: "The admin API is closed",
               404: "No such adapter loaded", 409: "Conflicts with what is served",
               500: "Internal error (quote the request id)", 503: "Backend unavailable", 504: "Backend timed out"}
    return {status: {"model": ErrorBody, "description": reasons[status]} for status in statuses}


def invalid(field: str, value: object, message: str) -> RequestValidationError:
    """A 422 for ``field`` in the body, shaped like pydantic's own."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}])
