"""Per-frame CPU time of the CPU renderer: what the real interior and the bank's look-ahead add.

    .venv/bin/python bench/bench_frame_cost.py [--frames 150]

Process CPU time (not wall time: the machine is shared) per rendered frame, one frame per call as the realtime
stream renders, on the same states (eng.wav 20-28 s):

* yongen (704x1216, drawn path): the drawn interior against the library interior (painted for yongen), each with
  the full-resolution re-warp (as a file renders) and through the crop only (before it; the library as footage),
  and the library as the realtime stream renders it (no full-resolution pass unless `stream_full_res`);
* talk4 (700x700, bank path): the bank without look-ahead against the default window of 8 pending frames,
  and the path search alone (`source_frames`, no pixels) both ways.

Writes bench/results/frame-cost.json.
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

from workbench import atomic  # noqa: E402
from workbench.avatars.model import PrepParams  # noqa: E402
from workbench.lipsync.cpu.bank import BankParams  # noqa: E402
from workbench.lipsync.cpu.frontend import MouthFrontend  # noqa: E402
from workbench.lipsync.cpu.renderer import CPURenderer  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "samples"
RESULTS = ROOT / "bench" / "results" / "frame-cost.json"


def cpu_ms(r: CPURenderer, avatar, states, pixels: bool, repeats: int = 2, exact: bool = False) -> float:
    """Median over `repeats` of the process CPU ms per frame (after one warm-up pass that builds the rigs)."""
    idx = [avatar.loop_index(k) for k in range(len(states))]
    out = []
    for rep in range(repeats + 1):
        seq = r.new_sequence(exact=exact)  # exact: as a file renders (the full-resolution pass on still mouths)
        t0 = time.process_time()
        for k in range(len(states)):
            look = list(
                zip(idx[k + 1 : k + 1 + r.lookahead_frames], states[k + 1 : k + 1 + r.lookahead_frames], strict=True)
            )
            if pixels:
                r.render(avatar, [idx[k]], [states[k]], lookahead=look, sequence=seq)
            else:
                r.source_frames(avatar, [idx[k]], [states[k]], look, seq)
        if rep:
            out.append(1000.0 * (time.process_time() - t0) / len(states))
    return float(np.median(out))


def main() -> None:
    import soundfile as sf

    from workbench.avatars.pipeline import prepare_avatar
    from workbench.faces.landmarks import get_detector

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    audio, sr = sf.read(SAMPLES / "eng.wav", dtype="float32")
    states = MouthFrontend().process(audio[20 * sr : 28 * sr])[: args.frames]
    det = get_detector("dlib")
    yongen = prepare_avatar(SAMPLES / "yongen.mp4", PrepParams(max_frames=50), det)
    talk4 = prepare_avatar(SAMPLES / "calibration" / "talk4.mp4", PrepParams(), det)
    res = {
        "yongen_drawn_ms": cpu_ms(CPURenderer(interior="drawn"), yongen, states, True, exact=True),
        "yongen_library_ms": cpu_ms(CPURenderer(interior="library"), yongen, states, True, exact=True),
        # The realtime stream: no full-resolution pass unless `stream_full_res`.
        "yongen_library_stream_ms": cpu_ms(CPURenderer(interior="library"), yongen, states, True),
        # Before issue 31b: through the crop only, the library as footage (no full-resolution pass, no painting).
        "yongen_drawn_crop_only_ms": cpu_ms(CPURenderer(interior="drawn", full_res=False), yongen, states, True),
        "yongen_library_crop_only_photo_ms": cpu_ms(
            CPURenderer(interior="library", full_res=False, interior_style="photo"), yongen, states, True
        ),
        "talk4_bank_no_lookahead_ms": cpu_ms(CPURenderer(bank_params=BankParams(lookahead=0)), talk4, states, True),
        "talk4_bank_lookahead8_ms": cpu_ms(CPURenderer(), talk4, states, True),
        "talk4_select_no_lookahead_ms": cpu_ms(CPURenderer(bank_params=BankParams(lookahead=0)), talk4, states, False),
        "talk4_select_lookahead8_ms": cpu_ms(CPURenderer(), talk4, states, False),
        "frames": len(states),
        "loadavg": os.getloadavg(),
    }
    atomic.write_json(args.out, res)
    for k, v in res.items():
        print(f"{k:32s} {v if not isinstance(v, float) else round(v, 2)}")


if __name__ == "__main__":
    main()
