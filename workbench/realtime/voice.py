"""Voice sessions: where the avatar's reply audio comes from.

Two implementations feed the same audio path (`VoiceEvent`s into a `LipSyncStream`):

* `OpenAIRealtimeVoice` talks to the OpenAI Realtime API (or Azure, or any Realtime-compatible
  server) through the official `openai` client, `AsyncOpenAI().realtime.connect`, with the GA event
  names. It reconnects with exponential backoff when the connection drops, re-sends the session
  configuration and replays the conversation as text so the model keeps its memory.
* `LocalVoice` needs no key: it hears the microphone offline (Silero VAD turns, Whisper tiny.en) or
  reads typed text, answers by echoing it or from a small FAQ, and speaks with the neural hibari voice
  (espeak-ng as the fallback) through the same lip-sync path. See `workbench.voice`.

The API key lives in memory only (a `SecretStr`), is never logged (a redacting filter sits on the
websocket loggers) and never leaves the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import logging
import random
import re
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import SecretStr

from workbench.config import REALTIME_SAMPLE_RATE
from workbench.realtime import tts
from workbench.realtime.openai_config import DEFAULT_INSTRUCTIONS, RealtimeConfig  # noqa: F401 (re-exported)
from workbench.realtime.openai_errors import error_detail, model_setting, unknown_model_message

log = logging.getLogger(__name__)

VoiceEventKind = Literal[
    "status",  # connection state changed: status = connecting | connected | reconnecting | failed | closed
    "audio",  # a chunk of reply audio (int16, 24 kHz)
    "audio_done",  # the reply item's audio is complete
    "transcript",  # a delta of the reply's transcript
    "transcript_done",  # the reply's whole transcript
    "user_transcript",  # what the user said, transcribed
    "speech_started",  # the user started speaking (barge-in)
    "speech_stopped",
    "response_started",
    "response_done",  # status = completed | cancelled | failed | incomplete
    "truncated",  # the server confirmed a truncation
    "error",  # text = message, code = error code
    "note",  # something the user should know (fallback voice, English only, a long turn cut), text = note
]
ConnectionStatus = Literal["idle", "connecting", "connected", "reconnecting", "failed", "closed"]

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
_ids = itertools.count(1)


class VoiceError(RuntimeError):
    """A voice session cannot start or was used wrongly (no key, bad setting, closed session)."""


class VoiceAuthError(VoiceError):
    """The Realtime server refused the credentials."""


@dataclass
class VoiceEvent:
    kind: VoiceEventKind
    item_id: str | None = None
    response_id: str | None = None
    audio: np.ndarray | None = None  # int16 mono 24 kHz, for kind == "audio"
    text: str | None = None  # transcript, status detail or error message
    status: str | None = None  # connection status, or a response's final status
    code: str | None = None  # error code
    audio_end_ms: int | None = None  # for "truncated"

    def public(self) -> dict[str, Any]:
        """The JSON-safe part the browser may see (never audio, never credentials)."""
        return {
            k: v
            for k, v in {
                "kind": self.kind,
                "item_id": self.item_id,
                "response_id": self.response_id,
                "text": self.text,
                "status": self.status,
                "code": self.code,
                "audio_end_ms": self.audio_end_ms,
            }.items()
            if v is not None
        }


# ---- secrets never reach a log ----------------------------------------------------------------
_AUTH_PATTERNS = [
    re.compile(r"(?i)(authorization|api-key|openai-api-key)(\s*[:=]\s*)(\S.*)"),
    re.compile(r"(?i)(bearer\s+)(\S+)"),
    re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,})"),
]


# Credentials inside a URL: user:password@ and secret-looking query parameters (Azure's api-key=, SAS sig=).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@")
_URL_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:api[-_]?key|key|token|access_token|auth|sig|signature|password|secret)=)[^&#\s]+"
)


def redact_url(text: str) -> str:
    """`text` with every URL's credentials replaced by [redacted] (what logs, latency logs and the page show)."""
    return _URL_SECRET_QUERY.sub(r"\1[redacted]", _URL_USERINFO.sub(r"\1[redacted]@", text))


