"""Adapter management for rollouts: load beside the active one, switch, unload once drained.

The switch is one assignment, so a request is served wholly by the old or the new adapter;
an adapter is unloaded only when no request is still using it. Always behind a token
(serving.auth); adapters load only from the configured registry, or the Hub for vLLM.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from serving.auth import require_admin_token
from serving.backends import AdapterLoadFailed
from serving.settings import GatewaySettings

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin_token)])
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


class LoadAdapter(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    path: str = Field(min_length=1, max_length=4096,
                      description="a folder inside the adapter registry, as the backend sees it; or a Hub id (vLLM)")


class Activate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200)


def outside_registry(path: str, settings: GatewaySettings) -> str | None:
    """Why ``path`` may not be loaded, or None. Resolved (``..``, and symlinks where the folder is ours) before
    it is compared, so no path leads out of the registry."""
    if settings.backend == "vllm" and HUB_ID.fullmatch(path):
        return None
    hub = " or a Hub id (owner/name)" if settings.backend == "vllm" else ""
    if settings.adapter_registry is None:
        return f"no adapter registry is configured: give a Hub id{hub}" if hub else "no adapter registry is configured"
    root = posixpath.normpath(settings.adapter_registry)
    resolved = posixpath.normpath(path) if posixpath.isabs(path) else None
    if settings.backend == "local" and resolved is not None:
        resolved, root = str(Path(resolved).resolve()), str(Path(root).resolve())
    if resolved is None or resolved == root or not resolved.startswith(root.rstrip("/") + "/"):
        return (f"'{path}' is outside the adapter registry: adapters load from a folder inside it{hub} "
                "(serving.backend_registry_dir, else paths.registry)")
    return None


@router.get("/adapters")
async def adapters(request: Request) -> dict:
    state = request.app.state.gateway
    return {"active": state.active, "loaded": await state.backend.models()}


@router.post("/adapters", status_code=201)
async def load(body: LoadAdapter, request: Request) -> dict:
    state = request.app.state.gateway
    if why := outside_registry(body.path, state.settings):
        state.metrics.errors.labels("adapter_path_refused").inc()
        raise HTTPException(422, why)
    try:
        await state.backend.load_adapter(body.name, body.path)
    except AdapterLoadFailed as error:
        raise HTTPException(422, str(error)) from None
    state.log.info("adapter_loaded", adapter=body.name)
    return {"loaded": body.name}


@router.put("/active")
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


@router.delete("/adapters/{name}")
async def unload(name: str, request: Request) -> dict:
    state = request.app.state.gateway
    if name == state.active:
        raise HTTPException(409, f"'{name}' is the active adapter: switch to another before unloading it")
    try:
        async with state.drained:
            await asyncio.wait_for(state.drained.wait_for(lambda: state.in_flight[name] == 0),
                                   state.settings.drain_timeout_s)
    except TimeoutError:
        raise HTTPException(409, f"'{name}' still has requests in flight after {state.settings.drain_timeout_s:g} s") from None
    try:
        await state.backend.unload_adapter(name)
    except AdapterLoadFailed as error:
        raise HTTPException(422, str(error)) from None
    state.log.info("adapter_unloaded", adapter=name)
    return {"unloaded": name}
