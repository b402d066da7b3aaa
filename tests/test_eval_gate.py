"""Regression gate: a better baseline fails the CLI naming the metric; equal numbers pass; tolerances override."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from workbench.evaluation.cli import eval_app
from workbench.evaluation.errors import BaselineError
from workbench.evaluation.gate import Tolerance, compare_summaries, load_summary, parse_tolerance
from workbench.timing import FrameTiming, write_latency_log

runner = CliRunner()


def _write_summary(path, **metrics):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"suite": "t", "metrics": metrics}))
    return path


def test_compare_directions_and_tolerances():
    base = {"ls_confidence_mean": 0.30, "syncnet_lse_d_mean": 7.0, "latency_first_frame_ms_mean": 100.0}
    same = compare_summaries(dict(base), base)
    assert same.passed and {r.status for r in same.rows} == {"ok"}
    worse = compare_summaries({**base, "ls_confidence_mean": 0.20, "syncnet_lse_d_mean": 7.5}, base)
    assert worse.worse == ["ls_confidence_mean", "syncnet_lse_d_mean"]
    # within tolerance: 0.02 below with an allowance of 0.03; latency 20% up with 25% allowed
    ok = compare_summaries({**base, "ls_confidence_mean": 0.28, "latency_first_frame_ms_mean": 120.0}, base)
    assert ok.passed
    better = compare_summaries({**base, "syncnet_lse_d_mean": 6.0}, base)
    assert better.passed and [r.status for r in better.rows if r.metric == "syncnet_lse_d_mean"] == ["better"]
    # a metric present in only one summary is reported, not failed
    missing = compare_summaries({"ls_confidence_mean": 0.3}, base)
    assert missing.passed and {r.metric for r in missing.rows if r.status == "missing"} == {
        "syncnet_lse_d_mean",
        "latency_first_frame_ms_mean",
    }


def test_parse_tolerance():
    assert parse_tolerance("ls_confidence_mean=0.1") == ("ls_confidence_mean", Tolerance("higher", abs=0.1))
    assert parse_tolerance("latency_rtf_mean=10%") == ("latency_rtf_mean", Tolerance("lower", rel=0.1))
    assert parse_tolerance("my_metric=higher:2") == ("my_metric", Tolerance("higher", abs=2.0))
    for bad in ("nonsense", "my_metric=2", "ls_confidence_mean=abc", "ls_confidence_mean=-1", "x=sideways:1"):
        with pytest.raises(ValueError):
            parse_tolerance(bad)


def test_load_summary_errors(tmp_path):
    with pytest.raises(BaselineError, match="not found"):
        load_summary(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(BaselineError, match="not an evaluation summary"):
        load_summary(tmp_path / "x.json")


def test_gate_cli_exit_codes(tmp_path):
    cur = _write_summary(tmp_path / "cur" / "summary.json", ls_confidence_mean=0.25, syncnet_lse_c_mean=6.0)
    equal = _write_summary(tmp_path / "eq" / "summary.json", ls_confidence_mean=0.25, syncnet_lse_c_mean=6.0)
    better = _write_summary(tmp_path / "better" / "summary.json", ls_confidence_mean=0.25, syncnet_lse_c_mean=7.0)
    r = runner.invoke(eval_app, ["gate", str(cur), "--baseline", str(equal)])
    assert r.exit_code == 0, r.output
    assert "gate passed" in r.output
    r = runner.invoke(eval_app, ["gate", str(cur.parent), "--baseline", str(better)])
    assert r.exit_code == 1
    assert "syncnet_lse_c_mean" in r.output.split("gate failed")[1]
    r = runner.invoke(eval_app, ["gate", str(cur), "--baseline", str(better), "--tolerance", "syncnet_lse_c_mean=1.5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(eval_app, ["gate", str(cur), "--baseline", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "baseline summary not found" in r.output


def _latency_suite(tmp_path, render_ms: float):
    """A suite of one streaming-session latency log: runs in a second, no video needed."""
    timings = [
        FrameTiming(
            frame=k,
            audio_in=k / 25,
            features_ready=k / 25 + 0.01,
            rendered=k / 25 + 0.01 + render_ms / 1000,
            composited=k / 25 + 0.012 + render_ms / 1000,
            sent=k / 25 + 0.013 + render_ms / 1000,
        )
        for k in range(50)
    ]
    write_latency_log(tmp_path / "session.jsonl", timings, meta={"renderer": "cpu"})
    (tmp_path / "suite.yaml").write_text(
        "name: lat\ncases:\n  - id: session\n    kind: latency_log\n    log: session.jsonl\n"
    )
    return tmp_path / "suite.yaml"


def test_suite_run_with_baseline_exits_nonzero_on_regression(tmp_path):
    fast = tmp_path / "fast"
    fast.mkdir()
    r = runner.invoke(eval_app, [str(_latency_suite(fast, 20)), "--runs-dir", str(tmp_path / "runs"), "--name", "base"])
    assert r.exit_code == 0, r.output
    baseline = tmp_path / "runs" / "base" / "summary.json"
    assert json.loads(baseline.read_text())["metrics"]["latency_first_frame_ms_mean"] == pytest.approx(33.0)

    # the same suite against its own numbers passes
    r = runner.invoke(
        eval_app, [str(fast / "suite.yaml"), "--runs-dir", str(tmp_path / "runs"), "--baseline", str(baseline)]
    )
    assert r.exit_code == 0, r.output

    # rendering got 80 ms slower: the baseline is better, the gate fails and names the metrics
    slow = tmp_path / "slow"
    slow.mkdir()
    r = runner.invoke(
        eval_app, [str(_latency_suite(slow, 100)), "--runs-dir", str(tmp_path / "runs"), "--baseline", str(baseline)]
    )
    assert r.exit_code == 1
    failed = r.output.split("gate failed")[1]
    assert "latency_first_frame_ms_mean" in failed and "latency_total_p95_ms_mean" in failed


def test_eval_mounted_on_workbench_cli(tmp_path):
    from workbench.cli import app

    cur = _write_summary(tmp_path / "a.json", ls_confidence_mean=0.2)
    base = _write_summary(tmp_path / "b.json", ls_confidence_mean=0.4)
    r = runner.invoke(app, ["eval", "gate", str(cur), "--baseline", str(base)])
    assert r.exit_code == 1 and "ls_confidence_mean" in r.output


def test_undetermined_weight_free_offsets_neither_fail_nor_pass_the_gate():
    base = {"ls_offset_error_mean": 0.0, "ls_in_sync_rate": 1.0, "ls_determined_rate": 1.0, "cases_failed": 0}
    # One case undetermined now: the offset averages cover other cases than the baseline's.
    cur = {"ls_offset_error_mean": 3.0, "ls_in_sync_rate": 0.0, "ls_determined_rate": 0.5, "cases_failed": 0}
    r = compare_summaries(cur, base)
    assert r.undetermined == ["ls_offset_error_mean", "ls_in_sync_rate"]
    assert r.worse == [] and r.passed  # not failed on them ...
    status = {row.metric: row.status for row in r.rows}
    assert status["ls_offset_error_mean"] == "undetermined"  # ... and not counted as "ok" either
    # every case determined in both: judged as before
    r = compare_summaries({**cur, "ls_determined_rate": 1.0}, base)
    assert set(r.worse) == {"ls_offset_error_mean", "ls_in_sync_rate"} and not r.undetermined


def _case(case, ls_offset, expected=0, status="ok"):
    return {"case": case, "status": status, "ls_offset": ls_offset, "expected_offset": expected}


def test_a_case_whose_offset_moved_fails_the_gate_even_when_the_averages_hide_it():
    """The weight-free offset is read relative to the baseline, case by case: a speaker who sits at +7 as recorded
    stays at +7, and a change that moves one case by 3 frames while another moves back fails the gate."""
    from workbench.evaluation.gate import DRIFT_METRIC, case_offsets

    base_rows = [
        _case("a", 7),
        _case("b", -3),
        _case("c", 5, expected=5),
        _case("d", None),
        _case("e", 2, status="failed"),
    ]
    base = case_offsets(base_rows)
    assert base == {"a": 7, "b": -3, "c": 0}  # relative to the injected shift; undetermined and failed left out
    metrics = {"ls_offset_error_mean": 3.33, "cases_failed": 0}
    same = compare_summaries(metrics, metrics, offsets=(case_offsets(base_rows), base))
    assert same.passed and {r.metric: r.status for r in same.rows}[DRIFT_METRIC] == "ok"
    # a moves +3, b moves -3: the mean absolute error is unchanged, the gate still fails on a and b
    moved = [_case("a", 10), _case("b", -6), _case("c", 6, expected=5), _case("d", 9)]
    r = compare_summaries(metrics, metrics, offsets=(case_offsets(moved), base))
    row = next(x for x in r.rows if x.metric == DRIFT_METRIC)
    assert r.worse == [DRIFT_METRIC] and row.current == 2.0  # c moved by 1 (allowed); d undetermined before
    # without both tables (bare summaries) there is no such row
    assert DRIFT_METRIC not in {x.metric for x in compare_summaries(metrics, metrics, offsets=(None, base)).rows}


def test_gate_cli_reads_the_case_tables_beside_the_summaries(tmp_path):
    for name, offset in (("base", 0), ("same", 1), ("moved", 4)):
        run = tmp_path / name
        _write_summary(run / "summary.json", ls_offset_error_mean=0.0, cases_failed=0)
        (run / "cases.json").write_text(json.dumps([_case("clip", offset)]))
    r = runner.invoke(eval_app, ["gate", str(tmp_path / "same"), "--baseline", str(tmp_path / "base")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(eval_app, ["gate", str(tmp_path / "moved"), "--baseline", str(tmp_path / "base")])
    assert r.exit_code == 1 and "ls_offset_drift_cases" in r.output.split("gate failed")[1], r.output