class RedactingFilter(logging.Filter):
    """Rewrites a record so no credential appears: known secrets, Authorization headers, sk- keys."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self._held: Counter[str] = Counter(s for s in (secrets or []) if s)

    @property
    def secrets(self) -> list[str]:
        return list(self._held)

    def hold(self, secret: str) -> None:
        """Redact `secret` until as many `release` calls as `hold` calls were made for it."""
        if secret:
            self._held[secret] += 1

    def release(self, secret: str) -> None:
        self._held[secret] -= 1
        if self._held[secret] <= 0:
            del self._held[secret]

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "[redacted]")
        text = _AUTH_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
        text = _AUTH_PATTERNS[1].sub(lambda m: f"{m.group(1)}[redacted]", text)
        return redact_url(_AUTH_PATTERNS[2].sub("[redacted]", text))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: drop its arguments rather than risk leaking them
            message = str(record.msg)
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        return True


def redacting_logger(name: str) -> tuple[logging.Logger, RedactingFilter]:
    """A logger whose records are redacted before any handler (ours or a test's) sees them.

    `hold` the secrets in use on the returned filter (and `release` them when done); header and
    `sk-…` patterns are redacted whatever is held.
    """
    logger = logging.getLogger(name)
    for f in logger.filters:
        if isinstance(f, RedactingFilter):
            return logger, f
    f = RedactingFilter()
    logger.addFilter(f)
    return logger, f


# websockets logs handshake headers at DEBUG: every Realtime connection logs through this one.
_WS_LOGGER, _WS_REDACT = redacting_logger(f"{__name__}.ws")
# The SDK logs the URL it connects to at DEBUG (openai 1.107): redact there too. A logger's filters see only
# its own records, so each logger that may carry a URL gets one.
for _name in ("openai.resources.realtime.realtime", "openai.resources.beta.realtime.realtime", "openai._base_client"):
    redacting_logger(_name)


# ---- the interface -----------------------------------------------------------------------------
class VoiceSession(ABC):
    """One conversation's voice: user audio/text in, `VoiceEvent`s out (read with `iter_events`)."""

    mode: str = "base"

    def __init__(self) -> None:
        self.events: asyncio.Queue[VoiceEvent] = asyncio.Queue()
        self.status: ConnectionStatus = "idle"
        self.response_active = False

    def _emit(self, event: VoiceEvent) -> None:
        if event.kind == "status" and event.status:
            self.status = event.status  # type: ignore[assignment]
        elif event.kind == "response_started":
            self.response_active = True
        elif event.kind == "response_done":
            self.response_active = False
        self.events.put_nowait(event)

    async def iter_events(self) -> AsyncIterator[VoiceEvent]:
        while True:
            event = await self.events.get()
            yield event
            if event.kind == "status" and event.status == "closed":
                return

    @abstractmethod
    async def connect(self) -> None:
        """Open the session; raises `VoiceError` when it cannot start at all."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def send_user_audio(self, pcm: np.ndarray) -> None:
        """Microphone audio, int16 mono at 24 kHz."""

    @abstractmethod
    async def send_text(self, text: str) -> None:
        """A typed user message; the voice replies to it."""

    @abstractmethod
    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """The user heard only `audio_end_ms` of `item_id`: make the conversation match."""

    @abstractmethod
    async def cancel_response(self) -> None: ...

    def describe(self) -> str:
        return self.mode


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


# ---- OpenAI Realtime ----------------------------------------------------------------------------
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


# ---- keyless local voice ------------------------------------------------------------------------
DEFAULT_FAQ: dict[str, str] = {
    "hello hi hey": "Hello! I am the local demo avatar. Type a question, or connect an OpenAI key to talk freely.",
    "who what are you": "I am a talking head driven by the workbench's lip-sync renderer, speaking with a local voice.",
    "how does lip sync work": "My voice is cut into forty millisecond frames, each frame becomes a mouth shape, "
    "and the renderer paints it onto my face in time with the sound.",
    "what is musetalk": "MuseTalk is a real-time lip-sync model. It inpaints the lower half of the face in latent "
    "space, conditioned on Whisper audio features.",
    "how use openai key real voice": "Choose the OpenAI mode and enter your key. The key stays on the server "
    "for this session only.",
    "what can you do help": "I can echo what you type, answer a few questions about this workbench, and stop "
    "talking as soon as you interrupt me.",
    "bye goodbye thanks thank": "Thank you for talking with me. Goodbye!",
}
_STOP = {"a", "an", "the", "is", "are", "do", "does", "i", "you", "me", "my", "your", "to", "of", "can", "it", "in"}


def load_faq(path: str | Path) -> dict[str, str]:
    """A FAQ from YAML: a mapping question → answer, or a list of {q: …, a: …}."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict):
        faq = {str(k): str(v) for k, v in data.items()}
    elif isinstance(data, list) and all(isinstance(x, dict) and "q" in x and "a" in x for x in data):
        faq = {str(x["q"]): str(x["a"]) for x in data}
    else:
        raise VoiceError(f"{path}: a FAQ must be a mapping question -> answer or a list of {{q, a}}")
    if not faq:
        raise VoiceError(f"{path}: the FAQ is empty")
    return faq


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in _STOP}


