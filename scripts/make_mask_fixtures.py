"""Produce tests/fixtures/musetalk/masks_full.npz: full-strength face-parsing labels through TMElyralab/MuseTalk's own
label → mask → paste-back code.

    .venv/bin/python scripts/make_mask_fixtures.py --reference /work/ref/musetalk

`--reference` is a checkout of https://github.com/TMElyralab/MuseTalk (never part of this repository). The seeded
BiSeNet of the main fixtures (scripts/make_musetalk_fixtures.py) gives faint masks (at most 41/255), so the
paste-back there contributes little to what the composite test can see. Here the network is replaced by one whose
arg-max *is* a hand-made label map (skin, nose, lips, mouth, hair, neck, full strength), and everything after it is
the reference's own code: `FaceParsing.__call__`'s "jaw" (v1.5, cheeks 90) and "raw" (v1.0) modes,
`blending.get_image_prepare_material` (the real-time path's mask and crop box) and `blending.get_image_blending`
(the paste-back), on a random-texture frame with a random face resized to the box as `realtime_inference.py` does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "musetalk" / "masks_full.npz"
DEFAULT_COMMIT = "0a89dec"
SEED = 7
FRAME_HW = (360, 320)
# face boxes (x1, y1, x2, y2): centred, off-centre and tall, and one whose 1.5x region leaves the frame
BOXES = [(95, 90, 225, 240), (60, 120, 200, 300), (-10, 150, 120, 330)]
MODES = [("jaw", 90, 90), ("raw", 80, 80)]  # v1.5 (its cheek widths) and v1.0 (FaceParsing's defaults)


def label_map(k: int) -> np.ndarray:
    """A (512, 512) BiSeNet label map of a frontal face, varied per k (position, mouth opening)."""
    lab = np.zeros((512, 512), np.uint8)
    dx, dy, gap = (0, 0, 6), (18, -10, 14), (-12, 14, 24)
    ox, oy, g = dx[k % 3], dy[k % 3], gap[k % 3]
    cv2.ellipse(lab, (256 + ox, 150 + oy), (190, 120), 0, 180, 360, 17, -1)  # hair
    cv2.rectangle(lab, (180 + ox, 430 + oy), (332 + ox, 512), 14, -1)  # neck
    cv2.ellipse(lab, (256 + ox, 270 + oy), (150, 195), 0, 0, 360, 1, -1)  # skin
    cv2.ellipse(lab, (256 + ox, 275 + oy), (26, 45), 0, 0, 360, 10, -1)  # nose
    cv2.ellipse(lab, (256 + ox, 360 + oy), (62, 12), 0, 0, 360, 12, -1)  # upper lip
    cv2.ellipse(lab, (256 + ox, 372 + oy + g), (62, 14), 0, 0, 360, 13, -1)  # lower lip
    cv2.ellipse(lab, (256 + ox, 366 + oy + g // 2), (48, max(2, g // 2)), 0, 0, 360, 11, -1)  # mouth
    return lab


class LabelNet:
    """Stands in for BiSeNet: its output's arg-max over classes is `self.labels`."""

    labels: np.ndarray

    def __call__(self, img):
        one_hot = np.zeros((1, 19, 512, 512), np.float32)
        one_hot[0, self.labels.astype(np.int64), np.arange(512)[:, None], np.arange(512)[None, :]] = 10.0
        return (torch.from_numpy(one_hot),)


def inputs(seed: int = SEED):
    """Per box: the random frame and 256x256 face, drawn in this order from default_rng(seed) (the tests redraw them
    rather than store 1 MB of noise; the fixture keeps their sha256)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in BOXES:
        frame = rng.integers(0, 256, size=(*FRAME_HW, 3), dtype=np.uint8)
        face256 = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
        out.append((frame, face256))
    return out


def clip_box(box, shape) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return max(0, x1), max(0, y1), min(shape[1], x2), min(shape[0], y2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="a checkout of TMElyralab/MuseTalk")
    ap.add_argument("--commit", default=DEFAULT_COMMIT)
    args = ap.parse_args()

    spec = importlib.util.spec_from_file_location(
        "make_musetalk_fixtures", ROOT / "scripts" / "make_musetalk_fixtures.py"
    )
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    import diffusers.models.autoencoders.vae  # noqa: F401 - before the stubs, which it would otherwise probe

    mk.install_stubs()  # torchvision.transforms (FaceParsing imports it), as for the main fixtures
    sys.path.insert(0, str(args.reference))
    from musetalk.utils.blending import get_image_blending, get_image_prepare_material
    from musetalk.utils.face_parsing import FaceParsing

    class LabelParsing(FaceParsing):
        def model_init(self, *a, **k):
            return LabelNet()

    import hashlib

    out: dict[str, np.ndarray] = {}
    cases = []
    for k, (box, (frame, face256)) in enumerate(zip(BOXES, inputs(), strict=True)):
        labels = label_map(k)
        x1, y1, x2, y2 = box
        for mode, left, right in MODES:
            fp = LabelParsing(left_cheek_width=left, right_cheek_width=right)
            fp.net.labels = labels
            mask, crop_box = get_image_prepare_material(frame, list(box), fp=fp, mode=mode)
            face = cv2.resize(face256, (x2 - x1, y2 - y1))  # realtime_inference.py's resize of the decoded face
            composite = get_image_blending(frame, face, list(box), mask, crop_box)
            name = f"{k}_{mode}"
            cx1, cy1, cx2, cy2 = clip_box(box, frame.shape)
            outside = np.asarray(composite).copy()
            outside[cy1:cy2, cx1:cx2] = frame[cy1:cy2, cx1:cx2]
            assert np.array_equal(outside, frame), "the reference changed pixels outside the face box"
            out.update(
                {
                    f"labels_{k}": labels,
                    f"mask_{name}": np.asarray(mask, np.uint8),
                    f"crop_box_{name}": np.asarray(crop_box, np.int64),
                    f"composite_{name}": np.asarray(composite, np.uint8)[cy1:cy2, cx1:cx2],
                }
            )
            cases.append(
                {
                    "name": name,
                    "box_index": k,
                    "box": list(box),
                    "mode": mode,
                    "left_cheek_width": left,
                    "right_cheek_width": right,
                    "frame_sha256": hashlib.sha256(frame.tobytes()).hexdigest(),
                    "face_sha256": hashlib.sha256(face256.tobytes()).hexdigest(),
                }
            )
            print(name, "mask max", int(np.asarray(mask).max()), "crop box", crop_box)
    np.savez_compressed(OUT, **out)
    meta = {
        "reference": "TMElyralab/MuseTalk",
        "commit": args.commit,
        "made_by": "scripts/make_mask_fixtures.py",
        "seed": SEED,
        "cases": cases,
    }
    OUT.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
