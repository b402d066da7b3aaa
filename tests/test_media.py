"""Reading sources and audio, writing the mp4, and refusing bad media with MediaError."""

from __future__ import annotations

import json
import subprocess

import cv2
import numpy as np
import pytest
import soundfile as sf

from workbench.config import FPS, SAMPLE_RATE
from workbench.media import (
    MediaError,
    check_upload,
    is_silent,
    kind_of,
    load_audio,
    probe,
    read_frames,
    read_frames_folder,
    read_image,
    read_video,
    source_digest,
    write_video,
)


def ffprobe_streams(path) -> dict:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,codec_type,width,height,pix_fmt,avg_frame_rate:format=duration",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def counter_frames(n: int, h: int = 64, w: int = 96) -> list[np.ndarray]:
    """Frames whose brightness encodes their index, so order and resampling can be read back."""
    return [np.full((h, w, 3), 5 * i + 10, dtype=np.uint8) for i in range(n)]


# --- video, photo, folder -------------------------------------------------------------------
def test_read_video_at_25fps(samples_dir):
    frames, fps = read_video(samples_dir / "yongen.mp4", max_frames=10)
    assert frames.shape == (10, 1216, 704, 3) and frames.dtype == np.uint8
    assert fps == FPS
    cap = cv2.VideoCapture(str(samples_dir / "yongen.mp4"))
    try:
        assert all(np.array_equal(frames[i], cap.read()[1]) for i in range(10))
    finally:
        cap.release()


def test_video_at_another_rate_is_resampled_to_25fps(tmp_path, ffmpeg):
    src = tmp_path / "thirty.mp4"
    write_video(src, counter_frames(45), fps=30)  # 1.5 s
    assert probe(src).fps == pytest.approx(30)
    frames, fps = read_video(src)
    assert fps == FPS
    # 1.5 s at 25 fps is 37.5 slots; constant-rate conversion by timestamp (ffmpeg -r 25, as the reference) also
    # fills the last source frame's duration, so 38-39 frames.
    assert 37 <= len(frames) <= 39
    levels = frames[:, 32, 48, 1].astype(int)
    assert np.all(np.diff(levels) >= 0), "resampled frames must stay in time order"
    assert levels[-1] > levels[0]
    capped, _ = read_video(src, max_frames=7)
    assert len(capped) == 7


def _variable_rate_clip(path, ffmpeg) -> None:
    """A 20-frame lossless clip whose frame n has brightness 12 n and irregular timestamps (in 1/25 s units):
    n for n < 5, then a two-frame gap (n + 2), then from n = 10 frames half a slot apart (7 + n / 2)."""
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "color=c=black:s=64x48:r=25:d=0.8,format=gray,geq=lum='N*12'",
            "-vf",
            "setpts='if(lt(N,5),N,if(lt(N,10),N+2,7+N/2))/25/TB',format=yuv420p",
            "-vsync",
            "vfr",
            "-c:v",
            "ffv1",
            str(path),
        ],
        check=True,
        capture_output=True,
    )


def test_variable_frame_rate_is_read_by_timestamp_as_the_reference_does(tmp_path, ffmpeg):
    """Frame k is what plays at k / 25 s: duplicated into gaps, dropped where frames crowd, exactly as
    syncnet_python's `ffmpeg -i in -r 25 video.avi` then `ffmpeg -i video.avi %06d.jpg` sequence them."""
    src = tmp_path / "vfr.mkv"
    _variable_rate_clip(src, ffmpeg)
    frames, fps = read_video(src)
    ids = np.round(frames[:, 24, 32, 1] / 12.0).astype(int)
    # In container order this would be 0..19 (20 frames); by timestamp the clip spans 18 slots of 1/25 s.
    assert len(frames) == 18
    assert ids[:5].tolist() == [0, 1, 2, 3, 4]
    assert ids.tolist().count(4) + ids.tolist().count(5) == 4  # the two-slot gap is filled by duplicates
    assert len(set(ids.tolist())) < 20 and ids[-1] == 18  # crowded frames are dropped, not queued behind
    assert np.all(np.diff(ids) >= 0)

    # The reference's own two steps, lossy (mpeg4 q2, then JPEG), read back the same frame sequence.
    avi, jpg_dir = tmp_path / "video.avi", tmp_path / "jpg"
    jpg_dir.mkdir()
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-i", str(src), "-qscale:v", "2", "-async", "1", "-r", "25", str(avi)], check=True
    )
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-i",
            str(avi),
            "-qscale:v",
            "2",
            "-threads",
            "1",
            "-f",
            "image2",
            str(jpg_dir / "%06d.jpg"),
        ],
        check=True,
    )
    ref = [cv2.imread(str(f)) for f in sorted(jpg_dir.glob("*.jpg"))]
    ref_ids = [int(round(f[24, 32, 1] / 12.0)) for f in ref]
    assert ids.tolist() == ref_ids


