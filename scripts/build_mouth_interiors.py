"""Build the bundled library of real mouth interiors (`workbench/lipsync/cpu/assets/mouth_interiors.npz`).

    .venv/bin/python scripts/build_mouth_interiors.py [--sources talk1 talk2]

Sources: the design clips of the CPU renderer (`../shared/samples/calibration/talk1.mp4`, `talk2.mp4`, from
the video-retalking repository's examples, Apache-2.0); talk3, talk4, talk5, sun and yongen are held out (the
renderer's realism is reported on them). Every frame is prepared with dlib's 68 landmarks; of the frames open
at least `MIN_OPEN` (gap over interocular distance), per opening bin the one with the most fine detail in its
interior is unwrapped between the lips (`mouth_interior.unwrap`), with its skin and lip colour and its upper
lip's detail. Deterministic for the same inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.lipsync.cpu import interior as mi  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "samples"
MIN_OPEN = 0.05  # gap / iod
BINS = np.arange(0.05, 0.34, 0.02)  # opening bins (gap / iod); one entry per bin and source


def colours(frame: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ex, ey = mi._axes(lm)
    iod = float(np.linalg.norm(lm[42:48].mean(axis=0) - lm[36:42].mean(axis=0)))
    lip = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(lip, [np.round(lm[48:60]).astype(np.int32)], 255)
    cv2.fillPoly(lip, [np.round(lm[60:68]).astype(np.int32)], 0)
    skin = np.zeros(frame.shape[:2], np.uint8)
    poly = np.stack([lm[31], lm[35], lm[54] - 0.1 * iod * ey, lm[48] - 0.1 * iod * ey])
    cv2.fillPoly(skin, [np.round(poly).astype(np.int32)], 255)
    return np.array(cv2.mean(frame, mask=skin)[:3]), np.array(cv2.mean(frame, mask=lip)[:3])


def entries(name: str) -> list[dict]:
    from workbench.avatars.model import PrepParams
    from workbench.avatars.pipeline import prepare_avatar
    from workbench.faces.landmarks import get_detector

    avatar = prepare_avatar(SAMPLES / "calibration" / f"{name}.mp4", PrepParams(), get_detector("dlib"))
    out: dict[int, dict] = {}
    for i in range(len(avatar)):
        lm = avatar.landmarks[i].astype(np.float64)
        ex, ey = mi._axes(lm)
        iod = float(np.linalg.norm(lm[42:48].mean(axis=0) - lm[36:42].mean(axis=0)))
        lens = mi.MouthLens(lm, ex, ey)
        gap = lens.height() / iod
        if gap < MIN_OPEN:
            continue
        tile = mi.unwrap(avatar.frames[i], lm)
        b = int(np.clip(np.searchsorted(BINS, gap) - 1, 0, len(BINS) - 1))
        det = mi.tile_detail(tile)
        if b not in out or det > out[b]["det"]:
            skin, lip = colours(avatar.frames[i], lm)
            out[b] = {
                "tile": tile,
                "opening": gap,
                "aspect": lens.height() / lens.half_width,
                "skin": skin,
                "lip": lip,
                "lip_detail": mi.lip_detail(avatar.frames[i], lm),
                "det": det,
                "frame": i,
            }
    return [out[b] for b in sorted(out)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", nargs="+", default=["talk1", "talk2"])
    ap.add_argument("--out", type=Path, default=mi.LIBRARY_PATH)
    args = ap.parse_args()
    rows, src = [], []
    for s, name in enumerate(args.sources):
        got = entries(name)
        print(f"{name}: {len(got)} entries, openings {[round(e['opening'], 3) for e in got]}")
        rows += got
        src += [s] * len(got)
    np.savez_compressed(
        args.out,
        tiles=np.stack([r["tile"] for r in rows]).astype(np.uint8),
        opening=np.array([r["opening"] for r in rows], np.float32),
        aspect=np.array([r["aspect"] for r in rows], np.float32),
        skin=np.array([r["skin"] for r in rows], np.float32),
        lip=np.array([r["lip"] for r in rows], np.float32),
        lip_detail=np.array([r["lip_detail"] for r in rows], np.float32),
        source=np.array(src, np.int16),
        source_frame=np.array([r["frame"] for r in rows], np.int32),
        source_names=np.array(args.sources),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB, {len(rows)} entries)")


if __name__ == "__main__":
    main()
