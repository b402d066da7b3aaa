"""The evaluation's own exceptions: each says what is wrong and what to do about it."""

from __future__ import annotations


class EvalError(RuntimeError):
    """Base class of every evaluation failure."""


class ManifestError(EvalError, ValueError):
    """A suite manifest is malformed, or names a file that does not exist."""


class SyncNetWeightsMissing(EvalError, FileNotFoundError):
    """The official SyncNet weights (syncnet_v2.model) are not on this machine."""


class NoFaceError(EvalError):
    """No usable face (track) was found in a video."""


class MediaTooShortError(EvalError, ValueError):
    """A clip is too short for the offset search it was given."""


class BaselineError(EvalError, ValueError):
    """A baseline summary.json is missing or not an evaluation summary."""
