"""Tab 1, avatar preparation: a sample or an upload → a prepared avatar, with what preparation found."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np

from workbench.avatars.model import Avatar, PrepParams
from workbench.config import FPS
from workbench.faces.boxes import format_bbox_range
from workbench.media import IMAGE_EXTS, VIDEO_EXTS, MediaError, MediaWarning, check_upload, kind_of, probe
from workbench.ui import overlays, prep_inputs
from workbench.ui.context import (
    UIContext,
    dropdown_update,
    gr_progress,
    short_id,
    user_errors,
)
from workbench.ui.session_state import SessionState, forget, new_session, remember

UPLOAD_TYPES = sorted(VIDEO_EXTS | IMAGE_EXTS)
TABLE_HEADERS = ["avatar", "source", "frames", "bbox_shift range", "parameters", "mask", "MB"]
DEFAULT_MAX_FRAMES = 100  # 4 s at 25 fps: the idle loop ping-pongs them; ~0.2 MB per stored 704x1216 frame
# One-click examples (the bundled clips): source, max frames, bbox_shift (sun's measured range is [-9 ~ 9]).
EXAMPLES = [["yongen.mp4", DEFAULT_MAX_FRAMES, 0], ["sun.mp4", DEFAULT_MAX_FRAMES, 5]]


def validate_upload(path: str | Path, max_mb: float, max_seconds: float) -> Path:
    """An uploaded file that may become an avatar: a known video or photo type, within the size and length limits."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in VIDEO_EXTS and ext not in IMAGE_EXTS:
        raise MediaError(
            f"{p.name}: {ext or 'no extension'} is not a supported type; upload a video "
            f"({', '.join(sorted(VIDEO_EXTS))}) or a photo ({', '.join(sorted(IMAGE_EXTS))})"
        )
    kind_of(p)
    info = check_upload(p, max_mb, max_seconds)
    if not info.has_video:
        raise MediaError(f"{p.name} has no picture (an audio-only file); upload a video or a photo of a face")
    return p


def params_from_inputs(
    bbox_shift, extra_margin, parsing_mode, left_cheek, right_cheek, detector, mask_source, max_frames
) -> PrepParams:
    mf = int(max_frames) if max_frames not in (None, "", 0) else None
    if mf is not None and mf < 1:
        raise ValueError("max frames must be at least 1 (or empty for every frame)")
    return PrepParams(
        bbox_shift=int(bbox_shift),
        extra_margin=int(extra_margin),
        parsing_mode=parsing_mode,
        left_cheek_width=int(left_cheek),
        right_cheek_width=int(right_cheek),
        detector=detector,
        mask_source=mask_source,
        max_frames=mf,
    )


def renderer_summary(ctx: UIContext, avatar: Avatar | None = None) -> str:
    name = ctx.engine.resolved_renderer_name()
    if name == "musetalk":
        return "MuseTalk v1.5 (UNet + sd-vae-ft-mse + Whisper-tiny weights present)"
    what = "weight-free"
    if avatar is not None:  # the mouth bank runs only for an avatar whose mouth moves: say which one runs here
        what = ctx.engine.renderer.describe_for(avatar).removeprefix("cpu: ")
    return f"CPU renderer ({what}; MuseTalk weights not present or not selected)"


