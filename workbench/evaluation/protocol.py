"""SyncNet scores with syncnet_python's media steps, so LSE-C/LSE-D compare with published numbers.

The scoring core (`syncnet.py`) equals the reference's; what moves the numbers is what happens to the media before
it. Protocol mode repeats those steps with the same tools and settings (`run_pipeline.py` then
`SyncNetInstance.evaluate`, joonson/syncnet_python 6efbb1c):

1. `ffmpeg -i SRC -qscale:v 2 -async 1 -r 25 video.avi`: MPEG-4 video at 25 fps by timestamp, the audio re-encoded
   to MP3 (its encoder delay, ~25 ms, stays in), the stream start aligned to the file's earliest stream;
2. `ffmpeg -i video.avi -qscale:v 2 -f image2 %06d.jpg` frames and `-ac 1 -ar 16000 pcm_s16le` audio;
3. S3FD per JPEG frame (RGB, scale 0.25, confidence 0.9);
4. scene cuts by PySceneDetect 0.5.1's ContentDetector on video.avi (ported below), tracks only within a scene
   and only from scenes of at least `min_track` frames;
5. `track_shot`'s greedy IoU tracking, ported with its list-mutation quirk (a face appended to the track is removed
   from the list being iterated, so the face after it in that frame is skipped);
6. crops cut from the JPEG frames, written through OpenCV's XVID writer, muxed with the audio cut by
   `ffmpeg -ss -to` (3 decimals), then read back as JPEG frames and `-async 1` PCM: the crop video's lossy round trip.

Every lossy step runs the same encoder the reference runs on this machine (the system ffmpeg, OpenCV's bundled
one), so with the same builds the crops are bit-identical; another ffmpeg build may move LSE-D in the 3rd decimal.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.interpolate import interp1d
from scipy.io import wavfile
from scipy.signal import medfilt

from workbench.evaluation.face_track import CROP_SCALE, IOU_THRESHOLD, MIN_FACE_SIZE, MIN_TRACK, NUM_FAILED_DET, iou
from workbench.evaluation.syncnet import SyncNetScorer, SyncNetScores, offset_distances, scores_from_distances
from workbench.media import MediaError

log = logging.getLogger(__name__)

FRAME_RATE = 25
CROP_SIZE = 224
PAD_VALUE = 110
SMOOTH_KERNEL = 13
# PySceneDetect 0.5.1 ContentDetector defaults and its frame subsampling by width (VideoManager.set_downscale_factor)
SCENE_THRESHOLD = 30.0
SCENE_MIN_LEN = 15  # frames
_DOWNSCALE_BY_WIDTH = ((3200, 12), (2100, 8), (1700, 6), (1200, 5), (900, 4), (600, 3), (400, 2))


@dataclass
class ProtocolTrack:
    frames: np.ndarray  # (T,) consecutive frame indices of the 25 fps timeline
    boxes: np.ndarray  # (T, 4) interpolated x1, y1, x2, y2
    centre_size: np.ndarray = field(repr=False, default=None)  # (T, 3) smoothed crop centre x, y and half-size
    scores: SyncNetScores | None = None


@dataclass
class ProtocolResult:
    n_frames: int
    scenes: list[tuple[int, int]]
    tracks: list[ProtocolTrack]

    @property
    def main(self) -> ProtocolTrack | None:
        """The longest scored track (the talking head), as the rest of the evaluation picks it."""
        scored = [t for t in self.tracks if t.scores is not None]
        return max(scored, key=lambda t: len(t.frames)) if scored else None


def _ffmpeg(args: Sequence[str], what: str) -> None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise MediaError("ffmpeg is not installed (apt-get install ffmpeg); the SyncNet protocol needs it")
    res = subprocess.run([exe, "-y", "-v", "error", "-nostdin", *args], capture_output=True, timeout=1800)
    if res.returncode != 0:
        raise MediaError(f"ffmpeg failed to {what}: {res.stderr.decode(errors='replace').strip()[-400:]}")


def _read_jpgs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg"))


# --- steps 1-2 ----------------------------------------------------------------------------------
def convert(source: Path, work: Path) -> tuple[Path, Path, list[Path]]:
    """video.avi, its 16 kHz audio.wav and its JPEG frames, made as run_pipeline.py makes them."""
    avi, wav, frames = work / "video.avi", work / "audio.wav", work / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    _ffmpeg(["-i", str(source), "-qscale:v", "2", "-async", "1", "-r", str(FRAME_RATE), str(avi)], "convert to 25 fps")
    _ffmpeg(["-i", str(avi), "-qscale:v", "2", "-threads", "1", "-f", "image2", str(frames / "%06d.jpg")], "extract")
    _ffmpeg(["-i", str(avi), "-ac", "1", "-vn", "-acodec", "pcm_s16le", "-ar", "16000", str(wav)], "extract audio")
    return avi, wav, _read_jpgs(frames)


# --- step 4 -------------------------------------------------------------------------------------
def scene_cuts(avi: Path, threshold: float = SCENE_THRESHOLD, min_len: int = SCENE_MIN_LEN) -> tuple[list[int], int]:
    """Frames where a new scene starts (ContentDetector: mean |ΔH|+|ΔS|+|ΔV| / 3 over subsampled pixels at least
    `threshold`, cuts at least `min_len` frames apart) and the number of frames OpenCV decoded."""
    cap = cv2.VideoCapture(str(avi))
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    step = next((f for w, f in _DOWNSCALE_BY_WIDTH if width >= w), 1)
    cuts: list[int] = []
    last_hsv: list[np.ndarray] | None = None
    last_cut: int | None = None
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if step > 1:
                frame = frame[::step, ::step, :]
            hsv = [c.astype(np.int32) for c in cv2.split(cv2.cvtColor(frame, cv2.COLOR_BGR2HSV))]
            if last_hsv is not None:
                delta = sum(np.sum(np.abs(a - b)) / float(a.size) for a, b in zip(hsv, last_hsv, strict=True)) / 3.0
                if delta >= threshold and (last_cut is None or n - last_cut >= min_len):
                    cuts.append(n)
                    last_cut = n
            last_hsv = hsv
            n += 1
    finally:
        cap.release()
    return cuts, n


def scenes_from_cuts(cuts: Sequence[int], n_frames: int) -> list[tuple[int, int]]:
    bounds = [0, *cuts, n_frames]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


# --- step 5 -------------------------------------------------------------------------------------
def track_shot(
    scene_faces: Sequence[Sequence[tuple[int, np.ndarray]]],
    min_track: int = MIN_TRACK,
    num_failed_det: int = NUM_FAILED_DET,
    min_face_size: float = MIN_FACE_SIZE,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """run_pipeline.py's `track_shot` line for line: (frames, interpolated boxes) of every track."""
    pool = [list(faces) for faces in scene_faces]
    tracks = []
    while True:
        track: list[tuple[int, np.ndarray]] = []
        for frame_faces in pool:
            # `for face in framefaces: ... framefaces.remove(face)` walks an index over a shrinking list: after a
            # removal the next face slides into the current slot and the loop's step skips it.
            k = 0
            while k < len(frame_faces):
                face = frame_faces[k]
                if not track:
                    track.append(frame_faces.pop(k))
                elif face[0] - track[-1][0] <= num_failed_det:
                    if iou(face[1], track[-1][1]) > IOU_THRESHOLD:
                        track.append(frame_faces.pop(k))
                else:
                    break
                k += 1
        if not track:
            break
        if len(track) > min_track:
            nums = np.array([f for f, _ in track])
            boxes = np.array([b for _, b in track], dtype=np.float64)
            full = np.arange(nums[0], nums[-1] + 1)
            # scipy's interp1d as the reference (not np.interp): it also decides what a frame taken twice gives
            interp = np.stack([interp1d(nums, boxes[:, j])(full) for j in range(4)], axis=1)
            if max(np.mean(interp[:, 2] - interp[:, 0]), np.mean(interp[:, 3] - interp[:, 1])) > min_face_size:
                tracks.append((full, interp))
    return tracks


