"""Weight-free scores of what people see, from the 68 landmarks the evaluation already tracks.

Each answers a complaint users of MuseTalk, LiveTalking and LatentSync raise again and again
(docs/evaluation_quality.md lists them beside the issue numbers). Their names, units, directions and
tolerances are in the registry (`workbench/evaluation/metrics.py`).

- mouth open in silence: silent frames are those whose 40 ms RMS is `SILENCE_DB` under the clip's 95th
  percentile, with their `SILENCE_PAD` neighbours on each side silent too (lips close and open within ~100 ms
  of a pause's ends, so the edges are not judged). The person's closed-mouth level is the `CLOSED_PERCENTILE`th
  percentile of the inner-lip gap (over the inter-ocular distance) of the source video behind a generated clip,
  or of the clip itself for a real recording, plus `CLOSED_MARGIN` for landmark noise. Scores: the share of
  silent frames above it and their mean excess;
- jitter: the mean norm of the second difference over frames of the lips' 20 points (and of the jaw line's 17),
  over the inter-ocular distance, divided by the same of the source frames behind each output frame, landmarks
  fitted the same way in the same boxes. Speech moves lips smoothly; a pixel of noise per frame doubles it;
- mouth detail: the Laplacian variance (`mouth_quality.mouth_sharpness`) and the colour spread (RMS of the Lab
  channels' standard deviations) of the mouth box, each as a ratio to the source frames behind the output;
- teeth comb (reported in the case's details.json only, `details["quality"]["teeth_comb"]`; not a table column,
  not summarised, not gated): `teeth_structure.comb_score` of the output's open mouths: a drawn comb of evenly
  spaced teeth scores high, real teeth low (docs/cpu_renderer_mouth.md 5.9);
- seams: the mean absolute grey difference between output and source pixels outside the blending mask (alpha 0)
  within the face box grown by `SEAM_GROW` on each side: what a paste-back must leave alone (seams, colour drift
  spill there). Compression noise of the encode sits under it on a clean render.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from workbench.config import SAMPLES_PER_FRAME
from workbench.evaluation.landmark_sync import mouth_signals
from workbench.evaluation.mouth_quality import mouth_sharpness
from workbench.evaluation.teeth_structure import comb_score

SILENCE_DB = 30.0  # a frame is silent this far under the clip's 95th-percentile frame RMS
SILENCE_PAD = 2  # frames on each side of a silent frame that must be silent too
CLOSED_PERCENTILE = 10.0
CLOSED_MARGIN = 0.04  # inter-ocular distances above the closed level before a gap counts as open
LIPS = slice(48, 68)
JAW = slice(0, 17)
SEAM_GROW = 0.25  # the face box grown by this fraction of its size on each side for the seam region
SEAM_STRIDE = 3  # every third frame: seams change slowly and the difference is costly on large frames


@dataclass
class QualityScores:
    """Per-case scores (None: not measurable for this case, e.g. no source for a real recording)."""

    silent_open_share: float | None = None
    silent_open_excess: float | None = None
    jitter_lips: float | None = None
    jitter_jaw: float | None = None
    mouth_sharpness: float | None = None
    mouth_gamut: float | None = None
    seam_diff: float | None = None
    details: dict = field(default_factory=dict)  # absolute values behind the ratios, frame counts, levels

    def row(self) -> dict:
        keys = (
            "silent_open_share",
            "silent_open_excess",
            "jitter_lips",
            "jitter_jaw",
            "mouth_sharpness",
            "mouth_gamut",
            "seam_diff",
        )
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


# --- silence ------------------------------------------------------------------------------------
def silent_frames(audio16k: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames,) bool: frames of silence, edges of each pause excluded (see the module docstring)."""
    a = np.asarray(audio16k, dtype=np.float64).reshape(-1)
    a = np.pad(a, (0, max(0, n_frames * SAMPLES_PER_FRAME - len(a))))[: n_frames * SAMPLES_PER_FRAME]
    if n_frames == 0:
        return np.zeros(0, bool)
    db = 10 * np.log10((a.reshape(n_frames, SAMPLES_PER_FRAME) ** 2).mean(axis=1) + 1e-12)
    quiet = db < np.percentile(db, 95) - SILENCE_DB
    out = quiet.copy()
    for k in range(1, SILENCE_PAD + 1):
        out[k:] &= quiet[:-k]
        out[:-k] &= quiet[k:]
        out[:k] = False  # a frame near the clip's start or end has no neighbours to vouch for it
        out[-k:] = False
    return out


def lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """(N,) inner-lip gap over the inter-ocular distance (`landmark_sync.mouth_signals`' "inner")."""
    return mouth_signals(np.asarray(landmarks, dtype=np.float64))["inner"]


def closed_level(reference_gap: np.ndarray) -> float:
    """The lip gap above which a mouth counts as open: the reference's low percentile plus a noise margin."""
    return float(np.percentile(np.asarray(reference_gap, dtype=np.float64), CLOSED_PERCENTILE) + CLOSED_MARGIN)


def open_in_silence(gap: np.ndarray, silent: np.ndarray, level: float) -> dict:
    """Share of silent frames whose gap exceeds `level`, and the mean excess over silent frames."""
    gap, silent = np.asarray(gap, dtype=np.float64), np.asarray(silent, bool)
    n = min(len(gap), len(silent))
    g = gap[:n][silent[:n]]
    if len(g) == 0:
        return {"silent_frames": 0, "closed_level": level}
    excess = np.maximum(g - level, 0.0)
    return {
        "share": float((excess > 0).mean()),
        "excess": float(excess.mean()),
        "silent_frames": len(g),
        "closed_level": level,
    }


# --- jitter -------------------------------------------------------------------------------------
def _iod(lm: np.ndarray) -> np.ndarray:
    return np.linalg.norm(lm[:, 45] - lm[:, 36], axis=1)


def jitter(landmarks: np.ndarray, part: slice) -> float:
    """Mean over frames and points of |x[t+1] - 2 x[t] + x[t-1]| over the (median) inter-ocular distance."""
    lm = np.asarray(landmarks, dtype=np.float64)
    ok = np.isfinite(lm).all(axis=(1, 2))
    if ok.sum() < 3:
        return float("nan")
    iod = float(np.median(_iod(lm[ok])))
    second = lm[2:, part] - 2 * lm[1:-1, part] + lm[:-2, part]
    valid = ok[2:] & ok[1:-1] & ok[:-2]
    if not valid.any() or iod <= 0:
        return float("nan")
    return float(np.linalg.norm(second[valid], axis=2).mean() / iod)


# --- mouth detail -------------------------------------------------------------------------------
def mouth_box(lm: np.ndarray, shape: tuple[int, ...], grow: float = 0.25) -> tuple[int, int, int, int] | None:
    """x0, y0, x1, y1 of the outer lips grown by `grow` inter-ocular distances, clipped; None when too small."""
    lm = np.asarray(lm, np.float64)
    if not np.isfinite(lm).all():
        return None
    g = grow * float(np.linalg.norm(lm[45] - lm[36]))
    x0, y0 = np.floor(lm[LIPS].min(axis=0) - g).astype(int)
    x1, y1 = np.ceil(lm[LIPS].max(axis=0) + g).astype(int)
    h, w = shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    return (x0, y0, x1, y1) if x1 - x0 >= 3 and y1 - y0 >= 3 else None


def colour_spread(frame: np.ndarray, lm: np.ndarray) -> float:
    """RMS of the standard deviations of L, a and b over the mouth box of one frame."""
    box = mouth_box(lm, frame.shape)
    if box is None:
        return float("nan")
    x0, y0, x1, y1 = box
    lab = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_BGR2LAB).reshape(-1, 3)
    return float(np.sqrt((lab.astype(np.float64).std(axis=0) ** 2).mean()))


