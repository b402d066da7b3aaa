"""Blending masks and paste-back against MuseTalk's own code with full-strength face-parsing labels.

The main parity fixtures parse faces with a seeded random BiSeNet, whose masks are faint (at most 41/255), so the
paste-back there contributes little to what the composite test can see. tests/fixtures/musetalk/masks_full.npz was
made by scripts/make_mask_fixtures.py: hand-made label maps (skin, nose, lips, mouth, hair, neck) through the
reference's `FaceParsing` modes ("jaw" with v1.5's cheek widths, "raw"), `get_image_prepare_material` and
`get_image_blending`, so every mask reaches 255 and a wrong mask shape, blur, boundary or blend shows in full.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "musetalk" / "masks_full.npz"
GREY_LEVELS = 1
PIXEL_SHARE = 0.999
# The composite: this project keeps each mask in 256x256 crop coordinates (resized to the face box at paste time),
# the reference at region resolution. With full-strength masks that round trip shows: up to 3 grey levels on
# 0.1-0.3 % of the box's pixels (measured on these fixtures). A wrong mask shape, blur or boundary moves tens.
COMPOSITE_SHARE, COMPOSITE_MAX = 0.995, 3


def _maker():
    spec = importlib.util.spec_from_file_location("make_mask_fixtures", ROOT / "scripts" / "make_mask_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fixture():
    meta = json.loads(FIXTURE.with_suffix(".json").read_text())
    data = np.load(FIXTURE)
    inputs = _maker().inputs(meta["seed"])
    for case in meta["cases"]:
        frame, face = inputs[case["box_index"]]
        if hashlib.sha256(frame.tobytes()).hexdigest() != case["frame_sha256"]:
            pytest.fail("numpy's default_rng draws other numbers than when the fixture was made: remake it")
        assert hashlib.sha256(face.tobytes()).hexdigest() == case["face_sha256"]
    return meta, data, inputs


def _close(ours, ref, what: str, share_needed: float = PIXEL_SHARE, max_levels: int | None = None) -> None:
    ours, ref = np.asarray(ours, np.int16), np.asarray(ref, np.int16)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs the reference's {ref.shape}"
    diff = np.abs(ours - ref)
    share = float((diff <= GREY_LEVELS).mean())
    assert share >= share_needed, f"{what}: {100 * share:.3f} % within {GREY_LEVELS} level, max {int(diff.max())}"
    if max_levels is not None:
        assert int(diff.max()) <= max_levels, f"{what}: max difference {int(diff.max())} > {max_levels}"


def _cases(inside_frame_only: bool = False):
    meta = json.loads(FIXTURE.with_suffix(".json").read_text())
    return [c["name"] for c in meta["cases"] if not inside_frame_only or min(c["box"][:2]) >= 0]


@pytest.mark.parametrize("name", _cases())
def test_full_strength_masks_match_reference(fixture, name):
    from workbench.avatars.masks import expanded_box, region_mask

    meta, data, _ = fixture
    case = next(c for c in meta["cases"] if c["name"] == name)
    box = np.asarray(case["box"])
    region = expanded_box(box)
    assert list(region) == data[f"crop_box_{name}"].tolist()
    ref = data[f"mask_{name}"]
    assert ref.max() == 255 and (ref >= 128).mean() > 0.05  # full strength over a real share of the region
    labels = data[f"labels_{case['box_index']}"]
    ours = region_mask(labels, box, region, case["mode"], case["left_cheek_width"], case["right_cheek_width"])
    _close(ours, ref, f"mask {name}")


# A face box leaving the frame (case 2 starts at x = -10) is clipped at preparation, so the avatar path cannot paste
# it as the reference does: such boxes are covered by the main fixtures' edge cases, not here.
@pytest.mark.parametrize("name", _cases(inside_frame_only=True))
def test_full_strength_paste_back_matches_reference(fixture, name):
    """Our avatar path (the mask stored in crop coordinates, then `Compositor.paste`) against the reference's
    `get_image_blending` with its region mask."""
    from testkit.models import make_synthetic_avatar
    from workbench.avatars.masks import expanded_box, mask_from_labels
    from workbench.lipsync.compositor import Compositor

    meta, data, inputs = fixture
    case = next(c for c in meta["cases"] if c["name"] == name)
    frame, face = inputs[case["box_index"]]
    box = np.asarray(case["box"], np.int32)
    assert box[0] >= 0 and box[1] >= 0 and box[2] <= frame.shape[1] and box[3] <= frame.shape[0]
    labels = data[f"labels_{case['box_index']}"]
    x1, y1, x2, y2 = (int(v) for v in box)
    ref = data[f"composite_{name}"]

    def paste(mode: str) -> np.ndarray:
        mask = mask_from_labels(
            labels, box, expanded_box(box), mode, case["left_cheek_width"], case["right_cheek_width"]
        )
        avatar = make_synthetic_avatar(n_frames=1, frame_hw=frame.shape[:2])
        avatar.frames[0], avatar.boxes[0], avatar.masks[0] = frame, box, mask
        return Compositor(avatar).paste(0, face)

    out = paste(case["mode"])
    outside = out.copy()
    outside[y1:y2, x1:x2] = frame[y1:y2, x1:x2]
    np.testing.assert_array_equal(outside, frame)
    _close(out[y1:y2, x1:x2], ref, f"composite {name}", COMPOSITE_SHARE, COMPOSITE_MAX)
    # The fixture can fail: the other parsing mode's mask (cheeks, jaw line, nose) is far outside the bound.
    other = paste("raw" if case["mode"] == "jaw" else "jaw")
    with pytest.raises(AssertionError):
        _close(other[y1:y2, x1:x2], ref, "the other mode", COMPOSITE_SHARE, COMPOSITE_MAX)