def faq_answer(faq: dict[str, str], question: str, fallback: str | None = None) -> str:
    """The answer whose question shares the most words with `question` (a bag-of-words match)."""
    asked = _words(question)
    best, best_score = None, 0.0
    for q, a in faq.items():
        keys = _words(q)
        if not keys or not asked:
            continue
        score = len(keys & asked) / min(len(keys), len(asked))
        if score > best_score:
            best, best_score = a, score
    if best is not None and best_score >= 0.34:
        return best
    return fallback or "I only know a few answers in local mode. Ask me how lip sync works, or what MuseTalk is."


class EnergyVAD:
    """Speech start/stop on 24 kHz PCM16 from its loudness over 20 ms windows, with a noise floor."""

    def __init__(
        self,
        threshold_db: float = -38.0,
        margin_db: float = 12.0,
        start_ms: int = 120,
        stop_ms: int = 500,
        rate: int = REALTIME_SAMPLE_RATE,
    ):
        self.threshold_db, self.margin_db = threshold_db, margin_db
        self.win = rate // 50
        self.start_n, self.stop_n = max(1, start_ms // 20), max(1, stop_ms // 20)
        self.floor_db = -70.0
        self.speaking = False
        self._loud = self._quiet = 0
        self._buf = np.zeros(0, np.float32)
        self.ms = 0

    def process(self, pcm: np.ndarray) -> list[tuple[str, int]]:
        """Events ("speech_started" | "speech_stopped", ms since the first sample) found in `pcm`."""
        self._buf = np.concatenate([self._buf, np.asarray(pcm, np.float32) / 32768.0])
        out = []
        while len(self._buf) >= self.win:
            w, self._buf = self._buf[: self.win], self._buf[self.win :]
            self.ms += 20
            db = 10 * np.log10(float(np.mean(w.astype(np.float64) ** 2)) + 1e-10)
            loud = db > max(self.threshold_db, self.floor_db + self.margin_db)
            if not loud:
                self.floor_db = 0.95 * self.floor_db + 0.05 * db if db > self.floor_db else db
            if loud:
                self._loud, self._quiet = self._loud + 1, 0
                if not self.speaking and self._loud >= self.start_n:
                    self.speaking = True
                    out.append(("speech_started", self.ms - 20 * self.start_n))
            else:
                self._quiet, self._loud = self._quiet + 1, 0
                if self.speaking and self._quiet >= self.stop_n:
                    self.speaking = False
                    out.append(("speech_stopped", self.ms))
        return out


# What the local voice says when the recogniser gives it nothing usable (spoken, so the user hears it).
NOT_CAUGHT = "Sorry, I did not catch that. Could you say it again?"
NOT_ENGLISH = "I am not sure I understood. In local mode I only understand English. Could you say it again in English?"
FIRST_PIECE_CHARS = 60  # a longer first sentence is spoken in two pieces, split at a comma
MIN_SPEECH_MS = 250  # a voiced blip shorter than this (a cough, a click) is not a question
EARS_NOTE = "local speech recognition: English only (Whisper tiny.en)"


@dataclass
class TurnTiming:
    """Where the time goes between the end of the user's speech and the answer's first audio (ms)."""

    turn: int
    speech_end: float  # perf_counter estimate of when the user stopped speaking
    vad_hangover_ms: float = 0.0  # end of speech → end of turn detected
    asr_ms: float = 0.0  # end of turn → transcript ready (less than the ASR's compute when it started at a pause)
    asr_compute_ms: float = 0.0
    asr_early: bool = False  # the transcript started at the first pause, before the end of turn
    reply_ms: float = 0.0  # transcript → reply text
    tts_first_ms: float = 0.0  # reply text → first sentence synthesised
    first_audio: float | None = None  # perf_counter when the first audio chunk was handed to the stream
    item_id: str | None = None
    text: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("speech_end", "first_audio")}
        if self.first_audio is not None:
            d["to_first_audio_ms"] = 1000 * (self.first_audio - self.speech_end)
        return d


