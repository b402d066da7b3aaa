"""Blending masks: MuseTalk's parsing modes, cheek widths, and an upper face that is never touched."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from workbench.avatars.masks import (
    MOUTH,
    NOSE,
    SKIN,
    U_LIP,
    expanded_box,
    frame_mask,
    jaw_kernel,
    landmark_labels,
    parsing_to_mask,
    resolve_mask_kind,
    zero_rows,
)
from workbench.lipsync.compositor import Compositor


def face_labels() -> np.ndarray:
    """A 512x512 CelebAMask-HQ-style map: an oval of skin, a nose in its middle, a mouth below."""
    lab = np.zeros((512, 512), np.uint8)
    cv2.ellipse(lab, (256, 256), (170, 220), 0, 0, 360, SKIN, -1)
    cv2.rectangle(lab, (236, 200), (276, 300), NOSE, -1)
    cv2.ellipse(lab, (256, 360), (60, 20), 0, 0, 360, U_LIP, -1)
    cv2.ellipse(lab, (256, 360), (40, 6), 0, 0, 360, MOUTH, -1)
    return lab


def test_jaw_kernel_is_a_cone_over_a_tail():
    k = jaw_kernel()
    assert k.shape == (33, 33)
    widths = k.sum(axis=1)
    assert widths[:10].sum() == 0  # the top half of the cone is empty
    assert list(widths[10:21]) == [2 * i + 1 for i in range(11)]
    assert set(widths[21:]) == {21}
    assert np.array_equal(k, k[:, ::-1])  # symmetric about the centre column


def test_raw_keeps_skin_and_mouth_but_not_the_nose():
    lab = face_labels()
    m = parsing_to_mask(lab, "raw")
    assert set(np.unique(m)) == {0, 255}
    assert np.all(m[lab == SKIN] == 255) and np.all(m[lab == MOUTH] == 255)
    assert np.all(m[lab == NOSE] == 0) and np.all(m[lab == 0] == 0)


def test_jaw_grows_the_jaw_drops_the_nose_and_narrows_the_cheeks():
    lab = face_labels()
    raw, jaw = parsing_to_mask(lab, "raw"), parsing_to_mask(lab, "jaw")
    assert np.all(jaw[lab == NOSE] == 0) and np.all(jaw[lab == MOUTH] == 255)
    chin = np.flatnonzero(raw[:, 256])[-1]
    assert np.flatnonzero(jaw[:, 256])[-1] > chin, "jaw mode extends the chin downwards"
    # On the cheeks (outside the middle band) the skin is eroded sideways: the face is narrower there.
    assert np.count_nonzero(jaw[256, :]) < np.count_nonzero(raw[256, :]) + 40
    narrow = parsing_to_mask(lab, "jaw", left_cheek_width=40, right_cheek_width=40)
    wide = parsing_to_mask(lab, "jaw", left_cheek_width=160, right_cheek_width=160)
    assert np.count_nonzero(narrow) < np.count_nonzero(wide)
    left_only = parsing_to_mask(lab, "jaw", left_cheek_width=160, right_cheek_width=40)
    assert np.count_nonzero(left_only[:, :256]) > np.count_nonzero(left_only[:, 256:])
    with pytest.raises(ValueError, match="parsing mode"):
        parsing_to_mask(lab, "neck")


def test_landmark_label_map_has_the_face_parts(sun_avatar):
    lm, box = sun_avatar.landmarks[0], sun_avatar.boxes[0]
    region = expanded_box(box)
    lab = landmark_labels(lm, region)
    scale = 512 / (region[2] - region[0])
    at = lambda i: lab[int((lm[i, 1] - region[1]) * scale), int((lm[i, 0] - region[0]) * scale)]  # noqa: E731
    assert at(30) == NOSE  # nose tip
    assert (
        at(3) in (SKIN, 0)
        and lab[int((lm[2, 1] - region[1]) * scale), int((lm[2, 0] + 15 - region[0]) * scale)] == SKIN
    )
    mouth_centre = lm[[62, 66]].mean(axis=0)
    assert lab[int((mouth_centre[1] - region[1]) * scale), int((mouth_centre[0] - region[0]) * scale)] in (
        MOUTH,
        U_LIP,
        13,
    )


@pytest.mark.parametrize("avatar_name", ["yongen_avatar", "sun_avatar"])
def test_upper_face_is_exactly_zero_and_the_mouth_is_covered(request, avatar_name):
    avatar = request.getfixturevalue(avatar_name)
    for i in range(0, len(avatar), 7):
        m, box, lm = avatar.masks[i], avatar.boxes[i], avatar.landmarks[i]
        rows = zero_rows(box)
        assert rows > 0.3 * 256, f"frame {i}: only {rows} protected rows"
        assert np.all(m[:rows] == 0), f"frame {i}: nonzero mask above row {rows}"
        x1, y1, x2, y2 = box
        mouth = lm[[48, 54, 62, 66]].mean(axis=0)
        u, v = int((mouth[0] - x1) * 256 / (x2 - x1)), int((mouth[1] - y1) * 256 / (y2 - y1))
        assert m[v, u] > 200, f"frame {i}: the mouth is not blended"
        # the eyes lie in the protected part
        eyes_y = lm[36:48, 1].max()
        assert (eyes_y - y1) * 256 / (y2 - y1) < rows


def test_compositor_leaves_the_upper_face_and_outside_pixel_identical(sun_avatar):
    comp = Compositor(sun_avatar)
    rng = np.random.default_rng(0)
    for i in (0, 20, 49):
        face = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        out = comp.paste(i, face)
        frame = sun_avatar.frames[i]
        x1, y1, x2, y2 = sun_avatar.boxes[i]
        changed = np.any(out != frame, axis=2)
        assert changed.any(), "the lower face must change"
        rows, cols = np.nonzero(changed)
        assert rows.min() >= y1 and rows.max() < y2 and cols.min() >= x1 and cols.max() < x2
        protected = int((zero_rows(sun_avatar.boxes[i]) - 1) * (y2 - y1) / 256)
        assert not changed[: y1 + protected].any()


def test_modes_and_cheek_widths_change_the_real_mask(sun_avatar):
    f, box, lm = sun_avatar.frames[0], sun_avatar.boxes[0], sun_avatar.landmarks[0]
    jaw = frame_mask(f, box, lm, "jaw")
    raw = frame_mask(f, box, lm, "raw")
    narrow = frame_mask(f, box, lm, "jaw", 30, 30)
    assert np.array_equal(jaw, sun_avatar.masks[0])  # the default params are jaw, 90/90
    assert np.abs(jaw.astype(int) - raw).sum() > 1000
    assert np.abs(jaw.astype(int) - narrow).sum() > 1000
    assert narrow.astype(int).sum() < jaw.astype(int).sum()


class LandmarkParser:
    """Stands in for BiSeNet: returns the landmark label map of the region it is shown, at half size."""

    def __init__(self, landmarks, region):
        self.landmarks, self.region, self.calls = landmarks, region, []

    def parse(self, img_bgr):
        self.calls.append(img_bgr.shape)
        lab = landmark_labels(self.landmarks, self.region)
        return cv2.resize(lab, (256, 256), interpolation=cv2.INTER_NEAREST)


def test_bisenet_path_parses_the_region_at_512(sun_avatar):
    f, box, lm = sun_avatar.frames[0], sun_avatar.boxes[0], sun_avatar.landmarks[0]
    parser = LandmarkParser(lm, expanded_box(box))
    m = frame_mask(f, box, lm, "jaw", face_parser=parser)
    assert parser.calls == [(512, 512, 3)]
    # the parser's map, brought back to 512, gives (nearly) the landmark path's mask
    assert np.mean(np.abs(m.astype(int) - sun_avatar.masks[0])) < 3
    assert np.all(m[: zero_rows(box)] == 0)


def test_mask_source_resolution():
    parser = object()
    assert resolve_mask_kind("auto", None) == "landmarks"
    assert resolve_mask_kind("auto", parser) == "bisenet"
    assert resolve_mask_kind("landmarks", parser) == "landmarks"
    assert resolve_mask_kind("bisenet", parser) == "bisenet"
    from workbench.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="79999_iter.pth"):
        resolve_mask_kind("bisenet", None)
    with pytest.raises(ValueError, match="mask_source"):
        resolve_mask_kind("segformer", None)
