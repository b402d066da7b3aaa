"""Geometry shared by the CPU renderer's mouth painters: a frame's rig, the inner-lip opening as two curves,
and the small image helpers (boxes, feathered masks, rim colour match) they all use."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class FrameRig:
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


def bbox(pts: np.ndarray, margin: float, limit: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Integer box around pts grown by margin, clipped to limit (x0, y0, x1, y1)."""
    lx0, ly0, lx1, ly1 = limit
    x0 = int(np.clip(np.floor(pts[:, 0].min() - margin), lx0, lx1))
    y0 = int(np.clip(np.floor(pts[:, 1].min() - margin), ly0, ly1))
    x1 = int(np.clip(np.ceil(pts[:, 0].max() + margin) + 1, lx0, lx1))
    y1 = int(np.clip(np.ceil(pts[:, 1].max() + margin) + 1, ly0, ly1))
    return x0, y0, x1, y1


def shifted(img: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """img[y0:y0+h, x0:x0+w], edge pixels repeated where the window leaves the image."""
    ys = np.clip(np.arange(y0, y0 + h), 0, img.shape[0] - 1)
    xs = np.clip(np.arange(x0, x0 + w), 0, img.shape[1] - 1)
    return img[ys[:, None], xs[None, :]]


def match_rim(src: np.ndarray, base: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """src shifted in colour so that its mean on the blend's rim (where it fades in) equals base's there."""
    rim = ((alpha > 0.05) & (alpha < 0.6)).astype(np.uint8)
    if rim.any():
        shift = np.subtract(cv2.mean(base, mask=rim)[:3], cv2.mean(src, mask=rim)[:3]).astype(np.float32)
        src = src + shift[None, None, :]
    return src


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    m = mask.astype(np.float32) / 255.0
    if sigma > 0.3:
        m = cv2.GaussianBlur(m, (0, 0), sigma)
    return m


class MouthLens:
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


def fill_poly(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return m
