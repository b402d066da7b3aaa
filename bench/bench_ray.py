"""Scaling of the Ray evaluation: the example suite repeated N times on a local Ray cluster with 1 and 2 workers.

    .venv/bin/python bench/bench_ray.py [--copies 2] [--workers 1,2] [--cpus 2] [--out bench/results/ray.json]

Every copy of every case is a separate case (ids suffixed _k), so the cluster sees 5 x N cases. Both runs use the
same cluster (started here with --cpus CPUs), so the difference is the worker count alone. Writes wall seconds,
cases per minute and the scaling factor (1-worker seconds / 2-worker seconds) to JSON; the first worker-count's
run also warms the avatar cache, so a warm-up run of one copy goes first and is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench import atomic  # noqa: E402
from workbench.config import Settings  # noqa: E402
from workbench.engine import Engine  # noqa: E402
from workbench.evaluation.distributed import RayOptions, import_ray  # noqa: E402
from workbench.evaluation.manifest import Suite, load_suite  # noqa: E402
from workbench.evaluation.runner import run_suite  # noqa: E402

EXAMPLE = ROOT / "eval" / "suites" / "example.yaml"


def repeated(suite: Suite, copies: int) -> Suite:
    cases = [c.model_copy(update={"id": f"{c.id}_{k}"}) for k in range(copies) for c in suite.cases]
    return Suite(name=f"{suite.name}-x{copies}", description=suite.description, cases=cases, root=suite.root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=2, help="how many times the example suite is repeated")
    ap.add_argument("--workers", default="1,2", help="worker counts to time")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray.json")
    args = ap.parse_args()

    ray = import_ray()
    suite = load_suite(EXAMPLE)
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    engine = Engine(Settings(models_dir=ROOT / "models", cache_dir=work / "cache"))
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        # warm-up: the avatar cache and the OS file cache, so neither timed run pays for them alone
        run_suite(repeated(suite, 1), engine, work / "runs", jobs=args.cpus, ray=RayOptions())
        big = repeated(suite, args.copies)
        results = []
        for n in (int(v) for v in args.workers.split(",")):
            t0 = time.perf_counter()
            out = run_suite(big, engine, work / "runs", jobs=n, ray=RayOptions(), run_name=f"w{n}")
            wall = time.perf_counter() - t0
            ok = sum(r["status"] == "ok" for r in out.rows)
            results.append(
                {
                    "workers": n,
                    "cases": len(out.rows),
                    "ok": ok,
                    "wall_seconds": round(wall, 2),
                    "cases_per_minute": round(60 * len(out.rows) / wall, 2),
                }
            )
            print(json.dumps(results[-1]))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    by = {r["workers"]: r["wall_seconds"] for r in results}
    report = {
        "bench": "ray evaluation scaling",
        "data": f"eval/suites/example.yaml x{args.copies} ({len(suite.cases)} cases each, sample media)",
        "cluster": f"local Ray head, {args.cpus} CPUs",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "results": results,
        "scaling_2_vs_1": round(by[1] / by[2], 3) if 1 in by and 2 in by else None,
    }
    atomic.write_json(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