def _speakable_pieces(reply: str) -> list[str]:
    """Sentences, with a long first one cut at a comma: the first piece's synthesis is time the user waits."""
    pieces = tts.split_sentences(reply)
    if pieces and len(pieces[0]) > FIRST_PIECE_CHARS:
        cut = pieces[0].find(", ", 20)
        if 0 < cut < len(pieces[0]) - 20:
            pieces[:1] = [pieces[0][: cut + 1], pieces[0][cut + 2 :]]
    return pieces


class LocalVoice(VoiceSession):
    """Keyless voice: echo or FAQ replies, spoken by the neural voice (espeak-ng as the fallback).

    With `listen` (the default) the microphone is a real input: Silero VAD finds the turns, Whisper
    tiny.en transcribes each one (starting at the first pause, so the transcript is often ready when
    the hang-over ends), and the reply is spoken sentence by sentence. Speech while the avatar talks
    interrupts it, as a Realtime server's `speech_started` does. When the speech models cannot load,
    typing still works and an energy VAD on the microphone keeps barge-in.
    """

    def __init__(
        self,
        mode: Literal["echo", "faq"] = "echo",
        *,
        faq: dict[str, str] | None = None,
        voice: str = "heart",
        listen: bool = True,
        chunk_ms: int = 100,
        speed_factor: float = 4.0,
        vad: EnergyVAD | None = None,
        barge_in_on_speech: bool = True,
        speaker: Any | None = None,
        transcriber: Any | None = None,
        turns: Any | None = None,
        hangover_ms: int = 400,
        max_turn_s: float = 15.0,
    ):
        super().__init__()
        if mode not in ("echo", "faq"):
            raise VoiceError(f"unknown local voice mode {mode!r}; use 'echo' or 'faq'")
        self.mode = mode
        self.faq = faq or DEFAULT_FAQ
        self.voice = voice
        self.listen = listen
        self.chunk = max(1, REALTIME_SAMPLE_RATE * chunk_ms // 1000)
        self.speed_factor = max(0.1, speed_factor)  # audio arrives this many times faster than real time
        self.vad = vad or EnergyVAD()
        self.barge_in_on_speech = barge_in_on_speech
        self.speaker = speaker
        self.transcriber = transcriber
        self.turns = turns
        self.hangover_ms, self.max_turn_s = hangover_ms, max_turn_s
        self.notes: list[str] = []
        self._reply: asyncio.Task | None = None
        self._answer: asyncio.Task | None = None
        self._early: tuple[int, asyncio.Future] | None = None  # (turn, transcription started at a pause)
        self._turn_no = 0
        self._items: dict[str, float] = {}  # item id → ms of audio sent
        self.truncations: list[tuple[str, int]] = []
        self.timings: list[TurnTiming] = []
        self.last_turn: Any | None = None

    @property
    def hearing(self) -> bool:
        return self.transcriber is not None and self.turns is not None

    def describe(self) -> str:
        # One plain line for the page's status: what answers, in which voice, and what it understands.
        speaks = getattr(self.speaker, "name", None) or self.voice
        ears = f"hears English ({self.transcriber.name})" if self.hearing else "typed text only"
        return f"local {'FAQ' if self.mode == 'faq' else 'echo'} · voice: {speaks} · {ears}"

    def _load(self) -> None:
        from workbench.voice import tts as speech

        if self.speaker is None:
            try:
                self.speaker, note = speech.load_speaker(self.voice)
            except speech.TTSError as exc:
                raise VoiceError(f"local voice cannot speak: {exc}") from exc
            if note:
                self.notes.append(note)
        if not self.listen or self.hearing:
            return
        from workbench.voice.asr import ASRError, shared_transcriber
        from workbench.voice.vad import TurnDetector, VADError

        try:
            self.transcriber = self.transcriber or shared_transcriber(max_seconds=self.max_turn_s)
            self.turns = self.turns or TurnDetector(hangover_ms=self.hangover_ms, max_turn_s=self.max_turn_s)
        except (ASRError, VADError) as exc:
            self.transcriber = self.turns = None
            self.notes.append(f"speech recognition unavailable ({exc}); type instead, the microphone only interrupts")

    async def connect(self) -> None:
        self._emit(VoiceEvent("status", status="connecting", text="loading the local speech models"))
        try:
            await asyncio.to_thread(self._load)
        except VoiceError as exc:
            self._emit(VoiceEvent("status", status="failed", text=str(exc)))
            raise
        self._emit(VoiceEvent("status", status="connected", text=self.describe()))
        if self.hearing:
            self._emit(VoiceEvent("note", text=EARS_NOTE))
        for note in self.notes:
            self._emit(VoiceEvent("note", text=note))

    async def close(self) -> None:
        await self._cancel_answer()
        await self.cancel_response()
        self._emit(VoiceEvent("status", status="closed"))

    # ---- microphone -------------------------------------------------------------------------------
    async def send_user_audio(self, pcm: np.ndarray) -> None:
        if not self.hearing:
            for kind, _ms in self.vad.process(pcm):
                if kind == "speech_started":
                    if not self.barge_in_on_speech:
                        continue
                    await self.cancel_response()  # what a Realtime server does with interrupt_response
                self._emit(VoiceEvent(kind))  # type: ignore[arg-type]
            return
        now = time.perf_counter()
        for ev in self.turns.process(pcm):
            if ev.kind == "speech_started":
                self._turn_no += 1
                self._early = None
                await self._cancel_answer()  # the user went on: the last turn's answer is moot
                if self.barge_in_on_speech:
                    await self.cancel_response()
                    self._emit(VoiceEvent("speech_started"))
            elif ev.kind == "pause":
                # Start transcribing now; if the user does not resume, the transcript is (nearly) ready
                # when the hang-over ends, hiding the ASR time behind it.
                audio = self.turns.snapshot().audio
                self._early = (
                    self._turn_no,
                    asyncio.ensure_future(asyncio.to_thread(self.transcriber.transcribe, audio)),
                )
            elif ev.kind == "resumed":
                self._early = None
            elif ev.kind == "speech_stopped":
                turn, self.turns.finished = self.turns.finished, None
                self.last_turn = turn  # kept for inspection (tests save it when a transcript is wrong)
                # The end of speech was `hangover` ago in microphone time; audio arrives in real time.
                lag_ms = (self.turns.ms - ev.ms) + self.turns.hangover_ms
                timing = TurnTiming(self._turn_no, speech_end=now - lag_ms / 1000, vad_hangover_ms=lag_ms)
                early = self._early[1] if self._early and self._early[0] == self._turn_no else None
                self._early = None
                self._emit(VoiceEvent("speech_stopped"))
                self._answer = asyncio.create_task(self._answer_turn(turn, early, timing), name="local-voice-turn")

    async def _answer_turn(self, turn: Any, early: asyncio.Future | None, timing: TurnTiming) -> None:
        n = next(_ids)
        item_id = f"item_local_user_{n}"
        if turn is None or turn.speech_ms < MIN_SPEECH_MS:
            self._emit(VoiceEvent("note", text="(a short sound, not words: no answer)"))
            return
        t0 = time.perf_counter()
        timing.vad_hangover_ms = 1000 * (t0 - timing.speech_end)
        try:
            if early is not None:
                timing.asr_early = True
                heard = await early
            else:
                heard = await asyncio.to_thread(self.transcriber.transcribe, turn.audio, 16_000)
        except Exception as exc:  # the recogniser broke: say so rather than hang the conversation
            log.exception("local speech recognition failed")
            self._emit(VoiceEvent("error", text=f"speech recognition failed: {exc}", code="asr_failed"))
            return
        t1 = time.perf_counter()
        timing.asr_ms, timing.asr_compute_ms = 1000 * (t1 - t0), heard.asr_ms
        if turn.bounded:
            self._emit(
                VoiceEvent(
                    "note",
                    text=f"(a long turn, {turn.total_ms / 1000:.0f} s: only the last {self.max_turn_s:.0f} s were transcribed)",
                )
            )
        if not heard.text:
            self._emit(VoiceEvent("user_transcript", item_id=item_id, text="(not understood)"))
            reply = NOT_CAUGHT
        elif heard.unsure:
            self._emit(VoiceEvent("user_transcript", item_id=item_id, text=f"{heard.text} (unsure: English only)"))
            reply = NOT_ENGLISH
        else:
            self._emit(VoiceEvent("user_transcript", item_id=item_id, text=heard.text))
            reply = self.reply_for(heard.text)
        timing.text = heard.text
        timing.reply_ms = 1000 * (time.perf_counter() - t1)
        await self.cancel_response()
        self._reply = asyncio.create_task(self._speak(reply, timing), name="local-voice-reply")

    async def _cancel_answer(self) -> None:
        task, self._answer = self._answer, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- replies ----------------------------------------------------------------------------------
    def reply_for(self, text: str) -> str:
        return text if self.mode == "echo" else faq_answer(self.faq, text)

    async def send_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        await self._cancel_answer()
        await self.cancel_response()
        self._reply = asyncio.create_task(self._speak(self.reply_for(text)), name="local-voice-reply")

    async def _speak(self, reply: str, timing: TurnTiming | None = None) -> None:
        from workbench.voice.tts import TTSError

        if self.speaker is None:
            await asyncio.to_thread(self._load)
        n = next(_ids)
        response_id, item_id = f"resp_local_{n}", f"item_local_{n}"
        self._emit(VoiceEvent("response_started", response_id=response_id))
        status = "completed"
        sent = 0
        try:
            loop_t0 = asyncio.get_running_loop().time()
            t_text = time.perf_counter()
            for sentence in _speakable_pieces(reply):
                pcm = await asyncio.to_thread(self.speaker.synthesize, sentence)
                if timing is not None and timing.first_audio is None:
                    timing.tts_first_ms = 1000 * (time.perf_counter() - t_text)
                self._emit(VoiceEvent("transcript", item_id=item_id, response_id=response_id, text=sentence + " "))
                for i in range(0, len(pcm), self.chunk):
                    piece = pcm[i : i + self.chunk]
                    if timing is not None and timing.first_audio is None:
                        timing.first_audio, timing.item_id = time.perf_counter(), item_id
                        self.timings.append(timing)
                    self._emit(VoiceEvent("audio", item_id=item_id, response_id=response_id, audio=piece))
                    sent += len(piece)
                    self._items[item_id] = 1000 * sent / REALTIME_SAMPLE_RATE
                    # Pace like a Realtime server: faster than real time, but not all at once.
                    due = loop_t0 + sent / REALTIME_SAMPLE_RATE / self.speed_factor
                    await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
            self._emit(VoiceEvent("audio_done", item_id=item_id, response_id=response_id))
            self._emit(VoiceEvent("transcript_done", item_id=item_id, text=reply))
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except (tts.TTSError, TTSError) as exc:
            status = "failed"
            self._emit(VoiceEvent("error", text=str(exc), code="tts_failed"))
        finally:
            self._emit(VoiceEvent("response_done", response_id=response_id, status=status))

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        total = self._items.get(item_id)
        if total is None:
            self._emit(VoiceEvent("error", text=f"no such item {item_id}", code="item_not_found"))
            return
        end = int(min(audio_end_ms, total))
        self.truncations.append((item_id, end))
        self._emit(VoiceEvent("truncated", item_id=item_id, audio_end_ms=end))

    async def cancel_response(self) -> None:
        task, self._reply = self._reply, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


def make_voice(
    mode: str,
    *,
    api_key: str | SecretStr | None = None,
    config: RealtimeConfig | None = None,
    faq: dict[str, str] | None = None,
) -> VoiceSession:
    """The voice for a UI mode: "openai", "echo" or "faq"."""
    if mode == "openai":
        return OpenAIRealtimeVoice(config, api_key)
    if mode in ("echo", "faq"):
        return LocalVoice(mode, faq=faq)  # type: ignore[arg-type]
    raise VoiceError(f"unknown voice mode {mode!r}; use 'openai', 'echo' or 'faq'")
