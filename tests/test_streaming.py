"""LipSyncStream: A/V sync, idle loop, hand-over, barge-in, latency log, bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest

from testkit.realtime import (
    LevelRenderer,
    level_of,
    make_avatar,
    read_body_index,
    read_level,
    speech_like,
)
from workbench.config import FPS
from workbench.lipsync.stream import LipSyncStream, StreamError
from workbench.timing import read_latency_log

CHUNK = 960  # 24 kHz samples per frame


def _drain(stream: LipSyncStream, max_frames: int, until_idle_after_speech: bool = True, pace: float = 0.0):
    frames, seen_speech = [], False
    for _ in range(max_frames):
        f = stream.next_frame()
        frames.append(f)
        seen_speech |= f.kind == "speech"
        if until_idle_after_speech and seen_speech and f.kind == "idle" and not stream.speaking:
            break
        if pace:
            time.sleep(pace)
        elif f.kind == "hold":
            time.sleep(0.002)  # let the worker catch up instead of spinning
    return frames


def _chunk_rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) / 32768.0) ** 2)))


def _push_in_deltas(stream, audio, rng, item_id="item_1", sr=24_000):
    i = 0
    while i < len(audio):
        n = int(rng.integers(200, 4800))
        stream.push_audio(audio[i : i + n], sr, item_id=item_id)
        i += n


@pytest.fixture
def avatar():
    return make_avatar()


def test_av_sync_over_a_30s_reply(avatar):
    """The level drawn in each speech frame matches the RMS of the audio handed out with it: lag 0."""
    renderer = LevelRenderer()
    stream = LipSyncStream(renderer, avatar, crossfade_frames=0, tail_frames=0, name="sync")
    try:
        stream.warm_idle()
        audio = speech_like(30.0)
        _push_in_deltas(stream, audio, np.random.default_rng(3))
        stream.end_utterance("item_1")
        frames = _drain(stream, 5000)
    finally:
        stream.close()
    speech = [f for f in frames if f.kind == "speech"]
    assert len(speech) == int(np.ceil(len(audio) / CHUNK))
    # The audio handed out is the reply itself, in order, 40 ms per frame.
    played = np.concatenate([f.audio for f in speech])[: len(audio)]
    assert np.array_equal(played, audio)
    assert [f.utterance_frame for f in speech] == list(range(len(speech)))
    # Levels read from the pictures vs the loudness of the audio played beside them.
    drawn = np.array([read_level(avatar, f.image, f.body_index) for f in speech], float)
    heard = np.array([level_of(_chunk_rms(f.audio)) for f in speech], float)
    lags = range(-3, 4)
    corr = [np.corrcoef(np.roll(drawn, lag)[5:-5], heard[5:-5])[0, 1] for lag in lags]
    assert lags[int(np.argmax(corr))] == 0, corr
    assert max(corr) > 0.95
    # Within one frame everywhere: the 16 kHz resampling may move a level by a few grey steps, not a frame.
    assert np.median(np.abs(drawn - heard)) <= 3


def test_audio_follows_frames_when_the_renderer_is_late(avatar):
    """A slow renderer causes holds (last picture, silence), never audio running ahead of the mouth."""
    renderer = LevelRenderer(delay_s=0.01)
    stream = LipSyncStream(renderer, avatar, crossfade_frames=0, tail_frames=0, batch_size=2, name="slow")
    try:
        stream.warm_idle()
        audio = speech_like(3.0, seed=5)
        stream.push_audio(audio, 24_000, item_id="a")
        stream.end_utterance()
        frames = _drain(stream, 3000)
    finally:
        stream.close()
    holds = [f for f in frames if f.kind == "hold"]
    speech = [f for f in frames if f.kind == "speech"]
    assert holds, "a renderer this slow must cause holds when frames are pulled without waiting"
    assert all(not f.audio.any() for f in holds)
    drawn = np.array([read_level(avatar, f.image, f.body_index) for f in speech], float)
    heard = np.array([level_of(_chunk_rms(f.audio)) for f in speech], float)
    assert np.median(np.abs(drawn - heard)) <= 3
    assert np.array_equal(np.concatenate([f.audio for f in speech])[: len(audio)], audio)


def test_idle_loop_is_the_avatar_ping_pong_with_closed_mouth(avatar):
    stream = LipSyncStream(LevelRenderer(), avatar, name="idle")
    try:
        assert stream.warm_idle(n=len(avatar)) == len(avatar)
        frames = [stream.next_frame() for _ in range(3 * len(avatar))]
    finally:
        stream.close()
    assert all(f.kind == "idle" for f in frames)
    assert [f.body_index for f in frames] == [avatar.loop_index(k) for k in range(len(frames))]
    assert [read_body_index(f.image) for f in frames] == [f.body_index for f in frames]
    assert all(read_level(avatar, f.image, f.body_index) == 0 for f in frames)
    assert all(not f.audio.any() for f in frames)


def test_hand_over_keeps_the_body_continuous_and_crossfades_the_mouth(avatar):
    stream = LipSyncStream(LevelRenderer(), avatar, crossfade_frames=3, tail_frames=3, name="handover")
    try:
        stream.warm_idle(n=len(avatar))
        for _ in range(5):
            stream.next_frame()
        tone = (np.random.default_rng(0).standard_normal(CHUNK * 20) * 0.15 * 32767).astype(np.int16)
        stream.push_audio(tone, 24_000, item_id="x")
        stream.end_utterance()
        frames = _drain(stream, 500)
        frames += [stream.next_frame() for _ in range(5)]
    finally:
        stream.close()
    shown = [f for f in frames if f.kind != "hold"]
    bodies = [read_body_index(f.image) for f in shown]
    # Ping-pong: consecutive shown frames move by one avatar frame, or stay at a turn-around.
    assert all(abs(a - b) <= 1 for a, b in zip(bodies, bodies[1:], strict=False))
    speech = [f for f in frames if f.kind == "speech"]
    levels = [read_level(avatar, f.image, f.body_index) for f in speech]
    full = float(np.median(levels[5:15]))
    # Into speech: the face starts near the idle render and reaches the speech render after 3 frames.
    assert levels[0] < levels[1] < levels[2] < levels[3]
    assert levels[0] < 0.3 * full and abs(levels[4] - full) < 0.1 * full
    # The tail (3 silent frames) closes the mouth; the first idle frame after it is fully closed.
    assert len(speech) == 20 + 3
    after = [f for f in frames if f.kind == "idle" and f.index > speech[-1].index]
    assert read_level(avatar, after[0].image, after[0].body_index) == 0


def test_barge_in_stops_at_once_and_reports_the_audio_played(avatar):
    stream = LipSyncStream(LevelRenderer(), avatar, name="barge")
    try:
        stream.warm_idle()
        audio = speech_like(4.0, seed=2)
        stream.push_audio(audio, 24_000, item_id="item_A")
        stream.push_audio(speech_like(1.0, seed=3), 24_000, item_id="item_B")  # queued behind A
        shown = 0
        while shown < 30:
            f = stream.next_frame()
            if f.kind == "speech":
                assert f.item_id == "item_A"
                shown += 1
            elif f.kind == "hold":
                time.sleep(0.002)
        cut = stream.interrupt()
        stream.push_audio(audio[:4800], 24_000, item_id="item_A")  # a delta still in flight: ignored
        after = [stream.next_frame() for _ in range(10)]
    finally:
        stream.close()
    assert cut.item_id == "item_A"
    assert cut.audio_end_ms == 30 * 40
    assert cut.dropped_items == ["item_B"]
    assert not stream.speaking
    assert all(f.kind == "idle" and not f.audio.any() for f in after)


def test_chunking_does_not_change_the_frames(avatar):
    audio = speech_like(2.0, seed=9)

    def run(chunks):
        stream = LipSyncStream(LevelRenderer(), avatar, crossfade_frames=0, tail_frames=0, name="chunks")
        try:
            for c in chunks:
                stream.push_audio(c, 24_000, item_id="i")
            stream.end_utterance()
            fr = _drain(stream, 2000)
        finally:
            stream.close()
        return [read_level(avatar, f.image, f.body_index) for f in fr if f.kind == "speech"]

    whole = run([audio])
    pieces = run(np.array_split(audio, 37))
    assert whole == pieces


def test_other_input_rates_are_resampled_to_the_playback_clock(avatar):
    stream = LipSyncStream(LevelRenderer(), avatar, crossfade_frames=0, tail_frames=0, name="rate")
    try:
        a16 = speech_like(1.0, rate=16_000, seed=4)
        for c in np.array_split(a16, 7):
            stream.push_audio(c, 16_000, item_id="r")
        stream.end_utterance()
        frames = _drain(stream, 1000)
    finally:
        stream.close()
    speech = [f for f in frames if f.kind == "speech"]
    assert len(speech) == FPS  # one second of audio is 25 frames whatever its rate
    assert sum(f.audio.size for f in speech) == 24_000


def test_latency_log_has_every_stage_in_order(avatar, tmp_path):
    stream = LipSyncStream(LevelRenderer(), avatar, name="log")
    try:
        stream.warm_idle()
        for _ in range(3):
            stream.next_frame()
        stream.push_audio(speech_like(1.0), 24_000, item_id="l")
        stream.end_utterance()
        for f in _drain(stream, 1000):
            f.timing.sent = time.perf_counter()  # what the transport stamps
        path = tmp_path / "latency.jsonl"
        stream.write_latency_log(path, meta={"session": "t"})
    finally:
        stream.close()
    meta, timings = read_latency_log(path)
    assert meta["session"] == "t" and meta["renderer"] == "level-test"
    assert [t.frame for t in timings] == list(range(len(timings)))
    speech = [t for t in timings if not t.idle]
    assert len(speech) == FPS + stream.tail_frames
    for t in speech:
        assert t.audio_in <= t.features_ready <= t.rendered <= t.composited <= t.sent
    assert stream.stats()["first_frame_ms"][0] > 0


def test_bad_input_is_refused_clearly(avatar):
    stream = LipSyncStream(LevelRenderer(), avatar, name="bad")
    try:
        with pytest.raises(StreamError, match="sample rate"):
            stream.push_audio(np.zeros(100, np.int16), 1000)
        with pytest.raises(StreamError, match="NaN"):
            stream.push_audio(np.array([0.1, np.nan], np.float32), 24_000)
        with pytest.raises(StreamError, match="dtype"):
            stream.push_audio(np.zeros(10, np.int32), 24_000)
        with pytest.raises(StreamError, match="even length"):
            stream.push_audio(b"\x00\x01\x02", 24_000)
        stream.push_audio(np.zeros((480, 2), np.int16), 24_000, item_id="stereo")  # downmixed, accepted
        assert stream.speaking
    finally:
        stream.close()
    with pytest.raises(StreamError, match="closed"):
        stream.next_frame()


def test_worker_failure_reaches_the_clock(avatar):
    class Broken(LevelRenderer):
        def render(self, avatar, frame_indices, conditions):
            if any(c > 0 for c in conditions):
                raise RuntimeError("renderer exploded")
            return super().render(avatar, frame_indices, conditions)

    stream = LipSyncStream(Broken(), avatar, name="broken")
    try:
        stream.warm_idle()
        stream.push_audio(speech_like(0.5), 24_000, item_id="b")
        stream.end_utterance()
        with pytest.raises(StreamError, match="renderer exploded"):
            for _ in range(500):
                stream.next_frame()
                time.sleep(0.002)
    finally:
        stream.close()
