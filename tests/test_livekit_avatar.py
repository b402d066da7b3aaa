"""The LiveKit avatar worker's `VideoGenerator`, in process (no LiveKit server): audio frames in, lip-synced video
and its audio out at 25 fps, barge-in within one frame, `AudioSegmentEnd` once a reply has been shown, and the
worker's load from the render batcher."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("livekit.agents", reason="the optional extra 'agents' (pip install -e '.[agents]')")

from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AudioSegmentEnd  # noqa: E402

from testkit.realtime import LevelRenderer, level_of, make_avatar, read_level, speech_like  # noqa: E402
from workbench.integrations.livekit_avatar import LipSyncVideoGenerator, video_frame_to_bgr  # noqa: E402
from workbench.lipsync.stream import LipSyncStream  # noqa: E402


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) / 32768.0) ** 2)))


def _audio_frames(pcm: np.ndarray, rate: int, channels: int = 1, ms: int = 10):
    """The agent's TTS as LiveKit sends it: 10 ms frames (interleaved when stereo)."""
    n = rate * ms // 1000
    for i in range(0, len(pcm), n):
        chunk = pcm[i : i + n]
        data = np.repeat(chunk, channels) if channels > 1 else chunk
        yield rtc.AudioFrame(data.astype(np.int16).tobytes(), rate, channels, len(chunk))


def _generator(**stream_kw):
    avatar = make_avatar()
    stream = LipSyncStream(LevelRenderer(), avatar, crossfade_frames=0, tail_frames=0, name="lk", **stream_kw)
    stream.warm_idle()
    return avatar, stream, LipSyncVideoGenerator(stream)


async def _consume(gen, out: list, stop: asyncio.Event):
    async for item in gen:
        out.append((time.perf_counter(), item))
        if stop.is_set():
            return


def test_audio_frames_in_lip_synced_video_and_audio_out_at_25_fps():
    avatar, stream, gen = _generator()
    audio = speech_like(3.0, seed=11)

    async def main():
        out: list = []
        stop = asyncio.Event()
        task = asyncio.create_task(_consume(gen, out, stop))
        for f in _audio_frames(audio, 24_000):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())
        deadline = time.perf_counter() + 60
        while not any(isinstance(x, AudioSegmentEnd) for _, x in out):
            assert time.perf_counter() < deadline, "the reply never finished"
            await asyncio.sleep(0.02)
        stop.set()
        await task
        return out

    try:
        out = asyncio.run(main())
    finally:
        stream.close()
    items = [x for _, x in out]
    videos = [i for i, x in enumerate(items) if isinstance(x, rtc.VideoFrame)]
    audios = [i for i, x in enumerate(items) if isinstance(x, rtc.AudioFrame)]
    ends = [i for i, x in enumerate(items) if isinstance(x, AudioSegmentEnd)]
    # 25 fps by timestamps: one tick per 40 ms of media time, and never faster than real time.
    ticks = list(gen.ticks)
    assert [t.index for t in ticks] == list(range(len(ticks)))
    assert np.allclose(np.diff([t.timestamp for t in ticks]), 0.04)
    wall = out[videos[-1]][0] - out[videos[0]][0]
    assert wall >= 0.04 * (len(videos) - 1) - 0.05
    # Every audio frame follows its picture directly, 40 ms of 24 kHz mono, and they replay the reply exactly.
    assert all(i - 1 in videos for i in audios)
    assert {(items[i].sample_rate, items[i].num_channels, items[i].samples_per_channel) for i in audios} == {
        (24_000, 1, 960)
    }
    played = np.concatenate([np.frombuffer(items[i].data, np.int16) for i in audios])
    assert np.array_equal(played[: len(audio)], audio) and not played[len(audio) :].any()
    # A/V aligned: the level drawn in each picture matches the loudness of the audio sent beside it, at lag 0.
    drawn, heard = [], []
    for i in audios:
        image = video_frame_to_bgr(items[i - 1])
        tick = next(t for t in ticks if t.audio_samples and t.index == videos.index(i - 1))
        assert tick.kind == "speech"
        body = stream.avatar.loop_index(0)  # the level block sits at the same place in every body frame
        drawn.append(read_level(avatar, image, body))
        heard.append(level_of(_rms(np.frombuffer(items[i].data, np.int16))))
    drawn, heard = np.array(drawn, float), np.array(heard, float)
    corr = {lag: np.corrcoef(np.roll(drawn, lag)[3:-3], heard[3:-3])[0, 1] for lag in range(-3, 4)}
    assert max(corr, key=corr.get) == 0 and corr[0] > 0.95, corr
    # One AudioSegmentEnd, after the reply's last picture and audio were out (the runner then sends
    # lk.playback_finished): the reply has been shown.
    assert len(ends) == 1 and ends[0] > audios[-1] and any(audios[-1] < v < ends[0] for v in videos)


