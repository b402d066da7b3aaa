"""The weight-free CPU renderer and its audio→mouth frontend.

Evidence that the output is driven by the audio is measured the way a viewer would: dlib's 68-point
predictor re-detects the lips on the rendered frames (at the face box dlib found on the avatar frame),
and the re-detected mouth opening is cross-correlated with the audio's loudness envelope.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from workbench.config import SAMPLE_RATE, SAMPLES_PER_FRAME
from workbench.lipsync.cpu.frontend import LOOKAHEAD_SAMPLES, AudioFormatError, MouthFrontend, MouthState
from workbench.lipsync.cpu.renderer import CPURenderer, RenderInputError, measure_openness

SPEECH_SECONDS = 20  # of eng.wav: 500 frames, enough for a stable correlation, quick on 2 cores
MAX_LAG = 5


# --- synthetic audio ------------------------------------------------------------------------
def _vowel(f1: float, f2: float, seconds: float, f0: float = 120.0, level: float = 0.1, seed: int = 0) -> np.ndarray:
    """A crude vowel: a glottal pulse train through two formant resonators."""
    from scipy import signal

    n = int(seconds * SAMPLE_RATE)
    src = np.zeros(n)
    src[:: int(SAMPLE_RATE / f0)] = 1.0
    src += 0.01 * np.random.default_rng(seed).standard_normal(n)
    y = src
    for f, bw in ((f1, 80.0), (f2, 120.0)):
        r = np.exp(-np.pi * bw / SAMPLE_RATE)
        y = signal.lfilter([1.0 - r], [1.0, -2 * r * np.cos(2 * np.pi * f / SAMPLE_RATE), r * r], y)
    return (level * y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllables of alternating vowels with pauses: loudness that comes and goes like speech."""
    rng = np.random.default_rng(seed)
    parts = []
    total = 0.0
    while total < seconds:
        dur = float(rng.uniform(0.12, 0.35))
        f1, f2 = [(700, 1200), (300, 2300), (350, 800), (500, 1700)][int(rng.integers(4))]
        v = _vowel(f1, f2, dur, level=float(rng.uniform(0.03, 0.2)), seed=int(rng.integers(1 << 30)))
        env = np.sin(np.linspace(0, np.pi, len(v))) ** 0.5
        parts += [v * env, np.zeros(int(rng.uniform(0.02, 0.25) * SAMPLE_RATE), np.float32)]
        total += dur + len(parts[-1]) / SAMPLE_RATE
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)].astype(np.float32)


def _states_array(states: list[MouthState]) -> np.ndarray:
    return np.array([s.as_tuple() for s in states])


