"""Per-stage latency: every stage of the CPU renderer is timed, the report round-trips, the renderer is left as it was."""

from __future__ import annotations

import numpy as np


def test_stages_of_the_cpu_renderer(tmp_path, examples_dir):
    from workbench.avatars.model import PrepParams
    from workbench.config import Settings
    from workbench.engine import Engine
    from workbench.evaluation.stages import latest_report, measure_stages, save_report
    from workbench.lipsync.compositor import Compositor
    from workbench.media import load_audio

    engine = Engine(Settings(cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs"), renderer="cpu")
    avatar = engine.prepare(examples_dir / "yongen.mp4", PrepParams(max_frames=8))
    paste, paste_change = Compositor.paste, Compositor.paste_change
    report = measure_stages(engine, avatar, load_audio(examples_dir / "speech_zh.ogg")[:32000])
    assert report.frames == 50
    ms = report.ms_per_frame
    assert ms["features"] > 0 and ms["mouth"] > 0 and ms["paste_back"] > 0 and ms["encode"] > 0
    assert ms["decode"] == 0.0  # the CPU renderer has no decoder
    assert report.render_ms_per_frame >= ms["mouth"]
    assert report.sessions_25fps == int(40 // (ms["features"] + report.render_ms_per_frame))
    assert report.hardware.get("cpu_count")
    # the wrapped methods are restored
    assert Compositor.paste is paste and Compositor.paste_change is paste_change
    assert "_render_face" not in vars(engine.renderer)
    save_report(report, tmp_path / "runs")
    back = latest_report(tmp_path / "runs")
    assert back is not None and back.ms_per_frame == report.ms_per_frame
    assert "sessions at 25 fps" in back.markdown()
    assert np.isfinite(report.render_ms_per_frame)
