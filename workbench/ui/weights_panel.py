"""The weights panel under the banner: what is in models/, and a button that fetches MuseTalk's with progress."""

from __future__ import annotations

import logging

import gradio as gr

from workbench import weights
from workbench.ui.context import UIContext, gr_progress, user_errors

log = logging.getLogger(__name__)


def weights_rows(report: weights.WeightsReport) -> list[list[str]]:
    return [[c.name, c.status, c.description] for c in report.components.values()]


class WeightsPanel:
    def __init__(self, ctx: UIContext, header_html):
        self.ctx = ctx
        self.header_html = header_html

    @user_errors
    def fetch(self, progress=gr.Progress()):
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
            fetch = gr.Button("Fetch MuseTalk weights", elem_id="wb-fetch-weights")
        fetch.click(self.fetch, None, [table, banner], concurrency_limit=1, concurrency_id="weights")
