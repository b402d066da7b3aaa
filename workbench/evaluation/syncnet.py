"""SyncNet lip-sync scores as papers report them (Chung & Zisserman, "Out of time", ACCV 2016 workshops).

The network and the protocol follow syncnet_python (`SyncNetModel.S`, `SyncNetInstance.evaluate`):
- video: 25 fps face-track crops, 224x224 BGR, raw 0..255 values, in windows of 5 frames -> lip tower -> 1024-d;
- audio: 16 kHz mono int16, 13 MFCCs every 10 ms (python_speech_features defaults), windows of 20 MFCC steps
  (the same 0.2 s) starting at 4 x the video frame -> audio tower -> 1024-d;
- for every video window i and offset j in -vshift..vshift, the L2 distance between video feature i and audio
  feature i + j, audio features zero-padded at both ends (so large offsets near the edges pay for it);
- mean distance per offset over all windows; LSE-D = its minimum, LSE-C = its median minus that minimum,
  AV offset = vshift minus the index of the minimum (positive: the audio is ahead of the video).

`syncnet_v2.model` is a plain state dict whose keys are S's own (`netcnnaud.0.weight`, …, `netfclip.3.bias`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workbench.config import SAMPLE_RATE, SAMPLES_PER_FRAME
from workbench.evaluation.errors import MediaTooShortError, SyncNetWeightsMissing
from workbench.faces.checkpoints import extract_state_dict, load_strict, read_checkpoint
from workbench.weights import sha256_cached

log = logging.getLogger(__name__)

VSHIFT = 15
BATCH_SIZE = 20
WINDOW_FRAMES = 5  # video frames per lip window
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
MFCC_WINDOW = 20  # MFCC steps per audio window
WEIGHTS_SUBDIR = "syncnet_eval"
SYNCNET_FILE = "syncnet_v2.model"
SFD_FILE = "sfd_face.pth"
# Where syncnet_python's download_model.sh gets them (`workbench weights download syncnet_eval` does the same).
OFFICIAL_URLS = {
    SYNCNET_FILE: "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
    SFD_FILE: "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/sfd_face.pth",
}


class SyncNetS(nn.Module):
    """syncnet_python's `S`: an audio tower over MFCC windows and a lip tower over 5-frame crops.
    Attribute names are the official ones so `syncnet_v2.model` loads strictly."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, 3, 1, 1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(1, 1),
            nn.Conv2d(64, 192, 3, 1, 1),
            nn.BatchNorm2d(192),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, (1, 2)),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.BatchNorm2d(384),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 512, (5, 4), padding=0),
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0),
            nn.BatchNorm3d(96),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(256, 512, (1, 6, 6), padding=0),
            nn.BatchNorm3d(512),
            nn.ReLU(inplace=True),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, 1024)."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR 0..255 crop windows -> (N, 1024)."""
        return self.netfclip(self.netcnnlip(x).flatten(1))


# --- weights ------------------------------------------------------------------------------------
def weights_dir(models_dir: str | Path) -> Path:
    return Path(models_dir) / WEIGHTS_SUBDIR


def syncnet_weights_path(models_dir: str | Path) -> Path:
    """models/syncnet_eval/syncnet_v2.model, or a clear error saying how to get it."""
    p = weights_dir(models_dir) / SYNCNET_FILE
    if not p.is_file():
        raise SyncNetWeightsMissing(
            f"SyncNet weights not found: {p}. Run `workbench weights download syncnet_eval` on a machine with "
            f"internet (or fetch {OFFICIAL_URLS[SYNCNET_FILE]} into {p.parent}/). LSE-C/LSE-D are skipped; "
            "the weight-free sync metric and latency still run."
        )
    return p


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNetS:
    """The official `syncnet_v2.model` (a state dict with S's key names), loaded strictly, in eval mode."""
    state = extract_state_dict(read_checkpoint(path), path)
    net = SyncNetS()
    load_strict(net, state, path, "SyncNet (syncnet_v2.model)")
    return net.to(device).eval()


