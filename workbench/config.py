"""One place for every fact and setting.

Constants are facts of the MuseTalk model and of the transports; they never change at run time.
`Settings` holds what a user may change, from environment variables (prefix `WORKBENCH_`) or CLI flags.
Only the entry points (app.py, the CLI, an evaluation worker process) build one; everything else is handed it.
"""

from __future__ import annotations

import hmac
import os
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
ReasoningEffort = Literal["minimal", "low", "medium", "high"]  # gpt-realtime-2's session.reasoning.effort
# The same choices as tuples, for CLI help, radio buttons and validation: one list, read everywhere.
PARSING_MODES: tuple[str, ...] = get_args(ParsingMode)
RENDERERS: tuple[str, ...] = get_args(RendererName)
DETECTORS: tuple[str, ...] = get_args(DetectorName)
MASK_SOURCES: tuple[str, ...] = get_args(MaskSource)


# A Hugging Face Space with persistent storage mounts it at /data; everything else there is lost on restart.
SPACE_DATA_DIR = Path("/data")


def persistent_root(data_dir: Path | None = None) -> Path | None:
    """Where downloads, prepared avatars and runs survive a restart: the Space's /data volume when it is
    mounted and writable, else None (paths stay relative to the working folder)."""
    d = Path(data_dir) if data_dir is not None else SPACE_DATA_DIR
    return d if d.is_dir() and os.access(d, os.W_OK) else None


def _default_dir(name: str) -> Path:
    root = persistent_root()
    return root / "workbench" / name if root is not None else Path(name)


