"""A weight-free lip-sync metric: how far the mouth's movement is shifted in time from the speech's loudness.

Landmarks are either MediaPipe's face mesh, (N, 478, 3) or (N, 468, 3) (`face_mesh.py`, the `mesh` extra), or
dlib's (N, 68, 2). Each frame gives two mouth signals, both divided by the inter-ocular distance (outer eye
corners, median-filtered over half a second so that landmark jitter does not modulate it):

- "jaw": chin to nose tip. A nod moves the chin against the nose too, so the part of it that follows the nose tip's
  distance from the eye line (a pitch proxy the mouth does not move) is regressed out;
- "inner": the inner-lip gap, averaged over 7 upper/lower pairs of the mesh (3 pairs of dlib's points).

The audio signal is the speech's loudness per video frame: the mean over 40 mel bands (80-7600 Hz) of their log
power, floored 50 dB under the clip's loudest band and instant so that digital silence cannot dominate. It follows vowels and
closures on a perceptual scale; the speech-band log energy of the first version is kept for the baselines.

The "fused" method (the default) smooths a mouth signal and the loudness over 3 frames (120 ms: lips do not move
faster), prewhitens both with the same AR(1) filter fitted to the loudness (`prewhitening_filter`), correlates them
over lags, and averages the curves of the two mouth signals. Speech loudness is strongly autocorrelated (a vowel lasts
several frames, syllables recur every 5-8), so a raw cross-correlation spreads its peak and lifts rivals a syllable
away; prewhitening removes that shared slowness and leaves the lag relation. Each correlation is the biased estimate:
products summed over the frames that overlap at that lag, divided by the full length, so a large lag is supported by
fewer frames and scores lower, as SyncNet's zero-padded distances do. (The second version averaged level and
frame-difference correlations instead; bench/bench_sync_calibration.py compares the two.)

Offsets follow syncnet_python's sign: video frame i matches audio frame i - offset, so a positive offset means the
sound comes before the mouth moves. The best offset is the curve's best *interior* maximum over -15..+15 frames
(`best_peak`: a curve still rising at ±15 frames has no peak there); the confidence is the peak minus the median of
the curve (the analogue of LSE-C). The offset is *reported* only when its margin
over the best rival more than 2 frames away, times sqrt(frames), reaches a threshold calibrated per landmark scheme
on real clips (bench/bench_sync_calibration.py); otherwise it is undetermined (None). Speech has a syllable rhythm,
so a mouth matches the loudness one syllable early or late too: the margin is what says which. On 14 real clips it
was not tuned on, it reports on 83 % of 3 s windows and a reported offset follows an injected shift 98 % of the time,
but on four of those speakers the absolute offset sits a constant 3-7 frames off (README): use it to compare runs of
the same footage, and SyncNet's real weights for an absolute verdict.

The two simpler methods are kept as baselines for the robustness table: "delta" (Pearson correlation of the
frame-to-frame changes of the inner-lip opening over face size and the speech-band log energy, over the overlap)
and "level" (the same on the raw signals). They are not calibrated and never report an offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.signal import medfilt

from workbench.config import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from workbench.evaluation.errors import MediaTooShortError

MAX_OFFSET = 15  # frames, as syncnet_python's vshift
SPEECH_BAND_HZ = (300.0, 3000.0)
ENERGY_FLOOR_DB = 50.0
LOUDNESS_MELS, LOUDNESS_HZ = 40, (80.0, 7600.0)
SMOOTH_FRAMES = 3
FACE_SIZE_MEDIAN_FRAMES = 13
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
# Points of each landmark scheme: inner-lip pairs (upper, lower), chin, nose tip, outer eye corners.
SCHEMES: dict[str, dict] = {
    "mesh": {
        "inner": ((13, 14), (82, 87), (81, 178), (80, 88), (312, 317), (311, 402), (310, 318)),
        "chin": 152,
        "nose": 1,
        "eyes": (33, 263),
    },
    "dlib68": {"inner": INNER_LIP_PAIRS, "chin": 8, "nose": 30, "eyes": (36, 45)},
}
PEAK_HALF_WIDTH = 2  # frames: a rival peak further than this from the best one counts against it
# Below this evidence the offset is reported as undetermined. Calibrated by bench/bench_sync_calibration.py on the 13
# real clips read so far (DEV: syncnet_example.avi, calibration/talk1-5, seven HDTF clips; 3 s windows and whole
# clips pooled): per landmark scheme, the lowest margin at which >= 95 % of the reported offsets recover the injected
# shift (the unmoved span's offset + the shift, ±1; some of these recordings are not in sync, so "within ±2 of the
# shift" cannot be the rule). Scored once on clips nobody had read: README, "Does the weight-free metric prove
# itself?". The baselines never report.
EVIDENCE_MEASURE: dict[str, str] = {"dlib68": "margin_z", "mesh": "margin_z"}
EVIDENCE_THRESHOLD: dict[tuple[str, str], float] = {("fused", "dlib68"): 0.608, ("fused", "mesh"): 0.5986}
Method = Literal["fused", "fused_v2", "delta", "level"]
METHODS: tuple[str, ...] = ("fused", "delta", "level")  # what the robustness table compares
FUSED_METHODS: tuple[str, ...] = ("fused", "fused_v2")  # the two mouth signals against mel loudness


@dataclass
class LandmarkSyncResult:
    offset: int  # best offset in frames (positive: audio ahead of the video)
    peak: float  # correlation at the best offset
    confidence: float  # peak minus the median over all offsets
    offsets: np.ndarray = field(repr=False)  # (2K+1,) -K..K
    curve: np.ndarray = field(repr=False)  # (2K+1,) correlation at each offset
    n_frames: int = 0
    method: str = "fused"
    scheme: str = "dlib68"  # the landmarks scored: "mesh" (MediaPipe) or "dlib68"
    evidence: float = 0.0  # EVIDENCE_MEASURE[scheme] of the curve (see `evidence_measures`)
    threshold: float = 0.0  # the evidence needed to report the offset

    @property
    def margin(self) -> float:
        """Sync strength: the peak minus the best value more than PEAK_HALF_WIDTH frames from it."""
        best = int(np.argmin(np.abs(self.offsets - self.offset)))
        far = np.abs(np.arange(len(self.curve)) - best) > PEAK_HALF_WIDTH
        return float(self.curve[best] - self.curve[far].max()) if far.any() else 0.0

    def at(self, offset: int) -> float | None:
        """The correlation at `offset` frames (None outside the searched range)."""
        hit = np.flatnonzero(self.offsets == int(offset))
        return float(self.curve[hit[0]]) if hit.size else None

    @property
    def determined(self) -> bool:
        """Whether the evidence is strong enough to report an offset (calibrated on held-apart real clips)."""
        return bool(self.evidence >= self.threshold)

    @property
    def reported_offset(self) -> int | None:
        """The offset, or None ("undetermined") when the curve's peak does not stand out enough to trust."""
        return int(self.offset) if self.determined else None

    def to_dict(self) -> dict:
        return {
            "offset": self.reported_offset,
            "best_offset": int(self.offset),
            "determined": self.determined,
            "evidence": float(self.evidence),
            "evidence_measure": EVIDENCE_MEASURE[self.scheme],
            "threshold": float(self.threshold),
            "peak": float(self.peak),
            "margin": self.margin,
            "confidence": float(self.confidence),
            "n_frames": int(self.n_frames),
            "method": self.method,
            "landmarks": self.scheme,
            "offsets": [int(o) for o in self.offsets],
            "curve": [float(c) for c in self.curve],
        }


