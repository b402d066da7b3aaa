"""audio_features.py: MuseTalk's per-frame Whisper windows, streaming == whole file, and the input path."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from testkit.models import make_tiny_models
from workbench.config import AUDIO_TOKENS_PER_FRAME, SAMPLE_RATE, SAMPLES_PER_FRAME, WHISPER_DIM
from workbench.lipsync.musetalk.whisper_features import (
    AudioInputError,
    BlockParams,
    WhisperEncoderRunner,
    WhisperFrontend,
    load_audio_16k,
    silence_condition,
    to_mono_16k,
    whisper_conditions,
)

# few blocks keep the random-init Whisper-tiny encoder (~0.3 s per 30 s window on 2 cores) affordable
FAST = BlockParams(hop_frames=10, right_frames=3)


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> WhisperEncoderRunner:
    models = make_tiny_models(tmp_path_factory.mktemp("af") / "models")
    return WhisperEncoderRunner.from_dir(models / "whisper")


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonics with noise: enough structure for features to vary over time."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    sig = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 540, 1100), 1))
    return (0.2 * env * sig + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def musetalk_reference(runner: WhisperEncoderRunner, audio: np.ndarray) -> np.ndarray:
    """MuseTalk's get_whisper_chunk for a clip shorter than 30 s, written from its description: encode the clip
    as one 30 s window, stack the 5 hidden states, keep floor(n/320) steps, zero-pad 4 steps before and 12
    after, take steps [2i, 2i+10) of the padded sequence for frame i < floor(n/640), flatten (time, layer)."""
    hs = runner.encode([audio])[0]  # (1500, 5, 384)
    n = audio.size
    hs = hs[: n // 320]
    padded = np.concatenate([np.zeros_like(hs[:4]), hs, np.zeros((12, *hs.shape[1:]), hs.dtype)])
    return np.stack([padded[2 * i : 2 * i + 10].reshape(50, 384) for i in range(n // 640)])


def test_matches_musetalk_indexing_when_one_block_covers_the_clip(runner):
    audio = speech_like(1.23)
    one_block = BlockParams(hop_frames=50, right_frames=0)  # 2 s: the whole clip in one window
    ours = whisper_conditions(runner, audio, one_block)
    ref = musetalk_reference(runner, audio)
    assert ours.shape == ref.shape == (audio.size // SAMPLES_PER_FRAME, AUDIO_TOKENS_PER_FRAME, WHISPER_DIM)
    np.testing.assert_array_equal(ours, ref)
    # the first frame's two leading frames are MuseTalk's zero padding, the rest is real
    assert np.all(ours[0, :20] == 0) and np.any(ours[0, 20:] != 0)
    assert np.all(ours[-1, -10:] == 0)  # past the end of the audio


def test_shapes_and_dtype(runner):
    audio = speech_like(0.5)
    conds = whisper_conditions(runner, audio, FAST)
    assert conds.shape == (audio.size // 640, 50, 384) and conds.dtype == np.float32
    assert whisper_conditions(runner, np.zeros(100, np.float32), FAST).shape == (0, 50, 384)


def test_streaming_equals_whole_file(runner):
    audio = speech_like(1.2, seed=1)
    whole = whisper_conditions(runner, audio, FAST)
    fe = WhisperFrontend(runner, FAST)
    out, pos = [], 0
    for n in [0, 1, 17, 640, 5000, 1000, 3, 9000] * 10:
        out += fe.push(audio[pos : pos + n])
        pos += n
    out += fe.push(audio[pos:]) + fe.flush()
    assert len(out) == len(whole) == audio.size // 640
    np.testing.assert_allclose(np.stack(out), whole, atol=1e-5, rtol=0)
    # several blocks per encoder call: the same up to float rounding
    batched = np.stack(WhisperFrontend(runner, FAST, max_batch=4).process(audio))
    np.testing.assert_allclose(batched, whole, atol=1e-5, rtol=0)


def test_default_params_stream_equal_and_emit_on_time(runner):
    params = BlockParams()
    assert params.lookahead_frames == 6  # 2 frames of MuseTalk padding + up to 1 for the hop + 3 of context
    assert params.lookahead_ms == (200.0, 240.0)
    audio = speech_like(0.32, seed=3)
    whole = whisper_conditions(runner, audio, params)
    fe = WhisperFrontend(runner, params)
    assert fe.lookahead_frames == 6
    ready = [params.frame_ready_at(i) for i in range(len(whole))]
    got = []
    for need in sorted(set(r for r in ready if r <= audio.size)):
        got += fe.push(audio[fe.samples_received : need - 1])
        assert len(got) == sum(r <= need - 1 for r in ready)  # one sample short: the frame waits
        got += fe.push(audio[need - 1 : need])
        assert len(got) == sum(r <= need for r in ready)  # and comes out with the sample that completes it
    got += fe.push(audio[fe.samples_received :]) + fe.flush()
    np.testing.assert_allclose(np.stack(got), whole, atol=1e-5, rtol=0)


def test_flush_resets_for_the_next_stream(runner):
    audio = speech_like(0.3, seed=5)
    fe = WhisperFrontend(runner, FAST)
    a = fe.process(audio)
    b = fe.process(audio)
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert fe.frames_emitted == 0 and fe.samples_received == 0


def test_int16_push_equals_float(runner):
    audio = speech_like(0.3, seed=7)
    pcm = np.clip(audio * 32768, -32768, 32767).astype(np.int16)
    a = whisper_conditions(runner, pcm.astype(np.float32) / 32768.0, FAST)
    b = np.stack(WhisperFrontend(runner, FAST).process(pcm))
    np.testing.assert_array_equal(a, b)


def test_silence_condition(runner):
    s = silence_condition(runner, FAST)
    assert s.shape == (50, 384) and s.dtype == np.float32 and np.all(s != 0)  # no zero padding inside
    ref = whisper_conditions(runner, np.zeros(SAMPLE_RATE * 6 // 10, np.float32), FAST)  # frame i is whole
    i = 2 + FAST.hop_frames
    np.testing.assert_allclose(s, ref[i], atol=1e-5)


def test_block_params_validation():
    with pytest.raises(ValueError):
        BlockParams(hop_frames=0)
    with pytest.raises(ValueError, match="divide"):
        BlockParams(hop_frames=8)  # blocks would straddle the reference's 30 s segments
    assert BlockParams(hop_frames=1, right_frames=0).lookahead_frames == 2  # MuseTalk's own look-ahead only


def test_push_rejects_bad_audio(runner):
    fe = WhisperFrontend(runner, FAST)
    with pytest.raises(AudioInputError, match="1-D"):
        fe.push(np.zeros((100, 2), np.float32))
    with pytest.raises(AudioInputError, match="NaN"):
        fe.push(np.array([0.0, np.nan], np.float32))


# --- input conversion ---------------------------------------------------------------------------


def test_48k_stereo_to_16k_mono(tmp_path):
    sr = 48_000
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, left], axis=1).astype(np.float32)  # (N, 2)
    mono = to_mono_16k(stereo, sr)
    assert mono.dtype == np.float32 and mono.ndim == 1 and mono.size == SAMPLE_RATE
    # the tone survives resampling: its spectrum peaks at 440 Hz
    spec = np.abs(np.fft.rfft(mono))
    assert abs(np.argmax(spec) * SAMPLE_RATE / mono.size - 440) < 2
    # channels-first input is understood the same way
    np.testing.assert_allclose(to_mono_16k(stereo.T, sr), mono, atol=1e-6)
    # and through a file: 48 kHz stereo 16-bit WAV
    path = tmp_path / "stereo48k.wav"
    sf.write(path, stereo, sr, subtype="PCM_16")
    from_file = load_audio_16k(path)
    assert from_file.shape == mono.shape
    np.testing.assert_allclose(from_file, mono, atol=2e-3)


def test_int16_and_opposite_channels():
    pcm = np.stack([np.full(480, 16384, np.int16), np.full(480, -16384, np.int16)], axis=1)
    mono = to_mono_16k(pcm, 48_000)
    assert np.abs(mono).max() < 1e-3  # opposite channels cancel


@pytest.mark.parametrize(
    ("audio", "match"),
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros((2, 2, 2), np.float32), "1-D or 2-D"),
        (np.array([0.0, np.inf]), "NaN or infinite"),
    ],
)
def test_bad_input_raises(audio, match):
    with pytest.raises(AudioInputError, match=match):
        to_mono_16k(audio, 16_000)


def test_unreadable_files(tmp_path):
    with pytest.raises(AudioInputError, match="not found"):
        load_audio_16k(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wav")
    with pytest.raises(AudioInputError, match="cannot read"):
        load_audio_16k(junk)


def test_audio_track_of_a_video(tmp_path):
    """Formats libsndfile cannot read (AAC in MP4) are decoded through FFmpeg's libraries."""
    import av

    sr = 44_100
    t = np.arange(sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    path = tmp_path / "tone.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    audio = load_audio_16k(path)
    assert abs(audio.size - SAMPLE_RATE) < 0.1 * SAMPLE_RATE  # codec priming may add a few ms
    spec = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spec) * SAMPLE_RATE / audio.size - 300) < 3
    silent_video = tmp_path / "video_only.mp4"
    with av.open(str(silent_video), "w") as out:
        vs = out.add_stream("mpeg4", rate=25)
        vs.width, vs.height = 32, 32
        img = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for packet in vs.encode(img):
            out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
    with pytest.raises(AudioInputError, match="no audio track"):
        load_audio_16k(silent_video)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # librosa's audioread import, on the reference side
def test_sample_48k_stereo_loads_like_musetalk(samples_dir):
    """yongen.wav (48 kHz stereo) comes in as MuseTalk reads it: librosa.load(path, sr=16000)."""
    import librosa

    ours = load_audio_16k(samples_dir / "yongen.wav")
    ref, sr = librosa.load(samples_dir / "yongen.wav", sr=SAMPLE_RATE)
    assert sr == SAMPLE_RATE and ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-4)