def test_read_image_and_dispatch(tmp_path, samples_dir):
    frames, _ = read_video(samples_dir / "sun.mp4", max_frames=1)
    cv2.imwrite(str(tmp_path / "face.png"), frames[0])
    img = read_image(tmp_path / "face.png")
    assert img.shape == (1, 768, 576, 3)
    assert np.array_equal(img[0], frames[0])  # png is lossless
    assert kind_of(tmp_path / "face.png") == "image"
    assert kind_of(tmp_path) == "folder"
    assert kind_of(samples_dir / "sun.mp4") == "video"
    one, fps = read_frames(tmp_path / "face.png")
    assert one.shape[0] == 1 and fps == FPS


def test_folder_is_read_in_natural_order(tmp_path):
    frames = counter_frames(12)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i}.png"), f)  # 0.png … 11.png: "10" must come after "9"
    (tmp_path / "notes.txt").write_text("not a frame")
    got = read_frames_folder(tmp_path)
    assert np.array_equal(got[:, 0, 0, 0], np.array([f[0, 0, 0] for f in frames]))
    assert len(read_frames_folder(tmp_path, max_frames=5)) == 5


def test_folder_with_mixed_sizes_or_no_images_is_refused(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((10, 10, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((12, 10, 3), np.uint8))
    with pytest.raises(MediaError, match="same size"):
        read_frames_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MediaError, match="no image files"):
        read_frames_folder(empty)


@pytest.mark.parametrize("name", ["broken.mp4", "broken.png", "broken.wav"])
def test_corrupt_files_raise_media_error(tmp_path, name, ffmpeg):
    p = tmp_path / name
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError):
        if name.endswith(".wav"):
            load_audio(p)
        else:
            read_frames(p)


def test_missing_empty_and_unsupported_files(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        read_frames(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "doc.pdf").write_bytes(b"%PDF")
    with pytest.raises(MediaError, match="unsupported"):
        read_frames(tmp_path / "doc.pdf")


def test_source_digest_follows_content(tmp_path):
    a = tmp_path / "a.png"
    cv2.imwrite(str(a), np.zeros((8, 8, 3), np.uint8))
    d1 = source_digest(a)
    cv2.imwrite(str(a), np.ones((8, 8, 3), np.uint8))
    assert source_digest(a) != d1
    assert source_digest(np.zeros((2, 4, 4, 3), np.uint8)) != source_digest(np.zeros((2, 4, 4, 3), np.uint16))


# --- audio ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "seconds"), [("yongen.wav", None), ("sun.wav", None), ("eng.wav", None)])
def test_load_audio_any_rate_and_channels(samples_dir, name, seconds):
    info = sf.info(str(samples_dir / name))
    audio = load_audio(samples_dir / name)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == pytest.approx(info.duration * SAMPLE_RATE, abs=SAMPLE_RATE * 0.01)
    assert not is_silent(audio)


def test_load_audio_from_array_pair():
    sr = 22_050
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1)  # (samples, channels) int16
    audio = load_audio((stereo, sr))
    assert audio.dtype == np.float32 and len(audio) == SAMPLE_RATE
    assert np.abs(audio).max() == pytest.approx(0.5, abs=0.02)
    # (channels, samples) is accepted as well
    assert np.allclose(load_audio((stereo.T, sr)), audio)
    with pytest.raises(MediaError, match="sample rate"):
        load_audio((stereo, 0))
    with pytest.raises(MediaError, match="no samples"):
        load_audio((np.zeros(0, np.float32), SAMPLE_RATE))
    with pytest.raises(MediaError, match="NaN"):
        load_audio((np.array([0.0, np.nan], np.float32), SAMPLE_RATE))


