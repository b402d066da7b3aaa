"""MuseTalk v1.5 (or v1.0) lip-sync: Whisper features + one UNet step in the VAE latent space.

Per frame (MuseTalk's realtime_inference.py):
    latent (8, 32, 32) = VAE latent of the crop with its lower half blacked out ++ latent of the whole crop
    condition (50, 384) = Whisper window of the frame (audio_features) + sinusoidal positional encoding
    UNet2DConditionModel(latent, timestep 0, condition) -> (4, 32, 32) -> VAE decode (/ 0.18215) -> 256x256
    paste back through the avatar's blending mask (workbench.lipsync.compositor, shared with the CPU renderer)

Preparation encodes each crop once (`encode_crops`); it takes the latent distribution's mode where the
release samples from it, so the same avatar always gives the same latents (training uses the mode too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workbench.avatars.model import Avatar
from workbench.config import (
    AUDIO_TOKENS_PER_FRAME,
    CROP_SIZE,
    DEFAULT_BATCH_SIZE,
    LATENT_SIZE,
    VAE_SCALING_FACTOR,
    WHISPER_DIM,
)
from workbench.lipsync.base import Renderer
from workbench.lipsync.compositor import Compositor
from workbench.lipsync.musetalk.decoders import VaeDecoder, make_decoder
from workbench.lipsync.musetalk.whisper_features import (
    EXACT,
    BlockParams,
    WhisperEncoderRunner,
    WhisperFrontend,
    silence_condition,
)
from workbench.weights import MANIFEST_NAME, WeightsError, require_musetalk, sha256_file

# torch, diffusers and transformers are imported inside functions: importing this module must not load them
# (the CPU renderer and the app's CPU path import the lipsync packages and never need torch).
log = logging.getLogger(__name__)

UNET_FILES = {"v15": ("musetalkV15", "unet.pth"), "v1": ("musetalk", "pytorch_model.bin")}


def resolve_device(device: str | None = None, dtype=None):
    """(torch.device, torch.dtype); "auto" or None = cuda + float16 when there is a GPU, else cpu + float32."""
    import torch  # lazy, as is the import below (faces.checkpoints imports torch): the CPU path never loads it

    from workbench.faces.checkpoints import resolve_device as pick_device  # the one device rule

    dev = pick_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    if isinstance(dtype, torch.dtype):
        return dev, dtype
    dtype_name = dtype or "auto"
    if dtype_name == "auto":
        dtype_name = "float16" if dev.type == "cuda" else "float32"  # MuseTalk runs half precision on GPUs
    dt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype_name)
    if dt is None:
        raise ValueError(f"unknown dtype {dtype_name!r}; expected auto, float32, float16 or bfloat16")
    if dev.type == "cpu" and dt != torch.float32:
        log.warning("%s on CPU is far slower than float32 on CPUs without native half-precision units", dtype_name)
    return dev, dt


def positional_encoding(length: int = AUDIO_TOKENS_PER_FRAME, d_model: int = WHISPER_DIM) -> np.ndarray:
    """MuseTalk's sinusoidal encoding (Vaswani et al.): sin on even channels, cos on odd, base 10000."""
    pos = np.arange(length, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, d_model, 2, dtype=np.float32) * (-math.log(10000.0) / d_model))
    pe = np.zeros((length, d_model), np.float32)
    pe[:, 0::2] = np.sin(pos * div)
    pe[:, 1::2] = np.cos(pos * div)
    return pe


