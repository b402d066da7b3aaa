"""`workbench eval …` (mounted by workbench/cli.py) and `python -m workbench.evaluation …`.

    workbench eval SUITE.yaml [--jobs N] [--baseline old/summary.json] [--tolerance metric=0.5 …]
    workbench eval run SUITE.yaml --ray [ADDRESS] [--ray-media path|store]
    workbench eval gate RUN --baseline old/summary.json
    workbench eval compare RUN_A RUN_B [--out folder]
    workbench eval robustness VIDEO … [--windows 50,75,0] [--shifts -5,0,5] [--out table.md]

`SUITE` alone runs it (the `run` command is the default). Exit codes: 0 fine, 1 the gate found a regression,
2 bad input (missing manifest, file or baseline).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from workbench import atomic
from workbench.avatars.model import PrepParams
from workbench.config import Settings
from workbench.evaluation import metrics
from workbench.evaluation.errors import EvalError
from workbench.evaluation.manifest import load_suite
from workbench.media import load_audio
from workbench.tables import make_console

# The imports left inside the commands below pull heavy libraries (torch through the scorers, pandas, matplotlib)
# that `workbench --help` and the other commands, which mount this app, must not pay for; the engine is built by
# the commands that are entry points.

console = make_console()  # full width in a pipe or CI log, not 80 columns


def ray_flag(args: list[str]) -> list[str]:
    """`--ray` takes an optional address: a bare `--ray` becomes `--ray=local`; `--ray X` keeps X as the address
    unless X is an option or a file (the suite, as in `--ray suite.yaml`)."""
    out: list[str] = []
    k = 0
    while k < len(args):
        a = args[k]
        if a == "--ray":
            nxt = args[k + 1] if k + 1 < len(args) else None
            if nxt is None or nxt.startswith("-") or nxt.endswith((".yaml", ".yml")) or Path(nxt).is_file():
                out.append("--ray=local")
            else:
                out.append(f"--ray={nxt}")
                k += 1
        else:
            out.append(a)
        k += 1
    return out


class _DefaultRun(TyperGroup):
    """A group whose first argument, when it is not a command name, is a suite for `run`."""

    def parse_args(self, ctx, args):  # type: ignore[override]
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, ray_flag(args))


eval_app = typer.Typer(
    cls=_DefaultRun,
    help="Evaluate lip-sync (SyncNet LSE-C/LSE-D, weight-free sync) and latency.",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(e: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {e}")
    return typer.Exit(code=2)


def _tolerances(specs: list[str] | None):
    from workbench.evaluation.gate import parse_tolerance  # pandas

    out = {}
    for s in specs or []:
        try:
            name, tol = parse_tolerance(s)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--tolerance") from e
        out[name] = tol
    return out


def _num(v) -> str:
    return "" if v is None else f"{v:.4g}"


def print_gate(result, title: str = "regression gate") -> None:
    table = Table("metric", "baseline", "current", "delta", "allowed", "better", "status", title=title)
    colours = {
        "worse": "red",
        "better": "green",
        "ok": "white",
        "missing": "yellow",
        "untracked": "dim",
        "undetermined": "yellow",
    }
    f = _num
    for r in result.rows:
        c = colours.get(r.status, "white")
        table.add_row(
            r.metric, f(r.baseline), f(r.current), f(r.delta), f(r.allowed), r.better, f"[{c}]{r.status}[/{c}]"
        )
    console.print(table)
    if result.passed:
        console.print("[green]gate passed[/green]: no metric is worse than its tolerance")
    else:
        console.print(f"[red]gate failed[/red]: worse than tolerance: {', '.join(result.worse)}")
    if result.undetermined:
        console.print(
            f"[yellow]undetermined[/yellow]: {', '.join(result.undetermined)} not judged: the weight-free offset was "
            "undetermined in some cases, so these averages cover different cases in the two runs"
        )


def _print_cases(rows: list[dict]) -> None:
    cols = metrics.cli_columns()  # the registry says which columns the narrow table shows
    table = Table(*cols.values())
    for r in rows:
        if r.get("ls_determined") == 0 and r.get("ls_offset") is None:
            r = {**r, "ls_offset": "undetermined"}
        table.add_row(*(_num(r.get(c)) if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols))
    console.print(table)
    for r in rows:
        if r.get("status") != "ok":
            console.print(f"[red]{r['case']} failed:[/red] {r.get('error', '')}")


@eval_app.command("run")
def run_cmd(
    suite: Annotated[Path, typer.Argument(help="suite manifest (YAML)")],
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", min=1, help="cases in parallel processes (Ray: at most N workers)")
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option(help="a previous run's summary.json (or folder) to gate against")
    ] = None,
    tolerance: Annotated[list[str] | None, typer.Option(help="override a tolerance: metric=0.5 or metric=10%")] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="where run folders go (default: settings.runs_dir)")] = None,
    name: Annotated[str | None, typer.Option(help="run folder name (default: SUITE-timestamp)")] = None,
    models_dir: Annotated[Path | None, typer.Option(help="models/ folder (SyncNet under syncnet_eval/)")] = None,
    face_detector: Annotated[str, typer.Option(help="auto (S3FD when present), s3fd or dlib")] = "auto",
    skip_missing: Annotated[
        bool, typer.Option("--skip-missing", help="leave out cases whose media are absent (else it is an error)")
    ] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="run cases on a Ray cluster: bare --ray uses RAY_ADDRESS or starts Ray here; "
            "auto = the cluster `ray start` runs on this machine; HOST:PORT or ray://HOST:PORT. "
            "--jobs then caps the workers (default: as many as the cluster holds)",
        ),
    ] = None,
    ray_media: Annotated[
        str, typer.Option(help="with --ray: path (shared storage, same paths on every node) or store (object store)")
    ] = "path",
    ray_gpus_per_worker: Annotated[
        float, typer.Option(min=0.05, max=8, help="with --ray: GPUs each GPU worker holds (0.5: two per GPU)")
    ] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a suite into a new run folder; with --baseline, exit 1 when a metric regressed."""
    from workbench.evaluation.gate import case_offsets, load_case_offsets, load_summary  # pandas
    from workbench.evaluation.runner import run_suite  # torch

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tols = _tolerances(tolerance)
    if ray_media not in ("path", "store"):
        raise typer.BadParameter("path or store", param_hint="--ray-media")
    options = None
    if ray is not None:
        from workbench.evaluation.distributed import RayOptions  # torch (its workers score)

        options = RayOptions(address=ray, media=ray_media, gpus_per_worker=ray_gpus_per_worker)
    try:
        manifest = load_suite(suite, check_files=not skip_missing)
        if skip_missing:
            manifest, skipped = manifest.available()
            if skipped:
                typer.echo(f"skipping {', '.join(skipped)}: media not found")
        base = load_summary(baseline) if baseline is not None else None
        base_offsets = load_case_offsets(baseline) if baseline is not None else None
    except EvalError as e:
        raise _fail(e) from e
    from workbench.engine import Engine  # the command is an entry point: it builds the one engine

    engine = Engine(Settings(**({"models_dir": models_dir} if models_dir else {})))
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[msg]}"),
        TimeElapsedColumn(),
    )
    n = len(manifest.cases)
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"eval {manifest.name}", total=n, msg="")
        try:
            out = run_suite(
                manifest,
                engine,
                runs_dir,
                jobs=jobs or (0 if options else 1),
                face_detector=face_detector,
                run_name=name,
                progress=lambda f, m="": bar.update(task, completed=round(f * n, 2), msg=m[:60]),
                ray=options,
            )
        except EvalError as e:
            raise _fail(e) from e
    _print_cases(out.rows)
    for note in out.summary.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"run folder: [bold]{out.path}[/bold]  (report.md, summary.json, plots/)")
    if base is not None:
        _gate_or_exit(out.summary["metrics"], base, tols, (case_offsets(out.rows), base_offsets))


