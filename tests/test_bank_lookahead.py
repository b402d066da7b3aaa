"""The mouth bank in a stream: a sliding look-ahead window keeps runs of the person's own frames as the file path
does, each output sequence has its own memory, and the stream hands its pending conditions to the renderer."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pytest
import soundfile as sf

from testkit.realtime import LevelRenderer, make_avatar, speech_like
from workbench.config import SAMPLE_RATE
from workbench.lipsync.cpu.bank import BankParams, MouthBank
from workbench.lipsync.cpu.frontend import MouthFrontend, MouthState
from workbench.lipsync.cpu.renderer import CPURenderer
from workbench.lipsync.stream import LipSyncStream


@pytest.fixture(scope="module")
def talk3_avatar(samples_dir, dlib_detector):
    """A real talking face (calibration/talk3.mp4, held out from the renderer's design), first 50 frames."""
    from workbench.avatars.model import PrepParams
    from workbench.avatars.pipeline import prepare_avatar

    return prepare_avatar(samples_dir / "calibration" / "talk3.mp4", PrepParams(max_frames=50), dlib_detector)


@pytest.fixture(scope="module")
def states(samples_dir) -> list[MouthState]:
    audio, sr = sf.read(samples_dir / "eng.wav", dtype="float32")
    assert sr == SAMPLE_RATE
    return MouthFrontend().process(audio[20 * sr : 28 * sr])


def _share(path: list[int]) -> float:
    return float(np.mean(np.abs(np.diff(path)) <= 1))


def _select(r: CPURenderer, avatar, states, per_call: int, lookahead: bool) -> list[int]:
    seq = r.new_sequence()
    idx = [avatar.loop_index(k) for k in range(len(states))]
    out: list[int] = []
    for b in range(0, len(states), per_call):
        look = list(zip(idx[b + per_call :], states[b + per_call :], strict=True)) if lookahead else []
        out += r.source_frames(avatar, idx[b : b + per_call], states[b : b + per_call], look, seq)
    return out


def test_one_frame_calls_with_lookahead_keep_runs_as_the_file_path(talk3_avatar, states):
    """A stream renders one frame per call; with the pending conditions as look-ahead its path keeps the file
    path's runs (within 3 points) and matches the targets as well; without look-ahead it jumps more."""
    r = CPURenderer()
    assert r._rig(talk3_avatar).bank_enabled
    bank = r._rig(talk3_avatar).bank
    file_path = _select(r, talk3_avatar, states, 8, lookahead=False)
    stream = _select(r, talk3_avatar, states, 1, lookahead=True)
    blind = _select(CPURenderer(bank_params=BankParams(lookahead=0)), talk3_avatar, states, 1, lookahead=True)
    assert _share(stream) >= _share(file_path) - 0.03, (_share(stream), _share(file_path))
    assert _share(blind) < _share(stream) - 0.03, (_share(blind), _share(stream))
    tgt = np.clip([s.open for s in states], 0, 1)

    def mismatch(p):
        return float(np.mean(np.abs(bank.open[p] - tgt)))

    assert mismatch(stream) <= mismatch(file_path) + 0.01
    # Sync: the chosen mouths' own opening follows the targets as closely either way.
    assert np.corrcoef(bank.open[stream], tgt)[0, 1] > np.corrcoef(bank.open[file_path], tgt)[0, 1] - 0.03


def test_sequences_do_not_steer_each_other(talk3_avatar, states):
    """Idle renders (silence on other frames) between a reply's calls leave the reply's choices as they were:
    each sequence carries its own last choice."""
    r = CPURenderer()
    alone = _select(r, talk3_avatar, states[:60], 1, lookahead=True)
    seq = r.new_sequence()
    idx = [talk3_avatar.loop_index(k) for k in range(60)]
    mixed = []
    for k in range(60):
        look = list(zip(idx[k + 1 :], states[k + 1 : 60], strict=True))
        mixed += r.source_frames(talk3_avatar, [idx[k]], [states[k]], look, seq)
        r.source_frames(talk3_avatar, [(idx[k] + 17) % len(talk3_avatar)], [MouthState()])  # an idle render
    assert mixed == alone


def test_bank_params_are_settings_and_bad_values_are_refused():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (68, 2)) * 3 + [100, 100]
    base[36:42], base[42:48] = [80, 80], [120, 80]
    lms = np.repeat(base[None], 40, axis=0)
    gaps = np.r_[np.linspace(0, 10, 20), np.linspace(0, 10, 20)]
    lms[:, [65, 66, 67], 1] = lms[:, [63, 62, 61], 1] + gaps[:, None]
    targets = [(float(o), 0.0, 0.0) for o in rng.uniform(0, 1, 30)]  # a jumpy target
    free = MouthBank(lms, BankParams(jump_cost=0.0)).select(list(range(30)), targets)
    sticky = MouthBank(lms, BankParams(jump_cost=50.0)).select(list(range(30)), targets)
    assert _share(sticky) > _share(free)  # the jump cost is what trades shape for runs
    for bad in ({"jump_cost": -1.0}, {"candidates": 0}, {"lookahead": 1000}, {"jump_cost": float("nan")}):
        with pytest.raises(ValueError):
            BankParams(**bad)


class _PlanningRenderer(LevelRenderer):
    """Records the look-ahead a stream hands over with each speech call."""

    lookahead_frames = 4

    def __init__(self) -> None:
        super().__init__()
        self.looks: list[tuple[list[int], list[int]]] = []

    def new_sequence(self, exact=False):
        return object()

    def render(self, avatar, frame_indices: Sequence[int], conditions, lookahead=(), sequence=None):
        if sequence is not None:
            self.looks.append((list(frame_indices), [i for i, _ in lookahead]))
        return super().render(avatar, frame_indices, conditions)


def test_stream_hands_its_pending_conditions_to_a_planning_renderer():
    avatar = make_avatar()
    r = _PlanningRenderer()
    stream = LipSyncStream(r, avatar, crossfade_frames=0, tail_frames=0, name="plan")
    try:
        stream.warm_idle(timeout=30)
        audio = speech_like(3.0)
        stream.push_audio(audio, 24_000, item_id="a")  # all at once: the conditions queue up
        stream.end_utterance()
        seen = False
        for _ in range(2000):
            f = stream.next_frame()
            seen |= f.kind == "speech"
            if seen and not stream.speaking:
                break
            time.sleep(0.001)
    finally:
        stream.close()
    assert r.looks, "no speech call reached the renderer"
    with_look = [(f, la) for f, la in r.looks if la]
    assert len(with_look) >= len(r.looks) // 2
    for frames, look in with_look:
        assert len(look) <= 4 and all(0 <= i < len(avatar) for i in look)
        # The look-ahead continues the call's own frames along the body loop (ping-pong: a step of one, or a
        # repeat at a turn-around).
        assert abs(look[0] - frames[-1]) <= 1
