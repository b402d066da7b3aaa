"""Lip-sync: audio → per-frame conditions → rendered faces → composited frames (stage 2 of the data path).

Shared by both renderers: `base` (the renderer and audio front end contract), `loop` (the render loop),
`stream` (reply audio in, frames on a 25 fps clock out), `batcher` (one GPU shared by sessions) and
`compositor` (the one paste-back). Each model family is its own package: `cpu` (the weight-free renderer)
and `musetalk` (MuseTalk v1.5).
"""

from workbench.lipsync.base import AudioFrontend, Renderer

__all__ = ["AudioFrontend", "Renderer"]
