"""Whisper-tiny audio features for MuseTalk, computed in fixed blocks so streaming equals whole-file.

What MuseTalk conditions on (musetalk/utils/audio_processor.py, `get_whisper_chunk`): the Whisper-tiny
encoder's hidden states, embedding output + 4 layers = 5 x 384 per step, 50 steps per second. Video frame i
(25 fps) takes the 10 steps [2(i-2), 2(i+3)), i.e. its own two steps plus AUDIO_PAD_LEFT=2 frames before and
AUDIO_PAD_RIGHT=2 after; steps before the start or past the end of the audio (floor(n/320) steps exist) are
zeros; the (10, 5, 384) window is flattened time-major to (50, 384). A clip has floor(n/640) frames.

Why blocks. Whisper's encoder takes exactly 30 s of log-mel (HF pads every input to 30 s) and attends over
all of it, and the log-mel itself is clamped relative to the loudest bin of the whole window, so a step's
features depend on everything in its window and on its *position* in it (learned positional embeddings).
MuseTalk (`get_audio_feature`) cuts the file into consecutive 30 s segments [s*30 s, (s+1)*30 s), encodes
each zero-padded to 30 s and concatenates: step t sits at encoder position t mod 1500 of segment t // 1500.
A step encoded at any other position gets features the UNet was never trained on.

Here every feature step belongs to exactly one *block*, and every block lies inside one reference segment:

    block b owns the steps of audio [b*H, (b+1)*H)                                 H = hop
    and is computed from the window audio[S : min((b+1)*H + R, S + 30 s)]           R = right context
    where S = the start of the 30 s segment holding the block,                      zero-padded to 30 s

so each step is encoded at the position the reference gives it, with all of its segment's past as context
(the look-back never leaves the segment, as in the reference). H must divide the segment (750 frames).

- `EXACT` (H = one whole segment, R = 0) *is* the reference computation: each window is the full segment.
  File rendering, the tuning grid and evaluation cases use it (`exact_conditions`).
- Streaming (the defaults, H = 2 frames = 80 ms, R = 3 frames = 120 ms) sees zeros where the rest of the
  segment has not arrived yet; what that costs against the exact computation is measured in
  bench/musetalk_streaming_cost.py and stated in the README. The realtime path uses it.

The whole-file form of a frontend is the same computation (`process` = push everything, then flush), so
chunked streaming gives the same features as the file in one piece for the same parameters, for any chunking.

Trade-offs of (H, R) for streaming:
- Latency: frame i can be emitted once its last step's block is complete: AUDIO_PAD_RIGHT frames of
  MuseTalk's own look-ahead, plus up to H - 1 frames waiting for the block to fill, plus R.
  The defaults give 5-6 frames = 200-240 ms of look-ahead.
- Cost: every block is one full 30 s encoder pass whatever H is, so cost per second of audio is
  (encode time) / H: 0.27-0.37 s per block on 2 CPU cores, so 4-5 s of compute per second of audio at the
  defaults; far from real time on a CPU, where MuseTalk's UNet + VAE decode is slower still. On a GPU a
  block is a few ms. A bigger H is cheaper and later.
- Quality: R is what a step sees of the future beyond its block (Whisper's encoder is bidirectional).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.config import (
    AUDIO_PAD_LEFT,
    AUDIO_PAD_RIGHT,
    AUDIO_TOKENS_PER_FRAME,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    WHISPER_DIM,
    WHISPER_HZ,
    WHISPER_LAYERS,
    WHISPER_STEPS_PER_FRAME,
)
from workbench.lipsync.base import AudioFrontend

# torch and transformers are imported inside functions: importing this module must not load them
# (the CPU renderer and the app's CPU path import the lipsync packages and never need torch).
log = logging.getLogger(__name__)

SAMPLES_PER_STEP = SAMPLE_RATE // WHISPER_HZ  # 320
WHISPER_WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's fixed input
STEPS_PER_WINDOW = 30 * WHISPER_HZ  # 1500 encoder positions
SEGMENT_FRAMES = WHISPER_WINDOW_SAMPLES // SAMPLES_PER_FRAME  # 750 video frames per reference segment
WINDOW_STEPS = (AUDIO_PAD_LEFT + 1 + AUDIO_PAD_RIGHT) * WHISPER_STEPS_PER_FRAME  # 10 steps per video frame


class AudioInputError(ValueError):
    """Audio that cannot be turned into features (wrong shape, not finite, unknown sample rate, unreadable)."""


# --- input --------------------------------------------------------------------------------------


def to_mono_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 mono 16 kHz from an array (N,), (N, C) or (C, N) of floats or integer PCM at `sample_rate`.

    Channels are averaged, then resampled with librosa's default (soxr HQ), as `librosa.load(sr=16000)` does.
    """
    a = np.asarray(audio)
    if a.size == 0:
        raise AudioInputError("audio is empty")
    if a.ndim not in (1, 2):
        raise AudioInputError(f"audio must be 1-D or 2-D (samples, channels), got shape {a.shape}")
    scale = 1.0 if np.issubdtype(a.dtype, np.floating) else _int_scale(a.dtype)
    a = a.astype(np.float64) / scale
    if a.ndim == 2:
        a = (a if a.shape[0] >= a.shape[1] else a.T).mean(axis=1)  # channels are the short axis
    if not np.all(np.isfinite(a)):
        raise AudioInputError("audio contains NaN or infinite samples")
    if sample_rate <= 0:
        raise AudioInputError(f"invalid sample rate {sample_rate}")
    a = a.astype(np.float32)
    if sample_rate != SAMPLE_RATE:
        import librosa

        a = librosa.resample(a, orig_sr=sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)
    return a


