"""The auto-scored bbox_shift sweep: the score orders variants as the metrics say, and `workbench tune` recommends
a value, plots it and saves it to the avatar."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.evaluation.sweep import MAX_VALUES, sweep_score, sweep_values


def test_sweep_score_orders_variants():
    good = {"ls_lag0": 0.4, "ls_margin": 0.2, "silent_open_share": 0.0, "jitter_lips": 1.1}
    assert sweep_score(good) > sweep_score({**good, "ls_lag0": 0.1})  # a mouth that follows the speech less
    assert sweep_score(good) > sweep_score({**good, "silent_open_share": 0.4})  # open in the pauses
    assert sweep_score(good) > sweep_score({**good, "jitter_lips": 2.5})  # shakier lips
    assert sweep_score({"ls_lag0": None}) == float("-inf")


def test_sweep_values_spread_over_the_measured_range():
    class A:
        bbox_range = (-9, 12)

    vals = sweep_values(A(), 5)
    assert vals[0] == -9 and vals[-1] == 12 and 0 in vals
    assert sweep_values(A(), values=[3, -3, 3]) == [-3, 3]
    with pytest.raises(ValueError, match="at most"):
        sweep_values(A(), values=list(range(MAX_VALUES + 1)))


def test_tune_recommends_and_saves(tmp_path, examples_dir):
    from typer.testing import CliRunner

    from workbench.cli import app

    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "tune",
            str(examples_dir / "yongen.mp4"),
            "--audio",
            str(examples_dir / "speech_zh.ogg"),
            "--values",
            "-8,0",
            "--seconds",
            "3",
            "--max-frames",
            "10",
            "--renderer",
            "cpu",
            "--out",
            str(out),
            "--save",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--models-dir",
            str(tmp_path / "models"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "recommended bbox_shift:" in res.output and "saved: avatar" in res.output
    assert (out / "bbox_shift_sweep.png").stat().st_size > 0
    import pandas as pd

    table = pd.read_csv(out / "bbox_shift_sweep.csv")
    assert list(table["bbox_shift"]) == [-8, 0] and np.isfinite(table["score"]).all()
    best = int(table.loc[table["score"].idxmax(), "bbox_shift"])
    assert f"uses bbox_shift {best}" in res.output
