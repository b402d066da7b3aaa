"""The weights panel under the banner: what is in models/, and a button that fetches MuseTalk's with progress."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from workbench import weights
from workbench.config import operator_allowed
from workbench.ui.context import UIContext, gr_progress, user_errors
from workbench.weights import WeightsError

log = logging.getLogger(__name__)

# A failed download's reason, as one plain phrase: the exception text (often a ConnectError with a URL and
# errno, repeated per file) is in the server log, not in the page.
_OFFLINE = ("ConnectError", "ConnectionError", "ConnectTimeout", "Name or service not known", "LocalEntryNotFound")


def weights_rows(report: weights.WeightsReport) -> list[list[str]]:
    return [[c.name, c.status, c.description] for c in report.components.values()]


def failure_reason(reason: str) -> str:
    if any(k in reason for k in _OFFLINE):
        return "no connection"
    if "401" in reason or "403" in reason:
        return "access refused"
    if "404" in reason:
        return "not found at its source"
    if any(k in reason for k in ("sha256", "size", "corrupt", "format")):
        return "downloaded but failed verification"
    return reason.split(":", 1)[0]


def failure_markdown(failures: list[tuple[str, str, str]], models_dir: Path) -> str:
    """One line per file that did not arrive, then what to do: nothing else."""
    lines = [
        f"- `{Path(path).relative_to(models_dir) if Path(path).is_relative_to(models_dir) else path}`: "
        f"{failure_reason(reason)}"
        for path, reason, _ in failures
    ]
    offline = all(failure_reason(r) == "no connection" for _, r, _ in failures)
    todo = (
        f"This server cannot reach Hugging Face. Run `{weights.DOWNLOAD_COMMAND}` on a machine with internet and "
        f"copy its `models/` folder to `{models_dir}` (or set WORKBENCH_MODELS_DIR); the CPU renderer runs meanwhile."
        if offline
        else f"Try again, or fetch them by hand with `{weights.DOWNLOAD_COMMAND}` (it prints each file's command); "
        "the CPU renderer runs meanwhile."
    )
    return "\n".join([f"**{len(failures)} file(s) could not be fetched:**", *lines, "", todo])


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
        try:
            report = weights.download(models_dir, weights.DEFAULT_DOWNLOAD, progress=gr_progress(progress))
        except weights.WeightsDownloadError as e:
            # Said once, in the panel, as a list: not a toast per file with every exception's text.
            gr.Warning(f"{len(e.failures)} weight file(s) could not be fetched: see the Weights panel.", duration=8)
            return self.rows(), self.header_html(), failure_markdown(e.failures, Path(models_dir))
        self.ctx.engine.reload_renderer()
        gr.Info(f"MuseTalk weights ready; renderer: {self.ctx.engine.resolved_renderer_name()}.")
        return weights_rows(report), self.header_html(), ""

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
            status = gr.Markdown("", elem_id="wb-weights-status")
        fetch.click(
            self.fetch,
            [token],
            [table, banner, status],
            concurrency_limit=1,
            concurrency_id="weights",
            show_progress_on=[status],  # one bar, under the button
        )
        self.status = status
