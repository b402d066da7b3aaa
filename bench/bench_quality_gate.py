"""Does the quality gate catch what it should? The committed gate suite (eval/suites/gate.yaml) run clean and with each
deliberate regression injected into every case's rendered output (the mouth delayed 3 frames, the mouth blurred,
the lips jittered by up to 2 px), each gated against the committed baseline (eval/suites/gate-baseline/).

    python bench/bench_quality_gate.py [--out bench/results/quality_gate]

Writes a Markdown table and JSON with every summary metric per variant and the gate's verdict.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "clean": None,
    "mouth delayed 3 frames": {"delay_frames": 3},
    "mouth blurred (sigma 3 px)": {"blur_mouth": 3.0},
    "lips jittered (±2 px)": {"jitter_px": 2.0, "seed": 1},
    "lips jittered (±1 px)": {"jitter_px": 1.0, "seed": 1},
}
SHOWN = (
    "ls_lag0_mean",
    "ls_peak_mean",
    "silent_open_share_mean",
    "jitter_lips_mean",
    "jitter_jaw_mean",
    "mouth_sharpness_mean",
    "mouth_gamut_mean",
    "seam_diff_mean",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality_gate")
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = ap.parse_args()

    from workbench.config import Settings
    from workbench.engine import Engine
    from workbench.evaluation.degrade import Degrade
    from workbench.evaluation.gate import case_offsets, compare_summaries, load_case_offsets, load_summary
    from workbench.evaluation.manifest import load_suite
    from workbench.evaluation.runner import run_suite

    base_dir = ROOT / "eval" / "suites" / "gate-baseline"
    baseline, base_offsets = load_summary(base_dir), load_case_offsets(base_dir)
    suite = load_suite(ROOT / "eval" / "suites" / "gate.yaml")
    tmp = Path(tempfile.mkdtemp(prefix="quality-gate-"))
    engine = Engine(Settings(models_dir=tmp / "no-models"))
    results = {}
    for name, spec in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        cases = [c.model_copy(update={"degrade": Degrade(**spec) if spec else None}) for c in suite.cases]
        t0 = time.perf_counter()
        out = run_suite(suite.model_copy(update={"cases": cases}), engine, tmp, face_detector="dlib")
        gate = compare_summaries(out.summary["metrics"], baseline, None, (case_offsets(out.rows), base_offsets))
        results[name] = {
            "passed": gate.passed,
            "worse": gate.worse,
            "metrics": {k: out.summary["metrics"].get(k) for k in SHOWN},
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(name, "passed" if gate.passed else f"FAILED on {', '.join(gate.worse)}", flush=True)
    lines = [
        "| variant | gate | worse than tolerance | " + " | ".join(SHOWN) + " |",
        "|---|---|---|" + "---:|" * len(SHOWN),
        "| committed baseline | — | — | " + " | ".join(f"{baseline.get(k, float('nan')):.3f}" for k in SHOWN) + " |",
    ]
    for name, r in results.items():
        vals = " | ".join("" if r["metrics"][k] is None else f"{r['metrics'][k]:.3f}" for k in SHOWN)
        verdict = "pass" if r["passed"] else "**FAIL**"
        lines.append(f"| {name} | {verdict} | {', '.join(r['worse']) or '—'} | {vals} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