# --- step 6 -------------------------------------------------------------------------------------
def crop_video(
    jpgs: Sequence[Path], wav: Path, frames: np.ndarray, boxes: np.ndarray, out: Path, crop_scale: float = CROP_SCALE
) -> tuple[Path, np.ndarray]:
    """The track's crop video (XVID + cropped PCM, as `crop_video` writes it) and its smoothed centre/size."""
    s = medfilt(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2, kernel_size=SMOOTH_KERNEL)
    y = medfilt((boxes[:, 1] + boxes[:, 3]) / 2, kernel_size=SMOOTH_KERNEL)
    x = medfilt((boxes[:, 0] + boxes[:, 2]) / 2, kernel_size=SMOOTH_KERNEL)
    tmp_video = out.with_name(out.stem + "t.avi")
    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"XVID"), FRAME_RATE, (CROP_SIZE, CROP_SIZE))
    try:
        for t, fidx in enumerate(frames):
            bs = s[t]
            bsi = int(bs * (1 + 2 * crop_scale))
            image = cv2.imread(str(jpgs[int(fidx)]))
            padded = np.pad(image, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(PAD_VALUE, PAD_VALUE))
            my, mx = y[t] + bsi, x[t] + bsi
            face = padded[
                int(my - bs) : int(my + bs * (1 + 2 * crop_scale)),
                int(mx - bs * (1 + crop_scale)) : int(mx + bs * (1 + crop_scale)),
            ]
            writer.write(cv2.resize(face, (CROP_SIZE, CROP_SIZE)))
    finally:
        writer.release()
    audio_cut = out.with_name(out.stem + ".wav")
    start, end = frames[0] / FRAME_RATE, (frames[-1] + 1) / FRAME_RATE
    _ffmpeg(["-i", str(wav), "-ss", f"{start:.3f}", "-to", f"{end:.3f}", str(audio_cut)], "cut the track's audio")
    _ffmpeg(["-i", str(tmp_video), "-i", str(audio_cut), "-c:v", "copy", "-c:a", "copy", str(out)], "mux the crop")
    tmp_video.unlink(missing_ok=True)
    return out, np.stack([x, y, s], axis=1)


