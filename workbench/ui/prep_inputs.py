"""The preparation parameters' inputs, built from `PrepParams` (defaults) and `PREP_RANGES` (ranges).

Both the preparation and the tuning tab use these, so a default or a choice list lives in one place.
"""

from __future__ import annotations

import gradio as gr

from workbench.avatars.model import PREP_RANGES, PrepParams
from workbench.config import DETECTORS, MASK_SOURCES, PARSING_MODES


def slider(name: str, label: str | None = None, **kwargs) -> gr.Slider:
    """A slider for the integer PrepParams field `name`, over its range, at its default."""
    lo, hi = PREP_RANGES[name]
    return gr.Slider(lo, hi, value=getattr(PrepParams, name), step=1, label=label or name, **kwargs)


def parsing_mode(label: str = "parsing mode") -> gr.Radio:
    return gr.Radio(list(PARSING_MODES), value=PrepParams.parsing_mode, label=label)


def cheek_widths() -> tuple[gr.Slider, gr.Slider]:
    """Left and right cheek widths side by side."""
    with gr.Row():
        left = slider("left_cheek_width", "left cheek width")
        right = slider("right_cheek_width", "right cheek width")
    return left, right


def detector(**kwargs) -> gr.Radio:
    return gr.Radio(list(DETECTORS), value=PrepParams.detector, label="landmark detector", **kwargs)


def mask_source(**kwargs) -> gr.Radio:
    return gr.Radio(list(MASK_SOURCES), value=PrepParams.mask_source, label="mask source", **kwargs)
