"""The workbench avatar as a LiveKit Agents worker: `workbench livekit-worker`.

The worker registers with a LiveKit server (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET) under
`AGENT_NAME` for explicit dispatch. An agent dispatches it into a room (`WorkbenchAvatarSession`, see
`livekit_dispatch`); each job joins the room as the avatar participant, receives the agent's speech over
`lk.audio_stream` (`DataStreamAudioReceiver`), and publishes lip-synced video with the audio through LiveKit's
`AvatarRunner` and `AVSynchronizer`, driven by `LipSyncVideoGenerator`.

Jobs run as threads of this one process (`JobExecutorType.THREAD`), so every session shares one loaded renderer
and, for a model on a GPU, one `RenderBatcher`. The load the worker reports (`load_fnc`) is the batcher's
occupancy or the share of session slots taken, whichever is higher; above `load_threshold` LiveKit sends new
sessions to another worker, so a fleet of GPU machines is balanced by how busy each model actually is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit import rtc
from livekit.agents import AgentServer, AutoSubscribe, JobContext, JobExecutorType, JobRequest
from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, DataStreamAudioReceiver

from workbench.config import FPS, REALTIME_SAMPLE_RATE
from workbench.integrations.livekit_avatar import LipSyncVideoGenerator
from workbench.integrations.livekit_dispatch import AGENT_NAME, PUBLISH_ON_BEHALF, AvatarJob, AvatarJobError
from workbench.integrations.streams import StreamPool

log = logging.getLogger(__name__)


class AvatarWorker:
    """Accepts avatar jobs while a session slot is free and runs each until its agent leaves or time is up."""

    def __init__(
        self,
        pool: StreamPool,
        *,
        default_avatar: str | None = None,
        max_session_s: float = 1800.0,
        max_video_height: int | None = 720,
    ):
        self.pool = pool
        self.default_avatar = default_avatar
        self.max_session_s = max_session_s
        self.max_video_height = max_video_height

    def load(self, *_: Any) -> float:
        """LiveKit's `load_fnc`: 0..1, from the render batcher's occupancy and the session slots."""
        return self.pool.load()

    async def request(self, req: JobRequest) -> None:
        """Take a job only with a free slot and usable metadata; join as the agent's avatar."""
        try:
            job = AvatarJob.from_json(req.job.metadata)
        except AvatarJobError as exc:
            log.warning("avatar job %s refused: %s", req.id, exc)
            await req.reject()
            return
        if self.pool.active >= self.pool.max_sessions:
            await req.reject(terminate=False)  # LiveKit offers it to another worker
            return
        await req.accept(name="avatar", attributes={PUBLISH_ON_BEHALF: job.sender_identity})

    async def entrypoint(self, ctx: JobContext) -> None:
        job = AvatarJob.from_json(ctx.job.metadata)
        avatar = await asyncio.to_thread(self.pool.avatar, job.avatar_id or self.default_avatar)
        stream = await asyncio.to_thread(self.pool.open, avatar, f"livekit-{ctx.job.id}")  # may load the model
        generator = LipSyncVideoGenerator(stream, max_height=self.max_video_height)
        runner: AvatarRunner | None = None

        async def cleanup(*_: Any) -> None:  # registered first: whatever fails below, the slot is freed
            await generator.aclose()
            if runner is not None:
                await runner.aclose()
            self.pool.close(stream)

        ctx.add_shutdown_callback(cleanup)
        await asyncio.to_thread(stream.warm_idle)  # the idle loop is ready before the first picture goes out
        await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
        h, w = generator.frame_size
        runner = AvatarRunner(
            ctx.room,
            audio_recv=DataStreamAudioReceiver(ctx.room, sender_identity=job.sender_identity),
            video_gen=generator,
            options=AvatarOptions(
                video_width=w, video_height=h, video_fps=FPS, audio_sample_rate=REALTIME_SAMPLE_RATE, audio_channels=1
            ),
        )

        def on_left(p: rtc.RemoteParticipant) -> None:
            if p.identity == job.sender_identity:
                ctx.shutdown("the agent left the room")

        ctx.room.on("participant_disconnected", on_left)
        await runner.start()
        # Every session has an end: a forgotten room does not hold a GPU slot for ever.
        asyncio.get_running_loop().call_later(self.max_session_s, ctx.shutdown, "the session's time is up")


def make_server(worker: AvatarWorker, *, load_threshold: float = 0.7, port: int = 0) -> AgentServer:
    """The LiveKit worker: explicit dispatch under AGENT_NAME, jobs as threads sharing the renderer."""
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        load_fnc=worker.load,
        load_threshold=load_threshold,
        num_idle_processes=0,
        port=port,
    )
    server.rtc_session(worker.entrypoint, agent_name=AGENT_NAME, on_request=worker.request)
    return server
