"""Reading and writing media: videos, photos, frame folders, audio, and the finished mp4.

Everything leaves here in the model's terms: BGR uint8 frames at 25 fps and float32 16 kHz mono audio.
ffmpeg (a subprocess, never a shell) does the resampling and the H.264/AAC encoding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from workbench.atomic import mkstemp_beside
from workbench.config import CROP_SIZE, FPS, SAMPLE_RATE

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".flv", ".m4v", ".mpg", ".mpeg"})
SILENCE_DBFS = -50.0  # RMS below this is "silent": no speech for a lip-sync model to follow
# A container that says it holds N frames but decodes fewer than this share of them is reported as truncated.
TRUNCATED_SHARE = 0.9


class MediaWarning(UserWarning):
    """Something the user should hear about that does not stop the work (truncated file, downscaled source)."""


def working_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most `max_side` pixels (even sizes; never upscaled)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _note_downscale(name: str, w: int, h: int, size: tuple[int, int]) -> None:
    if size != (w, h):
        warnings.warn(
            MediaWarning(
                f"{name} is {w}x{h}; it is prepared at {size[0]}x{size[1]} (longer side limited to "
                f"{max(size)} px, WORKBENCH_MAX_SOURCE_SIDE)"
            ),
            stacklevel=3,
        )


def _fit(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (img.shape[1], img.shape[0]) == size:
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


class MediaError(ValueError):
    """A media file is missing, unreadable, empty, corrupt or over the upload limits."""


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    size_bytes: int
    duration: float | None  # seconds; None for a still image
    fps: float | None
    width: int | None
    height: int | None
    has_video: bool
    has_audio: bool


# --- helpers ------------------------------------------------------------------------------
def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise MediaError("ffmpeg is not installed (apt-get install ffmpeg); it is needed to resample and encode video")
    return exe


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError(f"file not found: {p}")
    return p


def _natural_key(name: str) -> list:
    """Sort frame files as a person would: 2.png before 10.png."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def kind_of(path: str | Path) -> str:
    """'video', 'image' or 'folder' for a preparation source; MediaError for anything else."""
    p = _existing(path)
    if p.is_dir():
        return "folder"
    ext = p.suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    raise MediaError(
        f"unsupported file type {ext!r} for {p.name}: use a video ({', '.join(sorted(VIDEO_EXTS))}), "
        f"a photo ({', '.join(sorted(IMAGE_EXTS))}) or a folder of frames"
    )


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a frames folder in natural order."""
    folder = _existing(folder)
    files = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS]
    return sorted(files, key=lambda f: _natural_key(f.name))


def source_digest(source: str | Path | np.ndarray) -> str:
    """sha256 of what a preparation source contains: file bytes, a frames folder's names and bytes, or an array."""
    h = hashlib.sha256()
    if isinstance(source, np.ndarray):
        a = np.ascontiguousarray(source)
        h.update(f"array:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
        return h.hexdigest()
    p = _existing(source)
    files = frame_files(p) if p.is_dir() else [p]
    if p.is_dir():
        h.update(b"folder")
    for f in files:
        if p.is_dir():
            h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# --- probing ------------------------------------------------------------------------------
def _fraction(s: str | None) -> float | None:
    if not s or s in ("0/0", "N/A"):
        return None
    if "/" in s:
        a, b = s.split("/", 1)
        return float(a) / float(b) if float(b) else None
    return float(s)


def probe(path: str | Path) -> MediaInfo:
    """Size, duration, fps and streams of a media file (ffprobe; OpenCV for images)."""
    p = _existing(path)
    size = p.stat().st_size
    if size == 0:
        raise MediaError(f"{p.name} is empty (0 bytes)")
    if p.suffix.lower() in IMAGE_EXTS:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise MediaError(f"{p.name} is not a readable image")
        return MediaInfo(p, size, None, None, img.shape[1], img.shape[0], True, False)
    exe = shutil.which("ffprobe")
    if exe is None:
        raise MediaError("ffprobe is not installed (apt-get install ffmpeg)")
    cmd = [
        exe,
        "-v",
        "error",
        "-show_entries",
        "format=duration:stream=codec_type,width,height,avg_frame_rate,r_frame_rate,duration",
        "-of",
        "json",
        str(p),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise MediaError(f"{p.name} is not a readable media file: {res.stderr.strip()[:300]}")
    info = json.loads(res.stdout or "{}")
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    if video is None and not has_audio:
        raise MediaError(f"{p.name} has no video or audio stream")
    duration = _fraction(info.get("format", {}).get("duration"))
    if duration is None:
        durations = [_fraction(s.get("duration")) for s in streams]
        duration = max((d for d in durations if d), default=None)
    fps = None
    if video is not None:
        fps = _fraction(video.get("avg_frame_rate")) or _fraction(video.get("r_frame_rate"))
    return MediaInfo(
        p,
        size,
        duration,
        fps,
        int(video["width"]) if video and "width" in video else None,
        int(video["height"]) if video and "height" in video else None,
        video is not None,
        has_audio,
    )


def check_upload(path: str | Path, max_mb: float, max_seconds: float | None = None) -> MediaInfo:
    """Refuse an upload that is too big or too long, with a message a user can act on."""
    p = _existing(path)
    size_mb = p.stat().st_size / (1024 * 1024)
    if size_mb > max_mb:
        raise MediaError(f"{p.name} is {size_mb:.1f} MB; the limit is {max_mb:g} MB")
    if p.is_dir():
        raise MediaError(f"{p.name} is a folder, not an uploaded file")
    info = probe(p)
    if max_seconds is not None and info.duration is not None and info.duration > max_seconds:
        raise MediaError(f"{p.name} is {info.duration:.1f} s long; the limit is {max_seconds:g} s")
    return info


# --- reading frames -----------------------------------------------------------------------
def read_image(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """One photo as a (1, H, W, 3) uint8 BGR stack, its longer side at most `max_side`."""
    p = _existing(path)
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f"{p.name} is not a readable image")
    size = working_size(img.shape[1], img.shape[0], max_side)
    _note_downscale(p.name, img.shape[1], img.shape[0], size)
    return _fit(img, size)[None]


def read_frames_folder(folder: str | Path, max_frames: int | None = None, max_side: int | None = None) -> np.ndarray:
    """A folder of frames (natural order) as (N, H, W, 3) uint8 BGR; every frame must have the same size."""
    files = frame_files(folder)
    if not files:
        raise MediaError(f"no image files in folder {folder}")
    if max_frames is not None:
        files = files[:max_frames]
    frames = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise MediaError(f"{f.name} in {folder} is not a readable image")
        if frames and img.shape != frames[0].shape:
            raise MediaError(
                f"{f.name} is {img.shape[1]}x{img.shape[0]} but the first frame is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}; every frame must have the same size"
            )
        frames.append(img)
    size = working_size(frames[0].shape[1], frames[0].shape[0], max_side)
    _note_downscale(Path(folder).name, frames[0].shape[1], frames[0].shape[0], size)
    return np.stack([_fit(f, size) for f in frames])


class _FrameStack:
    """Frames gathered into one preallocated (N, H, W, 3) array, so a long clip is not held twice."""

    def __init__(self, expected: int, shape: tuple[int, ...]):
        self.data = np.empty((max(1, expected),) + tuple(shape), dtype=np.uint8)
        self.n = 0

    def slot(self) -> np.ndarray:
        if self.n == len(self.data):  # the container under-reported its length: grow by half
            grown = np.empty((len(self.data) + len(self.data) // 2 + 1,) + self.data.shape[1:], dtype=np.uint8)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.n += 1
        return self.data[self.n - 1]

    def result(self) -> np.ndarray:
        # A copy only when much was over-allocated; otherwise a view of the one buffer.
        return self.data[: self.n].copy() if self.n < 0.9 * len(self.data) else self.data[: self.n]


def _read_ffmpeg(
    path: Path,
    fps: float,
    first: np.ndarray,
    expected: int,
    max_frames: int | None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode at a constant `fps` by timestamp, as syncnet_python's `ffmpeg -i in -r 25 video.avi` does.

    `-vsync cfr` with an output rate puts every output frame k at k / fps seconds from the file's start and fills
    it with the source frame showing at that moment: frames are duplicated into timestamp gaps (a dropped frame, a
    phone's variable frame rate, a video stream that starts after the audio) and dropped where frames come closer
    than 1 / fps. Reading frames in container order instead would let the video drift against the audio by every
    gap. The size is forced to what OpenCV decoded (so rotation agrees), or to `size`, the working size: a
    downscaled source is never held at full size.
    """
    width, height = size or (first.shape[1], first.shape[0])
    cmd = [
        _ffmpeg(),
        "-v",
        "error",
        "-nostdin",
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-vf",
        f"scale={width}:{height}",
        "-vsync",
        "cfr",
        "-r",
        f"{fps}",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
    ]
    if max_frames is not None:
        cmd += ["-frames:v", str(max_frames)]
    cmd.append("pipe:1")
    stack = _FrameStack(expected, (height, width, 3))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            while True:
                out = stack.slot()
                got = proc.stdout.readinto(memoryview(out).cast("B"))
                if got != out.nbytes:
                    stack.n -= 1
                    break
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            raise MediaError(
                f"ffmpeg could not decode {path.name}: {err.read().decode(errors='replace').strip()[:300]}"
            )
    return stack.result()


def read_video(
    path: str | Path, max_frames: int | None = None, fps: float = FPS, max_side: int | None = None
) -> tuple[np.ndarray, float]:
    """A video as ((N, H, W, 3) uint8 BGR, fps): frame k is what the source shows at k / fps seconds.

    Always decoded through ffmpeg at a constant rate by timestamp (see `_read_ffmpeg`), also when the container
    claims `fps` already: a 25 fps file with a skipped timestamp or a variable-rate phone clip would otherwise be
    read frame by frame and drift against its audio. Downscaled while decoding so the longer side is at most
    `max_side`. A file that decodes to fewer frames than its container announces gets a `MediaWarning` (a
    truncated download or copy)."""
    p = _existing(path)
    if p.stat().st_size == 0:
        raise MediaError(f"{p.name} is empty (0 bytes)")
    cap = cv2.VideoCapture(str(p))
    opened = cap.isOpened()
    src_fps = cap.get(cv2.CAP_PROP_FPS) if opened else 0.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if opened else 0
    ok, first = cap.read() if opened else (False, None)
    cap.release()
    if not ok or first is None:
        raise MediaError(f"{p.name} is not a readable video (no frame could be decoded)")
    expected = int(count * fps / src_fps) + 2 if (count > 0 and src_fps) else 250
    announced = int(count * fps / src_fps) if (count > 0 and src_fps) else None
    if max_frames is not None:
        expected = min(expected, max_frames)
    size = working_size(first.shape[1], first.shape[0], max_side)
    _note_downscale(p.name, first.shape[1], first.shape[0], size)
    if not src_fps or abs(src_fps - fps) > 0.01:
        log.info("resampling %s from %.3f to %g fps", p.name, src_fps, fps)
    frames = _read_ffmpeg(p, fps, first, expected, max_frames, size)
    if len(frames) == 0:
        raise MediaError(f"{p.name} has no decodable frames")
    if announced:
        wanted = min(announced, max_frames) if max_frames is not None else announced
        if len(frames) < TRUNCATED_SHARE * wanted - 1:
            warnings.warn(
                MediaWarning(
                    f"{p.name} announces {announced} frames but only {len(frames)} could be decoded (the file looks "
                    f"truncated); only those {len(frames)} are used"
                ),
                stacklevel=2,
            )
    return frames, float(fps)


def read_frames(
    source: str | Path, max_frames: int | None = None, max_side: int | None = None
) -> tuple[np.ndarray, float]:
    """Any preparation source (video, photo, frames folder) as ((N, H, W, 3) uint8 BGR, fps), its longer side
    at most `max_side` pixels."""
    kind = kind_of(source)
    if kind == "video":
        return read_video(source, max_frames, max_side=max_side)
    if kind == "image":
        return read_image(source, max_side), float(FPS)
    return read_frames_folder(source, max_frames, max_side), float(FPS)


def estimate_prepare_bytes(source: str | Path, max_frames: int | None = None, max_side: int | None = None) -> dict:
    """What preparing `source` would hold in memory, from its header alone (nothing is decoded).

    The decoded frames at working size dominate (kept for the whole preparation and saved); per frame the
    preparation adds a 256x256 crop, its mask and latents (under 1 MB); decoding briefly holds one more frame.
    """
    kind = kind_of(source)
    if kind == "image":
        info = probe(source)
        n = 1
    elif kind == "video":
        info = probe(source)
        n = int(round((info.duration or 0.0) * FPS)) or 1
    else:
        files = frame_files(source)
        first = cv2.imread(str(files[0]), cv2.IMREAD_COLOR) if files else None
        if first is None:
            raise MediaError(f"no readable image files in folder {source}")
        info = MediaInfo(Path(source), 0, None, None, first.shape[1], first.shape[0], True, False)
        n = len(files)
    if max_frames is not None:
        n = min(n, max_frames)
    w0, h0 = info.width or 0, info.height or 0
    w, h = working_size(w0, h0, max_side)
    per_frame = w * h * 3 + CROP_SIZE * CROP_SIZE * (3 + 1 + 3) + 4 * 32 * 32 * 4
    return {
        "frames": n,
        "width": w,
        "height": h,
        "downscaled": (w, h) != (w0, h0),
        "bytes": n * per_frame + 2 * w0 * h0 * 3,  # + a full-size frame being decoded and one being scaled
    }


# --- audio --------------------------------------------------------------------------------
def _to_mono_float(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio)
    if a.dtype.kind in "iu":
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
    a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        # soundfile gives (samples, channels); accept (channels, samples) too when it is clearly that.
        if a.shape[0] <= 8 and a.shape[1] > a.shape[0]:
            a = a.T
        a = a.mean(axis=1)
    elif a.ndim != 1:
        raise MediaError(f"audio must be 1-D or 2-D (samples, channels), got shape {a.shape}")
    return a


def _decode_ffmpeg(path: Path, sr: int) -> np.ndarray:
    cmd = [
        _ffmpeg(),
        "-v",
        "error",
        "-nostdin",
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-ac",
        "1",
        "-ar",
        str(sr),
        "-f",
        "f32le",
        "pipe:1",
    ]
    res = subprocess.run(cmd, capture_output=True, timeout=600)
    if res.returncode != 0:
        msg = res.stderr.decode(errors="replace").strip()
        if "matches no streams" in msg:
            raise MediaError(f"{path.name} has no audio track")
        raise MediaError(f"{path.name} is not a readable audio file: {msg[:300]}")
    return np.frombuffer(res.stdout, dtype=np.float32).copy()


def init_audio_libraries() -> None:
    """Run librosa's one-time numba set-up on this thread; call it before a server starts its threads.

    numba's first compile walks `builtins.__dict__`, and the first pybind11 extension a process imports (ctranslate2,
    dlib) adds a key to it: if another thread imports one during that walk, the compile dies with "dictionary changed
    size during iteration". That killed `app.py` at start-up when the speech-preload thread imported faster-whisper
    while the UI was being built. Importing librosa's core compiles its jitted kernels, and numba's set-up runs once.
    """
    import librosa.core.audio  # noqa: F401


def load_audio(source: str | Path | tuple[np.ndarray, int], sr: int = SAMPLE_RATE) -> np.ndarray:
    """Audio from a file (any format ffmpeg reads, audio tracks of videos too) or an (array, rate) pair,
    as float32 mono at `sr` (16 kHz). Silence is returned, not refused: check it with `is_silent`."""
    import librosa

    if isinstance(source, tuple):
        array, rate = source
        if not rate or rate <= 0:
            raise MediaError(f"invalid sample rate {rate!r}")
        audio = _to_mono_float(array)
    else:
        p = _existing(source)
        if p.is_dir():
            raise MediaError(f"{p} is a folder, not an audio file")
        if p.stat().st_size == 0:
            raise MediaError(f"{p.name} is empty (0 bytes)")
        import soundfile as sf

        try:
            array, rate = sf.read(str(p), dtype="float32", always_2d=False)
            audio = _to_mono_float(array)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            # Not a format libsndfile knows (mp3 in old builds, m4a, a video's audio track): ffmpeg decodes it.
            audio, rate = _decode_ffmpeg(p, sr), sr
    if audio.size == 0:
        raise MediaError("the audio has no samples")
    if not np.all(np.isfinite(audio)):
        raise MediaError("the audio contains NaN or infinite samples")
    if rate != sr:
        audio = librosa.resample(audio, orig_sr=int(rate), target_sr=sr, res_type="soxr_hq")
    return np.ascontiguousarray(audio, dtype=np.float32)


def rms_dbfs(audio: np.ndarray) -> float:
    a = np.asarray(audio, dtype=np.float64)
    if a.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(a * a)))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def is_silent(audio: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """True when the whole clip's RMS level is below `threshold_dbfs`: nothing for the lips to follow."""
    return rms_dbfs(audio) < threshold_dbfs


# --- writing the mp4 ----------------------------------------------------------------------
def _tmp_beside(path: Path, suffix: str) -> Path:
    fd, tmp = mkstemp_beside(path.with_name(path.stem), suffix)  # the final file's mode, not mkstemp's 0600
    os.close(fd)
    return Path(tmp)


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, timeout=1800)
    if res.returncode != 0:
        raise MediaError(f"ffmpeg failed to {what}: {res.stderr.decode(errors='replace').strip()[-500:]}")


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float = FPS,
    audio16k: np.ndarray | None = None,
    crf: int = 18,
) -> Path:
    """Write BGR frames as a playable H.264 mp4 (yuv420p, even size) with the 16 kHz audio muxed as AAC.

    Frames may come from a generator; they are piped to ffmpeg as they arrive. The audio is cut or
    padded with silence to the video's length so players and sync metrics see one duration.
    The file appears at `path` only when complete.
    """
    import soundfile as sf

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    exe = _ffmpeg()
    video_tmp = _tmp_beside(out, ".video.mp4")
    final_tmp: Path | None = None
    proc: subprocess.Popen | None = None
    n = 0
    size: tuple[int, int] | None = None
    stderr_file = tempfile.TemporaryFile()
    try:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise MediaError(f"frames must be (H, W, 3) uint8 BGR, got {frame.shape} {frame.dtype}")
            if proc is None:
                size = (frame.shape[1], frame.shape[0])
                # yuv420p needs even sides; pad the odd edge by one replicated pixel rather than rescale.
                cmd = [
                    exe,
                    "-y",
                    "-v",
                    "error",
                    "-nostdin",
                    "-f",
                    "rawvideo",
                    "-pix_fmt",
                    "bgr24",
                    "-s",
                    f"{size[0]}x{size[1]}",
                    "-r",
                    f"{fps}",
                    "-i",
                    "pipe:0",
                    "-vf",
                    "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-crf",
                    str(crf),
                    "-pix_fmt",
                    "yuv420p",
                    "-movflags",
                    "+faststart",
                    str(video_tmp),
                ]
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=stderr_file)
            elif (frame.shape[1], frame.shape[0]) != size:
                raise MediaError(f"frame {n} is {frame.shape[1]}x{frame.shape[0]}, the first was {size[0]}x{size[1]}")
            try:
                proc.stdin.write(np.ascontiguousarray(frame).tobytes())
            except BrokenPipeError as e:
                stderr_file.seek(0)
                raise MediaError(
                    f"ffmpeg stopped while encoding: {stderr_file.read().decode(errors='replace')[-500:]}"
                ) from e
            n += 1
        if proc is None:
            raise MediaError("no frames to write")
        proc.stdin.close()
        if proc.wait() != 0:
            stderr_file.seek(0)
            raise MediaError(f"ffmpeg failed to encode the video: {stderr_file.read().decode(errors='replace')[-500:]}")
        proc = None
        if audio16k is not None and len(audio16k):
            final_tmp = _tmp_beside(out, ".mp4")
            want = int(round(n / fps * SAMPLE_RATE))
            a = np.asarray(audio16k, dtype=np.float32)[:want]
            a = np.pad(a, (0, want - len(a)))
            wav_tmp = _tmp_beside(out, ".wav")
            try:
                sf.write(str(wav_tmp), a, SAMPLE_RATE, subtype="PCM_16")
                _run(
                    [
                        exe,
                        "-y",
                        "-v",
                        "error",
                        "-nostdin",
                        "-i",
                        str(video_tmp),
                        "-i",
                        str(wav_tmp),
                        "-map",
                        "0:v:0",
                        "-map",
                        "1:a:0",
                        "-c:v",
                        "copy",
                        "-c:a",
                        "aac",
                        "-b:a",
                        "128k",
                        "-movflags",
                        "+faststart",
                        str(final_tmp),
                    ],
                    "mux the audio",
                )
            finally:
                wav_tmp.unlink(missing_ok=True)
            os.replace(final_tmp, out)
        else:
            os.replace(video_tmp, out)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        stderr_file.close()
        video_tmp.unlink(missing_ok=True)
        if final_tmp is not None:
            final_tmp.unlink(missing_ok=True)
    return out