# --- the frontend ---------------------------------------------------------------------------
def test_streamed_equals_whole_file_for_any_chunking():
    audio = _speech_like(6.0)
    whole = _states_array(MouthFrontend().process(audio))
    assert len(whole) == -(-len(audio) // SAMPLES_PER_FRAME)
    rng = np.random.default_rng(1)
    for sizes in ([1, 7, 640, 641, 3000], [SAMPLES_PER_FRAME], [160, 333]):
        fe = MouthFrontend()
        out, i = [], 0
        while i < len(audio):
            n = int(rng.choice(sizes))
            out += fe.push(audio[i : i + n])
            i += n
        out += fe.flush()
        assert np.array_equal(_states_array(out), whole), f"chunk sizes {sizes} changed the states"


def test_resampling_frontend_is_chunk_invariant_and_matches_16k():
    import librosa

    audio16 = _speech_like(4.0, seed=3)
    audio48 = librosa.resample(audio16, orig_sr=SAMPLE_RATE, target_sr=48_000).astype(np.float32)
    whole = _states_array(MouthFrontend(sample_rate=48_000).process(audio48))
    fe = MouthFrontend(sample_rate=48_000)
    out = []
    for k in range(0, len(audio48), 1234):
        out += fe.push(audio48[k : k + 1234])
    out += fe.flush()
    assert np.array_equal(_states_array(out), whole)
    ref = _states_array(MouthFrontend().process(audio16))
    n = min(len(ref), len(whole))
    assert abs(len(ref) - len(whole)) <= 1
    assert np.corrcoef(ref[:n, 0], whole[:n, 0])[0, 1] > 0.97


def test_lookahead_is_bounded_by_one_frame():
    fe = MouthFrontend()
    assert fe.lookahead_frames == 1 and LOOKAHEAD_SAMPLES == 480
    audio = _speech_like(1.0)
    # Frame k is ready 30 ms after its own 40 ms have arrived, whatever came before.
    ready = SAMPLES_PER_FRAME + LOOKAHEAD_SAMPLES
    assert fe.push(audio[: ready - 1]) == []
    assert len(fe.push(audio[ready - 1 : ready])) == 1
    assert len(fe.push(audio[ready : ready + 3 * SAMPLES_PER_FRAME])) == 3
    assert len(fe.push(audio[ready + 3 * SAMPLES_PER_FRAME : ready + 3 * SAMPLES_PER_FRAME + 1])) == 0


def test_silence_and_noise_floor_keep_the_mouth_shut():
    silent = MouthFrontend().process(np.zeros(3 * SAMPLE_RATE, np.float32))
    assert silent and all(s == MouthState() for s in silent)
    hiss = (1e-4 * np.random.default_rng(0).standard_normal(3 * SAMPLE_RATE)).astype(np.float32)  # -80 dBFS
    assert max(s.open for s in MouthFrontend().process(hiss)) == 0.0


def test_loudness_opens_the_mouth_and_pauses_close_it():
    vowel = _vowel(700, 1200, 0.5, level=0.1)
    audio = np.concatenate([vowel, np.zeros(SAMPLE_RATE // 2, np.float32), vowel])
    o = _states_array(MouthFrontend().process(audio))[:, 0]
    assert o[3:10].mean() > 0.6  # inside the first vowel
    assert o[16:22].max() < 0.05  # inside the pause
    assert o[28:35].mean() > 0.6


def test_vowel_shape_sets_width_and_roundness():
    # /i/ (F2 high) spreads the lips; /u/ (F2 low) rounds them. Alternate so the speaker average sits between.
    segs, labels = [], []
    for k in range(12):
        i_vowel = k % 2 == 0
        segs.append(_vowel(300, 2300, 0.4, seed=k) if i_vowel else _vowel(320, 750, 0.4, seed=k))
        labels += [i_vowel] * 10
    st = _states_array(MouthFrontend().process(np.concatenate(segs)))
    lab = np.array(labels[: len(st)])
    core = np.zeros(len(lab), bool)
    for s in range(0, len(lab), 10):  # skip the transitions at each segment's edges
        core[s + 2 : s + 8] = True
    w_i, w_u = st[core & lab, 1].mean(), st[core & ~lab, 1].mean()
    r_i, r_u = st[core & lab, 2].mean(), st[core & ~lab, 2].mean()
    assert w_i > w_u + 0.3, (w_i, w_u)
    assert r_u > r_i + 0.3, (r_u, r_i)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((800, 2), np.float32), np.zeros(800, np.int16), np.array([0.0, np.nan], np.float32)],
    ids=["stereo", "int16", "nan"],
)
def test_frontend_rejects_bad_audio(bad):
    with pytest.raises(AudioFormatError):
        MouthFrontend().push(bad)


# --- re-detection helpers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor():
    import dlib

    from workbench.faces.landmarks import dlib_model_dir

    return dlib.shape_predictor(str(dlib_model_dir() / "shape_predictor_68_face_landmarks.dat"))


@pytest.fixture(scope="module")
def face_rects(yongen_avatar, dlib_detector):
    """dlib's own face box on each avatar frame: the known box the predictor re-detects lips in."""
    rects = []
    for frame in yongen_avatar.frames:
        det = dlib_detector.detect(frame)
        assert det is not None, "dlib lost the face on an avatar frame"
        rects.append(det.box)
    return np.stack(rects)


def _redetected_openness(frames, indices, rects, predictor) -> np.ndarray:
    import cv2
    import dlib

    out = []
    for frame, i in zip(frames, indices, strict=True):
        x1, y1, x2, y2 = (int(round(v)) for v in rects[i])
        shape = predictor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), dlib.rectangle(x1, y1, x2, y2))
        out.append([(p.x, p.y) for p in shape.parts()])
    return measure_openness(np.asarray(out, np.float64))


