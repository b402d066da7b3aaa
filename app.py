"""`python app.py`: the talking-head workbench (Gradio UI + WebRTC routes) on one port.

Settings come from environment variables (WORKBENCH_*, OPENAI_API_KEY; see workbench/config.py) and
these flags. On Hugging Face Spaces the platform's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured.
"""

from __future__ import annotations

import faulthandler
import io
import logging
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

cli = typer.Typer(add_completion=False, help=__doc__)
log = logging.getLogger("workbench.app")


def _server_address(settings, host: str | None, port: int | None) -> tuple[str, int]:
    """Flag, else WORKBENCH_HOST/PORT, else the platform's GRADIO_SERVER_NAME/PORT, else 127.0.0.1:7860
    (0.0.0.0 inside a Hugging Face Space, whose proxy must reach the app)."""
    if host is None:
        platform_default = "0.0.0.0" if os.environ.get("SPACE_ID") else settings.host
        host = (
            settings.host
            if "host" in settings.model_fields_set
            else os.environ.get("GRADIO_SERVER_NAME", platform_default)
        )
    if port is None:
        port = (
            settings.port
            if "port" in settings.model_fields_set
            else int(os.environ.get("GRADIO_SERVER_PORT", settings.port))
        )
    return host, port


def _share_tunnel(host: str, port: int) -> str:
    """A public *.gradio.live link to the local server (needs internet), as `launch(share=True)` makes."""
    from gradio import networking

    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return networking.setup_tunnel(local, port, secrets.token_urlsafe(32), None, None)


@cli.command()
def main(
    host: Annotated[str | None, typer.Option(help="interface to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 7860)")] = None,
    share: Annotated[bool, typer.Option("--share", help="also open a public gradio.live link")] = False,
    models_dir: Annotated[Path | None, typer.Option(help="MuseTalk's models/ folder")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="prepared avatars")] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="evaluation runs")] = None,
    renderer: Annotated[str | None, typer.Option(help="auto, cpu or musetalk")] = None,
    samples_dir: Annotated[Path | None, typer.Option(help="sample media shown in the app")] = None,
    show_all_avatars: Annotated[bool, typer.Option(help="single-user use: list every cached avatar")] = False,
    max_sessions: Annotated[
        int | None, typer.Option(min=1, max=64, help="concurrent realtime calls (default 4, WORKBENCH_MAX_SESSIONS)")
    ] = None,
    realtime_model: Annotated[
        str | None, typer.Option(help="OpenAI Realtime model (default gpt-realtime-2, WORKBENCH_REALTIME_MODEL)")
    ] = None,
    reasoning_effort: Annotated[
        str | None, typer.Option(help="gpt-realtime-2's reasoning effort: minimal, low (default), medium or high")
    ] = None,
    transcription_model: Annotated[
        str | None, typer.Option(help="the user's transcript (default gpt-realtime-whisper; 'none' turns it off)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import uvicorn
    from pydantic import ValidationError

    from workbench.config import Settings
    from workbench.engine import Engine
    from workbench.ui.app import create_app

    overrides = {
        k: v
        for k, v in {
            "models_dir": models_dir,
            "cache_dir": cache_dir,
            "runs_dir": runs_dir,
            "renderer": renderer,
            "max_sessions": max_sessions,
            "realtime_model": realtime_model,
            "realtime_reasoning_effort": reasoning_effort,
            "realtime_transcription_model": transcription_model,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:  # a bad flag is one line, not a traceback
        first = exc.errors(include_url=False)[0]
        raise typer.BadParameter(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    bind_host, bind_port = _server_address(settings, host, port)
    settings = settings.model_copy(update={"host": bind_host, "port": bind_port, "share": share or settings.share})
    engine = Engine(settings)
    app = create_app(engine, samples_dir=samples_dir, show_all_avatars=show_all_avatars)
    server = uvicorn.Server(uvicorn.Config(app, host=bind_host, port=bind_port, log_level="warning"))
    if settings.share:

        def tunnel() -> None:
            while not server.started:
                time.sleep(0.1)
            try:
                typer.echo(f"Public link: {_share_tunnel(bind_host, bind_port)}")
            except Exception as e:  # offline, or the share server refused: the local server keeps running
                typer.echo(f"Could not open a share link ({e}); the app is still at http://{bind_host}:{bind_port}")

        threading.Thread(target=tunnel, daemon=True).start()
    typer.echo(f"Workbench on http://{bind_host}:{bind_port} (renderer: {engine.resolved_renderer_name()})")
    _stacks_on_signal()
    server.run()


def _stacks_on_signal() -> None:
    """`kill -USR1 <pid>` writes every thread's stack to stderr: what a job that never ends is waiting for. Not
    where stderr is no file of the process's own (captured by a test runner): there is nowhere to write them."""
    if not hasattr(signal, "SIGUSR1"):
        return
    try:
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    except (AttributeError, ValueError, io.UnsupportedOperation):
        log.info("stderr has no file descriptor: SIGUSR1 will not print thread stacks")


if __name__ == "__main__":
    cli()
