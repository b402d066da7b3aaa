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
from workbench.lipsync.mouth_bank import GAP_MAX as MOUTH_GAP_MAX
from workbench.lipsync.mouth_bank import MouthBank, stable_similarity

# --- the mouth model, in interocular distances (D) ------------------------------------------
GAP_MAX = MOUTH_GAP_MAX  # inner-lip gap at open=1
JAW_ROOM_USE = 0.6  # the chin may use this share of the room between it and the crop's lower edge
BANK_REGION_GROW = 1.2  # the bank mouth replaces the outer lips grown by this factor about their centre …
BANK_REGION_MARGIN = 0.16  # … and this many interocular distances further out …
BANK_REGION_SIGMA = 0.04  # … feathered over this many interocular distances
NEAR_RIGID = 0.01  # head similarity this close to a pure shift (rotation/scale terms) is pasted as a pixel shift
SYNTH_MIN_GAP_PX = 1.5  # below this target gap (crop pixels) no inner mouth is drawn
REST_OPEN_MAX = 0.7  # a resting opening above this (GAP_MAX units) is a mouth caught open, not a rest pose
TEETH_SOURCE_MIN_GAP = 0.05  # (D) a source frame this open shows teeth worth keeping over a drawn interior
TEETH_SPLIT = 0.8  # share of the source's inner-lip gap that belongs to the upper teeth (a smile shows mostly those)
TEETH_REVEAL = 0.3  # the teeth rows grow by up to this share as the lips open beyond the source
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
    inner_dark: np.ndarray | None  # the source's own inner-mouth shadow colours (darkest, next): its cavity palette
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
        # The bank: every frame's mouth descriptors, for picking the source frame of each output mouth.
        self.crop_lms = _crop_landmarks(avatar)
        self.openness = measure_openness(self.crop_lms)
        self.bank = MouthBank(self.crop_lms)
        # The resting mouth (median opening): a smile that shows teeth at rest keeps them at a closed target.
        self.rest_open = float(np.median(self.openness))

    @property
    def bank_enabled(self) -> bool:
        return self.bank.enabled

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
        inner_dark = None
        if gap >= TEETH_SOURCE_MIN_GAP * iod:
            inner = np.zeros(crop.shape[:2], np.uint8)
            cv2.fillPoly(inner, [np.round(p[_INNER_LIP]).astype(np.int32)], 255)
            px = crop[inner > 0].astype(np.float64)
            if len(px) >= 20:
                order = np.argsort(px @ [0.114, 0.587, 0.299])
                k = max(3, len(px) // 7)
                inner_dark = np.stack([px[order[:k]].mean(axis=0), px[order[k : 3 * k]].mean(axis=0)])
        return _FrameRig(
            inner_dark=inner_dark,
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


def _bbox(pts: np.ndarray, margin: float, limit: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Integer box around pts grown by margin, clipped to limit (x0, y0, x1, y1)."""
    lx0, ly0, lx1, ly1 = limit
    x0 = int(np.clip(np.floor(pts[:, 0].min() - margin), lx0, lx1))
    y0 = int(np.clip(np.floor(pts[:, 1].min() - margin), ly0, ly1))
    x1 = int(np.clip(np.ceil(pts[:, 0].max() + margin) + 1, lx0, lx1))
    y1 = int(np.clip(np.ceil(pts[:, 1].max() + margin) + 1, ly0, ly1))
    return x0, y0, x1, y1


def _shifted(img: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """img[y0:y0+h, x0:x0+w], edge pixels repeated where the window leaves the image."""
    ys = np.clip(np.arange(y0, y0 + h), 0, img.shape[0] - 1)
    xs = np.clip(np.arange(x0, x0 + w), 0, img.shape[1] - 1)
    return img[ys[:, None], xs[None, :]]


def _match_rim(src: np.ndarray, base: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """src shifted in colour so that its mean on the blend's rim (where it fades in) equals base's there."""
    rim = ((alpha > 0.05) & (alpha < 0.6)).astype(np.uint8)
    if rim.any():
        shift = np.subtract(cv2.mean(base, mask=rim)[:3], cv2.mean(src, mask=rim)[:3]).astype(np.float32)
        src = src + shift[None, None, :]
    return src


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

    def describe_for(self, avatar: Avatar) -> str:
        """The bank is on only for an avatar whose mouth really moves in its video; say which one runs here."""
        if not self.use_bank:
            return "cpu: landmark warping (mouth bank off)"
        if self._rig(avatar).bank_enabled:
            return "cpu: landmark warping + mouth bank"
        return "cpu: landmark warping (no mouth bank: the mouth barely moves in this video)"

    def render(
        self, avatar: Avatar, frame_indices: Sequence[int], conditions: Sequence[MouthState]
    ) -> list[np.ndarray]:
        if len(frame_indices) != len(conditions):
            raise RenderInputError(f"{len(frame_indices)} frame indices but {len(conditions)} conditions")
        rig = self._rig(avatar)
        for i, cond in zip(frame_indices, conditions, strict=True):
            self._check(rig, int(i), cond)
        compositor = Compositor(avatar, alpha_cache=rig.alpha)
        sources = self._sources(rig, frame_indices, conditions)
        out = []
        for i, cond, j in zip(frame_indices, conditions, sources, strict=True):
            # With a bank source the full-resolution pass pastes its mouth; the crop only moves the jaw.
            face, dst_lm, box = self._render_face(avatar, rig, int(i), cond, j, full_res_follows=j is not None)
            frame = compositor.paste_change(int(i), face, avatar.crops[int(i)], box)
            if j is not None:
                self._paste_bank_mouth(frame, avatar, rig, compositor, int(i), j, dst_lm)
            out.append(frame)
        return out

    def _sources(
        self, rig: _AvatarRig, frame_indices: Sequence[int], conditions: Sequence[MouthState]
    ) -> list[int | None]:
        """The bank frame each output mouth comes from, or None where the mouth is warped and drawn."""
        if not (self.use_bank and rig.bank_enabled):
            return [None] * len(frame_indices)
        with rig.lock:
            return list(rig.bank.select([int(i) for i in frame_indices], [c.as_tuple() for c in conditions]))

    def source_frames(self, avatar: Avatar, frame_indices: Sequence[int], conditions: Sequence[MouthState]) -> list:
        """Which avatar frame each output mouth would come from (None: warped and drawn), as `render` chooses."""
        return self._sources(self._rig(avatar), frame_indices, conditions)

    def target_landmarks(self, avatar: Avatar, i: int, state: MouthState, source: int | None = None) -> np.ndarray:
        """(68, 2) full-frame landmarks of frame i with its mouth moved to `state` (or to bank frame `source`'s mouth):
        the shape render draws."""
        rig = self._rig(avatar)
        fr = rig.frame(avatar, int(i))
        crop_lm = self._mouth_shape(rig, fr, state) if source is None else self._bank_shape(rig, int(i), int(source))
        x1, y1, x2, y2 = (float(v) for v in avatar.boxes[int(i)])
        return crop_lm / CROP_SIZE * [max(x2 - x1, 1.0), max(y2 - y1, 1.0)] + [x1, y1]

    @staticmethod
    def _target_gap(rig: _AvatarRig, fr: _FrameRig, state: MouthState) -> float:
        """Inner-lip gap (crop px) for a drawn mouth: from the avatar's resting opening (silence) to GAP_MAX."""
        # A frame already at or below the rest keeps its own mouth at silence (nothing moves).
        rest = min(min(rig.rest_open, REST_OPEN_MAX) * GAP_MAX * fr.iod, fr.gap)
        return rest + float(np.clip(state.open, 0.0, 1.0)) * max(0.0, GAP_MAX * fr.iod - rest)

    def _mouth_shape(self, rig: _AvatarRig, fr: _FrameRig, state: MouthState) -> np.ndarray:
        width = float(np.clip(state.width, 0.0, 1.0))
        rnd = float(np.clip(state.round, 0.0, 1.0))
        target_gap = self._target_gap(rig, fr, state)
        return _displace(fr.pts[:N_LANDMARKS], fr.ex, fr.ey, fr.iod, target_gap - fr.gap, fr.jaw_room, width, rnd)

    @staticmethod
    def _bank_shape(rig: _AvatarRig, i: int, j: int) -> np.ndarray:
        """Frame i's crop landmarks with lips and jaw taken from frame j, carried over by the head's similarity."""
        out = rig.crop_lms[i].copy()
        if j != i:
            a = stable_similarity(rig.crop_lms[j], rig.crop_lms[i])
            src = rig.crop_lms[j][_MOVES]
            out[_MOVES] = src @ a[:, :2].T + a[:, 2]
        return out

    def render_face(self, avatar: Avatar, i: int, state: MouthState, source: int | None = None) -> np.ndarray:
        """The 256x256 crop of frame i with the mouth in `state` (from bank frame `source` if given), before
        paste-back. Without `source` the mouth is warped and drawn whatever the avatar."""
        rig = self._rig(avatar)
        self._check(rig, int(i), state)
        if source is not None and not 0 <= int(source) < rig.n:
            raise RenderInputError(f"source frame {source} outside the avatar's {rig.n} frames")
        return self._render_face(avatar, rig, int(i), state, None if source is None else int(source))[0]

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

    @staticmethod
    def _check(rig: _AvatarRig, i: int, state: object) -> None:
        if not isinstance(state, MouthState):
            raise RenderInputError(f"the CPU renderer takes MouthState conditions, got {type(state).__name__}")
        if not 0 <= i < rig.n:
            raise RenderInputError(f"frame index {i} outside the avatar's {rig.n} frames")

    def _render_face(
        self,
        avatar: Avatar,
        rig: _AvatarRig,
        i: int,
        state: MouthState,
        source: int | None,
        full_res_follows: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
        """Frame i's crop with its lower face moved to the target and the mouth texture in place, the crop
        landmarks it was moved to, and the crop box outside which nothing changed. With a bank `source` the
        target is that frame's own mouth and jaw."""
        fr = rig.frame(avatar, i)
        crop = avatar.crops[i]
        if source is None:
            dst_lm = self._mouth_shape(rig, fr, state)
            target_gap = self._target_gap(rig, fr, state)
        else:
            dst_lm = self._bank_shape(rig, i, source)
            target_gap = _lip_gap(dst_lm, fr.ey)
        if source == i:
            return crop.copy(), dst_lm, (0, 0, 0, 0)  # its own mouth: nothing moves
        dst = np.concatenate([dst_lm, _ANCHORS])

        tris = fr.tris[fr.moving]
        x0, y0, x1, y1 = _bbox(dst[tris].reshape(-1, 2), 1.0, (0, 0, CROP_SIZE, CROP_SIZE))
        if x1 <= x0 or y1 <= y0:
            return crop.copy(), dst_lm, (0, 0, 0, 0)

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

        if source is not None and not full_res_follows:
            # The bank frame's mouth over the moved lower face: lips grown around their centre, feathered, its
            # colour matched to this frame on the region's rim. The full-resolution pass repeats this after paste.
            frj = rig.frame(avatar, source)
            region_pts = self._bank_region(dst_lm, fr.iod, fr.ey)
            sigma = BANK_REGION_SIGMA * fr.iod
            bx0, by0, bx1, by1 = box = _bbox(region_pts, 3.0 * sigma + 2.0, (x0, y0, x1, y1))
            if bx1 > bx0 and by1 > by0:
                bank = warp(avatar.crops[source], frj.pts, box).astype(np.float32)
                base = face[by0:by1, bx0:bx1].astype(np.float32)
                alpha = _feather(_fill(region_pts - [bx0, by0], by1 - by0, bx1 - bx0), sigma)
                bank = _match_rim(bank, base, alpha)
                base += alpha[..., None] * (bank - base)
                face[by0:by1, bx0:bx1] = np.clip(base + 0.5, 0, 255).astype(np.uint8)
        if source is not None:
            return face, dst_lm, (x0, y0, x1, y1)

        src_gap = fr.gap
        if target_gap >= SYNTH_MIN_GAP_PX and target_gap > src_gap + 0.5:
            if src_gap >= TEETH_SOURCE_MIN_GAP * fr.iod:
                # The source shows its teeth: they stay with the lips that hold them, a cavity opens between.
                self._split_interior(face, crop, dst_lm, fr, state)
            else:
                # Nothing inside the source's lips to reuse: draw the inner mouth where the target opens wider.
                synth_w = float(np.clip(1.6 * (1.0 - src_gap / target_gap), 0.0, 1.0))
                self._inner_mouth(face, dst_lm, fr, target_gap, synth_w, fr.lip_bgr, fr.skin_bgr, state)
        if src_gap - target_gap > SEAM_MIN_SQUEEZE_PX and target_gap < SEAM_MAX_GAP * fr.iod:
            # Lips pressed together over an open source leave its teeth squeezed into a line: cover it with the seam.
            seam_w = float(np.clip((src_gap - target_gap) / (3.0 * SEAM_MIN_SQUEEZE_PX), 0.0, 1.0))
            seam_w *= float(np.clip(1.0 - target_gap / (SEAM_MAX_GAP * fr.iod), 0.0, 1.0))
            self._lip_seam(face, dst_lm, fr, seam_w, fr.lip_bgr)
        return face, dst_lm, (x0, y0, x1, y1)

    @staticmethod
    def _bank_region(lm: np.ndarray, iod: float, ey: np.ndarray) -> np.ndarray:
        centre = lm[_OUTER_LIP].mean(axis=0)
        rel = lm[_OUTER_LIP] - centre
        unit = rel / np.maximum(np.linalg.norm(rel, axis=1, keepdims=True), 1e-6)
        return centre + BANK_REGION_GROW * rel + BANK_REGION_MARGIN * iod * unit + 0.03 * iod * ey

    def _paste_bank_mouth(
        self,
        frame: np.ndarray,
        avatar: Avatar,
        rig: _AvatarRig,
        compositor: Compositor,
        i: int,
        j: int,
        dst_lm: np.ndarray,
    ) -> None:
        """Put bank frame j's mouth region into the composited frame i at full resolution, in place.

        The 256x256 crop is smaller than a face box on large video, so the crop's mouth comes back soft; here the
        same region is taken straight from frame j's full-resolution pixels by the head's similarity (one
        interpolation), blended through the region's feather times the avatar's paste mask."""
        x1, y1, x2, y2 = (int(v) for v in avatar.boxes[i])
        bw, bh = x2 - x1, y2 - y1
        if bw <= 0 or bh <= 0:
            return
        scale = np.array([bw / CROP_SIZE, bh / CROP_SIZE])
        fr = rig.frame(avatar, i)
        region = self._bank_region(dst_lm, fr.iod, fr.ey) * scale + [x1, y1]
        sigma = BANK_REGION_SIGMA * fr.iod * float(scale.mean())
        rx0, ry0, rx1, ry1 = _bbox(region, 3.0 * sigma + 2.0, (x1, y1, x2, y2))
        if rx1 <= rx0 or ry1 <= ry0:
            return
        lm_i = avatar.landmarks[i].astype(np.float64)
        lm_j = avatar.landmarks[j].astype(np.float64)
        a = stable_similarity(lm_j, lm_i)
        h, w = ry1 - ry0, rx1 - rx0
        if np.abs(a[:, :2] - np.eye(2)).max() < NEAR_RIGID:
            # The head barely turned or scaled: a whole-pixel shift, no resampling at all (interpolating at a
            # sub-pixel offset is a low-pass filter the source never went through).
            # The shift the similarity makes at the mouth (its rotation and scale move far-off points more).
            m = lm_j[48:68].mean(axis=0)
            dx, dy = (int(round(v)) for v in a[:, :2] @ m + a[:, 2] - m)
            bank = _shifted(avatar.frames[j], rx0 - dx, ry0 - dy, w, h).astype(np.float32)
        else:
            a[:, 2] -= [rx0, ry0]  # into the region's own pixel grid
            bank = cv2.warpAffine(
                avatar.frames[j], a, (w, h), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT101
            ).astype(np.float32)
        base = frame[ry0:ry1, rx0:rx1].astype(np.float32)
        alpha = _feather(_fill(region - [rx0, ry0], h, w), sigma)
        alpha *= compositor.alpha(i)[ry0 - y1 : ry1 - y1, rx0 - x1 : rx1 - x1, 0]
        bank = _match_rim(bank, base, alpha)
        base += alpha[..., None] * (bank - base)
        frame[ry0:ry1, rx0:rx1] = np.clip(base + 0.5, 0, 255).astype(np.uint8)

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

    @staticmethod
    def _palette(fr: _FrameRig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Cavity core, cavity rim, tongue and tooth colours (BGR) for this frame's lighting.

        A real open mouth is a dark red-brown cavity, a pink tongue dimmed by the lips' shadow, and teeth of
        a warm off-white a little below the lit skin. The lips' own colour carries the light's tint and level."""
        lip = fr.lip_bgr
        light = float(np.clip(np.dot(fr.skin_bgr, [0.114, 0.587, 0.299]) / 180.0, 0.35, 1.3))
        if fr.inner_dark is not None:
            # The source shows the inside of its mouth: its own shadows are the right colours for the depth.
            core, rim = 0.85 * fr.inner_dark[0], fr.inner_dark[1]
        else:
            core = 0.16 * lip + light * np.array([3.0, 3.0, 6.0])
            rim = 0.42 * lip
        tongue = 0.58 * lip + light * np.array([4.0, 8.0, 18.0])
        lum = float(np.dot(fr.skin_bgr, [0.114, 0.587, 0.299]))
        tooth = np.clip(1.08 * lum * np.array([0.86, 0.94, 1.0]), 0, 240)
        return core, rim, tongue, tooth

    @staticmethod
    def _cavity(lens: _MouthLens, u: np.ndarray, v: np.ndarray, fr: _FrameRig, state: MouthState) -> np.ndarray:
        """(h, w, 3) float BGR of the open mouth's inside: dark at its depth, lighter at the lips, a tongue low
        in it when the jaw is well down (less when the lips are rounded)."""
        core, rim, tongue_bgr, _ = CPURenderer._palette(fr)
        up, lo = lens.upper(u), lens.lower(u)
        height = np.maximum(lo - up, 1e-3)
        t = np.clip((v - up) / height, 0.0, 1.0)
        side = np.clip(np.abs(u) / lens.half_width, 0.0, 1.0)
        depth = (np.sin(np.pi * t) ** 0.8) * np.sqrt(np.clip(1.0 - side**2, 0.0, 1.0))
        fill = rim[None, None, :] + depth[..., None] * (core - rim)[None, None, :]
        open_ = float(np.clip(state.open, 0.0, 1.0))
        reach = (0.22 + 0.18 * open_) * (1.0 - 0.6 * float(np.clip(state.round, 0.0, 1.0)))
        if open_ > 0.25 and reach > 0.05:
            # The tongue: a mound from the lower lip, highest in the middle, lit from the front.
            top = 1.0 - reach * (1.0 - 0.8 * side**2)
            soft = 0.12 + 1.5 / float(height.max())
            a_t = np.clip((t - top) / soft + 0.5, 0.0, 1.0) * np.clip(1.0 - side, 0.0, 1.0) ** 0.5
            lit = 0.8 + 0.3 * np.clip((t - top) / max(reach, 1e-3), 0.0, 1.0) ** 0.5
            fill += (0.9 * a_t)[..., None] * (tongue_bgr[None, None, :] * lit[..., None] - fill)
        return fill

    @staticmethod
    def _tooth_structure(u: np.ndarray, half_width: float) -> np.ndarray:
        """Brightness of a row of teeth across the mouth: each tooth rounded (lit in its middle), a dark line
        between neighbours; incisors widest, narrowing towards the corners."""
        un = np.abs(u) / max(half_width, 1.0)
        edges = np.array([0.0, 0.24, 0.44, 0.6, 0.74, 0.86, 1.2])
        k = np.clip(np.searchsorted(edges, un) - 1, 0, len(edges) - 2)
        lo, hi = edges[k], edges[k + 1]
        phase = (un - lo) / (hi - lo)
        rounded = 0.9 + 0.1 * np.sin(np.pi * phase)
        px = np.minimum(un - lo, hi - un) * half_width  # px to the nearest tooth boundary
        line = 1.0 - 0.2 * np.exp(-((px / 0.6) ** 2))
        return rounded * line

    def _inner_mouth(
        self,
        face: np.ndarray,
        lm: np.ndarray,
        fr: _FrameRig,
        gap: float,
        weight: float,
        lip_bgr: np.ndarray,
        skin_bgr: np.ndarray,
        state: MouthState,
    ) -> None:
        """Draw the inside of the mouth within the inner lips of `face`, in place, for a source that never opens:
        a shaded cavity, a tongue, and teeth with individual structure."""
        lens0 = _MouthLens(lm, fr.ex, fr.ey)
        bx0, by0, bx1, by1 = _bbox(lens0.outline(), 3.0 + 0.9 * gap, (0, 0, CROP_SIZE, CROP_SIZE))
        if bx1 <= bx0 or by1 <= by0 or weight <= 0.0:
            return
        h, w = by1 - by0, bx1 - bx0
        lens = _MouthLens(lm - [bx0, by0], fr.ex, fr.ey)
        roi = face[by0:by1, bx0:bx1].astype(np.float32)
        mask = _fill(lens.outline(), h, w)
        alpha = _feather(mask, 0.7)
        u, v = lens.coords(w, h)
        fill = self._cavity(lens, u, v, fr, state)
        if self.teeth:
            _, _, _, tooth = self._palette(fr)
            side = np.clip(np.abs(u) / lens.half_width, 0, 1) ** 2
            structure = self._tooth_structure(u, lens.half_width)
            # Upper teeth hang from under the upper lip, about half the opening, at most ~0.09 D showing; the lip
            # shades their roots, their biting edges are a little translucent.
            upper_h = min(0.45 * gap, 0.09 * fr.iod)
            t_alpha = _feather(_fill(lens.band(0.7, lower=False, height=upper_h), h, w), 0.45) * alpha
            dv = np.clip((v - lens.upper(u)) / max(upper_h, 1e-3), 0, 1)
            shade = (1.0 - 0.45 * side) * (0.72 + 0.28 * np.clip(2.5 * dv, 0, 1)) * (1.0 - 0.12 * dv**4) * structure
            fill = fill + (0.97 * t_alpha[..., None]) * (tooth[None, None, :] * shade[..., None] - fill)
            if gap > 0.14 * fr.iod:
                # Lower teeth: a dimmer, thinner row behind the lower lip of a wide-open mouth.
                lower_h = min(0.15 * gap, 0.035 * fr.iod)
                l_alpha = _feather(_fill(lens.band(0.5, lower=True, height=lower_h), h, w), 0.45) * alpha
                l_shade = 0.6 * (1.0 - 0.5 * side) * structure
                fill = fill + (0.85 * l_alpha[..., None]) * (tooth[None, None, :] * l_shade[..., None] - fill)
        a = (weight * alpha)[..., None]
        roi += a * (fill - roi)
        face[by0:by1, bx0:bx1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)

    def _split_interior(
        self, face: np.ndarray, crop: np.ndarray, lm: np.ndarray, fr: _FrameRig, state: MouthState
    ) -> None:
        """The inside of a source mouth that shows its teeth, opened wider, in place.

        The upper part of the source's opening (upper teeth) is carried with the upper lip, the lower part with
        the lower lip, each at its own size; the opening between them is the shaded cavity. The teeth are the
        person's own pixels, one resampling from the source crop."""
        lens_t0 = _MouthLens(lm, fr.ex, fr.ey)
        bx0, by0, bx1, by1 = _bbox(lens_t0.outline(), 3.0, (0, 0, CROP_SIZE, CROP_SIZE))
        if bx1 <= bx0 or by1 <= by0:
            return
        h, w = by1 - by0, bx1 - bx0
        lens_t = _MouthLens(lm - [bx0, by0], fr.ex, fr.ey)
        lens_s = _MouthLens(fr.pts[:N_LANDMARKS], fr.ex, fr.ey)
        u, v = lens_t.coords(w, h)
        us = u * (lens_s.half_width / lens_t.half_width)
        up_t, lo_t = lens_t.upper(u), lens_t.lower(u)
        up_s, lo_s = lens_s.upper(us), lens_s.lower(us)
        hs = np.maximum(lo_s - up_s, 0.0)
        # The teeth show a little more of themselves as the lips part (the lips, not the teeth, hide them).
        extra = float(np.clip((lens_t.height() - lens_s.height()) / max(lens_s.height(), 1.0), 0.0, 1.0))
        stretch = 1.0 + TEETH_REVEAL * extra
        split = TEETH_SPLIT * hs * stretch
        low = (1.0 - TEETH_SPLIT) * hs * stretch
        d_up, d_lo = v - up_t, lo_t - v
        a_up = np.clip((split - d_up) / 0.8 + 0.5, 0.0, 1.0)
        a_lo = np.clip((low - d_lo) / 0.8 + 0.5, 0.0, 1.0) * (1.0 - a_up)
        vs = np.where(d_up <= split, up_s + d_up / stretch, lo_s - d_lo / stretch)
        pts = lens_s.c[:, None, None] + (us + lens_s.u0)[None] * fr.ex[:, None, None] + vs[None] * fr.ey[:, None, None]
        teeth = cv2.remap(
            crop, pts[0].astype(np.float32), pts[1].astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        ).astype(np.float32)
        fill = self._cavity(lens_t, u, v, fr, state)
        a_teeth = (a_up + a_lo)[..., None]
        fill += a_teeth * (teeth - fill)
        alpha = _feather(_fill(lens_t.outline(), h, w), 0.7)[..., None]
        roi = face[by0:by1, bx0:bx1].astype(np.float32)
        roi += alpha * (fill - roi)
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

    def height(self) -> float:
        """The opening's height in the middle, px."""
        return float(max(0.0, np.polyval(self._lo, 0.0) - np.polyval(self._up, 0.0)))

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
