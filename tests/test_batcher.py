"""RenderBatcher: one render worker for all sessions — same frames, fair, bounded first-frame wait."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from testkit.models import make_synthetic_avatar, make_unet_vae
from testkit.realtime import LevelRenderer, level_of, make_avatar, read_level, speech_like
from workbench.lipsync.batcher import EncoderBatcher, RenderBatcher, has_device_stage
from workbench.lipsync.stream import LipSyncStream


class GatedRenderer(LevelRenderer):
    """A LevelRenderer whose first call waits for `gate`, so a test can queue work behind a batch in flight."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.started = threading.Event()

    def render(self, avatar, frame_indices, conditions):
        self.started.set()
        self.gate.wait(10)
        return super().render(avatar, frame_indices, conditions)


def test_plain_renderer_frames_equal_unbatched():
    avatar, renderer = make_avatar(), LevelRenderer()
    assert not has_device_stage(renderer)
    b = RenderBatcher(renderer, max_batch=4)
    try:
        rng = np.random.default_rng(0)
        jobs = [(list(rng.integers(0, len(avatar), 7)), list(rng.uniform(0, 0.3, 7))) for _ in range(3)]
        futs = [b.submit(avatar, idx, conds, session=s) for s, (idx, conds) in enumerate(jobs)]
        for fut, (idx, conds) in zip(futs, jobs, strict=True):
            got = fut.result(timeout=10)
            want = renderer.render(avatar, idx, conds)
            assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
        assert all(len(r.sessions) <= 4 for r in b.records)
    finally:
        b.close()


def _queue_behind_gate(b, renderer, avatar, jobs):
    """Occupy the worker with one frame, queue `jobs` [(session, n, deadline)] behind it, then open the gate."""
    first = b.submit(avatar, [0], [0.0], session="busy")
    assert renderer.started.wait(5)
    futs = [b.submit(avatar, [k % len(avatar) for k in range(n)], [0.1] * n, deadline=d, session=s) for s, n, d in jobs]
    renderer.gate.set()
    first.result(timeout=10)
    for f in futs:
        f.result(timeout=10)
    return [r.sessions for r in list(b.records)[1:]]


def test_fair_across_sessions_and_new_reply_waits_one_batch():
    avatar, renderer = make_avatar(), GatedRenderer()
    b = RenderBatcher(renderer, max_batch=8)
    try:
        now = time.perf_counter()
        # A is 2 s late on 40 frames (EDF alone would serve only A); B has 40 frames due now;
        # C is a new reply's first frame, due in 80 ms.
        batches = _queue_behind_gate(b, renderer, avatar, [("A", 40, now - 2.0), ("B", 40, now), ("C", 1, now + 0.08)])
    finally:
        b.close()
    assert "C" in batches[0]  # the first batch after the one in flight
    assert all(len(s) <= 8 for s in batches)
    # every batch that could serve B served it while A still had frames waiting
    a_left = 40
    for s in batches:
        if a_left > s.count("A") and "B" not in s:
            pytest.fail(f"B starved: {batches}")
        a_left -= s.count("A")
    assert sum(s.count("A") for s in batches) == 40 and sum(s.count("B") for s in batches) == 40


def test_equal_deadlines_share_batches_evenly():
    avatar, renderer = make_avatar(), GatedRenderer()
    b = RenderBatcher(renderer, max_batch=6)
    try:
        now = time.perf_counter()
        batches = _queue_behind_gate(b, renderer, avatar, [(s, 12, now) for s in "XYZ"])
    finally:
        b.close()
    for s in batches:
        counts = [s.count(x) for x in "XYZ"]
        assert max(counts) - min(counts) <= 1, batches


def test_cancel_drops_waiting_frames():
    avatar, renderer = make_avatar(), GatedRenderer()
    b = RenderBatcher(renderer, max_batch=4)
    try:
        first = b.submit(avatar, [0], [0.0], session="busy")
        assert renderer.started.wait(5)
        fut = b.submit(avatar, list(range(8)), [0.1] * 8, session="gone")
        assert b.cancel("gone") == 8 and fut.cancelled()
        renderer.gate.set()
        first.result(timeout=10)
    finally:
        b.close()
    assert all("gone" not in r.sessions for r in b.records)


# ---- the MuseTalk device stage ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def musetalk():
    """The real MuseTalk renderer on tiny random models (no Whisper: the conditions are given)."""
    import torch

    from workbench.lipsync.musetalk.renderer import MuseTalkRenderer

    unet, vae = make_unet_vae()
    return MuseTalkRenderer(unet, vae, None, torch.device("cpu"), torch.float32, batch_size=4)


