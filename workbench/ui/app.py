"""The workbench app: four tabs over one engine, served with the realtime routes on one FastAPI app."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import gradio as gr
from fastapi import FastAPI

from workbench.config import Settings
from workbench.disk_budget import sweep_dead_scratch, sweep_run_tmp
from workbench.plain import one_line
from workbench.realtime.server import RealtimeManager, mount_realtime
from workbench.ui import header, tuning_tiles
from workbench.ui.chat_tab import ChatTab
from workbench.ui.context import UIContext, dropdown_update
from workbench.ui.eval_tab import EvalTab
from workbench.ui.idle import quiet_gradio_queue
from workbench.ui.library import Library, find_samples_dir
from workbench.ui.prepare_tab import PrepareTab
from workbench.ui.session_state import SessionState, new_session
from workbench.ui.tuning_tab import TuningTab
from workbench.ui.warmup import ExampleWarmup
from workbench.ui.weights_panel import WeightsPanel

log = logging.getLogger(__name__)

TITLE = "Talking-head workbench"
HEADER_TTL_S = 60.0
WARMUP_POLL_S = 1.0  # how often a page refreshes the banner while the example avatar is being prepared
CSS = (
    header.HEADER_CSS
    + tuning_tiles.GALLERY_CSS
    + """
.gradio-container {max-width: 1320px !important}
#tune-gallery .caption-label {font-variant-numeric: tabular-nums}
footer {display: none !important}
.wb-chat-empty {padding: 48px; text-align: center; color: var(--body-text-color-subdued);
  border: 1px dashed var(--border-color-primary); border-radius: 8px}