def test_audio_track_of_a_video(samples_dir, ffmpeg):
    audio = load_audio(samples_dir / "syncnet_example.avi")
    assert len(audio) == pytest.approx(5.4 * SAMPLE_RATE, rel=0.05)
    with pytest.raises(MediaError, match="no audio track"):
        load_audio(samples_dir / "yongen.mp4")


def test_silence_is_reported_not_refused(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(str(p), np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    audio = load_audio(p)
    assert len(audio) == SAMPLE_RATE and is_silent(audio)
    assert is_silent(np.full(100, 1e-4, np.float32)) and not is_silent(np.full(100, 0.1, np.float32))
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    sf.write(str(tmp_path / "zero.wav"), np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(MediaError):
        load_audio(tmp_path / "zero.wav")


# --- writing --------------------------------------------------------------------------------
def test_write_video_is_playable_h264_with_aac(tmp_path, ffmpeg):
    n = 30
    frames = (f for f in counter_frames(n, h=75, w=101))  # odd size, from a generator
    audio = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE * 2) / SAMPLE_RATE)).astype(np.float32)
    out = write_video(tmp_path / "out" / "clip.mp4", frames, FPS, audio16k=audio)
    info = ffprobe_streams(out)
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    a = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert (v["codec_name"], v["pix_fmt"], v["width"], v["height"]) == ("h264", "yuv420p", 102, 76)
    assert a["codec_name"] == "aac"
    assert float(info["format"]["duration"]) == pytest.approx(n / FPS, abs=0.1)
    back, _ = read_video(out)
    assert len(back) == n
    assert list(tmp_path.joinpath("out").iterdir()) == [out], "no temporary files may be left behind"
    heard = load_audio(out)
    assert len(heard) == pytest.approx(n / FPS * SAMPLE_RATE, rel=0.05) and not is_silent(heard)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_take_the_umask_like_any_new_file(tmp_path, ffmpeg, umask):
    """A rendered mp4 (and a report written atomically) gets 0666 less the umask, not mkstemp's 0600."""
    import os
    import stat

    from workbench.atomic import write_text

    old = os.umask(umask)
    try:
        out = write_video(tmp_path / "clip.mp4", counter_frames(5, h=32, w=32), FPS)
        write_text(tmp_path / "report.md", "hello")
    finally:
        os.umask(old)
    for f in (out, tmp_path / "report.md"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, (f, oct(f.stat().st_mode))


def test_write_video_leaves_nothing_when_frames_fail(tmp_path, ffmpeg):
    def frames():
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_video(tmp_path / "x.mp4", frames())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MediaError, match="no frames"):
        write_video(tmp_path / "y.mp4", [])
    with pytest.raises(MediaError, match="uint8"):
        write_video(tmp_path / "z.mp4", [np.zeros((16, 16, 3), np.float32)])
    assert list(tmp_path.iterdir()) == []


def test_check_upload_limits(samples_dir, ffmpeg):
    info = check_upload(samples_dir / "sun.mp4", max_mb=10, max_seconds=60)
    assert info.duration == pytest.approx(22, abs=0.5) and info.has_video
    with pytest.raises(MediaError, match="limit is 1 MB"):
        check_upload(samples_dir / "sun.mp4", max_mb=1)
    with pytest.raises(MediaError, match="limit is 5 s"):
        check_upload(samples_dir / "sun.mp4", max_mb=10, max_seconds=5)
    assert check_upload(samples_dir / "eng.wav", max_mb=10, max_seconds=61).has_audio


def test_audio_libraries_are_set_up_before_threads_start():
    """numba's one-time set-up walks builtins; a pybind11 import on another thread during it killed app start-up.
    `init_audio_libraries` runs it on the calling thread (a fresh process, so nothing ran it before)."""
    import sys
    from pathlib import Path

    code = (
        "from numba.core import base\n"
        "from workbench.media import init_audio_libraries\n"
        "assert not base._load_global_helpers._ran\n"
        "init_audio_libraries()\n"
        "assert base._load_global_helpers._ran, 'numba set-up did not run'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1], timeout=120)
