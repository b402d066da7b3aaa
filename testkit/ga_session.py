"""The GA Realtime API's rules for models and `session.update` fields, as the local protocol server applies them.

Taken from the `openai` package's GA types (openai/types/realtime/, 3.63): `session.reasoning` is
`{"effort": "minimal" | "low" | "medium" | "high" | "xhigh"}` and only for reasoning models (`gpt-realtime-2`
and later); `session.audio.input.transcription` is `{"model": …, "language"?, "prompt"?, "delay"?}`, where
`prompt` is refused with `gpt-realtime-whisper` and `delay` is only for it; the GA session has no
`temperature` (the beta's), and an unknown field is refused. A model the API does not serve is reported as
`error` with code `model_not_found` and the message the API uses ("The model `x` does not exist or you do not
have access to it.").
"""

from __future__ import annotations

import re
from typing import Any

# What the server serves by default; a test may pass its own list (e.g. without gpt-realtime once it is retired).
REALTIME_MODELS = frozenset(
    {
        "gpt-realtime",
        "gpt-realtime-1.5",
        "gpt-realtime-2",
        "gpt-realtime-2.1",
        "gpt-realtime-2.1-mini",
        "gpt-realtime-mini",
    }
)
TRANSCRIPTION_MODELS = frozenset(
    {
        "gpt-realtime-whisper",
        "whisper-1",
        "gpt-transcribe",
        "gpt-live-transcribe",
        "gpt-4o-mini-transcribe",
        "gpt-4o-transcribe",
    }
)
REASONING_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
SESSION_FIELDS = frozenset(
    {
        "type",
        "model",
        "instructions",
        "output_modalities",
        "audio",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "reasoning",
        "parallel_tool_calls",
        "tracing",
        "truncation",
        "include",
        "prompt",
    }
)
TRANSCRIPTION_FIELDS = frozenset({"model", "language", "languages", "prompt", "delay", "keywords"})


class BadRequest(Exception):
    """A client event the API refuses: becomes an `error` event with this code and param."""

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param


def model_not_found(model: str, param: str | None = None) -> BadRequest:
    return BadRequest(
        f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found", param=param
    )


def is_reasoning_model(model: str) -> bool:
    m = re.match(r"gpt-realtime-(\d+)", model)
    return m is not None and int(m.group(1)) >= 2


def check_session_fields(s: dict[str, Any], model: str, transcription_models: frozenset[str]) -> None:
    """Raise `BadRequest` for what the GA API refuses in a `session.update` body (the checks beyond audio formats)."""
    for key in s:
        if key not in SESSION_FIELDS:
            raise BadRequest(f"Unknown parameter: 'session.{key}'.", code="unknown_parameter", param=f"session.{key}")
    if "reasoning" in s:
        r = s["reasoning"]
        if not is_reasoning_model(model):
            raise BadRequest(
                f"Unsupported parameter: 'session.reasoning' is not supported with the model `{model}`.",
                code="unsupported_parameter",
                param="session.reasoning",
            )
        if not isinstance(r, dict) or set(r) - {"effort"}:
            raise BadRequest(
                "Invalid 'session.reasoning': expected an object with 'effort'.", param="session.reasoning"
            )
        if r.get("effort") not in REASONING_EFFORTS:
            raise BadRequest(
                f"Invalid value: '{r.get('effort')}'. Supported values are: {', '.join(REASONING_EFFORTS)}.",
                param="session.reasoning.effort",
            )
    t = ((s.get("audio") or {}).get("input") or {}).get("transcription")
    if t is None:
        return
    param = "session.audio.input.transcription"
    if not isinstance(t, dict) or not isinstance(t.get("model"), str):
        raise BadRequest(
            f"Missing required parameter: '{param}.model'.", "missing_required_parameter", f"{param}.model"
        )
    for key in t:
        if key not in TRANSCRIPTION_FIELDS:
            raise BadRequest(f"Unknown parameter: '{param}.{key}'.", code="unknown_parameter", param=f"{param}.{key}")
    if t["model"] not in transcription_models:
        raise model_not_found(t["model"], f"{param}.model")
    if t["model"] == "gpt-realtime-whisper" and "prompt" in t:
        raise BadRequest(
            "Unsupported parameter: 'prompt' is not supported with gpt-realtime-whisper.",
            code="unsupported_parameter",
            param=f"{param}.prompt",
        )
    if "delay" in t and t["model"] != "gpt-realtime-whisper":
        raise BadRequest(
            "Unsupported parameter: 'delay' is only supported with gpt-realtime-whisper.",
            code="unsupported_parameter",
            param=f"{param}.delay",
        )
