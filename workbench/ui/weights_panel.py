"""The weights panel under the banner: what is in models/, and a button that fetches MuseTalk's with progress."""

from __future__ import annotations

import logging

import gradio as gr

from workbench import weights
from workbench.config import operator_allowed
from workbench.ui.context import UIContext, gr_progress, user_errors
from workbench.weights import WeightsError

log = logging.getLogger(__name__)


def weights_rows(report: weights.WeightsReport) -> list[list[str]]:
    return [[c.name, c.status, c.description] for c in report.components.values()]


class WeightsPanel:
    def __init__(self, ctx: UIContext, header_html):
        self.ctx = ctx
        self.header_html = header_html

    @user_errors
    def fetch(self, operator_token: str | None = None, progress=gr.Progress()):
        if not operator_allowed(self.ctx.settings, operator_token):
            # a download fills the disk and replaces the renderer for everyone: the operator's decision
            raise WeightsError(
                "fetching weights is for this server's operator (WORKBENCH_OPERATOR_ACTIONS=true, or the "
                "operator token); run `" + weights.DOWNLOAD_COMMAND + "` on the server"
            )
        models_dir = self.ctx.engine.models_dir
        report = weights.download(models_dir, weights.DEFAULT_DOWNLOAD, progress=gr_progress(progress))
        self.ctx.engine.reload_renderer()
        gr.Info(f"MuseTalk weights ready; renderer: {self.ctx.engine.resolved_renderer_name()}.")
        return weights_rows(report), self.header_html()

    def rows(self):
        return weights_rows(self.ctx.engine.weights_report())

    def build(self, banner: gr.HTML) -> None:
        with gr.Accordion("Weights", open=False, elem_id="wb-weights"):
            gr.Markdown(
                f"MuseTalk needs `musetalkV15`, `sd-vae` and `whisper` under `{self.ctx.engine.models_dir}`. "
                f"Fetch them here (from Hugging Face, with progress) or run `{weights.DOWNLOAD_COMMAND}`; "
                "the app switches to MuseTalk once they are present. Set WORKBENCH_MODELS_DIR (or --models-dir) "
                "to use weights stored elsewhere. Optional: `taesd` (madebyollin/taesd, "
                f"`{weights.DOWNLOAD_COMMAND} taesd`), a fast approximate decoder of the same latents, "
                "used when WORKBENCH_DECODER=taesd (default `vae`, the reference)."
            )
            table = gr.Dataframe(
                self.rows(), headers=["component", "status", "what it is"], interactive=False, wrap=True
            )
            s = self.ctx.settings
            open_to_page = operator_allowed(s)
            has_token = s.operator_token is not None and bool(s.operator_token.get_secret_value())
            # On a public server a visitor sees the weights read-only; the operator unlocks with the token.
            token = gr.Textbox(
                label="operator token (WORKBENCH_OPERATOR_TOKEN): fetching weights and Ray are for the operator",
                type="password",
                visible=not open_to_page and has_token,
                elem_id="wb-operator-token",
            )
            self.ctx.operator_box = token
            fetch = gr.Button(
                "Fetch MuseTalk weights" if open_to_page else "Fetch MuseTalk weights (operator only)",
                interactive=open_to_page or has_token,
                elem_id="wb-fetch-weights",
            )
        fetch.click(self.fetch, [token], [table, banner], concurrency_limit=1, concurrency_id="weights")