def _int_scale(dtype: np.dtype) -> float:
    if not np.issubdtype(dtype, np.integer):
        raise AudioInputError(f"unsupported audio dtype {dtype}")
    return float(np.iinfo(dtype).max) + 1.0


def load_audio_16k(path: Path | str) -> np.ndarray:
    """Read an audio file, or the audio track of a video, as float32 mono 16 kHz."""
    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"audio file not found: {path}")
    try:
        import soundfile as sf

        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception:  # not a format libsndfile reads (mp4, m4a, ...): decode with FFmpeg's libraries
        data, sr = _decode_with_av(path)
    if data.shape[0] == 0:
        raise AudioInputError(f"{path.name} has no audio samples")
    return to_mono_16k(data, int(sr))


def _decode_with_av(path: Path) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 at the file's own rate, so resampling stays librosa's as in MuseTalk."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioInputError(f"{path.name} has no audio track")
            stream = container.streams.audio[0]
            parts = []
            for frame in container.decode(stream):
                a = frame.to_ndarray()
                if not frame.format.is_planar:  # packed: (1, samples * channels)
                    a = a.reshape(-1, len(frame.layout.channels)).T
                if np.issubdtype(a.dtype, np.integer):
                    a = a.astype(np.float32) / _int_scale(a.dtype)
                parts.append(a.astype(np.float32, copy=False))
            sr = stream.rate
    except AudioInputError:
        raise
    except Exception as e:
        raise AudioInputError(f"cannot read audio from {path.name}: {type(e).__name__}: {e}") from e
    if not parts:
        raise AudioInputError(f"{path.name} has no audio samples")
    return np.concatenate(parts, axis=1).T, int(sr)


