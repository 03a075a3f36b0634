"""Adapter management for rollouts: load beside the active one, switch, unload once drained.

The switch is one assignment, so a request is served wholly by the old or the new adapter;
an adapter is unloaded only when no request is still using it.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from serving.auth import require_token
from serving.backends import AdapterLoadFailed

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_token)])


class LoadAdapter(BaseModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    path: str = Field(min_length=1, description="the adapter folder, as the backend sees it")


class Activate(BaseModel):
    name: str = Field(min_length=1)


@router.get("/adapters")
async def adapters(request: Request) -> dict:
    state = request.app.state.gateway
    return {"active": state.active, "loaded": await state.backend.models()}


@router.post("/adapters", status_code=201)
async def load(body: LoadAdapter, request: Request) -> dict:
    state = request.app.state.gateway
    try:
        await state.backend.load_adapter(body.name, body.path)
    except AdapterLoadFailed as error:
        raise HTTPException(422, str(error)) from None
    state.log.info("adapter_loaded", adapter=body.name)
    return {"loaded": body.name}


@router.put("/active")
async def activate(body: Activate, request: Request) -> dict:
    state = request.app.state.gateway
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
