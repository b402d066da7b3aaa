"""Shared fixtures: the sample media, a throwaway avatar cache, and small prepared avatars of the samples.

The prepared avatars are session-scoped and cheap (50 frames, dlib landmarks, landmark masks, no VAE):
every test file may reuse them, none may modify them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SAMPLES_DIR = Path(__file__).parents[1].parent / "shared" / "samples"
EXAMPLES_DIR = Path(__file__).parents[1] / "examples"  # bundled with the repository: always there
AVATAR_FRAMES = 50


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The real sample media (`../shared/samples` beside the repository)."""
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"sample media not found at {SAMPLES_DIR} (expected ../shared/samples beside the repository)")
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The example media bundled in the repository (yongen.mp4, sun.mp4 — the same files as in the samples —
    and short speech clips); tests that need only these run without `../shared`."""
    return EXAMPLES_DIR


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    return exe


@pytest.fixture
def tmp_cache(tmp_path):
    """An empty AvatarCache in a temporary folder."""
    from workbench.avatars.store import AvatarCache

    return AvatarCache(tmp_path / "cache")


@pytest.fixture(scope="session")
def dlib_detector():
    """The default detector (dlib HOG + 68 landmarks), loaded once."""
    from workbench.faces.landmarks import get_detector

    return get_detector("dlib")


def _prepare(samples_dir: Path, name: str, detector):
    from workbench.avatars.model import PrepParams
    from workbench.avatars.pipeline import prepare_avatar

    avatar = prepare_avatar(samples_dir / name, PrepParams(max_frames=AVATAR_FRAMES), detector)
    # Shared across tests: make accidental writes fail loudly instead of leaking between tests.
    for arr in (avatar.frames, avatar.boxes, avatar.landmarks, avatar.has_face, avatar.crops, avatar.masks):
        arr.flags.writeable = False
    return avatar


@pytest.fixture(scope="session")
def yongen_avatar(examples_dir, dlib_detector):
    """yongen.mp4 (painted portrait, 704x1216) prepared with default PrepParams, first 50 frames."""
    return _prepare(examples_dir, "yongen.mp4", dlib_detector)


@pytest.fixture(scope="session")
def sun_avatar(examples_dir, dlib_detector):
    """sun.mp4 (a real person, 576x768) prepared with default PrepParams, first 50 frames."""
    return _prepare(examples_dir, "sun.mp4", dlib_detector)
