"""The chat page and the chat tab agree with the app: the theme's colours, one statement about the microphone."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).parents[1]
STATIC = REPO / "workbench" / "realtime" / "static"


def test_chat_page_uses_the_apps_theme_values():
    """chat.css copies gr.themes.Soft's palette (the page is served outside Gradio): each value is the theme's."""
    from workbench.ui.app import theme

    theme_css = theme()._get_theme_css()
    page_css = (STATIC / "chat.css").read_text()
    names = re.findall(r"--((?:primary|neutral)-\d+|radius-(?:sm|md|lg)):\s*([^;]+);", page_css)
    assert len(names) >= 20
    for name, value in names:
        found = re.search(rf"--{name}:\s*([^;]+);", theme_css)
        assert found and found.group(1).strip() == value.strip(), (name, value, found and found.group(1))


def test_the_microphone_is_described_the_same_everywhere():
    """Local mode recognises speech (LocalVoice: Silero VAD + Whisper tiny.en) and answers it; nothing may say that
    replies come from typed text only or that the microphone only interrupts (except when the models cannot load)."""
    from workbench.realtime.voices import LocalVoice
    from workbench.ui.chat_tab import HELP

    assert LocalVoice("echo").listen  # the default: the microphone is a real input
    html = (STATIC / "chat.html").read_text()
    readme = (REPO / "README.md").read_text()
    for where, text in (("chat tab", HELP), ("chat page", html)):
        assert "speak" in text and "English" in text and "type" in text, where
        assert "drives barge-in" not in text and "what you type," not in text, where
    assert "replies come from typed text." not in readme and "drives barge-in only" not in readme
    assert "echo what I say or type" in html