def test_barge_in_clears_within_one_frame_and_the_next_reply_plays():
    avatar, stream, gen = _generator()

    async def main():
        out: list = []
        stop = asyncio.Event()
        task = asyncio.create_task(_consume(gen, out, stop))
        for f in _audio_frames(speech_like(6.0, seed=3), 24_000):
            await gen.push_audio(f)
        deadline = time.perf_counter() + 60
        while sum(isinstance(x, rtc.AudioFrame) for _, x in out) < 10:
            assert time.perf_counter() < deadline, "speech never started"
            await asyncio.sleep(0.01)
        cut_at = len(out)
        gen.clear_buffer()  # the agent's lk.clear_buffer
        await asyncio.sleep(0.3)
        after_cut = list(out[cut_at:])
        for f in _audio_frames(speech_like(1.0, seed=4), 24_000):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())
        while not any(isinstance(x, AudioSegmentEnd) for _, x in out):
            assert time.perf_counter() < deadline, "the second reply never finished"
            await asyncio.sleep(0.02)
        stop.set()
        await task
        return out, cut_at, after_cut

    try:
        out, cut_at, after_cut = asyncio.run(main())
    finally:
        stream.close()
    # Within one frame: at most the tick already under way when clear_buffer ran carries speech.
    kinds_after = [x for _, x in after_cut]
    first_video = next(i for i, x in enumerate(kinds_after) if isinstance(x, rtc.VideoFrame))
    later_audio = [i for i, x in enumerate(kinds_after) if isinstance(x, rtc.AudioFrame) and i > first_video + 1]
    assert not later_audio, "speech audio went on after the barge-in"
    assert sum(isinstance(x, rtc.VideoFrame) for x in kinds_after) >= 3  # the picture goes on (idle)
    assert not any(isinstance(x, AudioSegmentEnd) for x in kinds_after)  # the runner reports the cut itself
    assert gen.cleared == 1
    cut_tick = next(t for t in gen.ticks if t.index > 0 and t.kind != "speech" and t.segment is None and t.index > 10)
    assert all(t.segment != "segment-1" for t in gen.ticks if t.index > cut_tick.index)
    # The next reply plays in full and ends with its own AudioSegmentEnd.
    second = [t for t in gen.ticks if t.segment == "segment-2"]
    assert len(second) == 25
    assert [type(x) for _, x in out].count(AudioSegmentEnd) == 1


def test_stereo_48k_frames_are_mixed_and_resampled():
    avatar, stream, gen = _generator()
    audio48 = speech_like(1.0, rate=48_000, seed=8)

    async def main():
        out: list = []
        stop = asyncio.Event()
        task = asyncio.create_task(_consume(gen, out, stop))
        for f in _audio_frames(audio48, 48_000, channels=2):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())
        deadline = time.perf_counter() + 60
        while not any(isinstance(x, AudioSegmentEnd) for _, x in out):
            assert time.perf_counter() < deadline
            await asyncio.sleep(0.02)
        stop.set()
        await task
        return out

    try:
        out = asyncio.run(main())
    finally:
        stream.close()
    audio_out = [x for _, x in out if isinstance(x, rtc.AudioFrame)]
    assert len(audio_out) == 25 and all(a.sample_rate == 24_000 for a in audio_out)
    pcm = np.concatenate([np.frombuffer(a.data, np.int16) for a in audio_out]).astype(float)
    ref = audio48[::2].astype(float)
    assert abs(np.sqrt(np.mean(pcm**2)) / np.sqrt(np.mean(ref**2)) - 1) < 0.1


