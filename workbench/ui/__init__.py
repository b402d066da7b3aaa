"""The Gradio workbench: four tabs (preparation, bbox_shift tuning, realtime chat, evaluation) over one engine.

from workbench.ui import build_ui, create_app
demo = build_ui(engine)            # gr.Blocks
app = create_app(engine)           # FastAPI: realtime routes + the UI at "/"
"""

from workbench.ui.app import WorkbenchUI, build_ui, create_app

__all__ = ["WorkbenchUI", "build_ui", "create_app"]