# --- features -----------------------------------------------------------------------------------
def to_int16(audio16k: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 samples: the protocol computes MFCCs on wavfile's int16 values, and the energy
    coefficient depends on that scale."""
    a = np.asarray(audio16k)
    if a.dtype == np.int16:
        return a
    return np.clip(np.round(a.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def mfcc(audio16k: np.ndarray) -> np.ndarray:
    """(13, T) MFCCs at 100 Hz, as `python_speech_features.mfcc(audio, 16000)` gives them, transposed."""
    import python_speech_features

    return np.asarray(python_speech_features.mfcc(to_int16(audio16k), SAMPLE_RATE), dtype=np.float64).T


@dataclass
class SyncNetScores:
    offset: int  # AV offset in frames (positive: audio ahead)
    min_dist: float  # LSE-D
    confidence: float  # LSE-C
    mean_dists: np.ndarray = field(repr=False)  # (2*vshift+1,) mean distance per offset index
    n_windows: int = 0

    @property
    def offsets(self) -> np.ndarray:
        """The offset each entry of `mean_dists` stands for (vshift..-vshift, as index j means offset vshift-j)."""
        v = (len(self.mean_dists) - 1) // 2
        return v - np.arange(len(self.mean_dists))

    def to_dict(self) -> dict:
        return {
            "offset": int(self.offset),
            "lse_d": float(self.min_dist),
            "lse_c": float(self.confidence),
            "n_windows": int(self.n_windows),
            "offsets": [int(o) for o in self.offsets],
            "mean_dists": [float(d) for d in self.mean_dists],
        }


def offset_distances(
    video_feat: torch.Tensor | np.ndarray, audio_feat: torch.Tensor | np.ndarray, vshift: int = VSHIFT
) -> np.ndarray:
    """(N, 2*vshift+1): entry [i, j] is |video_i - audio_{i+j-vshift}|, audio zero-padded by vshift both sides
    (syncnet_python's `calc_pdist`, including pairwise_distance's eps of 1e-6)."""
    v = torch.as_tensor(np.asarray(video_feat), dtype=torch.float64)
    a = torch.as_tensor(np.asarray(audio_feat), dtype=torch.float64)
    if v.ndim != 2 or a.ndim != 2 or v.shape[1] != a.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {tuple(v.shape)} and {tuple(a.shape)}")
    win = 2 * vshift + 1
    ap = torch.nn.functional.pad(a, (0, 0, vshift, vshift))
    out = np.empty((len(v), win))
    for i in range(len(v)):
        out[i] = torch.nn.functional.pairwise_distance(v[i : i + 1].expand(win, -1), ap[i : i + win]).numpy()
    return out


def scores_from_distances(dists: np.ndarray) -> SyncNetScores:
    """Offset, LSE-D and LSE-C from the (N, 2*vshift+1) distance matrix."""
    dists = np.asarray(dists, dtype=np.float64)
    vshift = (dists.shape[1] - 1) // 2
    mean = dists.mean(axis=0)
    j = int(np.argmin(mean))  # the first minimum, as torch.min returns it
    return SyncNetScores(
        offset=vshift - j,
        min_dist=float(mean[j]),
        confidence=float(np.median(mean) - mean[j]),
        mean_dists=mean,
        n_windows=int(dists.shape[0]),
    )


class SyncNetScorer:
    """SyncNet features and scores for face-track crops with their audio."""

    def __init__(
        self,
        net: SyncNetS,
        device: str | torch.device = "cpu",
        batch_size: int = BATCH_SIZE,
        vshift: int = VSHIFT,
        weights_sha256: str | None = None,
    ):
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.vshift = vshift
        self.weights_sha256 = weights_sha256

    @classmethod
    def from_models_dir(cls, models_dir: str | Path, device: str | None = None, **kw) -> SyncNetScorer:
        path = syncnet_weights_path(models_dir)
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(load_syncnet(path, dev), dev, weights_sha256=sha256_cached(Path(path)), **kw)

    def features(
        self, crops: np.ndarray, audio16k: np.ndarray, progress: Callable[[float, str], None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Lip and audio features of every 5-frame window: crops (T, 224, 224, 3) uint8 BGR, audio covering them."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (224, 224, 3):
            raise ValueError(f"crops must be (T, 224, 224, 3), got {crops.shape}")
        cc = mfcc(audio16k)
        min_length = min(len(crops), len(audio16k) // SAMPLES_PER_FRAME)
        last = min_length - WINDOW_FRAMES
        if last < 1:
            raise MediaTooShortError(f"{min_length} frames with audio: SyncNet needs more than {WINDOW_FRAMES}")
        video = torch.from_numpy(np.ascontiguousarray(crops.transpose(3, 0, 1, 2))).float()  # (3, T, H, W)
        audio = torch.from_numpy(cc).float()[None]  # (1, 13, T_mfcc)
        vf, af = [], []
        with torch.inference_mode():
            for b in range(0, last, self.batch_size):
                idx = range(b, min(last, b + self.batch_size))
                lip = torch.stack([video[:, i : i + WINDOW_FRAMES] for i in idx]).to(self.device)
                vf.append(self.net.forward_lip(lip).double().cpu())
                aud = torch.stack([audio[:, :, i * MFCC_PER_FRAME : i * MFCC_PER_FRAME + MFCC_WINDOW] for i in idx])
                af.append(self.net.forward_aud(aud.to(self.device)).double().cpu())
                if progress is not None:
                    progress(min(1.0, (b + len(idx)) / last), "SyncNet")
        return torch.cat(vf), torch.cat(af)

    def score(
        self, crops: np.ndarray, audio16k: np.ndarray, progress: Callable[[float, str], None] | None = None
    ) -> SyncNetScores:
        vf, af = self.features(crops, audio16k, progress)
        return scores_from_distances(offset_distances(vf, af, self.vshift))
