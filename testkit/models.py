"""Random-init MuseTalk models in the official formats and layout, for tests and benchmarks.

The real weights cannot be fetched everywhere (CI has no model hub), so tests build models of the same
architectures, save them exactly as the release ships them, and load them through the real loading code:

    musetalkV15/musetalk.json + unet.pth   UNet2DConditionModel config + plain state dict (torch.save)
    musetalk/musetalk.json + pytorch_model.bin   the same for v1.0
    sd-vae/config.json + diffusion_pytorch_model.safetensors (or .bin)   AutoencoderKL.save_pretrained
    whisper/config.json + model.safetensors (or pytorch_model.bin) + preprocessor_config.json

`size="full"` writes the published configurations (3.4 GB UNet) with random weights: benchmarks only.
`size="tiny"` shrinks channel widths and blocks to one layer each but keeps every block type, the 8-channel latent input, the
384-d cross-attention, the VAE's four 2x stages (256x256 <-> 32x32) and Whisper's encoder as published
(d_model 384, 4 layers, 1500 positions), because the audio feature shape and cost depend on it; only the
unused text decoder is shrunk.

Also `make_synthetic_avatar`: a small Avatar with random frames, boxes and masks that needs no face detector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from workbench.avatars.model import Avatar, PrepParams
from workbench.config import CROP_SIZE, FPS, N_LANDMARKS, WHISPER_DIM

Size = Literal["tiny", "full"]

# models/musetalkV15/musetalk.json as published
UNET_CONFIG_FULL: dict = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
UNET_CONFIG_TINY: dict = {**UNET_CONFIG_FULL, "block_out_channels": [32, 64, 64, 64], "layers_per_block": 1}

# stabilityai/sd-vae-ft-mse config.json
VAE_CONFIG_FULL: dict = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
VAE_CONFIG_TINY: dict = {
    **VAE_CONFIG_FULL,
    "block_out_channels": [16, 16, 32, 32],
    "norm_num_groups": 16,
    "layers_per_block": 1,
}

# openai/whisper-tiny's architecture (WhisperForConditionalGeneration)
WHISPER_CONFIG_FULL: dict = {
    "d_model": WHISPER_DIM,
    "encoder_layers": 4,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_layers": 4,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 1536,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "vocab_size": 51865,
    "activation_function": "gelu",
    "scale_embedding": False,
    "pad_token_id": 50257,
    "bos_token_id": 50257,
    "eos_token_id": 50257,
    "decoder_start_token_id": 50258,
}
# The encoder is kept as published (feature shape and cost depend on it); the unused decoder shrinks.
WHISPER_CONFIG_TINY: dict = {
    **WHISPER_CONFIG_FULL,
    "decoder_layers": 1,
    "decoder_ffn_dim": 64,
    "max_target_positions": 32,
    "vocab_size": 64,
    "pad_token_id": 60,
    "bos_token_id": 60,
    "eos_token_id": 60,
    "decoder_start_token_id": 61,
}


def make_tiny_models(
    models_dir: Path | str,
    size: Size = "tiny",
    seed: int = 0,
    versions: tuple[str, ...] = ("v15",),
    vae_format: Literal["safetensors", "bin"] = "safetensors",
    whisper_format: Literal["safetensors", "bin"] = "safetensors",
) -> Path:
    """Write random-init UNet(s), VAE and Whisper under `models_dir` in the release layout; returns models_dir.

    Deterministic for a given seed. `versions` picks the UNet folders: "v15" (musetalkV15/unet.pth) and/or
    "v1" (musetalk/pytorch_model.bin).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    models_dir = Path(models_dir)
    full = size == "full"

    unet_cfg = UNET_CONFIG_FULL if full else UNET_CONFIG_TINY
    for k, version in enumerate(versions):
        folder, weights = {"v15": ("musetalkV15", "unet.pth"), "v1": ("musetalk", "pytorch_model.bin")}[version]
        torch.manual_seed(seed + k)
        unet = UNet2DConditionModel(**unet_cfg)
        d = models_dir / folder
        d.mkdir(parents=True, exist_ok=True)
        (d / "musetalk.json").write_text(json.dumps(unet_cfg, indent=2) + "\n")
        torch.save(unet.state_dict(), d / weights)
        del unet

    torch.manual_seed(seed + 100)
    vae = AutoencoderKL(**(VAE_CONFIG_FULL if full else VAE_CONFIG_TINY))
    vae_dir = models_dir / "sd-vae"
    vae.save_pretrained(vae_dir, safe_serialization=True)
    if vae_format == "bin":
        (vae_dir / "diffusion_pytorch_model.safetensors").unlink()
        torch.save(vae.state_dict(), vae_dir / "diffusion_pytorch_model.bin")
    del vae

    torch.manual_seed(seed + 200)
    wcfg = WhisperConfig(**(WHISPER_CONFIG_FULL if full else WHISPER_CONFIG_TINY))
    whisper = WhisperForConditionalGeneration(wcfg)
    _redraw_normal_weights(whisper, seed + 200, std=wcfg.init_std)
    wdir = models_dir / "whisper"
    whisper.save_pretrained(wdir)
    if whisper_format == "bin":
        (wdir / "model.safetensors").unlink()
        torch.save(whisper.state_dict(), wdir / "pytorch_model.bin")
    (wdir / "generation_config.json").unlink(missing_ok=True)  # the release ships only the three files
    WhisperFeatureExtractor().save_pretrained(wdir)
    return models_dir


