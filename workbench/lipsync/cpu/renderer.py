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

import functools
import logging
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from scipy.spatial import Delaunay

from workbench.avatars.model import Avatar
from workbench.config import CROP_SIZE, N_LANDMARKS
from workbench.lipsync.base import Renderer
from workbench.lipsync.compositor import Compositor
from workbench.lipsync.cpu import fullres, style
from workbench.lipsync.cpu import interior as mouth_interior
from workbench.lipsync.cpu import paint as mouth_paint
from workbench.lipsync.cpu.bank import GAP_MAX as MOUTH_GAP_MAX
from workbench.lipsync.cpu.bank import BankParams, BankTrack, MouthBank, stable_similarity
from workbench.lipsync.cpu.frontend import MouthFrontend, MouthState
from workbench.lipsync.cpu.geometry import FrameRig, bbox, feather, fill_poly, match_rim, shifted

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
SEAM_MIN_SQUEEZE_PX = 1.5  # closing a source's lips by more than this draws the seam where they meet …
SEAM_MAX_GAP = 0.05  # … while the target gap is below this (in D)
# Bicubic: the warped lips keep their edges (bilinear lost ~0.1 of the mouth-box sharpness on yongen).
WARP_INTERP = cv2.INTER_CUBIC
FULL_RES_INTERP = cv2.INTER_CUBIC  # Lanczos kept ~0.005 more sharpness at ~3x the cost

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


log = logging.getLogger(__name__)


