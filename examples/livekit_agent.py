"""A LiveKit voice agent whose speech is shown by the workbench avatar (the agent side; docs/agents.md).

Two processes, both registered with the same LiveKit server (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET):

    workbench livekit-worker --avatar sun          # the avatar worker (a GPU machine, or several)
    python examples/livekit_agent.py dev           # this agent (needs: pip install livekit-plugins-openai)

A user who joins a room (LiveKit's Agents Playground, or any LiveKit client) gets this agent; on start it
dispatches a `workbench-avatar` job into the room (LiveKit picks the least loaded avatar worker), and from then
on its speech goes to the avatar, which publishes the lip-synced video with the audio.

The voice is OpenAI Realtime with the workbench's settings (WORKBENCH_REALTIME_MODEL, default gpt-realtime-2;
WORKBENCH_REALTIME_REASONING_EFFORT; OPENAI_API_KEY). WORKBENCH_AVATAR names the avatar (default: the worker's).
"""

from __future__ import annotations

import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli
from livekit.plugins import openai

from workbench.config import Settings
from workbench.integrations.livekit_dispatch import WorkbenchAvatarSession

INSTRUCTIONS = (
    "You are a friendly digital human on a video call. Speak naturally and briefly, one to three sentences at a "
    "time, and let the user interrupt you."
)

server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    settings = Settings()
    await ctx.connect()
    session = AgentSession(
        llm=openai.realtime.RealtimeModel(model=settings.realtime_model, voice=settings.realtime_voice)
    )
    # Before session.start: the avatar joins, and the agent's audio output is routed to it (lk.audio_stream).
    avatar = WorkbenchAvatarSession(avatar_id=os.environ.get("WORKBENCH_AVATAR"))
    await avatar.start(session, room=ctx.room)
    await session.start(agent=Agent(instructions=INSTRUCTIONS), room=ctx.room)
    await session.generate_reply(instructions="Greet the user in one short sentence.")


if __name__ == "__main__":
    cli.run_app(server)
