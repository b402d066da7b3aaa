"""The ZeroGPU wrapper: a no-op without `spaces`, `spaces.GPU(duration=...)` with it."""

from __future__ import annotations

import sys
import types

from workbench import zerogpu


def test_identity_without_spaces(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # makes `import spaces` raise ImportError

    def f(x):
        return x + 1

    assert zerogpu.gpu(duration=30)(f) is f


def test_applies_spaces_gpu_with_its_duration(monkeypatch):
    seen = {}

    def GPU(duration):  # noqa: N802 - the spaces API's name
        def deco(fn):
            seen["duration"] = duration
            return lambda *a, **k: ("on gpu", fn(*a, **k))

        return deco

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    wrapped = zerogpu.gpu(duration=zerogpu.PREPARE_GPU_S)(lambda x: x * 2)
    assert wrapped(4) == ("on gpu", 8) and seen["duration"] == zerogpu.PREPARE_GPU_S


def test_detects_a_zerogpu_space(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zerogpu.on_zerogpu()
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zerogpu.on_zerogpu()
    assert "cannot hold a continuous" in zerogpu.ZEROGPU_REALTIME_NOTE
