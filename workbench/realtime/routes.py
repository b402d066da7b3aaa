"""The realtime HTTP routes (prefix `/rtc`): thin handlers over `RealtimeManager`, and the chat page.

`GET /config`, `POST /offer`, `POST /session/{id}/text`, `POST /session/{id}/interrupt`,
`GET /session/{id}/events`, `GET /session/{id}/stats`, `POST /session/{id}/latency`, `DELETE /session/{id}`,
`GET /chat` (the static files are mounted by `mount_realtime`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from workbench.realtime.admission import Busy, LineFull
from workbench.realtime.bodies import (
    OFFER_BODY_LIMIT,
    TEXT_BODY_LIMIT,
    BodyError,
    OfferRequest,
    TextRequest,
    body_error_response,
    parse_body,
    read_json,
)

if TYPE_CHECKING:  # the manager builds this router: a runtime import would be a cycle
    from workbench.realtime.server import RealtimeManager

STATIC_DIR = Path(__file__).parent / "static"


def build_router(manager: RealtimeManager) -> APIRouter:
    r = APIRouter()

    @r.get("/config")
    async def config() -> dict[str, Any]:
        return manager.public_config()

    @r.post("/offer", response_model=None)
    async def offer(request: Request) -> dict[str, Any] | JSONResponse:
        # Read and validated here rather than by FastAPI: the body is capped before it is parsed, and
        # FastAPI's 422 answer would echo the body, key included.
        try:
            req = parse_body(OfferRequest, await read_json(request, OFFER_BODY_LIMIT))
        except BodyError as exc:
            return body_error_response(exc)
        try:
            return await manager.open_session(req, client=request.client.host if request.client else None)
        except (Busy, LineFull) as refused:
            return refused.response()

    @r.post("/session/{sid}/text", response_model=None)
    async def text(sid: str, request: Request) -> dict[str, Any] | JSONResponse:
        session = manager.get(sid)
        try:
            req = parse_body(TextRequest, await read_json(request, TEXT_BODY_LIMIT))
        except BodyError as exc:
            return body_error_response(exc)
        await session.send_text(req.text)
        return {"ok": True}

    @r.post("/session/{sid}/interrupt")
    async def interrupt(sid: str) -> dict[str, Any]:
        await manager.get(sid).barge_in("button")
        return {"ok": True}

    @r.get("/session/{sid}/events")
    async def events(sid: str, after: int = 0) -> list[dict[str, Any]]:
        return manager.get(sid).events_after(after)

    @r.get("/session/{sid}/stats")
    async def stats(sid: str) -> dict[str, Any]:
        return manager.get(sid).stats()

    @r.post("/session/{sid}/latency")
    async def latency(sid: str) -> dict[str, Any]:
        session = manager.get(sid)
        if session.connected_at is None:  # nothing was measured: no log (the disk is for real calls)
            raise HTTPException(409, "this call never connected; there is no latency to log")
        path = await asyncio.to_thread(session.write_latency_log)
        return {"path": path.name if path else None}  # the log's name: server paths stay on the server

    @r.delete("/session/{sid}")
    async def close(sid: str) -> dict[str, Any]:
        await manager.get(sid).close()
        return {"ok": True}

    @r.get("/chat", response_class=HTMLResponse)
    async def chat() -> FileResponse:
        return FileResponse(STATIC_DIR / "chat.html", media_type="text/html")

    return r
