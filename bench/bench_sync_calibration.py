"""Calibrate the weight-free sync metric's "undetermined" threshold on one half of the real clips, report on the other.

    PYTHONPATH=. python bench/bench_sync_calibration.py --fresh DIR --fresh2 DIR2 --fresh3 DIR3
        [--samples ../shared/samples] [--out bench/results/sync_calibration.json]

Trials: each clip's main face track (dlib HOG boxes), scored with both landmark schemes the metric knows —
MediaPipe's face mesh (the `mesh` extra; skipped with a note when it is not installed) and dlib's 68 points — against
its own audio moved by a known number of frames (`SHIFTS`), as the whole track (the clips are 5-8 s long) and as
3 s windows every 0.5 s. A reported offset is "right" when it is within ±2 frames of the injected shift, taking the
clips to be in sync as recorded (the in-sync trials check that assumption). Beside it, the samples' own criterion
for clips whose true offset is unknown: the moved trial's offset minus the same span's unmoved offset is the shift
±1 ("recovered"). Windows of one clip overlap and share a speaker: they are trials, not independent samples.

Four halves, each named below with when it was first read:
1. TUNING: per scheme and evidence measure (`landmark_sync.evidence_measures`), the threshold is the lowest value
   at which precision on these clips (windows and clips pooled) reaches `TARGET_PRECISION` (above the 0.90
   promised, to leave room for the shift to unseen footage).
2. REPORTING and 3. FRESH: the confirmation halves. The first version of the metric chose its measure on tuning
   coverage and was then scored on these (README). The second version (a peak must be an interior maximum; the
   measure is chosen here) picks, among the measures calibrated on TUNING, the one whose reported windows recover
   the injected shift most often on REPORTING + FRESH pooled, at >= `MIN_CONFIRMATION_COVERAGE`. Their numbers
   are therefore no longer clean.
4. FRESH2: registered before it was read, scored once with the second version fixed (its clean numbers).
5. FRESH3: registered before it was read, after FRESH2 had been: scored once, last, with everything fixed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.config import FPS, SAMPLES_PER_FRAME  # noqa: E402
from workbench.evaluation import landmark_sync as ls  # noqa: E402

# syncnet_example.avi is the clip the method was first chosen on: it belongs to the tuning half.
TUNING = ("syncnet_example.avi", "calibration/talk1.mp4", "calibration/talk3.mp4")
REPORTING = ("calibration/talk2.mp4", "calibration/talk4.mp4", "calibration/talk5.mp4")
# A third, fresh half, added after the reporting half had been read and scored once with everything above frozen:
# real talking clips (HDTF footage) with their own audio from two public repositories, never seen by any choice here.
# Not in ../shared: `--fresh DIR` takes a folder holding them under these names, extracted with
#   git -C <SadTalker checkout> show cd4c046:examples/ref_video/WDA_KatieHill_000.mp4 > DIR/WDA_KatieHill_000.mp4
# (OpenTalker/SadTalker cd4c0465; tencent-ailab/V-Express 6814f7db, test_samples/short_case/AOC/gt.mp4 as
# vexpress_AOC_gt.mp4). V-Express's other gt clips are generated (EMO, VASA-1 demos) and are left out.
FRESH = ("WDA_AlexandriaOcasioCortez_000.mp4", "WDA_KatieHill_000.mp4", "vexpress_AOC_gt.mp4")
# A fourth half, registered (and committed) before any clip of it was read, for scoring the metric's second
# version once, after everything it chooses was fixed on TUNING and confirmed on REPORTING and FRESH: four more
# real HDTF clips with their own audio (512x512, 25 fps, 8 s), `--fresh2 DIR`, extracted with
#   git -C <SadTalker checkout> show 68651eb:test/examples/source_image/RD_Radio2_000.mp4 > DIR/RD_Radio2_000.mp4
# (OpenTalker/SadTalker 68651ebaa6fedad57ca9c878221f9b57212040cb, folder test/examples/source_image/).
FRESH2 = ("RD_Radio2_000.mp4", "RD_Radio34_000.mp4", "WDA_BobMenendez_000.mp4", "WDA_EdMarkey0_000.mp4")
# A fifth half, registered (and committed) before any clip of it was read, for scoring a third version once, after
# FRESH2 had been read: four real talking clips with their own audio (524-844 px square, 25 and 30 fps, 5-6.6 s),
# video-retalking's example input faces, `--fresh3 DIR`, extracted with
#   git -C <video-retalking checkout> show d32e8e5:examples/face/1.mp4 > DIR/vr_face1.mp4
# (OpenTalker/video-retalking d32e8e58248255e2d243eeaf3cba545dbe505ca8; faces 1, 2, 4 and 5). Face 3 is left out: it
# is the speaker of WDA_AlexandriaOcasioCortez_000 (FRESH), possibly the same footage.
FRESH3 = ("vr_face1.mp4", "vr_face2.mp4", "vr_face4.mp4", "vr_face5.mp4")
SHIFTS = (-8, -5, -3, 0, 3, 5, 8)  # frames
WINDOW = 75  # frames: 3 s
HOP = 12  # frames between window starts
TOLERANCE = 2  # frames: a reported offset within this of the injected shift is right
# The samples' own criterion (../shared/samples/README.md), for clips whose true offset is unknown: the offset with the
# audio moved k frames minus the offset of the same span unmoved is k within this.
RECOVERY_TOLERANCE = 1
TARGET_PRECISION = 0.95
MIN_CONFIRMATION_COVERAGE = 0.2  # a measure that commits on fewer confirmation windows than this is not chosen


def landmarks_of(samples: Path, rel: str, cache: Path) -> dict:
    """The clip's main track: dlib's 68 points, the face mesh (None without the `mesh` extra), and its audio.
    Cached: landmark fitting is the slow part, and the features and thresholds are what is being tried."""
    from workbench.evaluation.face_mesh import mesh_available, track_mesh
    from workbench.evaluation.face_track import get_box_detector, main_track, track_landmarks, track_video
    from workbench.evaluation.landmark_sync import track_audio
    from workbench.media import load_audio, read_video

    f = cache / (rel.replace("/", "_") + ".npz")
    if f.is_file():
        d = np.load(f)
        mesh = d["mesh"] if d["mesh"].size else None
        if mesh is not None or not mesh_available():
            return {"name": rel, "dlib68": d["dlib68"], "mesh": mesh, "audio": d["audio"], "first": int(d["first"])}
    frames, _ = read_video(samples / rel)
    audio = load_audio(samples / rel)
    track = main_track(track_video(frames, get_box_detector(None)))
    dlib68 = track_landmarks(frames, track)
    mesh = track_mesh(frames, track) if mesh_available() else None
    audio = track_audio(audio, track.frames)
    np.savez(f, dlib68=dlib68, mesh=np.zeros(0) if mesh is None else mesh, audio=audio, first=int(track.frames[0]))
    return {"name": rel, "dlib68": dlib68, "mesh": mesh, "audio": audio, "first": int(track.frames[0])}


def trials(clip: dict, scheme: str, method: str = "fused") -> list[dict]:
    landmarks = clip[scheme]
    n = min(len(landmarks), len(clip["audio"]) // SAMPLES_PER_FRAME)
    rows, unmoved = [], {}
    spans = [(0, n, "clip")] + [(s, s + WINDOW, "window") for s in range(0, n - WINDOW + 1, HOP)]
    for shift in sorted(SHIFTS, key=abs):  # 0 first
        audio = ls.shift_audio(clip["audio"], shift)
        for a, b, kind in spans:
            r = ls.landmark_sync(landmarks[a:b], audio[a * SAMPLES_PER_FRAME : b * SAMPLES_PER_FRAME], method=method)
            if shift == 0:
                unmoved[a, kind] = r.offset
            rows.append(
                {
                    "clip": clip["name"],
                    "kind": kind,
                    "start": a,
                    "frames": b - a,
                    "shift": shift,
                    "found": r.offset,
                    "right": abs(r.offset - shift) <= TOLERANCE,
                    "recovered": None if shift == 0 else abs(r.offset - unmoved[a, kind] - shift) <= RECOVERY_TOLERANCE,
                    **{m: round(float(v), 4) for m, v in ls.evidence_measures(r.curve, r.n_frames).items()},
                }
            )
    return rows


def precision_coverage(rows: list[dict], measure: str, threshold: float) -> dict:
    out = {}
    for kind in ("window", "clip"):
        g = [r for r in rows if r["kind"] == kind]
        committed = [r for r in g if r[measure] >= threshold]
        out[kind] = {
            "trials": len(g),
            "committed": len(committed),
            "coverage": round(len(committed) / len(g), 3) if g else None,
            "precision": round(sum(r["right"] for r in committed) / len(committed), 3) if committed else None,
            "precision_if_always_reported": round(sum(r["right"] for r in g) / len(g), 3) if g else None,
            **_recovery(committed, g),
        }
    committed = [r for r in rows if r[measure] >= threshold]
    out["all"] = {
        "committed": len(committed),
        "coverage": round(len(committed) / len(rows), 3),
        "precision": round(sum(r["right"] for r in committed) / len(committed), 3) if committed else None,
    }
    return out


def _recovery(committed: list[dict], trials: list[dict]) -> dict:
    """The samples' own criterion on the moved trials: shift recovered relative to the same span unmoved."""
    moved = [r for r in committed if r["recovered"] is not None]
    every = [r for r in trials if r["recovered"] is not None]
    return {
        "recovered_when_reported": round(sum(r["recovered"] for r in moved) / len(moved), 3) if moved else None,
        "recovered_if_always_reported": round(sum(r["recovered"] for r in every) / len(every), 3) if every else None,
    }


