"""Regression gate: compare a run's summary with a baseline's, metric by metric, within tolerances.

A metric is worse when it moved in its bad direction by more than its tolerance, the larger of an absolute
amount and a fraction of the baseline's value. Latency tolerances are relative and wide because they depend
on the machine; sync tolerances are absolute.

The weight-free metric may call a case undetermined (no offset). Its offset metrics are then averages over
different subsets of cases in the two runs, so when either run has an undetermined case they are marked
"undetermined": shown, but they neither fail the gate nor count towards passing it.

The weight-free offset is trustworthy as a change, not as an absolute value: on unseen speakers it can sit a few
frames off as recorded, yet it moves with an injected shift (README, "Does the weight-free metric prove itself?").
So when both runs' per-case tables are at hand (run folders), the gate also counts the cases whose determined
offset, relative to the case's injected shift, moved by more than `OFFSET_DRIFT_FRAMES` between the two runs:
`ls_offset_drift_cases`, which must stay at 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbench.evaluation import metrics
from workbench.evaluation.errors import BaselineError
from workbench.evaluation.metrics import Tolerance

# Directions and default tolerances are the registry's (workbench/evaluation/metrics.py).
DEFAULT_TOLERANCES: dict[str, Tolerance] = metrics.tolerances()


OFFSET_DRIFT_FRAMES = 1  # a case's offset moving by more than this against the baseline is a sync regression
DRIFT_METRIC = "ls_offset_drift_cases"

# Averages over the cases whose weight-free offset was determined.
UNDETERMINED_SENSITIVE = frozenset({"ls_offset_error_mean", "ls_in_sync_rate"})


def _below_one(v) -> bool:
    return v is not None and float(v) < 1.0 - 1e-12


@dataclass
class GateRow:
    metric: str
    baseline: float | None
    current: float | None
    delta: float | None
    allowed: float | None
    better: str
    status: str  # "ok", "better", "worse", "missing" (in one run only), "untracked" (no tolerance), "undetermined"


@dataclass
class GateResult:
    rows: list[GateRow]

    @property
    def passed(self) -> bool:
        return not self.worse

    @property
    def worse(self) -> list[str]:
        return [r.metric for r in self.rows if r.status == "worse"]

    @property
    def undetermined(self) -> list[str]:
        return [r.metric for r in self.rows if r.status == "undetermined"]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([r.__dict__ for r in self.rows])


def parse_tolerance(spec: str, defaults: dict[str, Tolerance] | None = None) -> tuple[str, Tolerance]:
    """'metric=0.5' (absolute), 'metric=10%' (relative) or 'metric=lower:0.5' / 'metric=higher:10%' for a metric
    with no default direction."""
    defaults = defaults if defaults is not None else DEFAULT_TOLERANCES
    if "=" not in spec:
        raise ValueError(f"tolerance {spec!r} must look like metric=0.5 or metric=10%")
    name, value = (s.strip() for s in spec.split("=", 1))
    direction: str | None = None
    if ":" in value:
        direction, value = (s.strip() for s in value.split(":", 1))
        if direction not in ("lower", "higher"):
            raise ValueError(f"direction in {spec!r} must be 'lower' or 'higher'")
    if direction is None:
        if name not in defaults:
            raise ValueError(f"{name!r} has no default direction; write {name}=lower:VALUE or {name}=higher:VALUE")
        direction = defaults[name].direction
    try:
        if value.endswith("%"):
            tol = Tolerance(direction, rel=float(value[:-1]) / 100.0)  # type: ignore[arg-type]
        else:
            tol = Tolerance(direction, abs=float(value))  # type: ignore[arg-type]
    except ValueError as e:
        raise ValueError(f"tolerance value in {spec!r} is not a number") from e
    if tol.abs < 0 or tol.rel < 0:
        raise ValueError(f"tolerance in {spec!r} must not be negative")
    return name, tol


def load_summary(path: str | Path) -> dict:
    """The `metrics` of a summary.json (or of a run folder's)."""
    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    if not p.is_file():
        raise BaselineError(f"baseline summary not found: {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise BaselineError(f"{p} is not JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise BaselineError(f"{p} is not an evaluation summary (no 'metrics' mapping)")
    return data["metrics"]


def load_case_offsets(path: str | Path) -> dict[str, int] | None:
    """Per case, the determined weight-free offset minus the case's injected shift, from the cases.json beside a
    summary (a run folder or its summary.json); None when there is no such table (a bare summary file)."""
    p = Path(path)
    table = (p if p.is_dir() else p.parent) / "cases.json"
    if not table.is_file():
        return None
    try:
        rows = json.loads(table.read_text())
    except json.JSONDecodeError as e:
        raise BaselineError(f"{table} is not JSON: {e}") from e
    return case_offsets(rows)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)  # null in cases.json, NaN in cases.csv


def case_offsets(rows: list[dict]) -> dict[str, int]:
    """Per case (rows as in cases.json or a run's loaded table), the determined weight-free offset minus its
    injected shift."""
    out = {}
    for r in rows:
        off, shift = r.get("ls_offset"), r.get("expected_offset")
        if r.get("status") == "ok" and not _missing(off):
            out[str(r["case"])] = int(off) - (0 if _missing(shift) else int(shift))
    return out


def offset_drift_row(current: dict[str, int], baseline: dict[str, int]) -> GateRow:
    """How many cases determined in both runs moved their offset by more than OFFSET_DRIFT_FRAMES."""
    both = sorted(set(current) & set(baseline))
    moved = [c for c in both if abs(current[c] - baseline[c]) > OFFSET_DRIFT_FRAMES]
    status = "worse" if moved else "ok"
    return GateRow(DRIFT_METRIC, 0.0, float(len(moved)), float(len(moved)), 0.0, "lower", status)


def compare_summaries(
    current: dict,
    baseline: dict,
    tolerances: dict[str, Tolerance] | None = None,
    offsets: tuple[dict[str, int] | None, dict[str, int] | None] = (None, None),
) -> GateResult:
    """Side-by-side rows for every metric in either summary; `status == 'worse'` fails the gate. `offsets`:
    (current, baseline) per-case offsets (`case_offsets`), when both runs' tables are known."""
    tols = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    # A determined rate below 1 in either run: the offset averages cover different cases.
    shaky = any(_below_one(m.get("ls_determined_rate")) for m in (current, baseline))
    rows = []
    for name in list(dict.fromkeys([*baseline.keys(), *current.keys()])):
        if name in ("cases_total", "cases_ok"):
            continue
        b, c = baseline.get(name), current.get(name)
        tol = tols.get(name)
        better = tol.direction if tol else ""
        if b is None or c is None:
            rows.append(GateRow(name, b, c, None, None, better, "missing"))
            continue
        b, c = float(b), float(c)
        delta = c - b
        if tol is None:
            rows.append(GateRow(name, b, c, delta, None, better, "untracked"))
            continue
        allowed = tol.allowed(b)
        if shaky and name in UNDETERMINED_SENSITIVE:
            rows.append(GateRow(name, b, c, delta, allowed, better, "undetermined"))
            continue
        worse_by = -delta if tol.direction == "higher" else delta
        status = "worse" if worse_by > allowed + 1e-12 else ("better" if worse_by < -1e-12 else "ok")
        rows.append(GateRow(name, b, c, delta, allowed, better, status))
    if offsets[0] is not None and offsets[1] is not None:
        rows.append(offset_drift_row(*offsets))
    return GateResult(rows)
