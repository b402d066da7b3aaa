"""Limits before preparation: a working resolution, a memory estimate with a clear refusal, truncated files."""

from __future__ import annotations

import shutil
import subprocess
import warnings

import cv2
import numpy as np
import pytest

from workbench.avatars.pipeline import PreparationError, check_memory
from workbench.media import MediaWarning, estimate_prepare_bytes, read_frames, read_video, working_size


def test_working_size_keeps_the_aspect_and_never_upscales():
    assert working_size(8000, 8000, 1920) == (1920, 1920)
    assert working_size(3840, 2160, 1920) == (1920, 1080)
    assert working_size(640, 480, 1920) == (640, 480)
    assert working_size(640, 480, None) == (640, 480)


def test_a_huge_photo_is_downscaled_with_a_note(tmp_path):
    path = tmp_path / "huge.jpg"
    cv2.imwrite(str(path), np.full((3000, 2400, 3), 128, np.uint8))
    with pytest.warns(MediaWarning, match="3000.*1000x800|2400x3000.*800x1000"):
        frames, _ = read_frames(path, max_side=1000)
    assert frames.shape == (1, 1000, 800, 3)


def _video(path, n=75, size=(320, 240), faststart=False):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size[0]}x{size[1]}:rate=25:duration={n / 25}",
    ]
    cmd += ["-pix_fmt", "yuv420p", "-c:v", "libx264", "-g", "5"] + (["-movflags", "+faststart"] if faststart else [])
    subprocess.run(cmd + [str(path)], check=True)
    return path


def test_a_video_is_downscaled_while_decoding(tmp_path):
    path = _video(tmp_path / "big.mp4", n=10, size=(640, 480))
    with pytest.warns(MediaWarning, match="640x480"):
        frames, _ = read_video(path, max_side=320)
    assert frames.shape == (10, 240, 320, 3)


def test_a_truncated_mp4_says_how_many_frames_it_kept(tmp_path):
    path = _video(tmp_path / "clip.mp4", faststart=True)  # the index first, as a web-optimised file has it
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole file: no warning
        full, _ = read_video(path)
    assert len(full) == 75
    with pytest.warns(MediaWarning, match=r"announces 75 frames but only \d+ could be decoded"):
        frames, _ = read_video(cut)
    assert 0 < len(frames) < 75


def test_preparation_that_would_not_fit_in_memory_is_refused_with_the_numbers(tmp_path):
    path = _video(tmp_path / "long.mp4", n=50, size=(640, 480))
    est = estimate_prepare_bytes(path)
    assert est["frames"] == 50 and (est["width"], est["height"]) == (640, 480)
    assert 50 * 640 * 480 * 3 <= est["bytes"] <= 2 * 50 * 640 * 480 * 3
    with pytest.raises(PreparationError, match=r"about .* GB of memory \(50 frames of 640x480\).*max_frames"):
        check_memory(path, est, limit_bytes=10 * 2**20)
    assert check_memory(path, est, limit_bytes=2**30) is est