def calibrate(rows: list[dict], measure: str, target: float = TARGET_PRECISION) -> float:
    """The lowest threshold whose committed trials (windows and clips pooled) are right at least `target` of the
    time, with at least 10 committed so one lucky trial cannot set it."""
    values = sorted({r[measure] for r in rows})
    for t in values:
        committed = [r for r in rows if r[measure] >= t]
        if len(committed) >= 10 and sum(r["right"] for r in committed) / len(committed) >= target:
            return float(t)
    return float("inf")


def in_sync_offsets(rows: list[dict]) -> dict[str, int]:
    """Each clip's whole-track offset with its audio as recorded: a clip whose own sound and picture are not in sync
    shows here as a constant bias of every trial of that clip."""
    return {r["clip"]: r["found"] for r in rows if r["kind"] == "clip" and r["shift"] == 0}


def main(argv: list[str] | None = None) -> int:
    from workbench.evaluation.face_mesh import mesh_available

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=Path, default=ROOT.parent / "shared" / "samples")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sync_calibration.json")
    ap.add_argument("--fresh", type=Path, help="a folder with the FRESH clips: scored once with the chosen thresholds")
    ap.add_argument("--fresh2", type=Path, help="a folder with the FRESH2 clips")
    ap.add_argument("--fresh3", type=Path, help="a folder with the FRESH3 clips: scored once, last")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/sync_calibration_cache"))
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    clips = {rel: landmarks_of(args.samples, rel, args.cache) for rel in TUNING + REPORTING}
    fresh = {rel: landmarks_of(args.fresh, rel, args.cache) for rel in FRESH} if args.fresh else {}
    fresh2 = {rel: landmarks_of(args.fresh2, rel, args.cache) for rel in FRESH2} if args.fresh2 else {}
    fresh3 = {rel: landmarks_of(args.fresh3, rel, args.cache) for rel in FRESH3} if args.fresh3 else {}
    schemes = ["mesh", "dlib68"] if all(c["mesh"] is not None for c in clips.values()) else ["dlib68"]
    result = {"tuning_clips": list(TUNING), "reporting_clips": list(REPORTING), "shifts": list(SHIFTS),
              "window_frames": WINDOW, "hop_frames": HOP, "tolerance_frames": TOLERANCE,
              "target_precision_on_tuning": TARGET_PRECISION, "fps": FPS, "method": "fused",
              "mesh_available": mesh_available(), "track_frames": {k: len(c["dlib68"]) for k, c in clips.items()},
              "schemes": {}}  # fmt: skip
    if fresh:
        result["fresh_clips"] = list(FRESH)
    if fresh2:
        result["fresh2_clips"] = list(FRESH2)
    if fresh3:
        result["fresh3_clips"] = list(FRESH3)
    for scheme in schemes:
        tune = [r for rel in TUNING for r in trials(clips[rel], scheme)]
        report = [r for rel in REPORTING for r in trials(clips[rel], scheme)]
        rows_fresh = [r for clip in fresh.values() for r in trials(clip, scheme)]
        confirm = report + rows_fresh
        candidates, best = {}, None
        for measure in ls.evidence_measures(np.zeros(31), 100):
            t = calibrate(tune, measure)
            candidates[measure] = {
                "threshold": t,
                "tuning": precision_coverage(tune, measure, t),
                "confirmation": precision_coverage(confirm, measure, t),
            }
            # Chosen on the confirmation halves (REPORTING + FRESH): the best shift recovery on the windows they
            # report (the samples' criterion for clips whose true offset is unknown), at >= 20 % coverage.
            w = candidates[measure]["confirmation"]["window"]
            ok = np.isfinite(t) and (w["coverage"] or 0) >= MIN_CONFIRMATION_COVERAGE
            key = w["recovered_when_reported"] if ok and w["recovered_when_reported"] is not None else -1.0
            if best is None or key > best[0]:
                best = (key, measure, t)
        _, measure, t = best
        result["schemes"][scheme] = {
            "candidates": candidates,
            "chosen": {"measure": measure, "threshold": t},
            "tuning": precision_coverage(tune, measure, t),
            "tuning_in_sync_offsets": in_sync_offsets(tune),
            "reporting": precision_coverage(report, measure, t),
            "reporting_in_sync_offsets": in_sync_offsets(report),
            "reporting_trials": report,
        }
        if fresh:
            result["schemes"][scheme]["fresh"] = precision_coverage(rows_fresh, measure, t)
            result["schemes"][scheme]["fresh_in_sync_offsets"] = in_sync_offsets(rows_fresh)
            result["schemes"][scheme]["fresh_trials"] = rows_fresh
        if fresh2:  # read only here, after the measure and threshold above were fixed
            rows = [r for clip in fresh2.values() for r in trials(clip, scheme)]
            result["schemes"][scheme]["fresh2"] = precision_coverage(rows, measure, t)
            result["schemes"][scheme]["fresh2_in_sync_offsets"] = in_sync_offsets(rows)
            result["schemes"][scheme]["fresh2_trials"] = rows
        if fresh3:  # read only here, after everything above was fixed
            rows = [r for clip in fresh3.values() for r in trials(clip, scheme)]
            result["schemes"][scheme]["fresh3"] = precision_coverage(rows, measure, t)
            result["schemes"][scheme]["fresh3_in_sync_offsets"] = in_sync_offsets(rows)
            result["schemes"][scheme]["fresh3_trials"] = rows
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for scheme, r in result["schemes"].items():
        print(scheme, json.dumps({k: r[k] for k in ("chosen", "tuning", "tuning_in_sync_offsets")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
