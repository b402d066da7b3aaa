"""Why a Realtime connection failed, said plainly, and whether retrying can help.

A model the API does not know (a typo, no access, or retired: `gpt-realtime` shuts down 2027-01-20) shows up
in one of four ways, all turned into the same one-line message that names the setting to change:
* an `error` event with code `model_not_found` (or `invalid_model`, `model_not_available`, `model_deprecated`),
* a `response.done` whose `status_details.error.code` is `model_not_found` (the session opened, the reply failed),
* an HTTP 400/404 at the WebSocket handshake whose body names the model,
* a WebSocket close whose reason names the model.
Retrying any of these gives the same answer, so the session fails at once instead of backing off five times.
"""

from __future__ import annotations

import asyncio
import re
from typing import Literal

ModelSetting = Literal["model", "transcription_model"]

MODEL_ERROR_CODES = frozenset(
    {"model_not_found", "invalid_model", "model_not_available", "model_deprecated", "unsupported_model"}
)
# How the setting is reached from each place a user may set it: the chat panel, the environment, app.py.
SETTING_NAMES: dict[ModelSetting, str] = {
    "model": "the Realtime model (chat panel 'Model', WORKBENCH_REALTIME_MODEL or app.py --realtime-model)",
    "transcription_model": (
        "the transcription model (chat panel 'Transcription', WORKBENCH_REALTIME_TRANSCRIPTION_MODEL or "
        "app.py --transcription-model; 'none' turns it off)"
    ),
}
SUGGESTED: dict[ModelSetting, str] = {"model": "gpt-realtime-2", "transcription_model": "gpt-realtime-whisper"}
_MODEL_WORDS = re.compile(
    r"(?i)\bmodel\b.*\b(does not exist|not found|unknown|retired|deprecated|shut ?down|no longer)"
)


def model_setting(code: str | None, message: str | None, param: str | None = None) -> ModelSetting | None:
    """Which model setting an API error is about, or None when it is about something else."""
    text = message or ""
    named = code in MODEL_ERROR_CODES or any(c in text for c in MODEL_ERROR_CODES) or _MODEL_WORDS.search(text)
    if not named:
        return None
    if (param and "transcription" in param) or re.search(r"(?i)transcri", text):
        return "transcription_model"
    return "model"


def unknown_model_message(setting: ModelSetting, name: str | None) -> str:
    """The one plain message a user sees for a model the API does not know or has retired."""
    which = f"'{name}'" if name else "the configured model"
    kind = "Realtime model" if setting == "model" else "transcription model"
    return (
        f"The OpenAI API does not know the {kind} {which} (unknown, not available to this key, or retired): "
        f"change {SETTING_NAMES[setting]}, for example to {SUGGESTED[setting]}."
    )


def error_detail(exc: BaseException | None, model: str | None = None) -> tuple[str, bool, bool]:
    """A user-facing message for a failed connection, whether retrying can help, whether it is the key."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

    if exc is None:
        return "the server closed the session", True, False
    if isinstance(exc, InvalidStatus):
        code = exc.response.status_code
        body = bytes(exc.response.body or b"")[:2000].decode("utf-8", "replace")
        if code in (401, 403):
            return f"the Realtime server refused the API key (HTTP {code})", False, True
        setting = model_setting(None, body) if code in (400, 404) else None
        if setting is not None:
            return unknown_model_message(setting, model if setting == "model" else None), False, False
        if code == 404:
            return "the Realtime endpoint or model was not found (HTTP 404)", False, False
        return f"the Realtime server answered HTTP {code}", code in (408, 429) or code >= 500, False
    if isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        code = rcvd.code if rcvd is not None else 1006
        reason = rcvd.reason if rcvd is not None else ""
        setting = model_setting(None, reason)
        if setting is not None:
            return unknown_model_message(setting, model if setting == "model" else None), False, False
        return f"the connection closed (code {code})", True, False
    if isinstance(exc, InvalidURI):
        return f"invalid Realtime URL: {exc}", False, False
    if isinstance(exc, OSError | asyncio.TimeoutError | TimeoutError):
        return f"cannot reach the Realtime server: {exc.__class__.__name__}: {exc}", True, False
    return f"{exc.__class__.__name__}: {exc}", True, False
