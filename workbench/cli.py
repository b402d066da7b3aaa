"""`workbench` command line: prepare avatars, render lip-synced video, manage weights, evaluate, offline speech."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from workbench import weights
from workbench.avatars.model import PrepParams, describe_acting
from workbench.avatars.store import AvatarCache, CacheError
from workbench.config import (
    MASK_SOURCES,
    PARSING_MODES,
    RENDERERS,
    DetectorName,
    MaskSource,
    ParsingMode,
    RendererName,
    Settings,
)
from workbench.engine import Engine
from workbench.evaluation.cli import eval_app
from workbench.faces.boxes import format_bbox_range
from workbench.integrations.streams import StreamPool
from workbench.media import SILENCE_DBFS, MediaWarning, is_silent, load_audio
from workbench.tables import Format, make_console, print_rows, widen_help
from workbench.voice.cli import voice_app

widen_help()
app = typer.Typer(help="Real-time talking digital human workbench.", no_args_is_help=True, add_completion=False)
weights_app = typer.Typer(help="MuseTalk, VAE, Whisper, detector and SyncNet weights.", no_args_is_help=True)
avatars_app = typer.Typer(help="Prepared avatars in the cache.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.add_typer(avatars_app, name="avatars")
console = make_console()
OutputFormat = Annotated[Format, typer.Option("--format", help="table (default), csv or json")]

ModelsDir = Annotated[Path | None, typer.Option("--models-dir", help="MuseTalk models/ folder")]
CacheDir = Annotated[Path | None, typer.Option("--cache-dir", help="avatar cache folder")]


def _settings(models_dir: Path | None = None, cache_dir: Path | None = None, **extra) -> Settings:
    overrides = {k: v for k, v in {"models_dir": models_dir, "cache_dir": cache_dir, **extra}.items() if v is not None}
    return Settings(**overrides)


def _engine(settings: Settings, renderer: RendererName | None = None):
    return Engine(settings, renderer=renderer)


class _Bar:
    """A rich progress bar fed by the engine's progress(fraction, message) callbacks."""

    def __init__(self, title: str):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[msg]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task(title, total=1.0, msg="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, fraction: float, message: str = "") -> None:
        self.progress.update(self.task, completed=max(0.0, min(1.0, fraction)), msg=message)


def _output_file(output: Path, default_name: str) -> Path:
    """Where to write: `output`, or `default_name` inside it when it is a folder; checked before any work."""
    output = Path(output)
    if output.is_dir():
        output = output / default_name
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"the folder {parent} for -o does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise PermissionError(f"cannot write {output}: permission denied")
    return output


@contextlib.contextmanager
def _media_warnings():
    """Print what the media readers warn about (a truncated file, a downscaled source) as it happens."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MediaWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, MediaWarning):
                    console.print(f"[yellow]warning:[/yellow] {w.message}")


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=2)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
def prepare(
    source: Annotated[Path, typer.Argument(help="a video, a photo, or a folder of frames")],
    bbox_shift: int = PrepParams.bbox_shift,
    extra_margin: int = PrepParams.extra_margin,
    parsing_mode: Annotated[str, typer.Option(help=" or ".join(PARSING_MODES))] = PrepParams.parsing_mode,
    left_cheek_width: int = PrepParams.left_cheek_width,
    right_cheek_width: int = PrepParams.right_cheek_width,
    detector: Annotated[
        str, typer.Option(help="dlib (offline default) or dwpose (MuseTalk's, needs weights)")
    ] = PrepParams.detector,
    mask_source: Annotated[str, typer.Option(help=", ".join(MASK_SOURCES))] = PrepParams.mask_source,
    max_frames: Annotated[
        int | None, typer.Option(min=1, help="take at most this many frames")
    ] = PrepParams.max_frames,
    renderer: Annotated[str, typer.Option(help=", ".join(RENDERERS))] = "auto",
    name: Annotated[str | None, typer.Option(help="a readable name (default: the file's stem)")] = None,
    force_bbox_shift: Annotated[
        bool, typer.Option(help="v1.5 experiment: apply bbox_shift although the reference forces 0 for v1.5")
    ] = PrepParams.force_bbox_shift,
    models_dir: ModelsDir = None,
    cache_dir: CacheDir = None,
) -> None:
    """Prepare (or reuse) a cached avatar and print its id and the measured bbox_shift range.

    Which parameters act depends on the loaded weights, as in the reference: v1.5 uses extra_margin, the
    parsing mode and cheek widths (bbox_shift forced to 0); v1.0 uses bbox_shift (raw mask, no margin)."""
    params = PrepParams(
        bbox_shift=bbox_shift,
        extra_margin=extra_margin,
        parsing_mode=_choice(parsing_mode, ParsingMode),
        left_cheek_width=left_cheek_width,
        right_cheek_width=right_cheek_width,
        detector=_choice(detector, DetectorName),
        mask_source=_choice(mask_source, MaskSource),
        max_frames=max_frames,
        force_bbox_shift=force_bbox_shift,
    )
    engine = _engine(_settings(models_dir, cache_dir), _choice(renderer, RendererName))
    try:
        with _Bar("prepare") as bar, _media_warnings():
            avatar = engine.prepare(source, params, progress=bar, name=name)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        raise _fail(e) from e
    n_face = int(avatar.has_face.sum())
    console.print(
        f"avatar [bold]{avatar.avatar_id}[/bold] (name [bold]{avatar.extras.get('name', '')}[/bold]): "
        f"{len(avatar)} frames ({n_face} with a face), "
        f"{avatar.frame_size[1]}x{avatar.frame_size[0]}, mask: {avatar.mask_kind}, "
        f"latents: {'yes' if avatar.latents is not None else 'no'}"
    )
    console.print(
        f"recommended bbox_shift range: {format_bbox_range(avatar.bbox_range)}  (current bbox_shift {bbox_shift})"
    )
    console.print(describe_acting(avatar.params.model_version))


@app.command()
def render(
    audio: Annotated[Path, typer.Option("--audio", help="driving speech, any sample rate")],
    output: Annotated[Path, typer.Option("-o", "--output", help="mp4 to write")],
    avatar: Annotated[str | None, typer.Option("--avatar", help="a cached avatar's name or id")] = None,
    source: Annotated[Path | None, typer.Option("--source", help="or a video/photo to prepare first")] = None,
    renderer: Annotated[str, typer.Option(help=", ".join(RENDERERS))] = "auto",
    batch_size: Annotated[int | None, typer.Option(min=1, max=64, help="frames per renderer batch")] = None,
    decoder: Annotated[str, typer.Option(help="MuseTalk decoder: vae (the reference) or taesd (fast)")] = "vae",
    models_dir: ModelsDir = None,
    cache_dir: CacheDir = None,
) -> None:
    """Render a lip-synced 25 fps mp4 with the audio muxed in. `-o` may name a folder."""
    if decoder not in ("vae", "taesd"):
        raise _fail(ValueError(f"--decoder must be vae or taesd, not {decoder!r}"))
    if (avatar is None) == (source is None):
        raise _fail(ValueError("give exactly one of --avatar ID or --source FILE"))
    settings = _settings(models_dir, cache_dir, batch_size=batch_size, decoder=decoder)
    engine = _engine(settings, _choice(renderer, RendererName))
    try:
        with _media_warnings():
            av = engine.load_avatar(avatar) if avatar else engine.prepare(source)
        output = _output_file(output, f"{av.extras.get('name') or av.avatar_id}_{Path(audio).stem}.mp4")
        audio16k = load_audio(audio)
        if is_silent(audio16k):
            console.print(
                f"[yellow]warning:[/yellow] {Path(audio).name} is silent (below {SILENCE_DBFS:.0f} dBFS): "
                "the mouth stays closed"
            )
        with _Bar(f"render ({engine.renderer.describe()})") as bar:
            result = engine.render_file(av, audio16k, output, progress=bar)
    except (ValueError, RuntimeError, OSError, KeyError) as e:
        raise _fail(e) from e
    fps = result.n_frames / result.seconds if result.seconds > 0 else float("inf")
    console.print(f"wrote {result.path}: {result.n_frames} frames in {result.seconds:.1f} s ({fps:.1f} frames/s)")


@app.command()
def tune(
    source: Annotated[Path, typer.Argument(help="the avatar's video or photo (prepared and cached as needed)")],
    audio: Annotated[Path, typer.Option("--audio", help="driving speech for the sweep (a few seconds)")],
    values: Annotated[
        str | None, typer.Option(help="bbox_shift values, e.g. -10,0,10 (default: spread over the measured range)")
    ] = None,
    n: Annotated[int, typer.Option("-n", min=2, max=9, help="values spread over the measured range")] = 5,
    seconds: Annotated[float, typer.Option(min=2, max=30, help="seconds of the audio rendered per value")] = 6.0,
    max_frames: Annotated[int | None, typer.Option(min=1, help="avatar frames taken from the source")] = 50,
    renderer: Annotated[str, typer.Option(help=", ".join(RENDERERS))] = "auto",
    out: Annotated[Path | None, typer.Option(help="write the score-vs-value plot (PNG) and table (CSV) here")] = None,
    save: Annotated[bool, typer.Option("--save", help="prepare the avatar with the recommended value")] = False,
    models_dir: ModelsDir = None,
    cache_dir: CacheDir = None,
) -> None:
    """Auto-scored bbox_shift sweep: render per value, score with the evaluation's metrics, recommend the best."""
    from workbench.evaluation.sweep import plot_sweep, sweep_bbox_shift
    from workbench.media import load_audio

    try:
        vals = [int(v) for v in values.split(",") if v.strip()] if values else None
    except ValueError as e:
        raise _fail(ValueError(f"--values {values!r} is not a comma-separated list of integers")) from e
    engine = _engine(_settings(models_dir, cache_dir), _choice(renderer, RendererName))
    base = PrepParams(max_frames=max_frames)
    try:
        audio16k = load_audio(audio)[: int(seconds * 16000)]
        with _Bar("bbox_shift sweep") as bar, _media_warnings():
            result = sweep_bbox_shift(engine, source, audio16k, base, values=vals, n=n, progress=bar)
    except (ValueError, RuntimeError, OSError) as e:
        raise _fail(e) from e
    rows = []
    for p in result.points:
        r = p.row
        cells = [r.get(k) for k in ("ls_lag0", "ls_margin", "silent_open_share", "jitter_lips", "syncnet_lse_c")]
        mark = " ←" if p is result.best else ""
        rows.append([f"{p.value}{mark}", f"{p.score:.3f}", *(None if c is None else f"{c:.3f}" for c in cells)])
    columns = ["bbox_shift", "score", "sync @0", "margin", "open in silence", "lip jitter", "LSE-C"]
    print_rows(console, columns, rows, Format.table)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"recommended bbox_shift: [bold]{result.best.value}[/bold]")
    if out is not None:
        from workbench import atomic
        from workbench.evaluation.report import save_figure

        save_figure(plot_sweep(result), out / "bbox_shift_sweep.png")
        atomic.write_text(out / "bbox_shift_sweep.csv", result.table().to_csv(index=False))
        console.print(f"wrote {out}/bbox_shift_sweep.png and .csv")
    if save:
        avatar = engine.prepare(source, result.params)
        console.print(f"saved: avatar [bold]{avatar.avatar_id}[/bold] uses bbox_shift {result.params.bbox_shift}")


