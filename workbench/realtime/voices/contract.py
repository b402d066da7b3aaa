"""The conversation-voice contract: what every realtime voice (OpenAI Realtime, the keyless local one) provides.

Read this file first. A `VoiceSession` takes the user's microphone audio or typed text and yields
`VoiceEvent`s (reply audio, transcripts, turn and connection changes) that `ChatSession` feeds into the
lip-sync stream. The implementations are `openai_voice.OpenAIRealtimeVoice` and `local_voice.LocalVoice`;
`workbench.voice` (no "s") holds the offline speech models (ASR, TTS, VAD) the local one is built on.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

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


class VoiceError(RuntimeError):
    """A voice session cannot start or was used wrongly (no key, bad setting, closed session)."""


class VoiceAuthError(VoiceError):
    """The Realtime server refused the credentials."""


@dataclass
class VoiceEvent:
    """One thing a voice reports: reply audio, a transcript, a turn or connection change, an error or a note."""

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