def _mean(values) -> float:
    v = [x for x in values if np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def mouth_detail(frames: Sequence[np.ndarray], landmarks: np.ndarray) -> dict[str, float]:
    """{"sharpness", "gamut"}: mean Laplacian variance and colour spread of the mouth box over frames."""
    sharp, spread = [], []
    for f, lm in zip(frames, landmarks, strict=True):
        if np.isfinite(lm).all():
            sharp.append(mouth_sharpness(f, lm))
            spread.append(colour_spread(f, lm))
    return {"sharpness": _mean(sharp), "gamut": _mean(spread)}


# --- seams --------------------------------------------------------------------------------------
def seam_difference(
    frames: Sequence[np.ndarray],
    sources: Sequence[np.ndarray],
    boxes: Sequence[Sequence[int]],
    alphas: Sequence[np.ndarray],
    stride: int = SEAM_STRIDE,
) -> float:
    """Mean |grey(frame) - grey(source)| where the blending mask is 0, inside each face box grown by
    `SEAM_GROW`. `alphas[k]` is frame k's mask at its box's size (h, w) or (h, w, 1), values in [0, 1]."""
    total, count = 0.0, 0
    for k in range(0, len(frames), max(1, stride)):
        f, s = frames[k], sources[k]
        if f.shape != s.shape:
            continue
        x1, y1, x2, y2 = (int(v) for v in boxes[k])
        gw, gh = int(SEAM_GROW * (x2 - x1)), int(SEAM_GROW * (y2 - y1))
        h, w = f.shape[:2]
        X1, Y1, X2, Y2 = max(0, x1 - gw), max(0, y1 - gh), min(w, x2 + gw), min(h, y2 + gh)
        outside = np.ones((Y2 - Y1, X2 - X1), bool)
        a = np.asarray(alphas[k]).reshape(y2 - y1, x2 - x1)
        # the box inside the grown region, clipped to the frame
        bx1, by1, bx2, by2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if bx2 > bx1 and by2 > by1:
            outside[by1 - Y1 : by2 - Y1, bx1 - X1 : bx2 - X1] = a[by1 - y1 : by2 - y1, bx1 - x1 : bx2 - x1] <= 0
        gf = cv2.cvtColor(np.ascontiguousarray(f[Y1:Y2, X1:X2]), cv2.COLOR_BGR2GRAY).astype(np.float64)
        gs = cv2.cvtColor(np.ascontiguousarray(s[Y1:Y2, X1:X2]), cv2.COLOR_BGR2GRAY).astype(np.float64)
        diff = np.abs(gf - gs)[outside]
        total += float(diff.sum())
        count += int(diff.size)
    return total / count if count else float("nan")


# --- one case -----------------------------------------------------------------------------------
@dataclass
class SourceBehind:
    """What a generated clip is judged against: per output frame of the track, the source frame behind it,
    its landmarks (fitted like the output's), and for seams its face box and blending mask."""

    frames: Sequence[np.ndarray]
    landmarks: np.ndarray
    boxes: Sequence[Sequence[int]] | None = None
    alphas: Sequence[np.ndarray] | None = None


def _ratio(a: float, b: float) -> float | None:
    if not (np.isfinite(a) and np.isfinite(b)) or b <= 1e-12:
        return None
    return float(a / b)


def score_quality(
    frames: Sequence[np.ndarray],
    landmarks: np.ndarray,
    audio16k: np.ndarray,
    source: SourceBehind | None = None,
) -> QualityScores:
    """Quality scores of one face track: `frames` and `landmarks` (N, 68, 2) cover the same frames, `audio16k`
    starts with the first of them. Without `source` (a real recording) only the silence score and the absolute
    values are computed."""
    lm = np.asarray(landmarks, dtype=np.float64)
    n = len(lm)
    out = QualityScores()
    d = out.details
    gap = lip_gap(lm)
    ref_gap = lip_gap(source.landmarks) if source is not None else gap
    sil = open_in_silence(gap, silent_frames(audio16k, n), closed_level(ref_gap))
    d["silence"] = sil
    if sil["silent_frames"]:
        out.silent_open_share, out.silent_open_excess = sil["share"], sil["excess"]
    j_lips, j_jaw = jitter(lm, LIPS), jitter(lm, JAW)
    detail = mouth_detail(frames, lm)
    d["absolute"] = {"jitter_lips": j_lips, "jitter_jaw": j_jaw, **{f"mouth_{k}": v for k, v in detail.items()}}
    comb = comb_score(frames, lm)
    d["teeth_comb"] = {**comb, "score": comb["score"] if comb["measured_frames"] else None}
    if source is None:
        return out
    s_lm = np.asarray(source.landmarks, dtype=np.float64)
    s_lips, s_jaw = jitter(s_lm, LIPS), jitter(s_lm, JAW)
    s_detail = mouth_detail(source.frames, s_lm)
    d["source"] = {"jitter_lips": s_lips, "jitter_jaw": s_jaw, **{f"mouth_{k}": v for k, v in s_detail.items()}}
    out.jitter_lips, out.jitter_jaw = _ratio(j_lips, s_lips), _ratio(j_jaw, s_jaw)
    out.mouth_sharpness = _ratio(detail["sharpness"], s_detail["sharpness"])
    out.mouth_gamut = _ratio(detail["gamut"], s_detail["gamut"])
    if source.boxes is not None and source.alphas is not None:
        seam = seam_difference(frames, source.frames, source.boxes, source.alphas)
        out.seam_diff = seam if np.isfinite(seam) else None
    return out