# --- the two signals ----------------------------------------------------------------------------
def _fill_gaps(x: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN frames (a lost face), constant beyond the ends."""
    x = np.asarray(x, dtype=np.float64).copy()
    ok = np.isfinite(x)
    if not ok.any():
        raise MediaTooShortError("no frame has usable landmarks")
    if not ok.all():
        idx = np.arange(len(x))
        x[~ok] = np.interp(idx[~ok], idx[ok], x[ok])
    return x


def _median(x: np.ndarray) -> np.ndarray:
    """Median over ~half a second (FACE_SIZE_MEDIAN_FRAMES, shortened to an odd length for short clips)."""
    k = min(FACE_SIZE_MEDIAN_FRAMES, len(x) if len(x) % 2 else len(x) - 1)
    return medfilt(x, k) if k >= 3 else x


def face_size(landmarks: np.ndarray) -> np.ndarray:
    """(N,) RMS distance of the 68 landmarks from their centroid, median-filtered over ~half a second."""
    lm = np.asarray(landmarks, dtype=np.float64)
    centred = lm - lm.mean(axis=1, keepdims=True)
    return _median(_fill_gaps(np.sqrt((centred**2).sum(axis=2).mean(axis=1))))


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(N,) inner-lip gap over face size, per frame. `landmarks` is (N, 68, 2); frames of NaNs are interpolated."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (N, 68, 2), got {lm.shape}")
    gap = np.mean([np.linalg.norm(lm[:, a] - lm[:, b], axis=1) for a, b in INNER_LIP_PAIRS], axis=0)
    return _fill_gaps(gap) / face_size(lm)


def scheme_of(landmarks: np.ndarray) -> str:
    """ "mesh" for MediaPipe's (N, 468 or 478, 2 or 3) points, "dlib68" for (N, 68, 2)."""
    shape = np.shape(landmarks)
    if len(shape) == 3 and shape[1] in (468, 478) and shape[2] in (2, 3):
        return "mesh"
    if len(shape) == 3 and shape[1:] == (68, 2):
        return "dlib68"
    raise ValueError(f"landmarks must be (N, 68, 2) (dlib) or (N, 468|478, 3) (face mesh), got {shape}")


def mouth_signals(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """{"jaw", "inner"}: (N,) each, over the inter-ocular distance (see the module docstring); NaN frames (a lost
    face) are interpolated. The mesh's depth is used where it exists: a turned head then shortens the gaps less."""
    scheme = scheme_of(landmarks)
    p = SCHEMES[scheme]
    lm = np.asarray(landmarks, dtype=np.float64)

    def dist(a: int, b: int) -> np.ndarray:
        return _fill_gaps(np.linalg.norm(lm[:, a] - lm[:, b], axis=1))

    scale = _median(dist(*p["eyes"]))
    inner = np.mean([dist(a, b) for a, b in p["inner"]], axis=0) / scale
    jaw = dist(p["chin"], p["nose"]) / scale
    eye_line = 0.5 * (lm[:, p["eyes"][0]] + lm[:, p["eyes"][1]])
    nod = _fill_gaps(np.linalg.norm(lm[:, p["nose"]] - eye_line, axis=1)) / scale
    nod = nod - nod.mean()
    if nod.std() > 1e-9:  # least squares: the part of the jaw signal that a nod explains
        jaw = jaw - nod * float(np.dot(nod, jaw - jaw.mean()) / np.dot(nod, nod))
    return {"jaw": jaw, "inner": inner}


def speech_loudness(
    audio16k: np.ndarray, n_frames: int | None = None, fps: float = FPS, floor_db: float = ENERGY_FLOOR_DB
) -> np.ndarray:
    """(n_frames,) mean log-mel power per video frame (40 bands, 80-7600 Hz, 32 ms windows every 10 ms, floored
    `floor_db` under the loudest band and hop)."""
    import librosa

    audio = np.asarray(audio16k, dtype=np.float32).reshape(-1)
    hop = SAMPLE_RATE // 100
    per_frame = int(round(SAMPLE_RATE / fps / hop))
    if n_frames is None:
        n_frames = len(audio) // int(round(SAMPLE_RATE / fps))
    audio = np.pad(audio, (0, max(0, n_frames * per_frame * hop - len(audio))))
    mel = librosa.feature.melspectrogram(
        y=audio,
        sr=SAMPLE_RATE,
        n_fft=512,
        hop_length=hop,
        n_mels=LOUDNESS_MELS,
        fmin=LOUDNESS_HZ[0],
        fmax=LOUDNESS_HZ[1],
    )
    if not np.any(mel > 0):
        return np.zeros(n_frames)
    db = librosa.power_to_db(mel, ref=np.max, top_db=floor_db).mean(axis=0)
    db = np.pad(db[: n_frames * per_frame], (0, max(0, n_frames * per_frame - len(db))), mode="edge")
    return db.reshape(n_frames, per_frame).mean(axis=1).astype(np.float64)


def speech_band_log_energy(
    audio16k: np.ndarray,
    n_frames: int | None = None,
    fps: float = FPS,
    band: tuple[float, float] = SPEECH_BAND_HZ,
    floor_db: float = ENERGY_FLOOR_DB,
) -> np.ndarray:
    """(n_frames,) log energy of `band` per video frame: 10 ms STFT hops (25 ms Hann windows) averaged per frame."""
    audio = np.asarray(audio16k, dtype=np.float32).reshape(-1)
    hop, n_fft = SAMPLE_RATE // 100, 512
    per_frame = int(round(SAMPLE_RATE / fps / hop))
    if n_frames is None:
        n_frames = len(audio) // int(round(SAMPLE_RATE / fps))
    need = n_frames * per_frame * hop
    padded = np.pad(audio, (0, max(0, need - len(audio))))
    src = np.pad(padded, (200, 200))  # centre each 25 ms window on its hop, as librosa's center=True does
    windows = np.lib.stride_tricks.sliding_window_view(src, 400)[np.arange(n_frames * per_frame) * hop]
    frames = np.zeros((len(windows), n_fft), np.float32)
    frames[:, :400] = windows * np.hanning(400).astype(np.float32)
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    sel = (freqs >= band[0]) & (freqs <= band[1])
    energy = spec[:, sel].sum(axis=1).reshape(n_frames, per_frame).mean(axis=1).astype(np.float64)
    peak = float(energy.max()) if energy.size else 0.0
    if peak <= 0:
        return np.zeros(n_frames)
    return np.log(np.maximum(energy, peak * 10 ** (-floor_db / 10)))


def shift_audio(audio16k: np.ndarray, frames: int) -> np.ndarray:
    """The audio moved by `frames` video frames, same length, zero-filled: positive moves it earlier, so the
    sound comes `frames` frames before the mouth and the metric should report offset +frames."""
    audio = np.asarray(audio16k, dtype=np.float32)
    s = int(frames) * SAMPLES_PER_FRAME
    if s == 0:
        return audio.copy()
    out = np.zeros_like(audio)
    if s > 0:
        out[: max(0, len(audio) - s)] = audio[s:]
    else:
        out[-s:] = audio[: len(audio) + s]
    return out


# --- correlation over offsets -------------------------------------------------------------------
def _zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return np.asarray(x, dtype=np.float64)
    return np.convolve(np.pad(x, (k // 2, k // 2), mode="edge"), np.ones(k) / k, mode="valid")


def lagged_correlation(
    video: np.ndarray, audio: np.ndarray, max_offset: int = MAX_OFFSET, biased: bool = True
) -> np.ndarray:
    """(2K+1,) correlation of video[i] with audio[i - offset] for offset = -K..K.

    biased=True: both signals z-scored once, products summed over the overlap and divided by the full length.
    biased=False: Pearson correlation over the overlap only.
    """
    v, a = np.asarray(video, dtype=np.float64), np.asarray(audio, dtype=np.float64)
    n = min(len(v), len(a))
    v, a = v[:n], a[:n]
    if n < 2 * max_offset + 2:
        raise MediaTooShortError(f"{n} frames are too few for offsets of ±{max_offset} (need {2 * max_offset + 2})")
    out = np.empty(2 * max_offset + 1)
    if biased:
        zv, za = _zscore(v), _zscore(a)
    for k, off in enumerate(range(-max_offset, max_offset + 1)):
        i0, i1 = max(0, off), min(n, n + off)  # video frames whose audio frame i - off exists
        if biased:
            out[k] = float(np.dot(zv[i0:i1], za[i0 - off : i1 - off]) / n)
        else:
            x, y = v[i0:i1], a[i0 - off : i1 - off]
            sx, sy = x.std(), y.std()
            out[k] = float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy)) if sx > 1e-12 and sy > 1e-12 else 0.0
    return out


def prewhitening_filter(audio_signal: np.ndarray):
    """Box-Jenkins prewhitening: fit an AR(1) model x[i] = phi * x[i-1] + e[i] to the audio signal (Yule-Walker:
    phi is its lag-1 autocorrelation) and return the filter x -> x[1:] - phi * x[:-1] that whitens it. Applied to
    both signals it leaves their lag relation alone but removes the audio's own slow correlation from the curve, which
    otherwise spreads the true peak and lifts rivals a syllable away. phi is fitted per span: loud, sustained speech
    is smoother (phi near 1, the filter a frame-to-frame difference) than clipped, staccato speech."""
    x = np.asarray(audio_signal, dtype=np.float64) - float(np.mean(audio_signal))
    r0 = float(np.dot(x, x))
    phi = float(np.dot(x[1:], x[:-1]) / r0) if r0 > 1e-12 else 0.0

    def whiten(y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64) - float(np.mean(y))
        return y[1:] - phi * y[:-1]

    return whiten


def sync_curve(
    opening: np.ndarray, energy: np.ndarray, max_offset: int = MAX_OFFSET, method: Method = "fused"
) -> np.ndarray:
    """The correlation curve over offsets for one of the methods (see the module docstring)."""
    n = min(len(opening), len(energy))
    o, e = np.asarray(opening[:n], dtype=np.float64), np.asarray(energy[:n], dtype=np.float64)
    if method in FUSED_METHODS:
        o, e = _smooth(o, SMOOTH_FRAMES), _smooth(e, SMOOTH_FRAMES)
        if method == "fused_v2":  # the second version, kept for the calibration bench's comparison
            level = lagged_correlation(o, e, max_offset)
            return 0.5 * (level + lagged_correlation(np.diff(o), np.diff(e), max_offset))
        whiten = prewhitening_filter(e)
        return lagged_correlation(whiten(o), whiten(e), max_offset)
    if method == "delta":
        return lagged_correlation(np.diff(o), np.diff(e), max_offset, biased=False)
    if method == "level":
        return lagged_correlation(o, e, max_offset, biased=False)
    raise ValueError(f"unknown method {method!r}: choose one of {', '.join(FUSED_METHODS + METHODS[1:])}")


def best_peak(curve: np.ndarray) -> int:
    """Index of the curve's best *interior* local maximum. A maximum at the end of the searched range is not a
    peak: the curve may go on rising beyond it, and on real footage it is a slow trend (a turning head against the
    loudness of a sentence) more often than an offset (talk4, calibration; `bench/bench_sync_calibration.py`).
    Falls back to the arg-max for a curve with no interior maximum (monotonic)."""
    c = np.asarray(curve, dtype=np.float64)
    inner = np.arange(1, len(c) - 1)
    local = inner[(c[inner] >= c[inner - 1]) & (c[inner] >= c[inner + 1])]
    return int(local[np.argmax(c[local])]) if local.size else int(np.argmax(c))


def evidence_measures(curve: np.ndarray, n_frames: int) -> dict[str, float]:
    """How clearly the curve's peak (`best_peak`) stands out, several ways (bench/bench_sync_calibration.py
    calibrates each and picks one):

    - "confidence": peak minus median (the LSE-C analogue; shrinks with length as correlation noise does);
    - "z": that times sqrt(n_frames): the correlation of unrelated signals has a spread of about 1/sqrt(n);
    - "margin_z": peak minus the best value more than `PEAK_HALF_WIDTH` frames from it, times sqrt(n_frames): a
      rival peak elsewhere means two offsets explain the audio about as well (syllables come every 5-8 frames,
      so a mouth that opens on each of them matches the loudness one syllable early or late too);
    - "prominence": peak minus median over the curve's median absolute deviation.
    """
    c = np.asarray(curve, dtype=np.float64)
    best = best_peak(c)
    med = float(np.median(c))
    far = np.abs(np.arange(len(c)) - best) > PEAK_HALF_WIDTH
    rival = float(c[far].max()) if far.any() else med
    mad = float(np.median(np.abs(c - med)))
    root = float(np.sqrt(max(n_frames, 1)))
    return {
        "confidence": float(c[best] - med),
        "z": float((c[best] - med) * root),
        "margin_z": float((c[best] - rival) * root),
        "prominence": float((c[best] - med) / mad) if mad > 1e-12 else 0.0,
    }


def summarise_curve(
    curve: np.ndarray, max_offset: int, n_frames: int, method: str, scheme: str = "dlib68"
) -> LandmarkSyncResult:
    offsets = np.arange(-max_offset, max_offset + 1)
    best = best_peak(curve)
    return LandmarkSyncResult(
        evidence=evidence_measures(curve, n_frames)[EVIDENCE_MEASURE[scheme]],
        threshold=EVIDENCE_THRESHOLD.get((method, scheme), float("inf")),
        offset=int(offsets[best]),
        peak=float(curve[best]),
        confidence=float(curve[best] - np.median(curve)),
        offsets=offsets,
        curve=np.asarray(curve, dtype=np.float64),
        n_frames=n_frames,
        method=method,
        scheme=scheme,
    )


def mouth_curves(
    landmarks: np.ndarray,
    audio16k: np.ndarray,
    n_frames: int,
    max_offset: int = MAX_OFFSET,
    method: Method = "fused",
    fps: float = FPS,
) -> dict[str, np.ndarray]:
    """{"jaw", "inner"}: each mouth signal's curve against the loudness over the first `n_frames` frames (the fused
    methods average the two; apart, they show whether two articulators agree)."""
    loud = speech_loudness(audio16k, n_frames, fps)
    signals = mouth_signals(np.asarray(landmarks)[:n_frames])
    return {name: sync_curve(signal, loud, max_offset, method) for name, signal in signals.items()}


def landmark_sync(
    landmarks: np.ndarray,
    audio16k: np.ndarray,
    max_offset: int = MAX_OFFSET,
    method: Method = "fused",
    fps: float = FPS,
) -> LandmarkSyncResult:
    """Sync of a face's landmarks per frame, (N, 68, 2) dlib or (N, 478, 3) mesh, with 16 kHz mono audio covering
    the same frames."""
    scheme = scheme_of(landmarks)
    n = min(len(landmarks), int(len(audio16k) // (SAMPLE_RATE / fps)))
    if n < 2 * max_offset + 2:
        raise MediaTooShortError(
            f"the clip has {n} frames with both video and audio; offsets of ±{max_offset} "
            f"need at least {2 * max_offset + 2} (~{(2 * max_offset + 2) / fps:.1f} s)"
        )
    lm = np.asarray(landmarks)[:n]
    if method in FUSED_METHODS:
        curve = np.mean(list(mouth_curves(lm, audio16k, n, max_offset, method, fps).values()), axis=0)
    else:
        if scheme != "dlib68":
            raise ValueError(f"the {method!r} baseline is defined on dlib's 68 points only")
        curve = sync_curve(mouth_opening(lm), speech_band_log_energy(audio16k, n, fps), max_offset, method)
    return summarise_curve(curve, max_offset, n, method, scheme)


def track_audio(audio16k: np.ndarray, frames: Sequence[int] | np.ndarray, fps: float = FPS) -> np.ndarray:
    """The part of the audio that covers consecutive video frames `frames` (a face track)."""
    per = SAMPLE_RATE / fps
    start, stop = int(round(frames[0] * per)), int(round((frames[-1] + 1) * per))
    return np.asarray(audio16k, dtype=np.float32)[start:stop]