def _redraw_normal_weights(model, seed: int, std: float) -> None:
    """Redraw, with numpy's generator, the weights transformers initialises with `normal_` (Linear, Conv1d and
    Embedding weights; the encoder's fixed sinusoids stay). torch's CPU `normal_` takes a different code path per
    instruction set (AVX512, AVX2, default), so the same seed gives weights a few ulps apart on different
    machines, enough to change a checksum; numpy's draws are the same everywhere."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    drawn: set[int] = set()  # storages already drawn: a tied weight (proj_out is the token embedding) once
    with torch.no_grad():
        for name, module in sorted(model.named_modules(), key=lambda kv: kv[0]):
            if not isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding)):
                continue
            w = module.weight
            if name.endswith("encoder.embed_positions") or w.data_ptr() in drawn:
                continue
            drawn.add(w.data_ptr())
            w.copy_(torch.from_numpy(rng.normal(0.0, std, tuple(w.shape)).astype(np.float32)))
            if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
                w[module.padding_idx] = 0.0


def make_synthetic_avatar(
    n_frames: int = 4,
    frame_hw: tuple[int, int] = (320, 288),
    seed: int = 0,
    avatar_id: str = "synthetic",
) -> Avatar:
    """An Avatar with random frames, a centred face box per frame, box-sized crops and an elliptic lower-face
    mask; latents are None (a renderer computes them, or preparation does)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = frame_hw
    frames = rng.integers(0, 256, size=(n_frames, h, w, 3), dtype=np.uint8)
    boxes = np.zeros((n_frames, 4), np.int32)
    crops = np.zeros((n_frames, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    landmarks = np.zeros((n_frames, N_LANDMARKS, 2), np.float32)
    bw, bh = w // 2, h // 2
    for i in range(n_frames):
        x1 = (w - bw) // 2 + int(rng.integers(-4, 5))
        y1 = (h - bh) // 2 + int(rng.integers(-4, 5))
        boxes[i] = (x1, y1, x1 + bw, y1 + bh)
        crops[i] = cv2.resize(
            frames[i, y1 : y1 + bh, x1 : x1 + bw], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LANCZOS4
        )
        landmarks[i] = rng.uniform((x1, y1), (x1 + bw, y1 + bh), size=(N_LANDMARKS, 2))
    mask = np.zeros((CROP_SIZE, CROP_SIZE), np.uint8)
    cv2.ellipse(mask, (CROP_SIZE // 2, int(CROP_SIZE * 0.7)), (90, 60), 0, 0, 360, 255, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 8)
    return Avatar(
        avatar_id=avatar_id,
        source=f"{avatar_id}.mp4",
        params=PrepParams(),
        fps=float(FPS),
        frames=frames,
        boxes=boxes,
        landmarks=landmarks,
        has_face=np.ones(n_frames, bool),
        crops=crops,
        masks=np.repeat(mask[None], n_frames, axis=0),
        latents=None,
        bbox_range=(-5, 5),
        mask_kind="landmarks",
    )


def make_bisenet_files(folder: Path | str, seed: int = 0) -> Path:
    """Random BiSeNet face-parsing weights in the release's two files (79999_iter.pth, resnet18-5c106cde.pth).

    The parser's own file holds every key (its backbone included), so the ResNet-18 file only has to have
    torchvision's keys (ImageNet classifier included, no num_batches_tracked, as in 2017's release).
    """
    import torch

    from workbench.faces import bisenet

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed + 300)
    net = bisenet.BiSeNet()
    torch.save(net.state_dict(), folder / "79999_iter.pth")
    resnet = bisenet.ResNet18()
    state = {k: v for k, v in resnet.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.randn(1000, 512) * 0.01
    state["fc.bias"] = torch.zeros(1000)
    torch.save(state, folder / "resnet18-5c106cde.pth")
    return folder


def weights_checksum(models_dir: Path | str) -> dict[str, str]:
    """sha256 (first 16 hex digits) of every tensor of every weight file under `models_dir`, by relative path:
    the same seed gives the same weights only on the same torch RNG, and this says when it does not."""
    import hashlib

    import torch
    from safetensors.torch import load_file

    out = {}
    root = Path(models_dir)
    for p in sorted(root.rglob("*")):
        if p.suffix == ".safetensors":
            state = load_file(p)
        elif p.suffix in (".pth", ".bin"):
            state = torch.load(p, map_location="cpu", weights_only=True)
        else:
            continue
        h = hashlib.sha256()
        for k in sorted(state):
            h.update(k.encode())
            h.update(state[k].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        out[p.relative_to(root).as_posix()] = h.hexdigest()[:16]
    return out


# madebyollin/taesd config.json (AutoencoderTiny's defaults); tiny: narrow, one block per stage, same 8x upsampling
TAESD_CONFIG_FULL: dict = {
    "act_fn": "relu",
    "decoder_block_out_channels": [64, 64, 64, 64],
    "encoder_block_out_channels": [64, 64, 64, 64],
    "force_upcast": False,
    "in_channels": 3,
    "latent_channels": 4,
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "num_decoder_blocks": [3, 3, 3, 1],
    "num_encoder_blocks": [1, 3, 3, 3],
    "out_channels": 3,
    "scaling_factor": 1.0,
    "upsampling_scaling_factor": 2,
}
TAESD_CONFIG_TINY: dict = {
    **TAESD_CONFIG_FULL,
    "decoder_block_out_channels": [8, 8, 8, 8],
    "encoder_block_out_channels": [8, 8, 8, 8],
    "num_decoder_blocks": [1, 1, 1, 1],
    "num_encoder_blocks": [1, 1, 1, 1],
}


def make_taesd(models_dir: Path | str, size: Size = "tiny", seed: int = 0) -> Path:
    """Random-init AutoencoderTiny saved as madebyollin/taesd ships it: taesd/{config.json,
    diffusion_pytorch_model.safetensors}; returns models_dir."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed + 300)
    taesd = AutoencoderTiny(**(TAESD_CONFIG_FULL if size == "full" else TAESD_CONFIG_TINY))
    taesd.save_pretrained(Path(models_dir) / "taesd", safe_serialization=True)
    return Path(models_dir)


def make_unet_vae(size: Size = "tiny", seed: int = 0):
    """(UNet2DConditionModel, AutoencoderKL) built in memory from the configs above, in eval mode: for tests
    and benchmarks that need the models but not the files or Whisper."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    full = size == "full"
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**(UNET_CONFIG_FULL if full else UNET_CONFIG_TINY))
    torch.manual_seed(seed + 100)
    vae = AutoencoderKL(**(VAE_CONFIG_FULL if full else VAE_CONFIG_TINY))
    return unet.eval().requires_grad_(False), vae.eval().requires_grad_(False)


# --- SyncNet evaluation weights ------------------------------------------------------------------
SYNCNET_EVAL_SEED = 0
SYNCNET_FIRE_HEAD = 4  # S3FD head of stride 64 (anchor 256 at detection scale 0.25: ~1024 px boxes)
# Random S3FD's default init shrinks the signal layer by layer until its deep maps are their biases: every frame
# scores the same. So the trunk (VGG and extras) is redrawn He-normal without biases, which carries the picture to
# the stride-64 head (its scores move ~10 % with the frame), conv1_1 divided by 128 for pixels of +-128.
# The firing head's face logit is a bias plus a random 3x3 conv (background logit 0): on the parity clips the
# conv spreads it by ~0.5 around the bias, so the best anchor sits well above the protocol's 0.9, the others
# spread below it (no ties for an unstable sort to break), and the loc head regresses offsets of ~0.2 (boxes
# ~1000 px that move with the picture and stay trackable).
SYNCNET_FIRE_LOGIT = 3.0
SYNCNET_FIRE_WEIGHT_STD = 0.1
SYNCNET_LOC_WEIGHT_STD = 0.03
# Seeded SyncNet heads find no sync (every offset at the range edge, LSE-C ~0.01), so the parity weights add a small
# trained part: a rank-SYNCNET_HEAD_RANK correction of each head's last linear layer, W = scale * W0 + u @ v.T and
# b = scale * b0 + bias_delta, trained on the calibration clips (scripts/train_syncnet_fixture.py). Its file's sha256 is pinned
# so a retrained file cannot slip in without the fixtures being remade.
SYNCNET_HEAD_RANK = 16
SYNCNET_HEAD_FILE = "syncnet_head_correction.npz"
SYNCNET_HEAD_PATH = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "syncnet" / SYNCNET_HEAD_FILE
SYNCNET_HEAD_SHA256 = "7c540977189743616ddcaedbd57ffcffa642f0996374740cf2d48904ed78e850"


def state_digest(state: dict) -> str:
    """sha256 over names and tensor bytes: equal weights hash equal whatever torch.save's container looks like."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def make_syncnet_eval_weights(
    folder: Path | str, seed: int = SYNCNET_EVAL_SEED, head_correction: Path | str | None = SYNCNET_HEAD_PATH
) -> dict[str, str]:
    """Write syncnet_v2.model and sfd_face.pth (random init from `seed`, official formats) into `folder`; returns
    their `state_digest`s. Random S3FD finds no face, so every confidence head is silenced except the stride-64
    one, which fires with distinct, content-dependent scores (`SYNCNET_FIRE_*`): ~1000 px boxes (at the protocol's
    detection scale 0.25) that the reference and the project must pick, track and crop identically. Used for the
    SyncNet parity fixtures. `head_correction` (the committed low-rank correction of both heads' last layers,
    trained by scripts/train_syncnet_fixture.py; None for the bare seeded net) gives SyncNet a true sync optimum."""
    import torch

    from workbench.evaluation.syncnet import SyncNetS
    from workbench.faces.s3fd import S3FDNet

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    syncnet = SyncNetS().state_dict()
    torch.manual_seed(seed + 1)
    sfd = S3FDNet().state_dict()
    gen = torch.Generator().manual_seed(seed + 2)

    def normal(shape, std):
        return torch.randn(shape, generator=gen) * std

    with torch.no_grad():
        for k in sorted(sfd):  # sorted: the draw order, hence the weights, do not depend on the dict's order
            if k.startswith(("vgg.", "extras.")) and k.endswith(".weight"):
                fan_in = sfd[k][0].numel()
                sfd[k].copy_(normal(sfd[k].shape, (2.0 / fan_in) ** 0.5 / (128.0 if k == "vgg.0.weight" else 1.0)))
                sfd[k[: -len("weight")] + "bias"].zero_()
        for i in range(6):
            sfd[f"conf.{i}.weight"].zero_()
            sfd[f"conf.{i}.bias"].zero_()
            if i == 0:  # max-out background: 3 background logits, 1 face logit
                sfd["conf.0.bias"][:3] = 5.0
            else:
                sfd[f"conf.{i}.bias"][0] = 5.0
        head = SYNCNET_FIRE_HEAD
        face = sfd[f"conf.{head}.weight"][1]
        face.copy_(normal(face.shape, SYNCNET_FIRE_WEIGHT_STD))
        sfd[f"conf.{head}.bias"][:] = torch.tensor([0.0, SYNCNET_FIRE_LOGIT])
        loc = sfd[f"loc.{head}.weight"]
        loc.copy_(normal(loc.shape, SYNCNET_LOC_WEIGHT_STD))
        sfd[f"loc.{head}.bias"].zero_()
    if head_correction is not None:
        apply_syncnet_head_correction(syncnet, head_correction)
    torch.save(syncnet, folder / "syncnet_v2.model")
    torch.save(sfd, folder / "sfd_face.pth")
    return {"syncnet_v2.model": state_digest(syncnet), "sfd_face.pth": state_digest(sfd)}


def apply_syncnet_head_correction(state: dict, path: Path | str) -> None:
    """Add the trained low-rank correction (`SYNCNET_HEAD_PATH`) to a seeded SyncNet state dict, in place."""
    import hashlib

    import torch

    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if SYNCNET_HEAD_SHA256 and digest != SYNCNET_HEAD_SHA256:
        raise ValueError(f"{path.name}: sha256 {digest}, expected {SYNCNET_HEAD_SHA256} (retrained? remake fixtures)")
    with np.load(path) as z:
        for side, head in (("lip", "netfclip.3"), ("aud", "netfcaud.3")):
            u, v, bias_delta = (torch.from_numpy(z[f"{side}_{n}"]).float() for n in ("u", "v", "bias_delta"))
            scale = float(z[f"{side}_scale"])
            state[f"{head}.weight"] = (scale * state[f"{head}.weight"] + u @ v.T).contiguous()
            state[f"{head}.bias"] = (scale * state[f"{head}.bias"] + bias_delta).contiguous()
