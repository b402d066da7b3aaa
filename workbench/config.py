"""One place for every fact and setting.

Constants are facts of the MuseTalk model and of the transports; they never change at run time.
`Settings` holds what a user may change, from environment variables (prefix `WORKBENCH_`) or CLI flags.
Only the entry points (app.py, the CLI, an evaluation worker process) build one; everything else is handed it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# --- facts of the model and the media -------------------------------------------------------
FPS = 25  # MuseTalk is trained at 25 fps; every video is resampled to it
SAMPLE_RATE = 16_000  # Whisper and SyncNet both take 16 kHz mono
REALTIME_SAMPLE_RATE = 24_000  # OpenAI Realtime PCM16 in and out
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 samples of 16 kHz audio per video frame
CROP_SIZE = 256  # face crop fed to the VAE
LATENT_SIZE = CROP_SIZE // 8  # 32x32 latents
WHISPER_HZ = 50  # Whisper encoder output rate (one step per 20 ms)
WHISPER_STEPS_PER_FRAME = WHISPER_HZ // FPS  # 2
WHISPER_LAYERS = 5  # embedding output + 4 encoder layers of whisper-tiny
WHISPER_DIM = 384
AUDIO_PAD_LEFT = 2  # MuseTalk's audio_padding_length_left, in video frames
AUDIO_PAD_RIGHT = 2  # audio_padding_length_right
AUDIO_TOKENS_PER_FRAME = (AUDIO_PAD_LEFT + 1 + AUDIO_PAD_RIGHT) * WHISPER_STEPS_PER_FRAME * WHISPER_LAYERS  # 50
VAE_SCALING_FACTOR = 0.18215
N_LANDMARKS = 68
DEFAULT_BATCH_SIZE = 8  # frames per renderer call: MuseTalk's realtime default

ParsingMode = Literal["jaw", "raw"]
RendererName = Literal["auto", "cpu", "musetalk"]
DetectorName = Literal["dlib", "dwpose"]
MaskSource = Literal["auto", "landmarks", "bisenet"]
# The same choices as tuples, for CLI help, radio buttons and validation: one list, read everywhere.
PARSING_MODES: tuple[str, ...] = get_args(ParsingMode)
RENDERERS: tuple[str, ...] = get_args(RendererName)
DETECTORS: tuple[str, ...] = get_args(DetectorName)
MASK_SOURCES: tuple[str, ...] = get_args(MaskSource)


class Settings(BaseSettings):
    """User settings; every field can be set as WORKBENCH_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="WORKBENCH_", env_file=".env", extra="ignore")

    models_dir: Path = Field(default=Path("models"), description="MuseTalk's models/ layout")
    cache_dir: Path = Field(default=Path("cache"), description="prepared avatars and detections")
    runs_dir: Path = Field(default=Path("runs"), description="evaluation run folders")
    samples_dir: Path | None = Field(default=None, description="sample media; default: samples/ or ../shared/samples")
    renderer: RendererName = "auto"
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', …")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=64)
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    max_upload_mb: int = 200
    max_upload_seconds: float = 60.0
    # OpenAI Realtime; the key is read from OPENAI_API_KEY too, and never logged or cached.
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    realtime_model: str = "gpt-realtime"
    realtime_voice: str = "marin"
    # ICE servers for WebRTC as JSON (a Space needs a TURN server; localhost needs none)
    ice_servers_json: str = "[]"