@avatars_app.command("list")
def avatars_list(cache_dir: CacheDir = None, fmt: OutputFormat = Format.table) -> None:
    """List cached avatars."""
    # The name first: it is short and accepted wherever an id is (so is the full id, or its short form).
    rows = [
        [
            info.name,
            info.avatar_id,
            info.source,
            info.n_frames,
            format_bbox_range(info.bbox_range),
            _short_params(info.params),
            round(info.size_bytes / 1e6, 1),
        ]
        for info in AvatarCache(_settings(cache_dir=cache_dir).cache_dir).list()
    ]
    print_rows(console, ["name", "id", "source", "frames", "bbox range", "params", "MB"], rows, fmt)


@avatars_app.command("delete")
def avatars_delete(
    avatar_id: Annotated[str, typer.Argument(help="the avatar's name or id")], cache_dir: CacheDir = None
) -> None:
    """Delete a cached avatar."""
    try:
        AvatarCache(_settings(cache_dir=cache_dir).cache_dir).delete(avatar_id)
    except KeyError as e:
        raise _fail(e) from e
    console.print(f"deleted {avatar_id}")


@weights_app.command("check")
def weights_check(models_dir: ModelsDir = None, fmt: OutputFormat = Format.table) -> None:
    """Show which weight files are present, missing or corrupt. Exits 1 if MuseTalk's are incomplete."""
    report = weights.check(_settings(models_dir).models_dir)
    rows = [
        [
            comp.name,
            comp.status,
            "\n".join(f"{f.path} ({f.status}{': ' + f.detail if f.detail else ''})" for f in comp.files),
            comp.description,
        ]
        for comp in report.components.values()
    ]
    colour = {"present": "green", "missing": "yellow"}
    print_rows(
        console,
        ["component", "status", "files", "purpose"],
        rows,
        fmt,
        style=lambda col, v: colour.get(v, "red") if col == "status" else None,
    )
    if fmt is not Format.table:
        raise typer.Exit(code=0 if report.has_musetalk() else 1)
    if not report.has_musetalk():
        console.print(
            "MuseTalk is not ready; the CPU renderer is used. Get the weights with: workbench weights download"
        )
        raise typer.Exit(code=1)