class RenderInputError(ValueError):
    """The avatar or the conditions handed to the CPU renderer cannot be rendered."""


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

    def __init__(self, avatar: Avatar, bank_params: BankParams | None = None):
        n = len(avatar)
        if avatar.crops.shape[1:3] != (CROP_SIZE, CROP_SIZE) or avatar.masks.shape[1:3] != (CROP_SIZE, CROP_SIZE):
            raise RenderInputError(
                f"avatar crops and masks must be {CROP_SIZE}x{CROP_SIZE}; got {avatar.crops.shape[1:3]}"
            )
        if avatar.landmarks.shape[1:] != (N_LANDMARKS, 2) or len(avatar.landmarks) != n:
            raise RenderInputError(f"avatar landmarks must be ({n}, 68, 2); got {avatar.landmarks.shape}")
        self.n = n
        self.alpha: dict[int, np.ndarray] = {}  # the compositor's resized masks
        self.frames: dict[int, FrameRig] = {}
        self.lock = threading.Lock()
        # The bank: every frame's mouth descriptors, for picking the source frame of each output mouth.
        self.crop_lms = _crop_landmarks(avatar)
        self.openness = measure_openness(self.crop_lms)
        self.bank = MouthBank(self.crop_lms, bank_params)
        # The resting mouth (median opening): a smile that shows teeth at rest keeps them at a closed target.
        self.rest_open = float(np.median(self.openness))
        self._interior: mouth_interior.InteriorTiles | None = None
        self._no_library = False

    def interior(self, avatar: Avatar, style_setting: str = "auto") -> mouth_interior.InteriorTiles | None:
        """The library interior matched to this avatar (its colours and detail from frame 0), made once; None
        (the drawn interior is used) when the bundled library cannot be read. `style_setting`: "auto" paints it in
        the avatar's own colours when the avatar measures as painted (`style.is_painted`), "painted" always,
        "photo" never."""
        if self._interior is None and not self._no_library:
            try:
                lib = mouth_interior.bundled_library()
            except mouth_interior.InteriorLibraryError as exc:
                log.error("CPU renderer: %s; drawing the inner mouth instead", exc)
                self._no_library = True
                return None
            fr = self.frame(avatar, 0)
            detail = mouth_interior.lip_detail(avatar.crops[0], self.crop_lms[0])
            chosen = mouth_interior.choose_for_avatar(lib, fr.skin_bgr, fr.lip_bgr, detail)
            if style_setting == "auto":
                painted, score = style.is_painted(avatar.crops, self.crop_lms)
                log.info("CPU renderer: painted score %.2f -> %s interior", score, "painted" if painted else "real")
            else:
                painted = style_setting == "painted"
            palette = style.avatar_palette(avatar.crops[0], self.crop_lms[0]) if painted else None
            with self.lock:
                if self._interior is None:
                    self._interior = mouth_interior.InteriorTiles(lib, chosen, palette)
        return self._interior

    @property
    def bank_enabled(self) -> bool:
        return self.bank.enabled

    def frame(self, avatar: Avatar, i: int) -> FrameRig:
        rig = self.frames.get(i)
        if rig is None:
            with self.lock:
                rig = self.frames.get(i)
                if rig is None:
                    rig = self._build(avatar, i)
                    self.frames[i] = rig
        return rig

    @staticmethod
    def _build(avatar: Avatar, i: int) -> FrameRig:
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
        return FrameRig(
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


class CPURenderer(Renderer):
    """Weight-free renderer: MouthFrontend conditions → warped lower face → the shared compositor."""

    name = "cpu"

    def __init__(
        self,
        use_bank: bool = True,
        teeth: bool = True,
        max_avatars: int = 4,
        bank_params: BankParams | None = None,
        interior: Literal["library", "drawn"] = "library",
        full_res: bool = True,
        interior_style: Literal["auto", "photo", "painted"] = "auto",
        stream_full_res: bool = False,
    ):
        """`interior`: where the source has no open mouth of its own, real interiors from the bundled library
        (`mouth_interior`) or the drawn one (`mouth_paint`). `full_res`: a warped mouth is resampled once from
        the full-resolution frame (`fullres`) rather than through the 256x256 crop. `interior_style`: the library
        interior as real footage ("photo"), re-painted in the avatar's own colours ("painted", `style`), or
        whichever the avatar measures as ("auto"). `stream_full_res`: the full-resolution pass also in the realtime
        stream. Off by default: it costs ~2.5 ms a frame of one core (the sixth 25 fps session on two cores,
        `bench/bench_realtime.py`), and the stream shows frames at no more than 720 lines, where yongen's mouth
        keeps 0.89 of the source's sharpness without it and 0.92 with it; files, previews and evaluation get it."""
        if interior not in ("library", "drawn"):
            raise ValueError(f"interior must be 'library' or 'drawn', got {interior!r}")
        if interior_style not in ("auto", "photo", "painted"):
            raise ValueError(f"interior_style must be 'auto', 'photo' or 'painted', got {interior_style!r}")
        self.interior_style = interior_style
        self.interior = interior
        self.use_bank = use_bank
        self.teeth = teeth
        self.max_avatars = max_avatars
        self.bank_params = bank_params or BankParams()
        self.lookahead_frames = self.bank_params.lookahead if use_bank else 0
        self.full_res = full_res
        self.stream_full_res = stream_full_res
        # Keyed by id(avatar); a weak reference drops the entry when the avatar is garbage-collected.
        self._rigs: OrderedDict[int, tuple[weakref.ref, _AvatarRig]] = OrderedDict()
        self._lock = threading.Lock()
        # Entries whose avatar was collected, dropped at the next `_rig`. The weak reference's callback runs
        # wherever the collector runs, also inside `_rig` with the lock held: taking the lock there would hang
        # that thread and then every render (as in `FrameMemory`). So it only appends.
        self._collected: deque[tuple[int, weakref.ref]] = deque()

    # --- Renderer ---------------------------------------------------------------------------
    def new_frontend(self, sample_rate: int | None = None) -> MouthFrontend:
        return MouthFrontend() if sample_rate is None else MouthFrontend(sample_rate=sample_rate)

    def silence_condition(self) -> MouthState:
        return MouthState()

    def new_sequence(self, exact: bool = False) -> BankTrack:
        """One output sequence's mouth-bank memory (its carried choice), for `render(..., sequence=)`; a file
        (`exact`) takes the full-resolution pass, a realtime stream only with `stream_full_res`."""
        return BankTrack(full_res=self.full_res and (exact or self.stream_full_res))

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
        self,
        avatar: Avatar,
        frame_indices: Sequence[int],
        conditions: Sequence[MouthState],
        lookahead: Sequence[tuple[int, MouthState]] = (),
        sequence: BankTrack | None = None,
    ) -> list[np.ndarray]:
        """Frames for (avatar frame, mouth state) pairs. `lookahead`: the (frame, state) pairs that follow, which
        the mouth bank plans over without rendering; `sequence`: the output sequence's track (`new_sequence`)."""
        if len(frame_indices) != len(conditions):
            raise RenderInputError(f"{len(frame_indices)} frame indices but {len(conditions)} conditions")
        rig = self._rig(avatar)
        for i, cond in zip(frame_indices, conditions, strict=True):
            self._check(rig, int(i), cond)
        for i, cond in lookahead:
            self._check(rig, int(i), cond)
        compositor = Compositor(avatar, alpha_cache=rig.alpha)
        sources = self._sources(rig, frame_indices, conditions, lookahead, sequence)
        out = []
        for i, cond, j in zip(frame_indices, conditions, sources, strict=True):
            # With a bank source the full-resolution pass pastes its mouth; the crop only moves the jaw.
            face, dst_lm, box, warped = self._render_face(avatar, rig, int(i), cond, j, full_res_follows=j is not None)
            frame = compositor.paste_change(int(i), face, avatar.crops[int(i)], box)
            if j is not None:
                self._paste_bank_mouth(frame, avatar, rig, compositor, int(i), j, dst_lm)
            elif self.full_res and (sequence is None or sequence.full_res):
                self._rewarp_full_res(frame, avatar, rig, compositor, int(i), dst_lm, box, face, warped)
            out.append(frame)
        return out

    def _sources(
        self,
        rig: _AvatarRig,
        frame_indices: Sequence[int],
        conditions: Sequence[MouthState],
        lookahead: Sequence[tuple[int, MouthState]] = (),
        sequence: BankTrack | None = None,
    ) -> list[int | None]:
        """The bank frame each output mouth comes from, or None where the mouth is warped and drawn."""
        if not (self.use_bank and rig.bank_enabled):
            return [None] * len(frame_indices)
        ahead = [(int(i), c.as_tuple()) for i, c in lookahead]
        with rig.lock:
            return list(
                rig.bank.select([int(i) for i in frame_indices], [c.as_tuple() for c in conditions], ahead, sequence)
            )

    def source_frames(
        self,
        avatar: Avatar,
        frame_indices: Sequence[int],
        conditions: Sequence[MouthState],
        lookahead: Sequence[tuple[int, MouthState]] = (),
        sequence: BankTrack | None = None,
    ) -> list:
        """Which avatar frame each output mouth would come from (None: warped and drawn), as `render` chooses."""
        return self._sources(self._rig(avatar), frame_indices, conditions, lookahead, sequence)

    def target_landmarks(self, avatar: Avatar, i: int, state: MouthState, source: int | None = None) -> np.ndarray:
        """(68, 2) full-frame landmarks of frame i with its mouth moved to `state` (or to bank frame `source`'s mouth):
        the shape render draws."""
        rig = self._rig(avatar)
        fr = rig.frame(avatar, int(i))
        crop_lm = self._mouth_shape(rig, fr, state) if source is None else self._bank_shape(rig, int(i), int(source))
        x1, y1, x2, y2 = (float(v) for v in avatar.boxes[int(i)])
        return crop_lm / CROP_SIZE * [max(x2 - x1, 1.0), max(y2 - y1, 1.0)] + [x1, y1]

    @staticmethod
    def _target_gap(rig: _AvatarRig, fr: FrameRig, state: MouthState) -> float:
        """Inner-lip gap (crop px) for a drawn mouth: from the avatar's resting opening (silence) to GAP_MAX."""
        # A frame already at or below the rest keeps its own mouth at silence (nothing moves).
        rest = min(min(rig.rest_open, REST_OPEN_MAX) * GAP_MAX * fr.iod, fr.gap)
        return rest + float(np.clip(state.open, 0.0, 1.0)) * max(0.0, GAP_MAX * fr.iod - rest)

    def _mouth_shape(self, rig: _AvatarRig, fr: FrameRig, state: MouthState) -> np.ndarray:
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
        with self._lock:
            rig = self._lookup(avatar)
        if rig is not None:
            return rig
        # Built outside the lock: one avatar's set-up (its mouth bank) never holds up another avatar's frames.
        built = _AvatarRig(avatar, self.bank_params)
        key = id(avatar)
        with self._lock:
            rig = self._lookup(avatar)  # another thread built one meanwhile: keep one
            if rig is not None:
                return rig
            self._rigs[key] = (weakref.ref(avatar, lambda ref, k=key: self._collected.append((k, ref))), built)
            while len(self._rigs) > self.max_avatars:
                self._rigs.popitem(last=False)
            return built

    def _lookup(self, avatar: Avatar) -> _AvatarRig | None:
        """`avatar`'s rig when one is kept, now the most recently used (the lock is held)."""
        self._drop_collected()
        entry = self._rigs.get(id(avatar))
        if entry is None or entry[0]() is not avatar:
            return None
        self._rigs.move_to_end(id(avatar))
        return entry[1]

    def rig_count(self) -> int:
        """How many avatars' rigs are kept (at most `max_avatars`; none for an avatar that was collected)."""
        with self._lock:
            self._drop_collected()
            return len(self._rigs)

    def _drop_collected(self) -> None:
        """Drop the entries of avatars collected since the last call (the lock is held)."""
        while self._collected:
            key, ref = self._collected.popleft()
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
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int], np.ndarray | None]:
        """Frame i's crop with its lower face moved to the target and the mouth texture in place, the crop
        landmarks it was moved to, the crop box outside which nothing changed, and (warped and drawn mouths
        only) that box as warped before anything was painted on it. With a bank `source` the target is that
        frame's own mouth and jaw."""
        fr = rig.frame(avatar, i)
        crop = avatar.crops[i]
        if source is None:
            dst_lm = self._mouth_shape(rig, fr, state)
            target_gap = self._target_gap(rig, fr, state)
        else:
            dst_lm = self._bank_shape(rig, i, source)
            target_gap = _lip_gap(dst_lm, fr.ey)
        if source == i:
            return crop.copy(), dst_lm, (0, 0, 0, 0), None  # its own mouth: nothing moves
        dst = np.concatenate([dst_lm, _ANCHORS])

        tris = fr.tris[fr.moving]
        x0, y0, x1, y1 = bbox(dst[tris].reshape(-1, 2), 1.0, (0, 0, CROP_SIZE, CROP_SIZE))
        if x1 <= x0 or y1 <= y0:
            return crop.copy(), dst_lm, (0, 0, 0, 0), None

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
            return cv2.remap(src_img, mx, my, WARP_INTERP, borderMode=cv2.BORDER_REFLECT101)

        face = crop.copy()
        face[y0:y1, x0:x1] = warp(crop, fr.pts, (x0, y0, x1, y1))
        warped = face[y0:y1, x0:x1].copy()  # before any painting: `_rewarp_full_res` keeps only what was painted

        if source is not None and not full_res_follows:
            # The bank frame's mouth over the moved lower face: lips grown around their centre, feathered, its
            # colour matched to this frame on the region's rim. The full-resolution pass repeats this after paste.
            frj = rig.frame(avatar, source)
            region_pts = self._bank_region(dst_lm, fr.iod, fr.ey)
            sigma = BANK_REGION_SIGMA * fr.iod
            bx0, by0, bx1, by1 = box = bbox(region_pts, 3.0 * sigma + 2.0, (x0, y0, x1, y1))
            if bx1 > bx0 and by1 > by0:
                bank = warp(avatar.crops[source], frj.pts, box).astype(np.float32)
                base = face[by0:by1, bx0:bx1].astype(np.float32)
                alpha = feather(fill_poly(region_pts - [bx0, by0], by1 - by0, bx1 - bx0), sigma)
                bank = match_rim(bank, base, alpha)
                base += alpha[..., None] * (bank - base)
                face[by0:by1, bx0:bx1] = np.clip(base + 0.5, 0, 255).astype(np.uint8)
        if source is not None:
            return face, dst_lm, (x0, y0, x1, y1), None

        src_gap = fr.gap
        if target_gap >= SYNTH_MIN_GAP_PX and target_gap > src_gap + 0.5:
            if src_gap >= TEETH_SOURCE_MIN_GAP * fr.iod:
                # The source shows its teeth: they stay with the lips that hold them, a cavity opens between.
                fill = None
                tiles = rig.interior(avatar, self.interior_style) if self.interior == "library" else None
                if tiles is not None:
                    fill = functools.partial(mouth_interior.interior_fill, tiles, iod=fr.iod)
                mouth_paint.split_interior(face, crop, dst_lm, fr, state, fill)
            else:
                # Nothing inside the source's lips to reuse: draw the inner mouth where the target opens wider.
                synth_w = float(np.clip(1.6 * (1.0 - src_gap / target_gap), 0.0, 1.0))
                tiles = rig.interior(avatar, self.interior_style) if self.interior == "library" else None
                if tiles is not None:
                    mouth_interior.paste_interior(face, dst_lm, fr, synth_w, tiles)
                else:
                    mouth_paint.inner_mouth(
                        face, dst_lm, fr, target_gap, synth_w, fr.lip_bgr, fr.skin_bgr, state, self.teeth
                    )
        if src_gap - target_gap > SEAM_MIN_SQUEEZE_PX and target_gap < SEAM_MAX_GAP * fr.iod:
            # Lips pressed together over an open source leave its teeth squeezed into a line: cover it with the seam.
            seam_w = float(np.clip((src_gap - target_gap) / (3.0 * SEAM_MIN_SQUEEZE_PX), 0.0, 1.0))
            seam_w *= float(np.clip(1.0 - target_gap / (SEAM_MAX_GAP * fr.iod), 0.0, 1.0))
            mouth_paint.lip_seam(face, dst_lm, fr, seam_w, fr.lip_bgr)
        return face, dst_lm, (x0, y0, x1, y1), warped

    def _rewarp_full_res(
        self,
        frame: np.ndarray,
        avatar: Avatar,
        rig: _AvatarRig,
        compositor: Compositor,
        i: int,
        dst_lm: np.ndarray,
        box: tuple[int, int, int, int],
        face: np.ndarray,
        warped: np.ndarray | None,
    ) -> None:
        """The warped lower face of composited frame i redone from its full-resolution pixels (`fullres`), in
        place; what the renderer painted (interior, seam) stays as the crop pass made it."""
        x0, y0, x1, y1 = box
        if warped is None or x1 <= x0 or y1 <= y0:
            return
        fr = rig.frame(avatar, i)
        painted = fullres.painted_mask(warped, face[y0:y1, x0:x1])
        fullres.rewarp(
            frame,
            avatar.frames[i],
            tuple(int(v) for v in avatar.boxes[i]),
            CROP_SIZE,
            box,
            fr.tris[fr.moving],
            _affines,
            np.concatenate([dst_lm, _ANCHORS]),
            fr.pts,
            compositor.alpha(i),
            painted,
            FULL_RES_INTERP,
            self._bank_region(dst_lm, fr.iod, fr.ey),
            BANK_REGION_SIGMA * fr.iod,
        )

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
        rx0, ry0, rx1, ry1 = bbox(region, 3.0 * sigma + 2.0, (x1, y1, x2, y2))
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
            bank = shifted(avatar.frames[j], rx0 - dx, ry0 - dy, w, h).astype(np.float32)
        else:
            a[:, 2] -= [rx0, ry0]  # into the region's own pixel grid
            bank = cv2.warpAffine(
                avatar.frames[j], a, (w, h), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT101
            ).astype(np.float32)
        base = frame[ry0:ry1, rx0:rx1].astype(np.float32)
        alpha = feather(fill_poly(region - [rx0, ry0], h, w), sigma)
        alpha *= compositor.alpha(i)[ry0 - y1 : ry1 - y1, rx0 - x1 : rx1 - x1, 0]
        bank = match_rim(bank, base, alpha)
        base += alpha[..., None] * (bank - base)
        frame[ry0:ry1, rx0:rx1] = np.clip(base + 0.5, 0, 255).astype(np.uint8)
