"""A Pipecat voice agent with the workbench avatar, peer to peer over SmallWebRTCTransport (docs/agents.md).

    OPENAI_API_KEY=sk-… python examples/pipecat_agent.py --avatar sun     # then open http://127.0.0.1:7861

The pipeline is Pipecat's usual one with the avatar placed after the voice:

    transport.input() → OpenAI Realtime (speech to speech) → LipSyncVideoService → transport.output()

The voice uses the workbench's Realtime settings (WORKBENCH_REALTIME_MODEL, default gpt-realtime-2,
WORKBENCH_REALTIME_REASONING_EFFORT, WORKBENCH_REALTIME_TRANSCRIPTION_MODEL). Replace it with any Pipecat
STT → LLM → TTS chain: the avatar only needs the TTS audio frames. Calls are capped by WORKBENCH_MAX_SESSIONS;
the page is a minimal WebRTC client (microphone up, avatar video and voice down). Binds 127.0.0.1: a public
deployment needs HTTPS (for the microphone) and a TURN server.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import uvicorn
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pipecat.frames.frames import EndFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.services.openai.realtime.events import (
    AudioConfiguration,
    AudioInput,
    InputAudioTranscription,
    Reasoning,
    SessionProperties,
)
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import SmallWebRTCRequest, SmallWebRTCRequestHandler
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

from workbench.config import Settings
from workbench.engine import Engine
from workbench.integrations.pipecat_avatar import LipSyncVideoService
from workbench.integrations.streams import SessionLimitError, StreamPool
from workbench.realtime.openai_config import supports_reasoning

PAGE = """<!doctype html><meta charset="utf-8"><title>Pipecat avatar</title>
<video id="v" autoplay playsinline style="max-height:80vh"></video><br><button id="go">Talk</button>
<script>
document.getElementById("go").onclick = async () => {
  const pc = new RTCPeerConnection();
  const mic = await navigator.mediaDevices.getUserMedia({audio: true});
  pc.addTransceiver(mic.getAudioTracks()[0], {direction: "sendrecv"});
  pc.addTransceiver("video", {direction: "sendrecv"});
  const v = document.getElementById("v"); const s = new MediaStream(); v.srcObject = s;
  pc.ontrack = (e) => s.addTrack(e.track);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { if (pc.iceGatheringState === "complete") r();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); setTimeout(r, 2000); });
  const res = await fetch("/api/offer", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type})});
  if (!res.ok) { alert((await res.json()).detail); return; }
  await pc.setRemoteDescription(await res.json());
};
</script>"""


def realtime_voice(settings: Settings) -> OpenAIRealtimeLLMService:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else os.environ.get("OPENAI_API_KEY")
    if not key:
        raise SystemExit("set OPENAI_API_KEY")
    transcription = settings.realtime_transcription_model
    props = SessionProperties(
        instructions="You are a friendly digital human on a video call. Speak briefly and let the user interrupt.",
        audio=AudioConfiguration(
            input=AudioInput(
                transcription=InputAudioTranscription(model=transcription) if transcription != "none" else None
            )
        ),
        reasoning=Reasoning(effort=settings.realtime_reasoning_effort)
        if supports_reasoning(settings.realtime_model)
        else None,
    )
    return OpenAIRealtimeLLMService(
        api_key=key, settings=OpenAIRealtimeLLMService.Settings(model=settings.realtime_model, session_properties=props)
    )


async def run_bot(connection: SmallWebRTCConnection, pool: StreamPool, avatar_id: str | None) -> None:
    avatar = await asyncio.to_thread(pool.avatar, avatar_id)
    stream = pool.open(avatar, name=connection.pc_id)
    try:
        await asyncio.to_thread(stream.warm_idle)
        service = LipSyncVideoService(stream)
        transport = SmallWebRTCTransport(
            webrtc_connection=connection, params=TransportParams(**service.transport_params(audio_in_enabled=True))
        )
        worker = PipelineWorker(
            Pipeline([transport.input(), realtime_voice(pool.engine.settings), service, transport.output()])
        )

        @transport.event_handler("on_client_disconnected")
        async def _gone(transport, client):
            await worker.queue_frame(EndFrame())

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()
    finally:
        pool.close(stream)


def make_app(pool: StreamPool, avatar_id: str | None) -> FastAPI:
    app = FastAPI()
    handler = SmallWebRTCRequestHandler()

    @app.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.post("/api/offer")
    async def offer(request: SmallWebRTCRequest, background: BackgroundTasks) -> dict:
        if pool.active >= pool.max_sessions:
            raise HTTPException(503, f"all {pool.max_sessions} avatar sessions are busy; try again shortly")

        async def start(connection: SmallWebRTCConnection) -> None:
            background.add_task(run_bot, connection, pool, avatar_id)

        try:
            return await handler.handle_web_request(request, start)
        except SessionLimitError as exc:
            raise HTTPException(503, str(exc)) from None

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", default=None, help="a prepared avatar's id (default: the first one)")
    parser.add_argument("--port", type=int, default=7861)
    args = parser.parse_args()
    settings = Settings()
    pool = StreamPool(Engine(settings), max_sessions=settings.max_sessions, batch_size=settings.batch_size)
    pool.avatar(args.avatar)  # no prepared avatar: say so now, not at the first call
    uvicorn.run(make_app(pool, args.avatar), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
