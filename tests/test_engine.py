"""The engine facade: renderer choice, streamed file rendering, the tuning preview."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soxr

from testkit.models import make_tiny_models
from workbench.avatars.model import PrepParams
from workbench.avatars.pipeline import load_source
from workbench.config import SAMPLES_PER_FRAME, Settings
from workbench.engine import Engine
from workbench.lipsync.stream import LipSyncStream
from workbench.media import load_audio


@pytest.fixture
def engine(tmp_path):
    return Engine(Settings(cache_dir=tmp_path / "cache", models_dir=tmp_path / "models", batch_size=4), renderer="cpu")


def test_auto_picks_cpu_without_weights_and_musetalk_with_them(tmp_path):
    settings = Settings(cache_dir=tmp_path / "cache", models_dir=tmp_path / "models")
    assert Engine(settings).resolved_renderer_name() == "cpu"
    make_tiny_models(tmp_path / "models")
    engine = Engine(settings)
    assert engine.resolved_renderer_name() == "musetalk"
    assert engine.renderer.name == "musetalk"


def test_the_cpu_interior_style_is_a_setting(tmp_path, monkeypatch):
    base = {"cache_dir": tmp_path / "cache", "models_dir": tmp_path / "models"}
    assert Engine(Settings(**base), renderer="cpu").renderer.interior_style == "auto"
    monkeypatch.setenv("WORKBENCH_CPU_INTERIOR_STYLE", "photo")
    assert Engine(Settings(**base), renderer="cpu").renderer.interior_style == "photo"
    with pytest.raises(ValueError):
        Settings(**base, cpu_interior_style="oil")


def test_streamed_render_equals_whole_file_and_stamps_each_batch(engine, yongen_avatar, samples_dir):
    audio = load_audio(samples_dir / "eng.wav")[3 * 16_000 : 3 * 16_000 + 30 * SAMPLES_PER_FRAME]
    timings: list = []
    frames = engine.render_frames(yongen_avatar, audio, timings=timings)

    conds = engine.renderer.new_frontend().process(audio)
    whole = engine.renderer.render(yongen_avatar, [yongen_avatar.loop_index(k) for k in range(len(conds))], conds)
    assert len(frames) == len(whole) == 30
    assert all(np.array_equal(a, b) for a, b in zip(frames, whole, strict=True))

    assert [t.frame for t in timings] == list(range(30))
    audio_in = [t.audio_in for t in timings]
    assert audio_in == sorted(audio_in)
    assert audio_in[-1] > audio_in[0]  # fed batch by batch, not all at time zero
    assert all(t.audio_in <= t.features_ready <= t.rendered for t in timings)


def test_preview_renders_one_frame_per_parameter_set(engine, samples_dir):
    audio = load_audio(samples_dir / "eng.wav")[4 * 16_000 : 5 * 16_000]
    source = samples_dir / "yongen.mp4"
    base = engine.prepare(source, PrepParams(max_frames=5))
    shifts = engine.spread_shifts(base, 3)
    assert 0 in shifts and min(shifts) == base.bbox_range[0] and max(shifts) == base.bbox_range[1]
    previews = engine.preview(source, [PrepParams(max_frames=5, bbox_shift=s) for s in shifts], 2, audio)
    assert len(previews) == len(shifts)
    assert all(p.shape == base.frames[0].shape for p in previews)
    assert len({p.tobytes() for p in previews}) == len(shifts)  # each shift changes what is rendered


def test_preview_rejects_empty_audio(engine, samples_dir):
    with pytest.raises(ValueError, match="empty"):
        engine.preview(samples_dir / "yongen.mp4", [PrepParams(max_frames=5)], 0, np.zeros(0, np.float32))


def test_file_preview_and_stream_render_the_same_frame(engine, samples_dir):
    """One render loop: frame k of a file render, the tuning preview at k and frame k of a streamed reply
    are the same picture for the same audio (the stream's reply starting at body position 0)."""
    source = samples_dir / "yongen.mp4"
    params = PrepParams(max_frames=5)
    avatar = engine.prepare(source, params)
    audio = load_audio(samples_dir / "eng.wav")[4 * 16_000 : 4 * 16_000 + 12 * SAMPLES_PER_FRAME]
    k = 7
    filed = engine.render_frames(avatar, audio)[k]
    previewed = engine.preview(source, [params], k, audio)[0]
    assert np.array_equal(filed, previewed)

    stream = LipSyncStream(engine.renderer, avatar, lead_frames=0, crossfade_frames=0, render_lock=engine.render_lock)
    try:
        stream.push_audio(soxr.resample(audio, 16_000, 24_000).astype(np.float32), 24_000, item_id="reply")
        stream.end_utterance()
        streamed = None
        for _ in range(400):
            f = stream.next_frame()
            if f.kind == "speech" and f.utterance_frame == k:
                streamed = f
                break
            if f.kind != "speech":
                time.sleep(0.01)
    finally:
        stream.close()
    assert streamed is not None and streamed.body_index == avatar.loop_index(k)
    # the stream resamples 24 kHz back to 16 kHz, so its conditions differ slightly from the file's:
    # the same body frame and nearly the same mouth
    diff = np.abs(streamed.image.astype(int) - filed.astype(int))
    assert diff.mean() < 1.0


def test_an_evaluation_scores_the_source_frames_not_a_cached_avatar_copy(engine, examples_dir):
    """A stored avatar's frames are a JPEG round trip; `reuse=False` (what evaluation cases use) prepares from the
    source even when the cache holds the avatar, so a suite's numbers do not depend on what the app cached."""
    source = examples_dir / "yongen.mp4"
    params = PrepParams(max_frames=3)
    engine.prepare(source, params)  # the app's preparation: saved to the cache
    cached = engine.prepare(source, params, save=False)
    fresh = engine.prepare(source, params, save=False, reuse=False)
    assert cached.avatar_id == fresh.avatar_id
    decoded, _ = load_source(source, 3, engine.settings.max_source_side)
    assert not np.array_equal(cached.frames, decoded)  # the cached copy differs, so the check below can fail
    assert np.array_equal(fresh.frames, decoded)
