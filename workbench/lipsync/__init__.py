"""Lip-sync: audio → per-frame conditions → rendered faces → composited frames (stage 2 of the data path).

`base` (the renderer contract), the two audio frontends (`whisper_features` for MuseTalk, `mouth` for the
CPU renderer), the two renderers (`musetalk`, `cpu`), `compositor` (the one paste-back) and `stream`
(reply audio in, frames on a 25 fps clock out).
"""

from workbench.lipsync.base import AudioFrontend, Renderer

__all__ = ["AudioFrontend", "Renderer"]
