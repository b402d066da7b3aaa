"""Tab 3, realtime chat: the realtime stack's WebRTC page (voice + video) for the chosen avatar.

The page itself (workbench/realtime/static) holds the controls: mode (local echo/FAQ or OpenAI Realtime),
the API key (a password field sent once with the connection request, kept only in that realtime session's
memory, never stored, logged or echoed), voice, instructions, VAD settings, the live transcript, the fps and
latency readout, and the stop (barge-in) and hang-up buttons. This tab only chooses which avatar it shows:
it checks that this browser session may see the avatar and embeds the page with a grant for it alone, so
the page never lists or reaches other sessions' avatars.
"""

from __future__ import annotations

import html

import gradio as gr

from workbench.realtime.server import embed_html
from workbench.ui.context import UIContext, user_errors
from workbench.ui.session_state import SessionState, new_session
from workbench.zerogpu import ZEROGPU_REALTIME_NOTE, on_zerogpu

CHAT_HEIGHT = 720

# One statement about the microphone, the same as README's and the page's (LocalVoice: Silero VAD + Whisper tiny.en).
HELP = (
    "**Local** modes need no key and run offline: speak (English only; recognised on the server) or type. *echo* "
    "says back what it heard or read, *FAQ* answers a few questions. Talk while the avatar speaks to interrupt it, "
    "or press **Stop**. **OpenAI Realtime** talks with your voice: paste a key in the panel (sent once to this "
    "server for that call only, never stored or shown again) or set OPENAI_API_KEY on the server."
)


def notice(text: str) -> str:
    return f'<div class="wb-chat-empty">{html.escape(text)}</div>'


class ChatTab:
    def __init__(self, ctx: UIContext):
        self.ctx = ctx

    @user_errors
    def frame(self, avatar_id: str | None, session: SessionState | None, request: gr.Request | None = None) -> str:
        """The chat page for `avatar_id`, embedded; only an avatar this session may see."""
        session = session or new_session()
        if not avatar_id:
            return notice(
                "Prepare an avatar in the first tab, then choose it here (the example avatar appears by itself once the banner says it is ready)."
            )
        self.ctx.library.check_access(avatar_id, session.avatars)
        if self.ctx.realtime is None:
            return notice("The realtime endpoint is not served with this app (start it with app.py).")
        # The grant names this browser session, so it has one live call at a time (a new one replaces it).
        client = request.client.host if request is not None and request.client is not None else None
        token = self.ctx.realtime.grant(avatar_id, holder=session.token, client=client)
        return embed_html(token=token, height=CHAT_HEIGHT)

    def build(self, session: gr.State) -> gr.Dropdown:
        with gr.Row():
            avatar = gr.Dropdown([], label="avatar", scale=2, elem_id="chat-avatar")
            gr.Markdown(HELP + (f"\n\n**{ZEROGPU_REALTIME_NOTE}**" if on_zerogpu() else ""), elem_id="chat-help")
        page = gr.HTML(
            notice(
                "Prepare an avatar in the first tab, then choose it here (the example avatar appears by itself once the banner says it is ready)."
            ),
            elem_id="chat-frame",
            min_height=CHAT_HEIGHT,
        )
        avatar.change(self.frame, [avatar, session], [page], show_progress="hidden")
        return avatar
