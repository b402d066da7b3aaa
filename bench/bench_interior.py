"""Still-mouthed and photo avatars: the real interior (bundled library) against the drawn one, measured.

    .venv/bin/python bench/bench_interior.py [--sheets docs] [--avatars yongen sun photo talk4-still]

Avatars (none of them used to build or tune the library, which is cut from talk1 only):

* yongen: yongen.mp4, first 100 frames, a painted portrait whose mouth never opens;
* sun: sun.mp4, 300 frames, a real smile that shows teeth but never opens;
* photo: talk5.mp4's most closed frame as a one-image avatar (a portrait photo);
* talk4-still: talk4.mp4's closed frames only (openness < 0.08): a real face whose mouth never moves. Its own
  open frames (not in the avatar) give the truthful palette: the colours of that person's real interior.

Driving audio: eng.wav 20-28 s. Every rendered and source frame is re-detected with dlib:

* colour share: of the pixels inside the re-detected inner lips of open rendered frames, the share whose colour
  is in the person's gamut: the source's own open-mouth palette where it has one (sun: teeth and lips), else the
  lips and skin of its lower face (`mouth_quality.build_face_palette`); talk4-still also against its real
  interior;
* sharpness: mouth-box Laplacian variance, rendered open frames over the source frames they were rendered on;
* sync: the re-detected opening against the audio envelope, best lag and correlation, two ways: landmarks
  predicted inside the *source* frame's box (as the tests do) and the detector's own box and landmarks on the
  rendered frame (independent);
* face box: the detector's box on rendered open-mouth frames (target opening >= 0.5) against its box on the
  source frame: the largest edge shift over the box width; share of frames within 3 %.

* teeth comb: the teeth-structure score of the rendered open frames (`teeth_structure`; a drawn comb of
  evenly spaced teeth scores high, real teeth low; frames with no teeth band are skipped and counted).

`--gamut-calibration`: the lips-and-skin gamut's ceiling, real open mouths (talk1, talk2, talk4) scored against
their own closed frames' lips and skin. `--comb-calibration design|held-out|all`: the comb score on real open
mouths and on the drawn and library interiors rendered on still faces (design: talk1, talk2; held out: the rest). Writes bench/results/cpu-interior.json (and with --sheets the contact sheets).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_face_box import box_error  # noqa: E402

from workbench import atomic  # noqa: E402
from workbench.avatars.model import Avatar, PrepParams  # noqa: E402
from workbench.config import SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: E402
from workbench.evaluation import mouth_quality as mq  # noqa: E402
from workbench.evaluation import teeth_structure as ts  # noqa: E402
from workbench.lipsync.cpu.bank import raw_openness  # noqa: E402
from workbench.lipsync.cpu.frontend import MouthState  # noqa: E402
from workbench.lipsync.cpu.renderer import CPURenderer, measure_openness  # noqa: E402
from workbench.lipsync.cpu.style import PAINTED_THRESHOLD  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "samples"
RESULTS = ROOT / "bench" / "results" / "cpu-interior.json"
AUDIO_SPAN = (20.0, 28.0)
BOX_TOL = 0.03
# A real face whose mouth never moves: a talking clip's closed frames only (openness < 0.08). talk4-still is held
# out everywhere; talk1-still and talk2-still are design data for the comb score (`--comb-calibration`).
STILL_CLIPS = ("talk1-still", "talk2-still", "talk4-still")


def avatars(names: list[str]) -> dict[str, tuple[Avatar, dict]]:
    """name -> (avatar, extra): extra may hold `truth` frames/landmarks for a truthful palette."""
    from workbench.avatars.pipeline import prepare_avatar
    from workbench.faces.landmarks import get_detector

    det = get_detector("dlib")
    out = {}
    for name in names:
        if name == "yongen":
            out[name] = (prepare_avatar(SAMPLES / "yongen.mp4", PrepParams(max_frames=100), det), {})
        elif name == "sun":
            out[name] = (prepare_avatar(SAMPLES / "sun.mp4", PrepParams(max_frames=300), det), {})
        elif name == "photo":
            t5 = prepare_avatar(SAMPLES / "calibration" / "talk5.mp4", PrepParams(), det)
            k = int(np.argmin(raw_openness(t5.landmarks.astype(np.float64))))
            out[name] = (prepare_avatar(t5.frames[k : k + 1].copy(), PrepParams(), det), {"from": f"talk5 frame {k}"})
        elif name in STILL_CLIPS:
            clip = name.removesuffix("-still")
            src = prepare_avatar(SAMPLES / "calibration" / f"{clip}.mp4", PrepParams(), det)
            o = raw_openness(src.landmarks.astype(np.float64))
            closed, opened = np.flatnonzero(o < 0.08), np.flatnonzero(o >= mq.OPEN_MIN)
            av = prepare_avatar(src.frames[closed].copy(), PrepParams(), det)
            truth = ([src.frames[i] for i in opened], [src.landmarks[i].astype(np.float64) for i in opened])
            out[name] = (av, {"truth": truth, "from": f"{clip}, {len(closed)} closed frames"})
        else:
            raise SystemExit(f"unknown avatar {name!r}")
    return out


def driving_audio() -> np.ndarray:
    import soundfile as sf

    audio, sr = sf.read(SAMPLES / "eng.wav", dtype="float32")
    return audio[int(AUDIO_SPAN[0] * sr) : int(AUDIO_SPAN[1] * sr)]


def envelope(audio: np.ndarray, n: int) -> np.ndarray:
    a = np.pad(audio, (0, max(0, n * SAMPLES_PER_FRAME - len(audio))))[: n * SAMPLES_PER_FRAME]
    return np.sqrt(np.mean(a.reshape(n, SAMPLES_PER_FRAME) ** 2, axis=1))


def xcorr(m: np.ndarray, e: np.ndarray, max_lag: int = 5) -> tuple[int, float]:
    n = min(len(m), len(e))
    m, e = m[:n], e[:n]
    best, corr = 0, -2.0
    for lag in range(-max_lag, max_lag + 1):
        a, b = (m[lag:], e[: n - lag]) if lag >= 0 else (m[:lag], e[-lag:])
        c = float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else float("nan")
        if c > corr:
            best, corr = lag, c
    return best, corr


class Judge:
    """dlib: the detector's own box and landmarks, and landmarks predicted inside a given box."""

    def __init__(self) -> None:
        import dlib

        from workbench.faces.landmarks import dlib_model_dir, get_detector

        self.det = get_detector("dlib")
        self.pred = dlib.shape_predictor(str(dlib_model_dir() / "shape_predictor_68_face_landmarks.dat"))
        self._dlib = dlib

    def in_box(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        import cv2

        x1, y1, x2, y2 = (int(round(v)) for v in box)
        s = self.pred(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([(p.x, p.y) for p in s.parts()], np.float64)

    def detect(self, frame: np.ndarray):
        return self.det.detect(frame)


def measure(
    name: str, avatar: Avatar, extra: dict, audio: np.ndarray, interior: str, judge: Judge, style: str = "auto"
) -> dict:
    r = CPURenderer(interior=interior, interior_style=style)
    states = r.new_frontend().process(audio)
    n = len(states)
    idx = [avatar.loop_index(k) for k in range(n)]
    src_det = {}
    for i in sorted(set(idx)):
        d = judge.detect(avatar.frames[i])
        if d is None:
            raise RuntimeError(f"{name}: dlib finds no face on source frame {i}")
        src_det[i] = d
    src_lms = {i: judge.in_box(avatar.frames[i], src_det[i].box) for i in src_det}
    keys = sorted(src_lms)
    if name == "sun":
        palette = mq.build_palette([avatar.frames[i] for i in keys], [src_lms[i] for i in keys])
        gamut = "teeth and lips (own open frames)"
    else:
        palette = mq.build_face_palette([avatar.frames[i] for i in keys], [src_lms[i] for i in keys])
        gamut = "lips and skin of the lower face"
    truth_palette = mq.build_palette(*extra["truth"]) if "truth" in extra else None
    # The person's gamut (lightness-tolerant chromaticity of the lips and skin + neutral and dark) from the
    # source's closed frames (all of them for a still mouth).
    closed = [i for i in keys if raw_openness(src_lms[i][None])[0] < 0.08] or keys
    person = mq.build_person_gamut([avatar.frames[i] for i in closed], [src_lms[i] for i in closed])
    phits = 0
    seq = r.new_sequence(exact=True)  # a file render: the full-resolution pass included
    lm_src_box, lm_own, box_err, hits, tot, thits, sharp_r, sharp_s = [], [], [], 0, 0, 0, [], []
    comb = []  # per open frame: the teeth-structure comb score (None: no teeth band)
    cpu = 0.0
    for k in range(n):
        i = idx[k]
        t0 = time.process_time()
        frame = r.render(avatar, [i], [states[k]], sequence=seq)[0]
        cpu += time.process_time() - t0
        lm = judge.in_box(frame, src_det[i].box)
        lm_src_box.append(lm)
        d = judge.detect(frame)
        lm_own.append(d.landmarks.astype(np.float64) if d is not None else np.full((68, 2), np.nan))
        is_open = raw_openness(lm[None])[0] >= mq.OPEN_MIN
        if is_open:
            sh = mq.colour_share([frame], [lm], palette)
            hits += sh["share"] * sh["pixels"] if sh["pixels"] else 0
            tot += sh["pixels"]
            if sh["pixels"]:
                phits += mq.person_gamut_share([frame], [lm], person)["share"] * sh["pixels"]
            if truth_palette is not None and sh["pixels"]:
                thits += mq.colour_share([frame], [lm], truth_palette)["share"] * sh["pixels"]
            sharp_r.append(mq.mouth_sharpness(frame, lm))
            comb.append(ts.frame_structure(frame, lm).score)
            sharp_s.append(mq.mouth_sharpness(avatar.frames[i], src_lms[i]))
        if states[k].open >= 0.5:
            box_err.append(box_error(src_det[i].box, d.box if d is not None else None))
    env = envelope(audio, n)
    lag_a, corr_a = xcorr(measure_openness(np.asarray(lm_src_box)), env)
    own = measure_openness(np.nan_to_num(np.asarray(lm_own), nan=0.0))
    lag_b, corr_b = xcorr(own, env)
    be = np.asarray(box_err)
    return {
        "avatar": name,
        "from": extra.get("from", str(avatar.source)),
        "interior": interior,
        "style": style,
        "painted_score": style_score(avatar),
        "frames_rendered": n,
        "open_frames": len(sharp_r),
        "person_gamut_share": phits / tot if tot else float("nan"),
        "bgr_palette": gamut,
        "colour_share_bgr_palette": hits / tot if tot else float("nan"),
        "colour_share_real_interior": thits / tot if truth_palette is not None and tot else None,
        "teeth_comb": _pool_comb(comb),
        "sharpness_ratio": float(np.nanmean(sharp_r) / np.nanmean(sharp_s)) if sharp_r else float("nan"),
        "sync_source_box": {"lag": lag_a, "corr": corr_a},
        "sync_own_detection": {"lag": lag_b, "corr": corr_b},
        "face_box_frames": len(be),
        "face_box_err_median": float(np.median(be)) if len(be) else None,
        "face_box_err_p90": float(np.percentile(be, 90)) if len(be) else None,
        "face_box_within_3pct": float(np.mean(be <= BOX_TOL)) if len(be) else None,
        "render_cpu_ms_per_frame": 1000.0 * cpu / n,
    }


def _pool_comb(scores: list[float | None]) -> dict:
    """Pooled comb score of per-open-frame scores (`teeth_structure.frame_structure`; None = no teeth band)."""
    m = [x for x in scores if x is not None]
    mean = float(np.mean(m)) if m else float("nan")
    return {
        "score": mean,
        "open_frames": len(scores),
        "measured_frames": len(m),
        "skipped_no_teeth": len(scores) - len(m),
        "is_comb": bool(m) and mean >= ts.COMB_THRESHOLD,
    }


def style_score(avatar: Avatar) -> float:
    from workbench.lipsync.cpu import style
    from workbench.lipsync.cpu.renderer import _crop_landmarks

    return style.is_painted(avatar.crops, _crop_landmarks(avatar))[1]


def yongen_sync(judge: Judge) -> dict:
    """The tests' sync measurement on yongen (50 frames, eng.wav 0-20 s) and an independent one: the landmarks
    predicted in each *source* frame's dlib box (what tests/test_cpu_renderer.py asserts) against the detector's
    own box and landmarks on each rendered frame."""
    import soundfile as sf

    from workbench.avatars.pipeline import prepare_avatar
    from workbench.faces.landmarks import get_detector

    av = prepare_avatar(SAMPLES / "yongen.mp4", PrepParams(max_frames=50), get_detector("dlib"))
    audio, sr = sf.read(SAMPLES / "eng.wav", dtype="float32")
    audio = audio[: 20 * sr]
    boxes = [judge.detect(f).box for f in av.frames]
    out = {}
    for interior in ("drawn", "library"):
        r = CPURenderer(interior=interior)
        states = r.new_frontend().process(audio)
        a, b, missed = [], [], 0
        for k, st in enumerate(states):
            i = av.loop_index(k)
            frame = r.render(av, [i], [st])[0]
            a.append(judge.in_box(frame, boxes[i]))
            d = judge.detect(frame)
            missed += d is None
            b.append(d.landmarks.astype(np.float64) if d is not None else a[-1])
        env = envelope(audio, len(states))
        la, ca = xcorr(measure_openness(np.asarray(a)), env)
        lb, cb = xcorr(measure_openness(np.asarray(b)), env)
        out[interior] = {
            "source_box": {"lag": la, "corr": ca},
            "own_detection": {"lag": lb, "corr": cb, "missed_frames": missed},
        }
        print(
            f"yongen sync ({interior}): source box {la:+d}/{ca:.3f}, own detection {lb:+d}/{cb:.3f} (missed {missed})"
        )
    return out


DESIGN_CLIPS, HELD_OUT_CLIPS = ("talk1", "talk2"), ("talk3", "talk4", "talk5")


def gamut_calibration() -> dict:
    """Real open mouths scored against their own closed frames (openness < 0.08): the ceiling a real interior can
    reach. The person's gamut (`mq.build_person_gamut`) was chosen on talk1 and talk2 only; talk3-5 are held out.
    Also the old 12-level BGR lips-and-skin palette, and a control: the same open mouths with their inside
    painted one flat maroon (BGR 40, 40, 110)."""
    import cv2

    from workbench.avatars.pipeline import prepare_avatar
    from workbench.faces.landmarks import get_detector

    det = get_detector("dlib")
    out = {}
    for name in DESIGN_CLIPS + HELD_OUT_CLIPS:
        av = prepare_avatar(SAMPLES / "calibration" / f"{name}.mp4", PrepParams(), det)
        lm = av.landmarks.astype(np.float64)
        o = raw_openness(lm)
        closed, opened = np.flatnonzero(o < 0.08), np.flatnonzero(o >= mq.OPEN_MIN)
        cf, cl = [av.frames[i] for i in closed], [lm[i] for i in closed]
        of, ol = [av.frames[i] for i in opened], [lm[i] for i in opened]
        old = mq.colour_share(of, ol, mq.build_face_palette(cf, cl))
        gamut = mq.build_person_gamut(cf, cl)
        new = mq.person_gamut_share(of, ol, gamut)
        maroon = []
        for f, p in zip(of, ol, strict=True):
            f = f.copy()
            m = np.zeros(f.shape[:2], np.uint8)
            cv2.fillPoly(m, [np.round(p[60:68]).astype(np.int32)], 1)
            f[m > 0] = (40, 40, 110)
            maroon.append(f)
        ctrl = mq.person_gamut_share(maroon, ol, gamut)
        out[name] = {
            "set": "design" if name in DESIGN_CLIPS else "held-out",
            "person_gamut_share": new["share"],
            "flat_maroon_control": ctrl["share"],
            "bgr_palette_share": old["share"],
            "open_frames": new["open_frames"],
            "closed_frames": len(closed),
        }
        print(
            f"{name} ({out[name]['set']}): own open mouths in own person gamut {new['share']:.3f}, flat maroon "
            f"{ctrl['share']:.3f}, old BGR lips+skin palette {old['share']:.3f} ({new['open_frames']} open, "
            f"{len(closed)} closed frames)"
        )
    return out


COMB_DESIGN_REAL, COMB_HELD_OUT_REAL = ("talk1", "talk2"), ("talk3", "talk4", "talk5", "sun")
COMB_DESIGN_RENDERED, COMB_HELD_OUT_RENDERED = ("talk1-still", "talk2-still"), ("yongen", "sun", "photo", "talk4-still")


def comb_calibration(only: str = "all") -> dict:
    """The teeth-structure comb score (`workbench/evaluation/teeth_structure.py`) on real open mouths and on the
    drawn and library interiors rendered on still faces (eng.wav 20-28 s, landmarks predicted in the source frame's
    dlib box). Design: talk1, talk2 (real) and talk1-still, talk2-still (rendered); its constants and threshold were
    chosen on those only. Held out: talk3, talk4, talk5, sun (real) and yongen, sun, photo, talk4-still (rendered).
    `only`: "design", "held-out" or "all"."""
    from workbench.avatars.pipeline import prepare_avatar
    from workbench.faces.landmarks import get_detector

    det = get_detector("dlib")
    out: dict = {"threshold": ts.COMB_THRESHOLD, "real": {}, "rendered": {}}
    sets = {
        "design": (COMB_DESIGN_REAL, COMB_DESIGN_RENDERED),
        "held-out": (COMB_HELD_OUT_REAL, COMB_HELD_OUT_RENDERED),
    }
    for role, (real, rendered) in sets.items():
        if only not in ("all", role):
            continue
        for name in real:
            src = SAMPLES / "sun.mp4" if name == "sun" else SAMPLES / "calibration" / f"{name}.mp4"
            av = prepare_avatar(src, PrepParams(max_frames=300 if name == "sun" else None), det)
            q = ts.comb_score(av.frames, av.landmarks.astype(np.float64))
            out["real"][name] = {"set": role, "frames": len(av.frames), **q}
            print(f"{name:12s} ({role}) real open mouths: comb {q['score']:.3f} ({_comb_counts(q)})", flush=True)
        audio = driving_audio()
        judge = Judge()
        for name, (av, _) in avatars(list(rendered)).items():
            for interior in ("drawn", "library"):
                r = CPURenderer(interior=interior)
                states = r.new_frontend().process(audio)
                seq = r.new_sequence(exact=True)
                boxes: dict[int, np.ndarray] = {}
                frames, lms = [], []
                for k, st in enumerate(states):
                    i = av.loop_index(k)
                    if i not in boxes:
                        boxes[i] = judge.detect(av.frames[i]).box
                    f = r.render(av, [i], [st], sequence=seq)[0]
                    lm = judge.in_box(f, boxes[i])
                    if raw_openness(lm[None])[0] >= mq.OPEN_MIN:  # keep only what is scored (memory)
                        frames.append(f)
                        lms.append(lm)
                q = ts.comb_score(frames, lms)
                out["rendered"][f"{name}/{interior}"] = {"set": role, "frames_rendered": len(states), **q}
                print(f"{name:12s} ({role}) {interior:8s}: comb {q['score']:.3f} ({_comb_counts(q)})", flush=True)
    return out


def _comb_counts(q: dict) -> str:
    return (
        f"{q['measured_frames']} of {q['open_frames']} open frames measured, {q['skipped_no_teeth']} without teeth, "
        f"{q['comb_frames']} frames >= {ts.COMB_THRESHOLD}"
    )


def variants(avatar: Avatar) -> list[tuple[str, str]]:
    """(interior, style) rows: drawn, the library as the renderer picks it ("auto"), and for a painted avatar
    also the library as real footage ("photo", what it got before the painted style)."""
    out = [("drawn", "auto"), ("library", "auto")]
    if style_score(avatar) >= PAINTED_THRESHOLD:
        out.append(("library", "photo"))
    return out


def sheet(avatar: Avatar, label: str, tile_w: int = 240) -> np.ndarray:
    """One row per interior variant (`variants`): source frame 0's lower face, then mid / open / wide."""
    import cv2

    x1, y1, x2, y2 = (int(v) for v in avatar.boxes[0])
    h, w = avatar.frame_size
    m = (x2 - x1) // 10
    cx0, cx1 = max(0, x1 + m), min(w, x2 - m)
    cy0, cy1 = max(0, y1 + (y2 - y1) * 2 // 5), min(h, y2 + m // 2)
    tile_h = round(tile_w * (cy1 - cy0) / (cx1 - cx0))

    def tile(img: np.ndarray, text: str) -> np.ndarray:
        t = cv2.resize(img[cy0:cy1, cx0:cx1], (tile_w, tile_h), interpolation=cv2.INTER_AREA)
        cv2.rectangle(t, (0, 0), (tile_w, 15), (0, 0, 0), -1)
        cv2.putText(t, text, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1, cv2.LINE_AA)
        return t

    rows = []
    for interior, style in variants(avatar):
        r = CPURenderer(interior=interior, interior_style=style)
        row = [tile(avatar.frames[0], f"{label}: source")]
        for o in (0.35, 0.6, 0.85, 1.0):
            row.append(tile(r.render(avatar, [0], [MouthState(o)])[0], f"{interior}/{style}, open {o:.2f}"))
        rows.append(np.hstack(row))
    return np.vstack(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avatars", nargs="+", default=["yongen", "sun", "photo", "talk4-still"])
    ap.add_argument("--sheets", type=Path, default=None, help="write contact sheets into this folder")
    ap.add_argument("--no-measure", action="store_true")
    ap.add_argument("--yongen-sync", action="store_true", help="only the README's yongen sync figure, two ways")
    ap.add_argument("--gamut-calibration", action="store_true", help="only: real open mouths in their own gamut")
    ap.add_argument(
        "--comb-calibration",
        choices=["design", "held-out", "all"],
        default=None,
        help="only: the teeth-structure comb score on real mouths and drawn/library interiors",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    import cv2

    if args.gamut_calibration:
        prev = atomic_read(args.out)
        prev["gamut_calibration"] = gamut_calibration()
        atomic.write_json(args.out, prev)
        return
    if args.comb_calibration:
        res = comb_calibration(args.comb_calibration)
        prev = atomic_read(args.out)
        old = prev.get("comb_calibration", {})
        for part in ("real", "rendered"):  # a design-only or held-out-only run keeps the other set's rows
            res[part] = {**old.get(part, {}), **res[part]}
        prev["comb_calibration"] = res
        atomic.write_json(args.out, prev)
        return
    if args.yongen_sync:
        prev = atomic_read(args.out)
        prev["yongen_sync_20s"] = yongen_sync(Judge())
        prev["loadavg"] = os.getloadavg()
        atomic.write_json(args.out, prev)
        return
    avs = avatars(args.avatars)
    if args.sheets is not None:
        for name, (av, _) in avs.items():
            ok, buf = cv2.imencode(".png", sheet(av, name))
            atomic.write_bytes(args.sheets / f"cpu-interior-{name}.png", buf.tobytes())
    if args.no_measure:
        return
    audio = driving_audio()
    judge = Judge()
    prev = atomic_read(args.out)
    res = prev.setdefault("results", {})
    for name, (av, extra) in avs.items():
        for interior, style in variants(av):
            q = measure(name, av, extra, audio, interior, judge, style)
            res[f"{name}/{interior}" + ("" if style == "auto" else f"-{style}")] = q
            real = q["colour_share_real_interior"]
            print(
                f"{name:12s} {interior:8s} {style:6s} person gamut {q['person_gamut_share']:.2f} "
                f"(bgr palette {q['colour_share_bgr_palette']:.2f})"
                + (f" (real interior {real:.2f})" if real is not None else "")
                + f"  comb {q['teeth_comb']['score']:.2f}  sharp {q['sharpness_ratio']:.2f}  sync {q['sync_source_box']['lag']:+d}/"
                f"{q['sync_source_box']['corr']:.2f} own-det {q['sync_own_detection']['lag']:+d}/"
                f"{q['sync_own_detection']['corr']:.2f}  box err med {q['face_box_err_median']:.3f} "
                f"p90 {q['face_box_err_p90']:.3f} within3% {q['face_box_within_3pct']:.2f}  "
                f"cpu {q['render_cpu_ms_per_frame']:.1f} ms",
                flush=True,
            )
            prev["loadavg"] = os.getloadavg()
            prev["audio"] = f"eng.wav {AUDIO_SPAN[0]:.0f}-{AUDIO_SPAN[1]:.0f} s at {SAMPLE_RATE} Hz"
            atomic.write_json(args.out, prev)


def atomic_read(path: Path) -> dict:
    import json

    return json.loads(path.read_text()) if path.exists() else {}


if __name__ == "__main__":
    main()
