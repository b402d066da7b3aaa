"""The weight-free CPU renderer: audio-driven lip and jaw motion by classical image warping.

For each output frame the avatar's 68 landmarks (mapped into the 256x256 crop) are moved to the mouth
state that the audio asks for, and the lower face is warped piecewise-affinely over a triangulation of
the landmarks plus fixed anchors outside the crop, so nothing but the lower face moves. Two sources of
mouth texture are combined:

* the frame itself, warped (always available; a painted or still portrait has nothing else);
* a mouth bank: other frames of the same avatar whose measured lip gap is close to the target, warped
  onto this frame's geometry and blended in through a feathered lip-region mask — photoreal teeth and
  tongue where the source video already shows such shapes.

Where the target opens the lips wider than the source texture was open, an inner mouth (a shaded dark
cavity, upper and lower teeth and a tongue, coloured from the avatar's own lips and skin) is drawn inside
the warped inner lips; where it presses lips together that the source showed apart, the seam where they
meet covers the squeezed teeth. The finished crop goes back through `Compositor.paste`, the same path as
MuseTalk, so bbox_shift and mask parameters mean the same thing for both renderers.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from workbench.avatars.model import Avatar
from workbench.config import CROP_SIZE, N_LANDMARKS
from workbench.lipsync.base import Renderer
from workbench.lipsync.compositor import Compositor
from workbench.lipsync.mouth import MouthFrontend, MouthState

# --- the mouth model, in interocular distances (D) ------------------------------------------
GAP_MAX = 0.26  # inner-lip gap at open=1
JAW_ROOM_USE = 0.6  # the chin may use this share of the room between it and the crop's lower edge
BANK_MIN_OPEN = 0.3  # the bank is used when the avatar shows at least a few frames this open …
BANK_MIN_FRAMES = 3  # … this many …
BANK_MIN_RANGE = 0.25  # … and its mouth really moves: 10th to 90th percentile of openness at least this far apart
BANK_TOLERANCE = 0.12  # bank candidates lie within this openness of the target
SYNTH_MIN_GAP_PX = 1.5  # below this target gap (crop pixels) no inner mouth is drawn
SEAM_MIN_SQUEEZE_PX = 1.5  # closing a source's lips by more than this draws the seam where they meet …
SEAM_MAX_GAP = 0.05  # … while the target gap is below this (in D)

# Vertical motion of each landmark per pixel of lip-gap change (the jaw rows are scaled down when the
# chin meets the crop's lower edge). Inner lower lip minus inner upper lip is exactly 1.
_V_OPEN = np.zeros(N_LANDMARKS)
_V_OPEN[[2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]] = [
    0.03,
    0.1,
    0.22,
    0.38,
    0.55,
    0.68,
    0.75,
    0.68,
    0.55,
    0.38,
    0.22,
    0.1,
    0.03,
]
_JAW = np.arange(2, 15)
_V_OPEN[[49, 50, 51, 52, 53]] = [-0.08, -0.12, -0.12, -0.12, -0.08]
_V_OPEN[[61, 62, 63]] = -0.2
_V_OPEN[[48, 54]] = 0.35
_V_OPEN[[60, 64]] = 0.4
_V_OPEN[[55, 56, 57, 58, 59]] = [0.6, 0.78, 0.8, 0.78, 0.6]
_V_OPEN[[65, 66, 67]] = 0.8
# Mouth corners draw in a little as the jaw drops (per pixel of gap change, along the mouth axis, inward).
_H_OPEN = np.zeros(N_LANDMARKS)
_H_OPEN[[48, 60]] = 0.08
_H_OPEN[[54, 64]] = -0.08
# Spreading (per unit width, in D): corners out, lips thinner.
_H_WIDTH = np.zeros(N_LANDMARKS)
_H_WIDTH[[48, 54]] = [-0.06, 0.06]
_H_WIDTH[[60, 64]] = [-0.05, 0.05]
_H_WIDTH[[49, 59]] = -0.03
_H_WIDTH[[53, 55]] = 0.03
_V_WIDTH = np.zeros(N_LANDMARKS)
_V_WIDTH[[50, 51, 52]] = 0.01
_V_WIDTH[[56, 57, 58]] = -0.01
# Rounding (per unit round, in D): corners in, lips pushed out.
_H_ROUND = np.zeros(N_LANDMARKS)
_H_ROUND[[48, 60]] = 0.07
_H_ROUND[[54, 64]] = -0.07
_H_ROUND[[49, 59, 61, 67]] = [0.05, 0.05, 0.04, 0.04]
_H_ROUND[[53, 55, 63, 65]] = [-0.05, -0.05, -0.04, -0.04]
_V_ROUND = np.zeros(N_LANDMARKS)
_V_ROUND[[50, 51, 52]] = -0.025
_V_ROUND[[56, 57, 58]] = 0.025

_MOVES = (_V_OPEN != 0) | (_H_OPEN != 0) | (_H_WIDTH != 0) | (_V_WIDTH != 0) | (_H_ROUND != 0) | (_V_ROUND != 0)
_INNER_UP, _INNER_LO = [61, 62, 63], [67, 66, 65]
_OUTER_LIP = np.arange(48, 60)
_INNER_LIP = np.arange(60, 68)


def _anchors(size: int) -> np.ndarray:
    """Fixed points a little outside the crop, so the triangulation covers every pixel and its rim stays put."""
    lo, hi = -8.0, size + 8.0
    t = np.linspace(lo, hi, 5)
    ring = [(x, lo) for x in t] + [(x, hi) for x in t] + [(lo, y) for y in t[1:-1]] + [(hi, y) for y in t[1:-1]]
    return np.asarray(ring, dtype=np.float64)


_ANCHORS = _anchors(CROP_SIZE)
_GRID_Y, _GRID_X = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE].astype(np.float32)
_MOVES_ALL = np.concatenate([_MOVES, np.zeros(len(_ANCHORS), bool)])  # anchors never move


class RenderInputError(ValueError):
    """The avatar or the conditions handed to the CPU renderer cannot be rendered."""


@dataclass
class _FrameRig:
    """What the renderer needs about one avatar frame, computed once."""

    pts: np.ndarray  # (68 + anchors, 2) float64 crop-space vertices
    tris: np.ndarray  # (M, 3) int triangulation of pts, made on an opened mouth so no triangle spans the lips
    moving: np.ndarray  # (K,) indices of triangles with a moving vertex
    ex: np.ndarray  # unit vector along the eye line (to the avatar's left eye, image right)
    ey: np.ndarray  # unit vector down the face
    iod: float  # interocular distance, crop px
    gap: float  # measured inner-lip gap, crop px
    jaw_room: float  # px the chin may still drop inside the crop
    lip_bgr: np.ndarray  # mean colour of the lips
    skin_bgr: np.ndarray  # mean colour of the skin above the upper lip


def _crop_landmarks(avatar: Avatar, i: int | slice = slice(None)) -> np.ndarray:
    """Landmarks of frame(s) i in the 256x256 crop's pixel coordinates."""
    boxes = np.atleast_2d(avatar.boxes[i]).astype(np.float64)
    lm = avatar.landmarks[i].astype(np.float64).reshape(len(boxes), N_LANDMARKS, 2)
    size = np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0)
    out = (lm - boxes[:, None, :2]) * (CROP_SIZE / size)[:, None, :]
    return out[0] if isinstance(i, int | np.integer) else out


