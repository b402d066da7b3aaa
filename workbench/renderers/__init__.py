"""Renderers: MuseTalk (needs weights, real-time on a GPU) and the weight-free CPU renderer."""

from .base import AudioFrontend, Renderer

__all__ = ["AudioFrontend", "Renderer"]