def read_crop_video(crop: Path, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """(T, 224, 224, 3) BGR crops and int16 16 kHz audio of a crop video, decoded as `evaluate` decodes it."""
    jpg_dir = work / (crop.stem + "_frames")
    jpg_dir.mkdir(parents=True, exist_ok=True)
    wav = work / (crop.stem + "_audio.wav")
    _ffmpeg(["-i", str(crop), "-threads", "1", "-f", "image2", str(jpg_dir / "%06d.jpg")], "extract the crops")
    _ffmpeg(["-i", str(crop), "-async", "1", "-ac", "1", "-vn", "-acodec", "pcm_s16le", "-ar", "16000", str(wav)],
            "extract the crop audio")  # fmt: skip
    crops = np.stack([cv2.imread(str(f)) for f in _read_jpgs(jpg_dir)])
    rate, audio = wavfile.read(str(wav))
    if rate != 16000:
        raise MediaError(f"{wav.name}: expected 16 kHz, got {rate}")
    return crops, audio


def score_file(
    source: str | Path,
    detector,
    scorer: SyncNetScorer | None,
    min_track: int = MIN_TRACK,
    work_dir: str | Path | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> ProtocolResult:
    """Every face track of `source` (a video with its audio) scored as syncnet_python scores it.

    `detector` is a BoxDetector over BGR frames (S3FDBoxes for the protocol); `scorer` None stops after tracking.
    """
    source = Path(source)
    if not source.is_file():
        raise MediaError(f"file not found: {source}")
    with tempfile.TemporaryDirectory(prefix="syncnet_protocol_", dir=work_dir) as tmp:
        work = Path(tmp)
        avi, wav, jpgs = convert(source, work)
        if not jpgs:
            raise MediaError(f"{source.name}: no frames after the 25 fps conversion")
        faces = []
        for i, f in enumerate(jpgs):
            dets = np.asarray(detector.detect(cv2.imread(str(f))), dtype=np.float64).reshape(-1, 5)
            faces.append([(i, d[:4].copy()) for d in dets])
            if progress is not None and i % 10 == 0:
                progress(0.5 * (i + 1) / len(jpgs), f"faces {i + 1}/{len(jpgs)}")
        cuts, n_decoded = scene_cuts(avi)
        scenes = scenes_from_cuts(cuts, n_decoded)
        tracks: list[ProtocolTrack] = []
        for a, b in scenes:
            if b - a >= min_track:
                for frames, boxes in track_shot(faces[a:b], min_track=min_track):
                    tracks.append(ProtocolTrack(frames=frames, boxes=boxes))
        for k, t in enumerate(tracks):
            crop, t.centre_size = crop_video(jpgs, wav, t.frames, t.boxes, work / f"{k:05d}.avi")
            if scorer is None:
                continue
            crops, audio = read_crop_video(crop, work)
            vf, af = scorer.features(crops, audio)
            t.scores = scores_from_distances(offset_distances(vf, af, scorer.vshift))
            if progress is not None:
                progress(0.5 + 0.5 * (k + 1) / len(tracks), f"SyncNet track {k + 1}/{len(tracks)}")
        return ProtocolResult(n_frames=len(jpgs), scenes=scenes, tracks=tracks)


def write_clip(path: Path, frames: np.ndarray, audio16k: np.ndarray, fps: float = FRAME_RATE) -> Path:
    """Frames and audio as a lossless clip (FFV1 + PCM in Matroska) for `score_file`: what the protocol then does to
    it is all the loss there is. The audio is cut or padded to the video's length."""
    frames = np.asarray(frames)
    h, w = frames.shape[1:3]
    video = path.with_suffix(".video.mkv")
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise MediaError("ffmpeg is not installed (apt-get install ffmpeg)")
    cmd = [exe, "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", f"{fps}",
           "-i", "pipe:0", "-c:v", "ffv1", str(video)]  # fmt: skip
    res = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), capture_output=True, timeout=1800)
    if res.returncode != 0:
        raise MediaError(f"ffmpeg failed to write a lossless clip: {res.stderr.decode(errors='replace')[-300:]}")
    want = int(math.floor(len(frames) / fps * 16000))
    a = np.asarray(audio16k, dtype=np.float32)[:want]
    a = np.pad(a, (0, want - len(a)))
    wav = path.with_suffix(".wav")
    wavfile.write(str(wav), 16000, np.clip(np.round(a * 32768.0), -32768, 32767).astype(np.int16))
    _ffmpeg(["-i", str(video), "-i", str(wav), "-map", "0:v:0", "-map", "1:a:0", "-c", "copy", str(path)], "mux")
    video.unlink(missing_ok=True)
    wav.unlink(missing_ok=True)
    return path
