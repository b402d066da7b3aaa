"""The OpenAI Realtime voice: `AsyncOpenAI().realtime.connect` with the GA event names, and reconnects.

Works with OpenAI, Azure, or any Realtime-compatible server. When the connection drops it reconnects
with exponential backoff, re-sends the session configuration and replays the conversation as text so
the model keeps its memory. The API key lives in memory only (a `SecretStr`), is never logged (a
redacting filter sits on the websocket loggers) and never leaves the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import random
import time
from collections import deque
from typing import Any

import numpy as np
from pydantic import SecretStr

from workbench.config import REALTIME_SAMPLE_RATE
from workbench.realtime.openai_config import RealtimeConfig
from workbench.realtime.openai_errors import error_detail, model_setting, unknown_model_message
from workbench.realtime.voices.contract import VoiceAuthError, VoiceError, VoiceEvent, VoiceSession
from workbench.realtime.voices.redact import redact_url, redacting_logger
from workbench.voice.vad import EnergyVAD

log = logging.getLogger(__name__)

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")

# websockets logs handshake headers at DEBUG: every Realtime connection logs through this one.
_WS_LOGGER, _WS_REDACT = redacting_logger(f"{__name__}.ws")
# The SDK logs the URL it connects to at DEBUG (openai 1.107): redact there too. A logger's filters see only
# its own records, so each logger that may carry a URL gets one.
for _name in ("openai.resources.realtime.realtime", "openai.resources.beta.realtime.realtime", "openai._base_client"):
    redacting_logger(_name)


class BadEventError(ValueError):
    """A server event that cannot be used (not JSON, bad base64, a field missing): skipped, not fatal."""


BAD_EVENT_NOTICE = "the Realtime server sent a malformed event; it was skipped and the reply goes on"
_UNPARSABLE = "workbench.unparsable"  # marks a server message that was not JSON
BAD_EVENT_NOTICE_EVERY_S = 10.0  # the page hears of bad events at most this often; the log gets each one


def _pcm_from_b64(data: str) -> np.ndarray:
    if not isinstance(data, str | bytes) or not data:
        raise BadEventError("audio event without data")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadEventError(f"audio is not valid base64 ({exc})") from None
    return np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2").astype(np.int16)


def _pcm_to_b64(pcm: np.ndarray) -> str:
    return base64.b64encode(np.asarray(pcm, dtype="<i2").tobytes()).decode("ascii")


class OpenAIRealtimeVoice(VoiceSession):
    """The OpenAI Realtime API through `AsyncOpenAI().realtime.connect`, with reconnects."""

    mode = "openai"

    def __init__(
        self,
        config: RealtimeConfig | None = None,
        api_key: str | SecretStr | None = None,
        *,
        history_items: int = 20,
        client: Any | None = None,
    ):
        super().__init__()
        self.config = config or RealtimeConfig()
        if isinstance(api_key, str):
            api_key = SecretStr(api_key) if api_key.strip() else None
        if api_key is None and client is None:
            raise VoiceError("an OpenAI API key is needed: set OPENAI_API_KEY or enter one in the key field")
        self._key = api_key
        self._released = False
        self._client = client
        if api_key is not None:
            _WS_REDACT.hold(api_key.get_secret_value())
        self._conn: Any | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._wake = asyncio.Event()
        self._first_outcome: asyncio.Future | None = None
        self._pending_text: deque[str] = deque(maxlen=10)
        self._history: deque[tuple[str, str]] = deque(maxlen=history_items)  # (role, text) replayed after a reconnect
        self._history_item_ids: deque[str | None] = deque(maxlen=history_items)  # to shorten a turn cut off
        self._ever_connected = False
        self._item_audio_ms: dict[str, float] = {}
        self._item_transcript: dict[str, str] = {}
        self.reconnects = 0
        self.attempt = 0
        self.bad_events = 0  # malformed server events skipped
        self._bad_event_noticed = -float("inf")
        self._client_vad = EnergyVAD()  # used when turn_detection is "none"
        self._prefix: deque[np.ndarray] = deque()
        self._fatal: str | None = None  # set when the API refused the model: no reconnect

    def describe(self) -> str:
        where = f" · at {redact_url(self.config.base_url)}" if self.config.base_url else ""
        return f"OpenAI {self.config.model} · voice: {self.config.voice}{where}"

    def _make_client(self) -> Any:
        from openai import AsyncOpenAI

        kwargs: dict[str, Any] = {"api_key": self._key.get_secret_value() if self._key else None}
        base = self.config.base_url
        if base and base.startswith(("ws://", "wss://")):
            kwargs["websocket_base_url"] = base
        elif base:
            kwargs["base_url"] = base
        return AsyncOpenAI(**kwargs)

    async def connect(self) -> None:
        if self._task is not None:
            return
        if self._client is None:
            self._client = self._make_client()
        loop = asyncio.get_running_loop()
        self._first_outcome = loop.create_future()
        self._task = asyncio.create_task(self._run(), name="openai-realtime")
        try:
            await asyncio.wait_for(asyncio.shield(self._first_outcome), self.config.connect_timeout_s + 1)
        except TimeoutError as exc:
            raise VoiceError(
                f"no answer from the Realtime server within {self.config.connect_timeout_s:.0f} s"
            ) from exc

    def _settle_first(self, exc: BaseException | None) -> None:
        f = self._first_outcome
        if f is not None and not f.done():
            if exc is None:
                f.set_result(True)
            else:
                f.set_exception(exc)

    async def _run(self) -> None:
        while not self._closing:
            if not self._ever_connected and self.attempt == 0:
                self._emit(VoiceEvent("status", status="connecting", text=self.describe()))
            error: BaseException | None = None
            try:
                manager = self._client.realtime.connect(
                    model=self.config.model,
                    websocket_connection_options={"logger": _WS_LOGGER},
                )
                conn = await asyncio.wait_for(manager.enter(), self.config.connect_timeout_s)
                try:
                    self._conn = conn
                    await conn.session.update(session=self.config.session_payload())
                    await self._replay(conn)
                    await self._receive(conn)
                finally:
                    self._conn = None
                    with contextlib.suppress(Exception):  # the socket may already be gone
                        await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # classified below: retry, or fail with a message for the user
                error = exc
            if self._closing:
                break
            detail, retry, bad_key = error_detail(error, self.config.model)
            if self._fatal:  # the API refused the model: retrying gets the same answer
                detail, retry, bad_key = self._fatal, False, False
            detail = redact_url(detail)  # an exception may quote the URL, credentials and all
            if self.response_active:
                self._emit(VoiceEvent("response_done", status="failed"))
            if not retry:
                self._emit(VoiceEvent("status", status="failed", text=detail))
                self._settle_first(VoiceAuthError(detail) if bad_key else VoiceError(detail))
                return
            self.attempt += 1
            if self.attempt > self.config.max_retries:
                msg = f"{detail}; gave up after {self.config.max_retries} retries"
                self._emit(VoiceEvent("status", status="failed", text=msg))
                self._settle_first(VoiceError(msg))
                return
            delay = min(self.config.initial_backoff_s * 2 ** (self.attempt - 1), self.config.max_backoff_s)
            delay *= 0.75 + 0.25 * random.random()
            self._emit(
                VoiceEvent(
                    "status",
                    status="reconnecting",
                    text=f"{detail}; retrying in {delay:.1f} s ({self.attempt}/{self.config.max_retries})",
                )
            )
            log.info("realtime connection lost (%s); retry %d in %.1f s", detail, self.attempt, delay)
            self._wake.clear()
            if self._closing:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
        self._emit(VoiceEvent("status", status="closed"))

    async def _replay(self, conn: Any) -> None:
        """After a reconnect the server has a fresh conversation: give it the old one as text."""
        for role, text in list(self._history):
            kind = "input_text" if role == "user" else "output_text"
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": role,
                    "content": [{"type": kind, "text": text}],
                }
            )
        while self._pending_text:
            await self._send_text_now(conn, self._pending_text.popleft())

    async def _receive(self, conn: Any) -> None:
        """Read server events until the socket closes; one bad event is skipped, never the end of the call.

        The SDK's own iterator is kept (it knows how the socket closes); only its parser is wrapped, per
        connection, so that text that is not JSON becomes a marker instead of an exception out of the loop.
        """
        parse = conn.parse_event

        def tolerant_parse(data: str | bytes) -> Any:
            try:
                return parse(data)
            except (ValueError, TypeError) as exc:  # not JSON, or JSON the client cannot type
                return {"type": _UNPARSABLE, "error": exc}

        conn.parse_event = tolerant_parse
        async for event in conn:
            if isinstance(event, dict) and event.get("type") == _UNPARSABLE:
                self._bad_event("unparsable", event["error"])
                continue
            try:
                await self._handle(event)
            except (BadEventError, AttributeError, TypeError, KeyError, ValueError) as exc:
                self._bad_event(getattr(event, "type", None) or "untyped", exc)

    def _bad_event(self, kind: str, exc: BaseException) -> None:
        # The event's content is not logged: it is the server's, and may be large; its type and the fault are.
        self.bad_events += 1
        log.warning("skipped a malformed Realtime event (%s): %s: %s", kind, type(exc).__name__, str(exc)[:200])
        now = time.monotonic()
        if now - self._bad_event_noticed >= BAD_EVENT_NOTICE_EVERY_S:
            self._bad_event_noticed = now
            self._emit(VoiceEvent("error", text=BAD_EVENT_NOTICE, code="bad_server_event"))

    async def _handle(self, event: Any) -> None:
        t = getattr(event, "type", None)
        if t in ("session.created", "session.updated"):
            if self.status != "connected":
                if self._ever_connected:
                    self.reconnects += 1
                self._ever_connected = True
                self.attempt = 0
                self._emit(VoiceEvent("status", status="connected", text=self.describe()))
                self._settle_first(None)
        elif t in ("response.output_audio.delta", "response.audio.delta"):
            pcm = _pcm_from_b64(event.delta)
            self._item_audio_ms[event.item_id] = (
                self._item_audio_ms.get(event.item_id, 0.0) + 1000 * len(pcm) / REALTIME_SAMPLE_RATE
            )
            self._emit(VoiceEvent("audio", item_id=event.item_id, response_id=event.response_id, audio=pcm))
        elif t in ("response.output_audio.done", "response.audio.done"):
            self._emit(VoiceEvent("audio_done", item_id=event.item_id, response_id=event.response_id))
        elif t in (
            "response.output_audio_transcript.delta",
            "response.audio_transcript.delta",
            "response.output_text.delta",
            "response.text.delta",
        ):
            self._item_transcript[event.item_id] = self._item_transcript.get(event.item_id, "") + event.delta
            self._emit(VoiceEvent("transcript", item_id=event.item_id, response_id=event.response_id, text=event.delta))
        elif t in ("response.output_audio_transcript.done", "response.audio_transcript.done"):
            text = getattr(event, "transcript", None) or self._item_transcript.get(event.item_id, "")
            self._history.append(("assistant", text))
            self._history_item_ids.append(event.item_id)
            self._emit(VoiceEvent("transcript_done", item_id=event.item_id, text=text))
        elif t == "conversation.item.input_audio_transcription.completed":
            self._history.append(("user", event.transcript))
            self._history_item_ids.append(event.item_id)
            self._emit(VoiceEvent("user_transcript", item_id=event.item_id, text=event.transcript))
        elif t == "input_audio_buffer.speech_started":
            self._emit(VoiceEvent("speech_started", item_id=getattr(event, "item_id", None)))
        elif t == "input_audio_buffer.speech_stopped":
            self._emit(VoiceEvent("speech_stopped", item_id=getattr(event, "item_id", None)))
        elif t == "response.created":
            self._emit(VoiceEvent("response_started", response_id=getattr(event.response, "id", None)))
        elif t == "response.done":
            r = event.response
            failure = getattr(getattr(r, "status_details", None), "error", None)
            if failure is not None:
                await self._model_failure(getattr(failure, "code", None), getattr(failure, "message", None))
            self._emit(
                VoiceEvent("response_done", response_id=getattr(r, "id", None), status=getattr(r, "status", None))
            )
        elif t == "conversation.item.truncated":
            self._emit(VoiceEvent("truncated", item_id=event.item_id, audio_end_ms=event.audio_end_ms))
        elif t == "error":
            err = event.error
            if getattr(err, "code", None) == "response_cancel_not_active":
                log.debug("ignored: %s", err.message)  # a cancel racing the server's own VAD cancel
                return
            if await self._model_failure(getattr(err, "code", None), err.message, getattr(err, "param", None)):
                return
            log.warning("realtime error %s: %s", getattr(err, "code", None), err.message)
            self._emit(
                VoiceEvent("error", text=err.message, code=getattr(err, "code", None) or getattr(err, "type", None))
            )

    async def _model_failure(self, code: str | None, message: str | None, param: str | None = None) -> bool:
        """An unknown or retired model ends the session with one plain message naming the setting to change."""
        setting = model_setting(code, message, param)
        if setting is None or self._fatal:
            return setting is not None
        name = self.config.model if setting == "model" else self.config.transcription_model
        self._fatal = unknown_model_message(setting, name)
        log.warning("realtime model refused (%s): %s", code, message)
        if self._ever_connected:  # before that, connect() raises with this message: the page hears it once
            self._emit(VoiceEvent("error", text=self._fatal, code="model_not_found"))
        if self._conn is not None:
            await self._conn.close()  # ends the receive loop; _run then fails without retrying
        return True

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._key is not None and not self._released:
            self._released = True
            _WS_REDACT.release(self._key.get_secret_value())
        conn = self._conn
        if conn is not None:
            try:
                await conn.close()
            except Exception as exc:  # closing a broken socket may fail; nothing to recover
                log.debug("close: %s", exc)
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except Exception as exc:
                log.debug("realtime task ended with %s", exc)
        else:
            self._emit(VoiceEvent("status", status="closed"))
        self._settle_first(VoiceError("closed"))

    async def send_user_audio(self, pcm: np.ndarray) -> None:
        conn = self._conn
        if conn is None or self.status != "connected":
            return  # stale microphone audio is worthless after a reconnect
        if self.config.turn_detection != "none":
            await conn.input_audio_buffer.append(audio=_pcm_to_b64(pcm))
            return
        # No server VAD: the client finds the turns. Audio goes up only while the user speaks, with
        # the last 300 ms before the detected start, and a finished turn is committed and answered.
        events = self._client_vad.process(pcm)
        self._prefix.append(pcm)
        while sum(len(x) for x in self._prefix) > REALTIME_SAMPLE_RATE * 3 // 10 + len(pcm):
            self._prefix.popleft()
        for kind, _ms in events:
            if kind == "speech_started":
                self._emit(VoiceEvent("speech_started"))
                await conn.input_audio_buffer.append(audio=_pcm_to_b64(np.concatenate(list(self._prefix))))
                self._prefix.clear()
            else:
                self._emit(VoiceEvent("speech_stopped"))
                await conn.input_audio_buffer.commit()
                await conn.response.create()
        if self._client_vad.speaking and not any(k == "speech_started" for k, _ in events):
            await conn.input_audio_buffer.append(audio=_pcm_to_b64(pcm))
            self._prefix.clear()

    async def send_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        conn = self._conn
        if conn is None or self.status != "connected":
            self._pending_text.append(text)  # sent once the connection is back
            return
        await self._send_text_now(conn, text)

    async def _send_text_now(self, conn: Any, text: str) -> None:
        self._history.append(("user", text))
        self._history_item_ids.append(None)
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            }
        )
        await conn.response.create()

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        total = self._item_audio_ms.get(item_id)
        if total:
            audio_end_ms = int(min(audio_end_ms, total))
            # The replayed history keeps only the share of the transcript the user heard.
            for k, iid in enumerate(self._history_item_ids):
                if iid == item_id and k < len(self._history):
                    role, text = self._history[k]
                    self._history[k] = (role, text[: int(len(text) * audio_end_ms / total)])
        conn = self._conn
        if conn is None:
            return
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=int(audio_end_ms))

    async def cancel_response(self) -> None:
        conn = self._conn
        if conn is not None and self.response_active:
            await conn.response.cancel()
