"""Tab 4, evaluation: run the example suite (or an uploaded manifest) here or on a Ray cluster, see the table,
summary and plots, download the report folder, and compare two runs (the regression view).

The Ray cluster's address comes from the app's settings (WORKBENCH_EVAL_RAY_ADDRESS), not from the page.

A session's runs go to `<runs_dir>/sessions/<its random token>/`, so one user never sees another's
renders; runs directly under `<runs_dir>` (made with `workbench eval`, baselines) are shared read-only.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import threading
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path, PurePosixPath

import gradio as gr
import pandas as pd
import yaml

from workbench.config import operator_allowed
from workbench.disk_budget import DiskBudget
from workbench.evaluation import metrics
from workbench.evaluation.compare import compare_runs
from workbench.evaluation.distributed import RayOptions
from workbench.evaluation.errors import EvalError, ManifestError
from workbench.evaluation.manifest import GeneratedCase, ReferenceCase, Suite, load_suite, parse_suite
from workbench.evaluation.report import PLOTS, ROW_PLOTS, TABLE_COLUMNS, Run, load_run, show_undetermined
from workbench.evaluation.runner import run_suite
from workbench.plain import one_line
from workbench.ui.context import UIContext, gr_progress, user_errors, within_disk_budget
from workbench.ui.session_state import SessionState, new_session

log = logging.getLogger(__name__)

EXAMPLE_SUITE = Path(__file__).resolve().parents[2] / "eval" / "suites" / "example.yaml"
MANIFEST_TYPES = [".yaml", ".yml", ".zip"]
MAX_ZIP_FILES = 200
UNZIP_CHUNK = 1 << 20
UNPACKED_KEEP = 4  # uploaded suites kept unpacked (the case list and the run use the same one)
SHOWN_PLOTS = ("sync_curves", "latency_cdf", "stage_breakdown")
SHOWN_ROW_PLOTS = ("quality",)
SESSIONS = "sessions"


# --- suites ------------------------------------------------------------------------------------
def _inside(path: Path, roots: list[Path]) -> bool:
    p = path.resolve()
    return any(p == r or r in p.parents for r in roots)


def rebase_on_samples(suite: Suite, samples_dir: Path | None) -> Suite:
    """Cases whose files are missing but exist by name in the samples folder point there instead
    (the example suite names shared/samples beside the repository; a deployment may keep the samples elsewhere)."""
    if samples_dir is None:
        return suite
    cases = []
    for case in suite.cases:
        update = {}
        for field, p in suite.files_of(case).items():
            alt = samples_dir / p.name
            if not p.exists() and alt.is_file():
                update[field] = alt.resolve()
        cases.append(case.model_copy(update=update) if update else case)
    return suite.model_copy(update={"cases": cases})


def available_cases(suite: Suite) -> tuple[Suite, list[str]]:
    """The suite without the cases whose media are not on this server (a Space has no shared/samples beside the repository),
    and the ids left out. None left is an error naming what is missing."""
    missing = suite.missing_files()
    if not missing:
        return suite, []
    try:
        return suite.available()
    except ManifestError as e:
        raise ManifestError("the example suite needs the sample media: " + "; ".join(missing)) from e


def confine(suite: Suite, roots: list[Path]) -> Suite:
    """Refuse a manifest that names files outside its own upload or the samples (no reading server files)."""
    bad = [f"{c.id}: {name}" for c in suite.cases for name, p in suite.files_of(c).items() if not _inside(p, roots)]
    if bad:
        raise ManifestError(
            f"an uploaded manifest may only name files inside its zip or the sample media; outside: {', '.join(bad)}"
        )
    missing = suite.missing_files()
    if missing:
        raise ManifestError("files not found: " + "; ".join(missing))
    return suite


def safe_extract(archive: Path, dest: Path, max_bytes: int, budget: DiskBudget | None = None) -> None:
    """Unzip refusing absolute paths, '..', links and archives that unpack beyond `max_bytes` (or beyond what
    the visitors' disk budget has left). Entries are streamed and counted as they are written, so an archive
    that lies about its sizes stops at the limit; a damaged entry (bad CRC) is a one-line error and leaves
    nothing behind."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise ManifestError(f"{archive.name} is not a readable zip file") from e
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_FILES:
            raise ManifestError(f"{archive.name} holds {len(infos)} files; at most {MAX_ZIP_FILES}")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise ManifestError(
                f"{archive.name} unpacks to {total / 1e6:.0f} MB; the limit is {max_bytes / 1e6:.0f} MB"
            )
        for info in infos:
            name = PurePosixPath(info.filename)
            if name.is_absolute() or ".." in name.parts or (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise ManifestError(f"{archive.name} contains an unsafe entry {info.filename[:100]!r}")
        if budget is not None and not budget.room_for(total):
            raise ManifestError(
                f"{archive.name} unpacks to {total / 1e6:.0f} MB and the space for visitors' files is full "
                "right now; try again later or upload a smaller suite"
            )
        written = 0
        try:
            for info in infos:
                target = dest.joinpath(*PurePosixPath(info.filename).parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(UNZIP_CHUNK):
                        written += len(chunk)
                        if written > total or written > max_bytes:
                            raise ManifestError(f"{archive.name} unpacks to more than it declares")
                        out.write(chunk)
        except ManifestError:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as e:
            shutil.rmtree(dest, ignore_errors=True)
            raise ManifestError(
                f"{archive.name} is damaged ({one_line(e, 120)}); nothing was unpacked: zip the suite again"
            ) from e
        except OSError as e:
            shutil.rmtree(dest, ignore_errors=True)
            raise ManifestError(f"{archive.name} could not be unpacked here ({type(e).__name__})") from e


def uploaded_suite(
    upload: str | Path, workdir: Path, samples_dir: Path | None, max_bytes: int, budget: DiskBudget | None = None
) -> Suite:
    """A manifest upload: a YAML file (relative paths resolve against the sample media) or a zip of a
    manifest with its media (relative paths resolve against the manifest inside the zip)."""
    p = Path(upload)
    ext = p.suffix.lower()
    roots = [samples_dir.resolve()] if samples_dir else []
    if ext in (".yaml", ".yml"):
        if p.stat().st_size > 1_000_000:
            raise ManifestError(f"{p.name} is larger than 1 MB; a manifest is a short YAML file")
        try:
            data = yaml.safe_load(p.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ManifestError(f"{p.name} is not valid YAML: {e}") from e
        if samples_dir is None:
            raise ManifestError("no sample media on this server: upload a zip with the manifest and its media")
        return confine(parse_suite(data, samples_dir, csv_roots=roots), roots)
    if ext == ".zip":
        dest = Path(tempfile.mkdtemp(prefix="unpacked-", dir=workdir))
        safe_extract(p, dest, max_bytes, budget)
        manifests = sorted(dest.rglob("*.yaml")) + sorted(dest.rglob("*.yml"))
        if not manifests:
            raise ManifestError(f"{p.name} holds no .yaml manifest")
        manifest = min(manifests, key=lambda m: len(m.parts))
        allowed = [dest.resolve(), *roots]
        return confine(load_suite(manifest, check_files=False, csv_roots=allowed), allowed)
    raise ManifestError(f"{p.name}: upload a .yaml manifest or a .zip of a manifest with its media")


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(UNZIP_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def select_cases(suite: Suite, case_ids: list[str] | None, seconds: float | None) -> Suite:
    """The chosen cases, each cut to at most `seconds` of audio/video when given (a quick run)."""
    chosen = [c for c in suite.cases if not case_ids or c.id in case_ids]
    if not chosen:
        raise ManifestError("choose at least one case")
    if seconds:
        cut = []
        for c in chosen:
            if isinstance(c, GeneratedCase | ReferenceCase):
                limit = float(seconds) if c.max_seconds is None else min(c.max_seconds, float(seconds))
                c = c.model_copy(update={"max_seconds": limit})
            cut.append(c)
        chosen = cut
    return suite.model_copy(update={"cases": chosen})


# --- presenting a run ----------------------------------------------------------------------------
# The per-case table's columns before any run (an empty Dataframe would be headed "1 2 3"), in display order:
# the metrics first, the long renderer description after them so it never pushes them off screen.
TRAILING = ("renderer", "seconds", "error")
EMPTY_TABLE_HEADERS = [c for c in TABLE_COLUMNS if c not in TRAILING] + ["renderer"]
GATE_HEADERS = ["metric", "baseline", "current", "delta", "allowed", "better", "status"]
CASE_DIFF_HEADERS = ["case", "metric", "a", "b", "delta"]

# What each summary number means, under the summary: the registry's words (workbench/evaluation/metrics.py), so a
# new metric is explained here without editing this file.
METRIC_HELP: dict[str, str] = {
    m.summary: m.explain + (f" ({m.direction} is better)" if m.direction else "")
    for m in metrics.METRICS
    if m.summary and m.group != "suite"
}


def metric_help_markdown() -> str:
    return "\n".join(f"- **{k}**: {v}" for k, v in METRIC_HELP.items())


# Advice a visitor of the app cannot follow (they have no shell on the server): said as what the server lacks.
_CLI_ADVICE = re.compile(
    r"(?P<r>[Rr])un `workbench weights download[^`]*`(?: on a machine with internet)?(?: \(or fetch .*? into [^)]*\))?"
)


def for_visitor(text: str) -> str:
    def said(m: re.Match) -> str:
        return ("This" if m.group("r") == "R" else "this") + " server does not have them (its operator can add them)"

    return _CLI_ADVICE.sub(said, text)


def table_for(run: Run) -> pd.DataFrame:
    df = show_undetermined(run.table)
    has_errors = "error" in df.columns and bool(blank_missing(df[["error"]])["error"].astype(str).str.len().any())
    cols = [c for c in TABLE_COLUMNS if c in df.columns and c not in TRAILING]
    cols += [c for c in TRAILING if c in df.columns and (c != "error" or has_errors)]
    out = df[cols].copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(3)
    if "error" in out.columns:
        out["error"] = out["error"].map(lambda v: for_visitor(v) if isinstance(v, str) else v)
    return blank_missing(out)


def blank_missing(df: pd.DataFrame) -> pd.DataFrame:
    """Missing values shown as empty cells rather than 'nan'."""
    return df.astype(object).where(df.notna(), "")


def _value(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def summary_markdown(run: Run) -> str:
    s = run.summary
    meta = run.metadata
    metrics = dict(s.get("metrics", {}))
    ok, failed = metrics.pop("cases_ok", "?"), metrics.pop("cases_failed", 0)
    metrics.pop("cases_total", None)
    lines = [
        f"**Run** `{run.path.name}` of suite *{meta.get('suite', '')}*: {ok} ok, {failed} failed; "
        f"renderers: {', '.join(meta.get('renderers', [])) or '—'}; "
        f"wall time {meta.get('timings', {}).get('total_seconds', '?')} s."
    ]
    for note in s.get("notes", []):
        lines += ["", f"> {for_visitor(note)}"]
    if metrics:
        # Two metric/value pairs per row keeps the summary short enough to sit beside the download.
        items = list(metrics.items())
        lines += ["", "| metric | value | metric | value |", "|---|---:|---|---:|"]
        for k in range(0, len(items), 2):
            left = items[k]
            right = items[k + 1] if k + 1 < len(items) else ("", "")
            lines.append(f"| {left[0]} | {_value(left[1])} | {right[0]} | {_value(right[1])} |")
    for case, err in (s.get("failed") or {}).items():
        lines.append(f"- **{case}** failed: {for_visitor(str(err))}")
    return "\n".join(lines)


def plots_for(run: Run) -> list:
    return [PLOTS[name](run.details) for name in SHOWN_PLOTS] + [ROW_PLOTS[n](run.table) for n in SHOWN_ROW_PLOTS]


def zip_run(run_dir: Path, scratch: Path) -> str:
    out = scratch / run_dir.name
    return shutil.make_archive(str(out), "zip", root_dir=run_dir.parent, base_dir=run_dir.name)


class EvalTab:
    def __init__(self, ctx: UIContext):
        self.ctx = ctx
        # (size, sha256) of an upload -> (its unpack folder, the suite): a suite is unpacked once, not per click
        self._unpacked: OrderedDict[tuple, tuple[Path, Suite]] = OrderedDict()
        self._unpack_lock = threading.Lock()
        self.workdirs: dict[int, Path] = {}  # id(suite) -> the folder it was unpacked in (held during its run)

    # --- where runs live ------------------------------------------------------------------------
    def session_runs_dir(self, session: SessionState) -> Path:
        return self.ctx.runs_dir / SESSIONS / session.token

    def runs(self, session: SessionState) -> dict[str, Path]:
        """Label → run folder for every run this session may open: its own, then the shared ones."""
        found: list[tuple[float, str, Path]] = []
        for prefix, folder in (("mine", self.session_runs_dir(session)), ("shared", self.ctx.runs_dir)):
            if not folder.is_dir():
                continue
            for d in folder.iterdir():
                if d.name.startswith(".") or not (d / "summary.json").is_file():
                    continue
                found.append(((d / "summary.json").stat().st_mtime, f"{prefix}/{d.name}", d))
        return {label: d for _, label, d in sorted(found, reverse=True)}

    def _run_dir(self, label: str | None, session: SessionState) -> Path:
        runs = self.runs(session)
        if not label or label not in runs:
            raise EvalError("choose a run from the list (run an evaluation first)")
        return runs[label]

    def _runs_update(self, session: SessionState, value: str | None = None, second: bool = False):
        labels = list(self.runs(session))
        if value not in labels:
            value = labels[1 if second and len(labels) > 1 else 0] if labels else None
        return gr.update(choices=labels, value=value)

    # --- suites ---------------------------------------------------------------------------------
    def suite_for(self, which: str, upload: str | None) -> Suite:
        samples = self.ctx.library.samples_dir
        if which == "upload":
            if not upload:
                raise ManifestError("upload a manifest (.yaml) or a zip of a manifest with its media")
            return self._uploaded(self.ctx.checked_input(upload), samples)
        if not EXAMPLE_SUITE.is_file():
            raise ManifestError(f"the example suite is missing ({EXAMPLE_SUITE})")
        suite, skipped = available_cases(rebase_on_samples(load_suite(EXAMPLE_SUITE, check_files=False), samples))
        if skipped:
            log.info("example suite: not offering %s (media not on this server)", ", ".join(skipped))
        return suite

    def _uploaded(self, upload: Path, samples: Path | None) -> Suite:
        # by content: the same zip uploaded again (another click, another tab) is not unpacked again
        key = (upload.stat().st_size, file_digest(upload))
        with self._unpack_lock:
            hit = self._unpacked.get(key)
            if hit is not None and hit[0].is_dir() and not hit[1].missing_files():
                self._unpacked.move_to_end(key)
                return hit[1]
            workdir = self.ctx.scratch_dir("suite-")
            max_bytes = int(self.ctx.settings.max_upload_mb * 1024 * 1024)
            try:
                suite = uploaded_suite(upload, workdir, samples, max_bytes, self.ctx.disk)
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            self._unpacked[key] = (workdir, suite)
            self.workdirs[id(suite)] = workdir
            while len(self._unpacked) > UNPACKED_KEEP:
                old, old_suite = self._unpacked.popitem(last=False)[1]
                self.workdirs.pop(id(old_suite), None)
                shutil.rmtree(old, ignore_errors=True)
            return suite

    def cases_update(self, which: str, upload: str | None):
        """Case checkboxes for the chosen suite (all ticked)."""
        try:
            suite = self.suite_for(which, upload)
        except (EvalError, OSError, ValueError) as e:
            if which == "upload" and upload:
                gr.Warning(one_line(e))
            return gr.update(choices=[], value=[])
        ids = [c.id for c in suite.cases]
        return gr.update(choices=ids, value=ids)

    # --- handlers -------------------------------------------------------------------------------
    @user_errors
    @within_disk_budget  # runs and report zips count against the visitors' disk budget
    def run(
        self,
        which: str,
        upload: str | None,
        case_ids: list[str] | None,
        seconds,
        session: SessionState | None,
        where: str = "local",
        operator_token: str | None = None,
        progress=gr.Progress(),
    ):
        session = session or new_session()
        if where == "ray" and not operator_allowed(self.ctx.settings, operator_token):
            raise EvalError(
                "running on a Ray cluster is for this server's operator (WORKBENCH_OPERATOR_ACTIONS, or the "
                "operator token in the Weights panel); choose 'this machine'"
            )
        full = self.suite_for(which, upload)
        suite = select_cases(full, case_ids, float(seconds) if seconds else None)
        # the suite's unpacked media and the run folder stay while the run reads and writes them
        held = [p for p in (self.workdirs.get(id(full)), self.session_runs_dir(session)) if p is not None]
        with self.ctx.disk.hold(*held):
            return self._run_suite(suite, session, where, progress)

    def _run_suite(self, suite: Suite, session: SessionState, where: str, progress):
        ray = None
        if where == "ray":
            # media by path: the suite's files are on this machine, and a cluster of this app shares its storage
            ray = RayOptions(address=self.ctx.settings.eval_ray_address)
        out = run_suite(
            suite,
            self.ctx.engine,
            runs_dir=self.session_runs_dir(session),
            jobs=0 if ray else 1,
            progress=gr_progress(progress),
            ray=ray,
        )
        run = load_run(out.path)
        label = f"mine/{out.path.name}"
        return (
            session,
            summary_markdown(run),
            table_for(run),
            *plots_for(run),
            zip_run(out.path, self.ctx.scratch_dir("report-")),
            self._runs_update(session, label),
            self._runs_update(session, second=True),
            self._runs_update(session, label),
        )

    @user_errors
    def open_run(self, label: str | None, session: SessionState | None):
        session = session or new_session()
        run = load_run(self._run_dir(label, session))
        return (
            summary_markdown(run),
            table_for(run),
            *plots_for(run),
            zip_run(run.path, self.ctx.scratch_dir("report-")),
        )

    @user_errors
    def compare(self, candidate: str | None, baseline: str | None, session: SessionState | None):
        session = session or new_session()
        if not candidate or not baseline or candidate == baseline:
            raise EvalError("choose two different runs: a baseline and a candidate")
        c = compare_runs(self._run_dir(baseline, session), self._run_dir(candidate, session))
        worse = c.gate.worse
        verdict = (
            "**No regression**: every tracked metric is within its tolerance."
            if c.gate.passed
            else f"**Regression** in: {', '.join(worse)}."
        )
        if c.gate.undetermined:
            verdict += (
                f" **Undetermined**, not judged: {', '.join(c.gate.undetermined)} (the weight-free offset was "
                "undetermined in some cases, so these averages cover different cases)."
            )
        head = f"Baseline `{c.a.path.name}` → candidate `{c.b.path.name}`. {verdict}"
        if c.warnings:
            head += "\n\n**Made differently** (numbers may not compare): " + "; ".join(c.warnings)
        figs = c.figures
        shown = (figs.pop("sync"), figs.pop("latency"))
        import matplotlib.pyplot as plt

        for extra in figs.values():
            plt.close(extra)
        return head, blank_missing(c.summary.round(4)), blank_missing(c.cases.round(4)), *shown

    def stages_markdown(self) -> str:
        from workbench.evaluation.stages import latest_report

        report = latest_report(self.ctx.runs_dir)
        if report is None:
            return "No measurement yet: run `workbench eval stages SOURCE --audio SPEECH` on this server."
        return report.markdown()

    def refresh_runs(self, session: SessionState | None):
        session = session or new_session()
        return self._runs_update(session), self._runs_update(session, second=True), self._runs_update(session)

    # --- layout ---------------------------------------------------------------------------------
    def build(self, session: gr.State) -> None:
        try:
            example_ids = [c.id for c in self.suite_for("example", None).cases]
        except (EvalError, OSError) as e:
            log.warning("example suite unavailable: %s", e)
            example_ids = []
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                which = gr.Radio(
                    [("Example suite", "example"), ("Uploaded manifest", "upload")],
                    value="example",
                    label="suite",
                    elem_id="eval-which",
                )
                upload = gr.File(
                    label="manifest (.yaml over the sample media) or .zip (manifest + media)",
                    file_types=MANIFEST_TYPES,
                    type="filepath",
                    height=130,
                    elem_id="eval-upload",
                )
                cases = gr.CheckboxGroup(example_ids, value=example_ids, label="cases", elem_id="eval-cases")
                # 0, not empty, is the default: the browser sends 0 for an empty number field, so a minimum
                # of 1 refused the defaults ("Value 0 is less than minimum value 1").
                seconds = gr.Number(
                    0,
                    label="quick run: at most this many seconds per case (0: as the manifest says)",
                    minimum=0,
                    maximum=60,
                    elem_id="eval-seconds",
                )
                s = self.ctx.settings
                where = gr.Radio(
                    [("this machine", "local"), (f"Ray cluster ({s.eval_ray_address})", "ray")],
                    value="local",
                    # starting Ray is the operator's: read-only to a visitor of a public server without the token
                    interactive=operator_allowed(s) or s.operator_token is not None,
                    label="run on",
                    info="Ray: each case on a cluster worker (pip install '.[ray]'); same run folder",
                    elem_id="eval-where",
                )
                run_btn = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
                # Full width: a run's label is long, and beside a button it ran under the dropdown's arrow.
                past = gr.Dropdown([], label="open an earlier run", elem_id="eval-past")
                open_btn = gr.Button("Open", size="sm")
            with gr.Column(scale=3, min_width=360):
                summary = gr.Markdown("Run an evaluation to see its summary.", elem_id="eval-summary")
                with gr.Accordion("What the metrics mean", open=False, elem_id="eval-metric-help"):
                    gr.Markdown(metric_help_markdown())
                report_zip = gr.File(label="report folder (zip)", interactive=False, elem_id="eval-zip")
        table = gr.Dataframe(
            pd.DataFrame(columns=EMPTY_TABLE_HEADERS),
            label="per-case results",
            interactive=False,
            # Unwrapped: each column as wide as its header and values (wrapped, narrow numeric columns broke their
            # headers letter by letter); the long renderer description is last and cut, so it never hides a metric.
            wrap=False,
            max_chars=60,
            elem_id="eval-table",
        )
        with gr.Row():
            plots = [
                gr.Plot(label=name.replace("_", " "), show_label=False, elem_id=f"eval-plot-{name}")
                for name in SHOWN_PLOTS + SHOWN_ROW_PLOTS
            ]
        with gr.Accordion("Per-stage latency and capacity (latest `workbench eval stages`)", open=False):
            gr.Markdown(self.stages_markdown(), elem_id="eval-stages")
        with gr.Accordion("What the columns mean", open=False, elem_id="eval-glossary"):
            gr.Markdown(metrics.glossary_markdown([c for c in TABLE_COLUMNS if metrics.describe(c)]))
        with gr.Accordion("Compare with an earlier run (regression view)", open=False, elem_id="eval-compare"):
            with gr.Row():
                baseline = gr.Dropdown([], label="baseline (A)", elem_id="eval-baseline")
                candidate = gr.Dropdown([], label="candidate (B)", elem_id="eval-candidate")
                compare_btn = gr.Button("Compare", elem_id="eval-compare-btn")
            verdict = gr.Markdown("", elem_id="eval-verdict")
            gate_table = gr.Dataframe(
                pd.DataFrame(columns=GATE_HEADERS),
                label="summary metrics: baseline vs candidate",
                interactive=False,
                wrap=True,
            )
            case_table = gr.Dataframe(
                pd.DataFrame(columns=CASE_DIFF_HEADERS), label="per-case metrics", interactive=False, wrap=True
            )
            with gr.Row():
                sync_cmp = gr.Plot(label="sync curves (A dashed, B solid)", show_label=False, elem_id="eval-cmp-sync")
                latency_cmp = gr.Plot(label="latency CDF", show_label=False, elem_id="eval-cmp-latency")

        which.change(self.cases_update, [which, upload], [cases])
        upload.change(lambda u: gr.update(value="upload") if u else gr.update(), [upload], [which])
        run_btn.click(
            self.run,
            [which, upload, cases, seconds, session, where]
            + ([self.ctx.operator_box] if self.ctx.operator_box is not None else []),
            [session, summary, table, *plots, report_zip, candidate, baseline, past],
            concurrency_limit=1,
            concurrency_id="evaluation",
            show_progress_on=[summary],  # one progress bar, beside the button
        )
        open_btn.click(self.open_run, [past, session], [summary, table, *plots, report_zip])
        compare_btn.click(
            self.compare, [candidate, baseline, session], [verdict, gate_table, case_table, sync_cmp, latency_cmp]
        )
        self.load_runs = (self.refresh_runs, [session], [candidate, baseline, past])
