"""Bearer-token check for /ask and /admin (only when an API token is configured)."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="API_TOKEN, when the gateway has one")


async def require_token(request: Request) -> None:
    state = request.app.state.gateway
    expected = state.settings.api_token
    if expected is None:
        return
    credentials: HTTPAuthorizationCredentials | None = await bearer(request)
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        state.metrics.errors.labels("unauthorized").inc()
        raise HTTPException(status_code=401, detail="missing or wrong bearer token" if given else "missing bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