@eval_app.command("gate")
def gate_cmd(
    current: Annotated[Path, typer.Argument(help="a run folder or its summary.json")],
    baseline: Annotated[Path, typer.Option(help="the baseline summary.json or run folder")],
    tolerance: Annotated[list[str] | None, typer.Option(help="override a tolerance: metric=0.5 or metric=10%")] = None,
) -> None:
    """Compare an existing run with a baseline; exit 1 when a metric is worse than its tolerance."""
    from workbench.evaluation.gate import load_case_offsets, load_summary  # pandas

    tols = _tolerances(tolerance)
    try:
        cur, base = load_summary(current), load_summary(baseline)
        offsets = (load_case_offsets(current), load_case_offsets(baseline))
    except EvalError as e:
        raise _fail(e) from e
    _gate_or_exit(cur, base, tols, offsets)


def _gate_or_exit(current: dict, baseline: dict, tols, offsets=(None, None)) -> None:
    """Print the side-by-side diff; exit 1 when a metric is worse than its tolerance (or, with both runs' case
    tables, when a case's weight-free offset moved)."""
    from workbench.evaluation.gate import compare_summaries  # pandas

    result = compare_summaries(current, baseline, tols, offsets)
    print_gate(result)
    if not result.passed:
        raise typer.Exit(code=1)