def _envelope(audio: np.ndarray, n: int) -> np.ndarray:
    a = np.pad(audio, (0, max(0, n * SAMPLES_PER_FRAME - len(audio))))[: n * SAMPLES_PER_FRAME]
    return np.sqrt(np.mean(a.reshape(n, SAMPLES_PER_FRAME) ** 2, axis=1))


def _xcorr(mouth: np.ndarray, env: np.ndarray, max_lag: int = MAX_LAG) -> dict[int, float]:
    """Correlation of mouth[k] with env[k - lag]: a positive lag means the mouth follows the audio late."""
    n = min(len(mouth), len(env))
    mouth, env = mouth[:n], env[:n]
    out = {}
    for lag in range(-max_lag, max_lag + 1):
        a, b = (mouth[lag:], env[: n - lag]) if lag >= 0 else (mouth[:lag], env[-lag:])
        out[lag] = float(np.corrcoef(a, b)[0, 1])
    return out


KEEP_EVERY = 37  # rendered frames kept for pixel checks (all 500 full frames would take 1.3 GB)


def _render_and_measure(avatar, audio, rects, predictor):
    """Re-detected openness of every rendered frame, plus every KEEP_EVERY-th frame as {step: (index, frame)}."""
    renderer = CPURenderer()
    states = renderer.new_frontend().process(audio)
    idx = [avatar.loop_index(k) for k in range(len(states))]
    measured, kept = [], {}
    for b in range(0, len(states), 25):
        frames = renderer.render(avatar, idx[b : b + 25], states[b : b + 25])
        measured.append(_redetected_openness(frames, idx[b : b + 25], rects, predictor))
        kept.update({b + k: (idx[b + k], f) for k, f in enumerate(frames) if (b + k) % KEEP_EVERY == 0})
    return np.concatenate(measured), kept


@pytest.fixture(scope="module")
def eng_audio(samples_dir) -> np.ndarray:
    audio, sr = sf.read(samples_dir / "eng.wav", dtype="float32")
    assert sr == SAMPLE_RATE and audio.ndim == 1
    return audio[: SPEECH_SECONDS * SAMPLE_RATE]


@pytest.fixture(scope="module")
def eng_render(yongen_avatar, eng_audio, face_rects, predictor):
    return _render_and_measure(yongen_avatar, eng_audio, face_rects, predictor)


# --- evidence that the audio drives the mouth ------------------------------------------------
def test_rendered_mouth_follows_the_audio_envelope(eng_render, eng_audio):
    measured, _ = eng_render
    corr = _xcorr(measured, _envelope(eng_audio, len(measured)))
    best = max(corr, key=corr.get)
    # Measured on this machine: 0.84 at lag 0, 0.72 / 0.71 at lags -1 / +1 (dlib on a painted face is a noisy ruler).
    assert corr[best] > 0.6, corr
    assert -1 <= best <= 1, corr
    assert measured.std() > 0.1  # the mouth really moves


def test_delayed_audio_moves_the_best_lag_by_five_frames(yongen_avatar, eng_audio, eng_render, face_rects, predictor):
    delayed = np.concatenate([np.zeros(5 * SAMPLES_PER_FRAME, np.float32), eng_audio])
    measured, _ = _render_and_measure(yongen_avatar, delayed, face_rects, predictor)
    env = _envelope(eng_audio, len(eng_render[0]))
    corr_delayed = _xcorr(measured, env, max_lag=8)
    corr = _xcorr(eng_render[0], env, max_lag=8)
    shift = max(corr_delayed, key=corr_delayed.get) - max(corr, key=corr.get)
    assert 4 <= shift <= 6, (corr, corr_delayed)


