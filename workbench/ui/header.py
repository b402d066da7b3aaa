"""The banner at the top of the app: what is running, what is missing, and how to turn the rest on."""

from __future__ import annotations

import html

from workbench import weights

# Components shown in the banner, in the order a user would fetch them.
SHOWN = ("musetalkV15", "sd-vae", "whisper", "dwpose", "face-parse-bisent", "syncnet_eval")


def _badge(text: str, kind: str) -> str:
    return f'<span class="wb-badge wb-{kind}">{html.escape(text)}</span>'


def status_lines(
    renderer: str, report: weights.WeightsReport, openai_configured: bool, decoder: str = "vae"
) -> dict[str, str]:
    """Plain-text status, one line per subject, shared by the banner and the tests."""
    musetalk_ready = report.has_musetalk()
    if renderer == "musetalk":
        render_line = "MuseTalk v1.5 renderer active" + (
            " with the TAESD fast decoder (an approximation of the VAE; judge it with the evaluation)."
            if decoder == "taesd"
            else " (VAE decoder, the reference; WORKBENCH_DECODER=taesd for the fast one)."
        )
    elif musetalk_ready:
        render_line = (
            "CPU renderer active (MuseTalk weights are present; set WORKBENCH_RENDERER=musetalk or auto to use them)."
        )
    else:
        render_line = (
            f"CPU renderer active (weight-free). For MuseTalk lip-sync run `{weights.DOWNLOAD_COMMAND}` "
            "or press 'Fetch MuseTalk weights' below."
        )
    if openai_configured:
        voice_line = "OpenAI Realtime available (a key is configured on the server); local voice mode always available."
    else:
        voice_line = (
            "Local voice mode active (no OpenAI key configured). For OpenAI Realtime set OPENAI_API_KEY "
            "or paste a key in the Realtime chat tab (kept for that session only)."
        )
    present = [n for n in SHOWN if n in report.components and report.status(n) == "present"]
    absent = [f"{n} ({report.status(n)})" for n in SHOWN if n in report.components and report.status(n) != "present"]
    weights_line = (
        f"Weights in {report.models_dir}: present: {', '.join(present) or 'none'}; "
        f"not present: {', '.join(absent) or 'none'}."
    )
    return {"renderer": render_line, "voice": voice_line, "weights": weights_line}


def example_line(state) -> tuple[str, str, str] | None:
    """(badge text, badge kind, note) for the default example avatar's background preparation, or None."""
    if state is None:
        return None
    if state.status == "ready":
        return ("ready", "ok", f"{state.source} ({state.message}) is selected in the Realtime chat tab: press Connect.")
    if state.status == "failed":
        return ("failed", "bad", f"{state.source} could not be prepared: {state.message}. Upload a video instead.")
    pct = int(round(100 * state.fraction))
    return (f"preparing {pct}%", "missing", f"{state.source}: {state.message or 'waiting'}…")


def header_html(
    renderer: str, report: weights.WeightsReport, openai_configured: bool, example=None, decoder: str = "vae"
) -> str:
    """The banner as HTML (escaped; no user input is ever placed in it). `example`: a warmup.WarmupState."""
    lines = status_lines(renderer, report, openai_configured, decoder)
    r_badge = _badge("MuseTalk v1.5" if renderer == "musetalk" else "CPU renderer", "on")
    v_badge = _badge("OpenAI Realtime + local voice" if openai_configured else "local voice", "on")
    chips = []
    for name in SHOWN:
        if name in report.components:
            st = report.status(name)
            chips.append(_badge(name, "ok" if st == "present" else "missing" if st == "missing" else "bad"))
    return (
        '<div class="wb-header">'
        '<div class="wb-title">Talking-head workbench</div>'
        f'<div class="wb-row"><b>Renderer</b> {r_badge} <span class="wb-note">{html.escape(lines["renderer"])}</span></div>'
        f'<div class="wb-row"><b>Voice</b> {v_badge} <span class="wb-note">{html.escape(lines["voice"])}</span></div>'
        f'<div class="wb-row"><b>Weights</b> {" ".join(chips)}</div>'
        + (
            f'<div class="wb-row" id="wb-example"><b>Example avatar</b> {_badge(ex[0], ex[1])} '
            f'<span class="wb-note">{html.escape(ex[2])}</span></div>'
            if (ex := example_line(example))
            else ""
        )
        + "</div>"
    )


HEADER_CSS = """
.wb-header {padding: 10px 14px; border-radius: 10px; background: var(--block-background-fill);
  border: 1px solid var(--border-color-primary); margin-bottom: 6px}
.wb-title {font-size: 1.35em; font-weight: 700; margin-bottom: 4px}
.wb-row {margin: 3px 0; line-height: 1.9}
.wb-note {color: var(--body-text-color-subdued); font-size: 0.92em}
.wb-badge {display: inline-block; padding: 0 8px; border-radius: 9px; font-size: 0.85em; margin-right: 4px;
  border: 1px solid transparent}
.wb-on {background: #dbeafe; color: #1e3a8a}
.wb-ok {background: #dcfce7; color: #14532d}
.wb-missing {background: #f1f5f9; color: #475569; border-color: #cbd5e1}
.wb-bad {background: #fee2e2; color: #7f1d1d}
"""