@eval_app.command("compare")
def compare_cmd(
    run_a: Annotated[Path, typer.Argument(help="baseline run folder")],
    run_b: Annotated[Path, typer.Argument(help="candidate run folder")],
    out: Annotated[Path | None, typer.Option(help="folder for the comparison's tables and plots")] = None,
) -> None:
    """Two runs side by side: summary, per-case metrics, plots."""
    from workbench.evaluation.compare import compare_runs  # pandas, matplotlib
    from workbench.evaluation.report import markdown_table, save_figure

    try:
        cmp = compare_runs(run_a, run_b)
    except EvalError as e:
        raise _fail(e) from e
    print_gate(cmp.gate, title=f"{run_a.name} → {run_b.name}")
    for w in cmp.warnings:
        console.print(f"[yellow]warning:[/yellow] the runs were made differently: {escape(w)}", soft_wrap=True)
    if len(cmp.cases):
        t = Table("case", "metric", "A", "B", "delta")
        for _, r in cmp.cases.iterrows():
            t.add_row(
                *(
                    str(r[c]) if not isinstance(r[c], float) else f"{r[c]:.4g}"
                    for c in ("case", "metric", "a", "b", "delta")
                )
            )
        console.print(t)
    if out is not None:
        atomic.write_text(out / "summary.csv", cmp.summary.to_csv(index=False))
        atomic.write_text(out / "cases.csv", cmp.cases.to_csv(index=False))
        atomic.write_text(
            out / "comparison.md",
            "# Comparison\n\n" + markdown_table(cmp.summary) + "\n\n" + markdown_table(cmp.cases) + "\n",
        )
        for k, fig in cmp.figures.items():
            save_figure(fig, out / f"{k}.png")
        console.print(f"wrote {out}")


@eval_app.command("stages")
def stages_cmd(
    source: Annotated[Path, typer.Argument(help="an avatar video or photo (prepared and cached as needed)")],
    audio: Annotated[Path, typer.Option("--audio", help="driving speech")],
    seconds: Annotated[float, typer.Option(min=1, max=60, help="seconds of the audio rendered")] = 8.0,
    max_frames: Annotated[int | None, typer.Option(min=1, help="avatar frames taken from the source")] = 50,
    renderer: Annotated[str, typer.Option(help="auto, musetalk or cpu")] = "auto",
    runs_dir: Annotated[Path | None, typer.Option(help="where stages/latest.json goes (default: settings)")] = None,
    models_dir: Annotated[Path | None, typer.Option(help="models/ folder")] = None,
) -> None:
    """Per-stage milliseconds per frame (features, mouth/UNet, decode, paste-back, encode) and 25 fps sessions held,
    with the hardware recorded; the Evaluation tab shows the latest."""
    from workbench.engine import Engine  # the command is an entry point: it builds the one engine
    from workbench.evaluation.stages import measure_stages, save_report  # torch

    if renderer not in ("auto", "musetalk", "cpu"):
        raise typer.BadParameter("auto, musetalk or cpu", param_hint="--renderer")
    settings = Settings(**{k: v for k, v in {"models_dir": models_dir, "runs_dir": runs_dir}.items() if v})
    engine = Engine(settings, renderer=renderer)  # type: ignore[arg-type]
    try:
        avatar = engine.prepare(source, PrepParams(max_frames=max_frames))
        report = measure_stages(engine, avatar, load_audio(audio)[: int(seconds * 16000)])
    except (ValueError, RuntimeError, OSError) as e:
        raise _fail(e) from e
    console.print(report.markdown(), markup=False, soft_wrap=True)
    console.print(f"saved {save_report(report, settings.runs_dir)}")


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of integers") from e


@eval_app.command("robustness")
def robustness_cmd(
    videos: Annotated[list[Path], typer.Argument(help="real talking clips with their own in-sync audio")],
    windows: Annotated[str, typer.Option(help="window lengths in frames, 0 = whole track")] = "40,50,75,100,0",
    shifts: Annotated[str, typer.Option(help="injected audio shifts in frames")] = "-10,-5,-2,0,2,5,10",
    out: Annotated[
        Path | None, typer.Option(help="write the hit-rate table here (Markdown) and trials beside it (CSV)")
    ] = None,
) -> None:
    """How often the weight-free metric (and its two baselines) finds offset 0 and injected shifts (±1 frame)."""
    import pandas as pd

    from workbench.evaluation.report import markdown_table  # pandas, matplotlib
    from workbench.evaluation.robustness import clip_landmarks, hit_rates, improvement, trials

    frames = []
    for v in videos:
        try:
            clip = clip_landmarks(v)
        except (EvalError, ValueError) as e:
            raise _fail(e) from e
        frames.append(trials(clip, _ints(windows), _ints(shifts)))
    df = pd.concat(frames, ignore_index=True)
    rates = hit_rates(df)
    gain = improvement(rates)
    text = (
        markdown_table(rates.round(2))
        + "\n\nfused minus delta (baseline), all trials, percentage points:\n\n"
        + markdown_table(gain.round(3))
        + "\n"
    )
    console.print(text, soft_wrap=True, markup=False)
    if out is not None:
        atomic.write_text(out, text)
        atomic.write_text(out.with_suffix(".csv"), df.to_csv(index=False))