def test_silent_audio_gives_a_closed_still_mouth(yongen_avatar, eng_render, face_rects, predictor):
    measured, _ = _render_and_measure(yongen_avatar, np.zeros(4 * SAMPLE_RATE, np.float32), face_rects, predictor)
    speech = eng_render[0]
    # Measured: mean 0.026, std 0.020, max 0.08 (re-detection noise on the still portrait); speaking: std 0.24.
    assert measured.mean() < 0.1
    assert measured.max() < 0.2
    assert measured.std() < 0.04
    assert measured.std() < 0.25 * speech.std()


def test_pixels_outside_the_mask_are_untouched(yongen_avatar, eng_render):
    import cv2

    _, kept = eng_render
    assert len(kept) > 10
    for i, frame in kept.values():
        x1, y1, x2, y2 = (int(v) for v in yongen_avatar.boxes[i])
        mask = cv2.resize(yongen_avatar.masks[i], (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        outside = np.ones(frame.shape[:2], bool)
        outside[y1:y2, x1:x2] = mask == 0
        assert np.array_equal(frame[outside], yongen_avatar.frames[i][outside])
        inside = ~outside
        assert inside.sum() > 1000


@pytest.mark.parametrize("interior", ["drawn", "library", "painted"])
def test_opening_darkens_the_mouth_and_drops_the_lower_lip(yongen_avatar, face_rects, predictor, interior):
    # "library": the footage interior as it is (yongen measures as painted, so auto would paint it); "painted": it.
    r = (
        CPURenderer(interior="library", interior_style="painted" if interior == "painted" else "photo")
        if interior != "drawn"
        else CPURenderer(interior="drawn")
    )
    i = 10
    closed = r.render(yongen_avatar, [i], [MouthState(0.0)])[0]
    opened = r.render(yongen_avatar, [i], [MouthState(0.9)])[0]
    import cv2
    import dlib

    def lms(frame):
        x1, y1, x2, y2 = (int(round(v)) for v in face_rects[i])
        s = predictor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), dlib.rectangle(x1, y1, x2, y2))
        return np.array([(p.x, p.y) for p in s.parts()], np.float64)

    lc, lo = lms(closed), lms(opened)
    iod = np.linalg.norm(lc[36:42].mean(0) - lc[42:48].mean(0))
    assert lo[57, 1] - lc[57, 1] > 0.12 * iod  # lower lip drops
    assert lo[8, 1] >= lc[8, 1]  # the chin never rises when opening
    # The inner mouth is dark: the opened lips' interior is much darker than the closed mouth there.
    poly = np.round(lo[60:68]).astype(np.int32)
    m = np.zeros(closed.shape[:2], np.uint8)
    cv2.fillPoly(m, [poly], 1)
    m = m.astype(bool)
    assert m.sum() > 50
    gray_o = cv2.cvtColor(opened, cv2.COLOR_BGR2GRAY)[m]
    gray_c = cv2.cvtColor(closed, cv2.COLOR_BGR2GRAY)[m].mean()
    if interior in ("drawn", "painted"):
        # The drawing and the painting: a dark cavity (the painted teeth are a thin band under the upper lip).
        assert gray_o.mean() < gray_c - 40, (gray_o.mean(), gray_c)
    else:
        # A real open mouth is not uniformly dark (on talk1/2/4 the wide-open interior's mean grey is -15..+15 of
        # the closed lips'): it holds bright teeth and a dark cavity. Darker on the whole, with both in it.
        assert gray_o.mean() < gray_c - 10, (gray_o.mean(), gray_c)
        assert np.percentile(gray_o, 90) > gray_c, (np.percentile(gray_o, 90), gray_c)  # teeth
        assert np.percentile(gray_o, 10) < gray_c - 50, (np.percentile(gray_o, 10), gray_c)  # the dark inside