class Settings(BaseSettings):
    """User settings; every field can be set as WORKBENCH_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="WORKBENCH_", env_file=".env", extra="ignore")

    # Defaults: models/, cache/, runs/ here, or /data/workbench/… on a Space with persistent storage.
    models_dir: Path = Field(default_factory=lambda: _default_dir("models"), description="MuseTalk's models/ layout")
    cache_dir: Path = Field(default_factory=lambda: _default_dir("cache"), description="prepared avatars, detections")
    runs_dir: Path = Field(default_factory=lambda: _default_dir("runs"), description="evaluation run folders")
    cache_max_mb: int = Field(
        default=3000,
        ge=0,
        description="prepared avatars beyond this many MB evict the least recently used (never the examples); 0: no limit",
    )
    decoded_frames_mb: int = Field(
        default=512,
        ge=0,
        description="full avatar frames kept decoded in memory, one budget shared by the avatars being shown "
        "(yongen's 100-frame example takes 257 MB); 0: decode a frame each time it is shown",
    )
    prepare_example: bool = Field(
        default=True, description="app: prepare the default example avatar in the background on start"
    )
    samples_dir: Path | None = Field(
        default=None, description="sample media; default: samples/, else ../shared/samples, else examples/"
    )
    renderer: RendererName = "auto"
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', …")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    decoder: Literal["vae", "taesd"] = Field(
        default="vae", description="MuseTalk latent decoder: vae (the reference) or taesd (fast, approximate)"
    )
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=64)
    cpu_interior_style: Literal["auto", "photo", "painted"] = Field(
        default="auto",
        description="CPU renderer, a still mouth's interior: real footage (photo), re-painted in the avatar's own "
        "colours (painted), or whichever the avatar measures as (auto)",
    )
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    max_upload_mb: int = 200
    max_upload_seconds: float = 60.0
    # the Evaluation tab's "Ray cluster" choice: "local" (RAY_ADDRESS, else Ray started here), "auto", HOST:PORT or
    # ray://HOST:PORT. Set by whoever runs the app, never by a page visitor.
    eval_ray_address: str = "local"
    # OpenAI Realtime; the key is read from OPENAI_API_KEY too, and never logged or cached.
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    # gpt-realtime shuts down 2027-01-20 (published notice); gpt-realtime-2 is its successor.
    realtime_model: str = "gpt-realtime-2"
    realtime_voice: str = "marin"
    realtime_reasoning_effort: ReasoningEffort = Field(
        default="low", description="gpt-realtime-2 and later: minimal, low, medium or high (older models: not sent)"
    )
    realtime_transcription_model: str = Field(
        default="gpt-realtime-whisper", description="the user's transcript: a transcription model, or 'none'"
    )
    # ICE servers for WebRTC as JSON (a Space needs a TURN server; localhost needs none)
    ice_servers_json: str = "[]"
    # Realtime calls: how many at once (each holds a lip-sync stream, a voice session and its frames),
    # how long an offer may take to connect, and how long a call may sit idle or last at all.
    max_sessions: int = Field(default=4, ge=1, le=64, description="concurrent realtime calls")
    session_connect_timeout_s: float = Field(default=10.0, gt=0, le=120, description="offer → connected")
    session_idle_timeout_s: float = Field(
        default=300.0, gt=0, description="no speech or text for this long ends a call"
    )
    session_max_s: float = Field(default=1800.0, gt=0, description="longest call")
    latency_logs_keep: int = Field(default=200, ge=0, description="newest realtime latency logs kept in runs/realtime")
    # Sources larger than this are downscaled before preparation (pixels of the longer side); preparation
    # that would need more memory than `prepare_memory_gb` is refused with the numbers.
    max_source_side: int = Field(default=1920, ge=256, le=8192)
    prepare_memory_gb: float = Field(default=8.0, gt=0)
    # --- a shared server: what visitors may reach and make (docs/security.md) ---
    # None: decided from the address: a server bound to loopback without a share link is private, anything
    # else (0.0.0.0, --share, a Hugging Face Space) is public.
    public: bool | None = Field(default=None, description="treat the app as reachable by strangers")
    # Operator-only actions (fetching weights, starting Ray): allowed on a private server; on a public one only
    # with this setting, or to a page that enters `operator_token`.
    operator_actions: bool | None = Field(default=None, description="allow weights download / Ray from the page")
    operator_token: SecretStr | None = Field(default=None, description="unlocks operator actions on a public page")
    # Everything visitors can make (uploads kept for preparation, face detections, UI scratch, session runs)
    # shares this budget; the oldest goes first, swept on start and after each job.
    visitor_disk_mb: int = Field(default=2000, ge=50, description="disk budget for what visitors make")
    # Outbound Realtime connections: the configured base URL (openai_base_url or the OpenAI default) and these
    # (comma-separated); a base URL typed in the page only when `realtime_visitor_base_url` (default: on a
    # private server, off on a public one), and never to a loopback, private or link-local address unless
    # `realtime_allow_private`.
    realtime_allowed_base_urls: str = Field(default="", description="comma-separated base URLs a call may use")
    realtime_visitor_base_url: bool | None = Field(
        default=None, description="accept a base URL typed in the chat page (default: only on a private server)"
    )
    realtime_allow_private: bool = Field(default=False, description="allow loopback/private Realtime endpoints")
    # The waiting line for chat slots: a place is kept this long after the page's last try; one client address
    # holds at most this many places, and one browser session at most `grants_per_session` chat links.
    queue_keep_s: float = Field(default=7.0, gt=0, le=120, description="a waiting place outlives its last poll")
    queue_per_client: int = Field(default=4, ge=1, le=1000, description="waiting places per client address")
    grants_per_session: int = Field(default=32, ge=1, le=4096, description="chat links per browser session")


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_public(settings: Settings) -> bool:
    """Whether strangers may reach this app: the `public` setting, else any bind beyond loopback, a share link
    or a Hugging Face Space."""
    if settings.public is not None:
        return settings.public
    return bool(settings.share or os.environ.get("SPACE_ID") or settings.host not in LOOPBACK_HOSTS)


def operator_allowed(settings: Settings, token: str | None = None) -> bool:
    """Whether the page may run an operator-only action: the setting, else a private server, else the token."""
    if settings.operator_actions is not None and settings.operator_actions:
        return True
    if settings.operator_actions is None and not is_public(settings):
        return True
    want = settings.operator_token.get_secret_value() if settings.operator_token is not None else ""

    return bool(want) and bool(token) and hmac.compare_digest(want.encode(), str(token).encode())