def _face_axes(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    left, right = p[36:42].mean(axis=0), p[42:48].mean(axis=0)
    v = right - left
    iod = float(np.hypot(*v))
    if iod < 1e-3:
        raise RenderInputError("landmarks have both eyes at one point; the avatar's landmarks are unusable")
    ex = v / iod
    ey = np.array([-ex[1], ex[0]])
    return ex, ey, iod


def _lip_gap(p: np.ndarray, ey: np.ndarray) -> float:
    return float(max(0.0, np.mean((p[_INNER_LO] - p[_INNER_UP]) @ ey)))


def measure_openness(landmarks: np.ndarray) -> np.ndarray:
    """Openness (same scale as `MouthState.open`) of 68-point landmarks, shape (..., 68, 2): inner-lip gap over
    GAP_MAX interocular distances. Used for the mouth bank, and by the tests on re-detected landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    left, right = lm[..., 36:42, :].mean(axis=-2), lm[..., 42:48, :].mean(axis=-2)
    v = right - left
    iod = np.maximum(np.linalg.norm(v, axis=-1), 1e-6)
    ey = np.stack([-v[..., 1], v[..., 0]], axis=-1) / iod[..., None]
    gap = np.mean(np.sum((lm[..., _INNER_LO, :] - lm[..., _INNER_UP, :]) * ey[..., None, :], axis=-1), axis=-1)
    return np.clip(gap / (GAP_MAX * iod), 0.0, None)


def _displace(
    p: np.ndarray, ex: np.ndarray, ey: np.ndarray, iod: float, delta: float, jaw_room: float, width: float, rnd: float
) -> np.ndarray:
    """Landmarks moved by a lip-gap change `delta` (px) and a spread/round setting."""
    v = _V_OPEN * delta
    if delta > 0:
        chin = _V_OPEN[8] * delta
        if chin > jaw_room:
            v[_JAW] *= jaw_room / chin
    h = _H_OPEN * delta + (_H_WIDTH * width + _H_ROUND * rnd) * iod
    v = v + (_V_WIDTH * width + _V_ROUND * rnd) * iod
    return p + h[:, None] * ex[None, :] + v[:, None] * ey[None, :]


def _affines(dst: np.ndarray, src: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(M, 2, 3) affine maps taking each dst triangle onto its src triangle; degenerate ones map to their first vertex."""
    d = dst[tris]  # (M, 3, 2)
    s = src[tris]
    dmat = np.concatenate([d, np.ones((len(tris), 3, 1))], axis=2)  # rows [x, y, 1]
    det = np.linalg.det(dmat)
    ok = np.abs(det) > 1e-6
    out = np.zeros((len(tris), 2, 3))
    if ok.any():
        # Solve dmat @ A^T = s for every triangle.
        out[ok] = np.transpose(np.linalg.solve(dmat[ok], s[ok]), (0, 2, 1))
    out[~ok, :, 2] = s[~ok, 0]
    return out


class _AvatarRig:
    """Per-avatar state, bounded by the avatar's length: per-frame rigs, paste-back masks and the mouth bank.
    It keeps no reference to the avatar itself."""

    def __init__(self, avatar: Avatar):
        n = len(avatar)
        if avatar.crops.shape[1:3] != (CROP_SIZE, CROP_SIZE) or avatar.masks.shape[1:3] != (CROP_SIZE, CROP_SIZE):
            raise RenderInputError(
                f"avatar crops and masks must be {CROP_SIZE}x{CROP_SIZE}; got {avatar.crops.shape[1:3]}"
            )
        if avatar.landmarks.shape[1:] != (N_LANDMARKS, 2) or len(avatar.landmarks) != n:
            raise RenderInputError(f"avatar landmarks must be ({n}, 68, 2); got {avatar.landmarks.shape}")
        self.n = n
        self.alpha: dict[int, np.ndarray] = {}  # the compositor's resized masks
        self.frames: dict[int, _FrameRig] = {}
        self.lock = threading.Lock()
        # The bank: every frame's own openness, and a pose descriptor to pick the frame most like this one.
        crop_lms = _crop_landmarks(avatar)
        self.openness = measure_openness(crop_lms)
        self.pose = self._pose_descriptors(crop_lms)
        lo, hi = np.percentile(self.openness, [10, 90])
        self.bank_enabled = bool(
            int(np.sum(self.openness >= BANK_MIN_OPEN)) >= BANK_MIN_FRAMES and hi - lo >= BANK_MIN_RANGE
        )

    @staticmethod
    def _pose_descriptors(lms: np.ndarray) -> np.ndarray:
        """Landmarks that do not move with the mouth (jaw ends, brows, nose, eyes), in eye-normalised coordinates."""
        keep = np.r_[0:2, 15:48]
        left, right = lms[:, 36:42].mean(axis=1), lms[:, 42:48].mean(axis=1)
        centre = (left + right) / 2
        v = right - left
        iod = np.maximum(np.linalg.norm(v, axis=1), 1e-6)
        c, s = v[:, 0] / iod, v[:, 1] / iod
        rel = lms[:, keep] - centre[:, None]
        x = (rel[..., 0] * c[:, None] + rel[..., 1] * s[:, None]) / iod[:, None]
        y = (-rel[..., 0] * s[:, None] + rel[..., 1] * c[:, None]) / iod[:, None]
        return np.concatenate([x, y], axis=1)

    def frame(self, avatar: Avatar, i: int) -> _FrameRig:
        rig = self.frames.get(i)
        if rig is None:
            with self.lock:
                rig = self.frames.get(i)
                if rig is None:
                    rig = self._build(avatar, i)
                    self.frames[i] = rig
        return rig

    @staticmethod
    def _build(avatar: Avatar, i: int) -> _FrameRig:
        p = _crop_landmarks(avatar, i)
        ex, ey, iod = _face_axes(p)
        gap = _lip_gap(p, ey)
        chin_depth = float(((CROP_SIZE - 1) - p[8, 1]) / max(ey[1], 0.5))
        jaw_room = max(0.0, JAW_ROOM_USE * chin_depth)
        # Triangulate an opened mouth: closed lips put upper and lower inner points on top of each other.
        opened = _displace(p, ex, ey, iod, max(0.0, 0.5 * GAP_MAX * iod - gap), jaw_room, 0.0, 0.0)
        pts = np.concatenate([p, _ANCHORS])
        tris = Delaunay(np.concatenate([opened, _ANCHORS])).simplices.astype(np.int32)
        moving = np.flatnonzero(_MOVES_ALL[tris].any(axis=1))
        crop = avatar.crops[i]
        lip_mask = np.zeros(crop.shape[:2], np.uint8)
        cv2.fillPoly(lip_mask, [np.round(p[_OUTER_LIP]).astype(np.int32)], 255)
        cv2.fillPoly(lip_mask, [np.round(p[_INNER_LIP]).astype(np.int32)], 0)
        lip_bgr = np.array(cv2.mean(crop, mask=lip_mask)[:3]) if lip_mask.any() else np.array([90.0, 90.0, 160.0])
        skin_mask = np.zeros(crop.shape[:2], np.uint8)
        skin_poly = np.stack([p[31], p[35], p[54] - 0.1 * iod * ey, p[48] - 0.1 * iod * ey])
        cv2.fillPoly(skin_mask, [np.round(skin_poly).astype(np.int32)], 255)
        skin_bgr = np.array(cv2.mean(crop, mask=skin_mask)[:3]) if skin_mask.any() else np.array([150.0, 170.0, 200.0])
        return _FrameRig(
            pts=pts,
            tris=tris,
            moving=moving,
            ex=ex,
            ey=ey,
            iod=iod,
            gap=gap,
            jaw_room=jaw_room,
            lip_bgr=lip_bgr,
            skin_bgr=skin_bgr,
        )

    def bank_frame(self, i: int, target: float) -> int:
        """The avatar frame whose mouth texture best shows openness `target` at frame i's pose (i itself if none better)."""
        own_err = abs(self.openness[i] - target)
        if not self.bank_enabled or own_err <= BANK_TOLERANCE:
            return i  # the frame's own mouth, warped, is close enough: no texture swap, no flicker
        # Quantise so small changes of the target do not flip between bank frames every frame.
        t = round(target * 20) / 20
        err = np.abs(self.openness - t)
        cand = np.flatnonzero(err <= BANK_TOLERANCE)
        if cand.size == 0:
            j = int(np.argmin(err))
            return j if err[j] < own_err - BANK_TOLERANCE else i
        pose = np.sqrt(np.mean((self.pose[cand] - self.pose[i]) ** 2, axis=1))
        score = pose / 0.02 + err[cand] / BANK_TOLERANCE
        return int(cand[np.argmin(score)])


def _bbox(pts: np.ndarray, margin: float, limit: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Integer box around pts grown by margin, clipped to limit (x0, y0, x1, y1)."""
    lx0, ly0, lx1, ly1 = limit
    x0 = int(np.clip(np.floor(pts[:, 0].min() - margin), lx0, lx1))
    y0 = int(np.clip(np.floor(pts[:, 1].min() - margin), ly0, ly1))
    x1 = int(np.clip(np.ceil(pts[:, 0].max() + margin) + 1, lx0, lx1))
    y1 = int(np.clip(np.ceil(pts[:, 1].max() + margin) + 1, ly0, ly1))
    return x0, y0, x1, y1


def _feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    m = mask.astype(np.float32) / 255.0
    if sigma > 0.3:
        m = cv2.GaussianBlur(m, (0, 0), sigma)
    return m


class CPURenderer(Renderer):
    """Weight-free renderer: MouthFrontend conditions → warped lower face → the shared compositor."""

    name = "cpu"

    def __init__(self, use_bank: bool = True, teeth: bool = True, max_avatars: int = 4):
        self.use_bank = use_bank
        self.teeth = teeth
        self.max_avatars = max_avatars
        # Keyed by id(avatar); a weak reference drops the entry when the avatar is garbage-collected.
        self._rigs: OrderedDict[int, tuple[weakref.ref, _AvatarRig]] = OrderedDict()
        self._lock = threading.Lock()

    # --- Renderer ---------------------------------------------------------------------------
    def new_frontend(self, sample_rate: int | None = None) -> MouthFrontend:
        return MouthFrontend() if sample_rate is None else MouthFrontend(sample_rate=sample_rate)

    def silence_condition(self) -> MouthState:
        return MouthState()

    def describe(self) -> str:
        return "cpu (weight-free landmark warping" + (" + mouth bank)" if self.use_bank else ")")

    def render(
        self, avatar: Avatar, frame_indices: Sequence[int], conditions: Sequence[MouthState]
    ) -> list[np.ndarray]:
        if len(frame_indices) != len(conditions):
            raise RenderInputError(f"{len(frame_indices)} frame indices but {len(conditions)} conditions")
        rig = self._rig(avatar)
        compositor = Compositor(avatar, alpha_cache=rig.alpha)
        out = []
        for i, cond in zip(frame_indices, conditions, strict=True):
            face = self._render_face(avatar, rig, int(i), cond)
            out.append(compositor.paste(int(i), face))
        return out

    def target_landmarks(self, avatar: Avatar, i: int, state: MouthState) -> np.ndarray:
        """(68, 2) full-frame landmarks of frame i with its mouth moved to `state`: the shape render draws."""
        rig = self._rig(avatar)
        fr = rig.frame(avatar, int(i))
        crop_lm = self._mouth_shape(fr, state)
        x1, y1, x2, y2 = (float(v) for v in avatar.boxes[int(i)])
        return crop_lm / CROP_SIZE * [max(x2 - x1, 1.0), max(y2 - y1, 1.0)] + [x1, y1]

    @staticmethod
    def _mouth_shape(fr: _FrameRig, state: MouthState) -> np.ndarray:
        open_ = float(np.clip(state.open, 0.0, 1.0))
        width = float(np.clip(state.width, 0.0, 1.0))
        rnd = float(np.clip(state.round, 0.0, 1.0))
        target_gap = open_ * GAP_MAX * fr.iod
        return _displace(fr.pts[:N_LANDMARKS], fr.ex, fr.ey, fr.iod, target_gap - fr.gap, fr.jaw_room, width, rnd)

    def render_face(self, avatar: Avatar, i: int, state: MouthState) -> np.ndarray:
        """The 256x256 crop of frame i with the mouth in `state`, before paste-back."""
        return self._render_face(avatar, self._rig(avatar), int(i), state)

    # --- internals --------------------------------------------------------------------------
    def _rig(self, avatar: Avatar) -> _AvatarRig:
        key = id(avatar)
        with self._lock:
            entry = self._rigs.get(key)
            if entry is not None and entry[0]() is avatar:
                self._rigs.move_to_end(key)
                return entry[1]
            rig = _AvatarRig(avatar)
            self._rigs[key] = (weakref.ref(avatar, lambda _ref, k=key: self._forget(k, _ref)), rig)
            while len(self._rigs) > self.max_avatars:
                self._rigs.popitem(last=False)
            return rig

    def _forget(self, key: int, ref: weakref.ref) -> None:
        with self._lock:
            entry = self._rigs.get(key)
            if entry is not None and entry[0] is ref:
                del self._rigs[key]

    def _render_face(self, avatar: Avatar, rig: _AvatarRig, i: int, state: MouthState) -> np.ndarray:
        if not isinstance(state, MouthState):
            raise RenderInputError(f"the CPU renderer takes MouthState conditions, got {type(state).__name__}")
        if not 0 <= i < rig.n:
            raise RenderInputError(f"frame index {i} outside the avatar's {rig.n} frames")
        fr = rig.frame(avatar, i)
        crop = avatar.crops[i]
        open_ = float(np.clip(state.open, 0.0, 1.0))
        target_gap = open_ * GAP_MAX * fr.iod
        dst_lm = self._mouth_shape(fr, state)
        dst = np.concatenate([dst_lm, _ANCHORS])

        tris = fr.tris[fr.moving]
        x0, y0, x1, y1 = _bbox(dst[tris].reshape(-1, 2), 1.0, (0, 0, CROP_SIZE, CROP_SIZE))
        if x1 <= x0 or y1 <= y0:
            return crop.copy()

        # Which moving triangle covers each pixel of the warped box (-1: none, the pixel stays).
        label = np.full((y1 - y0, x1 - x0), -1, np.int32)
        shift = 4
        fixed = np.round((dst[tris] - [x0, y0]) * (1 << shift)).astype(np.int32)
        for t in range(len(tris)):
            cv2.fillConvexPoly(label, fixed[t], (t,), lineType=cv2.LINE_8, shift=shift)

        def warp(src_img: np.ndarray, src_pts: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
            bx0, by0, bx1, by1 = box
            aff = _affines(dst, src_pts, tris).reshape(-1, 6)
            # Column -1 is the identity, which label -1 picks.
            coef = np.concatenate([aff, [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]]]).T.astype(np.float32)
            c = coef[:, label[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]]
            gx, gy = _GRID_X[by0:by1, bx0:bx1], _GRID_Y[by0:by1, bx0:bx1]
            mx = c[0] * gx + c[1] * gy + c[2]
            my = c[3] * gx + c[4] * gy + c[5]
            return cv2.remap(src_img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)

        face = crop.copy()
        face[y0:y1, x0:x1] = warp(crop, fr.pts, (x0, y0, x1, y1))
        src_gap = fr.gap
        lip_bgr, skin_bgr = fr.lip_bgr, fr.skin_bgr

        j = rig.bank_frame(i, open_) if self.use_bank else i
        if j != i:
            frj = rig.frame(avatar, j)
            # Lip region, grown around the mouth centre, feathered; the bank's colour is matched on its rim.
            centre = dst_lm[_OUTER_LIP].mean(axis=0)
            region_pts = centre + 1.45 * (dst_lm[_OUTER_LIP] - centre) + 0.05 * fr.iod * fr.ey
            sigma = 0.06 * fr.iod
            box = _bbox(region_pts, 3.0 * sigma + 2.0, (x0, y0, x1, y1))
            bx0, by0, bx1, by1 = box
            if bx1 > bx0 and by1 > by0:
                bank = warp(avatar.crops[j], frj.pts, box).astype(np.float32)
                base = face[by0:by1, bx0:bx1].astype(np.float32)
                alpha = _feather(_fill(region_pts - [bx0, by0], by1 - by0, bx1 - bx0), sigma)
                rim = (alpha > 0.05) & (alpha < 0.6)
                if rim.any():
                    bank += (base[rim].mean(axis=0) - bank[rim].mean(axis=0))[None, None, :]
                base += alpha[..., None] * (bank - base)
                face[by0:by1, bx0:bx1] = np.clip(base + 0.5, 0, 255).astype(np.uint8)
                src_gap = frj.gap * fr.iod / max(frj.iod, 1e-6)
                lip_bgr = frj.lip_bgr

        if target_gap >= SYNTH_MIN_GAP_PX:
            # Draw an inner mouth where the texture source was not open as wide as the target.
            synth_w = float(np.clip(1.6 * (1.0 - src_gap / target_gap), 0.0, 1.0))
            if synth_w > 0.0:
                self._inner_mouth(face, dst_lm, fr, target_gap, synth_w, lip_bgr, skin_bgr)
        if src_gap - target_gap > SEAM_MIN_SQUEEZE_PX and target_gap < SEAM_MAX_GAP * fr.iod:
            # Lips pressed together over an open source leave its teeth squeezed into a line: cover it with the seam.
            seam_w = float(np.clip((src_gap - target_gap) / (3.0 * SEAM_MIN_SQUEEZE_PX), 0.0, 1.0))
            seam_w *= float(np.clip(1.0 - target_gap / (SEAM_MAX_GAP * fr.iod), 0.0, 1.0))
            self._lip_seam(face, dst_lm, fr, seam_w, lip_bgr)
        return face

    @staticmethod
    def _lip_seam(face: np.ndarray, lm: np.ndarray, fr: _FrameRig, weight: float, lip_bgr: np.ndarray) -> None:
        lens = _MouthLens(lm, fr.ex, fr.ey)
        bx0, by0, bx1, by1 = _bbox(lens.outline(), 4.0, (0, 0, CROP_SIZE, CROP_SIZE))
        if bx1 <= bx0 or by1 <= by0:
            return
        h, w = by1 - by0, bx1 - bx0
        local = _MouthLens(lm - [bx0, by0], fr.ex, fr.ey)
        alpha = _feather(_fill(local.seam(thickness=1.2 + 0.01 * fr.iod), h, w), 0.6)[..., None] * weight
        roi = face[by0:by1, bx0:bx1].astype(np.float32)
        seam = (0.5 * lip_bgr)[None, None, :]
        roi += alpha * (seam - roi)
        face[by0:by1, bx0:bx1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)

    def _inner_mouth(
        self,
        face: np.ndarray,
        lm: np.ndarray,
        fr: _FrameRig,
        gap: float,
        weight: float,
        lip_bgr: np.ndarray,
        skin_bgr: np.ndarray,
    ) -> None:
        """Draw a shaded cavity, tongue and a hint of upper teeth inside the inner lips of `face`, in place."""
        lens0 = _MouthLens(lm, fr.ex, fr.ey)
        bx0, by0, bx1, by1 = _bbox(lens0.outline(), 3.0 + 0.9 * gap, (0, 0, CROP_SIZE, CROP_SIZE))
        if bx1 <= bx0 or by1 <= by0:
            return
        h, w = by1 - by0, bx1 - bx0
        lens = _MouthLens(lm - [bx0, by0], fr.ex, fr.ey)
        roi = face[by0:by1, bx0:bx1].astype(np.float32)
        mask = _fill(lens.outline(), h, w)
        alpha = _feather(mask, 0.7)
        # Deeper inside is darker: a blurred copy of the mask stands in for depth.
        depth = _feather(mask, max(0.8, 0.3 * gap))
        dark = 0.26 * lip_bgr + np.array([0.0, 0.0, 6.0])
        edge = 0.55 * lip_bgr
        fill = edge[None, None, :] + np.clip(1.6 * depth[..., None], 0, 1) * (dark - edge)[None, None, :]
        if gap > 0.12 * fr.iod:
            # The tongue: a soft, dull-red mound rising from the lower lip in a wide-open mouth.
            tongue = _fill(lens.band(0.6, lower=True, height=0.3 * gap), h, w)
            t_alpha = _feather(tongue, 0.12 * gap) * 0.6
            tongue_bgr = 0.6 * lip_bgr + np.array([0.0, 0.0, 12.0])
            fill = fill + t_alpha[..., None] * (tongue_bgr[None, None, :] - fill)
        if self.teeth:
            lum = float(np.dot(skin_bgr, [0.114, 0.587, 0.299]))
            # Off-white a little brighter than the skin, barely warm; the mouth's shade does the rest.
            tooth = np.clip(1.06 * lum * np.array([0.84, 0.94, 1.0]), 0, 250)
            u, v = lens.coords(w, h)
            side = np.clip(np.abs(u) / lens.half_width, 0, 1) ** 2
            # Upper teeth hang from under the upper lip, about half the opening, at most ~0.08 D showing.
            upper_h = min(0.45 * gap, 0.08 * fr.iod)
            t_alpha = _feather(_fill(lens.band(0.66, lower=False, height=upper_h), h, w), 0.5 + 0.06 * upper_h) * alpha
            shade = (1.0 - 0.5 * side) * (0.82 + 0.18 * np.clip((v - lens.upper(u)) / max(upper_h, 1e-3), 0, 1))
            fill = fill + (0.95 * t_alpha[..., None]) * (tooth[None, None, :] * shade[..., None] - fill)
            if gap > 0.14 * fr.iod:
                # Lower teeth: a dimmer, thinner row behind the lower lip of a wide-open mouth.
                lower_h = min(0.15 * gap, 0.03 * fr.iod)
                l_alpha = (
                    _feather(_fill(lens.band(0.5, lower=True, height=lower_h), h, w), 0.5 + 0.06 * lower_h) * alpha
                )
                l_shade = 0.62 * (1.0 - 0.5 * side)
                fill = fill + (0.8 * l_alpha[..., None]) * (tooth[None, None, :] * l_shade[..., None] - fill)
        a = (weight * alpha)[..., None]
        roi += a * (fill - roi)
        face[by0:by1, bx0:bx1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)


class _MouthLens:
    """The inner-lip opening as two smooth curves in face coordinates (u along the eye line, v down the face).

    Landmarks on the inner lips are noisy (dlib wanders on paintings); quadratics fitted through each lip
    give a clean opening that still sits where the warped lips are.
    """

    def __init__(self, lm: np.ndarray, ex: np.ndarray, ey: np.ndarray):
        self.ex, self.ey = ex, ey
        self.c = lm[[61, 62, 63, 65, 66, 67]].mean(axis=0)
        rel = lm - self.c
        u, v = rel @ ex, rel @ ey
        ul, ur = u[60], u[64]
        self.u0, self.half_width = (ul + ur) / 2, max(1.0, (ur - ul) / 2)
        up = [60, 61, 62, 63, 64]
        lo = [60, 67, 66, 65, 64]
        self._up = np.polyfit(u[up] - self.u0, v[up], 2)
        self._lo = np.polyfit(u[lo] - self.u0, v[lo], 2)

    def upper(self, u: np.ndarray) -> np.ndarray:
        return np.polyval(self._up, u)

    def lower(self, u: np.ndarray) -> np.ndarray:
        return np.maximum(np.polyval(self._lo, u), self.upper(u))

    def _to_image(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.c + (u + self.u0)[:, None] * self.ex + v[:, None] * self.ey

    def outline(self, n: int = 32) -> np.ndarray:
        u = np.linspace(-self.half_width, self.half_width, n)
        return np.concatenate([self._to_image(u, self.upper(u)), self._to_image(u[::-1], self.lower(u[::-1]))])

    def band(self, width: float, lower: bool, height: float, n: int = 24) -> np.ndarray:
        """A band `height` tall along the upper lip (teeth) or rising from the lower lip (tongue),
        `width` of the opening wide, thinning towards its ends."""
        u = np.linspace(-width * self.half_width, width * self.half_width, n)
        taper = 1.0 - 0.6 * (u / (width * self.half_width)) ** 2
        if lower:
            edge = self.lower(u)
            return np.concatenate(
                [self._to_image(u, edge + 2.0), self._to_image(u[::-1], (edge - height * taper)[::-1])]
            )
        edge = self.upper(u)
        return np.concatenate([self._to_image(u, edge - 2.0), self._to_image(u[::-1], (edge + height * taper)[::-1])])

    def seam(self, thickness: float, n: int = 24) -> np.ndarray:
        """The line where closed lips meet, `thickness` px either side of the middle of the opening, tapering."""
        u = np.linspace(-self.half_width, self.half_width, n)
        mid = 0.5 * (self.upper(u) + self.lower(u))
        half = 0.5 * (self.lower(u) - self.upper(u)) + thickness * (1.0 - 0.7 * (u / self.half_width) ** 2)
        return np.concatenate([self._to_image(u, mid - half), self._to_image(u[::-1], (mid + half)[::-1])])

    def coords(self, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """(u, v) of every pixel of a w x h image, u measured from the opening's centre."""
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        rx, ry = xx - self.c[0], yy - self.c[1]
        return rx * self.ex[0] + ry * self.ex[1] - self.u0, rx * self.ey[0] + ry * self.ey[1]


def _fill(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return m
