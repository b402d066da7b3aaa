"""Conversation voices: where the avatar's reply audio comes from (the realtime chat's "voice").

* `contract`: `VoiceSession`, `VoiceEvent` and the errors (the file to read first).
* `openai_voice.OpenAIRealtimeVoice`: the OpenAI Realtime API (or Azure, or a compatible server), with reconnects.
* `local_voice.LocalVoice`: no key; offline ears, echo or FAQ replies, the neural voice (espeak-ng as the fallback).
* `redact`: the logging filter that keeps API keys and URL credentials out of every log.

Not to be confused with `workbench.voice`: the offline speech models (ASR, TTS, VAD) the local voice uses.
"""

from __future__ import annotations

from pydantic import SecretStr

from workbench.realtime.openai_config import RealtimeConfig
from workbench.realtime.voices.contract import VoiceAuthError, VoiceError, VoiceEvent, VoiceSession
from workbench.realtime.voices.local_voice import LocalVoice
from workbench.realtime.voices.openai_voice import OPENAI_VOICES, OpenAIRealtimeVoice

__all__ = [
    "OPENAI_VOICES",
    "LocalVoice",
    "OpenAIRealtimeVoice",
    "VoiceAuthError",
    "VoiceError",
    "VoiceEvent",
    "VoiceSession",
    "make_voice",
]


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