# --- the renderer contract ------------------------------------------------------------------
def test_render_contract_and_errors(yongen_avatar):
    r = CPURenderer()
    assert r.name == "cpu"
    assert r.silence_condition() == MouthState(0.0, 0.0, 0.0)
    frames = r.render(yongen_avatar, [0, 1, 2], [MouthState(0.5), MouthState(0.5, 1.0), MouthState(0.5, 0, 1.0)])
    assert len(frames) == 3
    for f in frames:
        assert f.shape == yongen_avatar.frames[0].shape and f.dtype == np.uint8
    # Same input, same output: nothing random.
    again = r.render(yongen_avatar, [1], [MouthState(0.5, 1.0)])[0]
    assert np.array_equal(again, frames[1])
    with pytest.raises(RenderInputError):
        r.render(yongen_avatar, [0, 1], [MouthState()])
    with pytest.raises(RenderInputError):
        r.render(yongen_avatar, [0], [0.5])
    with pytest.raises(RenderInputError):
        r.render(yongen_avatar, [len(yongen_avatar)], [MouthState()])


def test_width_and_round_change_the_mouth_corners(yongen_avatar):
    r = CPURenderer()
    rig = r._rig(yongen_avatar)
    fr = rig.frame(yongen_avatar, 5)
    base = r.render_face(yongen_avatar, 5, MouthState(0.4))
    wide = r.render_face(yongen_avatar, 5, MouthState(0.4, width=1.0))
    rnd = r.render_face(yongen_avatar, 5, MouthState(0.4, round=1.0))
    assert not np.array_equal(base, wide) and not np.array_equal(base, rnd)
    # Around the mouth corners the spread and rounded mouths differ most from each other.
    c = np.round(fr.pts[[48, 54]]).astype(int)
    diff = np.abs(wide.astype(int) - rnd.astype(int)).sum(axis=2)
    for x, y in c:
        assert diff[y - 4 : y + 5, x - 8 : x + 9].mean() > 10


def test_caches_are_bounded_by_avatar_length(yongen_avatar):
    r = CPURenderer(max_avatars=2)
    n = len(yongen_avatar)
    states = [MouthState(float(k % 7) / 7) for k in range(3 * n)]
    r.render(yongen_avatar, [yongen_avatar.loop_index(k) for k in range(3 * n)], states)
    rig = r._rig(yongen_avatar)
    assert len(rig.frames) <= n
    assert len(rig.alpha) <= n


def test_renderer_does_not_keep_avatars_alive(yongen_avatar):
    import dataclasses
    import gc

    r = CPURenderer(max_avatars=3)
    for _ in range(5):
        r.render(dataclasses.replace(yongen_avatar), [0], [MouthState(0.5)])
    assert r.rig_count() <= 3
    gc.collect()
    assert r.rig_count() == 0  # every avatar above is gone, and so are their rigs


def test_an_avatar_collected_while_the_rig_table_is_locked_does_not_deadlock(yongen_avatar):
    """The collector runs wherever an allocation triggers it, also in a thread holding the renderer's lock; an
    avatar it collects there used to take that lock again from its weak reference's callback: that thread, and
    every render after it, hung."""
    import dataclasses
    import gc
    import threading

    r = CPURenderer()
    doomed = dataclasses.replace(yongen_avatar)
    r.render(doomed, [0], [MouthState(0.5)])
    doomed.extras = {"self": doomed}  # a reference cycle: only the collector frees it
    del doomed
    done = threading.Event()

    def collect_inside_the_lock():
        with r._lock:
            gc.collect()
        done.set()

    threading.Thread(target=collect_inside_the_lock, daemon=True).start()
    assert done.wait(10), "a collection inside the renderer's lock deadlocked"
    assert r.rig_count() == 0
    assert r.render(yongen_avatar, [0], [MouthState(0.5)])[0].shape == yongen_avatar.frames[0].shape


def test_mouth_bank_is_used_only_when_the_avatar_shows_open_shapes(yongen_avatar, sun_avatar):
    r = CPURenderer()
    assert not r._rig(yongen_avatar).bank_enabled  # a closed-mouth painting: warping and drawing carry it
    assert r.source_frames(yongen_avatar, [0, 1], [MouthState(0.9)] * 2) == [None, None]
    # sun.mp4 smiles with its teeth showing in every frame and never opens: no range of shapes to choose from.
    assert not r._rig(sun_avatar).bank_enabled


