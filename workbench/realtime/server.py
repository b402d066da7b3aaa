"""The realtime endpoint: WebRTC sessions (aiortc) mounted on a FastAPI app, plus the chat page.

    app = FastAPI()
    manager = mount_realtime(app, engine)          # before gr.mount_gradio_app(app, demo, path="/")
    # the Gradio tab embeds  embed_html(token=manager.grant(avatar_id))  (an iframe of /rtc/chat)

Avatars are reached by capability: the app, which knows which avatars a browser session may see, calls
`manager.grant(avatar_id)` and embeds the page with that token; `POST /offer` resolves the token to its
avatar and `GET /config` names no avatars, so one session cannot list or open another's. A manager made
with `open_avatars=True` (a standalone page without the app: tests, benchmarks, single-user local use)
lists every avatar and accepts raw ids instead.

Routes (prefix `/rtc`, see `routes.py`): `GET /config`, `POST /offer`, `POST /session/{id}/text`,
`POST /session/{id}/interrupt`, `GET /session/{id}/events`, `GET /session/{id}/stats`,
`POST /session/{id}/latency`, `DELETE /session/{id}`, `GET /chat` and `/static/*`. Beside this file:
`admission.py` (the waiting line and the grant book), `bodies.py` (request models and body limits),
`watchdog.py` (the connect, idle and call-length limits), `session.py` (one call).

Limits (settings, see `workbench.config`): at most `max_sessions` calls; when all are taken an offer gets a
503 with its place in a first-come-first-served line (`Busy`), kept while the page retries; one live call per
browser session (a grant's holder): a new call replaces the old one; a call that does not connect within
`session_connect_timeout_s`, sits idle for `session_idle_timeout_s` or runs past `session_max_s` is ended.
Bodies are capped before they are parsed (413) and JSON nesting is bounded (400), see `bodies.read_json`.

Why aiortc and not fastrtc: fastrtc 0.0.34 pins gradio<6 (pip otherwise resolves it to an empty
0.0.1), its Gradio component does not load on Gradio 6, it only sends video after the browser sends
a video track, and it serves one session at a time by default. With aiortc the outgoing tracks, the
shared A/V clock and the number of sessions are ours.

Every session has its own avatar stream, voice session and key; all share the engine's renderer
(serialised by the engine's render lock for a model on one device; in parallel for the thread-safe
CPU renderer, which measured better) and each avatar's idle-frame cache.

ICE/TURN: on localhost no ICE server is needed (host candidates connect). Behind NAT, as on a
Hugging Face Space where only the HTTPS port is exposed, media must be relayed: set
`WORKBENCH_ICE_SERVERS_JSON` to a STUN + TURN list, e.g.
`[{"urls": ["stun:stun.l.google.com:19302"]}, {"urls": ["turn:turn.example.org:3478?transport=udp",
"turn:turn.example.org:3478?transport=tcp", "turns:turn.example.org:5349?transport=tcp"],
"username": "…", "credential": "…"}]` (coturn, Cloudflare Calls TURN, Twilio NTS, metered.ca). The same
list goes to aiortc and, through `GET /config`, to the browser; TURN over TCP/TLS on 443 gets through
strict firewalls. aiortc does not trickle ICE, so a TURN allocation adds its round trip to the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from collections import OrderedDict
from contextlib import asynccontextmanager
from html import escape
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.staticfiles import StaticFiles
from pydantic import SecretStr

from workbench.avatars.model import Avatar
from workbench.avatars.store import CacheError
from workbench.config import RendererName, Settings
from workbench.lipsync.base import Renderer
from workbench.lipsync.batcher import RenderBatcher, has_device_stage
from workbench.lipsync.stream import LipSyncStream
from workbench.media import init_audio_libraries
from workbench.plain import one_line
from workbench.realtime.admission import GRANT_TTL_S, MAX_GRANTS, GrantBook, WaitingLine
from workbench.realtime.bodies import OfferRequest
from workbench.realtime.egress import EgressPolicy, EndpointRefused
from workbench.realtime.openai_config import REASONING_EFFORTS, RealtimeConfig
from workbench.realtime.routes import STATIC_DIR, build_router
from workbench.realtime.session import ChatSession
from workbench.realtime.voices import OPENAI_VOICES, VoiceError, VoiceSession, make_voice
from workbench.realtime.watchdog import CallLimits, WatchedCall, overdue, watch
from workbench.voice import preload
from workbench.zerogpu import on_zerogpu

log = logging.getLogger(__name__)


class RealtimeEngine(Protocol):
    """What the realtime endpoint needs of an engine: `workbench.engine.Engine`, or a test's stand-in.

    A Protocol rather than `Engine` itself: the engine sits above the realtime layer (see tests/test_layout.py).
    """

    settings: Settings
    render_lock: Any

    @property
    def renderer(self) -> Renderer: ...

    def renderer_for(self, choice: RendererName | None = None) -> Renderer: ...

    def list_avatars(self) -> list[Any]: ...

    def load_avatar(self, avatar_id: str) -> Avatar: ...


class RealtimeSetupError(ValueError):
    """The realtime endpoint is misconfigured (bad ICE server JSON, no renderer, …)."""


def face_fraction(avatar: Avatar) -> list[float]:
    """The avatar's face box over all its frames (median corners) as fractions [x0, y0, x1, y1] of the frame, so
    the chat page can zoom on the face whatever size the video is sent at."""
    h, w = avatar.frame_size
    x0, y0, x1, y1 = (float(v) for v in np.median(np.asarray(avatar.boxes, np.float64), axis=0))
    return [round(x0 / w, 4), round(y0 / h, 4), round(x1 / w, 4), round(y1 / h, 4)]


def parse_ice_servers(raw: str) -> list[dict[str, Any]]:
    """`WORKBENCH_ICE_SERVERS_JSON`: a JSON list of {"urls": …, "username"?: …, "credential"?: …}."""
    try:
        data = json.loads(raw or "[]")
    except ValueError as exc:
        raise RealtimeSetupError(f"WORKBENCH_ICE_SERVERS_JSON is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise RealtimeSetupError("WORKBENCH_ICE_SERVERS_JSON must be a JSON list of ICE servers")
    out = []
    for s in data:
        if not isinstance(s, dict) or "urls" not in s:
            raise RealtimeSetupError(f"each ICE server needs 'urls': {s!r}")
        urls = s["urls"] if isinstance(s["urls"], list) else [s["urls"]]
        if not all(isinstance(u, str) and u.startswith(("stun:", "turn:", "turns:")) for u in urls):
            raise RealtimeSetupError(f"ICE server urls must start with stun:, turn: or turns: ({urls!r})")
        entry: dict[str, Any] = {"urls": urls}
        for k in ("username", "credential"):
            if k in s:
                entry[k] = str(s[k])
        out.append(entry)
    return out


class RealtimeManager:
    """Creates, tracks and closes `ChatSession`s; shares one engine among them."""

    def __init__(
        self,
        engine: RealtimeEngine,
        settings: Settings | None = None,
        *,
        max_sessions: int | None = None,
        max_video_height: int | None = 720,
        batch_size: int | None = None,
        latency_dir: Path | None = None,
        serialize_renders: bool | None = None,
        open_avatars: bool = False,
        grant_ttl_s: float = GRANT_TTL_S,
        max_grants: int = MAX_GRANTS,
    ):
        self.engine = engine
        self.settings = settings or engine.settings
        self.max_sessions = int(max_sessions or self.settings.max_sessions)
        self.limits = CallLimits.from_settings(self.settings)  # connect, idle and call-length limits
        self.latency_logs_keep = int(self.settings.latency_logs_keep)
        self.max_video_height = max_video_height
        self.batch_size = batch_size or int(getattr(self.settings, "batch_size", 8))
        self.latency_dir = latency_dir or Path(self.settings.runs_dir) / "realtime"
        self.ice_servers = parse_ice_servers(self.settings.ice_servers_json)
        # None: serialise renderer calls across sessions (the engine's lock) for a model on one device,
        # render in parallel for the CPU renderer, which is thread-safe and mostly outside the GIL.
        self.serialize_renders = serialize_renders
        # False: only granted avatars are reachable (see the module docstring).
        self.open_avatars = open_avatars
        self.grant_ttl_s = grant_ttl_s
        self.max_grants = max_grants
        self.grants = GrantBook(grant_ttl_s, max_grants, self.settings.grants_per_session)
        self._grants = self.grants.entries  # token -> Grant, oldest first
        self.egress = EgressPolicy.from_settings(self.settings)
        self.sessions: dict[str, ChatSession] = {}
        # One live call per holder (a browser session of the app, or a waiting-line ticket): a new call
        # from the same holder replaces its old one instead of taking a second slot.
        self._holder_of: dict[str, str] = {}  # session id -> holder
        # Callers refused for want of a slot, in arrival order (see workbench.realtime.admission).
        self.line = WaitingLine(self.settings.queue_keep_s, self.settings.queue_per_client)
        # Avatars loaded for calls, the most recently opened last: a few more than the call slots, so a visitor
        # opening calls on avatar after avatar cannot make the server hold them all (a live call keeps its own).
        self._avatars: OrderedDict[str, Avatar] = OrderedDict()
        self._avatars_keep = self.max_sessions + 2
        self._added: dict[str, Avatar] = {}  # given in memory (`add_avatar`): nothing to reload them from
        self._reapers: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    # ---- avatars and voices ---------------------------------------------------------------------
    def avatar_ids(self) -> list[str]:
        try:
            return [a.avatar_id for a in self.engine.list_avatars()]
        except (AttributeError, OSError):
            return [*self._added, *self._avatars]

    async def avatar(self, avatar_id: str | None) -> Avatar:
        if avatar_id is None:
            ids = self.avatar_ids()
            if not ids:
                raise HTTPException(400, "no prepared avatar yet: prepare one in the Avatar tab first")
            avatar_id = ids[0]
        if avatar_id in self._added:
            return self._added[avatar_id]
        if avatar_id not in self._avatars:
            try:
                self._avatars[avatar_id] = await asyncio.to_thread(self.engine.load_avatar, avatar_id)
            except (KeyError, FileNotFoundError, ValueError) as exc:
                raise HTTPException(404, f"no avatar {avatar_id!r}") from exc
            except CacheError as exc:
                raise HTTPException(500, f"avatar {avatar_id!r} cannot be loaded: {exc}") from exc
        self._avatars.move_to_end(avatar_id)
        while len(self._avatars) > self._avatars_keep:
            self._avatars.popitem(last=False)
        return self._avatars[avatar_id]

    def add_avatar(self, avatar: Avatar) -> None:
        """Make an in-memory avatar available to sessions (tests, benchmarks, notebooks)."""
        self._added[avatar.avatar_id] = avatar

    # ---- capability grants ----------------------------------------------------------------------
    def grant(self, avatar_id: str, holder: str | None = None, client: str | None = None) -> str:
        """A token that lets the chat page open calls on `avatar_id` (and no other) for `grant_ttl_s`.

        The caller decides who may use the avatar (the app's per-session library); this only remembers it.
        `holder` names who the grant is for (the app's browser session): a holder has one live call at a time
        and a bounded number of grants; `client` (its address) decides whose grants go first when the book is full.
        """
        if not avatar_id:
            raise ValueError("grant needs an avatar id")
        return self.grants.add(avatar_id, holder, client)

    def granted_avatar(self, token: str) -> str | None:
        """The avatar id `token` grants, or None when it is unknown or expired."""
        entry = self.grants.get(token)
        return entry.avatar_id if entry is not None else None

    def holder_of(self, req: OfferRequest) -> str | None:
        return self.grants.holder(req.grant, req.ticket)

    def requested_avatar(self, req: OfferRequest) -> str | None:
        return self.grants.avatar_for(req.grant, req.avatar_id, self.open_avatars)

    def realtime_config(self, requested: RealtimeConfig | None) -> RealtimeConfig:
        """The browser's choices over this server's settings (model, voice, endpoint)."""
        s = self.settings
        base = RealtimeConfig.from_settings(s)
        if requested is None:
            return base
        return base.model_copy(update=requested.model_dump(include=requested.model_fields_set))

    def voice_key(self, req: OfferRequest, config: RealtimeConfig) -> SecretStr | None:
        key = req.api_key if req.api_key and req.api_key.get_secret_value().strip() else None
        if req.mode == "openai" and key is None:
            if config.base_url != self.settings.openai_base_url:
                # The server's own key only ever goes to the server's configured endpoint.
                raise HTTPException(400, "a custom Realtime base URL needs your own API key")
            key = self.settings.openai_api_key
        return key

    async def check_endpoint(self, req: OfferRequest) -> None:
        """Refuse (400) an OpenAI call to an endpoint this server may not connect to (see workbench.realtime.egress)."""
        if req.mode != "openai":
            return
        config = self.realtime_config(req.realtime)
        self.voice_key(req, config)
        try:
            await self.egress.check(config.base_url)
        except EndpointRefused as exc:
            raise HTTPException(400, str(exc)) from None

    def make_voice(self, req: OfferRequest) -> VoiceSession:
        config = self.realtime_config(req.realtime)
        key = self.voice_key(req, config)
        try:
            return make_voice(req.mode, api_key=key, config=config)
        except VoiceError as exc:
            raise HTTPException(400, str(exc)) from exc

    # ---- sessions -------------------------------------------------------------------------------
    def _admit(self, holder: str | None, client: str | None = None) -> str | None:
        """Take a slot for `holder` or raise `Busy` with its place in line (`LineFull` past the client's places)."""
        return self.line.admit(holder, client, self.max_sessions - len(self.sessions), self.max_sessions)

    async def open_session(self, req: OfferRequest, client: str | None = None) -> dict[str, Any]:
        await self.check_endpoint(req)
        async with self._lock:
            requested = self.requested_avatar(req)
            holder = self.holder_of(req)
            previous = [sid for sid, h in self._holder_of.items() if holder is not None and h == holder]
            replaced = False
            for sid in previous:  # one live call per holder: a reconnect replaces the old call
                old = self.sessions.get(sid)
                if old is not None:
                    log.info("realtime session %s replaced by a new call from the same browser", sid)
                    await old.close()
                    replaced = True
                self._holder_of.pop(sid, None)
            # A replacement takes over the slot it freed; anyone else waits their turn.
            holder = holder if replaced else self._admit(holder, client)
            avatar = await self.avatar(requested)
            if "a=fingerprint:" not in req.sdp:
                # aiortc would answer it and fail later, inside the connection, with a slot taken meanwhile
                raise HTTPException(400, "cannot answer this WebRTC offer: the SDP has no DTLS fingerprint")
            voice = self.make_voice(req)
            sid = secrets.token_urlsafe(9)
            # The first call may load a model. ZeroGPU cannot hold a stream: the CPU renderer runs there.
            choice = "cpu" if on_zerogpu() else None
            renderer = await asyncio.to_thread(
                lambda: self.engine.renderer_for(choice) if choice else self.engine.renderer
            )
            serialize = self.serialize_renders
            if serialize is None:
                serialize = getattr(renderer, "name", "") != "cpu"
            lock = getattr(self.engine, "render_lock", None) if serialize else None
            # A model on a device: one batcher renders the due frames of every session together.
            batcher = RenderBatcher.shared(renderer, lock=lock) if serialize and has_device_stage(renderer) else None
            stream = LipSyncStream(
                renderer, avatar, batch_size=self.batch_size, render_lock=lock, batcher=batcher, name=sid
            )
            session = ChatSession(
                sid,
                stream,
                voice,
                max_video_height=self.max_video_height,
                latency_dir=self.latency_dir,
                on_closed=self._forget,
            )
            self.sessions[sid] = session
            if holder is not None:
                self._holder_of[sid] = holder
        config = RTCConfiguration(iceServers=[RTCIceServer(**s) for s in self.ice_servers])
        pc = RTCPeerConnection(configuration=config)
        try:
            session.attach(pc)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=req.sdp, type=req.type))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # a malformed offer: free the slot and say why
            await session.close()
            raise HTTPException(400, f"cannot answer this WebRTC offer: {one_line(str(exc))}") from exc
        await session.start()
        reaper = asyncio.create_task(watch(session, self.limits, lambda: session.id in self.sessions))
        self._reapers.add(reaper)  # the loop keeps only weak references to tasks
        reaper.add_done_callback(self._reapers.discard)
        log.info("realtime session %s opened (%s, avatar %s)", sid, voice.describe(), avatar.avatar_id)
        return {
            "sdp": pc.localDescription.sdp,
            "type": pc.localDescription.type,
            "session_id": sid,
            "face": face_fraction(avatar),  # for the page's face zoom
        }

    def _forget(self, session: ChatSession) -> None:
        self.sessions.pop(session.id, None)
        self._holder_of.pop(session.id, None)
        log.info("realtime session %s closed", session.id)
        if self.latency_dir is not None and session.connected_at is not None:
            prune_logs(self.latency_dir, self.latency_logs_keep)

    def overdue(self, session: WatchedCall, now: float) -> str | None:
        """Why `session` must end now, or None (see workbench.realtime.watchdog)."""
        return overdue(session, now, self.limits)

    def get(self, sid: str) -> ChatSession:
        s = self.sessions.get(sid)
        if s is None:
            raise HTTPException(404, f"no realtime session {sid!r}")
        return s

    async def close_all(self) -> None:
        for s in list(self.sessions.values()):
            await s.close()
        for t in list(self._reapers):
            t.cancel()

    def public_config(self) -> dict[str, Any]:
        return {
            "ice_servers": self.ice_servers,
            "modes": ["echo", "faq", "openai"],
            "voices": list(OPENAI_VOICES),
            "reasoning_efforts": list(REASONING_EFFORTS),
            "defaults": {
                "model": self.settings.realtime_model,
                "voice": self.settings.realtime_voice,
                "reasoning_effort": self.settings.realtime_reasoning_effort,
                "transcription_model": self.settings.realtime_transcription_model,
                "turn_detection": "server_vad",
                "silence_duration_ms": 500,
                "vad_threshold": 0.5,
            },
            "server_key": self.settings.openai_api_key is not None,  # whether one is set, never the key
            # Without open_avatars the page gets its one avatar through a grant and learns no other ids.
            "avatars": (self.avatar_ids() or [*self._added, *self._avatars]) if self.open_avatars else [],
            "open_avatars": self.open_avatars,
            "max_sessions": self.max_sessions,
            "active_sessions": len(self.sessions),
        }

    # ---- HTTP -----------------------------------------------------------------------------------
    def router(self) -> APIRouter:
        return build_router(self)


def prune_logs(folder: Path, keep: int, pattern: str = "*.jsonl") -> int:
    """Delete all but the newest `keep` files matching `pattern` in `folder`; returns how many went."""
    try:
        files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return 0
    removed = 0
    for old in files[keep:]:
        try:
            old.unlink()
            removed += 1
        except OSError as exc:  # another process pruned it first, or no permission: keep going
            log.debug("cannot remove %s: %s", old, exc)
    return removed


def mount_realtime(
    app: FastAPI,
    engine: RealtimeEngine,
    settings: Settings | None = None,
    *,
    prefix: str = "/rtc",
    preload_speech: bool = True,
    **manager_options: Any,
) -> RealtimeManager:
    """Add the realtime routes and the chat page to `app`; returns the session manager.

    Call it before mounting Gradio at "/", whose catch-all mount would otherwise shadow `prefix`.
    Sessions are closed when the app shuts down. `preload_speech` loads the local voice's speech
    models in the background now, so the first keyless conversation neither waits for them nor has
    its WebRTC handshake stalled by their loading.
    """
    init_audio_libraries()  # before any thread of ours imports an extension module (see its docstring)
    if preload_speech:
        threading.Thread(target=preload, name="speech-preload", daemon=True).start()
    manager = RealtimeManager(engine, settings, **manager_options)
    app.include_router(manager.router(), prefix=prefix)
    app.mount(f"{prefix}/static", StaticFiles(directory=STATIC_DIR), name="realtime-static")
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any):
        async with previous(a) as state:
            try:
                yield state
            finally:
                await manager.close_all()

    app.router.lifespan_context = lifespan
    app.state.realtime = manager
    return manager


def embed_html(prefix: str = "/rtc", avatar_id: str | None = None, height: int = 760, token: str | None = None) -> str:
    """The iframe the Gradio tab shows (`gr.HTML(embed_html(token=manager.grant(avatar_id)))`); microphone and
    autoplay allowed. With `token` the page carries the grant, never the avatar id; `avatar_id` preselects an
    avatar on an `open_avatars` server."""
    if token:
        query = f"?grant={quote(token)}"
    else:
        query = f"?avatar={quote(avatar_id)}" if avatar_id else ""
    src = f"{prefix}/chat{query}"
    return (
        f'<iframe src="{escape(src)}" title="Realtime chat" allow="microphone; autoplay" '
        f'style="width:100%;height:{int(height)}px;border:0;border-radius:8px"></iframe>'
    )