def test_musetalk_batch_across_avatars_equals_unbatched(musetalk):
    assert has_device_stage(musetalk)
    prepared = make_synthetic_avatar(n_frames=3, seed=1, avatar_id="prepared")
    prepared.latents = musetalk.encode_crops(prepared.crops)
    lazy = make_synthetic_avatar(n_frames=2, seed=2, avatar_id="lazy")  # latents encoded on demand
    rng = np.random.default_rng(4)
    jobs = [(prepared, [0, 2]), (lazy, [1]), (prepared, [1])]
    conds = [list(rng.standard_normal((len(i), 50, 384)).astype(np.float32)) for _, i in jobs]
    lock = threading.Lock()
    b = RenderBatcher(musetalk, max_batch=8, lock=lock)
    try:
        with lock:  # the worker takes a first frame and waits on the lock: the three jobs queue behind it
            first = b.submit(prepared, [0], [conds[0][0]], session="first")
            time.sleep(0.2)
            futs = [b.submit(av, idx, c, session=k) for k, ((av, idx), c) in enumerate(zip(jobs, conds, strict=True))]
        first.result(timeout=60)
        got = [f.result(timeout=60) for f in futs]
    finally:
        b.close()
    assert sorted(b.records[-1].sessions) == [0, 0, 1, 2]  # one batch, two avatars
    for (av, idx), c, frames in zip(jobs, conds, got, strict=True):
        want = musetalk.render(av, idx, c)
        for g, w in zip(frames, want, strict=True):
            assert g.shape == w.shape and g.dtype == np.uint8
            assert np.abs(g.astype(int) - w.astype(int)).max() <= 1  # batch composition may flip a byte


def test_streams_through_one_batcher_keep_av_sync():
    """Two streams share one batcher: every speech frame still shows the level of the audio played with it."""
    avatar, renderer = make_avatar(), LevelRenderer()
    b = RenderBatcher(renderer, max_batch=4)
    streams = [
        LipSyncStream(renderer, avatar, crossfade_frames=0, tail_frames=0, batcher=b, name=f"s{k}") for k in range(2)
    ]
    try:
        for k, s in enumerate(streams):
            s.warm_idle()
            s.push_audio(speech_like(2.0, seed=k + 1), 24_000, item_id=f"i{k}")
            s.end_utterance(f"i{k}")
        speech = {k: [] for k in range(2)}
        for _ in range(400):
            for k, s in enumerate(streams):
                f = s.next_frame()
                if f.kind == "speech":
                    speech[k].append(f)
            if all(len(v) == 50 for v in speech.values()):
                break
            time.sleep(0.002)
    finally:
        for s in streams:
            s.close()
        b.close()
    for frames in speech.values():
        assert [f.utterance_frame for f in frames] == list(range(50))
        for f in frames:
            rms = float(np.sqrt(np.mean((f.audio.astype(np.float64) / 32768.0) ** 2)))
            assert abs(read_level(avatar, f.image, f.body_index) - level_of(rms)) <= 1
    assert {x for r in b.records for x in r.sessions} == set(streams)


class SlowRunner:
    """A WhisperEncoderRunner stand-in: 'hidden states' are the window's mean, after a fixed cost per call."""

    device, dtype = "cpu", None

    def __init__(self):
        self.sizes = []

    def encode(self, windows):
        self.sizes.append(len(windows))
        time.sleep(0.05)
        return np.array([[float(np.mean(w))] for w in windows])


def test_encoder_batcher_merges_sessions_windows():
    runner = SlowRunner()
    enc = EncoderBatcher(runner, max_windows=8)
    results = {}

    def call(k):
        results[k] = enc.encode([np.full(10, k, np.float32), np.full(10, k + 0.5, np.float32)])

    threads = [threading.Thread(target=call, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    for k in range(6):  # each caller gets its own windows' results, in order
        assert results[k].tolist() == [[k], [k + 0.5]]
    assert enc.calls < 6 and max(runner.sizes) <= 8 and sum(runner.sizes) == 12
    assert enc.device == "cpu"  # the runner's attributes show through


def test_render_batcher_installs_the_encoder_batcher():
    class WithWhisper(LevelRenderer):
        whisper = SlowRunner()

    r = WithWhisper()
    b = RenderBatcher(r)
    try:
        assert isinstance(r.whisper, EncoderBatcher) and b.encoder_batcher is r.whisper
        assert not hasattr(b.frontend_lock, "acquire")  # frontends no longer take the model lock
        b2 = RenderBatcher(r)
        assert b2.encoder_batcher is b.encoder_batcher  # installed once
        b2.close()
    finally:
        b.close()