def _talking(yongen_avatar, n: int = 10):
    """A 'talking' avatar: n yongen frames closed, then the same n frames with the mouth open (made by this
    renderer, with their true landmarks)."""
    import dataclasses

    from workbench.avatars.pipeline import crop_faces

    r = CPURenderer(use_bank=False)
    idx = list(range(n))
    opened = r.render(yongen_avatar, idx, [MouthState(0.8)] * n)
    lms = np.stack([r.target_landmarks(yongen_avatar, i, MouthState(0.8)) for i in idx])
    frames = np.concatenate([yongen_avatar.frames[:n], np.stack(opened)])
    boxes = np.concatenate([yongen_avatar.boxes[:n]] * 2)
    return dataclasses.replace(
        yongen_avatar,
        frames=frames,
        boxes=boxes,
        landmarks=np.concatenate([yongen_avatar.landmarks[:n], lms.astype(np.float32)]),
        has_face=np.ones(2 * n, bool),
        crops=crop_faces(frames, boxes),
        masks=np.concatenate([yongen_avatar.masks[:n]] * 2),
    )


def test_mouth_bank_takes_the_open_mouth_from_the_frame_with_the_same_pose(yongen_avatar):
    """An open target at closed frame i is the mouth of its open twin i + n, pasted at full resolution; a closed
    target keeps frame i's own mouth, pixel for pixel."""
    n = 10
    talking = _talking(yongen_avatar, n)
    r = CPURenderer()
    rig = r._rig(talking)
    assert rig.bank_enabled
    assert rig.bank.open[n:].min() > 0.8 and rig.bank.open[:n].max() < 0.2  # in the avatar's own range
    for i in (0, 4, 9):
        rig.bank.reset()
        j = r.source_frames(talking, [i], [MouthState(1.0)])[0]
        assert j >= n  # an open twin (yongen's head barely moves: any twin has the pose)
        rig.bank.reset()
        assert r.source_frames(talking, [i], [MouthState(0.0)]) == [i]  # its own closed mouth
        rig.bank.reset()
        assert np.array_equal(r.render(talking, [i], [MouthState(0.0)])[0], talking.frames[i])
        # The open mouth is the twin's own pixels (pasted at full resolution), not a drawing.
        rig.bank.reset()
        out = r.render(talking, [i], [MouthState(1.0)])[0]
        placed = r.target_landmarks(talking, i, MouthState(1.0), source=j)  # j's mouth carried onto frame i
        dx, dy = np.round((placed[60:68] - talking.landmarks[j][60:68]).mean(axis=0)).astype(int)
        x0, y0 = (placed[60:68].min(axis=0) + 2).astype(int)
        x1, y1 = (placed[60:68].max(axis=0) - 2).astype(int)
        twin = talking.frames[j][y0 - dy : y1 - dy, x0 - dx : x1 - dx]
        assert np.abs(out[y0:y1, x0:x1].astype(int) - twin).mean() < 6.0


def test_mouth_bank_path_prefers_runs_of_consecutive_source_frames():
    """Viterbi within a call, and the choice carried into the next call that continues the sequence: a target
    that two source frames match equally well stays on the run it is on instead of flickering."""
    from workbench.lipsync.cpu.bank import MouthBank

    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (68, 2)) * 3 + [100, 100]
    base[36:42] = [80, 80]
    base[42:48] = [120, 80]  # eyes 40 px apart
    lms = np.repeat(base[None], 40, axis=0)
    gaps = np.r_[np.linspace(0, 10, 20), np.linspace(0, 10, 20)]  # two identical opening runs
    lms[:, [65, 66, 67], 1] = lms[:, [63, 62, 61], 1] + gaps[:, None]
    bank = MouthBank(lms)
    assert bank.enabled
    targets = [(float(o), 0.0, 0.0) for o in np.linspace(0.1, 0.49, 8)]  # opening as fast as the source does
    path = bank.select(list(range(8)), targets)
    assert all(abs(b - a) <= 1 for a, b in zip(path, path[1:], strict=False))  # one run, no jumps
    nxt = bank.select([8], [(0.55, 0.0, 0.0)])[0]
    assert abs(nxt - path[-1]) <= 1 and (nxt < 20) == (path[-1] < 20)  # carried: continues the same run
    bank.reset()
    assert bank.select([], []) == []