"""
)


def openai_configured(settings: Settings) -> bool:
    key = settings.openai_api_key
    return key is not None and bool(key.get_secret_value().strip())


def theme() -> gr.themes.Base:
    # System fonts: the default theme would fetch Google Fonts, which an offline machine cannot reach.
    return gr.themes.Soft(font=("ui-sans-serif", "system-ui", "sans-serif"), font_mono=("ui-monospace", "monospace"))


class WorkbenchUI:
    """Builds the Blocks; keeps the tab objects so tests can call their handlers."""

    def __init__(
        self,
        engine,
        samples_dir: Path | None = None,
        show_all_avatars: bool = False,
        realtime: RealtimeManager | None = None,
        prepare_example: bool = False,
    ):
        self.engine = engine
        self.settings: Settings = engine.settings
        self.library = Library(
            engine,
            samples_dir if samples_dir is not None else find_samples_dir(engine.settings.samples_dir),
            show_all=show_all_avatars,
        )
        self.library.sample_digests()  # hash the samples now: pins their avatars before anything is saved
        example = self.library.default_example() if prepare_example else None
        # Started by create_app once the server is built (`start_warmup`); None: no background preparation.
        self.warmup = ExampleWarmup(engine, example) if example is not None else None
        self.ctx = UIContext(
            engine=engine,
            library=self.library,
            settings=self.settings,
            realtime=realtime,
            preferred_avatar=self.example_avatar_id,
        )
        self.prepare_tab = PrepareTab(self.ctx)
        self.tuning_tab = TuningTab(self.ctx)
        self.chat_tab = ChatTab(self.ctx)
        self.eval_tab = EvalTab(self.ctx)
        self._header: tuple[float, str, object] | None = None  # (time, renderer, weights report)
        self.weights_panel = WeightsPanel(self.ctx, lambda: self.header_html(fresh=True))

    def example_avatar_id(self) -> str | None:
        state = self.warmup.state() if self.warmup is not None else None
        return state.avatar_id if state is not None and state.status == "ready" else None

    def start_warmup(self) -> None:
        if self.warmup is not None:
            self.warmup.start()

    def header_html(self, fresh: bool = False) -> str:
        """The banner; the weights check behind it (format probes, hashes) is reused for a minute per process."""
        now = time.monotonic()
        if fresh or self._header is None or now - self._header[0] > HEADER_TTL_S:
            self._header = (now, self.engine.resolved_renderer_name(), self.engine.weights_report())
        _, renderer, report = self._header
        example = self.warmup.state() if self.warmup is not None else None
        return header.header_html(
            renderer, report, openai_configured(self.settings), example, decoder=self.settings.decoder
        )

    def warmup_tick(self, session: SessionState | None):
        """While the example avatar is prepared: the banner's progress; once it is done, the avatar lists (the
        chat tab then selects it) and the timer stops."""
        if self.warmup is None or self.warmup.state().busy:
            return (self.header_html(), *(gr.update() for _ in self.ctx.avatar_dropdowns), gr.update())
        return (self.header_html(), *self.refresh_all(session), gr.Timer(active=False))

    def refresh_all(self, session: SessionState | None):
        session = session or new_session()
        return tuple(dropdown_update(self.ctx, session) for _ in self.ctx.avatar_dropdowns)

    def build(self) -> gr.Blocks:
        # Gradio's copies of served files (previews, clips, zips) are dropped after a day.
        with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
            session = gr.State(new_session)  # a callable: a fresh state (and token) per page load
            banner = gr.HTML(self.header_html(), elem_id="wb-header")
            self.weights_panel.build(banner)
            with gr.Tabs():
                with gr.Tab("Avatar preparation", id="prepare"):
                    self.ctx.avatar_dropdowns.append(self.prepare_tab.build(session))
                with gr.Tab("bbox_shift tuning", id="tuning"):
                    self.ctx.avatar_dropdowns.append(self.tuning_tab.build(session))
                with gr.Tab("Realtime chat", id="chat"):
                    self.ctx.avatar_dropdowns.append(self.chat_tab.build(session))
                with gr.Tab("Evaluation", id="eval"):
                    self.eval_tab.build(session)
            dropdowns = self.ctx.avatar_dropdowns
            # Whenever the session's avatars change, every tab's avatar list follows.
            for event in (
                self.prepare_tab.prepared,
                self.prepare_tab.used,
                self.prepare_tab.deleted,
                self.tuning_tab.saved,
            ):
                event.then(self.refresh_all, [session], dropdowns, show_progress="hidden")
            demo.load(self.refresh_all, [session], dropdowns, show_progress="hidden")
            demo.load(
                self.prepare_tab.refresh,
                [session],
                [self.prepare_tab.table, self.prepare_tab.chosen],
                show_progress="hidden",
            )
            demo.load(lambda: self.header_html(), None, banner, show_progress="hidden")
            # The preparation tab shows the example avatar when it is ready, at load or when the warm-up ends.
            show_example = (self.prepare_tab.show_ready_example, [session], self.prepare_tab.shown)
            demo.load(*show_example, show_progress="hidden")
            if self.warmup is not None:
                timer = gr.Timer(WARMUP_POLL_S, active=True)
                tick = timer.tick(self.warmup_tick, [session], [banner, *dropdowns, timer], show_progress="hidden")
                tick.then(*show_example, show_progress="hidden")
            demo.load(*self.eval_tab.load_runs, show_progress="hidden")
        return demo


def build_ui(engine, samples_dir: Path | None = None, show_all_avatars: bool = False) -> gr.Blocks:
    return WorkbenchUI(engine, samples_dir, show_all_avatars).build()


def create_app(engine, samples_dir: Path | None = None, show_all_avatars: bool = False) -> FastAPI:
    """FastAPI with the realtime routes first (Gradio's mount at '/' would shadow them), then the Gradio UI."""
    settings: Settings = engine.settings
    # Left by killed processes: scratch folders and unfinished evaluation runs (see workbench.disk_budget).
    sweep_dead_scratch()
    sweep_run_tmp(Path(settings.runs_dir))
    quiet_gradio_queue()  # with no visitor the app sleeps instead of polling its queue 1,000 times a second
    app = FastAPI(title=TITLE)
    # The chat page reaches only the avatar the chat tab grants it; single-user use opens every avatar,
    # as the library then shows them all.
    realtime = mount_realtime(app, engine, settings, open_avatars=show_all_avatars)
    ui = WorkbenchUI(engine, samples_dir, show_all_avatars, realtime=realtime, prepare_example=settings.prepare_example)
    blocks = ui.build()
    app.state.workbench_ui = ui
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        css=CSS,
        theme=theme(),
        footer_links=[],
        run_history=False,  # the run history would keep inputs in the browser; nothing here should linger
        max_file_size=f"{settings.max_upload_mb}mb",
        show_error=True,
        ssr_mode=False,
        server_name=settings.host,
        server_port=settings.port,
    )
    guard_file_inputs(blocks, ui)
    ui.ctx.after_job()  # what visitors made before this start, back within its budget
    ui.start_warmup()
    return app


def guard_file_inputs(blocks: gr.Blocks, ui: WorkbenchUI) -> None:
    """What `launch()` sets and `mount_gradio_app` does not: with `has_launched` unset Gradio skips its check
    that a file named in a request was uploaded by a user, so a request naming any server file was handed to
    the handlers. Files the app itself serves (clips, report zips in its scratch) stay allowed as outputs."""
    blocks.has_launched = True
    blocks.allowed_paths = [*blocks.allowed_paths, ui.ctx.scratch.name]
    plain_gradio_errors()


def plain_gradio_errors() -> None:
    """Gradio's own refusals (a value not among a dropdown's choices, a file not uploaded) quote the input in
    full, 100 KB included, with server paths: every error Gradio sends is cut to one plain line as ours are."""
    import gradio.queueing
    import gradio.utils

    original = gradio.utils.error_payload
    if getattr(original, "workbench_plain", False):
        return

    def error_payload(error, show_error):
        content = original(error, show_error)
        if isinstance(content.get("error"), str):
            content["error"] = one_line(content["error"])
        return content

    error_payload.workbench_plain = True
    gradio.utils.error_payload = error_payload
    gradio.queueing.error_payload = error_payload
