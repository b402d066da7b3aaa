"""What an OpenAI Realtime session is configured with, and the GA `session.update` body built from it.

The GA API refuses fields the beta took (`temperature`, the flat `voice`/`input_audio_format`), so the body is
built here, in one place, from the GA shape only: `session.reasoning.effort` for reasoning models
(`gpt-realtime-2` and later) and `session.audio.input.transcription.model` for the user's transcript
(`gpt-realtime-whisper` by default; `whisper-1` and `gpt-4o-transcribe` are announced to shut down 2027-02-26).
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, field_validator

from workbench.config import REALTIME_SAMPLE_RATE, ReasoningEffort, Settings

DEFAULT_INSTRUCTIONS = (
    "You are a friendly digital human on a video call. Speak naturally and briefly, one to three sentences "
    "at a time, and let the user interrupt you."
)
REASONING_EFFORTS: tuple[str, ...] = get_args(ReasoningEffort)
# A transcription-model setting that turns the user's transcript off.
NO_TRANSCRIPTION = ("", "none", "off")


def supports_reasoning(model: str) -> bool:
    """Whether `model` takes `session.reasoning` (gpt-realtime-2 and its successors, -mini included).

    Sent to an older model the field is refused, so it is left out there rather than guessed."""
    m = re.match(r"gpt-realtime-(\d+)", model)
    return m is not None and int(m.group(1)) >= 2


class RealtimeConfig(BaseModel):
    """What a user may set for an OpenAI Realtime session (no secret in here)."""

    # Defaults are Settings' defaults; a server fills in its own settings (`RealtimeManager.realtime_config`).
    model: str = Settings.model_fields["realtime_model"].default
    voice: str = Settings.model_fields["realtime_voice"].default
    reasoning_effort: ReasoningEffort = Settings.model_fields["realtime_reasoning_effort"].default
    # None: no user transcript (the server does not transcribe what the user said)
    transcription_model: str | None = Settings.model_fields["realtime_transcription_model"].default
    instructions: str = DEFAULT_INSTRUCTIONS
    # "none": no server VAD; the client's energy VAD finds turns, commits them and asks for a response.
    turn_detection: Literal["server_vad", "semantic_vad", "none"] = "server_vad"
    vad_threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=5000)
    silence_duration_ms: int = Field(500, ge=0, le=10000)
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    interrupt_response: bool = True
    base_url: str | None = None
    max_retries: int = Field(5, ge=0, le=50)
    initial_backoff_s: float = Field(0.5, gt=0.0, le=60.0)
    max_backoff_s: float = Field(8.0, gt=0.0, le=300.0)
    connect_timeout_s: float = Field(15.0, gt=0.0, le=120.0)

    @field_validator("model", "voice")
    @classmethod
    def _short_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,80}", v):
            raise ValueError(f"invalid name {v!r}")
        return v

    @field_validator("transcription_model")
    @classmethod
    def _transcriber(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() in NO_TRANSCRIPTION:
            return None
        if not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,80}", v.strip()):
            raise ValueError(f"invalid transcription model {v!r}")
        return v.strip()

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not re.match(r"^(https?|wss?)://[^\s]+$", v):
            raise ValueError("base_url must start with http://, https://, ws:// or wss://")
        return v.rstrip("/")

    @classmethod
    def from_settings(cls, s: Settings, **overrides: Any) -> RealtimeConfig:
        """A session's configuration from the server's settings (the browser's choices go on top)."""
        return cls(
            model=s.realtime_model,
            voice=s.realtime_voice,
            reasoning_effort=s.realtime_reasoning_effort,
            transcription_model=s.realtime_transcription_model,
            base_url=s.openai_base_url,
            **overrides,
        )

    def session_payload(self) -> dict[str, Any]:
        """The GA `session.update` body: only fields the GA API accepts (never `temperature`)."""
        if self.turn_detection == "server_vad":
            td: dict[str, Any] | None = {
                "type": "server_vad",
                "threshold": self.vad_threshold,
                "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms,
                "create_response": True,
                "interrupt_response": self.interrupt_response,
            }
        elif self.turn_detection == "semantic_vad":
            td = {
                "type": "semantic_vad",
                "eagerness": self.eagerness,
                "create_response": True,
                "interrupt_response": self.interrupt_response,
            }
        else:
            td = None
        pcm = {"type": "audio/pcm", "rate": REALTIME_SAMPLE_RATE}
        audio_in: dict[str, Any] = {"format": pcm, "turn_detection": td}
        if self.transcription_model:
            audio_in["transcription"] = {"model": self.transcription_model}
        body: dict[str, Any] = {
            "type": "realtime",
            "instructions": self.instructions,
            "output_modalities": ["audio"],
            "audio": {"input": audio_in, "output": {"format": pcm, "voice": self.voice}},
        }
        if supports_reasoning(self.model):
            body["reasoning"] = {"effort": self.reasoning_effort}
        return body
