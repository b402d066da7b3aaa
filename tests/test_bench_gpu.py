"""bench/bench_gpu.py --dry-run: the whole GPU benchmark runs on CPU with tiny configs and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_writes_every_section(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "bench_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "gpu.json"
    mod.main(["--dry-run", "--tiny", "--out", str(out), "--musetalk-repo", str(tmp_path / "no-checkout")])
    res = json.loads(out.read_text())
    assert res["dry_run"] and res["config"]["device"] == "cpu"
    assert {r["batch"] for r in res["models"]} == {1, 2}
    for r in res["models"]:
        assert r["unet_ms_per_frame"] > 0 and r["vae_decode_ms_per_frame"] > 0 and r["taesd_decode_ms_per_frame"] > 0
    assert {(r["decoder"], r["batch"]) for r in res["throughput"] if r.get("fps", 0) > 0} == {
        (d, b) for d in ("vae", "taesd") for b in (1, 2)
    }
    assert "no MuseTalk checkout" in res["reference"]["skipped"]
    for dec in ("vae", "taesd"):
        trial = res["sessions"][dec]["trials"][0]
        assert trial["sessions"] == 1 and trial["first_frame_ms_max"] is not None
