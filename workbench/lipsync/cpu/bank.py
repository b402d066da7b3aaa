"""The mouth bank: which of an avatar's own frames shows the mouth the audio asks for.

A real talking video already contains the person's mouth at many openings. For every output frame the
CPU renderer takes the mouth of the source frame that best matches the target shape instead of drawing
one. The choice is a shortest path (Viterbi) over the frames of one render call:

* unary cost: the source frame's opening, spread and rounding against the target, each measured in the
  avatar's *own* range (the target opening 1 is the widest this person opens, so a match exists); its head
  pose against the output frame's (a mouth from another pose would not sit right); and its motion
  (opening or closing) against the target's motion from the preceding frame;
* transition cost: jumping to a frame that is not a neighbour of the previous choice in the source video
  costs a texture change, so a run of consecutive source frames is preferred when it fits.

The path is solved over a window: the frames of one render call plus, when the caller knows them, the
conditions still pending after it (a stream's look-ahead); only the call's own frames are committed, and
the last committed choice is carried into the next call of the same output sequence (a `BankTrack`), so a
stream that renders one frame at a time keeps runs as a whole-file render does. Candidates per output
frame: the best by unary cost plus the neighbours of the previous frame's candidates and of the carried
choice (a run can continue even when its next frame is not among the best few on its own). Jump cost,
candidate count, neighbours and window are `BankParams`, measured in `bench/bench_bank_stream.py`.
Everything per avatar is computed once from the landmarks (vectorised, milliseconds for thousands of frames).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Openness is inner-lip gap over this many interocular distances (the scale of `MouthState.open`).
GAP_MAX = 0.26
BANK_MIN_RANGE = 0.25  # the avatar's 5th..97th percentile openness must span this much (GAP_MAX units) …
BANK_MIN_FRAMES = 3  # … with at least this many frames in the upper half of that range
WIDTH_MIN_RANGE = 0.08  # interocular distances of mouth width change that count as fully spread / rounded
RANGE_PCT = (5.0, 97.0)  # the avatar's closed and widest opening, percentiles of its frames
# Unary cost scales (a mismatch of one scale costs 1).
SIGMA_OPEN = 0.1  # of the avatar's opening range
SIGMA_SHAPE = 0.35  # spread / rounding, 0..1
SIGMA_POSE = 0.03  # rms landmark distance, interocular distances
SIGMA_MOTION = 0.15  # frame-to-frame change of opening, of the avatar's range
MOTION_WEIGHT = 0.3
OWN_FRAME_BONUS = 1.0  # the output frame's own mouth needs no warp and no colour match
JUMP_COST = 2.0  # a texture change: the next source frame is not a neighbour of the previous one
CANDIDATES = 16  # per output frame, the best by unary cost enter the path search
LOOKAHEAD = 8  # pending frames beyond a render call that the path is solved over (not committed)

_STABLE = np.r_[0:3, 14:17, 27:48]  # jaw ends, nose, eyes: move with the head, not with the mouth
_INNER_UP, _INNER_LO = [61, 62, 63], [67, 66, 65]


def _axes(lms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    left, right = lms[..., 36:42, :].mean(axis=-2), lms[..., 42:48, :].mean(axis=-2)
    v = right - left
    iod = np.maximum(np.linalg.norm(v, axis=-1), 1e-6)
    ex = v / iod[..., None]
    ey = np.stack([-ex[..., 1], ex[..., 0]], axis=-1)
    return ex, ey, iod


def raw_openness(lms: np.ndarray) -> np.ndarray:
    """Inner-lip gap over GAP_MAX interocular distances, for landmarks (..., 68, 2)."""
    lm = np.asarray(lms, dtype=np.float64)
    _, ey, iod = _axes(lm)
    gap = np.mean(np.sum((lm[..., _INNER_LO, :] - lm[..., _INNER_UP, :]) * ey[..., None, :], axis=-1), axis=-1)
    return np.clip(gap / (GAP_MAX * iod), 0.0, None)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (rotation, uniform scale, shift) taking points src onto dst."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - ms, dst - md
    denom = float(np.sum(s * s)) or 1e-9
    a = float(np.sum(s * d)) / denom
    b = float(np.sum(s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0])) / denom
    rot = np.array([[a, -b], [b, a]])
    return np.concatenate([rot, (md - rot @ ms)[:, None]], axis=1)


def stable_similarity(lm_src: np.ndarray, lm_dst: np.ndarray) -> np.ndarray:
    """The similarity taking one frame's head onto another's, fitted on landmarks that do not move with the mouth."""
    return similarity(lm_src[_STABLE], lm_dst[_STABLE])


@dataclass(frozen=True)
class BankParams:
    """How the path search trades shape match against texture continuity (defaults measured on talk1/talk2,
    `bench/bench_bank_stream.py --sweep`)."""

    jump_cost: float = JUMP_COST  # unary-cost units a jump to a non-neighbouring source frame costs
    candidates: int = CANDIDATES  # best-by-unary source frames per output frame
    neighbours: bool = True  # also the +-1 neighbours of the previous frame's candidates and of the carry
    lookahead: int = LOOKAHEAD  # pending frames a stream passes beyond each call (0: only the call's own)

    def __post_init__(self) -> None:
        if not (self.jump_cost >= 0 and np.isfinite(self.jump_cost)):
            raise ValueError(f"bank jump_cost must be a finite number >= 0, got {self.jump_cost}")
        if not 1 <= int(self.candidates) <= 256:
            raise ValueError(f"bank candidates must be 1..256, got {self.candidates}")
        if not 0 <= int(self.lookahead) <= 64:
            raise ValueError(f"bank lookahead must be 0..64 frames, got {self.lookahead}")


@dataclass
class _Carry:
    out_index: int  # avatar frame index of the last output frame
    source: int  # the source frame its mouth came from
    target_open: float


_UNARY_CACHE = 96  # unary rows a track keeps: a sliding window recomputes the same frames' costs otherwise


@dataclass
class BankTrack:
    """One output sequence's memory (a reply in a stream, a file): the last committed choice and the unary
    costs of frames already seen in a window, so two sequences rendered in turn never steer each other."""

    carry: _Carry | None = None
    unary: OrderedDict = field(default_factory=OrderedDict)
    # Whether this sequence's still mouths take the renderer's full-resolution pass (`CPURenderer.full_res`).
    full_res: bool = True

    def reset(self) -> None:
        self.carry = None
        self.unary.clear()


class MouthBank:
    """Per-avatar mouth descriptors and the per-call path search. Holds landmarks-derived arrays only."""

    def __init__(self, landmarks: np.ndarray, params: BankParams | None = None):
        self.params = params or BankParams()
        lms = np.asarray(landmarks, dtype=np.float64)
        n = len(lms)
        self.n = n
        ex, _, iod = _axes(lms)
        raw = raw_openness(lms)
        lo, hi = np.percentile(raw, RANGE_PCT)
        self.open_lo, self.open_hi = float(lo), float(hi)
        self.enabled = bool(
            n >= BANK_MIN_FRAMES
            and hi - lo >= BANK_MIN_RANGE
            and int(np.sum(raw >= lo + 0.5 * (hi - lo))) >= BANK_MIN_FRAMES
        )
        self.raw_open = raw
        self.open = np.clip((raw - lo) / max(hi - lo, 1e-6), 0.0, 1.2)
        # Mouth width over iod, with the part explained by opening removed (opening draws the corners in).
        width = np.sum((lms[:, 54] - lms[:, 48]) * ex, axis=1) / iod
        if n >= 3 and np.ptp(raw) > 1e-6:
            slope, icpt = np.polyfit(raw, width, 1)
            resid = width - (slope * raw + icpt)
        else:
            resid = width - width.mean()
        q_lo, q_hi = np.percentile(resid, [5.0, 95.0])
        # Scaled to this person's range, but never below WIDTH_MIN_RANGE: landmark jitter on a mouth that
        # does not change shape must not read as spreading or rounding.
        self.spread = np.clip(resid / max(q_hi, WIDTH_MIN_RANGE), 0.0, 1.0)
        self.round = np.clip(resid / min(q_lo, -WIDTH_MIN_RANGE), 0.0, 1.0)
        # The source's own motion: opening change from the previous source frame.
        self.motion = np.diff(self.open, prepend=self.open[:1])
        self.pose = self._pose_descriptors(lms)
        self._track = BankTrack()  # callers that pass no track of their own share this one

    @staticmethod
    def _pose_descriptors(lms: np.ndarray) -> np.ndarray:
        """Landmarks that do not move with the mouth, in eye-normalised coordinates, flattened."""
        left, right = lms[:, 36:42].mean(axis=1), lms[:, 42:48].mean(axis=1)
        centre = (left + right) / 2
        v = right - left
        iod = np.maximum(np.linalg.norm(v, axis=1), 1e-6)
        c, s = v[:, 0] / iod, v[:, 1] / iod
        rel = lms[:, _STABLE] - centre[:, None]
        x = (rel[..., 0] * c[:, None] + rel[..., 1] * s[:, None]) / iod[:, None]
        y = (-rel[..., 0] * s[:, None] + rel[..., 1] * c[:, None]) / iod[:, None]
        return np.concatenate([x, y], axis=1)

    def target_open(self, open_: float) -> float:
        """A target opening (0..1) in this avatar's GAP_MAX units: 0 is its closed mouth, 1 its widest."""
        return self.open_lo + float(np.clip(open_, 0.0, 1.0)) * (self.open_hi - self.open_lo)

    def _unary(self, i: int, state: tuple[float, float, float], prev_open: float | None) -> np.ndarray:
        o, w, r = state
        cost = ((self.open - o) / SIGMA_OPEN) ** 2
        cost += ((self.spread - w) / SIGMA_SHAPE) ** 2 + ((self.round - r) / SIGMA_SHAPE) ** 2
        pose = np.sqrt(np.mean((self.pose - self.pose[i]) ** 2, axis=1))
        cost += (pose / SIGMA_POSE) ** 2
        if prev_open is not None:
            cost += MOTION_WEIGHT * ((self.motion - (o - prev_open)) / SIGMA_MOTION) ** 2
        cost[i] -= OWN_FRAME_BONUS
        return cost

    def _unary_cached(
        self, track: BankTrack, i: int, st: tuple[float, float, float], prev_open: float | None
    ) -> np.ndarray:
        key = (i, st, prev_open)
        u = track.unary.get(key)
        if u is None:
            u = self._unary(i, st, prev_open)
            track.unary[key] = u
            while len(track.unary) > _UNARY_CACHE:
                track.unary.popitem(last=False)
        return u

    def select(
        self,
        frame_indices: Sequence[int],
        states: Sequence[tuple[float, float, float]],
        lookahead: Sequence[tuple[int, tuple[float, float, float]]] = (),
        track: BankTrack | None = None,
    ) -> list[int]:
        """The source frame for each output frame (avatar frame index, (open, width, round) target).

        `lookahead`: (avatar frame index, target) of the frames that follow, solved over but not committed.
        `track`: the output sequence these frames belong to (default: one shared by all such callers)."""
        t_n = len(frame_indices)
        if t_n == 0:
            return []
        if not self.enabled:
            return [int(i) for i in frame_indices]
        track = self._track if track is None else track
        prm = self.params
        carry = track.carry
        # The carried choice applies only when this call continues the sequence that made it.
        if carry is not None and abs(int(frame_indices[0]) - carry.out_index) > 1:
            carry = None
        look = list(lookahead)[: prm.lookahead]
        idx = [int(i) for i in frame_indices] + [int(i) for i, _ in look]
        sts = [tuple(float(np.clip(v, 0.0, 1.0)) for v in st) for st in list(states) + [st for _, st in look]]
        k = min(int(prm.candidates), self.n)
        cands, costs = [], []
        prev_open = carry.target_open if carry is not None else None
        prev_top = np.array([carry.source], np.int64) if carry is not None else None
        for i, st in zip(idx, sts, strict=True):
            u = self._unary_cached(track, i, st, prev_open)
            top = np.argpartition(u, k - 1)[:k] if k < self.n else np.arange(self.n)
            c = top
            if prm.neighbours and prev_top is not None:
                near = np.concatenate([prev_top - 1, prev_top + 1])
                c = np.unique(np.concatenate([top, near[(near >= 0) & (near < self.n)]]))
            cands.append(c)
            costs.append(u[c])
            prev_open = st[0]
            prev_top = top
        # Viterbi over the candidates.
        jc = float(prm.jump_cost)
        total = costs[0].copy()
        if carry is not None:
            total += jc * (np.abs(cands[0] - carry.source) > 1)
        back = []
        for t in range(1, len(idx)):
            jump = jc * (np.abs(cands[t][None, :] - cands[t - 1][:, None]) > 1)  # (prev, cur)
            step = total[:, None] + jump
            arg = np.argmin(step, axis=0)
            back.append(arg)
            total = step[arg, np.arange(len(cands[t]))] + costs[t]
        pick = int(np.argmin(total))
        path = [pick]
        for arg in reversed(back):
            pick = int(arg[pick])
            path.append(pick)
        path.reverse()
        chosen = [int(cands[t][p]) for t, p in enumerate(path)][:t_n]  # commit the call's own frames only
        track.carry = _Carry(idx[t_n - 1], chosen[-1], sts[t_n - 1][0])
        return chosen

    def reset(self) -> None:
        """Forget the shared track's carried choice (a new stream)."""
        self._track.reset()
