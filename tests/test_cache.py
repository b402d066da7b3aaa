"""The avatar cache: reuse, detection reuse across parameters, atomic saves, list and delete."""

from __future__ import annotations

import numpy as np
import pytest

import workbench.avatars.store as cache_mod
from workbench.avatars.frames import PACK_NAME
from workbench.avatars.model import PrepParams
from workbench.avatars.pipeline import avatar_id_for, prepare_avatar
from workbench.avatars.store import AvatarCache, AvatarNotFoundError
from workbench.faces.landmarks import LandmarkDetector

N = 6
MIN_PSNR_DB = 40.0  # stored frames are JPEG q95 4:4:4: visually lossless, measured ~47 dB on the examples


def assert_visually_lossless(stored, original) -> None:
    import cv2

    assert stored.shape == original.shape
    for i in range(len(original)):
        assert cv2.PSNR(np.asarray(stored[i]), np.asarray(original[i])) > MIN_PSNR_DB, f"frame {i}"


class CountingDetector(LandmarkDetector):
    """The real dlib detector, counting how many frames it was asked about."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.name = inner.name

    @property
    def identity(self):
        return self.inner.identity

    def detect(self, frame_bgr):
        self.calls += 1
        return self.inner.detect(frame_bgr)


@pytest.fixture
def counting(dlib_detector):
    return CountingDetector(dlib_detector)


def test_second_preparation_reuses_everything(tmp_cache, examples_dir, counting):
    src = examples_dir / "sun.mp4"
    first = prepare_avatar(src, PrepParams(max_frames=N), counting, store=tmp_cache)
    assert counting.calls == N
    again = prepare_avatar(src, PrepParams(max_frames=N), counting, store=tmp_cache)
    assert counting.calls == N, "a cached avatar must not run the detector"
    assert again.avatar_id == first.avatar_id
    for name in ("boxes", "landmarks", "has_face", "crops", "masks"):
        assert np.array_equal(getattr(again, name), getattr(first, name)), name
    assert_visually_lossless(again.frames, first.frames)
    assert again.params == first.params and again.bbox_range == first.bbox_range
    # a fresh cache object on the same folder finds it on disk
    assert AvatarCache(tmp_cache.root).load(first.avatar_id).avatar_id == first.avatar_id


def test_new_bbox_shift_runs_no_detection(tmp_cache, examples_dir, counting):
    src = examples_dir / "sun.mp4"
    a = prepare_avatar(src, PrepParams(max_frames=N), counting, store=tmp_cache)
    b = prepare_avatar(src, PrepParams(max_frames=N, bbox_shift=7), counting, store=tmp_cache)
    c = prepare_avatar(src, PrepParams(max_frames=N, parsing_mode="raw"), counting, store=tmp_cache)
    assert counting.calls == N, "only the first preparation may detect"
    assert len({a.avatar_id, b.avatar_id, c.avatar_id}) == 3
    assert np.array_equal(b.boxes[:, 1], a.boxes[:, 1] + 14)
    assert not np.array_equal(a.masks, c.masks)
    # the frames are stored once and hard-linked
    fa = tmp_cache.avatars_dir / a.avatar_id / PACK_NAME
    fb = tmp_cache.avatars_dir / b.avatar_id / PACK_NAME
    assert fa.stat().st_ino == fb.stat().st_ino
    # another frame cap is another detection
    prepare_avatar(src, PrepParams(max_frames=N - 2), counting, store=tmp_cache)
    assert counting.calls == N + N - 2


def test_key_covers_models_and_content(tmp_cache, examples_dir, counting, tmp_path):
    src = examples_dir / "sun.mp4"

    class Enc:
        def __init__(self, identity):
            self.identity = identity

        def __call__(self, crops):
            return np.zeros((len(crops), 8, 32, 32), np.float32)

    p = PrepParams(max_frames=N)
    ids = {
        avatar_id_for(tmp_cache.digest(src), p, counting),
        avatar_id_for(tmp_cache.digest(src), p, counting, Enc("vae-a")),
        avatar_id_for(tmp_cache.digest(src), p, counting, Enc("vae-b")),
    }
    assert len(ids) == 3
    copy = tmp_path / "renamed.mp4"
    copy.write_bytes(src.read_bytes())
    assert avatar_id_for(tmp_cache.digest(copy), p, counting) == avatar_id_for(tmp_cache.digest(src), p, counting), (
        "content, not name"
    )
    with_latents = prepare_avatar(src, PrepParams(max_frames=2), counting, vae_encoder=Enc("vae-a"), store=tmp_cache)
    loaded = tmp_cache.load(with_latents.avatar_id)
    assert loaded.latents.shape == (2, 8, 32, 32)


def test_interrupted_preparation_leaves_no_half_cache(tmp_cache, examples_dir, counting, monkeypatch):
    src = examples_dir / "sun.mp4"
    real_save = np.save

    def failing_save(path, arr, *a, **kw):
        if str(path).endswith("masks.npy"):
            raise OSError("disk full")
        return real_save(path, arr, *a, **kw)

    monkeypatch.setattr(cache_mod.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        prepare_avatar(src, PrepParams(max_frames=3), counting, store=tmp_cache)
    monkeypatch.setattr(cache_mod.np, "save", real_save)
    assert tmp_cache.list() == []
    assert [p.name for p in tmp_cache.avatars_dir.iterdir()] == [], "no temporary folder may remain"

    def broken_vae(crops):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        prepare_avatar(src, PrepParams(max_frames=3), counting, vae_encoder=broken_vae, store=tmp_cache)
    assert tmp_cache.list() == []
    # the detections were complete and kept; the retry detects nothing and succeeds
    calls = counting.calls
    ok = prepare_avatar(src, PrepParams(max_frames=3), counting, store=tmp_cache)
    assert counting.calls == calls and len(ok) == 3


def test_list_and_delete(tmp_cache, examples_dir, counting):
    src = examples_dir / "sun.mp4"
    a = prepare_avatar(src, PrepParams(max_frames=3), counting, store=tmp_cache)
    b = prepare_avatar(src, PrepParams(max_frames=3, bbox_shift=-4), counting, store=tmp_cache)
    infos = tmp_cache.list()
    assert [i.avatar_id for i in infos] == [a.avatar_id, b.avatar_id]
    info = infos[1]
    assert (info.source, info.n_frames, info.params["bbox_shift"]) == ("sun.mp4", 3, -4)
    assert info.bbox_range == a.bbox_range and info.frame_size == (768, 576) and info.fps == 25
    assert info.size_bytes > a.crops.nbytes + a.masks.nbytes and info.created and not info.has_latents
    assert info.size_bytes < a.frames.nbytes, "the full frames are stored compressed"
    assert info.mask_kind == "landmarks"
    tmp_cache.delete(a.avatar_id)
    assert [i.avatar_id for i in tmp_cache.list()] == [b.avatar_id]
    assert tmp_cache.load(b.avatar_id).frames.shape == (3, 768, 576, 3)  # its hard-linked frames survive
    with pytest.raises(AvatarNotFoundError):
        tmp_cache.load(a.avatar_id)
    with pytest.raises(AvatarNotFoundError):
        tmp_cache.delete(a.avatar_id)
    with pytest.raises(AvatarNotFoundError, match="not an avatar id"):
        tmp_cache.load("../../etc")


def test_loaded_frames_are_read_only(tmp_cache, examples_dir, counting):
    a = prepare_avatar(examples_dir / "sun.mp4", PrepParams(max_frames=2), counting, store=tmp_cache)
    loaded = tmp_cache.load(a.avatar_id)
    with pytest.raises(ValueError):
        loaded.frames[0, 0, 0, 0] = 1
    assert_visually_lossless(tmp_cache.load(a.avatar_id, mmap=False).frames, a.frames)


def test_no_face_is_not_cached(tmp_cache, counting):
    frames = np.full((3, 64, 64, 3), 90, np.uint8)
    from workbench.avatars.pipeline import NoFaceError

    with pytest.raises(NoFaceError):
        prepare_avatar(frames, PrepParams(), counting, store=tmp_cache)
    assert tmp_cache.list() == []