@weights_app.command("download")
def weights_download(
    components: Annotated[
        list[str] | None, typer.Argument(help="components to fetch (default: MuseTalk v1.5's)")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="every component: detectors, face parsing, SyncNet too")] = False,
    force: Annotated[bool, typer.Option(help="fetch again even if present")] = False,
    models_dir: ModelsDir = None,
) -> None:
    """Download weights from their Hugging Face repos and official URLs (resumable, verified)."""
    names = list(weights.COMPONENTS) if all_ else (components or list(weights.DEFAULT_DOWNLOAD))
    try:
        with _Bar("download") as bar:
            weights.download(_settings(models_dir).models_dir, names, progress=bar, force=force)
    except (RuntimeError, ValueError, OSError) as e:
        raise _fail(e) from e
    weights_check(models_dir)


def _short_params(params: dict) -> str:
    defaults = PrepParams().to_dict()
    changed = {k: v for k, v in params.items() if defaults.get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"


def _choice(value: str, literal) -> str:
    allowed = get_args(literal)
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
    return value


@app.command("livekit-worker")
def livekit_worker(
    avatar: Annotated[str | None, typer.Option(help="the avatar a job shows unless the agent names one")] = None,
    renderer: Annotated[str, typer.Option(help=", ".join(RENDERERS))] = "auto",
    max_sessions: Annotated[
        int | None, typer.Option(min=1, max=64, help="avatar sessions (WORKBENCH_MAX_SESSIONS)")
    ] = None,
    load_threshold: Annotated[
        float, typer.Option(min=0.05, max=1.0, help="above this load LiveKit sends new sessions elsewhere")
    ] = 0.7,
    dev: Annotated[
        bool, typer.Option("--dev", help="development mode, for livekit-server --dev (verbose logs)")
    ] = False,
    models_dir: ModelsDir = None,
    cache_dir: CacheDir = None,
) -> None:
    """Serve the avatar to LiveKit Agents: register with LIVEKIT_URL as 'workbench-avatar' (docs/agents.md)."""
    try:
        # lazy: LiveKit is an optional extra (pip install -e '.[agents]'), and this is how its absence is told
        from workbench.integrations.livekit_worker import AvatarWorker, make_server
    except ImportError as exc:
        raise _fail(RuntimeError(f"LiveKit is not installed ({exc.name}): pip install -e '.[agents]'")) from None
    missing = [v for v in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET") if not os.environ.get(v)]
    if missing:
        raise _fail(
            RuntimeError(f"set {', '.join(missing)} (for livekit-server --dev: ws://127.0.0.1:7880, devkey, secret)")
        )
    settings = _settings(models_dir, cache_dir, **({"max_sessions": max_sessions} if max_sessions else {}))
    engine = _engine(settings, _choice(renderer, RendererName))
    pool = StreamPool(engine, max_sessions=settings.max_sessions, batch_size=settings.batch_size)
    try:
        pool.avatar(avatar)  # fail now, with the message, if there is no such avatar
    except (LookupError, CacheError) as exc:
        raise _fail(exc) from None
    engine.renderer  # noqa: B018 (load the model now, not while the first caller waits)
    worker = AvatarWorker(pool, default_avatar=avatar, max_session_s=settings.session_max_s)
    server = make_server(worker, load_threshold=load_threshold)
    console.print(f"LiveKit avatar worker ({engine.resolved_renderer_name()}) for {os.environ['LIVEKIT_URL']}")

    async def run() -> None:
        try:
            await server.run(devmode=dev)
        finally:
            await server.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


# `workbench eval …` and `workbench voice say|transcribe` come from their packages (whose models load only when a
# command runs); mounted here so there is one command.
app.add_typer(eval_app, name="eval")
app.add_typer(voice_app, name="voice")

if __name__ == "__main__":
    app()
