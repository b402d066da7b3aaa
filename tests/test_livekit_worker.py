"""The LiveKit avatar worker's parts that need no LiveKit server: job metadata, which jobs it takes, the load it
reports, the agent side's wait for the avatar, and the CLI's plain messages."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("livekit.agents", reason="the optional extra 'agents' (pip install -e '.[agents]')")

from livekit import rtc  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from testkit.realtime import LevelRenderer, make_avatar  # noqa: E402
from workbench.integrations.livekit_dispatch import (  # noqa: E402
    AGENT_NAME,
    PUBLISH_ON_BEHALF,
    AvatarJob,
    AvatarJobError,
    avatar_joined,
)
from workbench.integrations.livekit_worker import AvatarWorker, make_server  # noqa: E402
from workbench.integrations.streams import StreamPool  # noqa: E402


class _Engine:
    renderer = LevelRenderer()

    def list_avatars(self):
        return []

    def load_avatar(self, avatar_id):
        return make_avatar(avatar_id=avatar_id)


class _Request:
    def __init__(self, metadata: str):
        self.id = "AJ_test"
        self.job = type("Job", (), {"metadata": metadata})()
        self.outcome = None

    async def accept(self, **kw):
        self.outcome = ("accept", kw)

    async def reject(self, *, terminate: bool = True):
        self.outcome = ("reject", terminate)


def test_job_metadata_round_trips_and_bad_metadata_is_refused_plainly():
    job = AvatarJob(sender_identity="agent-AJ_1", avatar_id="sun")
    assert AvatarJob.from_json(job.to_json()) == job
    for bad, words in [
        ("", "no metadata"),
        ("{", "not JSON"),
        ('{"avatar_id": "sun"}', "sender_identity"),
        ('{"sender_identity": "a", "avatar_id": "../etc"}', "avatar_id"),
        ("x" * 3000, "over 2000"),
    ]:
        with pytest.raises(AvatarJobError, match=words):
            AvatarJob.from_json(bad)


def test_the_worker_takes_jobs_while_a_slot_is_free_and_reports_its_load():
    pool = StreamPool(_Engine(), max_sessions=1, serialize=False)
    worker = AvatarWorker(pool)

    async def ask(metadata: str):
        req = _Request(metadata)
        await worker.request(req)
        return req.outcome

    ok = asyncio.run(ask(AvatarJob(sender_identity="agent-1").to_json()))
    assert ok == ("accept", {"name": "avatar", "attributes": {PUBLISH_ON_BEHALF: "agent-1"}})
    assert asyncio.run(ask("not json")) == ("reject", True)
    assert worker.load() == 0.0
    stream = pool.open(pool.avatar("a"), "a")
    try:
        assert worker.load() == 1.0
        # Full: the job goes back to LiveKit for another worker, not terminated.
        assert asyncio.run(ask(AvatarJob(sender_identity="agent-2").to_json())) == ("reject", False)
    finally:
        pool.close(stream)
    server = make_server(worker, load_threshold=0.5)
    assert server.load_fnc() == 0.0 and server._agent_name == AGENT_NAME


class _Participant:
    def __init__(self, identity, attributes):
        self.identity, self.attributes = identity, attributes


class _Room(rtc.EventEmitter):
    def __init__(self):
        super().__init__()
        self.remote_participants = {}


def test_the_agent_side_finds_the_avatar_publishing_on_its_behalf():
    async def main():
        room = _Room()
        room.remote_participants["user"] = _Participant("user", {})
        waiting = asyncio.create_task(avatar_joined(room, "agent-me"))
        await asyncio.sleep(0.01)
        other = _Participant("agent-AJ_other", {PUBLISH_ON_BEHALF: "agent-someone-else"})
        room.emit("participant_connected", other)
        mine = _Participant("agent-AJ_mine", {})
        room.emit("participant_connected", mine)
        await asyncio.sleep(0.01)
        assert not waiting.done()
        mine.attributes = {PUBLISH_ON_BEHALF: "agent-me"}
        room.emit("participant_attributes_changed", {PUBLISH_ON_BEHALF: "agent-me"}, mine)
        return await asyncio.wait_for(waiting, 5)

    assert asyncio.run(main()) == "agent-AJ_mine"


def test_livekit_worker_command_says_what_is_missing(monkeypatch, tmp_path):
    from workbench.cli import app

    for v in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(v, raising=False)
    result = CliRunner().invoke(app, ["livekit-worker", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2 and "LIVEKIT_URL" in result.output and "Traceback" not in result.output
    monkeypatch.setenv("LIVEKIT_URL", "ws://127.0.0.1:7880")
    monkeypatch.setenv("LIVEKIT_API_KEY", "devkey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "secret")
    result = CliRunner().invoke(app, ["livekit-worker", "--cache-dir", str(tmp_path), "--renderer", "cpu"])
    assert result.exit_code == 2 and "workbench prepare" in result.output


class _Publication:
    async def wait_for_subscription(self) -> None:
        return None


class _LocalParticipant:
    def __init__(self):
        self.tracks = []

    async def publish_track(self, track, options):
        self.tracks.append(track)
        return _Publication()


class _ConnectedRoom(rtc.EventEmitter):
    def __init__(self):
        super().__init__()
        self.local_participant = _LocalParticipant()

    def isconnected(self) -> bool:
        return True


class _JobContext:
    def __init__(self, room, metadata: str):
        self.job = type("Job", (), {"id": "AJ_entry", "metadata": metadata})()
        self.room = room
        self.callbacks, self.reasons = [], []

    def add_shutdown_callback(self, callback):
        self.callbacks.append(callback)

    async def connect(self, **_):
        return None

    def shutdown(self, reason: str = "") -> None:
        self.reasons.append(reason)


def test_a_job_plays_the_agents_audio_and_frees_its_slot_when_the_agent_leaves(monkeypatch):
    """The worker's entrypoint with LiveKit's AvatarRunner; the data-stream receiver is replaced by its in-process
    twin (QueueAudioOutput), the room by a stand-in that accepts the published tracks."""
    from livekit.agents.voice.avatar import QueueAudioOutput

    from testkit.realtime import speech_like
    from workbench.integrations import livekit_worker

    senders, outputs = [], []

    def receiver(room, *, sender_identity):
        senders.append(sender_identity)
        return outputs[0]

    monkeypatch.setattr(livekit_worker, "DataStreamAudioReceiver", receiver)
    pool = StreamPool(_Engine(), max_sessions=2, serialize=False)
    worker = AvatarWorker(pool, default_avatar="sun", max_session_s=600)

    async def main():
        agent_audio = QueueAudioOutput(sample_rate=24_000)  # made on the loop that runs it
        outputs.append(agent_audio)
        room = _ConnectedRoom()
        ctx = _JobContext(room, AvatarJob(sender_identity="agent-7").to_json())
        finished = []
        agent_audio.on("playback_finished", finished.append)
        await worker.entrypoint(ctx)
        assert pool.active == 1 and worker.load() == 0.5
        pcm = speech_like(0.6, seed=4)
        for i in range(0, len(pcm), 240):
            chunk = pcm[i : i + 240]
            await agent_audio.capture_frame(rtc.AudioFrame(chunk.tobytes(), 24_000, 1, len(chunk)))
        agent_audio.flush()
        for _ in range(600):
            if finished:
                break
            await asyncio.sleep(0.02)
        room.emit("participant_disconnected", _Participant("someone-else", {}))
        room.emit("participant_disconnected", _Participant("agent-7", {}))
        for callback in ctx.callbacks:
            await callback("test over")
        return room, ctx, finished

    room, ctx, finished = asyncio.run(main())
    assert senders == ["agent-7"]
    # 0.6 s of speech and the stream's 3 closing-mouth frames (silence) after it
    assert finished and finished[0].playback_position == pytest.approx(0.6 + 3 * 0.04, abs=0.041)
    assert ctx.reasons == ["the agent left the room"]
    assert pool.active == 0
    assert [type(t).__name__ for t in room.local_participant.tracks] == ["LocalAudioTrack", "LocalVideoTrack"]