def test_change_only_paste_keeps_untouched_pixels_at_full_resolution(yongen_avatar):
    from workbench.lipsync.compositor import Compositor

    comp = Compositor(yongen_avatar)
    crop = yongen_avatar.crops[4]
    assert np.array_equal(comp.paste_change(4, crop, crop), yongen_avatar.frames[4])
    face = crop.copy()
    face[150:170, 100:140] = 255
    out = comp.paste_change(4, face, crop, (100, 150, 140, 170))
    changed = np.argwhere(np.any(out != yongen_avatar.frames[4], axis=2))
    assert len(changed) > 100
    x1, y1, x2, y2 = yongen_avatar.boxes[4]
    sx, sy = (x2 - x1) / 256, (y2 - y1) / 256
    assert changed[:, 0].min() >= y1 + 149 * sy - 2 and changed[:, 0].max() <= y1 + 171 * sy + 2
    assert changed[:, 1].min() >= x1 + 99 * sx - 2 and changed[:, 1].max() <= x1 + 141 * sx + 2


def test_opening_is_rate_limited_except_at_a_plosive_release():
    from workbench.lipsync.cpu.frontend import MouthParams

    prm = MouthParams()
    vowel = _vowel(700, 1200, 0.4, level=0.15)
    # A vowel out of silence, a pause, then a burst of noise (a /p/ release) straight into the vowel.
    burst = (0.15 * np.random.default_rng(2).standard_normal(SAMPLE_RATE // 50)).astype(np.float32)
    gap = np.zeros(SAMPLE_RATE // 2, np.float32)
    audio = np.concatenate([gap, vowel, gap, burst, vowel, gap])
    o = _states_array(MouthFrontend().process(audio))[:, 0]
    step = np.diff(o)
    assert step.min() >= -prm.close_rate - 1e-9  # closing is never a snap shut
    assert step.max() <= prm.plosive_rate + 1e-9
    assert o.max() > 0.6 and o[-3:].max() < 0.05  # it still opens wide and silence closes it
    # A vowel that swells in over 200 ms (no release) opens no faster than open_rate per frame.
    fade = np.minimum(1.0, np.arange(len(vowel)) / (0.2 * SAMPLE_RATE)).astype(np.float32)
    swell = _states_array(MouthFrontend().process(np.concatenate([gap, vowel * fade, gap])))[:, 0]
    assert np.diff(swell).max() <= prm.open_rate + 1e-9 and swell.max() > 0.6
    # Silence after speech closes the mouth over several frames, not in one.
    end = len(gap) // SAMPLES_PER_FRAME + len(vowel) // SAMPLES_PER_FRAME
    closing = o[end - 1 : end + 8]
    assert (closing > 0.05).sum() >= 2


# --- realism against the source's own frames ----------------------------------------------------
def _redetect(frames, rects, predictor):
    import cv2
    import dlib

    out = []
    for frame, (x1, y1, x2, y2) in zip(frames, rects, strict=True):
        s = predictor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), dlib.rectangle(int(x1), int(y1), int(x2), int(y2)))
        out.append(np.array([(p.x, p.y) for p in s.parts()], np.float64))
    return out


def _realism(avatar, audio, predictor, n_frames: int):
    """Colour share and sharpness of the rendered mouth against the source's, and sync, all on dlib's
    re-detection (palette from the even source frames, the source's own score on the odd ones)."""
    from workbench.evaluation import mouth_quality as mq

    # The predictor's face box from the avatar's landmarks (jaw and brows): no detector pass, and the same box
    # for a source frame and every frame rendered from it.
    lm = avatar.landmarks[:, :27]
    rects = np.concatenate([lm.min(axis=1), lm.max(axis=1)], axis=1).round().astype(int)
    src = _redetect(avatar.frames, rects, predictor)
    palette = mq.build_palette(avatar.frames[0::2], src[0::2])
    src_share = mq.colour_share(avatar.frames[1::2], src[1::2], palette)["share"]
    src_sharp = mq.mean_sharpness(avatar.frames, src)
    r = CPURenderer()
    states = r.new_frontend().process(audio)[:n_frames]
    idx = [avatar.loop_index(k) for k in range(len(states))]
    frames = []
    for b in range(0, len(states), 8):
        frames += r.render(avatar, idx[b : b + 8], states[b : b + 8])
    lms = _redetect(frames, [rects[i] for i in idx], predictor)
    share = mq.colour_share(frames, lms, palette)
    sharp = mq.mean_sharpness(frames, lms)
    c = _xcorr(measure_openness(np.asarray(lms)), _envelope(audio, len(frames)))
    best = max(c, key=c.get)
    return share["share"] / src_share, sharp / src_sharp, best, c[best], share["open_frames"]


@pytest.fixture(scope="module")
def talk3_avatar(samples_dir, dlib_detector):
    """A real talking face (calibration/talk3.mp4, held out from the renderer's design), first 50 frames."""
    from workbench.avatars.model import PrepParams
    from workbench.avatars.pipeline import prepare_avatar

    return prepare_avatar(samples_dir / "calibration" / "talk3.mp4", PrepParams(max_frames=50), dlib_detector)


def test_real_talking_face_speaks_with_its_own_mouth(talk3_avatar, eng_audio, predictor):
    share, sharp, lag, corr, n_open = _realism(talk3_avatar, eng_audio[: 4 * SAMPLE_RATE], predictor, 100)
    assert CPURenderer()._rig(talk3_avatar).bank_enabled
    # Targets 0.8 / 0.85 of the source (issue 13). This 50-frame avatar is a smaller bank than the bench's whole
    # clip (sharpness 0.96 there; 0.84 here), so the test holds sharpness to 0.8.
    assert n_open > 20
    assert share >= 0.8, f"inner-mouth colour share {share:.2f} of the source's"
    assert sharp >= 0.8, f"mouth sharpness {sharp:.2f} of the source's"
    assert abs(lag) <= 1 and corr >= 0.5, f"sync: best lag {lag}, correlation {corr:.2f}"


def test_smiling_face_that_never_opens_keeps_its_own_teeth(sun_avatar, eng_audio, predictor):
    share, sharp, lag, corr, n_open = _realism(sun_avatar, eng_audio[: 4 * SAMPLE_RATE], predictor, 100)
    assert n_open > 20
    assert share >= 0.8, f"inner-mouth colour share {share:.2f} of the source's"
    assert sharp >= 0.85, f"mouth sharpness {sharp:.2f} of the source's"
    assert abs(lag) <= 1 and corr >= 0.5, f"sync: best lag {lag}, correlation {corr:.2f}"


def test_silence_keeps_the_resting_smile(sun_avatar):
    """sun.mp4 rests with her teeth showing: a closed target leaves the mouth as the source has it."""
    r = CPURenderer()
    rig = r._rig(sun_avatar)
    i = int(np.argmin(rig.openness))  # at or below the resting opening: nothing to move
    assert np.array_equal(r.render(sun_avatar, [i], [MouthState()])[0], sun_avatar.frames[i])


def test_engine_uses_the_cpu_renderer_without_musetalk_weights(tmp_path):
    from workbench.config import Settings
    from workbench.engine import Engine

    settings = Settings(models_dir=tmp_path / "models", cache_dir=tmp_path / "cache")
    engine = Engine(settings)
    assert engine.resolved_renderer_name() == "cpu"
    assert isinstance(engine.renderer, CPURenderer)
    assert isinstance(Engine(settings, renderer="cpu").renderer, CPURenderer)
