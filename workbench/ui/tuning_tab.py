"""Tab 2, bbox_shift tuning: one frame (or a short span) rendered with several bbox_shift / v1.5 mask values.

Every preview goes through the engine exactly as real-time output does: the avatar prepared with those
parameters (detections come from the cache), the active renderer with the real audio conditions at the
chosen moment, and the one compositor.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import cv2
import gradio as gr
import numpy as np

from workbench.avatars.model import Avatar, PrepParams, describe_acting
from workbench.config import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from workbench.faces.boxes import format_bbox_range
from workbench.media import MediaError, check_upload, is_silent, load_audio, probe, write_video
from workbench.ui import overlays, prep_inputs, tuning_tiles
from workbench.ui.context import (
    AccessError,
    UIContext,
    dropdown_update,
    gr_progress,
    short_id,
    user_errors,
    within_disk_budget,
)
from workbench.ui.library import AUDIO_EXTS
from workbench.ui.session_state import SessionState, new_session, remember
from workbench.ui.sweep_panel import SweepPanel

MAX_VALUES = 8  # previews per grid: beyond this the faces get too small to judge
EXAMPLE_AUDIO = ("speech_en.ogg", "speech_zh.ogg", "sun_speech.ogg")  # bundled in examples/: English, Chinese, Sun's
CONTEXT_FRAMES = 2  # real audio rendered either side of a clip so its first and last frames have full windows
TAIL_FRAMES = 10  # audio kept after the chosen moment for the renderer's look-ahead


def audio_upload(p: Path) -> Path:
    """An uploaded speech clip: only the audio types the workbench reads (gr.Audio has no type filter)."""
    p = Path(p)
    if p.suffix.lower() not in AUDIO_EXTS:
        raise MediaError(
            f"{p.name}: {p.suffix or 'no extension'} is not a supported audio type ({', '.join(sorted(AUDIO_EXTS))})"
        )
    return p


def parse_shifts(text: str) -> list[int]:
    """'-6, 0, 4' → [-6, 0, 4] (unique, in the order given)."""
    parts = [t for t in re.split(r"[,\s;]+", str(text or "").strip()) if t]
    if not parts:
        raise ValueError("give at least one bbox_shift value, e.g. -6, 0, 6")
    values: list[int] = []
    for t in parts:
        try:
            v = int(round(float(t)))
        except ValueError:
            raise ValueError(f"{t!r} is not a number; give bbox_shift values like -6, 0, 6") from None
        if v not in values:
            values.append(v)
    if len(values) > MAX_VALUES:
        raise ValueError(f"{len(values)} values given; at most {MAX_VALUES} fit in one grid")
    return values


def audio_at(audio16k: np.ndarray, frame_index: int, audio_frame: int) -> np.ndarray:
    """Audio laid out so that output frame `frame_index` hears the audio of frame `audio_frame`.

    The engine renders avatar frame i with the audio condition of frame i; to pair avatar frame f with the
    speech at another moment t, the clip is shifted by t - f frames (cut in front, or preceded by silence).
    The tail is cut a little after t: the renderer only looks a few frames ahead.
    """
    shift = (audio_frame - frame_index) * SAMPLES_PER_FRAME
    end = (audio_frame + 1 + TAIL_FRAMES) * SAMPLES_PER_FRAME
    clip = np.asarray(audio16k[:end], dtype=np.float32)
    if shift >= 0:
        return clip[shift:]
    return np.concatenate([np.zeros(-shift, dtype=np.float32), clip])


def loudest_moment(audio16k: np.ndarray, within_s: float = 10.0) -> float:
    """Seconds at the loudest 40 ms frame of the first `within_s` seconds: a moment where the mouth is open."""
    n = min(len(audio16k), int(within_s * SAMPLE_RATE)) // SAMPLES_PER_FRAME
    if n == 0:
        return 0.0
    frames = np.asarray(audio16k[: n * SAMPLES_PER_FRAME], dtype=np.float32).reshape(n, SAMPLES_PER_FRAME)
    return float(np.argmax(np.sqrt(np.mean(frames**2, axis=1)))) / FPS


def zoom(frame_bgr: np.ndarray, box: tuple[int, int, int, int], height: int = 360) -> np.ndarray:
    x1, y1, x2, y2 = box
    region = frame_bgr[y1:y2, x1:x2]
    scale = height / max(1, region.shape[0])
    size = (max(1, round(region.shape[1] * scale)), height)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(region, size, interpolation=interp)


def variants(
    base: PrepParams, shifts: list[int], extra_margin, parsing_mode, left_cheek, right_cheek
) -> list[PrepParams]:
    common = dict(
        extra_margin=int(extra_margin),
        parsing_mode=parsing_mode,
        left_cheek_width=int(left_cheek),
        right_cheek_width=int(right_cheek),
    )
    # On v1.5 weights the reference forces bbox_shift to 0; a grid of shifts there is an explicit experiment.
    force = base.model_version == "v15" and any(s != 0 for s in shifts)
    return [replace(base, bbox_shift=s, force_bbox_shift=force or base.force_bbox_shift, **common) for s in shifts]


class TuningTab:
    def __init__(self, ctx: UIContext):
        self.ctx = ctx
        self.sweep = SweepPanel(self)  # the auto-scored sweep (workbench/ui/sweep_panel.py)

    # --- inputs -----------------------------------------------------------------------------
    def _avatar(self, avatar_id: str | None, session: SessionState) -> Avatar:
        self.ctx.library.check_access(avatar_id, session.avatars)
        return self.ctx.library.load(avatar_id)

    def _audio(self, sample_audio: str | None, upload: str | None) -> np.ndarray:
        s = self.ctx.settings
        if upload:
            p = audio_upload(self.ctx.checked_input(upload))
            check_upload(p, s.max_upload_mb, s.max_upload_seconds)
            audio = load_audio(p)
        elif sample_audio:
            audio = load_audio(self.ctx.library.sample_path(sample_audio, audio=True))
        else:
            raise gr.Error("Pick a driving audio sample or upload a speech clip.")
        return audio[: int(s.max_upload_seconds * SAMPLE_RATE)]

    # --- handlers ---------------------------------------------------------------------------
    @user_errors
    def select(self, avatar_id: str | None, session: SessionState | None):
        """A new avatar: default shift values spread over its measured range, and its frame count."""
        session = session or new_session()
        if not avatar_id:
            return (gr.update(),) * 6 + ("Choose an avatar.",)
        avatar = self._avatar(avatar_id, session)
        shifts = self.ctx.engine.spread_shifts(avatar, 5)
        p = avatar.params
        info = (
            f"Measured bbox_shift range {format_bbox_range(avatar.bbox_range)}; this avatar uses bbox_shift {p.bbox_shift}, "
            f"extra_margin {p.extra_margin}, {p.parsing_mode} mode, cheeks {p.left_cheek_width}/{p.right_cheek_width}. "
            + describe_acting(p.model_version)
            + (
                " A grid of non-zero bbox_shift values on v1.5 is rendered as that experiment."
                if p.model_version == "v15"
                else ""
            )
        )
        n = len(avatar)
        return (
            ", ".join(str(v) for v in shifts),
            gr.update(maximum=max(1, n - 1), value=min(n - 1, n // 2), interactive=n > 1),
            p.extra_margin,
            p.parsing_mode,
            p.left_cheek_width,
            p.right_cheek_width,
            info,
        )

    def audio_length(self, sample_audio: str | None, upload: str | None):
        """The moment slider spans the chosen clip and starts at its loudest moment."""
        try:
            if upload:
                path = audio_upload(self.ctx.checked_input(upload))
            else:
                path = self.ctx.library.sample_path(sample_audio, audio=True) if sample_audio else None
            if not path:
                return gr.update()
            duration = probe(path).duration
            if not duration or duration > self.ctx.settings.max_upload_seconds * 4:
                return gr.update()
            audio = load_audio(path)
        except (MediaError, FileNotFoundError, AccessError):
            return gr.update()
        top = min(len(audio) / SAMPLE_RATE, self.ctx.settings.max_upload_seconds)
        return gr.update(maximum=round(max(0.04, top - 0.04), 2), value=round(loudest_moment(audio), 2))

    @user_errors
    @within_disk_budget  # the clip goes to the scratch space: keep it within the disk budget
    def grid(
        self,
        avatar_id,
        frame_index,
        sample_audio,
        upload,
        moment,
        shifts_text,
        extra_margin,
        parsing_mode,
        left_cheek,
        right_cheek,
        make_clip,
        clip_seconds,
        session,
        progress=gr.Progress(),
    ):
        session = session or new_session()
        report = gr_progress(progress)
        avatar = self._avatar(avatar_id, session)
        shifts = parse_shifts(shifts_text)
        audio = self._audio(sample_audio, upload)
        if is_silent(audio):
            gr.Warning("The driving audio is silent: every preview shows a closed mouth.")
        f = int(np.clip(int(frame_index or 0), 0, len(avatar) - 1))
        n_audio = max(1, len(audio) // SAMPLES_PER_FRAME)
        t = int(np.clip(round(float(moment or 0) * FPS), 0, n_audio - 1))
        params_list = variants(avatar.params, shifts, extra_margin, parsing_mode, left_cheek, right_cheek)
        source = self.ctx.library.source_path(avatar.avatar_id)
        span = 0.8 if make_clip else 1.0
        step = (lambda fr, m: report(fr * span, m)) if report else None
        frames = self.ctx.engine.preview(source, params_list, f, audio_at(audio, f, t), progress=step)
        box = tuning_tiles.face_box(avatar, f)  # the chin included
        items = [
            (overlays.to_rgb(tile), f"bbox_shift={s}")
            for s, tile in zip(shifts, tuning_tiles.tiles(avatar, f, frames), strict=True)
        ]
        clip = None
        if make_clip:
            clip = self._clip(source, params_list, shifts, f, t, audio, float(clip_seconds), box, report)
        status = (
            f"{len(items)} previews of avatar frame {f} with the audio at {t / FPS:.2f} s, rendered by "
            f"{self.ctx.engine.renderer.describe_for(avatar)} through the real-time path. Each shows the face, "
            f"then the mouth at twice the scale; magenta outlines where it differs from bbox_shift={shifts[0]}."
        )
        return (
            gr.update(value=items, columns=len(items)),
            clip,
            status,
            gr.update(
                choices=shifts,
                value=avatar.params.bbox_shift if avatar.params.bbox_shift in shifts else shifts[len(shifts) // 2],
            ),
        )

    def _clip(self, source, params_list, shifts, f, t, audio, seconds, box, report) -> str:
        """A looping side-by-side clip, one panel per value, with the driving audio muxed in."""
        n = int(np.clip(round(seconds * FPS), 5, 3 * FPS))
        c = min(CONTEXT_FRAMES, t)
        a0 = (t - c) * SAMPLES_PER_FRAME
        a1 = min(len(audio), (t + n + CONTEXT_FRAMES) * SAMPLES_PER_FRAME)
        piece = audio[a0:a1]
        panels = []
        for k, params in enumerate(params_list):
            if report:
                report(0.8 + 0.18 * k / len(params_list), f"clip for bbox_shift={params.bbox_shift}")
            av = self.ctx.engine.prepare(source, params, save=False)
            rendered = self.ctx.engine.render_frames(av, piece, start=f - c)[c : c + n]
            label = f"bbox_shift={shifts[k]}"
            panels.append(
                [overlays.label_image(overlays.to_rgb(zoom(fr, box, 300)), label)[..., ::-1] for fr in rendered]
            )
        count = min(len(p) for p in panels)
        if count == 0:
            raise MediaError("the audio after the chosen moment is too short for a clip")
        joined = (np.concatenate([p[i] for p in panels], axis=1) for i in range(count))
        out = self.ctx.scratch_dir("clip-") / "bbox_shift_clips.mp4"
        start = c * SAMPLES_PER_FRAME
        write_video(out, joined, FPS, audio16k=piece[start : start + count * SAMPLES_PER_FRAME])
        return str(out)

    @user_errors
    def save(
        self, avatar_id, chosen, extra_margin, parsing_mode, left_cheek, right_cheek, session, progress=gr.Progress()
    ):
        """Prepare the avatar with the chosen values and make it the session's current avatar (the chat's)."""
        session = session or new_session()
        if chosen is None or chosen == "":
            raise gr.Error("Render a grid and pick the bbox_shift to keep first.")
        avatar = self._avatar(avatar_id, session)
        params = variants(avatar.params, [int(chosen)], extra_margin, parsing_mode, left_cheek, right_cheek)[0]
        source = self.ctx.library.source_path(avatar.avatar_id)
        # As the preparation tab's: the example avatar shown meanwhile must not undo this session's new avatar.
        with self.ctx.session_locks.hold(session.token):
            try:
                new = self.ctx.engine.prepare(source, params, progress=gr_progress(progress), owner=session.token)
            finally:
                self.ctx.after_job()  # its face detections count against the visitors' disk budget
        session = remember(session, new.avatar_id)
        gr.Info(f"Saved: avatar {short_id(new.avatar_id)} uses bbox_shift {params.bbox_shift}.", duration=4)
        msg = (
            f"Saved as avatar `{short_id(new.avatar_id)}` (bbox_shift {params.bbox_shift}, extra_margin "
            f"{params.extra_margin}, {params.parsing_mode}, cheeks {params.left_cheek_width}/"
            f"{params.right_cheek_width}); it is now this session's current avatar, the one the chat uses."
        )
        return session, msg, dropdown_update(self.ctx, session, new.avatar_id)

    def _initial_moment(self, sample_audio: str | None) -> tuple[float, float]:
        update = self.audio_length(sample_audio, None)
        return float(update.get("maximum", 30.0)), float(update.get("value", 1.0))

    # --- layout -----------------------------------------------------------------------------
    def build(self, session: gr.State) -> gr.Dropdown:
        audio_samples = [p.name for p in self.ctx.library.sample_audio()]
        first_audio = next(
            (a for a in ("eng.wav", "speech_en.ogg", "syncnet_example_speech.wav") if a in audio_samples),
            audio_samples[0] if audio_samples else None,
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                avatar = gr.Dropdown([], label="avatar", elem_id="tune-avatar")
                info = gr.Markdown("Choose an avatar.", elem_id="tune-info")
                frame = gr.Slider(0, 1, value=0, step=1, label="avatar frame", elem_id="tune-frame")
                shifts = gr.Textbox(
                    label="bbox_shift values",
                    placeholder="-6, 0, 6",
                    info="default: spread over the measured range",
                    elem_id="tune-shifts",
                )
            with gr.Column(scale=1, min_width=300):
                sample_audio = gr.Dropdown(audio_samples, value=first_audio, label="driving audio sample")
                upload = gr.Audio(
                    label="…or upload / record a speech clip",
                    sources=["upload", "microphone"],
                    type="filepath",
                    elem_id="tune-upload",
                )
                top, loudest = self._initial_moment(first_audio)
                moment = gr.Slider(
                    0,
                    top,
                    value=loudest,
                    step=0.04,
                    label="audio moment (s)",
                    info="the speech every preview's mouth follows (starts at the loudest moment)",
                    elem_id="tune-moment",
                )
                examples = [[a] for a in EXAMPLE_AUDIO if a in audio_samples]
                if examples:
                    gr.Examples(
                        examples, [sample_audio], label="Example speech (bundled clips)", elem_id="tune-examples"
                    )
            with gr.Column(scale=1, min_width=300):
                with gr.Accordion("v1.5 mask parameters", open=True):
                    extra_margin = prep_inputs.slider("extra_margin")
                    parsing_mode = prep_inputs.parsing_mode()
                    left_cheek, right_cheek = prep_inputs.cheek_widths()
                with gr.Row():
                    make_clip = gr.Checkbox(False, label="also a looping clip", min_width=120)
                    clip_seconds = gr.Slider(1, 2, value=1.0, step=0.2, label="clip length (s)")
                run = gr.Button("Render grid", variant="primary", elem_id="tune-run")
                # Beside the button: the grid's progress shows here, where the user just clicked.
                status = gr.Markdown("", elem_id="tune-status")
        # A heading rather than the gallery's label, which Gradio draws over the first tiles.
        gr.Markdown(
            "**Previews**: the same frame and the same audio, one per bbox_shift value (face, then the mouth ×2)"
        )
        gallery = gr.Gallery(
            label="Previews",
            show_label=False,
            columns=5,
            rows=1,
            height="auto",
            object_fit="contain",
            allow_preview=True,
            elem_id="tune-gallery",
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                # A heading, not the video's own label: that label sat over the panels' burnt-in captions.
                gr.Markdown("**Side-by-side looping clip** (tick *also a looping clip*)")
                clip = gr.Video(
                    show_label=False,
                    autoplay=True,
                    loop=True,
                    interactive=False,
                    elem_id="tune-clip",
                )
            with gr.Column(scale=1, min_width=280):
                chosen = gr.Radio([], label="keep bbox_shift", elem_id="tune-chosen")
                save = gr.Button("Save to avatar", elem_id="tune-save")
                saved = gr.Markdown("", elem_id="tune-saved")
        self.sweep.build(
            session,
            avatar,
            sample_audio,
            upload,
            moment,
            shifts,
            [extra_margin, parsing_mode, left_cheek, right_cheek],
            [session, saved, avatar],
        )

        avatar.change(
            self.select, [avatar, session], [shifts, frame, extra_margin, parsing_mode, left_cheek, right_cheek, info]
        )
        sample_audio.change(self.audio_length, [sample_audio, upload], [moment])
        upload.change(self.audio_length, [sample_audio, upload], [moment])
        run.click(
            self.grid,
            [
                avatar,
                frame,
                sample_audio,
                upload,
                moment,
                shifts,
                extra_margin,
                parsing_mode,
                left_cheek,
                right_cheek,
                make_clip,
                clip_seconds,
                session,
            ],
            [gallery, clip, status, chosen],
            concurrency_limit=1,
            concurrency_id="engine-heavy",
            show_progress_on=[status],  # under the button (the gallery may be below the fold)
        )
        self.saved = save.click(
            self.save,
            [avatar, chosen, extra_margin, parsing_mode, left_cheek, right_cheek, session],
            [session, saved, avatar],
            concurrency_limit=1,
            concurrency_id="engine-heavy",
        )
        self.avatar = avatar
        return avatar
