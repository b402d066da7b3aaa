"""The tuning tab's auto-scored bbox_shift sweep: render the driving audio with each value, score every render with
the evaluation's metrics (workbench/evaluation/sweep.py), plot score against value, recommend the best, and save it
to the avatar in one click (the tab's own save, with the recommended value)."""

from __future__ import annotations

import gradio as gr
import numpy as np

from workbench.config import SAMPLE_RATE
from workbench.evaluation.sweep import plot_sweep, sweep_bbox_shift
from workbench.ui.context import gr_progress, user_errors
from workbench.ui.session_state import new_session

SWEEP_SECONDS = 6.0  # of speech per value, centred on the chosen moment: enough for the sync scores


class SweepPanel:
    def __init__(self, tab):
        self.tab = tab  # the TuningTab: its avatar access, audio input, parameter variants and save

    @user_errors
    def run(
        self,
        avatar_id,
        sample_audio,
        upload,
        moment,
        shifts,
        extra_margin,
        parsing_mode,
        left_cheek,
        right_cheek,
        session,
        progress=gr.Progress(),
    ):
        from workbench.ui.tuning_tab import parse_shifts, variants

        session = session or new_session()
        avatar = self.tab._avatar(avatar_id, session)
        audio = self.tab._audio(sample_audio, upload)
        start = max(0, int((float(moment or 0) - SWEEP_SECONDS / 2) * SAMPLE_RATE))
        piece = audio[start : start + int(SWEEP_SECONDS * SAMPLE_RATE)]
        if len(piece) < int(SWEEP_SECONDS * SAMPLE_RATE) and len(audio) >= int(SWEEP_SECONDS * SAMPLE_RATE):
            piece = audio[-int(SWEEP_SECONDS * SAMPLE_RATE) :]
        values = parse_shifts(shifts) if shifts and shifts.strip() else None
        base = variants(avatar.params, [avatar.params.bbox_shift], extra_margin, parsing_mode, left_cheek, right_cheek)
        source = self.tab.ctx.library.source_path(avatar.avatar_id)
        result = sweep_bbox_shift(
            self.tab.ctx.engine, source, np.asarray(piece), base[0], values=values, progress=gr_progress(progress)
        )
        table = result.table().round(3)
        msg = f"**Recommended bbox_shift: {result.best.value}** (highest sweep score; the plot shows its terms)."
        for note in result.notes:
            msg += f"\n\n> {note}"
        return plot_sweep(result), table.astype(object).where(table.notna(), ""), msg, result.best.value

    @user_errors
    def save(
        self,
        avatar_id,
        recommended,
        extra_margin,
        parsing_mode,
        left_cheek,
        right_cheek,
        session,
        progress=gr.Progress(),
    ):
        if recommended is None:
            raise gr.Error("Score a sweep first.")
        return self.tab.save(
            avatar_id, recommended, extra_margin, parsing_mode, left_cheek, right_cheek, session, progress
        )

    def build(self, session, avatar, sample_audio, upload, moment, shifts, mask_inputs, save_outputs) -> None:
        with gr.Accordion("Auto-scored sweep: which bbox_shift?", open=False, elem_id="tune-sweep"):
            gr.Markdown(
                "Renders ~6 s of the driving audio once per bbox_shift value (the values above, or spread over the "
                "measured range), scores each with the evaluation's metrics (sync at lag 0 and its margin, mouth "
                "open in silence, lip jitter; LSE-C when SyncNet's weights exist) and recommends the best. "
                "Several renders: a minute or more on CPU."
            )
            with gr.Row():
                go = gr.Button("Score a sweep", elem_id="tune-sweep-run")
                keep = gr.Button("Save recommended to avatar", elem_id="tune-sweep-save")
            verdict = gr.Markdown("", elem_id="tune-sweep-verdict")
            with gr.Row():
                plot = gr.Plot(show_label=False, elem_id="tune-sweep-plot")
                table = gr.Dataframe(label="score per value", interactive=False, elem_id="tune-sweep-table")
            recommended = gr.State(None)
        go.click(
            self.run,
            [avatar, sample_audio, upload, moment, shifts, *mask_inputs, session],
            [plot, table, verdict, recommended],
            api_name="sweep",  # not "run": that name is the Evaluation tab's
            concurrency_limit=1,
            concurrency_id="engine-heavy",
        )
        keep.click(
            self.save,
            [avatar, recommended, *mask_inputs, session],
            save_outputs,
            api_name="sweep_save",
            concurrency_limit=1,
            concurrency_id="engine-heavy",
        )
