"""What a fresh Space relies on: compressed frame storage, the cache's size limit, the /data volume, the bundled
examples and the example avatar prepared in the background."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from workbench.avatars.frames import INDEX_NAME, PACK_NAME, EncodedFrames, FramesError, write_frames
from workbench.avatars.model import PrepParams
from workbench.avatars.store import AvatarCache, CacheError
from workbench.config import Settings, persistent_root
from workbench.media import load_audio
from workbench.ui import header
from workbench.ui.library import DEFAULT_EXAMPLE, EXAMPLES_DIR, Library, find_samples_dir
from workbench.ui.warmup import ExampleWarmup

MIN_PSNR_DB = 40.0


def _frames(n: int = 5, h: int = 48, w: int = 64) -> np.ndarray:
    """Smooth gradients with a moving square: JPEG-friendly like real frames, different per frame."""
    y, x = np.mgrid[0:h, 0:w]
    out = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = (x * 255 // w + 20 * i) % 256
        out[i, ..., 1] = y * 255 // h
        out[i, ..., 2] = 128
        out[i, 10 + i : 20 + i, 10:20] = 240
    return out


# --- packed frames ------------------------------------------------------------------------------------
def test_encoded_frames_behave_like_the_array(tmp_path):
    frames = _frames()
    write_frames(frames, tmp_path)
    enc = EncodedFrames(tmp_path, frames.shape[1:3], keep=2)
    assert len(enc) == 5 and enc.shape == frames.shape and enc.dtype == np.uint8 and enc.ndim == 4
    for i in range(5):
        assert cv2.PSNR(enc[i], frames[i]) > MIN_PSNR_DB
    assert np.array_equal(enc[-1], enc[4]) and np.array_equal(enc[np.int64(2)], enc[2])
    assert enc[1:4].shape == (3, 48, 64, 3) and np.array_equal(enc[[0, 3]][1], enc[3])
    assert np.asarray(enc).shape == frames.shape and enc[2, 5, 5].shape == (3,)
    assert enc.encoded_bytes < frames.nbytes
    with pytest.raises(IndexError):
        enc[5]
    with pytest.raises(ValueError, match="read-only"):
        enc[0][0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        enc[0] = frames[0]


def test_truncated_or_corrupt_pack_is_a_clear_error(tmp_path):
    frames = _frames(3)
    write_frames(frames, tmp_path)
    pack = tmp_path / PACK_NAME
    data = pack.read_bytes()
    pack.write_bytes(data[:-10])
    with pytest.raises(FramesError, match="does not match its index"):
        EncodedFrames(tmp_path, frames.shape[1:3])
    pack.write_bytes(b"\0" * len(data))  # right length, garbage
    with pytest.raises(FramesError, match="corrupt"):
        EncodedFrames(tmp_path, frames.shape[1:3])[1]


def test_cache_stores_frames_compressed_and_reads_format_1(tmp_cache, yongen_avatar):
    avatar = yongen_avatar
    d = tmp_cache.save(avatar)
    assert (d / PACK_NAME).is_file() and (d / INDEX_NAME).is_file() and not (d / "frames.npy").exists()
    assert (d / PACK_NAME).stat().st_size < avatar.frames.nbytes / 8  # measured ~13x on yongen.mp4
    loaded = tmp_cache.load(avatar.avatar_id)
    assert isinstance(loaded.frames, EncodedFrames) and loaded.frame_size == avatar.frame_size
    assert min(cv2.PSNR(loaded.frames[i], avatar.frames[i]) for i in range(0, len(avatar), 7)) > MIN_PSNR_DB
    # An avatar written before (format 1: frames.npy) still loads, frames exactly as stored.
    (d / PACK_NAME).unlink()
    (d / INDEX_NAME).unlink()
    np.save(d / "frames.npy", np.asarray(avatar.frames))
    old = tmp_cache.load(avatar.avatar_id)
    assert np.array_equal(old.frames, avatar.frames)
    (d / "frames.npy").unlink()
    with pytest.raises(CacheError, match="unreadable"):
        tmp_cache.load(avatar.avatar_id)


def test_cpu_renderer_is_unchanged_on_stored_frames(tmp_cache, yongen_avatar, examples_dir):
    """Renderers read stored frames through the same indexing: outside the mask the output is the stored frame."""
    from workbench.lipsync.cpu.renderer import CPURenderer

    tmp_cache.save(yongen_avatar)
    loaded = tmp_cache.load(yongen_avatar.avatar_id)
    renderer = CPURenderer()
    audio = load_audio(examples_dir / "speech_en.ogg")[:16_000]
    conds = renderer.new_frontend().process(audio)[:3]
    out = renderer.render(loaded, [0, 1, 2], conds)
    for i, frame in enumerate(out):
        top = loaded.boxes[i][1]
        assert np.array_equal(frame[: max(0, top - 2)], loaded.frames[i][: max(0, top - 2)])


# --- size limit --------------------------------------------------------------------------------------
def _variant(avatar, k: int):
    from dataclasses import replace

    return replace(
        avatar,
        avatar_id=f"{k:016x}-{k:012x}",
        params=replace(avatar.params, bbox_shift=k),
        extras={**avatar.extras, "source_digest": f"digest{k}"},
    )


def test_lru_eviction_spares_pinned_and_just_saved(tmp_path, sun_avatar):
    probe = AvatarCache(tmp_path / "probe")
    probe.save(_variant(sun_avatar, 0))
    one = probe.total_bytes()
    cache = AvatarCache(tmp_path / "cache", max_bytes=int(one * 3.5))
    cache.pin_sources({"digest1"})
    ids = []
    for k in range(1, 4):
        ids.append(cache.save(_variant(sun_avatar, k)).name)
        time.sleep(0.02)
    assert [i.avatar_id for i in cache.list()] == ids
    cache.load(ids[1])  # used recently: now the least recently used unpinned one is ids[2]
    os.utime(cache.avatars_dir / ids[2] / "meta.json", (1, 1))
    new = cache.save(_variant(sun_avatar, 4)).name
    left = {i.avatar_id for i in cache.list()}
    assert left == {ids[0], ids[1], new}, "the least recently used visitor's avatar goes first"
    assert cache.total_bytes() <= cache.max_bytes
    # Even a limit nothing fits under keeps the pinned example and the avatar just saved.
    cache.max_bytes = 1
    newest = cache.save(_variant(sun_avatar, 5)).name
    assert {i.avatar_id for i in cache.list()} == {ids[0], newest}


def test_settings_cache_limit_reaches_the_engine(tmp_path):
    from workbench.engine import Engine

    engine = Engine(Settings(cache_dir=tmp_path / "c", cache_max_mb=150), renderer="cpu")
    assert engine.cache.max_bytes == 150_000_000
    assert Engine(Settings(cache_dir=tmp_path / "c", cache_max_mb=0), renderer="cpu").cache.max_bytes is None


# --- Space storage and examples ---------------------------------------------------------------------------
def test_persistent_data_volume_is_used_when_mounted(tmp_path, monkeypatch):
    assert persistent_root(tmp_path / "absent") is None
    data = tmp_path / "data"
    data.mkdir()
    assert persistent_root(data) == data
    monkeypatch.setattr("workbench.config.SPACE_DATA_DIR", data)
    for var in ("WORKBENCH_CACHE_DIR", "WORKBENCH_MODELS_DIR", "WORKBENCH_RUNS_DIR"):
        monkeypatch.delenv(var, raising=False)
    s = Settings(_env_file=None)
    assert s.cache_dir == data / "workbench" / "cache" and s.models_dir == data / "workbench" / "models"
    assert s.runs_dir == data / "workbench" / "runs"
    assert Settings(_env_file=None, cache_dir=tmp_path / "mine").cache_dir == tmp_path / "mine"
    monkeypatch.setattr("workbench.config.SPACE_DATA_DIR", tmp_path / "absent")
    assert Settings(_env_file=None).cache_dir == Path("cache")


def test_bundled_examples_are_small_and_loadable():
    names = {p.name for p in EXAMPLES_DIR.iterdir()}
    assert {"yongen.mp4", "sun.mp4", "speech_en.ogg", "speech_zh.ogg", "README.md"} <= names
    total = sum(p.stat().st_size for p in EXAMPLES_DIR.iterdir())
    assert total < 6_000_000, f"examples/ is {total / 1e6:.1f} MB; keep the repository light"
    for name in ("speech_en.ogg", "speech_zh.ogg", "sun_speech.ogg"):
        audio = load_audio(EXAMPLES_DIR / name)
        assert len(audio) > 5 * 16_000 and float(np.sqrt(np.mean(audio**2))) > 0.01, name
    assert "MIT" in (EXAMPLES_DIR / "README.md").read_text()


def test_library_falls_back_to_the_examples(tmp_path):
    class Eng:
        class settings:
            cache_dir = tmp_path / "cache"

        cache = AvatarCache(tmp_path / "cache")

    assert find_samples_dir(tmp_path / "nowhere") in (
        EXAMPLES_DIR,
        EXAMPLES_DIR.parents[1] / "shared" / "samples",
    )
    lib = Library(Eng(), samples_dir=None)
    assert lib.default_example() == EXAMPLES_DIR / DEFAULT_EXAMPLE
    assert lib.sample_digests() and set(lib.sample_digests()) <= Eng.cache._pinned
    assert Library(Eng(), samples_dir=None, examples_dir=None).default_example() is None


# --- the example avatar on start ----------------------------------------------------------------------
class _FakeEngine:
    def __init__(self, fail: bool = False):
        self.fail, self.calls = fail, []

    def prepare(self, source, params, progress=None):
        self.calls.append((Path(source).name, params))
        progress(0.5, "detecting faces")
        if self.fail:
            raise RuntimeError("no disk left")

        class A:
            avatar_id = "abc"

            def __len__(self):
                return 100

        return A()


def test_warmup_prepares_the_example_and_reports(tmp_path):
    engine = _FakeEngine()
    warm = ExampleWarmup(engine, EXAMPLES_DIR / DEFAULT_EXAMPLE)
    assert warm.state().busy and warm.state().status == "waiting"
    html = header.header_html("cpu", _weights(tmp_path), False, warm.state())
    assert "Example avatar" in html and "preparing 0%" in html
    state = warm.start().wait(10)
    assert state.status == "ready" and state.avatar_id == "abc" and not state.busy
    assert engine.calls == [("yongen.mp4", PrepParams(max_frames=100))]
    assert "press Connect" in header.header_html("cpu", _weights(tmp_path), False, state)
    failed = ExampleWarmup(_FakeEngine(fail=True), EXAMPLES_DIR / DEFAULT_EXAMPLE).start().wait(10)
    assert failed.status == "failed" and "no disk left" in failed.message
    assert "could not be prepared" in header.header_html("cpu", _weights(tmp_path), False, failed)


def _weights(tmp_path):
    from workbench import weights

    return weights.check(tmp_path / "models")


def test_dropdowns_prefer_the_example_avatar(tmp_path):
    from workbench.ui.context import UIContext, dropdown_update
    from workbench.ui.session_state import new_session

    class Info:
        def __init__(self, i):
            self.avatar_id, self.source, self.n_frames, self.params = i, f"{i}.mp4", 10, {}

    class Lib:
        def visible(self, ids):
            return [Info("bbbbbbbb-1"), Info("aaaaaaaa-2")]

    ctx = UIContext(engine=None, library=Lib(), settings=Settings(), preferred_avatar=lambda: "aaaaaaaa-2")
    assert dropdown_update(ctx, new_session())["value"] == "aaaaaaaa-2"
    assert dropdown_update(ctx, replace(new_session(), current="bbbbbbbb-1"))["value"] == "bbbbbbbb-1"
    ctx.preferred_avatar = lambda: None
    assert dropdown_update(ctx, new_session())["value"] == "bbbbbbbb-1"
