"""Bearer tokens: /ask needs API_TOKEN when the gateway has one; /admin/* always needs a token.

The admin API changes what is served, so it takes ADMIN_TOKEN (else API_TOKEN) and is closed
when neither is set, whatever address the gateway listens on.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

bearer = HTTPBearer(auto_error=False, description="API_TOKEN for /ask (when set); ADMIN_TOKEN or API_TOKEN for /admin")


async def _check(request: Request, expected: SecretStr) -> None:
    credentials: HTTPAuthorizationCredentials | None = await bearer(request)
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        request.app.state.gateway.metrics.errors.labels("unauthorized").inc()
        raise HTTPException(status_code=401, detail="missing or wrong bearer token" if given else "missing bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


async def require_token(request: Request) -> None:
    expected = request.app.state.gateway.settings.api_token
    if expected is not None:
        await _check(request, expected)


async def require_admin_token(request: Request) -> None:
    expected = request.app.state.gateway.settings.admin
    if expected is None:
        request.app.state.gateway.metrics.errors.labels("admin_disabled").inc()
        raise HTTPException(status_code=403, detail="the admin API is closed: this gateway has no ADMIN_TOKEN or "
                                                    "API_TOKEN (set one, or ADMIN_TOKEN_FILE, and restart it)")
    await _check(request, expected)
