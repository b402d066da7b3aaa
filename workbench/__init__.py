"""Real-time talking digital human workbench: one engine behind the app, the CLI and the evaluation."""

__version__ = "0.1.0"
