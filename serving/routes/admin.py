"""Adapter management for rollouts: load beside the active one, switch, unload once drained.

The switch is one assignment, so a request is served wholly by the old or the new adapter;
an adapter is unloaded only when no request is still using it. Always behind a token
(serving.auth); adapters load only from the configured registry, named by their folder there,
or from the Hub for vLLM: a client never names a path.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from core.gateway import GatewaySettings
from serving.auth import require_admin_token
from serving.backends import AdapterLoadFailed
from serving.errors import documented, invalid

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin_token)],
                   responses=documented(401, 403, 503, 504))
SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"  # never "." or "..": no way out of the registry
DRAIN_POLL_S = 0.05


def source_pattern(backend: str) -> str:
    """A registry folder's name; for vLLM also a Hub id (owner/name). The schema documents the same pattern."""
    return f"^{SEGMENT}(/{SEGMENT})?$" if backend == "vllm" else f"^{SEGMENT}$"


class LoadAdapter(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    source: str = Field(min_length=1, max_length=400,
                        description="the adapter's folder in the gateway's adapter registry (its name), or a Hub id "
                                    "(owner/name, vLLM only)")


class Activate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200)


def adapter_location(source: str, settings: GatewaySettings) -> str:
    """Where the backend loads ``source`` from: inside the configured registry, or the Hub; else a 422 saying why."""
    if not re.fullmatch(source_pattern(settings.backend), source):
        raise invalid("source", source, "give an adapter folder's name in the registry" +
                      (" or a Hub id (owner/name)" if settings.backend == "vllm" else "") + ", nothing else")
    if "/" in source:
        return source
    if settings.adapter_registry is None:
        raise invalid("source", source, "this gateway has no adapter registry (GATEWAY_ADAPTER_REGISTRY)")
    location = posixpath.join(settings.adapter_registry, source)
    if settings.backend != "vllm":  # our own disk: a symlink must not lead out of the registry either
        root = Path(settings.adapter_registry).resolve()
        if not Path(location).resolve().is_relative_to(root):
            raise invalid("source", source, f"'{source}' leads outside the adapter registry")
    return location


@router.get("/adapters")
async def adapters(request: Request) -> dict:
    state = request.app.state.gateway
    return {"active": state.active, "loaded": await state.backend.models()}


@router.post("/adapters", status_code=201, responses=documented(400, 409))
async def load(body: LoadAdapter, request: Request) -> dict:
    state = request.app.state.gateway
    location = adapter_location(body.source, state.settings)
    loaded = await state.backend.models()
    if body.name in loaded:
        raise HTTPException(409, f"'{body.name}' is already loaded: unload it first, or load under another name")
    if (adapters := [n for n in loaded if n != state.settings.base_model]) and len(adapters) >= state.settings.max_loras:
        raise HTTPException(409, f"{len(adapters)} adapters are loaded, this gateway's limit (serving.max_loras: "
                                 f"{state.settings.max_loras}): unload one that is not active first (DELETE "
                                 "/admin/adapters/NAME), or raise serving.max_loras and restart vLLM and the gateway")
    try:
        await state.backend.load_adapter(body.name, location)
    except AdapterLoadFailed as error:
        raise invalid("source", body.source, str(error)) from None
    state.log.info("adapter_loaded", adapter=body.name)
    return {"loaded": body.name}


@router.put("/active", responses=documented(400, 404, 409))
async def activate(body: Activate, request: Request) -> dict:
    state = request.app.state.gateway
    if state.settings.workers > 1:
        raise HTTPException(409, f"this gateway runs {state.settings.workers} worker processes and a switch would "
                                 "reach one of them: roll out with gateway containers (serving.rollout: containers)")
    if body.name not in await state.backend.models():
        raise HTTPException(404, f"adapter '{body.name}' is not loaded: load it first (POST /admin/adapters)")
    previous, state.active = state.active, (None if body.name == state.settings.base_model else body.name)
    state.publish_model_info()
    state.metrics.rollouts.inc()
    state.log.info("adapter_switched", previous=previous, active=state.active)
    return {"active": state.active, "previous": previous}


@router.delete("/adapters/{name}", responses=documented(404, 409))
async def unload(name: str, request: Request) -> dict:
    state = request.app.state.gateway
    if name == state.active:
        raise HTTPException(409, f"'{name}' is the active adapter: switch to another before unloading it")
    try:
        async with asyncio.timeout(state.settings.drain_timeout_s):
            while state.in_flight[name]:  # answers and streams still using it
                await asyncio.sleep(DRAIN_POLL_S)
    except TimeoutError:
        raise HTTPException(409, f"'{name}' still has requests in flight after {state.settings.drain_timeout_s:g} s") from None
    try:
        await state.backend.unload_adapter(name)
    except AdapterLoadFailed as error:  # vLLM refuses only what it does not have
        raise HTTPException(404, str(error)) from None
    state.log.info("adapter_unloaded", adapter=name)
    return {"unloaded": name}
