"""The agent's side of the LiveKit avatar: dispatch a workbench avatar worker into the room and send it the speech.

LiveKit's avatar pattern: the agent's TTS audio does not go to the room but, over the data stream topic
`lk.audio_stream`, to an avatar participant, which publishes the lip-synced video and the audio with it;
`lk.clear_buffer` (barge-in) and `lk.playback_finished` are RPCs between the two. The workbench avatar runs as a
LiveKit Agents worker registered under `AGENT_NAME`; `WorkbenchAvatarSession.start` asks LiveKit to dispatch one
job of it to the room (LiveKit picks the worker by the loads the workers report, so sessions spread over GPUs),
waits for it to join and says it publishes on this agent's behalf, then routes the agent's audio output to it.

    avatar = WorkbenchAvatarSession(avatar_id="sun")
    await avatar.start(session, room=ctx.room)   # before session.start(...)

Needs the optional extra `agents` and LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET (the dispatch API).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from livekit import api, rtc
from livekit.agents.voice.avatar import AvatarSession, DataStreamAudioOutput

AGENT_NAME = "workbench-avatar"  # the avatar worker registers under this name for explicit dispatch
PUBLISH_ON_BEHALF = "lk.publish_on_behalf"  # livekit.agents.types.ATTRIBUTE_PUBLISH_ON_BEHALF
MAX_METADATA = 2000


class AvatarJobError(ValueError):
    """A dispatch's metadata the avatar worker cannot use."""


@dataclass(frozen=True)
class AvatarJob:
    """What the agent tells the avatar worker in the dispatch's metadata (JSON)."""

    sender_identity: str  # the agent participant whose audio the avatar plays, and on whose behalf it publishes
    avatar_id: str | None = None  # a prepared avatar; None: the worker's default

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> AvatarJob:
        if not text:
            raise AvatarJobError("the dispatch carries no metadata: start the avatar with WorkbenchAvatarSession")
        if len(text) > MAX_METADATA:
            raise AvatarJobError(f"the dispatch metadata is over {MAX_METADATA} characters")
        try:
            data = json.loads(text)
        except ValueError:
            raise AvatarJobError("the dispatch metadata is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("sender_identity"), str):
            raise AvatarJobError("the dispatch metadata needs 'sender_identity' (the agent's participant identity)")
        avatar_id = data.get("avatar_id")
        if avatar_id is not None and (not isinstance(avatar_id, str) or not re.fullmatch(r"[\w.\-]{1,200}", avatar_id)):
            raise AvatarJobError("'avatar_id' must be a prepared avatar's id")
        return cls(sender_identity=data["sender_identity"][:256], avatar_id=avatar_id)


class WorkbenchAvatarSession(AvatarSession):
    """`AvatarSession`-style start-up for the workbench avatar worker (see the module's docstring)."""

    def __init__(
        self,
        *,
        avatar_id: str | None = None,
        agent_name: str = AGENT_NAME,
        join_timeout_s: float = 30.0,
        api: Any | None = None,
    ):
        super().__init__()
        self.avatar_id = avatar_id
        self.agent_name = agent_name
        self.join_timeout_s = join_timeout_s
        self._api = api
        self._identity: str | None = None

    @property
    def avatar_identity(self) -> str:
        if self._identity is None:
            raise RuntimeError("the avatar has not joined yet: await start() first")
        return self._identity

    @property
    def provider(self) -> str:
        return "workbench"

    async def start(self, agent_session: Any, room: Any) -> None:
        me = room.local_participant.identity
        job = AvatarJob(sender_identity=me, avatar_id=self.avatar_id)
        lk = self._api or api.LiveKitAPI()
        try:
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=self.agent_name, room=room.name, metadata=job.to_json())
            )
        finally:
            if self._api is None:
                await lk.aclose()
        self._identity = await asyncio.wait_for(avatar_joined(room, me), self.join_timeout_s)
        await super().start(agent_session, room)
        agent_session.output.audio = DataStreamAudioOutput(
            room,
            destination_identity=self._identity,
            sample_rate=24_000,  # the avatar plays 24 kHz; the agent resamples its TTS once
            wait_remote_track=rtc.TrackKind.KIND_VIDEO,
        )


async def avatar_joined(room: Any, sender_identity: str) -> str:
    """The identity of the participant that publishes on `sender_identity`'s behalf, once it is in the room."""
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def check(p: Any, *_: Any) -> None:
        if not found.done() and (p.attributes or {}).get(PUBLISH_ON_BEHALF) == sender_identity:
            found.set_result(p.identity)

    def changed(_attributes: Any, p: Any) -> None:
        check(p)

    for p in list(room.remote_participants.values()):
        check(p)
    room.on("participant_connected", check)
    room.on("participant_attributes_changed", changed)
    try:
        return await found
    finally:
        room.off("participant_connected", check)
        room.off("participant_attributes_changed", changed)