def load_unet(models_dir: Path, version: str, device, dtype):
    """UNet2DConditionModel(**musetalk.json) with the release's plain state dict, strictly matched."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    folder, weights = UNET_FILES[version]
    cfg_path, w_path = models_dir / folder / "musetalk.json", models_dir / folder / weights
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    try:
        state = torch.load(w_path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) checkpoints cannot be memory-mapped
        state = torch.load(w_path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    expected = set(unet.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(
            f"{w_path} does not fit {cfg_path}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    # Cast before assigning: ModelMixin.to(dtype) would warn about (here nonexistent) fp32-only modules.
    state = {k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in state.items()}
    try:
        unet.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise WeightsError(f"{w_path} does not fit {cfg_path}: {e}") from e
    return unet.to(device).eval().requires_grad_(False)


def load_vae(models_dir: Path, device, dtype):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(models_dir / "sd-vae", torch_dtype=dtype)
    if vae.config.latent_channels != 4:
        raise WeightsError(
            f"{models_dir / 'sd-vae'} has {vae.config.latent_channels} latent channels; MuseTalk needs 4"
        )
    return vae.to(device).eval().requires_grad_(False)


def vae_digest(models_dir: Path | None) -> str:
    """sha256 of the VAE's config and weights: the verified download's recorded hash when there is one."""
    if models_dir is None:
        return "unknown"
    folder = Path(models_dir) / "sd-vae"
    try:
        manifest = json.loads((Path(models_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        p = folder / name
        if p.is_file():
            rec = manifest.get(f"sd-vae/{name}", {})
            recorded = rec.get("sha256") if rec.get("size") == p.stat().st_size else None
            h.update((recorded or sha256_file(p)).encode())
            break
    return h.hexdigest()


class MuseTalkRenderer(Renderer):
    name = "musetalk"

    def __init__(
        self,
        unet,
        vae,
        whisper: WhisperEncoderRunner,
        device,
        dtype,
        version: str = "v15",
        batch_size: int = 8,
        block_params: BlockParams | None = None,
        models_dir: Path | str | None = None,
        decoder=None,
    ):
        import torch

        self.unet, self.vae, self.whisper = unet, vae, whisper
        self.decoder = decoder if decoder is not None else VaeDecoder(vae)  # latents -> [-1, 1] images
        self.device, self.dtype, self.version = device, dtype, version
        self.batch_size = max(1, int(batch_size))
        self.block_params = block_params or BlockParams()
        self._pe = torch.from_numpy(positional_encoding()).to(device)
        self._timestep = torch.tensor([0], device=device)
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self._identity: str | None = None
        self._silence: np.ndarray | None = None
        self._compositor: Compositor | None = None
        # latents computed on demand for avatars prepared without them, per avatar object
        self._lazy: dict[int, tuple[weakref.ref, dict[int, np.ndarray]]] = {}

    @classmethod
    def from_models_dir(
        cls,
        models_dir: Path | str,
        device: str | None = None,
        dtype: str | None = None,
        version: str = "v15",
        batch_size: int | None = None,
        block_params: BlockParams | None = None,
        decoder: str = "vae",
    ) -> MuseTalkRenderer:
        """Load from MuseTalk's models/ layout; raises MissingWeightsError (with the download command) if absent.

        `decoder` is "vae" (the reference) or "taesd" (workbench.lipsync.musetalk.decoders, the fast approximation).
        """
        models_dir = Path(models_dir)
        if version not in UNET_FILES:
            raise ValueError(f"unknown MuseTalk version {version!r}; expected one of {sorted(UNET_FILES)}")
        require_musetalk(models_dir, version)
        dev, dt = resolve_device(device, dtype)
        unet = load_unet(models_dir, version, dev, dt)
        vae = load_vae(models_dir, dev, dt)
        whisper = WhisperEncoderRunner.from_dir(models_dir / "whisper", dev, dt)
        dec = make_decoder(decoder, vae, models_dir, dev, dt)
        log.info("MuseTalk %s loaded from %s on %s (%s, %s decoder)", version, models_dir, dev, dt, dec.name)
        bs = batch_size or DEFAULT_BATCH_SIZE
        return cls(unet, vae, whisper, dev, dt, version, bs, block_params, models_dir, decoder=dec)

    @property
    def identity(self) -> str:
        """What avatar latents depend on (the VAE's weights and dtype), for preparation's cache key."""
        if self._identity is None:
            self._identity = f"sd-vae-{vae_digest(self.models_dir)[:12]}-{str(self.dtype).replace('torch.', '')}"
        return self._identity

    def describe(self) -> str:
        dec = "" if self.decoder.name == "vae" else f", {self.decoder.name} decoder"
        return f"MuseTalk {self.version} on {self.device} ({str(self.dtype).replace('torch.', '')}{dec})"

    # --- audio ----------------------------------------------------------------------------------

    def new_frontend(self, block_params: BlockParams | None = None) -> WhisperFrontend:
        """The streaming frontend (bounded look-ahead), for the realtime path."""
        return WhisperFrontend(self.whisper, block_params or self.block_params)

    def file_frontend(self) -> WhisperFrontend:
        """The reference computation (whole 30 s segments), for files, previews and evaluation cases."""
        return WhisperFrontend(self.whisper, EXACT)

    def audio_conditions(self, audio16k: np.ndarray) -> np.ndarray:
        """Whole-file conditions (T, 50, 384): the reference computation."""
        conds = self.file_frontend().process(audio16k)
        return np.stack(conds) if conds else np.zeros((0, AUDIO_TOKENS_PER_FRAME, WHISPER_DIM), np.float32)

    def silence_condition(self) -> np.ndarray:
        if self._silence is None:
            self._silence = silence_condition(self.whisper, self.block_params)
        return self._silence.copy()

    # --- the VAE and UNet -----------------------------------------------------------------------

    def encode_crops(self, crops_bgr: np.ndarray) -> np.ndarray:
        """(B, 256, 256, 3) uint8 BGR crops -> (B, 8, 32, 32) float32: masked-lower-half latent ++ full latent."""
        import torch

        crops = np.asarray(crops_bgr)
        if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3) or crops.dtype != np.uint8:
            raise ValueError(
                f"encode_crops takes (B, {CROP_SIZE}, {CROP_SIZE}, 3) uint8, got {crops.shape} {crops.dtype}"
            )
        out = np.zeros((len(crops), 8, LATENT_SIZE, LATENT_SIZE), np.float32)
        with torch.inference_mode():
            for s in range(0, len(crops), self.batch_size):
                rgb = torch.from_numpy(np.ascontiguousarray(crops[s : s + self.batch_size, :, :, ::-1]))
                # contiguous(): the permuted view is channels-last, and the CPU GroupNorm kernel for that layout
                # is inaccurate (latents off by up to 8.6e-4 against the reference's NCHW tensors).
                x = rgb.to(self.device).permute(0, 3, 1, 2).contiguous().float() / 255.0
                masked = x.clone()
                masked[:, :, CROP_SIZE // 2 :, :] = 0  # MuseTalk keeps the upper half only
                both = torch.cat([masked, x]) * 2.0 - 1.0
                lat = self.vae.encode(both.to(self.dtype)).latent_dist.mode() * VAE_SCALING_FACTOR
                n = len(x)
                out[s : s + n] = torch.cat([lat[:n], lat[n:]], dim=1).float().cpu().numpy()
        return out

    def unet_step(self, latents, conditions):
        """One denoising step at timestep 0: (B, 8, 32, 32) latents + (B, 50, 384) conditions -> (B, 4, 32, 32)."""
        import torch

        lat = self._tensor(latents).to(self.dtype)
        # As the reference (realtime_inference.py: pe.half(), features in the weights' dtype): the encoding
        # is added in the model's dtype, so half-precision runs round as MuseTalk's do.
        audio = self._tensor(conditions).to(self.dtype) + self._pe.to(self.dtype)
        with torch.inference_mode():
            return self.unet(lat, self._timestep, encoder_hidden_states=audio).sample

    def _tensor(self, x):
        import torch

        if isinstance(x, torch.Tensor):
            return x.to(self.device)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    def decode_latents(self, pred, raw: bool = False):
        """(B, 4, 32, 32) UNet output -> (B, 256, 256, 3) uint8 BGR faces (or the float RGB image in [0, 1] if raw)."""
        import torch

        with torch.inference_mode():
            img = self.decoder(pred)
            img = (img.float() / 2 + 0.5).clamp(0, 1)
            if raw:
                return img
            faces = (img * 255).round().to(torch.uint8).permute(0, 2, 3, 1).flip(-1)
            return faces.cpu().numpy()

    def generate(self, latents: np.ndarray, conditions: np.ndarray) -> np.ndarray:
        """Faces (B, 256, 256, 3) uint8 BGR for latents (B, 8, 32, 32) and conditions (B, 50, 384), in batches."""
        faces = []
        for s in range(0, len(latents), self.batch_size):
            faces.append(
                self.decode_latents(
                    self.unet_step(latents[s : s + self.batch_size], conditions[s : s + self.batch_size])
                )
            )
        return np.concatenate(faces) if faces else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)

    # --- frames ---------------------------------------------------------------------------------

    def avatar_latents(self, avatar: Avatar, frame_indices: Sequence[int]) -> np.ndarray:
        """Latents of the given frames: the prepared ones, or encoded now (and kept) when the avatar has none."""
        idx = [int(i) for i in frame_indices]
        if avatar.latents is not None:
            if avatar.latents.shape[1:] != (8, LATENT_SIZE, LATENT_SIZE):
                raise ValueError(
                    f"avatar {avatar.avatar_id} has latents of shape {avatar.latents.shape}, not (N, 8, 32, 32)"
                )
            return avatar.latents[idx].astype(np.float32, copy=False)
        entry = self._lazy.get(id(avatar))
        if entry is None or entry[0]() is not avatar:
            self._lazy = {k: v for k, v in self._lazy.items() if v[0]() is not None}
            entry = (weakref.ref(avatar), {})
            self._lazy[id(avatar)] = entry
        cache = entry[1]
        todo = sorted({i for i in idx if i not in cache})
        if todo:
            log.info("encoding %d crops of avatar %s (prepared without latents)", len(todo), avatar.avatar_id)
            for i, lat in zip(todo, self.encode_crops(avatar.crops[todo]), strict=True):
                cache[i] = lat
        return np.stack([cache[i] for i in idx])

    def _compositor_for(self, avatar: Avatar) -> Compositor:
        if self._compositor is None or self._compositor.avatar is not avatar:
            self._compositor = Compositor(avatar)
        return self._compositor

    def render(
        self, avatar: Avatar, frame_indices: Sequence[int], conditions: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        if len(frame_indices) != len(conditions):
            raise ValueError(f"{len(frame_indices)} frame indices but {len(conditions)} conditions")
        if not len(frame_indices):
            return []
        n = len(avatar)
        for i in frame_indices:
            if not 0 <= int(i) < n:
                raise IndexError(f"frame index {i} outside avatar {avatar.avatar_id} of {n} frames")
        conds = np.stack([np.asarray(c, np.float32) for c in conditions])
        if conds.shape[1:] != (AUDIO_TOKENS_PER_FRAME, WHISPER_DIM):
            raise ValueError(
                f"MuseTalk conditions must be ({AUDIO_TOKENS_PER_FRAME}, {WHISPER_DIM}), got {conds.shape[1:]}"
            )
        faces = self.generate(self.avatar_latents(avatar, frame_indices), conds)
        comp = self._compositor_for(avatar)
        return [comp.paste(int(i), face) for i, face in zip(frame_indices, faces, strict=True)]
