"""A local stand-in for the OpenAI Realtime API (GA protocol) over websockets on 127.0.0.1.

It speaks the same events as the real service, so the real `openai` client talks to it unchanged
(`AsyncOpenAI(websocket_base_url=server.url)`): `session.created/updated`, `input_audio_buffer.*`
with an energy-based server VAD (`speech_started`/`speech_stopped`, interrupting a reply in
progress), `conversation.item.create/truncate/delete`, `response.create/cancel` and the whole
`response.*` sequence with real speech audio from the neural hibari voice (espeak-ng when it cannot
load), offline transcription of the committed user audio with Whisper tiny.en (when the session asks
for `audio.input.transcription`, or always with `transcribe=True`), and `error` events for bad input:
the GA session rules of `testkit.ga_session` (no `temperature`, `reasoning.effort` only for gpt-realtime-2 and
later, known transcription models) and models it does not serve (`models=`, `retired`) reported as the API does.
For tests and demos it records what it received, can refuse handshakes, inject errors and drop
every connection on demand.

Run one for a demo: `python -m testkit.fake_realtime --port 8765`, then point the app's
Realtime base URL at `ws://127.0.0.1:8765/v1`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import copy
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from testkit.ga_session import REALTIME_MODELS, TRANSCRIPTION_MODELS, check_session_fields, is_reasoning_model
from testkit.ga_session import BadRequest as _BadRequest
from testkit.ga_session import model_not_found as _model_not_found
from workbench.config import REALTIME_SAMPLE_RATE
from workbench.realtime.voices.openai_voice import OPENAI_VOICES
from workbench.realtime.voices.redact import redacting_logger
from workbench.voice import espeak
from workbench.voice.vad import EnergyVAD

log = logging.getLogger(__name__)
Responder = Callable[[str | None], str]
AudioSource = Callable[[str], np.ndarray]
Recogniser = Callable[[np.ndarray], str]  # int16 24 kHz → text


def neural_speech(text: str) -> np.ndarray:
    """The local voice's speaker: hibari's neural voice, or espeak-ng when it cannot load."""
    from workbench.voice.tts import load_speaker

    return load_speaker()[0].synthesize(text)


def whisper_transcript(pcm: np.ndarray) -> str:
    from workbench.voice.asr import shared_transcriber

    return shared_transcriber().transcribe(pcm, REALTIME_SAMPLE_RATE).text


def _model_of(path: str) -> str:
    """The `model` query parameter of a Realtime URL (the API's own default when there is none)."""
    if "model=" not in path:
        return "gpt-realtime"
    return path.split("model=", 1)[1].split("&", 1)[0]


def default_responder(user_text: str | None) -> str:
    if user_text:
        return f"You said: {user_text}"
    return "I heard you. This is the local test server speaking."


def _default_session(model: str) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": REALTIME_SAMPLE_RATE}
    session = {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_local",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "audio": {
            "input": {
                "format": pcm,
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": pcm, "voice": "marin", "speed": 1.0},
        },
    }
    if is_reasoning_model(model):
        session["reasoning"] = {"effort": "low"}  # the API's default for gpt-realtime-2
    return session


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    session: dict[str, Any]
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    item_audio_ms: dict[str, float] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    buffer: bytearray = field(default_factory=bytearray)
    buffer_ms: float = 0.0  # all audio ever appended, for audio_start_ms / audio_end_ms
    vad: EnergyVAD = field(default_factory=EnergyVAD)
    speech_item: str | None = None
    response: asyncio.Task | None = None
    response_id: str | None = None
    last_user_text: str | None = None
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class FakeRealtimeServer:
    """`async with FakeRealtimeServer() as server:` then connect a client to `server.url`."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        responder: Responder = default_responder,
        audio_source: AudioSource | None = None,
        transcribe: bool = False,
        recogniser: Recogniser | None = None,
        speed_factor: float = 8.0,
        chunk_ms: int = 100,
        models: frozenset[str] | set[str] = REALTIME_MODELS,
        transcription_models: frozenset[str] | set[str] = TRANSCRIPTION_MODELS,
        unknown_model: Literal["error", "http"] = "error",
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fake Realtime server only binds to loopback")
        self.api_key = api_key
        # Models this server serves; any other is refused as the API does: an `error` event (model_not_found)
        # and a close after the handshake, or with unknown_model="http" a 404 at the handshake itself.
        self.models = frozenset(models)
        self.transcription_models = frozenset(transcription_models)
        self.unknown_model = unknown_model
        self.retired: set[str] = set()  # served at connect, but every response fails with model_not_found
        self.responder = responder
        self.audio_source = audio_source or neural_speech
        self.transcribe = transcribe  # transcribe every committed turn, even when the session did not ask
        self.recogniser = recogniser or whisper_transcript
        self.transcripts: list[str] = []
        self.speed_factor = speed_factor
        self.chunk = REALTIME_SAMPLE_RATE * chunk_ms // 1000
        self.host, self.port = host, port
        self._server: Server | None = None
        self._conns: set[_Conn] = set()
        self._ids = itertools.count(1)
        self.received: list[dict[str, Any]] = []  # every client event (audio payloads replaced by their length)
        self.truncations: list[dict[str, Any]] = []
        self.sent_types: list[str] = []  # the type of every server event sent
        self.handshakes = 0
        self.refused = 0
        self._refuse: list[int] = []  # HTTP statuses to answer the next handshakes with
        self.paths: list[str] = []
        # event -> None (send it as is), a replacement event, or raw text to send instead (tests of bad input)
        self.mangle: Callable[[dict[str, Any]], dict[str, Any] | str | None] | None = None
        self._logger, self._redact = redacting_logger(f"{__name__}.ws")

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> FakeRealtimeServer:
        if self.api_key:
            self._redact.hold(self.api_key)  # websockets logs request headers at DEBUG
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._check,
            logger=self._logger,
            max_size=None,
            compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            if self.api_key:
                self._redact.release(self.api_key)

    async def __aenter__(self) -> FakeRealtimeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The `websocket_base_url` for `AsyncOpenAI` (the client appends `/realtime?model=…`)."""
        return f"ws://{self.host}:{self.port}/v1"

    @property
    def connections(self) -> int:
        return len(self._conns)

    # ---- test controls --------------------------------------------------------------------------
    def refuse_next(self, n: int = 1, status: int = 503) -> None:
        self._refuse += [status] * n

    async def drop_all(self, code: int = 1011) -> None:
        """Close every connection at once, as a server crash or network drop would."""
        for c in list(self._conns):
            if c.response is not None:
                c.response.cancel()
            await c.ws.close(code=code, reason="dropped by test")

    async def inject_error(self, message: str, code: str = "server_error", type_: str = "server_error") -> None:
        for c in list(self._conns):
            await self._error(c, message, code=code, type_=type_)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.01)

    def events_of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == type_]

    # ---- protocol -------------------------------------------------------------------------------
    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        self.paths.append(request.path)
        if self._refuse:
            self.refused += 1
            return connection.respond(self._refuse.pop(0), "refused by test\n")
        if not request.path.split("?")[0].rstrip("/").endswith("/realtime"):
            return connection.respond(404, "not a realtime endpoint\n")
        model = _model_of(request.path)
        if self.unknown_model == "http" and model not in self.models:
            err = _model_not_found(model)
            body = {"error": {"type": "invalid_request_error", "code": err.code, "message": str(err), "param": None}}
            return Response(
                404, "Not Found", Headers([("Content-Type", "application/json")]), json.dumps(body).encode()
            )
        if self.api_key is not None:
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.api_key}":
                return Response(401, "Unauthorized", Headers([("Content-Type", "text/plain")]), b"invalid api key\n")
        return None

    def _eid(self) -> str:
        return f"event_{next(self._ids)}"

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    async def _send(self, c: _Conn, event: dict[str, Any]) -> None:
        event = {"event_id": self._eid(), **event}
        self.sent_types.append(event["type"])
        # A test may corrupt what goes out (bad base64, a missing field, text that is not JSON).
        wire = self.mangle(event) if self.mangle is not None else None
        async with c.send_lock:
            try:
                await c.ws.send(wire if isinstance(wire, str) else json.dumps(wire or event))
            except ConnectionClosed:
                pass

    async def _error(
        self,
        c: _Conn,
        message: str,
        *,
        code: str | None = "invalid_value",
        type_: str = "invalid_request_error",
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        await self._send(
            c,
            {
                "type": "error",
                "error": {"type": type_, "code": code, "message": message, "param": param, "event_id": event_id},
            },
        )

    async def _handle(self, ws: ServerConnection) -> None:
        model = _model_of(ws.request.path if ws.request else "")
        c = _Conn(ws=ws, session=_default_session(model))
        self._conns.add(c)
        try:
            if model not in self.models:
                err = _model_not_found(model)
                await self._error(c, str(err), code=err.code, param=err.param)
                # The close says why too: a client whose first send fails on the closed socket still learns it.
                await ws.close(code=1008, reason=f"model_not_found: {model}"[:120])
                return
            await self._send(c, {"type": "session.created", "session": c.session})
            async for raw in ws:
                await self._dispatch(c, raw)
        except ConnectionClosed:
            pass
        finally:
            if c.response is not None:
                c.response.cancel()
            self._conns.discard(c)

    async def _dispatch(self, c: _Conn, raw: str | bytes) -> None:
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            await self._error(c, "The server could not parse the message as JSON.", code="invalid_json")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            await self._error(c, "Missing required parameter: 'type'.", code="missing_required_parameter", param="type")
            return
        record = dict(event)
        if record.get("type") == "input_audio_buffer.append" and isinstance(record.get("audio"), str):
            record["audio"] = f"<{len(record['audio'])} base64 chars>"
        self.received.append(record)
        handler = getattr(self, "_on_" + event["type"].replace(".", "_"), None)
        try:
            if handler is None:
                raise _BadRequest(f"Invalid value: '{event['type']}'. This is not a client event type.", param="type")
            await handler(c, event)
        except _BadRequest as bad:
            await self._error(c, str(bad), code=bad.code, param=bad.param, event_id=event.get("event_id"))

    # session.update
    async def _on_session_update(self, c: _Conn, event: dict[str, Any]) -> None:
        s = event.get("session")
        if not isinstance(s, dict):
            raise _BadRequest("Missing required parameter: 'session'.", "missing_required_parameter", "session")
        if s.get("type") != "realtime":
            raise _BadRequest("Invalid value for 'session.type': expected 'realtime'.", param="session.type")
        check_session_fields(s, c.session["model"], self.transcription_models)
        new = copy.deepcopy(c.session)
        if "reasoning" in s:
            new["reasoning"] = dict(s["reasoning"])
        for key in ("instructions", "output_modalities", "tools", "tool_choice", "max_output_tokens"):
            if key in s:
                new[key] = s[key]
        audio = s.get("audio") or {}
        for side in ("input", "output"):
            part = audio.get(side) or {}
            fmt = part.get("format")
            if fmt is not None:
                if fmt.get("type") == "audio/pcm" and fmt.get("rate", REALTIME_SAMPLE_RATE) != REALTIME_SAMPLE_RATE:
                    raise _BadRequest(
                        f"Invalid 'session.audio.{side}.format.rate': only 24000 is supported.",
                        param=f"session.audio.{side}.format.rate",
                    )
                if fmt.get("type") not in ("audio/pcm", "audio/pcmu", "audio/pcma"):
                    raise _BadRequest(
                        f"Invalid 'session.audio.{side}.format.type'.", param=f"session.audio.{side}.format.type"
                    )
            new["audio"][side].update({k: v for k, v in part.items()})
        voice = new["audio"]["output"].get("voice")
        if voice not in OPENAI_VOICES:
            raise _BadRequest(
                f"Invalid value: '{voice}'. Supported values are: {', '.join(OPENAI_VOICES)}.",
                param="session.audio.output.voice",
            )
        td = new["audio"]["input"].get("turn_detection")
        if td is not None and td.get("type") not in ("server_vad", "semantic_vad"):
            raise _BadRequest(
                "Invalid 'session.audio.input.turn_detection.type'.", param="session.audio.input.turn_detection.type"
            )
        c.session = new
        await self._send(c, {"type": "session.updated", "session": c.session})

    # input audio
    async def _on_input_audio_buffer_append(self, c: _Conn, event: dict[str, Any]) -> None:
        try:
            data = base64.b64decode(event.get("audio", ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _BadRequest("Invalid 'audio': not valid base64.", param="audio") from exc
        if len(data) % 2:
            raise _BadRequest("Invalid 'audio': PCM16 needs an even number of bytes.", param="audio")
        c.buffer += data
        pcm = np.frombuffer(data, dtype="<i2")
        c.buffer_ms += 1000 * len(pcm) / REALTIME_SAMPLE_RATE
        td = c.session["audio"]["input"].get("turn_detection")
        if td is None:
            return
        for kind, ms in c.vad.process(pcm):
            if kind == "speech_started":
                c.speech_item = self._new_id("item")
                await self._send(
                    c, {"type": "input_audio_buffer.speech_started", "audio_start_ms": ms, "item_id": c.speech_item}
                )
                if td.get("interrupt_response", True) and c.response is not None and not c.response.done():
                    await self._cancel(c, reason="turn_detected")
            elif kind == "speech_stopped" and c.speech_item is not None:
                item_id, c.speech_item = c.speech_item, None
                await self._send(
                    c, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ms, "item_id": item_id}
                )
                await self._commit(c, item_id)
                if td.get("create_response", True):
                    await self._start_response(c)

    async def _on_input_audio_buffer_commit(self, c: _Conn, event: dict[str, Any]) -> None:
        if len(c.buffer) < 2 * REALTIME_SAMPLE_RATE // 10:
            raise _BadRequest(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio.",
                "input_audio_buffer_commit_empty",
            )
        await self._commit(c, self._new_id("item"))

    async def _on_input_audio_buffer_clear(self, c: _Conn, event: dict[str, Any]) -> None:
        c.buffer.clear()
        await self._send(c, {"type": "input_audio_buffer.cleared"})

    async def _commit(self, c: _Conn, item_id: str) -> None:
        previous = c.order[-1] if c.order else None
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        pcm = np.frombuffer(bytes(c.buffer), dtype="<i2")
        c.buffer.clear()
        c.last_user_text = None
        await self._send(c, {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        await self._add_item(c, item, previous)
        asked = c.session["audio"]["input"].get("transcription")
        if (asked or self.transcribe) and len(pcm):
            # Awaited before any response starts, so the responder answers what was said.
            text = await asyncio.to_thread(self.recogniser, pcm)
            self.transcripts.append(text)
            c.last_user_text = text or None
            item["content"][0]["transcript"] = text
            if asked:
                await self._send(
                    c,
                    {
                        "type": "conversation.item.input_audio_transcription.completed",
                        "item_id": item_id,
                        "content_index": 0,
                        "transcript": text,
                    },
                )

    async def _add_item(self, c: _Conn, item: dict[str, Any], previous: str | None) -> None:
        c.items[item["id"]] = item
        c.order.append(item["id"])
        await self._send(c, {"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        await self._send(c, {"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    # conversation
    async def _on_conversation_item_create(self, c: _Conn, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") != "message":
            raise _BadRequest("Invalid 'item': only message items are supported here.", param="item.type")
        if item.get("role") not in ("user", "assistant", "system"):
            raise _BadRequest("Invalid 'item.role'.", param="item.role")
        content = item.get("content")
        if not isinstance(content, list) or not content:
            raise _BadRequest(
                "Missing required parameter: 'item.content'.", "missing_required_parameter", "item.content"
            )
        allowed = {
            "user": {"input_text", "input_audio"},
            "system": {"input_text"},
            "assistant": {"output_text", "output_audio"},
        }
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in allowed[item["role"]]:
                raise _BadRequest(f"Invalid content type for role '{item['role']}'.", param="item.content.type")
        item = {"id": item.get("id") or self._new_id("item"), "object": "realtime.item", "status": "completed", **item}
        if item["role"] == "user":
            texts = [p.get("text", "") for p in content if p.get("type") == "input_text"]
            c.last_user_text = " ".join(t for t in texts if t) or None
        await self._add_item(c, item, c.order[-1] if c.order else None)

    async def _on_conversation_item_truncate(self, c: _Conn, event: dict[str, Any]) -> None:
        item_id, end = event.get("item_id"), event.get("audio_end_ms")
        if item_id not in c.items:
            raise _BadRequest(f"Item with item_id not found: {item_id}", "item_not_found", "item_id")
        if c.items[item_id].get("role") != "assistant":
            raise _BadRequest("Only assistant message items can be truncated.", param="item_id")
        if event.get("content_index", 0) != 0:
            raise _BadRequest("Invalid 'content_index'.", param="content_index")
        if not isinstance(end, int) or end < 0:
            raise _BadRequest("Invalid 'audio_end_ms'.", param="audio_end_ms")
        total = c.item_audio_ms.get(item_id, 0.0)
        if end > total + 1:
            raise _BadRequest(f"Audio content of {total:.0f}ms is already shorter than {end}ms", param="audio_end_ms")
        c.item_audio_ms[item_id] = float(end)
        self.truncations.append({"item_id": item_id, "audio_end_ms": end, "audio_total_ms": total})
        await self._send(
            c, {"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0, "audio_end_ms": end}
        )

    async def _on_conversation_item_delete(self, c: _Conn, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        if item_id not in c.items:
            raise _BadRequest(f"Item with item_id not found: {item_id}", "item_not_found", "item_id")
        del c.items[item_id]
        c.order.remove(item_id)
        await self._send(c, {"type": "conversation.item.deleted", "item_id": item_id})

    # responses
    async def _on_response_create(self, c: _Conn, event: dict[str, Any]) -> None:
        if c.response is not None and not c.response.done():
            raise _BadRequest(
                "Conversation already has an active response in progress.", "conversation_already_has_active_response"
            )
        await self._start_response(c)

    async def _on_response_cancel(self, c: _Conn, event: dict[str, Any]) -> None:
        if c.response is None or c.response.done():
            raise _BadRequest("Cancellation failed: no active response found", "response_cancel_not_active")
        await self._cancel(c, reason="client_cancelled")

    async def _start_response(self, c: _Conn) -> None:
        if c.response is not None and not c.response.done():
            await self._cancel(c, reason="turn_detected")
        c.response_id = self._new_id("resp")
        if c.session["model"] in self.retired:
            await self._fail_response(c, c.response_id, _model_not_found(c.session["model"]))
            return
        c.response = asyncio.create_task(self._respond(c, c.response_id))
        # Let the response announce itself before the next client event is read.
        await asyncio.sleep(0)

    async def _fail_response(self, c: _Conn, response_id: str, err: _BadRequest) -> None:
        """A response that fails at once, as the API reports a model it no longer serves to this key."""
        failed = {"type": "failed", "error": {"type": "invalid_request_error", "code": err.code, "message": str(err)}}
        base = {"id": response_id, "object": "realtime.response", "output": [], "output_modalities": ["audio"]}
        await self._send(c, {"type": "response.created", "response": {**base, "status": "in_progress"}})
        await self._send(
            c, {"type": "response.done", "response": {**base, "status": "failed", "status_details": failed}}
        )

    async def _cancel(self, c: _Conn, reason: str) -> None:
        task = c.response
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        c.response = None
        await self._send(
            c,
            {
                "type": "response.done",
                "response": {
                    "id": c.response_id,
                    "object": "realtime.response",
                    "status": "cancelled",
                    "status_details": {"type": "cancelled", "reason": reason},
                    "output": [],
                    "output_modalities": ["audio"],
                },
            },
        )

    async def _respond(self, c: _Conn, response_id: str) -> None:
        item_id = self._new_id("item")
        previous = c.order[-1] if c.order else None
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        c.items[item_id] = item
        c.order.append(item_id)
        c.item_audio_ms[item_id] = 0.0
        base = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        await self._send(
            c,
            {
                "type": "response.created",
                "response": {
                    "id": response_id,
                    "object": "realtime.response",
                    "status": "in_progress",
                    "output": [],
                    "output_modalities": ["audio"],
                },
            },
        )
        await self._send(
            c, {"type": "response.output_item.added", "response_id": response_id, "output_index": 0, "item": item}
        )
        await self._send(c, {"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        await self._send(
            c, {"type": "response.content_part.added", **base, "part": {"type": "audio", "transcript": ""}}
        )
        text = self.responder(c.last_user_text)
        loop = asyncio.get_running_loop()
        t0, sent = loop.time(), 0
        for sentence in espeak.split_sentences(text):
            pcm = await asyncio.to_thread(self.audio_source, sentence)
            await self._send(c, {"type": "response.output_audio_transcript.delta", **base, "delta": sentence + " "})
            for i in range(0, len(pcm), self.chunk):
                piece = pcm[i : i + self.chunk]
                await self._send(
                    c,
                    {
                        "type": "response.output_audio.delta",
                        **base,
                        "delta": base64.b64encode(piece.astype("<i2").tobytes()).decode("ascii"),
                    },
                )
                sent += len(piece)
                c.item_audio_ms[item_id] = 1000 * sent / REALTIME_SAMPLE_RATE
                await asyncio.sleep(max(0.0, t0 + sent / REALTIME_SAMPLE_RATE / self.speed_factor - loop.time()))
        item["status"] = "completed"
        item["content"] = [{"type": "output_audio", "transcript": text}]
        await self._send(c, {"type": "response.output_audio.done", **base})
        await self._send(c, {"type": "response.output_audio_transcript.done", **base, "transcript": text})
        await self._send(
            c, {"type": "response.content_part.done", **base, "part": {"type": "audio", "transcript": text}}
        )
        await self._send(
            c, {"type": "response.output_item.done", "response_id": response_id, "output_index": 0, "item": item}
        )
        await self._send(c, {"type": "conversation.item.done", "previous_item_id": previous, "item": item})
        await self._send(
            c,
            {
                "type": "response.done",
                "response": {
                    "id": response_id,
                    "object": "realtime.response",
                    "status": "completed",
                    "output": [item],
                    "output_modalities": ["audio"],
                    "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0},
                },
            },
        )
        c.response = None


async def _serve_forever(port: int, api_key: str | None) -> None:
    async with FakeRealtimeServer(port=port, api_key=api_key) as server:
        log.warning("fake Realtime server listening on %s (websocket_base_url)", server.url)
        await asyncio.Future()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local stand-in for the OpenAI Realtime API (127.0.0.1 only)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default=None, help="require this bearer key (default: accept any)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_serve_forever(args.port, args.api_key))


if __name__ == "__main__":
    main()