def test_the_worker_load_follows_sessions_and_the_batcher_occupancy():
    from workbench.integrations.streams import SessionLimitError, StreamPool
    from workbench.lipsync.batcher import BatchRecord, RenderBatcher

    class Engine:
        renderer = LevelRenderer()

        def list_avatars(self):
            return []

        def load_avatar(self, avatar_id):
            return make_avatar(avatar_id=avatar_id)

    pool = StreamPool(Engine(), max_sessions=2, serialize=False)
    with pytest.raises(LookupError, match="workbench prepare"):
        pool.avatar(None)
    a = pool.open(pool.avatar("a"), "a")
    assert pool.load() == 0.5
    b = pool.open(pool.avatar("b"), "b")
    with pytest.raises(SessionLimitError, match="2 avatar sessions"):
        pool.open(pool.avatar("c"), "c")
    assert pool.load() == 1.0
    pool.close(a)
    pool.close(b)
    assert pool.load() == 0.0
    # Occupancy: the share of the last window the model was busy, from the batch records.
    batcher = RenderBatcher(LevelRenderer())
    try:
        now = 1000.0
        batcher.records.extend(
            [BatchRecord(["s"], now - 9.0, 1.0), BatchRecord(["s"], now - 4.0, 1.0), BatchRecord(["s"], now - 1.5, 1.0)]
        )
        assert batcher.occupancy(window_s=5.0, now=now) == pytest.approx(0.4)
        assert batcher.occupancy(window_s=2.0, now=now) == pytest.approx(0.5)
        pool.batcher = batcher
        assert pool.load() <= 1.0
    finally:
        batcher.close()


class _Publication:
    async def wait_for_subscription(self) -> None:
        return None


class _Participant:
    def __init__(self):
        self.tracks = []

    async def publish_track(self, track, options):
        self.tracks.append(track)
        return _Publication()


class _Room(rtc.EventEmitter):
    """The two things `AvatarRunner` asks of a connected room: publishing tracks and being connected."""

    def __init__(self):
        super().__init__()
        self.local_participant = _Participant()

    def isconnected(self) -> bool:
        return True


def test_the_real_avatar_runner_reports_playback_finished_after_the_reply_and_on_barge_in():
    """LiveKit's own `AvatarRunner` and `AVSynchronizer` drive the generator; `QueueAudioOutput` is the agent side
    in the same process (what `DataStreamAudioReceiver` is across the room)."""
    from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, QueueAudioOutput

    avatar, stream, gen = _generator()

    async def main():
        agent_out = QueueAudioOutput(sample_rate=24_000)
        finished = []
        agent_out.on("playback_finished", lambda ev: finished.append((time.perf_counter(), ev)))
        room = _Room()
        h, w = avatar.frame_size
        runner = AvatarRunner(room, audio_recv=agent_out, video_gen=gen, options=AvatarOptions(w, h, 25, 24_000, 1))
        await runner.start()
        try:
            t0 = time.perf_counter()
            for f in _audio_frames(speech_like(1.0, seed=21), 24_000):
                await agent_out.capture_frame(f)
            agent_out.flush()
            deadline = t0 + 60
            while not finished:
                assert time.perf_counter() < deadline, "no playback_finished"
                await asyncio.sleep(0.02)
            first = finished[0]
            # barge-in: a long reply, cut by the agent's clear_buffer
            for f in _audio_frames(speech_like(5.0, seed=22), 24_000):
                await agent_out.capture_frame(f)
            while sum(t.segment == "segment-2" for t in gen.ticks) < 10:
                assert time.perf_counter() < deadline, "the second reply never started"
                await asyncio.sleep(0.01)
            agent_out.clear_buffer()
            while len(finished) < 2:
                assert time.perf_counter() < deadline, "no playback_finished after the barge-in"
                await asyncio.sleep(0.02)
            return t0, first, finished[1], room
        finally:
            await runner.aclose()

    try:
        t0, (t_done, done), (_, cut), room = asyncio.run(main())
    finally:
        stream.close()
    assert not done.interrupted and done.playback_position == pytest.approx(1.0, abs=0.041)
    assert t_done - t0 >= 1.0 - 0.05  # not before the reply's second of pictures was shown
    assert cut.interrupted and 0.3 <= cut.playback_position < 5.0
    assert [type(t).__name__ for t in room.local_participant.tracks] == ["LocalAudioTrack", "LocalVideoTrack"]
