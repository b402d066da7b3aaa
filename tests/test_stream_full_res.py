"""The CPU renderer's full-resolution pass is for files; the realtime stream skips it unless asked.

It costs ~2.5 ms a frame of one core, the sixth 25 fps session on two cores (bench/bench_realtime.py), while the
stream shows frames at no more than 720 lines. So a `RenderLoop` for a file (`exact=True`) renders a still mouth as
`CPURenderer(full_res=True)` does, a stream's loop as `full_res=False` does, and `stream_full_res=True` puts the
pass back in the stream.
"""

from __future__ import annotations

import numpy as np

from workbench.lipsync.cpu.frontend import MouthState
from workbench.lipsync.cpu.renderer import CPURenderer
from workbench.lipsync.loop import RenderLoop

OPEN = MouthState(open=0.8, width=0.2)


def _render(renderer: CPURenderer, avatar, exact: bool) -> np.ndarray:
    loop = RenderLoop(renderer, avatar, exact=exact)
    return loop.render([0], [OPEN])[0]


def test_files_take_the_full_resolution_pass_and_the_stream_does_not(yongen_avatar):
    avatar = yongen_avatar
    full = CPURenderer(full_res=True).render(avatar, [0], [OPEN])[0]
    crop = CPURenderer(full_res=False).render(avatar, [0], [OPEN])[0]
    assert not np.array_equal(full, crop)  # the two paths differ on this avatar, so the checks below can fail
    r = CPURenderer()
    assert np.array_equal(_render(r, avatar, exact=True), full)
    assert np.array_equal(_render(r, avatar, exact=False), crop)


def test_stream_full_res_puts_the_pass_back_in_the_stream(yongen_avatar):
    avatar = yongen_avatar
    full = CPURenderer(full_res=True).render(avatar, [0], [OPEN])[0]
    assert np.array_equal(_render(CPURenderer(stream_full_res=True), avatar, exact=False), full)
    # And full_res=False turns it off everywhere.
    crop = CPURenderer(full_res=False).render(avatar, [0], [OPEN])[0]
    assert np.array_equal(_render(CPURenderer(full_res=False, stream_full_res=True), avatar, exact=True), crop)