def _as_stream_chunk(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim != 1:
        raise AudioInputError(f"push() takes 1-D 16 kHz mono audio, got shape {a.shape}; use to_mono_16k first")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / _int_scale(a.dtype)
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise AudioInputError("audio contains NaN or infinite samples")
    return a


# --- the encoder --------------------------------------------------------------------------------


class WhisperEncoderRunner:
    """Whisper feature extractor + encoder: 30 s windows in, (B, 1500, 5, 384) float32 hidden states out."""

    def __init__(self, encoder, feature_extractor, device, dtype):
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        self.device = device
        self.dtype = dtype

    @classmethod
    def from_dir(cls, whisper_dir: Path | str, device="cpu", dtype=None) -> WhisperEncoderRunner:
        """Load `models/whisper` (config.json, weights, preprocessor_config.json) as MuseTalk does."""
        import torch
        from transformers import WhisperFeatureExtractor, WhisperModel

        dtype = dtype or torch.float32
        whisper_dir = Path(whisper_dir)
        fe = WhisperFeatureExtractor.from_pretrained(whisper_dir)
        model = WhisperModel.from_pretrained(whisper_dir, dtype=dtype)
        encoder = model.encoder.to(device=device).eval().requires_grad_(False)
        del model  # the text decoder is never used
        if encoder.config.d_model != WHISPER_DIM or len(encoder.layers) + 1 != WHISPER_LAYERS:
            raise ValueError(
                f"{whisper_dir} is not Whisper-tiny shaped: d_model {encoder.config.d_model}, "
                f"{len(encoder.layers)} layers (MuseTalk needs {WHISPER_DIM} and {WHISPER_LAYERS - 1})"
            )
        return cls(encoder, fe, torch.device(device), dtype)

    def encode(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Hidden states of each window (<= 30 s of 16 kHz audio, zero-padded to 30 s by the extractor)."""
        import torch

        # With a GPU the log-mel is computed there too, leaving the CPU to paste-back and encoding.
        fe_device = "cuda" if self.device.type == "cuda" else "cpu"
        mel = self.feature_extractor(
            list(windows), sampling_rate=SAMPLE_RATE, return_tensors="pt", device=fe_device
        ).input_features
        with torch.inference_mode():
            out = self.encoder(mel.to(self.device, self.dtype), output_hidden_states=True)
            hs = torch.stack(out.hidden_states, dim=2)  # (B, 1500, 5, 384)
        return hs.float().cpu().numpy()


# --- blocks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockParams:
    """How audio is cut into encoder blocks, in video frames (640 samples each). See the module docstring."""

    hop_frames: int = 2  # H: new audio per encoder pass
    right_frames: int = 3  # R: future context in each window (capped at the end of the 30 s segment)

    def __post_init__(self):
        if self.hop_frames < 1 or self.right_frames < 0:
            raise ValueError(f"invalid block parameters {self}")
        if SEGMENT_FRAMES % self.hop_frames:
            raise ValueError(
                f"hop_frames must divide the reference's 30 s segment ({SEGMENT_FRAMES} frames) so that no block "
                f"straddles two segments: {self}"
            )

    @property
    def hop(self) -> int:
        return self.hop_frames * SAMPLES_PER_FRAME

    @property
    def right(self) -> int:
        return self.right_frames * SAMPLES_PER_FRAME

    @property
    def hop_steps(self) -> int:
        return self.hop_frames * WHISPER_STEPS_PER_FRAME

    @property
    def exact(self) -> bool:
        """True when every window is a whole reference segment: the reference computation itself."""
        return self.hop_frames == SEGMENT_FRAMES

    def window(self, b: int) -> tuple[int, int]:
        """Sample range [start, end) of block b's encoder window: from the start of its 30 s segment."""
        start = (b * self.hop) // WHISPER_WINDOW_SAMPLES * WHISPER_WINDOW_SAMPLES
        return start, min((b + 1) * self.hop + self.right, start + WHISPER_WINDOW_SAMPLES)

    def frame_ready_at(self, i: int) -> int:
        """Samples that must have arrived before frame i can be emitted (streaming)."""
        last_step = (i + AUDIO_PAD_RIGHT + 1) * WHISPER_STEPS_PER_FRAME - 1
        return self.window(last_step // self.hop_steps)[1]

    @property
    def lookahead_frames(self) -> int:
        """Worst-case audio beyond a frame's own end needed before it is emitted, in frames."""
        worst = max(self.frame_ready_at(i) - (i + 1) * SAMPLES_PER_FRAME for i in range(self.hop_frames))
        return -(-worst // SAMPLES_PER_FRAME)

    @property
    def lookahead_ms(self) -> tuple[float, float]:
        """(best, worst) look-ahead in milliseconds over a hop's worth of frames."""
        la = [self.frame_ready_at(i) - (i + 1) * SAMPLES_PER_FRAME for i in range(self.hop_frames)]
        return 1000 * min(la) / SAMPLE_RATE, 1000 * max(la) / SAMPLE_RATE


# The reference computation: one block per 30 s segment, nothing beyond it (musetalk/utils/audio_processor.py).
EXACT = BlockParams(hop_frames=SEGMENT_FRAMES, right_frames=0)


class WhisperFrontend(AudioFrontend):
    """Incremental MuseTalk audio conditions: (50, 384) float32 per video frame, in frame order.

    `push` any chunking of 16 kHz mono audio; every frame whose look-ahead is complete comes out at once.
    `flush` ends the stream (zero padding at the end, as MuseTalk) and resets the frontend for a new one.
    Blocks are encoded one per encoder call by default: a GPU may round a batch differently from a single
    window, and a stream sees single windows. `max_batch` > 1 trades that bit-exactness for throughput.
    """

    def __init__(self, runner: WhisperEncoderRunner, params: BlockParams | None = None, max_batch: int = 1):
        self.runner = runner
        self.params = params or BlockParams()
        self.max_batch = max(1, int(max_batch))
        self.lookahead_frames = self.params.lookahead_frames
        self._reset()

    def _reset(self) -> None:
        self._audio = np.zeros(0, np.float32)  # received audio from absolute sample `_audio_at`
        self._audio_at = 0
        self._received = 0
        self._next_block = 0
        self._steps = np.zeros((0, WHISPER_LAYERS, WHISPER_DIM), np.float32)  # computed steps from `_steps_at`
        self._steps_at = 0
        self._next_frame = 0

    @property
    def frames_emitted(self) -> int:
        return self._next_frame

    @property
    def samples_received(self) -> int:
        return self._received

    def push(self, audio: np.ndarray) -> list[np.ndarray]:
        a = _as_stream_chunk(audio)
        if a.size:
            self._audio = np.concatenate([self._audio, a])
            self._received += a.size
        p = self.params
        ready = []
        while p.window(self._next_block + len(ready))[1] <= self._received:
            ready.append(self._next_block + len(ready))
        self._compute(ready)
        out = []
        while p.frame_ready_at(self._next_frame) <= self._received:
            out.append(self._condition(self._next_frame, None))
            self._next_frame += 1
        self._trim()
        return out

    def flush(self) -> list[np.ndarray]:
        n = self._received
        n_steps = n // SAMPLES_PER_STEP  # MuseTalk keeps floor(n / 320) steps ...
        n_frames = n // SAMPLES_PER_FRAME  # ... and floor(n / 640) frames
        hs = self.params.hop_steps
        last_block = -(-n_steps // hs)  # blocks that own at least one kept step
        self._compute(list(range(self._next_block, last_block)))
        out = [self._condition(i, n_steps) for i in range(self._next_frame, n_frames)]
        self._reset()
        return out

    def _compute(self, blocks: list[int]) -> None:
        p = self.params
        for k in range(0, len(blocks), self.max_batch):
            group = blocks[k : k + self.max_batch]
            windows, offsets = [], []
            for b in group:
                start, end = p.window(b)
                lo, hi = start - self._audio_at, min(end, self._received) - self._audio_at
                if lo < 0:
                    raise RuntimeError("audio needed for a block was already dropped")  # an internal invariant
                windows.append(self._audio[lo:hi])
                offsets.append((b * p.hop - start) // SAMPLES_PER_STEP)
            hidden = self.runner.encode(windows)
            new = [hidden[j, o : o + p.hop_steps] for j, o in enumerate(offsets)]
            self._steps = np.concatenate([self._steps, *new])
            self._next_block = group[-1] + 1

    def _condition(self, i: int, n_steps: int | None) -> np.ndarray:
        """MuseTalk's window for frame i; `n_steps` (end of stream) zeroes the steps past the audio."""
        lo = (i - AUDIO_PAD_LEFT) * WHISPER_STEPS_PER_FRAME
        win = np.zeros((WINDOW_STEPS, WHISPER_LAYERS, WHISPER_DIM), np.float32)
        first, last = max(lo, 0), lo + WINDOW_STEPS
        if n_steps is not None:
            last = min(last, n_steps)
        if last > first:
            win[first - lo : last - lo] = self._steps[first - self._steps_at : last - self._steps_at]
        return win.reshape(AUDIO_TOKENS_PER_FRAME, WHISPER_DIM)

    def _trim(self) -> None:
        keep_audio_from = self.params.window(self._next_block)[0]
        if keep_audio_from > self._audio_at:
            self._audio = self._audio[keep_audio_from - self._audio_at :]
            self._audio_at = keep_audio_from
        keep_steps_from = max(0, (self._next_frame - AUDIO_PAD_LEFT) * WHISPER_STEPS_PER_FRAME)
        if keep_steps_from > self._steps_at:
            self._steps = self._steps[keep_steps_from - self._steps_at :]
            self._steps_at = keep_steps_from


def whisper_conditions(
    runner: WhisperEncoderRunner, audio16k: np.ndarray, params: BlockParams | None = None
) -> np.ndarray:
    """Whole-file conditions (T, 50, 384) float32, T = floor(len / 640), with `params` (default: streaming)."""
    conds = WhisperFrontend(runner, params).process(audio16k)
    if not conds:
        return np.zeros((0, AUDIO_TOKENS_PER_FRAME, WHISPER_DIM), np.float32)
    return np.stack(conds)


def exact_conditions(runner: WhisperEncoderRunner, audio16k: np.ndarray) -> np.ndarray:
    """The reference's conditions (T, 50, 384): whole 30 s segments, as `get_audio_feature` + `get_whisper_chunk`."""
    return whisper_conditions(runner, audio16k, EXACT)


def silence_condition(runner: WhisperEncoderRunner, params: BlockParams | None = None) -> np.ndarray:
    """The condition of a frame deep inside digital silence (no zero padding in its window)."""
    params = params or BlockParams()
    i = AUDIO_PAD_LEFT + params.hop_frames  # away from the stream start's zero padding
    n = params.frame_ready_at(i)  # and with its look-ahead complete, so flush pads nothing into it
    conds = WhisperFrontend(runner, params).push(np.zeros(n, np.float32))
    return conds[i]