def source_frame_count(source: Path) -> int | None:
    """How many frames preparation would read from `source` with no max_frames (25 fps), or None when unknown."""
    try:
        if source.is_dir():
            return sum(1 for f in source.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if source.suffix.lower() in IMAGE_EXTS:
            return 1
        info = probe(source)
    except (OSError, MediaError):
        return None
    return int(round(info.duration * FPS)) if info.duration else None


def cut_note(source: Path, avatar: Avatar) -> str | None:
    """A note when max_frames kept fewer frames than the source has (a silent cut surprises: 125 → 100)."""
    total, kept = source_frame_count(source), len(avatar)
    limit = avatar.params.max_frames
    if total is None or limit is None or kept >= total or kept < limit:
        return None
    return (
        f"**Cut to max frames:** the source has about {total} frames ({total / FPS:.1f} s); the first {kept} "
        f"({kept / FPS:.1f} s) were kept; raise *max frames* to keep more."
    )


def summary_markdown(ctx: UIContext, avatar: Avatar, note: str | None = None) -> str:
    h, w = avatar.frame_size
    n_face = int(np.asarray(avatar.has_face).sum())
    p = avatar.params
    took = avatar.extras.get("prepare_seconds")
    took_s = f" in {took:.1f} s" if isinstance(took, int | float) else ""
    return "\n".join(
        [
            f"**Avatar** `{short_id(avatar.avatar_id)}` from *{avatar.source}*: {len(avatar)} frames "
            f"({n_face} with a detected face), {w}x{h}, {avatar.fps:g} fps{took_s}.",
            f"**Measured bbox_shift range:** {format_bbox_range(avatar.bbox_range)} (this avatar uses bbox_shift {p.bbox_shift}; "
            "tune it in the bbox_shift tab).",
            f"**Mask:** {avatar.mask_kind} ({p.parsing_mode} mode, cheeks {p.left_cheek_width}/{p.right_cheek_width}, "
            f"extra margin {p.extra_margin}); **detector:** {p.detector}; "
            f"**VAE latents:** {'cached' if avatar.latents is not None else 'none (CPU renderer needs none)'}.",
            f"**Renderer:** {renderer_summary(ctx, avatar)}.",
            *([note] if note else []),
        ]
    )


def avatars_table(ctx: UIContext, session: SessionState) -> list[list]:
    defaults = PrepParams().to_dict()
    rows = []
    for info in ctx.library.visible(session.avatars):
        changed = ", ".join(f"{k}={v}" for k, v in info.params.items() if defaults.get(k) != v) or "defaults"
        rows.append(
            [
                info.name or short_id(info.avatar_id),
                info.source,
                info.n_frames,
                format_bbox_range(info.bbox_range),
                changed,
                info.mask_kind,
                round(info.size_bytes / 1e6, 1),
            ]
        )
    return rows


class PrepareTab:
    def __init__(self, ctx: UIContext):
        self.ctx = ctx

    # --- handlers (plain functions of inputs, so tests call them directly) -----------------
    @user_errors
    def prepare(
        self,
        sample: str | None,
        upload: str | None,
        bbox_shift,
        extra_margin,
        parsing_mode,
        left_cheek,
        right_cheek,
        detector,
        mask_source,
        max_frames,
        session: SessionState | None,
        progress=gr.Progress(),
    ):
        session = session or new_session()
        params = params_from_inputs(
            bbox_shift, extra_margin, parsing_mode, left_cheek, right_cheek, detector, mask_source, max_frames
        )
        # Held to the end: the example avatar, ready meanwhile, must not land on top of this result.
        with self.ctx.session_locks.hold(session.token):
            return self._prepare(sample, upload, params, session, progress)

    def _prepare(self, sample: str | None, upload: str | None, params: PrepParams, session: SessionState, progress):
        s = self.ctx.settings
        kept = None
        if upload:
            checked = validate_upload(self.ctx.checked_input(upload), s.max_upload_mb, s.max_upload_seconds)
            source = kept = self.ctx.library.store_upload(checked)
        elif sample:
            source = self.ctx.library.sample_path(sample)
        else:
            raise gr.Error("Pick a sample or upload a video or photo first.")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MediaWarning)
                avatar = self.ctx.engine.prepare(source, params, progress=gr_progress(progress), owner=session.token)
        except BaseException:
            if kept is not None:
                self.ctx.library.drop_upload(kept)  # no avatar came of it: the copy would only take disk
            raise
        finally:
            self.ctx.after_job()
        for w in caught:  # a truncated file, a downscaled source: said, not silently done
            if issubclass(w.category, MediaWarning):
                gr.Warning(str(w.message), duration=10)
        session = remember(session, avatar.avatar_id)
        return self._show(avatar, session, cut_note(Path(source), avatar))

    @user_errors
    def use(self, avatar_id: str | None, session: SessionState | None):
        session = session or new_session()
        self.ctx.library.check_access(avatar_id, session.avatars)
        with self.ctx.session_locks.hold(session.token):
            avatar = self.ctx.library.load(avatar_id)
            return self._show(avatar, replace(session, current=avatar_id))

    @user_errors
    def delete(self, avatar_id: str | None, session: SessionState | None):
        session = session or new_session()
        self.ctx.library.check_delete(avatar_id, session)
        self.ctx.engine.delete_avatar(avatar_id)
        self.ctx.library.forget(avatar_id)
        session = forget(session, avatar_id)
        gr.Info(f"Deleted avatar {short_id(avatar_id)}.", duration=4)
        return (session, avatars_table(self.ctx, session), dropdown_update(self.ctx, session))

    def refresh(self, session: SessionState | None):
        session = session or new_session()
        return avatars_table(self.ctx, session), dropdown_update(self.ctx, session)

    @user_errors
    def frame(self, index, layers: list[str] | None, session: SessionState | None):
        session = session or new_session()
        avatar_id = session.current
        if not avatar_id:
            return None, None
        self.ctx.library.check_access(avatar_id, session.avatars)
        avatar = self.ctx.library.load(avatar_id)
        i = int(np.clip(int(index or 0), 0, len(avatar) - 1))
        return self._overlay(avatar, i, layers), overlays.crop_strip(avatar, i)

    # --- helpers --------------------------------------------------------------------------
    @staticmethod
    def _overlay(avatar: Avatar, i: int, layers: list[str] | None) -> np.ndarray:
        layers = ["box", "landmarks", "mask"] if layers is None else layers
        return overlays.draw_overlay(
            avatar, i, box="box" in layers, landmarks="landmarks" in layers, mask="mask" in layers
        )

    def show_ready_example(self, session: SessionState | None):
        """At page load (and when the background preparation finishes): the example avatar, when it is ready and
        this page shows no avatar yet, so the tab does not start empty. Never while this page prepares or opens
        an avatar: `session` is then already out of date, and what this returns would replace that result."""
        unchanged = tuple(gr.skip() for _ in range(7))  # the session too: a stale copy must not be written back
        session = session or new_session()
        avatar_id = self.ctx.preferred_avatar()
        if session.current or not avatar_id:
            return unchanged
        with self.ctx.session_locks.hold(session.token, wait=False) as free:
            if not free:
                return unchanged
            try:
                self.ctx.library.check_access(avatar_id, session.avatars)
                avatar = self.ctx.library.load(avatar_id)
            except (KeyError, PermissionError, OSError):
                return unchanged
            return self._show(avatar, replace(session, current=avatar_id))

    def _show(self, avatar: Avatar, session: SessionState, note: str | None = None):
        n = len(avatar)
        return (
            session,
            summary_markdown(self.ctx, avatar, note),
            self._overlay(avatar, 0, None),
            overlays.crop_strip(avatar, 0),
            gr.update(maximum=max(1, n - 1), value=0, interactive=n > 1),
            avatars_table(self.ctx, session),
            dropdown_update(self.ctx, session, avatar.avatar_id),
        )

    # --- layout ---------------------------------------------------------------------------
    def build(self, session: gr.State) -> gr.Dropdown:
        lib = self.ctx.library
        samples = [p.name for p in lib.sample_sources()]
        first = "yongen.mp4" if "yongen.mp4" in samples else (samples[0] if samples else None)
        s = self.ctx.settings
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                sample = gr.Dropdown(
                    samples,
                    value=first,
                    label="Sample",
                    info="a bundled clip (used when nothing is uploaded)",
                    elem_id="prep-sample",
                )
                upload = gr.File(
                    label=f"…or upload a video or photo (≤ {s.max_upload_mb} MB, ≤ {s.max_upload_seconds:g} s)",
                    file_types=UPLOAD_TYPES,
                    type="filepath",
                    height=120,
                    elem_id="prep-upload",
                )
                with gr.Accordion("Preparation parameters", open=False):
                    max_frames = gr.Number(
                        DEFAULT_MAX_FRAMES,
                        label="max frames",
                        precision=0,
                        minimum=1,
                        info="frames taken from the video (the idle loop ping-pongs them)",
                        elem_id="prep-max-frames",
                    )
                    bbox_shift = prep_inputs.slider(
                        "bbox_shift", info="moves the mask's upper edge; positive opens the mouth more"
                    )
                    extra_margin = prep_inputs.slider(
                        "extra_margin", "extra_margin (v1.5)", info="pixels added below the chin"
                    )
                    parsing_mode = prep_inputs.parsing_mode("parsing mode (v1.5)")
                    left_cheek, right_cheek = prep_inputs.cheek_widths()
                    detector = prep_inputs.detector(info="dwpose is MuseTalk's (needs its weights)")
                    mask_source = prep_inputs.mask_source(
                        info="auto uses BiSeNet face parsing when its weights are present"
                    )
                prepare_btn = gr.Button("Prepare avatar", variant="primary", elem_id="prep-button")
                examples = [e for e in EXAMPLES if e[0] in samples]
                if examples:
                    gr.Examples(
                        examples,
                        [sample, max_frames, bbox_shift],
                        label="Examples (bundled clips; then press Prepare avatar)",
                        elem_id="prep-examples",
                    )
            with gr.Column(scale=3, min_width=360):
                overlay = gr.Image(
                    label="Frame with face box, landmarks and blending mask",
                    type="numpy",
                    interactive=False,
                    height=460,
                    elem_id="prep-overlay",
                )
                frame = gr.Slider(0, 1, value=0, step=1, label="frame", elem_id="prep-frame")
                layers = gr.CheckboxGroup(
                    ["box", "landmarks", "mask"], value=["box", "landmarks", "mask"], label="show", container=False
                )
                crop = gr.Image(
                    label="What the renderer sees: 256x256 crop | mask | masked crop",
                    type="numpy",
                    interactive=False,
                    height=180,
                    elem_id="prep-crop",
                )
                summary = gr.Markdown("Prepare an avatar to see what was found.", elem_id="prep-summary")
        with gr.Accordion("Cached avatars (yours and the samples')", open=True):
            with gr.Row():
                chosen = gr.Dropdown([], label="avatar", scale=4, elem_id="prep-chosen")
                use_btn = gr.Button("Use", scale=1)
                delete_btn = gr.Button("Delete", variant="stop", scale=1)
                refresh_btn = gr.Button("Refresh", scale=1)
            table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, elem_id="prep-table")

        shown = [session, summary, overlay, crop, frame, table, chosen]
        param_inputs = [
            bbox_shift,
            extra_margin,
            parsing_mode,
            left_cheek,
            right_cheek,
            detector,
            mask_source,
            max_frames,
        ]
        self.prepared = prepare_btn.click(
            self.prepare,
            [sample, upload, *param_inputs, session],
            shown,
            concurrency_limit=1,
            concurrency_id="engine-heavy",
            show_progress_on=[overlay],  # one progress bar, where the result appears (not over every output)
        )
        self.used = use_btn.click(self.use, [chosen, session], shown, show_progress_on=[overlay])
        self.deleted = delete_btn.click(self.delete, [chosen, session], [session, table, chosen])
        refresh_btn.click(self.refresh, [session], [table, chosen])
        frame.change(
            self.frame, [frame, layers, session], [overlay, crop], show_progress="hidden", trigger_mode="always_last"
        )
        layers.change(self.frame, [frame, layers, session], [overlay, crop], show_progress="hidden")
        self.chosen = chosen
        self.table = table
        self.shown = shown
        return chosen
