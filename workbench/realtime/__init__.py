"""Realtime conversation: OpenAI Realtime (or keyless local) voice → streaming lip-sync → WebRTC.

    from workbench.realtime import mount_realtime, embed_html
    manager = mount_realtime(fastapi_app, engine)   # POST /rtc/offer, GET /rtc/chat, …
    gr.HTML(embed_html(avatar_id=...))               # the chat page inside a Gradio tab

Modules: `voices` (the conversation voices: `voices/contract.py` first, then OpenAIRealtimeVoice and LocalVoice),
`openai_config` (RealtimeConfig: the GA session body), `openai_errors` (failures and unknown or retired models as
plain messages), `session` (ChatSession and its tracks), `server` (RealtimeManager, routes); the offline speech
models (ASR, TTS with espeak-ng as the fallback, VAD) are in `workbench.voice`. The local Realtime protocol server for tests and demos is `testkit.fake_realtime`.
The transport-free lip-sync stream is `workbench.lipsync.stream.LipSyncStream`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RealtimeManager", "embed_html", "mount_realtime"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing the voice or TTS modules does not pull in aiortc and FastAPI.
    if name in __all__:
        from workbench.realtime import server

        return getattr(server, name)
    raise AttributeError(name)
