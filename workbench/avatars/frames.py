"""Prepared full frames on disk, compressed: one JPEG per frame, packed into one file, decoded on access.

Uncompressed, a prepared avatar's frames are most of its size (2.6 MB per 704x1216 frame: 690 MB of the 759 MB
of yongen.mp4's 268 frames). JPEG at quality 95 with full-resolution chroma (4:4:4) is visually lossless
(measured on yongen.mp4: 47.7 dB PSNR, 0.2 MB per frame, bench/bench_frames.py) and decodes in about 6 ms
(704x1216, one core): inside one stream's 40 ms per frame, but more than the CPU renderer's mouth edit, which is why
the realtime path keeps its loop decoded (`frame_memory.FrameMemory`); PNG (lossless) was 3.4x larger and 4x slower
to decode, WebP-lossless 1.7x larger and 3x slower.

`EncodedFrames` is what `Avatar.frames` holds for an avatar loaded from the cache: it behaves like the
(N, H, W, 3) uint8 array renderers index (`len`, `shape`, `frames[i]`, slices, `np.asarray`), decodes a frame
when it is asked for and keeps the last few decoded (the idle loop and the compositor read the same frame in
one tick), and, given the process's `FrameMemory`, keeps its share of the whole loop decoded there (the realtime
stream reads every frame again each time the loop comes round). Decoded frames are read-only: every reader copies
before drawing.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from workbench.avatars.frame_memory import FrameMemory

CODEC = "jpeg-q95-444"
JPEG_QUALITY = 95
PACK_NAME = "frames.jpgpack"  # the encoded frames, back to back
INDEX_NAME = "frames_index.npy"  # (N + 1,) int64 byte offsets into the pack
DECODED_KEEP = 8  # decoded frames kept per avatar: 8 x 2.6 MB for a 704x1216 frame
_ENCODE_PARAMS = [
    cv2.IMWRITE_JPEG_QUALITY,
    JPEG_QUALITY,
    cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
    cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
]


class FramesError(ValueError):
    """The packed frames are unreadable or do not match their index."""


def encode_frame(frame: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame), _ENCODE_PARAMS)
    if not ok:
        raise FramesError("could not encode a frame as JPEG")
    return buf.tobytes()


def write_frames(frames: Sequence[np.ndarray] | np.ndarray, folder: Path) -> int:
    """Encode every frame into `folder`/frames.jpgpack with its index; returns the pack's size in bytes."""
    folder = Path(folder)
    offsets = [0]
    with open(folder / PACK_NAME, "wb") as f:
        for i in range(len(frames)):
            blob = encode_frame(frames[i])
            f.write(blob)
            offsets.append(offsets[-1] + len(blob))
    np.save(folder / INDEX_NAME, np.asarray(offsets, dtype=np.int64))
    return offsets[-1]


def has_frames(folder: Path) -> bool:
    return (Path(folder) / PACK_NAME).is_file() and (Path(folder) / INDEX_NAME).is_file()


class EncodedFrames:
    """An (N, H, W, 3) uint8 BGR frame sequence backed by a pack of JPEGs, decoded on access. Thread-safe."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    _tokens = itertools.count()

    def __init__(
        self, folder: Path, frame_size: tuple[int, int], keep: int = DECODED_KEEP, memory: FrameMemory | None = None
    ):
        self.folder = Path(folder)
        self.offsets = np.load(self.folder / INDEX_NAME)
        pack = self.folder / PACK_NAME
        if self.offsets.ndim != 1 or len(self.offsets) < 2 or int(self.offsets[-1]) != pack.stat().st_size:
            raise FramesError(f"{pack} does not match its index (truncated or mixed up)")
        # Mapped, not read: pages of frames nobody looks at stay on disk. The open mapping also keeps the data
        # readable if the avatar's folder is deleted (evicted) while a stream still shows it.
        self._pack = np.memmap(pack, dtype=np.uint8, mode="r")
        h, w = int(frame_size[0]), int(frame_size[1])
        self.shape = (len(self.offsets) - 1, h, w, 3)
        self._keep = max(1, int(keep))
        self._decoded: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._memory = memory
        self._token = ("frames", next(self._tokens))
        if memory is not None:
            weakref.finalize(self, memory.release, self._token)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes the frames take decoded (as an ndarray would report)."""
        return int(np.prod(self.shape))

    @property
    def encoded_bytes(self) -> int:
        return int(self.offsets[-1])

    def _decode(self, i: int) -> np.ndarray:
        blob = self._pack[int(self.offsets[i]) : int(self.offsets[i + 1])]
        img = cv2.imdecode(np.asarray(blob), cv2.IMREAD_COLOR)
        if img is None or img.shape != self.shape[1:]:
            raise FramesError(f"frame {i} of {self.folder} is corrupt")
        img.flags.writeable = False
        return img

    def frame(self, i: int) -> np.ndarray:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame index {i} outside {n} frames")
        i %= n
        with self._lock:
            img = self._decoded.get(i)
            if img is not None:
                self._decoded.move_to_end(i)
                return img
        if self._memory is not None:
            img = self._memory.get(self._token, i)
            if img is not None:
                return img
        img = self._decode(i)  # outside the lock: sessions decode in parallel (cv2 releases the GIL)
        if self._memory is not None and self._memory.offer(self._token, i, img):
            return img
        with self._lock:
            self._decoded[i] = img
            while len(self._decoded) > self._keep:
                self._decoded.popitem(last=False)
        return img

    def __getitem__(self, key):
        if isinstance(key, int | np.integer):
            return self.frame(int(key))
        if isinstance(key, slice):
            return self._stack(range(*key.indices(len(self))))
        if isinstance(key, tuple) and key and isinstance(key[0], int | np.integer):
            return self.frame(int(key[0]))[key[1:]]
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.ndim == 1 and np.issubdtype(idx.dtype, np.integer):
            return self._stack(idx.tolist())
        raise TypeError(f"EncodedFrames cannot be indexed with {key!r}; index frames one at a time")

    def __setitem__(self, key, value):
        raise ValueError("an avatar's stored frames are read-only; copy a frame before drawing on it")

    def _stack(self, indices) -> np.ndarray:
        indices = list(indices)
        out = np.empty((len(indices), *self.shape[1:]), dtype=np.uint8)
        for k, i in enumerate(indices):
            out[k] = self.frame(i)
        return out

    def __iter__(self):
        for i in range(len(self)):
            yield self.frame(i)

    def __array__(self, dtype=None, copy=None):
        arr = self._stack(range(len(self)))
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return f"EncodedFrames({self.folder.name}, shape={self.shape}, {self.encoded_bytes / 1e6:.1f} MB {CODEC})"
